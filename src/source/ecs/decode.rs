//! What one DescribeTasks task is for discovery, against a source's filters: a peer at its
//! address, a task to place on its container instance (bridge or host mode, see [`super::host`]),
//! a reason it cannot be a peer, or not a peer (yet, or at all). Pure: no AWS call.

use std::collections::BTreeMap;
use std::net::IpAddr;

use aws_sdk_ecs::types::Task;

use crate::config::EcsSourceConfig;
use crate::peer::{parse_ip, task_address, AddressPick, Found, SkipReason, StartedAt};

use super::host::{self, OnInstance};

/// What one described task means for discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// A peer at this address.
    Peer(Found),
    /// Not a peer, for good (filtered out): cache it.
    Skip(&'static str),
    /// Left out by a filter the source checks on the task itself (for good: cache it), with
    /// what the task has instead, for the source to say what it saw when a filter matches no
    /// running task.
    Filtered(Filtered),
    /// Bridge or host mode: a peer at its container instance's address, once that is known.
    OnInstance(OnInstance),
    /// Matches the filters and runs, but cannot be a peer (reported per source): cache it.
    Unusable(SkipReason),
    /// Not a peer yet (still PROVISIONING/PENDING/ACTIVATING): describe it again next poll.
    NotYet(String),
    /// ECS reports it STOPPED.
    Stopped,
}

/// Which filter left a task out, and what the task has instead of what it asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Filtered {
    /// `family = "FAMILY:REVISION"`: the revision the task runs (`None`: its task definition ARN
    /// names none).
    Revision(Option<String>),
    /// `container`: the names of the task's containers.
    Container(Vec<String>),
    /// `tags`: the values the task carries for the configured keys, in key order (`None`: no
    /// tag with that key).
    Tags(Vec<Option<String>>),
}

/// A source's filters as each described task is checked against them: worked out once per poll
/// (the service's name out of its ARN, the family and revision), not once per task.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TaskFilter<'a> {
    /// The service's name (`api` of `arn:PARTITION:ecs:…:service/web/api`, any partition): a task of it has the
    /// group `service:api`.
    service: Option<&'a str>,
    family: Option<&'a str>,
    revision: Option<&'a str>,
    container: Option<&'a str>,
    /// Task tags a task must carry with these values; `None` when tags are not checked (no
    /// `tags` configured, or a leaving peer, see [`TaskFilter::ignoring_tags`]).
    tags: Option<&'a BTreeMap<String, String>>,
    /// The container port of Erlang distribution (`distribution_port`).
    dist_port: u16,
}

impl<'a> TaskFilter<'a> {
    pub(crate) fn new(cfg: &'a EcsSourceConfig, dist_port: u16) -> Self {
        TaskFilter {
            service: cfg
                .service
                .as_deref()
                .map(|s| s.rsplit_once('/').map_or(s, |(_, name)| name)),
            family: cfg.family_name(),
            revision: cfg.family_revision(),
            container: cfg.container.as_deref(),
            tags: (!cfg.tags.is_empty()).then_some(&cfg.tags),
            dist_port,
        }
    }

    /// Whether a task must be described with its tags (DescribeTasks `include: ["TAGS"]`) to
    /// be checked against this filter.
    pub(crate) fn needs_tags(&self) -> bool {
        self.tags.is_some()
    }

    /// The same filter without the tag check: for a peer that has left the RUNNING list, which
    /// drains until STOPPED whatever its tags say by then (a tag can change on a running task,
    /// and a node handing off work is not cut off early because of it).
    pub(crate) fn ignoring_tags(self) -> Self {
        TaskFilter { tags: None, ..self }
    }
}

