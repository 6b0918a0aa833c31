//! Cloud Map sources through the CLI, against the emulator's shapes: SRV instances of
//! bridge-mode tasks (the host's address, each task's own port), instances without an address
//! attribute, and a namespace shared from another account.

use std::process::{Command, Output};

use serde_json::{json, Value};

use crate::emu::Emu;

const REGION: &str = "us-west-2";
/// Two ECS task ids: ECS service discovery registers each task with its task id as instance id.
const T1: &str = "4e3cfb1a6d2a4b0f9d6c2f9f5b8a7c11";
const T2: &str = "9a8b7c6d5e4f40312a1b2c3d4e5f6a7b";

/// `ecs-peers list --json ARGS` against the emulator, basename "app", with `sources` (a list of
/// Cloud Map sources) in a config file when given.
fn list(emu: &Emu, sources: Option<Value>, args: &[&str]) -> (Output, Value) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ecs-peers"));
    c.arg("list").args(args).args([
        "--endpoint-url",
        &emu.endpoint,
        "--max-attempts",
        "1",
        "--basename",
        "app",
    ]);
    let dir = std::env::temp_dir().join(format!("ecs-peers-cloudmap-{}", emu.port));
    if let Some(sources) = sources {
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("peers.json");
        std::fs::write(&file, json!({ "sources": sources }).to_string()).unwrap();
        c.arg("--config").arg(file);
    }
    let o = c
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("RELEASE_NODE")
        .env_remove("RELEASE_NAME")
        .env_remove("RELEASE_DISTRIBUTION")
        .env_remove("ECS_PEERS_CONFIG")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let json = if args.contains(&"--json") {
        serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    (o, json)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn why(o: &Output) -> String {
    format!(
        "{}\n{}",
        stdout(o),
        String::from_utf8_lossy(&o.stderr).into_owned()
    )
}

/// (node, address) of every peer of a JSON snapshot.
fn peers(s: &Value) -> Vec<(String, String)> {
    s["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let addr = match p.get("port") {
                Some(port) => format!("{}:{port}", p["ip"].as_str().unwrap()),
                None => p["ip"].as_str().unwrap().to_string(),
            };
            (p["node"].as_str().unwrap().to_string(), addr)
        })
        .collect()
}

