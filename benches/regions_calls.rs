//! AWS calls per minute of an ECS source with `regions`, counted at the emulator (its call log,
//! `/_emu/calls`), for 1 region (no `regions`), 3 regions (a list) and every region of the `aws`
//! partition (`regions: "all"`), with fleet-shared polling off and on, for a fleet of three
//! nodes (one per region where the service runs: eu-west-2, us-west-2, ap-southeast-2, 2 tasks
//! each).
//!
//! Time is scaled by ten so a run takes minutes: `polling_interval` 500 ms and
//! `region_probe_interval` 12 s stand for the defaults 5 s and 2 min; a window of 36 s is six
//! minutes at the defaults, and the figures printed are per node (or fleet) and minute *at the
//! defaults*: the calls in the window divided by six. Every SDK attempt is a call
//! (`max_attempts: 1`). The pollers are the library's own (`Poller::spawn`); with sharing on,
//! each update's shared results are handed to the other two nodes' pollers, as the Elixir
//! adapter sends them over distribution.
//!
//! Run: `benches/regions_calls.sh` (or `cargo bench --bench regions_calls`; needs the awsemu
//! venv, `scripts/lib.sh ensure_awsemu_venv`). Prints a table; asserts nothing about time.

#[path = "../tests/integration/emu.rs"]
#[allow(dead_code)]
mod emu;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

const REGIONS: [&str; 3] = ["eu-west-2", "us-west-2", "ap-southeast-2"];
const SCALE: f64 = 10.0;
const WINDOW: Duration = Duration::from_secs(36);

fn calls_since(emu: &emu::Emu, since: f64) -> Vec<(String, String)> {
    emu.calls(Some(since)).1
}

/// The emulator's clock: a log read since a moment after every call.
fn now_s(emu: &emu::Emu) -> f64 {
    emu.calls(Some(1e12)).0
}

/// Runs three nodes with `source` for the window; returns the calls by operation.
async fn run(emu: &emu::Emu, source: &Value, share: bool) -> BTreeMap<String, u64> {
    let names: Vec<String> = (1..=3).map(|i| format!("app@10.99.0.{i}")).collect();
    let mut handles = Vec::new();
    for name in &names {
        let cfg = ecs_peers::Config::from_value(json!({
            "node_basename": "app",
            "local_node": name,
            "endpoint_url": emu.endpoint,
            "max_attempts": 1,
            "polling_interval": "500ms",
            "region_probe_interval": "12s",
            "poll_timeout": "10s",
            "share_polling": share,
            "sources": [source],
        }))
        .unwrap();
        handles.push(ecs_peers::Poller::new(cfg).await.spawn());
    }
    let handles = Arc::new(handles);
    let mut tasks = Vec::new();
    for (i, h) in handles.iter().enumerate() {
        if share {
            h.share(names.clone()).unwrap();
        }
        let mut sub = h.subscribe();
        let (all, names) = (handles.clone(), names.clone());
        tasks.push(tokio::spawn(async move {
            while let Some(u) = sub.next().await {
                for bytes in &u.shared {
                    for (j, other) in all.iter().enumerate() {
                        if j != i {
                            let _ = other.receive_shared(names[i].clone(), bytes.to_vec());
                        }
                    }
                }
            }
        }));
    }
    // Past the first rounds (every region's first answer, the first election).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let since = now_s(emu);
    tokio::time::sleep(WINDOW).await;
    let calls = calls_since(emu, since);
    for t in tasks {
        t.abort();
    }
    drop(handles);
    let mut by_op = BTreeMap::new();
    for (op, _) in calls {
        *by_op.entry(op).or_insert(0) += 1;
    }
    by_op
}

fn main() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let emu = emu::Emu::start();
    let mut spec = Vec::new();
    for (i, r) in REGIONS.iter().enumerate() {
        spec.push(
            json!({"region": r, "cluster": "web", "subnet": format!("10.{}.0.0/24", 201 + i),
            "tasks": [{"family": "api", "count": 2, "group": "service:api"}]}),
        );
    }
    emu.seed(json!({ "ecs": spec }));
    let all_regions = {
        let (_, body) = emu.http("GET", "/_emu/regions?partition=aws", "").unwrap();
        let v: Value = serde_json::from_str(&body).unwrap();
        v["Regions"].as_array().unwrap().len()
    };
    let cases = [
        (
            "1 region".to_string(),
            json!({"type": "ecs", "region": "eu-west-2", "cluster": "web", "service": "api"}),
        ),
        (
            "3 regions".to_string(),
            json!({"type": "ecs", "cluster": "web", "service": "api", "regions": REGIONS}),
        ),
        (
            format!("all ({all_regions} regions)"),
            json!({"type": "ecs", "region": "eu-west-2", "cluster": "web", "service": "api", "regions": "all"}),
        ),
    ];
    let minutes = WINDOW.as_secs_f64() * SCALE / 60.0;
    println!(
        "AWS calls per minute at the defaults (polling_interval 5s, region_probe_interval 2m), 3 nodes"
    );
    println!(
        "{:<18} {:<8} {:>12} {:>12}  by action (fleet, per minute)",
        "source", "sharing", "per node", "fleet"
    );
    for (name, source) in &cases {
        for share in [false, true] {
            let by_op = rt.block_on(run(&emu, source, share));
            let total: u64 = by_op.values().sum();
            let fleet = total as f64 / minutes;
            let detail: Vec<String> = by_op
                .iter()
                .map(|(op, n)| format!("{op} {:.1}", *n as f64 / minutes))
                .collect();
            println!(
                "{:<18} {:<8} {:>12.1} {:>12.1}  {}",
                name,
                if share { "on" } else { "off" },
                fleet / 3.0,
                fleet,
                detail.join(", ")
            );
        }
    }
}
