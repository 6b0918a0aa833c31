//! ECS on EC2 without awsvpc (bridge or host network mode): a task has no address of its own.
//! Its peer is its EC2 instance's private address and the host port its container maps the
//! distribution port to:
//!
//! task `containerInstanceArn` → ecs:DescribeContainerInstances (≤100 a call) → `ec2InstanceId`
//! → ec2:DescribeInstances → `PrivateIpAddress` (IPv6 when the instance has only that), and
//! `containers[].networkBindings[]` → the binding whose `containerPort` is `distribution_port`
//! → its `hostPort` (dynamic in bridge mode; equal to the container port in host mode).
//!
//! An ECS Anywhere container instance (launch type `EXTERNAL`) is a server registered through
//! SSM, not an EC2 instance: its `ec2InstanceId` is a managed-instance id (`mi-…`), which
//! DescribeInstances is never asked about; its tasks are skipped as
//! [`SkipReason::ExternalInstance`].
//! <https://docs.aws.amazon.com/AmazonECS/latest/developerguide/ecs-anywhere.html>
//!
//! A container instance runs on one EC2 instance for its whole life, and an instance keeps its
//! primary private address, so both look-ups are cached (by container-instance ARN and by
//! instance id): a steady poll makes neither call, a new instance one of each.
//! <https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_DescribeContainerInstances.html>
//! <https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DescribeInstances.html>

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use aws_sdk_ecs::types::Task;

use crate::aws::CountCalls;
use crate::error::{classify, SourceError};
use crate::peer::{task_address, Found, SkipReason};

/// DescribeContainerInstances accepts at most this many ARNs a call; DescribeInstances is asked
/// for as many instance ids a call (by its `instance-id` filter).
const BATCH: usize = 100;

/// A RUNNING (or draining) task addressed by its container instance, before that instance's
/// address is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OnInstance {
    /// What is known of the task; `ip` is a placeholder until resolved.
    pub found: Found,
    /// Its `containerInstanceArn`.
    pub container_instance: String,
}

/// What a task without an ENI address is, by its container instance and network bindings:
/// a task to resolve, or a reason it cannot be a peer.
pub(crate) fn decode(
    task: &Task,
    container: Option<&str>,
    dist_port: u16,
    found: Found,
) -> Result<OnInstance, SkipReason> {
    if task.launch_type() == Some(&aws_sdk_ecs::types::LaunchType::External) {
        return Err(SkipReason::ExternalInstance);
    }
    let Some(ci) = task.container_instance_arn().filter(|a| !a.is_empty()) else {
        return Err(SkipReason::NoAddress);
    };
    // The configured container's bindings when there is one, else any container's.
    let port = task
        .containers()
        .iter()
        .filter(|c| container.is_none_or(|name| c.name() == Some(name)))
        .flat_map(|c| c.network_bindings())
        .filter(|b| b.protocol().is_none_or(|p| p.as_str() == "tcp"))
        .find(|b| b.container_port() == Some(i32::from(dist_port)))
        .map(|b| {
            b.host_port()
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p != 0)
                .unwrap_or(dist_port)
        })
        .ok_or(SkipReason::NoDistributionBinding)?;
    Ok(OnInstance {
        found: Found {
            port: Some(port),
            ..found
        },
        container_instance: ci.to_string(),
    })
}

/// Whether a container instance's `ec2InstanceId` is an SSM managed-instance id (`mi-` and 17
/// hexadecimal digits): an ECS Anywhere instance, which EC2 does not know.
fn is_managed_instance(id: &str) -> bool {
    id.starts_with("mi-")
}

/// An EC2 instance's address, as DescribeInstances reports it.
#[derive(Debug, Clone)]
struct Instance {
    ip: Option<IpAddr>,
}

/// The container-instance → EC2 instance → address look-ups of one ECS source, cached.
pub(crate) struct InstanceAddresses {
    ecs: aws_sdk_ecs::Client,
    ec2: aws_sdk_ec2::Client,
    calls: CountCalls,
    /// Container-instance ARN → its EC2 instance id (`None`: ECS does not know it).
    container_instances: HashMap<String, Option<String>>,
    /// EC2 instance id → its address (`None`: EC2 does not know it).
    instances: HashMap<String, Option<Instance>>,
}

impl InstanceAddresses {
    pub(crate) fn new(
        ecs: aws_sdk_ecs::Client,
        ec2: aws_sdk_ec2::Client,
        calls: CountCalls,
    ) -> Self {
        InstanceAddresses {
            ecs,
            ec2,
            calls,
            container_instances: HashMap::new(),
            instances: HashMap::new(),
        }
    }

