//! `regions`: one source's cluster and service in every enabled region of its partition (or in
//! a list of regions), each region a source of its own. A region not enabled, or without the
//! cluster or service, is absent (no warning, probed at `region_probe_interval`); an enabled
//! region that refuses the credentials is a failure with its fix; a region where the stack
//! appears joins at the next probe, without a restart.

use std::time::{Duration, SystemTime};

use ecs_peers::{ErrorKind, Snapshot, SourceStatus};
use serde_json::{json, Value};

use crate::emu::{ips, Emu};
use crate::peer_ips;

const PROBE: &str = "1s";

fn regions_config(emu: &Emu, metadata_uri: Option<&Value>, source: Value) -> ecs_peers::Config {
    let mut c = json!({
        "node_basename": "app",
        "endpoint_url": emu.endpoint,
        "max_attempts": 1,
        "polling_interval": "300ms",
        "region_probe_interval": PROBE,
        "jitter": 0.0,
        "poll_timeout": "10s",
        "sources": [source],
    });
    if let Some(uri) = metadata_uri {
        c["metadata_url"] = uri.clone();
    }
    ecs_peers::Config::from_value(c).unwrap()
}

fn set_region(emu: &Emu, region: &str, status: &str) {
    let body = json!({"region": region, "opt_status": status}).to_string();
    let (code, out) = emu.http("POST", "/_emu/regions", &body).unwrap();
    assert_eq!(code, 200, "{out}");
}

/// The emulator's call log: `(operation, region)` of every AWS call since the last clear.
fn calls_log(emu: &Emu) -> Vec<(String, String)> {
    emu.calls(None).1
}

fn source<'a>(s: &'a Snapshot, region: &str) -> &'a SourceStatus {
    s.sources
        .iter()
        .find(|x| x.region == region)
        .unwrap_or_else(|| panic!("no source in {region}: {:#?}", s.sources))
}

