//! A peer: one task (or Cloud Map instance) that runs a node, and where it was found.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize, Serializer};

/// A source's stable, human-readable id: `ecs:eu-west-2/web/api` or
/// `cloudmap:us-west-2/internal/api`. Shared, not copied: every peer of a source holds it, and
/// cloning it is a reference count.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceId(Arc<str>);

impl SourceId {
    pub(crate) fn new(id: String) -> Self {
        SourceId(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// As its text (a JSON string).
impl Serialize for SourceId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl fmt::Display for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One discovered peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Peer {
    /// The Erlang node name, e.g. `app@10.0.1.5`.
    pub node: String,
    /// The task's private IP address.
    pub ip: IpAddr,
    /// Its Erlang distribution port, when the source reports one (e.g. a host port mapped in
    /// ECS bridge mode); `None`: the port every node uses (EPMD-based or configured), so the IP
    /// alone addresses it. With the IP, the peer's identity: see [`Peer::address`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The AWS region it was found in.
    pub region: String,
    /// The source that reported it.
    pub source: SourceId,
    /// The ECS task ARN (ECS sources).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task_arn: Option<String>,
    /// The Cloud Map instance id (Cloud Map sources).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_id: Option<String>,
    /// Availability zone, where reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
    /// When the task started (RFC 3339), where reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// Health as reported by ECS (`HEALTHY`, `UNHEALTHY`, `UNKNOWN`) or Cloud Map.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// The private DNS name AWS reports for it (an ECS task's ENI `privateDnsName`, e.g.
    /// `ip-10-1-0-5.ec2.internal` in us-east-1, `ip-10-2-0-5.eu-west-2.compute.internal`
    /// elsewhere); what `{private_dns_name}` in `node_name` is replaced by. Cloud Map reports none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub private_dns_name: Option<String>,
    /// The EC2 instance whose address the task uses (ECS on EC2, bridge or host network mode:
    /// the task has no address of its own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ec2_instance_id: Option<String>,
    /// The task has left the RUNNING list but is not STOPPED yet.
    pub draining: bool,
}

impl Peer {
    /// The peer's identity: its address and distribution port. Merging, de-duplication,
    /// self-exclusion, diffs and the EPMD name cache key on it, so two tasks sharing one IP
    /// (ECS bridge or host mode) with different ports are two peers.
    pub fn address(&self) -> Address {
        Address {
            ip: self.ip,
            port: self.port,
        }
    }
}

/// Where a peer's node listens: an IP and, when the source reports one, a distribution port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Address {
    /// The private IP address.
    pub ip: IpAddr,
    /// The distribution port; `None`: the port every node uses.
    pub port: Option<u16>,
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.ip, self.port) {
            (ip, None) => write!(f, "{ip}"),
            (IpAddr::V4(ip), Some(port)) => write!(f, "{ip}:{port}"),
            (IpAddr::V6(ip), Some(port)) => write!(f, "[{ip}]:{port}"),
        }
    }
}

/// What a source reports about one peer, before the namespace names it. Ordered by address first
/// (then every other field, so equal answers sort equal: see [`crate::fingerprint`]).
///
/// Also a shared result's wire form of a peer (see [`crate::sharing`]): its fields, in this
/// order, are the wire format.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub(crate) struct Found {
    pub ip: IpAddr,
    /// The distribution port, when the source knows it (`None`: the default one).
    pub port: Option<u16>,
    /// The node name, when it was learnt rather than built (EPMD naming).
    pub node: Option<String>,
    pub task_arn: Option<String>,
    pub instance_id: Option<String>,
    pub availability_zone: Option<String>,
    pub started_at: Option<String>,
    pub health: Option<String>,
    pub private_dns_name: Option<String>,
    /// The EC2 instance whose address this is (bridge or host mode): the task shares it with
    /// the other tasks on that instance, so its node name carries its task id.
    pub ec2_instance_id: Option<String>,
    /// Its ECS container instance ARN (bridge or host mode), to keep the instance cache small.
    pub container_instance: Option<String>,
    pub draining: bool,
}