    /// Looks up the container instances not seen before (and their EC2 instances), so that
    /// [`InstanceAddresses::place`] can answer for all of `arns`. `cluster`, `region` and
    /// `account` name the IAM resource in an AccessDenied fix. Fails as a whole (the source
    /// keeps its last-known peers).
    pub(crate) async fn learn(
        &mut self,
        arns: impl IntoIterator<Item = &str>,
        cluster: &str,
        region: &str,
        account: &str,
    ) -> Result<(), SourceError> {
        let wanted: Vec<String> = arns.into_iter().map(str::to_string).collect();
        let mut new: Vec<String> = wanted
            .iter()
            .filter(|a| !self.container_instances.contains_key(a.as_str()))
            .cloned()
            .collect();
        new.sort();
        new.dedup();
        let cluster_name = crate::config::cluster_name(cluster);
        let resource = format!(
            "Resource \"{}\"",
            crate::partition::arn(
                "ecs",
                region,
                account,
                &format!("container-instance/{cluster_name}/*")
            )
        );
        let not_found = format!(
            "check that cluster {cluster_name:?} exists in {region} (names are case-sensitive; region must be the cluster's)"
        );
        for batch in new.chunks(BATCH) {
            let out = self
                .ecs
                .describe_container_instances()
                .cluster(cluster)
                .set_container_instances(Some(batch.to_vec()))
                .customize()
                .interceptor(self.calls.clone())
                .send()
                .await
                .map_err(|e| {
                    classify(e, "ecs:DescribeContainerInstances", &resource, &not_found)
                })?;
            for ci in out.container_instances() {
                if let Some(arn) = ci.container_instance_arn() {
                    let id = ci.ec2_instance_id().filter(|i| !i.is_empty());
                    self.container_instances
                        .insert(arn.to_string(), id.map(str::to_string));
                }
            }
            for f in out.failures() {
                tracing::debug!(
                    arn = f.arn().unwrap_or("?"),
                    reason = f.reason().unwrap_or("?"),
                    "DescribeContainerInstances does not know a container instance"
                );
            }
            // Asked for and not answered: unknown.
            for arn in batch {
                self.container_instances.entry(arn.clone()).or_insert(None);
            }
        }

        // Every wanted instance not known yet (also those whose container instance was learnt
        // by a poll that then failed on DescribeInstances).
        let mut ids: Vec<String> = wanted
            .iter()
            .filter_map(|a| self.container_instances.get(a).cloned().flatten())
            .filter(|i| !is_managed_instance(i) && !self.instances.contains_key(i))
            .collect();
        ids.sort();
        ids.dedup();
        for batch in ids.chunks(BATCH) {
            self.describe_instances(batch).await?;
            for id in batch {
                self.instances.entry(id.clone()).or_insert(None);
            }
        }
        Ok(())
    }

    /// ec2:DescribeInstances for these ids, by the `instance-id` filter (an unknown id is then
    /// missing from the answer rather than failing the whole call), all pages.
    async fn describe_instances(&mut self, ids: &[String]) -> Result<(), SourceError> {
        // ec2:DescribeInstances supports no resource-level permissions: "*" is the only scope.
        let resource = "Resource \"*\" (ec2:DescribeInstances supports no resource-level scoping)";
        let mut token: Option<String> = None;
        let mut seen = HashSet::new();
        loop {
            let out = self
                .ec2
                .describe_instances()
                .filters(
                    aws_sdk_ec2::types::Filter::builder()
                        .name("instance-id")
                        .set_values(Some(ids.to_vec()))
                        .build(),
                )
                .set_next_token(token.clone())
                .customize()
                .interceptor(self.calls.clone())
                .send()
                .await
                .map_err(|e| {
                    classify(
                        e,
                        "ec2:DescribeInstances",
                        resource,
                        "check that the container instances' EC2 instances are in the source's region",
                    )
                })?;
            for i in out.reservations().iter().flat_map(|r| r.instances()) {
                let Some(id) = i.instance_id() else { continue };
                let v4 = i.private_ip_address().and_then(crate::peer::parse_ip);
                let v6 = i
                    .network_interfaces()
                    .iter()
                    .flat_map(|n| n.ipv6_addresses())
                    .filter_map(|a| crate::peer::parse_ip(a.ipv6_address()?));
                let ip = task_address(v4.into_iter().chain(v6));
                self.instances.insert(id.to_string(), Some(Instance { ip }));
            }
            match out.next_token() {
                Some(t) if !t.is_empty() && seen.insert(t.to_string()) => {
                    token = Some(t.to_string())
                }
                _ => return Ok(()),
            }
        }
    }

