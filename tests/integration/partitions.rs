//! Regions outside the `aws` partition (China here; the emulator serves any region moto knows,
//! in its own partition): polled like any other, and every fix names an ARN of the region's
//! partition, since a policy pasted with `arn:aws:ecs:cn-north-1:…` matches nothing.

use ecs_peers::{this_task, Config, ErrorKind};
use serde_json::json;

use crate::emu::{ips, Emu};
use crate::{config, peer_ips};

const DENIED: &str =
    "User: arn:aws-cn:sts::123456789012:assumed-role/app/t is not authorized to perform";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_china_source_is_polled_and_its_access_denied_fix_names_aws_cn_arns() {
    let emu = Emu::start();
    let w = emu.seed(
        json!({"ecs": [{"region": "cn-north-1", "cluster": "web", "subnet": "10.211.0.0/24",
        "tasks": [{"family": "api", "count": 2, "group": "service:api"}]}]}),
    );
    let cfg = config(
        &emu,
        json!([{"type": "ecs", "region": "cn-north-1", "cluster": "web", "service": "api"}]),
    );
    let mut poller = ecs_peers::Poller::new(cfg).await;
    let u = poller.poll().await;
    let src = &u.snapshot.sources[0];
    assert!(src.ok(), "{src:?}");
    assert_eq!(src.id.as_str(), "ecs:cn-north-1/web/api");
    assert_eq!(src.region, "cn-north-1");
    let want = ips(&w, "cn-north-1/web", Some("api"));
    assert_eq!(want.len(), 2);
    assert_eq!(peer_ips(&u.snapshot), want);
    for p in &u.snapshot.peers {
        let arn = p.task_arn.as_deref().unwrap_or_default();
        assert!(arn.starts_with("arn:aws-cn:ecs:cn-north-1:"), "{arn}");
    }

    for (operation, action, resource) in [
        (
            "ListTasks",
            "ecs:ListTasks",
            "Resource \"*\" and Condition ArnEquals ecs:cluster \"arn:aws-cn:ecs:cn-north-1:*:cluster/web\"",
        ),
        (
            "DescribeTasks",
            "ecs:DescribeTasks",
            "Resource \"arn:aws-cn:ecs:cn-north-1:*:task/web/*\"",
        ),
    ] {
        emu.clear_faults();
        emu.fault(json!({"operation": operation, "region": "cn-north-1", "count": 10, "status": 400,
            "code": "AccessDeniedException", "message": format!("{DENIED}: {action}")}));
        // DescribeTasks is called for a task not described yet: a new one.
        if operation == "DescribeTasks" {
            emu.run_tasks(json!({"region": "cn-north-1", "cluster": "web", "subnet": "10.211.0.0/24", "family": "api",
                "count": 1, "group": "service:api"}));
        }
        let u = poller.poll().await;
        let src = &u.snapshot.sources[0];
        let e = src.failure.as_ref().unwrap_or_else(|| panic!("{src:?}"));
        assert_eq!((e.kind, e.action), (ErrorKind::AccessDenied, action), "{e}");
        let fix = e.fix.as_deref().unwrap_or_default();
        assert!(
            fix.contains(&format!("grant {action} to the task role, with {resource}")),
            "{fix}"
        );
        assert!(!fix.contains("arn:aws:"), "{fix}");
        assert_eq!(peer_ips(&u.snapshot), want, "the last-known peers are kept");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn this_task_in_china_names_an_aws_cn_arn_in_its_access_denied_fix() {
    let emu = Emu::start();
    emu.seed(
        json!({"ecs": [{"region": "cn-north-1", "cluster": "web", "subnet": "10.211.0.0/24",
        "tasks": []}]}),
    );
    let run = emu.run_tasks(
        json!({"region": "cn-north-1", "cluster": "web", "subnet": "10.211.0.0/24",
        "family": "api", "count": 1}),
    );
    let task = &run[0];
    let arn = task["arn"].as_str().unwrap_or_default();
    assert!(
        arn.starts_with("arn:aws-cn:ecs:cn-north-1:123456789012:task/web/"),
        "{arn}"
    );
    emu.fault(
        json!({"operation": "DescribeTasks", "region": "cn-north-1", "count": 10, "status": 400,
        "code": "AccessDeniedException", "message": format!("{DENIED}: ecs:DescribeTasks")}),
    );
    let cfg = Config::from_value(json!({
        "node_basename": "app",
        "endpoint_url": emu.endpoint,
        "metadata_url": task["metadata_uri"],
        "max_attempts": 1,
        "sources": [{"type": "ecs", "cluster": "auto"}],
    }))
    .unwrap();
    let e = this_task(&cfg).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::AccessDenied, "{e}");
    assert!(
        e.fix
            .as_deref()
            .unwrap_or_default()
            .contains("Resource \"arn:aws-cn:ecs:cn-north-1:123456789012:task/web/*\""),
        "{e}"
    );
}