/// Decodes one DescribeTasks task against the source's filters; a task without an ENI address
/// is addressed by its container instance and the binding of the distribution port (see
/// [`super::host`]).
pub(crate) fn decode_task(task: &Task, filter: &TaskFilter<'_>) -> Decision {
    if let Some(want) = filter.service {
        let group = task.group().unwrap_or("");
        if group.strip_prefix("service:") != Some(want) {
            return Decision::Skip(
                "its group is not service:<service> (not a task of the configured service)",
            );
        }
    }
    if let Some(family) = filter.family {
        let (task_fam, task_rev) = task_family(task);
        if task_fam != Some(family) {
            return Decision::Skip("its task definition is of another family");
        }
        if filter.revision.is_some_and(|r| task_rev != Some(r)) {
            return Decision::Filtered(Filtered::Revision(task_rev.map(str::to_string)));
        }
    }
    if let Some(container) = filter.container {
        if !task
            .containers()
            .iter()
            .any(|c| c.name() == Some(container))
        {
            return Decision::Filtered(Filtered::Container(
                task.containers()
                    .iter()
                    .filter_map(|c| c.name().map(str::to_string))
                    .collect(),
            ));
        }
    }
    let draining = match task.last_status() {
        Some("RUNNING") => false,
        Some("STOPPED") => return Decision::Stopped,
        // Described while leaving: still reachable, draining.
        Some("DEACTIVATING" | "STOPPING" | "DEPROVISIONING") => true,
        other => return Decision::NotYet(other.unwrap_or("no lastStatus").to_string()),
    };
    // Checked once the task runs, not while it starts: a task is described again until then,
    // and its tags are judged when it is cached for good.
    if let Some(want) = filter.tags {
        if !carries(task, want) {
            return Decision::Filtered(Filtered::Tags(values_of(task, want)));
        }
    }
    let eni = Eni::of(task);
    let address = eni
        .address
        .or_else(|| container_address(task, filter.container));
    match address {
        Some(ip) => Decision::Peer(Found {
            draining,
            ..found(task, ip, eni.private_dns_name)
        }),
        None => match on_instance(task, filter, eni.private_dns_name) {
            Decision::OnInstance(mut t) if draining => {
                t.found.draining = true;
                Decision::OnInstance(t)
            }
            // A leaving task that cannot be placed is as good as gone.
            _ if draining => Decision::Stopped,
            d => d,
        },
    }
}

/// Whether the task carries every wanted tag with exactly its value (keys and values are
/// case-sensitive, as ECS's are). A tag ECS reports without a value has the value "".
fn carries(task: &Task, want: &BTreeMap<String, String>) -> bool {
    want.iter().all(|(k, v)| {
        task.tags()
            .iter()
            .any(|t| t.key() == Some(k.as_str()) && t.value().unwrap_or("") == v)
    })
}

/// The values `task` carries for each wanted key, in key order (`None`: not tagged with it).
fn values_of(task: &Task, want: &BTreeMap<String, String>) -> Vec<Option<String>> {
    want.keys()
        .map(|k| {
            task.tags()
                .iter()
                .find(|t| t.key() == Some(k.as_str()))
                .map(|t| t.value().unwrap_or("").to_string())
        })
        .collect()
}

/// The hook to bridge and host mode: a task with no address of its own.
fn on_instance(task: &Task, filter: &TaskFilter<'_>, dns: Option<&str>) -> Decision {
    let placeholder = found(task, IpAddr::from([0, 0, 0, 0]), dns);
    match host::decode(task, filter.container, filter.dist_port, placeholder) {
        Ok(t) => Decision::OnInstance(t),
        Err(why) => Decision::Unusable(why),
    }
}

fn found(task: &Task, ip: IpAddr, private_dns_name: Option<&str>) -> Found {
    Found {
        task_arn: task.task_arn().map(str::to_string),
        availability_zone: task.availability_zone().map(str::to_string),
        started_at: task.started_at().and_then(StartedAt::from_sdk),
        // Not ECS's healthStatus: it changes after a task is described, and descriptions are
        // cached for the task's life (a steady poll is one ListTasks), so it would go stale.
        health: None,
        private_dns_name: private_dns_name.map(str::to_string),
        ..Found::at(ip)
    }
}

/// What a task's ENI attachment reports (never blindly `attachments[0]`: Service Connect and
/// other features add attachments of other types), read in one walk over its details.
struct Eni<'a> {
    /// Its address: the first IPv4 address (`privateIPv4Address`), else the first IPv6 one
    /// (`ipv6Address`), as [`task_address`] picks.
    address: Option<IpAddr>,
    /// Its `privateDnsName`, trimmed; `None` when absent or empty.
    private_dns_name: Option<&'a str>,
}

