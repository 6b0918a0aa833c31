//! Errors by what happened and identifiers as users copy them, against the emulator: a region
//! that refuses the credentials other regions accept, an ECS Anywhere instance in a bridge-mode
//! cluster, and a service ARN pasted as the whole `--ecs` spec.

use serde_json::{json, Value};

use crate::cli::{cli, text};
use crate::emu::{ips, Emu};

/// The emulator's account, as its ARNs name it (moto's default account).
const ACCOUNT: &str = "123456789012";

fn json_out(o: &std::process::Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}\n{}",
            text(o),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

#[test]
fn list_names_a_refused_region_and_both_remedies_while_the_others_work() {
    let emu = Emu::start();
    let task = |region: &str, subnet: &str| {
        json!({"region": region, "cluster": "web", "subnet": subnet,
               "tasks": [{"family": "api", "count": 1}]})
    };
    emu.seed(
        json!({"ecs": [task("eu-west-2", "10.201.0.0/24"), task("us-east-1", "10.202.0.0/24"),
                            task("ap-east-1", "10.203.0.0/24")]}),
    );
    // The account has not enabled ap-east-1 (an opt-in region): every call there is refused.
    let (status, body) = emu
        .http(
            "POST",
            "/_emu/regions",
            r#"{"region": "ap-east-1", "opt_status": "DISABLED"}"#,
        )
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let o = cli(
        &emu,
        &[
            "list",
            "--json",
            "--ecs",
            "eu-west-2/web",
            "--ecs",
            "ap-east-1/web",
            "--ecs",
            "us-east-1/web",
        ],
    );
    assert_eq!(o.status.code(), Some(3), "some sources failed");
    let s = json_out(&o);
    let refused = &s["sources"][1];
    assert_eq!(refused["id"], "ecs:ap-east-1/web");
    assert_eq!(refused["failure"]["kind"], "credentials");
    assert!(
        refused["failure"]["message"]
            .as_str()
            .unwrap()
            .starts_with("UnrecognizedClientException: The security token"),
        "{refused}"
    );
    let fix = refused["failure"]["fix"].as_str().unwrap();
    for said in [
        "ap-east-1 refuses the credentials that work in eu-west-2, us-east-1",
        "aws account enable-region --region-name ap-east-1",
        "AWS_STS_REGIONAL_ENDPOINTS=regional",
        "--global-endpoint-token-version v2Token",
    ] {
        assert!(fix.contains(said), "the fix lacks {said:?}: {fix}");
    }
    assert!(
        !fix.contains("invalid or expired"),
        "blames the credentials: {fix}"
    );
    assert!(s["sources"][0]["ok"].as_bool().unwrap() && s["sources"][2]["ok"].as_bool().unwrap());

    // The table says the same.
    let o = cli(
        &emu,
        &["list", "--ecs", "eu-west-2/web", "--ecs", "ap-east-1/web"],
    );
    let t = text(&o);
    assert!(
        t.contains("ap-east-1 refuses the credentials that work in eu-west-2"),
        "{t}"
    );

    // Refused everywhere: nothing shows the credentials work, and the fix says what both
    // causes look like.
    let o = cli(&emu, &["list", "--json", "--ecs", "ap-east-1/web"]);
    assert_eq!(o.status.code(), Some(4), "every source failed");
    let fix = json_out(&o)["sources"][0]["failure"]["fix"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        fix.contains("If they fail in every region, they are invalid")
            && fix.contains("enable-region"),
        "{fix}"
    );
}

