//! What is discovered: the right tasks, from every region, merged; with the fewest calls.

use std::time::Duration;

use ecs_peers::{Poller, SkipReason};
use serde_json::{json, Value};

use crate::emu::{arns, ips, Emu};
use crate::{calls, config, peer_ips};

#[test]
fn awsemu_allocates_task_ips_from_the_subnet() {
    // Guards the emulator patch every other test relies on.
    let emu = Emu::start();
    let w = emu.seed(
        json!({"ecs": [{"region": "eu-west-2", "cluster": "web", "subnet": "10.201.0.0/24",
        "tasks": [{"family": "api", "count": 2}]}]}),
    );
    assert_eq!(ips(&w, "eu-west-2/web", None), ["10.201.0.4", "10.201.0.5"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merges_two_regions_and_cloudmap_into_exactly_the_running_tasks() {
    let emu = Emu::start();
    let w = emu.seed(json!({
        "ecs": [
            {"region": "eu-west-2", "cluster": "web", "subnet": "10.201.0.0/24",
             "tasks": [{"family": "api", "count": 150, "group": "service:api"}, {"family": "worker", "count": 3}],
             "stop": {"family": "api", "count": 5}},
            {"region": "us-west-2", "cluster": "web", "subnet": "10.202.0.0/24",
             "tasks": [{"family": "api", "count": 4, "group": "service:api"}]}
        ],
        "cloudmap": [{"region": "ap-southeast-2", "namespace": "internal", "service": "api",
            "instances": [{"id": "a", "ipv4": "10.203.0.10"}, {"id": "b", "ipv4": "10.203.0.11"}, {"id": "c", "ipv4": "10.203.0.12"}]}]
    }));
    let cfg = config(
        &emu,
        json!([
            {"type": "ecs", "region": "eu-west-2", "cluster": "web", "service": "api"},
            {"type": "ecs", "region": "us-west-2", "cluster": "web", "service": "api"},
            {"type": "cloudmap", "region": "ap-southeast-2", "namespace": "internal", "service": "api"}
        ]),
    );
    let mut poller = ecs_peers::Poller::new(cfg).await;
    let first = poller.poll().await;
    let s = &first.snapshot;
    assert!(s.sources.iter().all(|x| x.ok()), "{:#?}", s.sources);

    let mut want = ips(&w, "eu-west-2/web", Some("api"));
    want.extend(ips(&w, "us-west-2/web", None));
    want.extend(["10.203.0.10", "10.203.0.11", "10.203.0.12"].map(String::from));
    want.sort();
    assert_eq!(want.len(), 145 + 4 + 3);
    assert_eq!(
        peer_ips(s),
        want,
        "exactly the RUNNING api tasks and the instances"
    );
    let eu = s.peers.iter().find(|p| p.ip.to_string() == "10.201.0.4");
    assert!(eu.is_none(), "10.201.0.4 was stopped");
    let p = s
        .peers
        .iter()
        .find(|p| p.ip.to_string() == "10.202.0.4")
        .unwrap();
    assert_eq!(p.node, "app@10.202.0.4");
    assert_eq!(p.region, "us-west-2");
    assert_eq!(p.source.as_str(), "ecs:us-west-2/web/api");
    assert!(p
        .task_arn
        .as_deref()
        .unwrap()
        .starts_with("arn:aws:ecs:us-west-2:"));
    assert!(p
        .availability_zone
        .as_deref()
        .unwrap()
        .starts_with("us-west-2"));
    assert_eq!(
        s.peers.windows(2).filter(|w| w[0].node > w[1].node).count(),
        0,
        "sorted by node"
    );

    // First poll: 145 tasks = 2 ListTasks pages and 2 DescribeTasks batches (none over 100 ARNs:
    // awsemu rejects those, as AWS does).
    assert_eq!(calls(s, 0, "ecs:ListTasks"), 2);
    assert_eq!(calls(s, 0, "ecs:DescribeTasks"), 2);
    assert_eq!(calls(s, 1, "ecs:ListTasks"), 1);
    assert_eq!(calls(s, 1, "ecs:DescribeTasks"), 1);
    assert_eq!(calls(s, 2, "servicediscovery:DiscoverInstances"), 1);

    // Steady state: ListTasks only.
    let second = poller.poll().await;
    let s2 = &second.snapshot;
    assert_eq!(peer_ips(s2), want);
    assert!(second.changes.is_empty());
    assert_eq!(calls(s2, 0, "ecs:ListTasks"), 2);
    assert_eq!(
        calls(s2, 0, "ecs:DescribeTasks"),
        0,
        "no DescribeTasks on the second poll"
    );
    assert_eq!(calls(s2, 1, "ecs:DescribeTasks"), 0);
    assert_eq!(s2.sources[0].api_calls_total, 6);
}

async fn next(r: &mut ecs_peers::PollerHandle) -> ecs_peers::Update {
    tokio::time::timeout(Duration::from_secs(20), r.next())
        .await
        .expect("an update")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_task_is_removed_and_new_task_joins() {
    let emu = Emu::start();
    let w = emu.seed(
        json!({"ecs": [{"region": "eu-west-2", "cluster": "web", "subnet": "10.201.0.0/24",
        "tasks": [{"family": "api", "count": 3, "group": "service:api"}]}]}),
    );
    let cfg = config(
        &emu,
        json!([{"type": "ecs", "region": "eu-west-2", "cluster": "web", "service": "api"}]),
    );
    let mut running = ecs_peers::Poller::new(cfg).await.spawn();
    let u = next(&mut running).await;
    assert_eq!(u.snapshot.peers.len(), 3);
    assert_eq!(u.changes.added.len(), 3);

    let victim = arns(&w, "eu-west-2/web", "api")[1].clone();
    emu.stop_tasks("eu-west-2", "web", std::slice::from_ref(&victim));
    let removed = loop {
        let u = next(&mut running).await;
        if !u.changes.removed.is_empty() {
            break u;
        }
    };
    assert_eq!(removed.changes.removed.len(), 1);
    assert_eq!(
        removed.changes.removed[0].task_arn.as_deref(),
        Some(victim.as_str())
    );
    assert_eq!(removed.snapshot.peers.len(), 2);

    let new = emu.run_tasks(
        json!({"region": "eu-west-2", "cluster": "web", "subnet": "10.201.0.0/24",
        "family": "api", "count": 1, "group": "service:api"}),
    );
    let added = loop {
        let u = next(&mut running).await;
        if !u.changes.added.is_empty() {
            break u;
        }
    };
    assert_eq!(
        added.changes.added[0].ip.to_string(),
        new[0]["ip"].as_str().unwrap()
    );
    assert_eq!(added.snapshot.peers.len(), 3);
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn family_and_service_sources_see_only_their_tasks() {
    let emu = Emu::start();
    let w = emu.seed(
        json!({"ecs": [{"region": "eu-west-2", "cluster": "web", "subnet": "10.201.0.0/24",
        "tasks": [{"family": "api", "count": 3, "group": "service:api"},
                  {"family": "worker", "count": 2},
                  {"family": "api", "count": 2, "group": "service:admin"}]}]}),
    );
    let cfg = config(
        &emu,
        json!([
            {"type": "ecs", "region": "eu-west-2", "cluster": "web", "family": "worker"},
            {"type": "ecs", "region": "eu-west-2", "cluster": "web", "service": "api"}
        ]),
    );
    let s = ecs_peers::discover(cfg).await;
    assert!(s.sources.iter().all(|x| x.ok()));
    assert_eq!(s.sources[0].peers, 2);
    assert_eq!(s.sources[1].peers, 3);
    let mut want = ips(&w, "eu-west-2/web", Some("worker"));
    let api: Vec<String> = w["ecs"]["eu-west-2/web"]["running"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["family"] == "api")
        .take(3)
        .map(|t| t["ip"].as_str().unwrap().to_string())
        .collect();
    want.extend(api);
    want.sort();
    assert_eq!(peer_ips(&s), want, "the service:admin tasks are not peers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_ip_in_two_regions_is_a_conflict_not_a_peer() {
    let emu = Emu::start();
    emu.seed(json!({
        "ecs": [{"region": "eu-west-2", "cluster": "web", "subnet": "10.201.0.0/24", "tasks": [{"family": "api", "count": 2}]}],
        "cloudmap": [{"region": "us-west-2", "namespace": "internal", "service": "api",
            "instances": [{"id": "x", "ipv4": "10.201.0.4"}, {"id": "y", "ipv4": "10.202.0.9"}]}]
    }));
    let cfg = config(
        &emu,
        json!([
            {"type": "ecs", "region": "eu-west-2", "cluster": "web"},
            {"type": "cloudmap", "region": "us-west-2", "namespace": "internal", "service": "api"}
        ]),
    );
    let s = ecs_peers::discover(cfg).await;
    assert_eq!(peer_ips(&s), ["10.201.0.5", "10.202.0.9"]);
    assert_eq!(s.conflicts.len(), 1);
    let c = &s.conflicts[0];
    assert_eq!(c.ip.to_string(), "10.201.0.4");
    let regions: Vec<&str> = c.claims.iter().map(|c| c.region.as_str()).collect();
    assert_eq!(regions, ["eu-west-2", "us-west-2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudmap_query_filters_instances_and_local_node_is_excluded() {
    let emu = Emu::start();
    emu.seed(json!({"cloudmap": [{"region": "us-west-2", "namespace": "internal", "service": "api",
        "instances": [
            {"id": "p1", "ipv4": "10.202.0.10", "attributes": {"stage": "prod", "AVAILABILITY_ZONE": "us-west-2a"}},
            {"id": "p2", "ipv4": "10.202.0.11", "attributes": {"stage": "prod"}},
            {"id": "d1", "ipv4": "10.202.0.12", "attributes": {"stage": "dev"}},
            {"id": "n1", "attributes": {"stage": "prod"}}
        ]}]}));
    let mut cfg = config(
        &emu,
        json!([{"type": "cloudmap", "region": "us-west-2", "namespace": "internal",
        "service": "api", "query": {"stage": "prod"}}]),
    );
    cfg.local_node = Some("app@10.202.0.11".into());
    let s = ecs_peers::discover(cfg).await;
    assert!(s.sources[0].ok(), "{:?}", s.sources[0]);
    assert_eq!(
        peer_ips(&s),
        ["10.202.0.10"],
        "dev is filtered, n1 has no address, .11 is this node"
    );
    assert_eq!(s.local.as_ref().unwrap().node, "app@10.202.0.11");
    let p = &s.peers[0];
    assert_eq!(p.instance_id.as_deref(), Some("p1"));
    assert_eq!(p.availability_zone.as_deref(), Some("us-west-2a"));
    assert_eq!(p.health.as_deref(), Some("HEALTHY"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_cluster_describes_peers_local_node_and_source_by_the_resolved_region() {
    // `cluster = "auto"` once resolved from the task metadata is the task's own region
    // everywhere the source is described: its peers, this node, the source status, `{region}`.
    // A Cloud Map service of the same tasks in the same region is the same peers, no conflict.
    let emu = Emu::start();
    let w = emu.seed(
        json!({"ecs": [{"region": "eu-west-2", "cluster": "web", "subnet": "10.201.0.0/24",
        "tasks": [{"family": "api", "count": 3}]}]}),
    );
    let running = w["ecs"]["eu-west-2/web"]["running"].as_array().unwrap();
    let instances: Vec<Value> = running
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"id": format!("i{i}"), "ipv4": t["ip"]}))
        .collect();
    emu.seed(
        json!({"cloudmap": [{"region": "eu-west-2", "namespace": "internal", "service": "api",
        "instances": instances}]}),
    );
    let cfg = ecs_peers::Config::from_value(json!({
        "node_name": "app@ip-{ip_dashed}.{region}.compute.internal",
        "endpoint_url": emu.endpoint,
        "metadata_url": running[0]["metadata_uri"],
        "max_attempts": 1,
        "poll_timeout": "10s",
        "sources": [
            {"type": "ecs", "cluster": "auto"},
            {"type": "cloudmap", "region": "eu-west-2", "namespace": "internal", "service": "api"}
        ],
    }))
    .unwrap();
    let s = ecs_peers::discover(cfg).await;
    assert!(s.sources.iter().all(|x| x.ok()), "{:#?}", s.sources);
    assert!(
        s.conflicts.is_empty(),
        "no false conflict: {:#?}",
        s.conflicts
    );
    assert_eq!(s.sources[0].id.as_str(), "ecs:eu-west-2/web/family:api");
    assert_eq!(s.sources[0].region, "eu-west-2");
    let me = s.local.as_ref().expect("this task is recognised");
    assert_eq!(me.ip.to_string(), running[0]["ip"].as_str().unwrap());
    assert_eq!(me.region, "eu-west-2");
    assert_eq!(s.peers.len(), 2, "{:#?}", s.peers);
    for p in &s.peers {
        assert_eq!(p.region, "eu-west-2");
        let dashed = p.ip.to_string().replace('.', "-");
        assert_eq!(
            p.node,
            format!("app@ip-{dashed}.eu-west-2.compute.internal")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn family_with_a_revision_sees_only_that_revisions_tasks() {
    // ListTasks' `family` filter takes a family only: `family = "api:1"` lists the family and
    // keeps the tasks of that revision.
    let emu = Emu::start();
    let w = emu.seed(json!({"ecs": [{"region": "eu-west-2", "cluster": "web", "subnet": "10.201.0.0/24",
        "tasks": [{"family": "api", "count": 2}, {"family": "api", "count": 1, "new_revision": true},
                  {"family": "worker", "count": 1}]}]}));
    let running = w["ecs"]["eu-west-2/web"]["running"].as_array().unwrap();
    let of_revision = |rev: &str| -> Vec<String> {
        let mut v: Vec<String> = running
            .iter()
            .filter(|t| {
                t["task_definition"]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!("/api:{rev}"))
            })
            .map(|t| t["ip"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        (of_revision("1").len(), of_revision("2").len()),
        (2, 1),
        "{w}"
    );
    let cfg = config(
        &emu,
        json!([
            {"type": "ecs", "region": "eu-west-2", "cluster": "web", "family": "api:1"},
            {"type": "ecs", "region": "eu-west-2", "cluster": "web", "family": "api:2"},
            {"type": "ecs", "region": "eu-west-2", "cluster": "web", "family": "api"}
        ]),
    );
    let s = ecs_peers::discover(cfg).await;
    assert!(s.sources.iter().all(|x| x.ok()), "{:#?}", s.sources);
    let of_source = |i: usize| -> Vec<String> {
        let id = &s.sources[i].id;
        let mut v: Vec<String> = s
            .peers
            .iter()
            .filter(|p| &p.source == id)
            .map(|p| p.ip.to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(s.sources[0].peers, 2);
    assert_eq!(s.sources[1].peers, 1);
    assert_eq!(s.sources[2].peers, 3, "a family alone is every revision");
    assert_eq!(of_source(0), of_revision("1"));
    assert_eq!(s.sources[1].id.as_str(), "ecs:eu-west-2/web/family:api:2");
    assert_eq!(peer_ips(&s).len(), 3, "the worker is in no source");
}

/// A `family` revision or a `container` that no running task has says so, as a `tags` filter
/// does: the tasks it left out are skipped (`revision_mismatch`, `no_such_container`) with what
/// they run or have, and the source is SKIPPING, not "ok, 0 peers". While some task matches,
/// the others are left out in silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revision_or_container_no_running_task_has_says_what_they_have() {
    let emu = Emu::start();
    emu.seed(json!({"ecs": [{"region": "eu-west-2", "cluster": "web", "subnet": "10.201.0.0/24",
        "tasks": [{"family": "api", "count": 2}, {"family": "api", "count": 1, "new_revision": true}]}]}));
    let poll = |extra: Value| {
        let mut src = json!({"type": "ecs", "region": "eu-west-2", "cluster": "web"});
        for (k, v) in extra.as_object().unwrap() {
            src[k] = v.clone();
        }
        let cfg = config(&emu, json!([src]));
        async move { Poller::new(cfg).await.poll().await.snapshot }
    };
    for (extra, reason, says) in [
        (
            json!({"family": "api:9"}),
            SkipReason::RevisionMismatch,
            r#"revision "9" wanted; they run "1" (2), "2" (1)"#,
        ),
        (
            json!({"container": "web"}),
            SkipReason::NoSuchContainer,
            r#"container "web" wanted; their containers are "app" (3)"#,
        ),
    ] {
        let s = poll(extra.clone()).await;
        let src = &s.sources[0];
        assert!(s.peers.is_empty(), "{extra}");
        assert_eq!(src.state, ecs_peers::SourceState::Skipping, "{src:#?}");
        assert_eq!(src.skipped.len(), 1, "{src:#?}");
        let k = &src.skipped[0];
        assert_eq!((k.reason, k.tasks), (reason, 3), "{src:#?}");
        assert!(k.message.ends_with(says), "{}", k.message);
        assert!(!k.fix.is_empty());
    }
    // The revision some tasks run: the others are left out without a word.
    let s = poll(json!({"family": "api:2"})).await;
    assert_eq!(s.peers.len(), 1);
    assert_eq!(s.sources[0].state, ecs_peers::SourceState::Ok);
    assert!(s.sources[0].skipped.is_empty(), "{:#?}", s.sources[0]);
}
