//! Integration tests against awsemu (moto with AWS-faithful ECS and fault injection).
//! One test binary, a module per theme; every test starts its own emulator.

mod cli;
mod conformance;
mod discovery;
mod ec2;
mod emu;
mod failures;

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
