//! ECS on EC2 (bridge and host network mode) against the emulator: a task's peer is its
//! instance's address and the host port its container maps the distribution port to.

use std::collections::BTreeSet;
use std::time::Duration;

use ecs_peers::{Poller, SkipReason, Snapshot};
use serde_json::{json, Value};

use crate::emu::Emu;
use crate::{calls, config};

const SOURCE: &str = r#"{"type": "ecs", "region": "eu-west-2", "cluster": "web"}"#;

/// Bridge tasks on two instances (the distribution port mapped to a dynamic host port), one
/// host-mode task and one awsvpc task on EC2.
fn world() -> Value {
    let ec2 = |family: &str, count: u32, mode: &str, mappings: Value| {
        json!({"family": family, "count": count, "launch_type": "EC2", "network_mode": mode,
               "port_mappings": mappings})
    };
    json!({"ecs": [{"region": "eu-west-2", "cluster": "web", "subnet": "10.201.0.0/24",
    "instances": [{"ipv4": "10.201.0.50"}, {"ipv4": "10.201.0.51"}],
    "tasks": [
        ec2("bridged", 4, "bridge", json!([{"containerPort": 80, "hostPort": 0}, {"containerPort": 4370, "hostPort": 0}])),
        ec2("hosted", 1, "host", json!([{"containerPort": 4370}])),
        ec2("vpc", 1, "awsvpc", json!([])),
    ]}]})
}

/// What a running task of the seed output must become: (node, ip, port).
fn expected_peer(t: &Value) -> (String, String, Option<u16>) {
    let id = t["arn"].as_str().unwrap().rsplit('/').next().unwrap();
    let ip = t["ip"].as_str().unwrap().to_string();
    match t["family"].as_str().unwrap() {
        "vpc" => (format!("app@{ip}"), ip, None),
        _ => {
            let port = t["bindings"]
                .as_array()
                .unwrap()
                .iter()
                .find(|b| b["containerPort"] == 4370)
                .map(|b| b["hostPort"].as_u64().unwrap() as u16);
            (format!("app-{id}@{ip}"), ip, port)
        }
    }
}

fn view(s: &Snapshot) -> BTreeSet<(String, String, Option<u16>)> {
    s.peers
        .iter()
        .map(|p| (p.node.clone(), p.ip.to_string(), p.port))
        .collect()
}

