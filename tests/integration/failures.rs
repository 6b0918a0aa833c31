//! The failure rule where it is not one source's contract (that is the conformance suite's, run
//! against every source): a listing that fails part-way, then recovers; a malformed answer to the
//! second call of a poll; a stalled region beside a healthy one.

use std::time::Duration;

use ecs_peers::ErrorKind;
use serde_json::json;

use crate::emu::{arns, ips, Emu};
use crate::{config, peer_ips};

fn eu_cluster(n: u32) -> serde_json::Value {
    json!({"ecs": [{"region": "eu-west-2", "cluster": "web", "subnet": "10.201.0.0/24",
        "tasks": [{"family": "api", "count": n, "group": "service:api"}]}]})
}

fn eu_source() -> serde_json::Value {
    json!([{"type": "ecs", "region": "eu-west-2", "cluster": "web", "service": "api"}])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_second_page_keeps_every_peer() {
    let emu = Emu::start();
    let w = emu.seed(eu_cluster(150));
    let all = ips(&w, "eu-west-2/web", None);
    let mut poller = ecs_peers::Poller::new(config(&emu, eu_source())).await;
    assert_eq!(peer_ips(&poller.poll().await.snapshot), all);

    // 10 tasks stop; then page 1 of the listing succeeds (a pass-through fault entry counts it)
    // and page 2 fails.
    let victims: Vec<String> = arns(&w, "eu-west-2/web", "api")[..10].to_vec();
    emu.stop_tasks("eu-west-2", "web", &victims);
    emu.fault(json!([
        {"operation": "ListTasks", "count": 1},
        {"operation": "ListTasks", "count": 1, "status": 500, "code": "ServerException", "message": "injected"}
    ]));
    let u = poller.poll().await;
    let src = &u.snapshot.sources[0];
    assert!(!src.ok());
    assert_eq!(src.error_kind, Some(ErrorKind::Service));
    assert_eq!(
        peer_ips(&u.snapshot),
        all,
        "a half-read listing must not remove anyone"
    );
    let hits: Vec<_> = emu
        .faults()
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["hits"].clone())
        .collect();
    assert_eq!(hits, [json!(1), json!(1)], "page 1 passed, page 2 failed");

    // The next complete poll removes exactly the stopped ones (after the 5xx back-off).
    emu.clear_faults();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let u = loop {
        let u = poller.poll().await;
        if u.snapshot.sources[0].state.answered() {
            break u;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "source did not recover"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(u.snapshot.peers.len(), 140);
    assert_eq!(u.changes.removed.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_describe_answer_keeps_peers_and_adds_nobody() {
    let emu = Emu::start();
    let w = emu.seed(eu_cluster(3));
    let mut poller = ecs_peers::Poller::new(config(&emu, eu_source())).await;
    poller.poll().await;
    emu.run_tasks(
        json!({"region": "eu-west-2", "cluster": "web", "subnet": "10.201.0.0/24",
        "family": "api", "count": 2, "group": "service:api"}),
    );
    emu.fault(json!({"operation": "DescribeTasks", "count": 1, "status": 200, "raw_body": "{\"tasks\": [{\"taskArn\""}));
    let u = poller.poll().await;
    let src = &u.snapshot.sources[0];
    assert!(!src.ok());
    assert_eq!(src.error_kind, Some(ErrorKind::Malformed), "{src:?}");
    assert_eq!(peer_ips(&u.snapshot), ips(&w, "eu-west-2/web", None));
    let u = poller.poll().await;
    assert!(u.snapshot.sources[0].ok());
    assert_eq!(u.changes.added.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failing_region_does_not_hold_the_others() {
    let emu = Emu::start();
    emu.seed(json!({"ecs": [
        {"region": "eu-west-2", "cluster": "web", "subnet": "10.201.0.0/24", "tasks": [{"family": "api", "count": 2}]},
        {"region": "us-west-2", "cluster": "web", "subnet": "10.202.0.0/24", "tasks": [{"family": "api", "count": 2}]}
    ]}));
    let cfg = config(
        &emu,
        json!([
            {"type": "ecs", "region": "eu-west-2", "cluster": "web"},
            {"type": "ecs", "region": "us-west-2", "cluster": "web"}
        ]),
    );
    let mut poller = ecs_peers::Poller::new(cfg).await;
    poller.poll().await;
    // us-west-2 stalls far past the round; eu-west-2 keeps answering in every round.
    emu.fault(json!({"operation": "*", "region": "us-west-2", "count": 1, "delay_ms": 4000}));
    let mut running = poller.spawn();
    let started = std::time::Instant::now();
    let u = tokio::time::timeout(Duration::from_secs(20), running.next())
        .await
        .unwrap()
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a round waited for the stalled region"
    );
    assert!(u.snapshot.sources[0].ok());
    assert_eq!(
        u.snapshot.peers.len(),
        4,
        "the stalled region keeps its peers"
    );
    running.stop().await;
}