impl<'a> Eni<'a> {
    fn of(task: &'a Task) -> Eni<'a> {
        let mut address = AddressPick::default();
        // The first privateDnsName detail (AWS reports one per ENI), even when it is empty.
        let mut dns: Option<Option<&str>> = None;
        for kv in task
            .attachments()
            .iter()
            .filter(|a| a.r#type() == Some("ElasticNetworkInterface"))
            .flat_map(|a| a.details())
        {
            match kv.name() {
                Some("privateIPv4Address" | "ipv6Address") if !address.done() => {
                    if let Some(ip) = kv.value().and_then(parse_ip) {
                        address.offer(ip);
                    }
                }
                Some("privateDnsName") if dns.is_none() => {
                    dns = Some(kv.value().map(str::trim).filter(|v| !v.is_empty()));
                }
                _ => {}
            }
        }
        Eni {
            address: address.picked(),
            private_dns_name: dns.flatten(),
        }
    }
}

/// `arn:PARTITION:ecs:r:a:task-definition/FAMILY:REV` → (`FAMILY`, `REV`), any partition.
fn task_family(task: &Task) -> (Option<&str>, Option<&str>) {
    let Some(name) = task
        .task_definition_arn()
        .and_then(|def| def.rsplit('/').next())
    else {
        return (None, None);
    };
    match name.rsplit_once(':') {
        Some((f, rev)) => (Some(f), Some(rev)),
        None => (Some(name), None),
    }
}

/// The address of a task with no ENI address: a container network interface's (the configured
/// container's first); [`task_address`] picks between IPv4 and IPv6.
fn container_address(task: &Task, container: Option<&str>) -> Option<IpAddr> {
    let mut containers: Vec<_> = task.containers().iter().collect();
    if let Some(name) = container {
        containers.sort_by_key(|c| c.name() != Some(name));
    }
    containers
        .iter()
        .flat_map(|c| c.network_interfaces())
        .find_map(|ni| {
            task_address(
                [ni.private_ipv4_address(), ni.ipv6_address()]
                    .into_iter()
                    .flatten()
                    .filter_map(parse_ip),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ecs::types::{Attachment, Container, KeyValuePair, NetworkInterface};

    fn cfg() -> EcsSourceConfig {
        EcsSourceConfig {
            region: "eu-west-2".into(),
            cluster: "web".into(),
            service: None,
            family: None,
            container: None,
            tags: BTreeMap::new(),
            regions: None,
        }
    }

    fn kv(n: &str, v: &str) -> KeyValuePair {
        KeyValuePair::builder().name(n).value(v).build()
    }

    fn eni(ip: &str) -> Attachment {
        Attachment::builder()
            .r#type("ElasticNetworkInterface")
            .status("ATTACHED")
            .details(kv("subnetId", "subnet-1"))
            .details(kv("privateIPv4Address", ip))
            .build()
    }

    fn task(status: &str) -> aws_sdk_ecs::types::builders::TaskBuilder {
        Task::builder()
            .task_arn("arn:aws:ecs:eu-west-2:1:task/web/abc")
            .last_status(status)
            .group("service:api")
            .task_definition_arn("arn:aws:ecs:eu-west-2:1:task-definition/api:7")
            .availability_zone("eu-west-2a")
    }

    fn ip_of(d: Decision) -> String {
        match d {
            Decision::Peer(f) => f.ip.to_string(),
            other => panic!("not a peer: {other:?}"),
        }
    }

    #[test]
    fn uses_the_eni_attachment_not_the_first_one() {
        let sc = Attachment::builder()
            .r#type("ServiceConnect")
            .details(kv("privateIPv4Address", "192.0.2.1"))
            .build();
        let t = task("RUNNING")
            .attachments(sc)
            .attachments(eni("10.0.1.5"))
            .build();
        assert_eq!(
            ip_of(decode_task(&t, &TaskFilter::new(&cfg(), 4370))),
            "10.0.1.5"
        );
    }

    #[test]
    fn falls_back_to_the_named_containers_interface() {
        let side = Container::builder()
            .name("envoy")
            .network_interfaces(
                NetworkInterface::builder()
                    .private_ipv4_address("10.0.9.9")
                    .build(),
            )
            .build();
        let app = Container::builder()
            .name("app")
            .network_interfaces(
                NetworkInterface::builder()
                    .private_ipv4_address("10.0.1.6")
                    .build(),
            )
            .build();
        let t = task("RUNNING").containers(side).containers(app).build();
        let mut c = cfg();
        c.container = Some("app".into());
        assert_eq!(
            ip_of(decode_task(&t, &TaskFilter::new(&c, 4370))),
            "10.0.1.6"
        );
    }

    #[test]
    fn records_az_and_start_but_not_the_health_that_would_go_stale() {
        let t = task("RUNNING")
            .attachments(eni("10.0.1.5"))
            .started_at(aws_smithy_types::DateTime::from_secs(1_700_000_000))
            .health_status(aws_sdk_ecs::types::HealthStatus::Healthy)
            .build();
        let Decision::Peer(f) = decode_task(&t, &TaskFilter::new(&cfg(), 4370)) else {
            panic!()
        };
        assert_eq!(f.availability_zone.as_deref(), Some("eu-west-2a"));
        assert_eq!(
            f.started_at.map(|t| t.to_string()).as_deref(),
            Some("2023-11-14T22:13:20Z")
        );
        assert_eq!(f.health, None, "a cached description's health goes stale");
        assert_eq!(
            f.task_arn.as_deref(),
            Some("arn:aws:ecs:eu-west-2:1:task/web/abc")
        );
        assert!(!f.draining);
    }

    #[test]
    fn filters_by_service_group_family_and_container() {
        let t = task("RUNNING").attachments(eni("10.0.1.5")).build();
        let mut c = cfg();
        c.service = Some("arn:aws:ecs:eu-west-2:1:service/web/api".into());
        assert!(matches!(
            decode_task(&t, &TaskFilter::new(&c, 4370)),
            Decision::Peer(_)
        ));
        c.service = Some("worker".into());
        assert!(matches!(
            decode_task(&t, &TaskFilter::new(&c, 4370)),
            Decision::Skip(_)
        ));
        let mut c = cfg();
        c.family = Some("api".into());
        assert!(matches!(
            decode_task(&t, &TaskFilter::new(&c, 4370)),
            Decision::Peer(_)
        ));
        c.family = Some("batch".into());
        assert!(matches!(
            decode_task(&t, &TaskFilter::new(&c, 4370)),
            Decision::Skip(_)
        ));
        let mut c = cfg();
        c.container = Some("app".into());
        assert!(matches!(
            decode_task(&t, &TaskFilter::new(&c, 4370)),
            Decision::Filtered(Filtered::Container(_))
        ));
    }

    #[test]
    fn tags_filter_by_every_key_and_exact_value_once_the_task_runs() {
        let tag = |k: &str, v: Option<&str>| {
            aws_sdk_ecs::types::Tag::builder()
                .key(k)
                .set_value(v.map(str::to_string))
                .build()
        };
        let t = task("RUNNING")
            .attachments(eni("10.0.1.5"))
            .tags(tag("team", Some("payments")))
            .tags(tag("stage", Some("blue")))
            .tags(tag("canary", None))
            .build();
        let decide = |want: &[(&str, &str)], t: &Task| {
            let mut c = cfg();
            c.tags = want
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            decode_task(t, &TaskFilter::new(&c, 4370))
        };
        for want in [
            &[][..],
            &[("team", "payments")],
            &[("team", "payments"), ("stage", "blue")],
            &[("canary", "")],
        ] {
            assert!(matches!(decide(want, &t), Decision::Peer(_)), "{want:?}");
        }
        for want in [
            &[("team", "Payments")][..],
            &[("Team", "payments")],
            &[("team", "payments"), ("stage", "green")],
            &[("owner", "")],
            &[("team", "")],
        ] {
            assert!(
                matches!(decide(want, &t), Decision::Filtered(Filtered::Tags(_))),
                "{want:?}"
            );
        }
        // What it carries for the wanted keys, in key order, is kept for the source's hint.
        assert_eq!(
            decide(&[("team", "Payments"), ("owner", "x"), ("canary", "y")], &t),
            Decision::Filtered(Filtered::Tags(vec![
                Some(String::new()),
                None,
                Some("payments".into())
            ]))
        );
        // A task described before it runs is not judged by its tags yet: it is described again.
        let starting = task("PROVISIONING").build();
        assert_eq!(
            decide(&[("team", "payments")], &starting),
            Decision::NotYet("PROVISIONING".into())
        );
        // A leaving peer drains whatever its tags are.
        let leaving = task("DEACTIVATING").attachments(eni("10.0.1.5")).build();
        let mut c = cfg();
        c.tags = [("team".to_string(), "payments".to_string())].into();
        assert!(matches!(
            decode_task(&leaving, &TaskFilter::new(&c, 4370)),
            Decision::Filtered(Filtered::Tags(_))
        ));
        assert!(matches!(
            decode_task(&leaving, &TaskFilter::new(&c, 4370).ignoring_tags()),
            Decision::Peer(f) if f.draining
        ));
        assert!(TaskFilter::new(&c, 4370).needs_tags());
        assert!(!TaskFilter::new(&c, 4370).ignoring_tags().needs_tags());
        assert!(!TaskFilter::new(&cfg(), 4370).needs_tags());
    }

    #[test]
    fn service_and_task_definition_arns_of_every_partition_filter_alike() {
        for (partition, region) in [
            ("aws-eusc", "eusc-de-east-1"),
            ("aws-cn", "cn-north-1"),
            ("aws-us-gov", "us-gov-west-1"),
        ] {
            let t = task("RUNNING")
                .task_arn(format!("arn:{partition}:ecs:{region}:1:task/web/abc"))
                .task_definition_arn(format!(
                    "arn:{partition}:ecs:{region}:1:task-definition/api:7"
                ))
                .attachments(eni("10.0.1.5"))
                .build();
            let mut c = cfg();
            c.region = region.into();
            c.service = Some(format!("arn:{partition}:ecs:{region}:1:service/web/api"));
            c.family = Some("api:7".into());
            assert!(
                matches!(
                    decode_task(&t, &TaskFilter::new(&c, 4370)),
                    Decision::Peer(_)
                ),
                "{partition}"
            );
            c.family = Some("api:6".into());
            assert!(
                matches!(
                    decode_task(&t, &TaskFilter::new(&c, 4370)),
                    Decision::Filtered(Filtered::Revision(Some(r))) if r == "7"
                ),
                "{partition}"
            );
        }
    }

    #[test]
    fn statuses_decide_peer_not_yet_draining_or_stopped() {
        let pending = task("PROVISIONING").build();
        assert_eq!(
            decode_task(&pending, &TaskFilter::new(&cfg(), 4370)),
            Decision::NotYet("PROVISIONING".into())
        );
        let stopping = task("DEACTIVATING").attachments(eni("10.0.1.5")).build();
        let Decision::Peer(f) = decode_task(&stopping, &TaskFilter::new(&cfg(), 4370)) else {
            panic!()
        };
        assert!(f.draining);
        let stopped = task("STOPPED").attachments(eni("10.0.1.5")).build();
        assert_eq!(
            decode_task(&stopped, &TaskFilter::new(&cfg(), 4370)),
            Decision::Stopped
        );
        let no_ip = task("RUNNING").build();
        assert_eq!(
            decode_task(&no_ip, &TaskFilter::new(&cfg(), 4370)),
            Decision::Unusable(SkipReason::NoAddress)
        );
    }

    #[test]
    fn ipv6_only_enis_are_used() {
        let a = Attachment::builder()
            .r#type("ElasticNetworkInterface")
            .details(kv("ipv6Address", "2001:db8::5"))
            .build();
        let t = task("RUNNING").attachments(a).build();
        assert_eq!(
            ip_of(decode_task(&t, &TaskFilter::new(&cfg(), 4370))),
            "2001:db8::5"
        );
    }

    /// A task finds itself among its peers: the address DescribeTasks gives a peer and the one
    /// the task's own metadata gives it are chosen by one rule, IPv6-only or dual-stack.
    #[test]
    fn a_task_and_its_metadata_agree_on_its_address() {
        let metadata = |v4: &str, v6: &str| {
            crate::metadata::parse(&format!(
                r#"{{"Cluster": "web", "TaskARN": "arn:aws:ecs:eu-west-2:1:task/web/abc",
                    "Containers": [{{"Networks": [{{"NetworkMode": "awsvpc", "IPv4Addresses": [{v4}], "IPv6Addresses": [{v6}]}}]}}]}}"#
            ))
            .unwrap()
            .private_ip
            .map(|ip| ip.to_string())
        };
        let v6_only = Attachment::builder()
            .r#type("ElasticNetworkInterface")
            .details(kv("subnetId", "subnet-1"))
            .details(kv("ipv6Address", "2001:db8::5"))
            .build();
        let t = task("RUNNING").attachments(v6_only).build();
        assert_eq!(
            Some(ip_of(decode_task(&t, &TaskFilter::new(&cfg(), 4370)))),
            metadata("", r#""2001:db8::5""#)
        );
        // Dual stack, IPv6 listed first by AWS: IPv4 in both places.
        let dual = Attachment::builder()
            .r#type("ElasticNetworkInterface")
            .details(kv("ipv6Address", "2001:db8::5"))
            .details(kv("privateIPv4Address", "10.0.1.5"))
            .build();
        let t = task("RUNNING").attachments(dual).build();
        assert_eq!(
            ip_of(decode_task(&t, &TaskFilter::new(&cfg(), 4370))),
            "10.0.1.5"
        );
        assert_eq!(
            metadata(r#""10.0.1.5""#, r#""2001:db8::5""#).as_deref(),
            Some("10.0.1.5")
        );
        // A container interface with only an IPv6 address.
        let c = Container::builder()
            .name("app")
            .network_interfaces(
                NetworkInterface::builder()
                    .ipv6_address("2001:db8::6")
                    .build(),
            )
            .build();
        let t = task("RUNNING").containers(c).build();
        assert_eq!(
            ip_of(decode_task(&t, &TaskFilter::new(&cfg(), 4370))),
            "2001:db8::6"
        );
    }
}