/// Bridge-mode tasks registered by ECS service discovery: SRV records with the host's address
/// and each task's host port. Two tasks on one host are two peers, named by their instance id
/// (the task id) and dialled on their own ports; with `port = "distribution_port"` they would
/// be one address, so one is the peer and the other is reported skipped, never dropped unsaid.
#[test]
fn two_srv_instances_on_one_host_are_two_peers_with_their_own_names_and_ports() {
    let emu = Emu::start();
    emu.seed(
        json!({"cloudmap": [{"region": REGION, "namespace": "internal", "service": "api",
        "records": ["SRV"],
        "instances": [{"id": T1, "ipv4": "10.202.0.10", "port": 32768},
                      {"id": T2, "ipv4": "10.202.0.10", "port": 32769}]}]}),
    );
    let (o, _) = list(&emu, None, &["--cloudmap", "us-west-2/internal/api"]);
    assert_eq!(o.status.code(), Some(0), "{}", why(&o));
    let t = stdout(&o);
    for (id, port) in [(T1, 32768), (T2, 32769)] {
        assert!(
            t.contains(&format!("app-{id}@10.202.0.10  10.202.0.10:{port} ")),
            "instance {id} missing from\n{t}"
        );
    }
    let (o, s) = list(
        &emu,
        None,
        &["--json", "--cloudmap", "us-west-2/internal/api"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", why(&o));
    assert_eq!(
        peers(&s),
        [
            (format!("app-{T1}@10.202.0.10"), "10.202.0.10:32768".into()),
            (format!("app-{T2}@10.202.0.10"), "10.202.0.10:32769".into()),
        ]
    );
    assert_eq!(s["sources"][0]["peers"], 2);
    assert_eq!(s["sources"][0]["skipped_tasks"], 0);

    let dist = json!([{"type": "cloudmap", "region": REGION, "namespace": "internal",
                       "service": "api", "port": "distribution_port"}]);
    let (o, s) = list(&emu, Some(dist), &["--json"]);
    assert_eq!(o.status.code(), Some(0), "one peer is a peer: {}", why(&o));
    assert_eq!(
        peers(&s),
        [("app@10.202.0.10".into(), "10.202.0.10".into())]
    );
    let src = &s["sources"][0];
    assert_eq!(src["skipped_tasks"], 1, "{src}");
    assert_eq!(src["skipped"][0]["reason"], "same_address");
    assert_eq!(src["skipped"][0]["example_task"], T2);
}

/// Instances registered with custom attributes only, and a CNAME service's instances: found,
/// not usable, and said so: counted in the status, the table and the JSON with the reason and
/// the fix, and the exit code ECS's skipped tasks give (4: the only source skipped all it
/// found; 3: one source of two did).
#[test]
fn instances_without_an_address_are_reported_skipped_with_the_exit_code_of_skipped_tasks() {
    let emu = Emu::start();
    emu.seed(json!({"cloudmap": [
        {"region": REGION, "namespace": "internal", "service": "custom",
         "instances": [{"id": "c1", "attributes": {"stage": "blue"}},
                       {"id": "c2", "attributes": {"stage": "green"}}]},
        {"region": REGION, "namespace": "dns.internal", "service": "web", "records": ["CNAME"],
         "instances": [{"id": "w1", "attributes": {"AWS_INSTANCE_CNAME": "web.example.com"}}]},
        {"region": REGION, "namespace": "other", "service": "api",
         "instances": [{"id": "a", "ipv4": "10.202.0.11"}]}]}));
    let (o, _) = list(&emu, None, &["--cloudmap", "us-west-2/internal/custom"]);
    let t = stdout(&o);
    assert_eq!(o.status.code(), Some(4), "{}", why(&o));
    assert!(t.starts_with("No peers."), "{t}");
    assert!(t.contains("SKIPPING"), "{t}");
    assert!(
        t.contains("2 Cloud Map instance(s) skipped (e.g. instance c1)")
            && t.contains("no AWS_INSTANCE_IPV4 or AWS_INSTANCE_IPV6 attribute")
            && t.contains("register-instance --attributes AWS_INSTANCE_IPV4="),
        "{t}"
    );
    let (o, s) = list(
        &emu,
        None,
        &["--json", "--cloudmap", "us-west-2/internal/custom"],
    );
    assert_eq!(o.status.code(), Some(4), "{}", why(&o));
    let src = &s["sources"][0];
    assert_eq!(src["skipped_tasks"], 2, "{src}");
    assert_eq!(src["skipped"][0]["reason"], "no_address_attribute");

    let (o, s) = list(
        &emu,
        None,
        &["--json", "--cloudmap", "us-west-2/dns.internal/web"],
    );
    assert_eq!(o.status.code(), Some(4), "{}", why(&o));
    assert_eq!(s["sources"][0]["skipped"][0]["reason"], "dns_name_only");

    let (o, s) = list(
        &emu,
        None,
        &[
            "--json",
            "--cloudmap",
            "us-west-2/other/api",
            "--cloudmap",
            "us-west-2/internal/custom",
        ],
    );
    assert_eq!(o.status.code(), Some(3), "{}", why(&o));
    assert_eq!(
        peers(&s),
        [("app@10.202.0.11".into(), "10.202.0.11".into())]
    );
}

/// A namespace another account owns and shares with this one through AWS RAM: not found
/// without `owner_account` (the fix says so), found with it.
#[test]
fn a_shared_namespace_is_read_with_its_owner_account() {
    let emu = Emu::start();
    let owner = "111122223333";
    emu.seed(
        json!({"cloudmap": [{"region": REGION, "namespace": "shared", "service": "api",
        "owner": owner, "instances": [{"id": "a", "ipv4": "10.202.0.12"}]},
        {"region": REGION, "namespace": "other", "service": "api", "instances": []}]}),
    );
    let (o, s) = list(
        &emu,
        None,
        &["--json", "--cloudmap", "us-west-2/shared/api"],
    );
    assert_eq!(o.status.code(), Some(4), "{}", why(&o));
    let src = &s["sources"][0];
    assert_eq!(src["error_kind"], "not_found", "{src}");
    let failure = src.to_string();
    assert!(
        failure.contains("owner_account") && failure.contains("AWS RAM"),
        "{failure}"
    );

    let source = |owner_account: &str| {
        json!([{"type": "cloudmap", "region": REGION, "namespace": "shared", "service": "api",
                "owner_account": owner_account}])
    };
    let (o, s) = list(&emu, Some(source(owner)), &["--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", why(&o));
    assert_eq!(
        peers(&s),
        [("app@10.202.0.12".into(), "10.202.0.12".into())]
    );
    // The same as a flag.
    let flag = format!("region={REGION},namespace=shared,service=api,owner_account={owner}");
    let (o, s) = list(&emu, None, &["--json", "--cloudmap", &flag]);
    assert_eq!(o.status.code(), Some(0), "{}", why(&o));
    assert_eq!(
        peers(&s),
        [("app@10.202.0.12".into(), "10.202.0.12".into())]
    );

    // The namespace found, not its service: the fix is the service's name, not sharing.
    let (o, s) = list(
        &emu,
        None,
        &["--json", "--cloudmap", "us-west-2/other/nope"],
    );
    assert_eq!(o.status.code(), Some(4), "{}", why(&o));
    let fix = s["sources"][0]["failure"]["fix"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        fix.contains("not its service") && !fix.contains("owner_account"),
        "{fix}"
    );

    let (o, s) = list(&emu, Some(source("444455556666")), &["--json"]);
    assert_eq!(o.status.code(), Some(4), "{}", why(&o));
    let failure = s["sources"][0].to_string();
    assert!(
        failure.contains("in account 444455556666 (owner_account)"),
        "{failure}"
    );
}