    /// Where a task of this container instance is: its instance's address and id, or why not.
    /// Answers from the cache only (call [`InstanceAddresses::learn`] first).
    pub(crate) fn place(&self, task: OnInstance) -> Result<Found, SkipReason> {
        let id = self
            .container_instances
            .get(&task.container_instance)
            .cloned()
            .flatten()
            .ok_or(SkipReason::InstanceNotFound)?;
        if is_managed_instance(&id) {
            return Err(SkipReason::ExternalInstance);
        }
        let instance = self
            .instances
            .get(&id)
            .cloned()
            .flatten()
            .ok_or(SkipReason::InstanceNotFound)?;
        let ip = instance.ip.ok_or(SkipReason::InstanceWithoutAddress)?;
        Ok(Found {
            ip,
            ec2_instance_id: Some(id),
            container_instance: Some(task.container_instance),
            ..task.found
        })
    }

    /// Forgets the container instances no task in `in_use` runs on (and their instances), so a
    /// long-lived node's cache does not grow with instance churn.
    pub(crate) fn retain(&mut self, in_use: &HashSet<&str>) {
        self.container_instances
            .retain(|arn, _| in_use.contains(arn.as_str()));
        let ids: HashSet<&str> = self
            .container_instances
            .values()
            .flatten()
            .map(String::as_str)
            .collect();
        self.instances.retain(|id, _| ids.contains(id.as_str()));
    }
}

#[cfg(test)]
mod tests {
    use aws_sdk_ecs::types::{Container, NetworkBinding, TransportProtocol};

    use super::*;

    fn bound(name: &str, container_port: i32, host_port: i32) -> Container {
        Container::builder()
            .name(name)
            .network_bindings(
                NetworkBinding::builder()
                    .container_port(container_port)
                    .host_port(host_port)
                    .protocol(TransportProtocol::Tcp)
                    .build(),
            )
            .build()
    }

    fn task(containers: Vec<Container>) -> Task {
        Task::builder()
            .container_instance_arn("arn:aws:ecs:eu-west-2:1:container-instance/web/ci1")
            .set_containers(Some(containers))
            .build()
    }

    fn any() -> Found {
        Found::at(IpAddr::from([0, 0, 0, 0]))
    }

    #[test]
    fn the_binding_of_the_distribution_port_gives_the_port() {
        let t = task(vec![bound("app", 80, 32768), bound("app", 4370, 32769)]);
        let on = decode(&t, None, 4370, any()).unwrap();
        assert_eq!(on.found.port, Some(32769));
        assert_eq!(
            on.container_instance,
            "arn:aws:ecs:eu-west-2:1:container-instance/web/ci1"
        );
        // Only the configured container's bindings count.
        let t = task(vec![
            bound("sidecar", 4370, 32770),
            bound("app", 4370, 32771),
        ]);
        assert_eq!(
            decode(&t, Some("app"), 4370, any()).unwrap().found.port,
            Some(32771)
        );
        assert_eq!(
            decode(&t, Some("other"), 4370, any()),
            Err(SkipReason::NoDistributionBinding)
        );
        // No binding for the port: skipped with the reason; no container instance: no address.
        let t = task(vec![bound("app", 80, 32768)]);
        assert_eq!(
            decode(&t, None, 4370, any()),
            Err(SkipReason::NoDistributionBinding)
        );
        assert_eq!(
            decode(&Task::builder().build(), None, 4370, any()),
            Err(SkipReason::NoAddress)
        );
    }

    #[test]
    fn a_task_on_an_ecs_anywhere_instance_is_skipped_as_external() {
        let t = Task::builder()
            .launch_type(aws_sdk_ecs::types::LaunchType::External)
            .container_instance_arn("arn:aws:ecs:eu-west-2:1:container-instance/web/ci1")
            .containers(bound("app", 4370, 32768))
            .build();
        assert_eq!(
            decode(&t, None, 4370, any()),
            Err(SkipReason::ExternalInstance)
        );
        assert!(is_managed_instance("mi-0123456789abcdef0"));
        assert!(!is_managed_instance("i-0123456789abcdef0"));
    }
}