impl Found {
    pub(crate) fn at(ip: IpAddr) -> Self {
        Found {
            ip,
            port: None,
            node: None,
            task_arn: None,
            instance_id: None,
            availability_zone: None,
            started_at: None,
            health: None,
            private_dns_name: None,
            ec2_instance_id: None,
            container_instance: None,
            draining: false,
        }
    }

    /// The task id: the last part of the task ARN (32 hex digits for today's tasks).
    pub(crate) fn task_id(&self) -> Option<&str> {
        self.task_arn.as_deref().and_then(|a| a.rsplit('/').next())
    }

    /// Its identity, as [`Peer::address`].
    pub(crate) fn address(&self) -> Address {
        Address {
            ip: self.ip,
            port: self.port,
        }
    }

    pub(crate) fn into_peer(self, node: String, region: &str, source: &SourceId) -> Peer {
        Peer {
            node,
            ip: self.ip,
            port: self.port,
            region: region.to_string(),
            source: source.clone(),
            task_arn: self.task_arn,
            instance_id: self.instance_id,
            availability_zone: self.availability_zone,
            started_at: self.started_at,
            health: self.health,
            private_dns_name: self.private_dns_name,
            ec2_instance_id: self.ec2_instance_id,
            draining: self.draining,
        }
    }
}

/// Why a RUNNING task that matched a source's filters could not be turned into a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// The task has no ENI attachment (not awsvpc) and no container instance (not on EC2).
    NoAddress,
    /// Bridge or host mode: no container of the task has a network binding for the
    /// distribution port (`containers[].networkBindings[].containerPort`).
    NoDistributionBinding,
    /// ECS does not know the task's container instance, or EC2 does not know its instance
    /// (DescribeContainerInstances `failures[]`, or no such instance in DescribeInstances).
    InstanceNotFound,
    /// The task's EC2 instance has no private address (e.g. it is stopped).
    InstanceWithoutAddress,
}

impl SkipReason {
    /// What is wrong, in words.
    pub fn message(self, dist_port: u16) -> String {
        match self {
            SkipReason::NoAddress => "the task has no ENI attachment (awsvpc) and no container instance (EC2), so it has no address".into(),
            SkipReason::NoDistributionBinding => format!("no container of the task maps the distribution port {dist_port} (containers[].networkBindings has no containerPort {dist_port})"),
            SkipReason::InstanceNotFound => "its container instance or EC2 instance was not found (deregistered or terminated)".into(),
            SkipReason::InstanceWithoutAddress => "its EC2 instance has no private IP address (stopped?)".into(),
        }
    }

    /// What to do about it.
    pub fn fix(self, dist_port: u16) -> String {
        match self {
            SkipReason::NoAddress => "run the task with networkMode awsvpc, or on EC2 container instances (bridge or host mode)".into(),
            SkipReason::NoDistributionBinding => format!("add to the app container of the task definition \"portMappings\": [{{\"containerPort\": {dist_port}, \"hostPort\": 0, \"protocol\": \"tcp\"}}] (bridge mode: hostPort 0 is a dynamic port; host mode: hostPort {dist_port}), or set distribution_port to the port the nodes listen on"),
            SkipReason::InstanceNotFound => "check the cluster's container instances (aws ecs list-container-instances); a task on a deregistered instance is replaced by its service".into(),
            SkipReason::InstanceWithoutAddress => "check the instance's state (aws ec2 describe-instances --instance-ids <id>)".into(),
        }
    }
}

/// RUNNING tasks of one source skipped for one reason (see [`SkipReason`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// Why.
    pub reason: SkipReason,
    /// How many RUNNING tasks (at least 1).
    pub tasks: usize,
    /// One of them, for the look-up (its task ARN).
    pub example_task: String,
    /// [`SkipReason::message`] for this source's distribution port.
    pub message: String,
    /// [`SkipReason::fix`] for this source's distribution port.
    pub fix: String,
}