#[test]
fn a_task_on_an_ecs_anywhere_instance_is_skipped_as_external_and_the_source_stays_ok() {
    let emu = Emu::start();
    let bridge = json!([{"containerPort": 4370, "hostPort": 0}]);
    let w = emu.seed(
        json!({"ecs": [{"region": "eu-west-2", "cluster": "hybrid", "subnet": "10.201.0.0/24",
        "instances": [{"external": true}],
        "tasks": [
            {"family": "edge", "count": 2, "launch_type": "EXTERNAL", "network_mode": "bridge",
             "port_mappings": bridge},
            {"family": "api", "count": 2},
        ]}]}),
    );
    let o = cli(&emu, &["list", "--json", "--ecs", "eu-west-2/hybrid"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let s = json_out(&o);
    let src = &s["sources"][0];
    assert_eq!(src["ok"], true, "{src}");
    let mut peers: Vec<&str> = s["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["ip"].as_str().unwrap())
        .collect();
    peers.sort();
    assert_eq!(peers, ips(&w, "eu-west-2/hybrid", Some("api")));
    assert_eq!(src["skipped_tasks"], 2, "{src}");
    let skipped = &src["skipped"][0];
    assert_eq!(skipped["reason"], "external_instance", "{src}");
    assert!(
        skipped["message"]
            .as_str()
            .unwrap()
            .contains("ECS Anywhere")
            && !skipped["message"].as_str().unwrap().contains("not found"),
        "{skipped}"
    );
    // An external instance is not an EC2 instance: EC2 is never asked about it.
    let by_action = &src["api_calls_by_action"];
    assert_eq!(by_action.get("ec2:DescribeInstances"), None, "{by_action}");
}

#[test]
fn a_service_arn_as_the_whole_ecs_spec_lists_that_services_tasks() {
    let emu = Emu::start();
    let w = emu.seed(
        json!({"ecs": [{"region": "eu-west-2", "cluster": "web", "subnet": "10.201.0.0/24",
        "tasks": [{"family": "api", "count": 2, "group": "service:api"},
                  {"family": "worker", "count": 1, "group": "service:worker"}]}]}),
    );
    let arn = format!("arn:aws:ecs:eu-west-2:{ACCOUNT}:service/web/api");
    let o = cli(&emu, &["list", "--json", "--ecs", &arn]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let s = json_out(&o);
    assert_eq!(s["sources"][0]["id"], "ecs:eu-west-2/web/api");
    let mut peers: Vec<&str> = s["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["ip"].as_str().unwrap())
        .collect();
    peers.sort();
    assert_eq!(peers, ips(&w, "eu-west-2/web", Some("api")));

    // The old format names no cluster: refused, naming the form that works.
    let old = format!("arn:aws:ecs:eu-west-2:{ACCOUNT}:service/api");
    let o = cli(&emu, &["list", "--ecs", &old]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("--ecs {old}: cluster:"))
            && err.contains("service ARN in the old format")
            && err.contains(&format!(
                "arn:aws:ecs:eu-west-2:{ACCOUNT}:service/CLUSTER/api"
            )),
        "{err}"
    );
}

/// A source that answers and skips every task it found has one state, wherever it is read:
/// `skipping` in the JSON (and not `ok`), `SKIPPING` in the table, exit 4 from both.
#[test]
fn a_source_that_skips_every_task_is_skipping_in_the_json_as_in_the_table() {
    let emu = Emu::start();
    emu.seed(
        json!({"ecs": [{"region": "eu-west-2", "cluster": "hybrid", "subnet": "10.201.0.0/24",
        "instances": [{"external": true}],
        "tasks": [{"family": "edge", "count": 2, "launch_type": "EXTERNAL",
                   "network_mode": "bridge",
                   "port_mappings": [{"containerPort": 4370, "hostPort": 0}]}]}]}),
    );
    let o = cli(&emu, &["list", "--json", "--ecs", "eu-west-2/hybrid"]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let s = json_out(&o);
    assert_eq!(s["schema"], "ecs-peers/snapshot/v2");
    let src = &s["sources"][0];
    assert_eq!(src["state"], "skipping", "{src}");
    assert_eq!(
        src["ok"], false,
        "0 peers from 2 running tasks is not ok: {src}"
    );
    assert_eq!(src["pending"], false, "{src}");
    assert_eq!(src["skipped_tasks"], 2, "{src}");
    let o = cli(&emu, &["list", "--ecs", "eu-west-2/hybrid"]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    let table = text(&o);
    let row = table
        .lines()
        .find(|l| l.starts_with("ecs:eu-west-2/hybrid"))
        .unwrap_or_else(|| panic!("{table}"));
    assert_eq!(row.split_whitespace().nth(1), Some("SKIPPING"), "{table}");
}