/// The aws partition's regions as the emulator (botocore, the SDKs' table) lists them.
fn aws_regions(emu: &Emu) -> Vec<String> {
    let (_, body) = emu.http("GET", "/_emu/regions?partition=aws", "").unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    v["Regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["RegionName"].as_str().unwrap().to_string())
        .collect()
}

/// Waits until `probe_at` (RFC 3339, whole seconds) has passed: the probe interval going by is
/// the input of what follows, not a synchronisation.
async fn until(probe_at: &str) {
    let secs = aws_smithy_types::DateTime::from_str(
        probe_at,
        aws_smithy_types::date_time::Format::DateTime,
    )
    .unwrap()
    .secs();
    // Whole seconds, rounded down: the next second has surely passed it.
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(secs as u64 + 1);
    if let Ok(wait) = at.duration_since(SystemTime::now()) {
        tokio::time::sleep(wait).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regions_all_polls_every_enabled_region_and_a_region_where_the_service_appears_joins_at_the_next_probe(
) {
    let emu = Emu::start();
    let w = emu.seed(json!({"ecs": [
        {"region": "eu-west-2", "cluster": "web", "subnet": "10.201.0.0/24",
         "tasks": [{"family": "api", "count": 2, "group": "service:api"}]},
        {"region": "us-west-2", "cluster": "web", "subnet": "10.202.0.0/24",
         "tasks": [{"family": "api", "count": 1, "group": "service:api"}]},
        // The cluster without the service: absent, like a region without the cluster.
        {"region": "ap-east-1", "cluster": "web", "subnet": "10.203.0.0/24",
         "tasks": [{"family": "worker", "count": 1, "group": "service:worker"}]}]}));
    set_region(&emu, "af-south-1", "DISABLED");
    emu.clear_calls();
    let me = &w["ecs"]["eu-west-2/web"]["running"][0];
    let cfg = regions_config(
        &emu,
        Some(&me["metadata_uri"]),
        // Fargate's task metadata names no service (the family would stand for it): name it.
        json!({"type": "ecs", "cluster": "auto", "service": "api", "regions": "all"}),
    );
    let mut poller = ecs_peers::Poller::new(cfg).await;
    let u = poller.poll().await;
    let s = &u.snapshot;

    // A source per region of the partition, this task's first.
    let mut regions = aws_regions(&emu);
    regions.sort();
    let mut polled: Vec<String> = s.sources.iter().map(|x| x.region.clone()).collect();
    assert_eq!(polled[0], "eu-west-2");
    polled.sort();
    assert_eq!(polled, regions);
    assert_eq!(s.sources[0].id.as_str(), "ecs:eu-west-2/web/api");
    assert_eq!(source(s, "us-west-2").id.as_str(), "ecs:us-west-2/web/api");
    assert!(
        s.sources.iter().all(|x| x.ok() && !x.is_failing()),
        "{:#?}",
        s.sources
    );
    assert_eq!(
        source(s, "af-south-1").absent.as_deref(),
        Some("region af-south-1 is not enabled for this account (ec2:DescribeRegions in eu-west-2 does not list it)")
    );
    assert_eq!(
        source(s, "ap-east-1").absent.as_deref(),
        Some("the service does not exist in ap-east-1")
    );
    assert_eq!(
        source(s, "us-east-1").absent.as_deref(),
        Some("the cluster does not exist in us-east-1")
    );
    assert!(source(s, "us-west-2").absent.is_none());
    assert!(s.sources[0].absent.is_none());
    assert!(u.changes.events.iter().all(|e| !e.is_warning()));
    let mut want = ips(&w, "eu-west-2/web", Some("api"));
    want.retain(|ip| ip != me["ip"].as_str().unwrap());
    want.extend(ips(&w, "us-west-2/web", Some("api")));
    want.sort();
    assert_eq!(peer_ips(s), want);

    // One DescribeRegions, in this task's region; nothing sent to the region not enabled.
    let log = calls_log(&emu);
    let describe: Vec<_> = log
        .iter()
        .filter(|(op, _)| op == "DescribeRegions")
        .collect();
    assert_eq!(
        describe,
        [&("DescribeRegions".to_string(), "eu-west-2".to_string())]
    );
    assert!(
        log.iter().all(|(_, r)| r != "af-south-1"),
        "{:?}",
        log.iter()
            .filter(|(_, r)| r == "af-south-1")
            .collect::<Vec<_>>()
    );

    // Within the probe interval the absent regions cost nothing.
    emu.clear_calls();
    let u = poller.poll().await;
    let log = calls_log(&emu);
    assert!(
        log.iter()
            .all(|(_, r)| r == "eu-west-2" || r == "us-west-2"),
        "{log:?}"
    );
    let probe_at = source(&u.snapshot, "us-east-1").probe_at.clone().unwrap();

    // The same service starts in us-east-1: it joins at the next probe, no restart.
    let east = emu.run_tasks(
        json!({"region": "us-east-1", "cluster": "web", "subnet": "10.204.0.0/24",
        "family": "api", "count": 2, "group": "service:api"}),
    );
    until(&probe_at).await;
    let u = poller.poll().await;
    let east_src = source(&u.snapshot, "us-east-1");
    assert!(east_src.absent.is_none() && east_src.ok(), "{east_src:#?}");
    assert_eq!(east_src.peers, 2);
    for t in east.as_array().unwrap() {
        let ip = t["ip"].as_str().unwrap();
        assert!(
            u.changes.added.iter().any(|p| p.ip.to_string() == ip),
            "{ip} joined"
        );
    }
    // Present now: polled every round, like any source.
    emu.clear_calls();
    poller.poll().await;
    assert!(calls_log(&emu)
        .iter()
        .any(|(op, r)| op == "ListTasks" && r == "us-east-1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enabled_region_that_refuses_the_credentials_is_failing_with_its_fix_not_absent() {
    let emu = Emu::start();
    emu.seed(json!({"ecs": [
        {"region": "eu-west-2", "cluster": "web", "subnet": "10.201.0.0/24",
         "tasks": [{"family": "api", "count": 1, "group": "service:api"}]},
        {"region": "ap-east-1", "cluster": "web", "subnet": "10.203.0.0/24",
         "tasks": [{"family": "api", "count": 1, "group": "service:api"}]}]}));
    // ap-east-1 is enabled (DescribeRegions lists it) but refuses these credentials, as a
    // version-1 global STS token is refused in an opt-in region.
    emu.fault(json!({"operation": "ListTasks", "region": "ap-east-1", "count": 100, "status": 400,
        "code": "UnrecognizedClientException", "message": "The security token included in the request is invalid."}));
    let cfg = regions_config(
        &emu,
        None,
        json!({"type": "ecs", "cluster": "web", "service": "api",
               "regions": ["eu-west-2", "ap-east-1", "af-south-1"]}),
    );
    set_region(&emu, "af-south-1", "DISABLED");
    let u = ecs_peers::discover(cfg).await;
    let ids: Vec<&str> = u.sources.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "ecs:eu-west-2/web/api",
            "ecs:af-south-1/web/api",
            "ecs:ap-east-1/web/api"
        ]
    );
    let refused = source(&u, "ap-east-1");
    assert!(
        refused.is_failing() && refused.absent.is_none(),
        "{refused:#?}"
    );
    let e = refused.failure.as_ref().unwrap();
    assert_eq!(e.kind, ErrorKind::Credentials);
    let fix = e.fix.as_deref().unwrap_or_default();
    assert!(fix.contains("ap-east-1"), "{fix}");
    assert!(source(&u, "af-south-1").absent.is_some());
    assert!(source(&u, "eu-west-2").ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_describe_regions_the_home_region_is_polled_and_the_others_say_why() {
    let emu = Emu::start();
    emu.seed(json!({"ecs": [
        {"region": "eu-west-2", "cluster": "web", "subnet": "10.201.0.0/24",
         "tasks": [{"family": "api", "count": 1, "group": "service:api"}]}]}));
    emu.fault(json!({"operation": "DescribeRegions", "count": 100, "status": 403,
        "code": "UnauthorizedOperation", "message": "You are not authorized to perform this operation. User: arn:aws:sts::123456789012:assumed-role/app/t is not authorized to perform: ec2:DescribeRegions"}));
    let cfg = regions_config(
        &emu,
        None,
        json!({"type": "ecs", "cluster": "web", "service": "api", "region": "eu-west-2",
               "regions": ["us-west-2"]}),
    );
    let u = ecs_peers::discover(cfg).await;
    assert!(source(&u, "eu-west-2").ok());
    assert_eq!(u.peers.len(), 1);
    let other = source(&u, "us-west-2");
    let e = other
        .failure
        .as_ref()
        .unwrap_or_else(|| panic!("{other:#?}"));
    assert_eq!(
        (e.kind, e.action),
        (ErrorKind::AccessDenied, "ec2:DescribeRegions")
    );
    assert!(
        e.fix
            .as_deref()
            .unwrap_or_default()
            .contains("ec2:DescribeRegions"),
        "{e}"
    );
}
