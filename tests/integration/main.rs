//! Integration tests against awsemu (moto with AWS-faithful ECS and fault injection).
//! One test binary, a module per theme; every test starts its own emulator.

mod cli;
mod cloudmap;
mod conformance;
mod discovery;
mod ec2;
mod emu;
mod failures;
mod field_reports;
mod partitions;
mod regions;
mod tags;
mod this_task;
mod tls;

use ecs_peers::{Config, Snapshot};
use serde_json::{json, Value};

/// A config pointed at the emulator: fast polls, no SDK retries (tests count calls).
pub fn config(emu: &emu::Emu, sources: Value) -> Config {
    Config::from_value(json!({
        "node_basename": "app",
        "endpoint_url": emu.endpoint,
        "max_attempts": 1,
        "polling_interval": "300ms",
        "jitter": 0.0,
        "poll_timeout": "10s",
        "sources": sources,
    }))
    .unwrap()
}

/// The peers' IPs, sorted as strings.
pub fn peer_ips(s: &Snapshot) -> Vec<String> {
    let mut v: Vec<String> = s.peers.iter().map(|p| p.ip.to_string()).collect();
    v.sort();
    v
}

/// A source's last-poll calls for one action.
pub fn calls(s: &Snapshot, source: usize, action: &str) -> u64 {
    s.sources[source]
        .api_calls_by_action
        .get(action)
        .copied()
        .unwrap_or(0)
}

/// Serves a task metadata v4 `/task` document on loopback, as the ECS agent does.
pub fn serve_metadata(doc: String) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut s = stream;
            let mut buf = [0u8; 2048];
            let n = s.read(&mut buf).unwrap_or(0);
            let found = String::from_utf8_lossy(&buf[..n]).starts_with("GET /v4/t1/task ");
            let resp = if found {
                format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{doc}", doc.len())
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".into()
            };
            let _ = s.write_all(resp.as_bytes());
        }
    });
    format!("http://{addr}/v4/t1")
}