async fn first_complete(poller: &mut Poller) -> std::sync::Arc<Snapshot> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let u = poller.poll().await;
        if u.snapshot.sources[0].state.answered() {
            return u.snapshot;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no complete poll: {:?}",
            u.snapshot.sources[0]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_host_and_awsvpc_tasks_on_ec2_are_peers_at_their_address_and_port() {
    let emu = Emu::start();
    let w = emu.seed(world());
    let running = w["ecs"]["eu-west-2/web"]["running"].as_array().unwrap();
    let want: BTreeSet<_> = running.iter().map(expected_peer).collect();
    assert_eq!(want.len(), 6);

    let mut poller = Poller::new(config(
        &emu,
        json!([serde_json::from_str::<Value>(SOURCE).unwrap()]),
    ))
    .await;
    let s = first_complete(&mut poller).await;
    assert_eq!(view(&s), want);
    assert_eq!(s.sources[0].skipped_tasks, 0, "{:?}", s.sources[0].skipped);

    // Two bridge tasks on one instance: one address, two ports, two node names.
    let bridged: Vec<_> = s
        .peers
        .iter()
        .filter(|p| p.node.starts_with("app-") && p.port != Some(4370))
        .collect();
    assert_eq!(bridged.len(), 4);
    let on_first: Vec<_> = bridged
        .iter()
        .filter(|p| p.ip.to_string() == "10.201.0.50")
        .collect();
    assert!(on_first.len() >= 2, "{bridged:?}");
    assert_ne!(on_first[0].port, on_first[1].port);
    assert_ne!(on_first[0].node, on_first[1].node);
    assert!(bridged
        .iter()
        .all(|p| p.port.is_some_and(|port| port >= 32768)));
    assert!(bridged.iter().all(|p| p.ec2_instance_id.is_some()));
    // The host-mode task: the instance's address and the container port itself.
    assert_eq!(s.peers.iter().filter(|p| p.port == Some(4370)).count(), 1);
    // First poll: one DescribeContainerInstances and one DescribeInstances for both instances.
    assert_eq!(calls(&s, 0, "ecs:DescribeContainerInstances"), 1);
    assert_eq!(calls(&s, 0, "ec2:DescribeInstances"), 1);

    // Steady state: one ListTasks page, nothing else.
    let u = poller.poll().await;
    assert_eq!(view(&u.snapshot), want);
    assert_eq!(
        u.snapshot.sources[0].api_calls_by_action,
        [("ecs:ListTasks".to_string(), 1)].into_iter().collect()
    );

    // A new task on a known instance: described, but its instance is not looked up again.
    let known_ci =
        running.iter().find(|t| t["family"] == "bridged").unwrap()["container_instance"].clone();
    let started = emu.run_tasks(json!({"region": "eu-west-2", "cluster": "web", "subnet": "10.201.0.0/24",
        "family": "bridged", "count": 1, "launch_type": "EC2", "network_mode": "bridge",
        "port_mappings": [{"containerPort": 80, "hostPort": 0}, {"containerPort": 4370, "hostPort": 0}],
        "container_instance": known_ci}));
    let u = poller.poll().await;
    let s = &u.snapshot;
    assert!(
        view(s).contains(&expected_peer(&started[0])),
        "{:?}",
        view(s)
    );
    assert_eq!(calls(s, 0, "ecs:DescribeTasks"), 1);
    assert_eq!(calls(s, 0, "ecs:DescribeContainerInstances"), 0);
    assert_eq!(calls(s, 0, "ec2:DescribeInstances"), 0);

    // A new instance with a new task: one call of each, for that instance only.
    let new = emu.world(
        "instances",
        &json!({"region": "eu-west-2", "cluster": "web", "subnet": "10.201.0.0/24",
                "instances": [{"ipv4": "10.201.0.52"}]}),
    );
    let ci = new[0]["container_instance"].as_str().unwrap();
    let started = emu.run_tasks(json!({"region": "eu-west-2", "cluster": "web", "subnet": "10.201.0.0/24",
        "family": "bridged", "count": 1, "launch_type": "EC2", "network_mode": "bridge",
        "port_mappings": [{"containerPort": 80, "hostPort": 0}, {"containerPort": 4370, "hostPort": 0}],
        "container_instance": ci}));
    let u = poller.poll().await;
    let s = &u.snapshot;
    assert!(
        view(s).contains(&expected_peer(&started[0])),
        "{:?}",
        view(s)
    );
    assert_eq!(s.peers.len(), 8);
    assert_eq!(calls(s, 0, "ecs:DescribeContainerInstances"), 1);
    assert_eq!(calls(s, 0, "ec2:DescribeInstances"), 1);
    assert_eq!(calls(s, 0, "ecs:DescribeTasks"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_task_without_a_binding_for_the_distribution_port_is_skipped_with_the_fix() {
    let emu = Emu::start();
    emu.seed(
        json!({"ecs": [{"region": "eu-west-2", "cluster": "web", "subnet": "10.201.0.0/24",
        "instances": [{"ipv4": "10.201.0.50"}],
        "tasks": [{"family": "web", "count": 2, "launch_type": "EC2", "network_mode": "bridge",
                   "port_mappings": [{"containerPort": 80, "hostPort": 0}]}]}]}),
    );
    let mut poller = Poller::new(config(
        &emu,
        json!([serde_json::from_str::<Value>(SOURCE).unwrap()]),
    ))
    .await;
    let s = first_complete(&mut poller).await;
    let src = &s.sources[0];
    assert!(s.peers.is_empty());
    assert_eq!(src.skipped_tasks, 2, "{src:?}");
    assert_eq!(src.skipped.len(), 1);
    assert_eq!(src.skipped[0].reason, SkipReason::NoDistributionBinding);
    assert!(src.skipped[0]
        .fix
        .contains(r#""containerPort": 4370, "hostPort": 0"#));
    assert!(
        src.state == ecs_peers::SourceState::Skipping,
        "0 peers from 2 running tasks is not healthy"
    );
    // Skipped tasks are cached like any other: the steady poll is one ListTasks call, and
    // still reports them.
    let u = poller.poll().await;
    assert_eq!(u.snapshot.sources[0].api_calls, 1);
    assert_eq!(u.snapshot.sources[0].skipped_tasks, 2);
}

/// `node_name = "app@{private_dns_name}"` names a task by its ENI's private DNS name, which a
/// bridge-mode task on EC2 does not have: such tasks are skipped with the reason and the fix
/// (`no_private_dns_name`), so a source of only such tasks is SKIPPING, never ok with no
/// peers; an awsvpc task of the same cluster is named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_without_a_private_dns_name_is_skipped_when_the_template_needs_one() {
    let emu = Emu::start();
    emu.seed(world());
    let cfg = json!({
        "node_name": "app@{private_dns_name}",
        "endpoint_url": emu.endpoint,
        "max_attempts": 1,
        "poll_timeout": "10s",
        "sources": [serde_json::from_str::<Value>(SOURCE).unwrap()],
    });
    let mut poller = Poller::new(ecs_peers::Config::from_value(cfg).unwrap()).await;
    let s = first_complete(&mut poller).await;
    let src = &s.sources[0];
    // The awsvpc task is named by its DNS name; the 4 bridge and 1 host tasks are skipped.
    assert_eq!(s.peers.len(), 1, "{:?}", s.peers);
    assert!(
        s.peers[0].node.starts_with("app@ip-"),
        "{}",
        s.peers[0].node
    );
    assert_eq!(src.skipped_tasks, 5, "{src:#?}");
    let k = src
        .skipped
        .iter()
        .find(|k| k.reason == SkipReason::NoPrivateDnsName)
        .unwrap_or_else(|| panic!("{src:#?}"));
    assert_eq!(k.tasks, 5);
    assert!(k.fix.contains("{ip}"), "{}", k.fix);
    assert!(k.example().starts_with("task "), "{}", k.example());
    assert_eq!(src.state, ecs_peers::SourceState::Ok, "it has a peer");
}
