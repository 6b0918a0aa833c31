//! awsemu (tests/awsemu: moto made faithful to ECS, EC2 and Cloud Map, with fault injection)
//! started per test on a free loopback port with its one start command, `tests/awsemu/run`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use serde_json::Value;

static ENV: Once = Once::new();

/// Static test credentials, set once before any test reads the environment.
fn test_env() {
    ENV.call_once(|| {
        // Set before any AWS client exists: every test calls Emu::start() first.
        std::env::set_var("AWS_ACCESS_KEY_ID", "test");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "test");
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
        std::env::remove_var("AWS_PROFILE");
        std::env::remove_var("AWS_ENDPOINT_URL");
    });
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's interpreter (for tests/support/world.py), made by scripts/lib.sh ensure_awsemu_venv.
fn python() -> PathBuf {
    root().join(".venv-awsemu/bin/python")
}

pub struct Emu {
    child: Option<Child>,
    pub port: u16,
    pub endpoint: String,
}

impl Emu {
    pub fn start() -> Emu {
        test_env();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let run = root().join("tests/awsemu/run");
        assert!(
            python().exists(),
            "{} is missing: create the emulator's venv with `. scripts/lib.sh && ensure_awsemu_venv` \
             (./scripts/test does)",
            python().display()
        );
        let child = Command::new(&run)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start the emulator ({}): {e}", run.display()));
        let emu = Emu {
            child: Some(child),
            port,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let started = Instant::now();
        while emu.http("GET", "/moto-api/", "").is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "awsemu did not start on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        emu
    }

    /// One HTTP/1.0 request to the emulator; returns (status, body).
    pub fn http(&self, method: &str, path: &str, body: &str) -> std::io::Result<(u16, String)> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(
            s,
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        let mut resp = String::new();
        s.read_to_string(&mut resp)?;
        let status = resp
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
        let chunked = head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked");
        Ok((
            status,
            if chunked {
                dechunk(body)
            } else {
                body.to_string()
            },
        ))
    }

    /// Runs `tests/support/world.py ENDPOINT cmd` with spec on stdin; returns its JSON output.
    /// Commands: seed, run, stop, instances (EC2 container instances), lifecycle, health,
    /// config (see world.py's docstring and tests/awsemu/README.md).
    pub fn world(&self, cmd: &str, spec: &Value) -> Value {
        let mut child = Command::new(python())
            .arg(root().join("tests/support/world.py"))
            .args([&self.endpoint, cmd])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run world.py");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(spec.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "world.py {cmd} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn seed(&self, spec: Value) -> Value {
        self.world("seed", &spec)
    }

    pub fn run_tasks(&self, spec: Value) -> Value {
        self.world("run", &spec)
    }

    pub fn stop_tasks(&self, region: &str, cluster: &str, arns: &[String]) {
        self.world(
            "stop",
            &serde_json::json!({"region": region, "cluster": cluster, "tasks": arns}),
        );
    }

    pub fn fault(&self, spec: Value) {
        let (status, body) = self.http("POST", "/_fault", &spec.to_string()).unwrap();
        assert_eq!(status, 200, "{body}");
    }

    pub fn faults(&self) -> Value {
        serde_json::from_str(&self.http("GET", "/_fault", "").unwrap().1).unwrap()
    }

    pub fn clear_faults(&self) {
        self.http("DELETE", "/_fault", "").unwrap();
    }

    /// The emulator's log of AWS calls (`/_emu/calls`): its clock (`now`, Unix seconds) and
    /// `(operation, region)` of every call since `since` (Unix seconds; `None`: since the last
    /// clearing), in order; `region` is `""` for an unsigned call.
    pub fn calls(&self, since: Option<f64>) -> (f64, Vec<(String, String)>) {
        let path = match since {
            Some(t) => format!("/_emu/calls?since={t}"),
            None => "/_emu/calls".to_string(),
        };
        let (status, body) = self.http("GET", &path, "").unwrap();
        assert_eq!(status, 200, "{body}");
        let log: Value = serde_json::from_str(&body).unwrap();
        let text = |v: &Value| v.as_str().unwrap_or("").to_string();
        let calls = log["calls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (text(&c[2]), text(&c[3])))
            .collect();
        (log["now"].as_f64().unwrap(), calls)
    }

    /// Clears the emulator's log of AWS calls.
    pub fn clear_calls(&self) {
        let (status, body) = self.http("DELETE", "/_emu/calls", "").unwrap();
        assert_eq!(status, 200, "{body}");
    }

    /// Stops the emulator (the address then refuses connections).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Emu {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Decodes a chunked HTTP body (werkzeug chunks its answers even to HTTP/1.0 requests).
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// IPs of a seeded cluster's running tasks (optionally of one family), sorted as strings.
pub fn ips(world: &Value, cluster: &str, family: Option<&str>) -> Vec<String> {
    let mut v: Vec<String> = world["ecs"][cluster]["running"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| family.is_none_or(|f| t["family"] == f))
        .map(|t| t["ip"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

pub fn arns(world: &Value, cluster: &str, family: &str) -> Vec<String> {
    world["ecs"][cluster]["running"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["family"] == family)
        .map(|t| t["arn"].as_str().unwrap().to_string())
        .collect()
}
