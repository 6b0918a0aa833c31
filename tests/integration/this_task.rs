//! The release's boot step (`ecs_peers::this_task`) against the emulator: a booting task is
//! named as its peers will name it, and a task that cannot be a peer is refused with the fix.
//! The shapes the e2e release test does not make: a task ECS still reports PENDING, one it has
//! stopped, one it does not know.

use ecs_peers::{this_task, Config, ErrorKind};
use serde_json::{json, Value};

use crate::emu::Emu;

/// A config for this task, pointed at the emulator and at the task's metadata endpoint.
fn config(emu: &Emu, metadata_url: &str) -> Config {
    Config::from_value(json!({
        "node_basename": "app",
        "endpoint_url": emu.endpoint,
        "metadata_url": metadata_url,
        "max_attempts": 1,
        "sources": [{"type": "ecs", "cluster": "auto"}],
    }))
    .unwrap()
}

/// One IPv6-only awsvpc task in eu-west-2/web, started as `start` says ("hold": it stays
/// PROVISIONING until the test moves it).
fn run_ipv6_task(emu: &Emu, start: &str) -> Value {
    emu.seed(
        json!({"ecs": [{"region": "eu-west-2", "cluster": "web", "subnet": "10.201.0.0/24",
        "tasks": []}]}),
    );
    emu.world("config", &json!({"start": start}));
    let run = emu.run_tasks(
        json!({"region": "eu-west-2", "cluster": "web", "subnet": null,
        "subnet_ipv6": "fd00:201::/64", "family": "api", "count": 1}),
    );
    run[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_still_pending_is_named_as_its_peers_will_name_it() {
    let emu = Emu::start();
    let task = run_ipv6_task(&emu, "hold");
    let arn = task["arn"].as_str().unwrap();
    emu.world(
        "lifecycle",
        &json!({"region": "eu-west-2", "cluster": "web", "tasks": [arn], "lastStatus": "PENDING"}),
    );
    let me = this_task(&config(&emu, task["metadata_uri"].as_str().unwrap()))
        .await
        .unwrap();
    let ipv6 = task["ipv6"].as_str().unwrap();
    assert_eq!(me.node, format!("app@{ipv6}"));
    assert_eq!(me.ip.to_string(), ipv6);
    assert_eq!(me.port, None);
    assert_eq!(
        (me.task_arn.as_str(), me.region.as_str()),
        (arn, "eu-west-2")
    );

    // The same name its peers give it once it runs.
    emu.world(
        "lifecycle",
        &json!({"region": "eu-west-2", "cluster": "web", "tasks": [arn], "lastStatus": "RUNNING"}),
    );
    let s = ecs_peers::discover(
        Config::from_value(json!({
            "node_basename": "app", "endpoint_url": emu.endpoint, "max_attempts": 1,
            "sources": [{"type": "ecs", "region": "eu-west-2", "cluster": "web"}],
        }))
        .unwrap(),
    )
    .await;
    let nodes: Vec<&str> = s.peers.iter().map(|p| p.node.as_str()).collect();
    assert_eq!(nodes, [me.node.as_str()]);
}

/// A stopped task is not named: it would boot under a name its peers are dropping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_task_is_not_named() {
    let emu = Emu::start();
    let task = run_ipv6_task(&emu, "immediate");
    let arn = task["arn"].as_str().unwrap().to_string();
    emu.stop_tasks("eu-west-2", "web", &[arn]);
    let e = this_task(&config(&emu, task["metadata_uri"].as_str().unwrap()))
        .await
        .unwrap_err();
    assert_eq!(e.action, "ecs:DescribeTasks", "{e}");
    assert!(e.message.contains("is STOPPED in ECS"), "{e}");
}

/// Metadata naming a task ECS does not know (another account's endpoint, a stale ARN): an
/// error that says so and names the fix, never a guessed name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_ecs_does_not_know_is_an_error_naming_the_fix() {
    let emu = Emu::start();
    emu.seed(
        json!({"ecs": [{"region": "eu-west-2", "cluster": "web", "subnet": "10.201.0.0/24",
        "tasks": [{"family": "api", "count": 1}]}]}),
    );
    let arn = "arn:aws:ecs:eu-west-2:123456789012:task/web/4e3cfb1a6d2a4b0f9d6c2f9f5b8a7c11";
    let doc = json!({"Cluster": "web", "TaskARN": arn, "Family": "api",
        "Containers": [{"Networks": [{"NetworkMode": "awsvpc", "IPv4Addresses": ["10.201.0.99"]}]}]});
    let url = crate::serve_metadata(doc.to_string());
    let e = this_task(&config(&emu, &url)).await.unwrap_err();
    assert_eq!(
        (e.kind, e.action),
        (ErrorKind::NotFound, "ecs:DescribeTasks"),
        "{e}"
    );
    assert!(e.message.contains("MISSING"), "{e}");
    assert!(
        e.fix.as_deref().unwrap_or("").contains("AWS_ENDPOINT_URL"),
        "{e}"
    );
}
