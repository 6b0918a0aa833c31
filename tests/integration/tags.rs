//! `tags`: the tasks of one tagged group, in every region, for the calls an unfiltered source
//! makes (counted by the emulator's call log); what a tag changed on a running task does; tags
//! with `cluster = "auto"`.

use std::collections::BTreeMap;

use ecs_peers::{Config, Poller};
use serde_json::{json, Value};

use crate::emu::Emu;
use crate::{config, peer_ips};

/// Runs `count` api tasks in `region`/web carrying `tags`; returns the run output.
fn run(emu: &Emu, region: &str, subnet: &str, count: u32, tags: Value) -> Vec<Value> {
    let mut spec = json!({"region": region, "cluster": "web", "subnet": subnet, "family": "api",
                          "count": count, "group": "service:api"});
    if !tags.is_null() {
        spec["tags"] = tags;
    }
    emu.run_tasks(spec).as_array().unwrap().clone()
}

fn ips(tasks: &[&Vec<Value>]) -> Vec<String> {
    let mut v: Vec<String> = tasks
        .iter()
        .flat_map(|ts| ts.iter())
        .map(|t| t["ip"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

/// The AWS calls the emulator logged since the last clearing, by region and operation; clears
/// the log.
fn logged_calls(emu: &Emu) -> BTreeMap<(String, String), u64> {
    let mut by = BTreeMap::new();
    for (op, region) in emu.calls(None).1 {
        *by.entry((region, op)).or_insert(0) += 1;
    }
    emu.clear_calls();
    by
}

/// The calls of each of three polls of a new poller of `sources`, from the emulator's log, and
/// its peers' IPs after the last.
async fn three_polls(
    emu: &Emu,
    sources: Value,
) -> (Vec<BTreeMap<(String, String), u64>>, Vec<String>) {
    emu.clear_calls();
    let mut poller = Poller::new(config(emu, sources)).await;
    let mut calls = Vec::new();
    let mut last = None;
    for _ in 0..3 {
        let u = poller.poll().await;
        assert!(
            u.snapshot.sources.iter().all(|s| s.ok()),
            "{:#?}",
            u.snapshot.sources
        );
        calls.push(logged_calls(emu));
        last = Some(u.snapshot);
    }
    (calls, peer_ips(&last.unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_filter_finds_its_group_in_two_regions_with_the_calls_of_no_filter() {
    let emu = Emu::start();
    let (eu, us) = ("10.211.0.0/24", "10.212.0.0/24");
    let eu_a = run(
        &emu,
        "eu-west-2",
        eu,
        3,
        json!({"team": "a", "stage": "blue"}),
    );
    let eu_b = run(&emu, "eu-west-2", eu, 2, json!({"team": "b"}));
    let eu_none = run(&emu, "eu-west-2", eu, 2, Value::Null);
    let us_a = run(&emu, "us-west-2", us, 2, json!({"team": "a"}));
    let us_b = run(&emu, "us-west-2", us, 1, json!({"team": "A"}));
    let source = |region: &str, tags: Value| {
        let mut s = json!({"type": "ecs", "region": region, "cluster": "web", "service": "api"});
        if !tags.is_null() {
            s["tags"] = tags;
        }
        s
    };

    let (filtered, peers) = three_polls(
        &emu,
        json!([
            source("eu-west-2", json!({"team": "a"})),
            source("us-west-2", json!({"team": "a"}))
        ]),
    )
    .await;
    assert_eq!(peers, ips(&[&eu_a, &us_a]), "team a in both regions");

    let (unfiltered, all) = three_polls(
        &emu,
        json!([
            source("eu-west-2", Value::Null),
            source("us-west-2", Value::Null)
        ]),
    )
    .await;
    assert_eq!(all, ips(&[&eu_a, &eu_b, &eu_none, &us_a, &us_b]));

    assert_eq!(filtered, unfiltered, "the same calls, poll by poll");
    let per_region = |op: &str, n: u64| {
        BTreeMap::from([
            (("eu-west-2".to_string(), op.to_string()), n),
            (("us-west-2".to_string(), op.to_string()), n),
        ])
    };
    let mut first = per_region("ListTasks", 1);
    first.extend(per_region("DescribeTasks", 1));
    assert_eq!(filtered[0], first);
    assert_eq!(filtered[1], per_region("ListTasks", 1), "steady state");
    assert_eq!(filtered[2], per_region("ListTasks", 1), "steady state");
}

/// Tags are read when a task is first described RUNNING and cached with it: a tag changed on a
/// running task (TagResource, UntagResource) changes nothing, and calls nothing, until the source
/// starts again, which reads the tags anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_changed_on_a_running_task_is_seen_when_the_source_starts_again() {
    let emu = Emu::start();
    let subnet = "10.213.0.0/24";
    let a = run(&emu, "eu-west-2", subnet, 2, json!({"team": "a"}));
    let b = run(&emu, "eu-west-2", subnet, 1, json!({"team": "b"}));
    let sources = json!([{"type": "ecs", "region": "eu-west-2", "cluster": "web",
                          "tags": {"team": "a"}}]);
    let mut running = Poller::new(config(&emu, sources.clone())).await;
    assert_eq!(peer_ips(&running.poll().await.snapshot), ips(&[&a]));

    let tag = |task: &Value, spec: Value| {
        let mut spec = spec;
        spec["region"] = json!("eu-west-2");
        spec["task"] = task["arn"].clone();
        emu.world("tag", &spec)
    };
    assert_eq!(
        tag(&b[0], json!({"tags": {"team": "a"}})),
        json!({"team": "a"})
    );
    assert_eq!(tag(&a[0], json!({"untag": ["team"]})), json!({}));

    emu.clear_calls();
    let u = running.poll().await;
    assert_eq!(peer_ips(&u.snapshot), ips(&[&a]), "the cached tags");
    assert!(u.changes.is_empty());
    assert_eq!(
        logged_calls(&emu),
        BTreeMap::from([(("eu-west-2".into(), "ListTasks".into()), 1)]),
        "no call to look at tags again"
    );

    let mut restarted = Poller::new(config(&emu, sources)).await;
    let both: Vec<&Value> = vec![&a[1], &b[0]];
    let mut want: Vec<String> = both
        .iter()
        .map(|t| t["ip"].as_str().unwrap().to_string())
        .collect();
    want.sort();
    assert_eq!(peer_ips(&restarted.poll().await.snapshot), want);
}

/// `cluster = "auto"` keeps its tags: this task's cluster and family, only the tasks tagged so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_filter_an_auto_source() {
    let emu = Emu::start();
    let subnet = "10.214.0.0/24";
    let a = run(&emu, "eu-west-2", subnet, 2, json!({"team": "a"}));
    let b = run(&emu, "eu-west-2", subnet, 2, json!({"team": "b"}));
    let me = &a[0];
    let cfg = Config::from_value(json!({
        "node_basename": "app",
        "endpoint_url": emu.endpoint,
        "metadata_url": me["metadata_uri"],
        "max_attempts": 1,
        "sources": [{"type": "ecs", "cluster": "auto", "tags": {"team": "a"}}],
    }))
    .unwrap();
    let s = Poller::new(cfg).await.poll().await.snapshot;
    assert!(s.sources[0].ok(), "{:#?}", s.sources);
    // This task is left out as this node; its team-a sibling is the one peer, no team-b task.
    assert_eq!(peer_ips(&s), ips(&[&a[1..].to_vec()]));
    assert!(!b.is_empty());
}

/// `ecs-peers list --ecs ...,tags.KEY=VALUE`: the same filter from a flag, and a tag ECS would
/// refuse named with the flag.
#[test]
fn the_cli_takes_tags_in_an_ecs_spec() {
    let emu = Emu::start();
    let subnet = "10.215.0.0/24";
    let a = run(&emu, "eu-west-2", subnet, 2, json!({"team": "a"}));
    run(&emu, "eu-west-2", subnet, 1, json!({"team": "b"}));
    let list = |spec: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_ecs-peers"))
            .args([
                "list",
                "--json",
                "--ecs",
                spec,
                "--endpoint-url",
                &emu.endpoint,
            ])
            .args(["--max-attempts", "1", "--basename", "app"])
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env_remove("RELEASE_NODE")
            .output()
            .unwrap()
    };
    let o = list("region=eu-west-2,cluster=web,tags.team=a");
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let s: Value = serde_json::from_slice(&o.stdout).unwrap();
    let mut got: Vec<String> = s["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["ip"].as_str().unwrap().to_string())
        .collect();
    got.sort();
    assert_eq!(got, ips(&[&a]));

    let o = list("region=eu-west-2,cluster=web,tags.aws:ecs:clusterName=web");
    assert_eq!(o.status.code(), Some(2));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains(
            "tags.aws:ecs:clusterName: the tag key \"aws:ecs:clusterName\" begins with aws:"
        ),
        "{e}"
    );
}

/// A `tags` filter that matches no running task says so: the tasks it left out are skipped as
/// `tag_mismatch`, with the values they carry for the key, and the source is SKIPPING (not
/// "ok, 0 peers"); while some task matches, the others are left out in silence, as the filter
/// means.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tags_filter_that_matches_no_running_task_says_what_the_tasks_carry() {
    let emu = Emu::start();
    let subnet = "10.216.0.0/24";
    run(&emu, "eu-west-2", subnet, 2, json!({"team": "a"}));
    run(&emu, "eu-west-2", subnet, 1, json!({"team": "b"}));
    run(&emu, "eu-west-2", subnet, 1, Value::Null);
    let source = |team: &str| {
        json!([{"type": "ecs", "region": "eu-west-2", "cluster": "web",
                "tags": {"team": team}}])
    };
    let s = Poller::new(config(&emu, source("payments")))
        .await
        .poll()
        .await
        .snapshot;
    let src = &s.sources[0];
    assert!(s.peers.is_empty());
    assert_eq!(src.state, ecs_peers::SourceState::Skipping, "{src:#?}");
    assert_eq!(src.skipped_tasks, 4, "{src:#?}");
    let k = &src.skipped[0];
    assert_eq!(k.reason, ecs_peers::SkipReason::TagMismatch);
    assert_eq!(k.tasks, 4);
    assert!(
        k.message.ends_with(
            r#""team"="payments" wanted; they carry "a" (2), "b" (1), no "team" tag (1)"#
        ),
        "{}",
        k.message
    );
    assert!(k.fix.contains("propagateTags"), "{}", k.fix);
    // The table says it as the status does, and the exit status is not 0.
    let o = crate::cli::cli(
        &emu,
        &[
            "list",
            "--ecs",
            "region=eu-west-2,cluster=web,tags.team=payments",
        ],
    );
    let table = crate::cli::text(&o);
    assert_eq!(o.status.code(), Some(4), "{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with("ecs:eu-west-2/web"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        row.contains(" SKIPPING ")
            && row.contains("4 running task(s) skipped")
            && row.contains(r#"they carry "a" (2), "b" (1)"#),
        "{table}"
    );

    // A filter that matches some tasks leaves the others out without a word.
    let s = Poller::new(config(&emu, source("b")))
        .await
        .poll()
        .await
        .snapshot;
    assert_eq!(s.peers.len(), 1);
    assert_eq!(s.sources[0].state, ecs_peers::SourceState::Ok);
    assert!(s.sources[0].skipped.is_empty(), "{:#?}", s.sources[0]);
}
