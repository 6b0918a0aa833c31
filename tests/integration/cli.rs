//! The `ecs-peers` binary: output, exit codes, errors that name the fix.

use std::process::{Command, Output};

use serde_json::{json, Value};

use crate::emu::{ips, Emu};

/// `ecs-peers ARGS` against the emulator, basename "app", one attempt per call, test credentials.
fn command(emu: &Emu, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ecs-peers"));
    c.args(args)
        .args([
            "--endpoint-url",
            &emu.endpoint,
            "--max-attempts",
            "1",
            "--basename",
            "app",
        ])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("RELEASE_NODE")
        .env_remove("RELEASE_NAME")
        .env_remove("RELEASE_DISTRIBUTION");
    c
}

pub(crate) fn cli(emu: &Emu, args: &[&str]) -> Output {
    command(emu, args).output().unwrap()
}

pub(crate) fn text(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn world(emu: &Emu) -> Value {
    emu.seed(json!({
        "ecs": [{"region": "eu-west-2", "cluster": "web", "subnet": "10.201.0.0/24",
                 "tasks": [{"family": "api", "count": 3, "group": "service:api"}]}],
        "cloudmap": [{"region": "us-west-2", "namespace": "internal", "service": "api",
            "instances": [{"id": "a", "ipv4": "10.202.0.10"}]}]
    }))
}

#[test]
fn list_prints_a_table_and_a_json_snapshot() {
    let emu = Emu::start();
    let w = world(&emu);
    let o = cli(
        &emu,
        &[
            "list",
            "--ecs",
            "eu-west-2/web/api",
            "--cloudmap",
            "us-west-2/internal/api",
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let t = text(&o);
    assert!(t.starts_with("NODE "), "{t}");
    for ip in ips(&w, "eu-west-2/web", None) {
        assert!(t.contains(&format!("app@{ip} ")), "{ip} missing from\n{t}");
    }
    assert!(t.contains("app@10.202.0.10"));
    assert!(t.contains("ecs:eu-west-2/web/api") && t.contains("ok"));

    let o = cli(
        &emu,
        &[
            "list",
            "--json",
            "--ecs",
            "eu-west-2/web/api",
            "--cloudmap",
            "us-west-2/internal/api",
        ],
    );
    assert_eq!(o.status.code(), Some(0));
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["schema"], "ecs-peers/snapshot/v2");
    assert_eq!(s["peers"].as_array().unwrap().len(), 4);
    assert_eq!(s["peers"][0]["node"], "app@10.201.0.4");
    assert_eq!(
        s["sources"][0]["api_calls_by_action"],
        json!({"ecs:DescribeTasks": 1, "ecs:ListTasks": 1})
    );
    assert_eq!(s["sources"][1]["kind"], "cloudmap");
}

/// The CLI knows this node as a release sets it (RELEASE_NODE), by the core's rule, exactly as
/// the strategy knows it from node(): the basename and the node left out of the peers.
#[test]
fn release_node_names_the_peers_and_leaves_this_node_out() {
    let emu = Emu::start();
    let w = world(&emu);
    let ips = ips(&w, "eu-west-2/web", None);
    let me = format!("web@{}", ips[0]);
    let o = Command::new(env!("CARGO_BIN_EXE_ecs-peers"))
        .args([
            "list",
            "--json",
            "--ecs",
            "eu-west-2/web/api",
            "--max-attempts",
            "1",
        ])
        .args(["--endpoint-url", &emu.endpoint])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("RELEASE_NODE", &me)
        .env("RELEASE_DISTRIBUTION", "name")
        .env_remove("RELEASE_NAME")
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["local"]["node"], me.as_str(), "{s}");
    let peers: Vec<&str> = s["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["node"].as_str().unwrap())
        .collect();
    assert_eq!(
        peers,
        [format!("web@{}", ips[1]), format!("web@{}", ips[2])],
        "named after RELEASE_NODE's basename, without this node"
    );
}

#[test]
fn exit_status_says_whether_some_or_all_sources_failed() {
    let emu = Emu::start();
    world(&emu);
    let o = cli(
        &emu,
        &[
            "list",
            "--ecs",
            "eu-west-2/web/api",
            "--ecs",
            "eu-west-2/nope",
        ],
    );
    assert_eq!(o.status.code(), Some(3));
    let t = text(&o);
    assert!(t.contains("FAILING"), "{t}");
    assert!(t.contains("ClusterNotFoundException"), "{t}");
    assert!(
        t.contains("Fix: check that cluster \"nope\" exists in eu-west-2"),
        "{t}"
    );

    let o = cli(
        &emu,
        &[
            "list",
            "--ecs",
            "eu-west-2/nope",
            "--cloudmap",
            "us-west-2/internal/missing",
        ],
    );
    assert_eq!(o.status.code(), Some(4));
    assert!(
        text(&o).contains("servicediscovery:DiscoverInstances failed (not_found)"),
        "{}",
        text(&o)
    );
}

#[test]
fn access_denied_names_the_action_and_resource_to_grant() {
    let emu = Emu::start();
    world(&emu);
    emu.fault(json!({"operation": "ListTasks", "count": 10, "status": 400, "code": "AccessDeniedException",
        "message": "User: arn:aws:sts::123456789012:assumed-role/app/task is not authorized to perform: ecs:ListTasks"}));
    let o = cli(&emu, &["list", "--ecs", "eu-west-2/web/api"]);
    assert_eq!(o.status.code(), Some(4));
    let t = text(&o);
    assert!(t.contains("ecs:ListTasks failed (access_denied): AccessDeniedException: User: arn:aws:sts::123456789012:assumed-role/app/task is not authorized"), "{t}");
    assert!(t.contains("Fix: grant ecs:ListTasks to the task role, with Resource \"*\" and Condition ArnEquals ecs:cluster \"arn:aws:ecs:eu-west-2:*:cluster/web\""), "{t}");
}

#[test]
fn bad_flags_exit_2_and_name_the_flag() {
    let emu = Emu::start();
    let o = cli(&emu, &["list", "--ecs", "eu-west/web"]);
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("--ecs eu-west/web: region: \"eu-west\" is not an AWS region name"),
        "{e}"
    );
    let o = cli(
        &emu,
        &["list", "--ecs", "eu-west-2/web", "--interval", "often"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr)
        .contains("polling_interval (--polling-interval): \"often\" is not a duration"));
    let o = cli(&emu, &["list"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no sources: give --ecs"));
}

/// Precedence of a top-level key: its flag, else the config file, else its environment
/// variable (here ECS_PEERS_DIST_PORT, read only when the key is not given), else the default.
/// A variable that is not a port is an error only when it is read.
#[test]
fn a_key_flag_wins_over_the_config_file_and_the_environment() {
    let emu = Emu::start();
    world(&emu);
    let dir = std::env::temp_dir().join(format!("ecs-peers-cli-precedence-{}", emu.port));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("peers.toml");
    let sources = "[[sources]]\ntype = \"ecs\"\nregion = \"eu-west-2\"\ncluster = \"web\"\n";
    let run = |file_text: &str, extra: &[&str]| {
        std::fs::write(&file, file_text).unwrap();
        let mut args = vec!["list", "--config", file.to_str().unwrap()];
        args.extend_from_slice(extra);
        command(&emu, &args)
            .env("ECS_PEERS_DIST_PORT", "70000")
            .output()
            .unwrap()
    };
    let o = run(sources, &[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains(
        "distribution_port (--distribution-port or the config file): is not set, and ECS_PEERS_DIST_PORT=\"70000\" is not a port number"
    ));
    let o = run(&format!("distribution_port = 4370\n{sources}"), &[]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = run(
        &format!("distribution_port = 0\n{sources}"),
        &["--distribution-port", "4370"],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = run(sources, &["--distribution-port", "port"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("distribution_port (--distribution-port): \"port\""),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn config_file_and_flags_combine() {
    let emu = Emu::start();
    world(&emu);
    let dir = std::env::temp_dir().join(format!("ecs-peers-cli-{}", emu.port));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("peers.toml");
    std::fs::write(&file, "node_basename = \"web\"\n[[sources]]\ntype = \"cloudmap\"\nregion = \"us-west-2\"\nnamespace = \"internal\"\nservice = \"api\"\n").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_ecs-peers"))
        .args([
            "list",
            "--json",
            "--config",
            file.to_str().unwrap(),
            "--ecs",
            "eu-west-2/web/api",
            "--endpoint-url",
            &emu.endpoint,
        ])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["peers"].as_array().unwrap().len(), 4);
    assert!(s["peers"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["node"].as_str().unwrap().starts_with("web@")));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn watch_streams_json_lines() {
    let emu = Emu::start();
    world(&emu);
    let o = cli(
        &emu,
        &[
            "watch",
            "--json",
            "--every-poll",
            "--count",
            "2",
            "--interval",
            "200ms",
            "--ecs",
            "eu-west-2/web/api",
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let events: Vec<Value> = text(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["added", "added", "added", "snapshot", "snapshot"]);
    assert_eq!(
        events[3]["snapshot"]["sources"][0]["api_calls_by_action"]["ecs:DescribeTasks"],
        1
    );
    assert_eq!(
        events[4]["snapshot"]["sources"][0]["api_calls_by_action"].get("ecs:DescribeTasks"),
        None
    );
}

#[test]
fn aws_endpoint_url_from_the_environment_redirects_every_client() {
    let emu = Emu::start();
    world(&emu);
    let o = Command::new(env!("CARGO_BIN_EXE_ecs-peers"))
        .args(["list", "--json", "--basename", "app", "--max-attempts", "1"])
        .args([
            "--ecs",
            "eu-west-2/web/api",
            "--cloudmap",
            "us-west-2/internal/api",
        ])
        .env("AWS_ENDPOINT_URL", &emu.endpoint)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        s["peers"].as_array().unwrap().len(),
        4,
        "ECS and the Cloud Map data plane both reached the emulator"
    );
}

#[test]
fn from_metadata_polls_this_tasks_own_cluster_and_leaves_this_task_out() {
    let emu = Emu::start();
    let w = emu.seed(
        json!({"ecs": [{"region": "eu-west-2", "cluster": "web", "subnet": "10.201.0.0/24",
        "tasks": [{"family": "api", "count": 3}, {"family": "worker", "count": 2}]}]}),
    );
    let me = &w["ecs"]["eu-west-2/web"]["running"][1];
    let (my_ip, my_arn) = (me["ip"].as_str().unwrap(), me["arn"].as_str().unwrap());
    let cluster_arn = format!("{}:cluster/web", my_arn.split(":task/").next().unwrap());
    // The documented v4 shape (Fargate: no ServiceName, so the family is used).
    let doc = json!({
        "Cluster": cluster_arn, "TaskARN": my_arn, "Family": "api", "Revision": "1",
        "DesiredStatus": "RUNNING", "KnownStatus": "RUNNING", "AvailabilityZone": "eu-west-2a", "LaunchType": "FARGATE",
        "Containers": [{"Name": "app", "Networks": [{"NetworkMode": "awsvpc", "IPv4Addresses": [my_ip]}]}]
    });
    let url = crate::serve_metadata(doc.to_string());
    let o = cli(
        &emu,
        &["list", "--json", "--from-metadata", "--metadata-url", &url],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["sources"][0]["id"], "ecs:eu-west-2/web/family:api");
    let mut got: Vec<&str> = s["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["ip"].as_str().unwrap())
        .collect();
    got.sort();
    let want: Vec<String> = ips(&w, "eu-west-2/web", Some("api"))
        .into_iter()
        .filter(|ip| ip != my_ip)
        .collect();
    assert_eq!(
        got, want,
        "the other api tasks, not the workers, not this task"
    );
    assert_eq!(s["local"]["ip"], my_ip);

    let o = cli(
        &emu,
        &[
            "list",
            "--from-metadata",
            "--metadata-url",
            &url.replace("/t1", "/nope"),
        ],
    );
    assert_eq!(o.status.code(), Some(4));
    let t = text(&o);
    assert!(
        // An HTTP answer from the endpoint: classified by its status, not "outside a task".
        t.contains("ecs:task-metadata failed (not_found)")
            && t.contains("HTTP 404")
            && t.contains("Fix: the endpoint serves no task metadata at"),
        "{t}"
    );
}

#[test]
fn credentials_tokens_and_cookies_never_appear_in_output_or_logs() {
    let emu = Emu::start();
    // Loopback peers only: the doctor connects to them (nothing listens there).
    emu.seed(
        json!({"cloudmap": [{"region": "us-west-2", "namespace": "internal", "service": "api",
        "instances": [{"id": "a", "ipv4": "127.0.3.4"}, {"id": "b", "ipv4": "127.0.3.5"}]}]}),
    );
    let secrets = ["s3cr3tLEAKvalue", "t0kenLEAKvalue", "c00kieLEAKvalue"];
    let run = |args: &[&str], log: &str| {
        let o = command(&emu, args)
            .args([
                "--cloudmap",
                "us-west-2/internal/api",
                "--ecs",
                "eu-west-2/nope",
            ])
            .env("AWS_ACCESS_KEY_ID", "AKIDLEAKCHECK")
            .env("AWS_SECRET_ACCESS_KEY", secrets[0])
            .env("AWS_SESSION_TOKEN", secrets[1])
            .env("RELEASE_COOKIE", secrets[2])
            .env("ECS_PEERS_LOG", log)
            .output()
            .unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            all.contains("app@127.0.3.4"),
            "the run did real work: {all}"
        );
        for s in secrets {
            assert!(!all.contains(s), "{s} leaked with {args:?} {log}:\n{all}");
        }
        all.len()
    };
    for log in ["ecs_peers=trace", "trace"] {
        let n = run(&["list", "-vv"], log) + run(&["list", "--json"], log);
        let n = n + run(&["watch", "--json", "--every-poll", "--count", "1"], log);
        let n = n
            + run(&["doctor", "--check-timeout", "300ms"], log)
            + run(&["doctor", "--json", "--check-timeout", "300ms"], log);
        assert!(n > 2000, "the runs logged and printed something to search");
    }
}

/// `ecs-peers ARGS` against the emulator with no naming flag of the harness's own.
fn bare(emu: &Emu, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ecs-peers"));
    c.args(args)
        .args(["--endpoint-url", &emu.endpoint, "--max-attempts", "1"])
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("RELEASE_NODE")
        .env_remove("RELEASE_NAME")
        .env_remove("RELEASE_DISTRIBUTION");
    c
}

#[test]
fn private_dns_name_names_peers_as_aws_reports_them_in_each_region() {
    // `RELEASE_NODE=app@$(hostname -f)` fleets are `…ec2.internal` in us-east-1 and
    // `….REGION.compute.internal` elsewhere; {private_dns_name} is the name ECS reports.
    let emu = Emu::start();
    let w = emu.seed(json!({"ecs": [
        {"region": "us-east-1", "cluster": "web", "subnet": "10.211.0.0/24", "tasks": [{"family": "api", "count": 2}]},
        {"region": "eu-west-2", "cluster": "web", "subnet": "10.212.0.0/24", "tasks": [{"family": "api", "count": 2}]}
    ]}));
    let o = bare(
        &emu,
        &[
            "list",
            "--json",
            "--node-name",
            "app@{private_dns_name}",
            "--ecs",
            "us-east-1/web",
            "--ecs",
            "eu-west-2/web",
        ],
    )
    .output()
    .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut got: Vec<(String, String)> = s["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["node"].as_str().unwrap().to_string(),
                p["private_dns_name"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    let mut want = Vec::new();
    for (key, suffix) in [
        ("us-east-1/web", ".ec2.internal"),
        ("eu-west-2/web", ".eu-west-2.compute.internal"),
    ] {
        for t in w["ecs"][key]["running"].as_array().unwrap() {
            let dns = t["dns"].as_str().unwrap();
            let dashed = t["ip"].as_str().unwrap().replace('.', "-");
            assert_eq!(dns, format!("ip-{dashed}{suffix}"), "the emulator's names");
            want.push((format!("app@{dns}"), dns.to_string()));
        }
    }
    want.sort();
    assert_eq!(got, want);

    // Cloud Map reports no DNS name: refused at start, naming the key and the source.
    let o = bare(
        &emu,
        &[
            "list",
            "--node-name",
            "app@{private_dns_name}",
            "--ecs",
            "us-east-1/web",
            "--cloudmap",
            "us-west-2/internal/api",
        ],
    )
    .output()
    .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains(
            "node_name (--node-name): {private_dns_name} is the private DNS name ECS reports"
        ) && e.contains(
            "sources[1] (cloudmap:us-west-2/internal/api) is Cloud Map, which reports none"
        ),
        "{e}"
    );
}

#[test]
fn a_short_named_release_is_refused_with_the_setting_and_the_fix() {
    // With RELEASE_DISTRIBUTION=sname, peers named app@10.0.1.6 (long names) cannot be reached
    // by a short-named node: refuse to start, naming the setting.
    let emu = Emu::start();
    world(&emu);
    let run = |extra: &[&str]| {
        let mut args = vec!["list", "--ecs", "eu-west-2/web/api"];
        args.extend_from_slice(extra);
        bare(&emu, &args)
            .env("RELEASE_DISTRIBUTION", "sname")
            .env("RELEASE_NODE", "app@ip-10-201-0-9")
            .output()
            .unwrap()
    };
    let o = run(&[]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("this node runs with short names (RELEASE_DISTRIBUTION=sname")
            && e.contains("\"app@10.0.1.6\"")
            && e.contains("RELEASE_DISTRIBUTION=name and RELEASE_NODE=app@<this task's IP>"),
        "{e}"
    );
    // A plain host is a short name: allowed.
    let o = run(&["--node-name", "app@ip-{ip_dashed}"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(text(&o).contains("app@ip-10-201-0-4"), "{}", text(&o));
}

/// A bridge-mode cluster: every task is listed at its instance's address and the host port its
/// container maps the distribution port to; tasks that map no such port are counted as skipped,
/// and a source that could use none of its running tasks does not exit 0.
#[test]
fn list_shows_bridge_tasks_at_instance_address_and_mapped_port() {
    let emu = Emu::start();
    let bridge = |family: &str, count: u32, ports: Value| {
        json!({"family": family, "count": count, "launch_type": "EC2", "network_mode": "bridge",
               "port_mappings": ports, "group": format!("service:{family}")})
    };
    let w = emu.seed(
        json!({"ecs": [{"region": "eu-west-2", "cluster": "web", "subnet": "10.201.0.0/24",
        "instances": [{"ipv4": "10.201.0.50"}, {"ipv4": "10.201.0.51"}],
        "tasks": [bridge("api", 3, json!([{"containerPort": 4370, "hostPort": 0}])),
                  bridge("web", 2, json!([{"containerPort": 8080, "hostPort": 0}]))]}]}),
    );
    let o = cli(&emu, &["list", "--ecs", "eu-west-2/web/api"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let t = text(&o);
    assert!(t.starts_with("NODE "), "{t}");
    let running = w["ecs"]["eu-west-2/web"]["running"].as_array().unwrap();
    for task in running.iter().filter(|t| t["family"] == "api") {
        let id = task["arn"].as_str().unwrap().rsplit('/').next().unwrap();
        let ip = task["ip"].as_str().unwrap();
        let port = task["bindings"][0]["hostPort"].as_u64().unwrap();
        assert!(
            t.contains(&format!("app-{id}@{ip}  {ip}:{port} ")),
            "task {id} at {ip}:{port} missing from\n{t}"
        );
    }

    let o = cli(&emu, &["list", "--ecs", "eu-west-2/web/web"]);
    let t = text(&o);
    assert_eq!(o.status.code(), Some(4), "{t}");
    assert!(t.starts_with("No peers."), "{t}");
    assert!(t.contains("SKIPPING"), "{t}");
    assert!(
        t.contains("2 running task(s) skipped")
            && t.contains(r#""containerPort": 4370, "hostPort": 0"#),
        "{t}"
    );
    let o = cli(&emu, &["list", "--json", "--ecs", "eu-west-2/web/web"]);
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["sources"][0]["skipped_tasks"], 2);
    assert_eq!(
        s["sources"][0]["skipped"][0]["reason"],
        "no_distribution_binding"
    );
}
