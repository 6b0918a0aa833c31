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

/// An AWS region's name (`eu-west-2`), shared: every peer of a source holds its region, and
/// cloning it is a reference count, not a copy. Reads as a `&str` (`Deref`), compares with
/// one, and serializes as its text.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Region(Arc<str>);

impl Region {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Region {
    fn from(name: &str) -> Self {
        Region(name.into())
    }
}

impl std::ops::Deref for Region {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for Region {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for Region {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// As its text (a JSON string).
impl Serialize for Region {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// When a task started (ECS `startedAt`): seconds and nanoseconds since the Unix epoch, within
/// the years 1 to 9999 (what RFC 3339 can write). Displayed and serialized as RFC 3339 exactly
/// as the AWS SDK writes a `DateTime` (`2023-11-14T22:13:20Z`, a fraction of a second only when
/// there is one); kept as numbers, so a poll neither formats nor allocates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "(i64, u32)")]
pub struct StartedAt {
    secs: i64,
    nanos: u32,
}

impl StartedAt {
    /// 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999999Z, in seconds since the epoch.
    const FIRST: i64 = -62_135_596_800;
    const LAST: i64 = 253_402_300_799;

    /// The time the SDK reports, when RFC 3339 can write it (years 1 to 9999; the SDK refuses
    /// to format others) and its nanoseconds are below a second; otherwise `None`.
    pub fn from_sdk(t: &aws_smithy_types::DateTime) -> Option<StartedAt> {
        StartedAt::new(t.secs(), t.subsec_nanos())
    }

    fn new(secs: i64, nanos: u32) -> Option<StartedAt> {
        ((Self::FIRST..=Self::LAST).contains(&secs) && nanos < 1_000_000_000)
            .then_some(StartedAt { secs, nanos })
    }

    /// Whole seconds since the Unix epoch.
    pub fn secs(&self) -> i64 {
        self.secs
    }

    /// The fraction of a second, in nanoseconds.
    pub fn subsec_nanos(&self) -> u32 {
        self.nanos
    }
}

impl TryFrom<(i64, u32)> for StartedAt {
    type Error = &'static str;
    fn try_from((secs, nanos): (i64, u32)) -> Result<Self, Self::Error> {
        StartedAt::new(secs, nanos).ok_or("a startedAt outside the years 1 to 9999")
    }
}

/// As RFC 3339 text in human-readable formats (JSON: the CLI's output, the NIF's maps), as a
/// pair of numbers (seconds, nanoseconds) in binary ones.
impl Serialize for StartedAt {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            (self.secs, self.nanos).serialize(s)
        }
    }
}

/// RFC 3339, as the AWS SDK's `Format::DateTime` writes it.
impl fmt::Display for StartedAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = aws_smithy_types::DateTime::from_secs_and_nanos(self.secs, self.nanos);
        // Within the years 1 to 9999 the SDK always formats (`StartedAt::new`).
        match t.fmt(aws_smithy_types::date_time::Format::DateTime) {
            Ok(text) => f.write_str(&text),
            Err(_) => write!(f, "{}", self.secs),
        }
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
    pub region: Region,
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
    /// When the task started (RFC 3339 when displayed or serialized), where reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<StartedAt>,
    /// Health as Cloud Map reports it on each poll (`HEALTHY`, `UNHEALTHY`, `UNKNOWN`). ECS
    /// tasks report none: a task's health changes after it is described, and descriptions are
    /// cached for the task's life, so it would go stale.
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

/// An address as AWS writes it in a task's ENI details, a container's network interface, an EC2
/// instance, a Cloud Map attribute or the task metadata: what `IpAddr`'s `FromStr` accepts,
/// surrounding whitespace ignored. The one rule every source reads addresses by.
pub(crate) fn parse_ip(text: &str) -> Option<IpAddr> {
    text.trim().parse().ok()
}

/// The one address a task (or a Cloud Map instance) is known by, among those AWS reports for it:
/// the first IPv4 address when it has one, else the first IPv6 address (an IPv6-only task).
///
/// IPv4 wins on a dual-stack task because Erlang distribution listens on IPv4 by default
/// (`inet_tcp`); an IPv6-only task's nodes run `-proto_dist inet6_tcp`. Every place that reads a
/// task's address (DescribeTasks' ENI details and container interfaces, the task metadata
/// endpoint, Cloud Map's `AWS_INSTANCE_IPV4`/`AWS_INSTANCE_IPV6`) picks with this rule, so a task
/// reading its own metadata finds the same address its peers see.
pub(crate) fn task_address(candidates: impl IntoIterator<Item = IpAddr>) -> Option<IpAddr> {
    let mut pick = AddressPick::default();
    for ip in candidates {
        pick.offer(ip);
        if pick.done() {
            break;
        }
    }
    pick.picked()
}

/// [`task_address`]'s rule, offered one candidate at a time (for a walk that reads other
/// details too).
#[derive(Default)]
pub(crate) struct AddressPick {
    v4: Option<IpAddr>,
    v6: Option<IpAddr>,
}

impl AddressPick {
    pub(crate) fn offer(&mut self, ip: IpAddr) {
        if self.v4.is_some() {
            return;
        }
        if ip.is_ipv4() {
            self.v4 = Some(ip);
        } else {
            self.v6 = self.v6.or(Some(ip));
        }
    }

    /// An IPv4 address was offered: nothing offered later can change the pick.
    pub(crate) fn done(&self) -> bool {
        self.v4.is_some()
    }

    pub(crate) fn picked(self) -> Option<IpAddr> {
        self.v4.or(self.v6)
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
/// (then every other field, so equal answers sort equal: see [`crate::fingerprint`]). Not a
/// wire format: fleet-shared polling converts it to its own versioned type.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Found {
    pub ip: IpAddr,
    /// The distribution port, when the source knows it (`None`: the default one).
    pub port: Option<u16>,
    /// The node name, when it was learnt rather than built (EPMD naming).
    pub node: Option<String>,
    pub task_arn: Option<String>,
    pub instance_id: Option<String>,
    pub availability_zone: Option<String>,
    pub started_at: Option<StartedAt>,
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

    /// Whether its address is a host's, which other peers may share, so its node name carries
    /// its own id ([`Found::own_id`]): an ECS task in bridge or host mode (its EC2 instance's
    /// address), or a Cloud Map instance that registered a port of its own (`AWS_INSTANCE_PORT`
    /// with `port = "registered"`: the host port of a bridge- or host-mode task, which ECS
    /// service discovery registers with the host's address).
    pub(crate) fn shares_address(&self) -> bool {
        self.ec2_instance_id.is_some()
            || (self.task_arn.is_none() && self.instance_id.is_some() && self.port.is_some())
    }

    /// The id its node name carries when it shares its address: its task id, else its Cloud Map
    /// instance id (which ECS service discovery sets to the task id, so a task's node is named
    /// alike by an ECS and a Cloud Map source, and by itself at boot).
    pub(crate) fn own_id(&self) -> Option<&str> {
        self.task_id().or(self.instance_id.as_deref())
    }

    /// Its identity, as [`Peer::address`].
    pub(crate) fn address(&self) -> Address {
        Address {
            ip: self.ip,
            port: self.port,
        }
    }

    /// Whether [`Found::into_peer`] with these arguments would make a peer equal to `p`
    /// (without making it). Every field of both is named: a field added to either must be decided here.
    pub(crate) fn is_reported_as(
        &self,
        p: &Peer,
        node: &str,
        region: &Region,
        source: &SourceId,
    ) -> bool {
        let Found {
            ip,
            port,
            node: _,
            task_arn,
            instance_id,
            availability_zone,
            started_at,
            health,
            private_dns_name,
            ec2_instance_id,
            container_instance: _,
            draining,
        } = self;
        let Peer {
            node: p_node,
            ip: p_ip,
            port: p_port,
            region: p_region,
            source: p_source,
            task_arn: p_task_arn,
            instance_id: p_instance_id,
            availability_zone: p_availability_zone,
            started_at: p_started_at,
            health: p_health,
            private_dns_name: p_private_dns_name,
            ec2_instance_id: p_ec2_instance_id,
            draining: p_draining,
        } = p;
        p_ip == ip
            && p_port == port
            && p_draining == draining
            && p_node == node
            && p_task_arn == task_arn
            && p_started_at == started_at
            && p_availability_zone == availability_zone
            && p_instance_id == instance_id
            && p_health == health
            && p_private_dns_name == private_dns_name
            && p_ec2_instance_id == ec2_instance_id
            && p_region == region
            && p_source == source
    }

    pub(crate) fn into_peer(self, node: String, region: &Region, source: &SourceId) -> Peer {
        Peer {
            node,
            ip: self.ip,
            port: self.port,
            region: region.clone(),
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

/// Why something a source found could not be turned into a peer: a RUNNING ECS task that
/// matched the source's filters, or a Cloud Map instance DiscoverInstances returned. Each
/// variant belongs to one kind of source ([`SkipReason::unit`] says which).
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
    /// The task runs on an ECS Anywhere container instance (launch type `EXTERNAL`: a server
    /// registered through SSM, whose `ec2InstanceId` is a managed-instance id `mi-…`), which is
    /// not an EC2 instance: EC2 has no address for it, and nothing is wrong with it.
    /// <https://docs.aws.amazon.com/AmazonECS/latest/developerguide/ecs-anywhere.html>
    ExternalInstance,
    /// A Cloud Map instance with neither `AWS_INSTANCE_IPV4` nor `AWS_INSTANCE_IPV6` (nor a
    /// DNS name): registered with custom attributes only.
    NoAddressAttribute,
    /// A Cloud Map instance known by a DNS name, not an address: `AWS_INSTANCE_CNAME` (a CNAME
    /// service) or `AWS_ALIAS_DNS_NAME` (an alias to a load balancer). A node is dialled at an
    /// address, and a load balancer is no node.
    DnsNameOnly,
    /// A Cloud Map instance whose `AWS_INSTANCE_IPV4`/`AWS_INSTANCE_IPV6` is not an IP address.
    AddressNotAnIp,
    /// A Cloud Map instance whose `AWS_INSTANCE_PORT` is not a port (1..65535), with
    /// `port = "registered"`.
    PortNotUsable,
    /// A Cloud Map instance at the same address (IP and dial port) as another instance of the
    /// service: two registrations of one node, or two nodes on one host dialled on one port
    /// (`port = "distribution_port"`, or instances registered without `AWS_INSTANCE_PORT`).
    /// The first by instance id is the peer; the others are skipped.
    SameAddress,
    /// `node_name` uses `{private_dns_name}`, and AWS reports none for the task: only an
    /// awsvpc task's ENI has a `privateDnsName` (DescribeTasks `attachments[].details`); a
    /// bridge- or host-mode task on EC2 has none.
    NoPrivateDnsName,
    /// `node_names = "epmd"`: the EPMD (port 4369) of the peer's host lists several node names
    /// (on the peer's distribution port, when the source reports one), and `node_basename`
    /// names none of them, so which one is the peer is ambiguous (EPMD `NAMES_REQ`, OTP's
    /// `erl_epmd:names/1`). ECS tasks and Cloud Map instances alike.
    SeveralEpmdNames,
    /// The source's `tags` filter left out every RUNNING task that passed its other filters
    /// (DescribeTasks `include: ["TAGS"]`, `tags[]`): reported only when no running task
    /// matches, so a filter that matches nothing says so; the message names the values the
    /// tasks carry for the configured keys.
    TagMismatch,
    /// `family = "FAMILY:REVISION"` left out every RUNNING task of the family (they run other
    /// revisions, DescribeTasks `taskDefinitionArn`): reported only when none matches; the
    /// message names the revisions they run.
    RevisionMismatch,
    /// `container` left out every RUNNING task (none has a container of that name,
    /// DescribeTasks `containers[].name`): reported only when none matches; the message names
    /// the containers they have.
    NoSuchContainer,
}

/// What a skip is about, for its words: an ECS task, a Cloud Map instance, or either (a peer
/// a source of either kind reported, left out when it was named).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SkipOf {
    Task,
    Instance,
    Peer,
}

impl SkipReason {
    fn of(self) -> SkipOf {
        match self {
            SkipReason::NoAddress
            | SkipReason::NoDistributionBinding
            | SkipReason::InstanceNotFound
            | SkipReason::InstanceWithoutAddress
            | SkipReason::ExternalInstance
            | SkipReason::NoPrivateDnsName
            | SkipReason::TagMismatch
            | SkipReason::RevisionMismatch
            | SkipReason::NoSuchContainer => SkipOf::Task,
            SkipReason::NoAddressAttribute
            | SkipReason::DnsNameOnly
            | SkipReason::AddressNotAnIp
            | SkipReason::PortNotUsable
            | SkipReason::SameAddress => SkipOf::Instance,
            SkipReason::SeveralEpmdNames => SkipOf::Peer,
        }
    }

    /// What a count of these skips counts, in words: `running task(s)` (ECS), `Cloud Map
    /// instance(s)`, or `peer(s)` (either, skipped when named).
    pub fn unit(self) -> &'static str {
        match self.of() {
            SkipOf::Task => "running task(s)",
            SkipOf::Instance => "Cloud Map instance(s)",
            SkipOf::Peer => "peer(s)",
        }
    }

    /// What is wrong, in words.
    pub fn message(self, dist_port: u16) -> String {
        match self {
            SkipReason::NoAddress => "the task has no ENI attachment (awsvpc) and no container instance (EC2), so it has no address".into(),
            SkipReason::NoDistributionBinding => format!("no container of the task maps the distribution port {dist_port} (containers[].networkBindings has no containerPort {dist_port})"),
            SkipReason::InstanceNotFound => "its container instance or EC2 instance was not found (deregistered or terminated)".into(),
            SkipReason::InstanceWithoutAddress => "its EC2 instance has no private IP address (stopped?)".into(),
            SkipReason::ExternalInstance => "it runs on an ECS Anywhere (EXTERNAL) container instance, a managed instance (mi-…) and not an EC2 instance, so ecs-peers cannot read its address from EC2; the instance itself is fine".into(),
            SkipReason::NoAddressAttribute => "the instance has no AWS_INSTANCE_IPV4 or AWS_INSTANCE_IPV6 attribute (only custom attributes), so it has no address".into(),
            SkipReason::DnsNameOnly => "the instance is a DNS name (AWS_INSTANCE_CNAME or AWS_ALIAS_DNS_NAME), not an address a node can be dialled at".into(),
            SkipReason::AddressNotAnIp => "the instance's AWS_INSTANCE_IPV4/AWS_INSTANCE_IPV6 attribute is not an IP address".into(),
            SkipReason::PortNotUsable => "the instance's AWS_INSTANCE_PORT is not a port (1..65535)".into(),
            SkipReason::SameAddress => format!("the instance has the same address as another instance of the service (the same IP, dialled on the same port: its AWS_INSTANCE_PORT, or {dist_port} when it registers none or port is \"distribution_port\"), so it would be the same node"),
            SkipReason::NoPrivateDnsName => "node_name uses {private_dns_name}, and AWS reports no private DNS name for the task (only an awsvpc task's ENI has one; a bridge- or host-mode task on EC2 has none), so it cannot be named".into(),
            SkipReason::SeveralEpmdNames => "node_names is \"epmd\" and the EPMD of its host lists several node names, none of them node_basename, so which one is the peer is ambiguous".into(),
            SkipReason::TagMismatch => "the source's tags filter matches none of its running tasks (tags as ECS reported them when each task was first described)".into(),
            SkipReason::RevisionMismatch => "the source's family names a revision none of its running tasks runs".into(),
            SkipReason::NoSuchContainer => "the source's container names a container none of its running tasks has".into(),
        }
    }

    /// What to do about it.
    pub fn fix(self, dist_port: u16) -> String {
        match self {
            SkipReason::NoAddress => "run the task with networkMode awsvpc, or on EC2 container instances (bridge or host mode)".into(),
            SkipReason::NoDistributionBinding => format!("add to the app container of the task definition \"portMappings\": [{{\"containerPort\": {dist_port}, \"hostPort\": 0, \"protocol\": \"tcp\"}}] (bridge mode: hostPort 0 is a dynamic port; host mode: hostPort {dist_port}), or set distribution_port to the port the nodes listen on"),
            SkipReason::InstanceNotFound => "check the cluster's container instances (aws ecs list-container-instances); a task on a deregistered instance is replaced by its service".into(),
            SkipReason::InstanceWithoutAddress => "check the instance's state (aws ec2 describe-instances --instance-ids <id>)".into(),
            SkipReason::ExternalInstance => "to make these nodes peers, register their addresses in a Cloud Map service (RegisterInstance with AWS_INSTANCE_IPV4) and add it as a cloudmap source; to leave them out, narrow this source by service or family to the tasks on EC2 or Fargate".into(),
            SkipReason::NoAddressAttribute => "register the instance with AWS_INSTANCE_IPV4 (or AWS_INSTANCE_IPV6) set to the node's private IP (aws servicediscovery register-instance --attributes AWS_INSTANCE_IPV4=<ip>), or narrow the source's query to instances that have one".into(),
            SkipReason::DnsNameOnly => "point the source at a service whose instances register addresses (A/AAAA or SRV records: ECS service discovery does this), or use an ECS source for these tasks".into(),
            SkipReason::AddressNotAnIp => "re-register the instance with AWS_INSTANCE_IPV4 (or AWS_INSTANCE_IPV6) set to the node's private IP address".into(),
            SkipReason::PortNotUsable => format!("re-register the instance with AWS_INSTANCE_PORT set to the node's distribution port (its host port), or set the source's port to \"distribution_port\" to dial every instance on {dist_port}"),
            SkipReason::SameAddress => format!("bridge or host mode (several nodes on one host): register the host port of the distribution port (container port {dist_port}) as AWS_INSTANCE_PORT (ECS service discovery: serviceRegistries containerPort {dist_port}) and keep the source's port \"registered\"; one node registered twice: deregister the stale instance"),
            SkipReason::NoPrivateDnsName => "use {ip} or {ip_dashed} in node_name instead of {private_dns_name} (every task has an address), or run these tasks with networkMode awsvpc".into(),
            SkipReason::SeveralEpmdNames => "set node_basename to the name of the app's node (ecs-peers doctor lists the names each host's EPMD has registered), or give the nodes on one host distinct distribution ports the source reports (bridge or host mode)".into(),
            SkipReason::TagMismatch => "set the source's tags to values its tasks carry (names and values are case-sensitive), or tag the tasks: propagateTags SERVICE or TASK_DEFINITION on the service, or tags on RunTask; a tag added to a running task (aws ecs tag-resource) is read when the source starts again".into(),
            SkipReason::RevisionMismatch => "set family to the family alone (every revision: a deployment keeps its peers), or to the revision the tasks run".into(),
            SkipReason::NoSuchContainer => "set container to the name of the container that runs the release, as the task definition writes it (containerDefinitions[].name), or leave container out".into(),
        }
    }
}

/// What a source found and could not use for one reason (see [`SkipReason`]): RUNNING tasks of
/// an ECS source, or instances of a Cloud Map source ([`SkipReason::unit`]). The JSON field
/// names (`tasks`, `example_task`) are the CLI's schema and stay as they are for both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// Why.
    pub reason: SkipReason,
    /// How many RUNNING tasks or Cloud Map instances (at least 1).
    pub tasks: usize,
    /// One of them, for the look-up: its task ARN, or its Cloud Map instance id.
    pub example_task: String,
    /// [`SkipReason::message`] for this source's distribution port.
    pub message: String,
    /// [`SkipReason::fix`] for this source's distribution port.
    pub fix: String,
}

impl Skipped {
    /// These skips for `reason`, counted: `count` of them, `example` one of them (a task ARN
    /// or an instance id), with the message and fix for `dist_port`.
    pub(crate) fn new(reason: SkipReason, count: usize, example: &str, dist_port: u16) -> Skipped {
        Skipped {
            reason,
            tasks: count,
            example_task: example.to_string(),
            message: reason.message(dist_port),
            fix: reason.fix(dist_port),
        }
    }

    /// `2 running task(s) skipped` / `1 Cloud Map instance(s) skipped`.
    pub fn counted(&self) -> String {
        format!("{} {} skipped", self.tasks, self.reason.unit())
    }

    /// The example to look up, named: `task <task id>` (the ARN's last part) or `instance
    /// <instance id>`.
    pub fn example(&self) -> String {
        let id = self
            .example_task
            .rsplit('/')
            .next()
            .unwrap_or(&self.example_task);
        match self.reason.of() {
            SkipOf::Task => format!("task {id}"),
            SkipOf::Instance => format!("instance {id}"),
            SkipOf::Peer => id.to_string(),
        }
    }
}

/// Skips counted by reason, from `(reason, example)` pairs in the order found: one [`Skipped`]
/// per reason (ordered by reason), its example the first one found.
pub(crate) fn count_skips<'a>(
    skips: impl IntoIterator<Item = (SkipReason, &'a str)>,
    dist_port: u16,
) -> Vec<Skipped> {
    let mut by_reason: std::collections::BTreeMap<SkipReason, (usize, &str)> =
        std::collections::BTreeMap::new();
    for (reason, example) in skips {
        by_reason.entry(reason).or_insert((0, example)).0 += 1;
    }
    by_reason
        .into_iter()
        .map(|(reason, (count, example))| Skipped::new(reason, count, example, dist_port))
        .collect()
}

/// Two lists of skips of one answer in one (what the source skipped, and what naming skipped):
/// one [`Skipped`] per reason, ordered by reason; for a reason in both, the counts added and the
/// first list's example and words kept.
pub(crate) fn merge_skips(mut first: Vec<Skipped>, second: Vec<Skipped>) -> Vec<Skipped> {
    for s in second {
        match first.iter_mut().find(|f| f.reason == s.reason) {
            Some(f) => f.tasks += s.tasks,
            None => first.push(s),
        }
    }
    first.sort_by_key(|s| s.reason);
    first
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_is_known_by_its_first_ipv4_address_else_its_first_ipv6_one() {
        let ips = |v: &[&str]| -> Vec<IpAddr> { v.iter().map(|a| a.parse().unwrap()).collect() };
        let pick = |v: &[&str]| task_address(ips(v)).map(|ip| ip.to_string());
        assert_eq!(
            pick(&["2001:db8::5", "10.0.1.5", "10.0.1.6"]).as_deref(),
            Some("10.0.1.5"),
            "dual-stack: IPv4, wherever it comes"
        );
        assert_eq!(
            pick(&["2001:db8::5", "2001:db8::6"]).as_deref(),
            Some("2001:db8::5"),
            "IPv6-only: the first"
        );
        assert_eq!(pick(&[]), None);
        // Offered one at a time (a walk that reads other details too), the same pick.
        let mut walk = AddressPick::default();
        for ip in ips(&["2001:db8::5", "10.0.1.5"]) {
            walk.offer(ip);
        }
        assert!(walk.done());
        assert_eq!(
            walk.picked(),
            task_address(ips(&["2001:db8::5", "10.0.1.5"]))
        );
    }

    #[test]
    fn addresses_are_read_as_std_reads_them() {
        for (text, want) in [
            ("10.0.1.5", Some("10.0.1.5")),
            (" 10.0.1.5\n", Some("10.0.1.5")),
            ("\u{a0}10.0.1.5", Some("10.0.1.5")),
            ("255.255.255.255", Some("255.255.255.255")),
            ("0.0.0.0", Some("0.0.0.0")),
            ("2001:db8::5", Some("2001:db8::5")),
            ("::ffff:10.0.0.1", Some("::ffff:10.0.0.1")),
            ("256.0.0.1", None),
            ("10.0.01.5", None),
            ("10.0.1", None),
            ("10.0.1.5.6", None),
            ("10..1.5", None),
            ("1000.0.0.1", None),
            ("", None),
            ("+1.0.0.1", None),
        ] {
            assert_eq!(
                parse_ip(text).map(|ip| ip.to_string()).as_deref(),
                want,
                "{text:?}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn started_at_is_kept_exactly_when_the_sdk_can_write_it(
            // Years -9999 to 9999 and beyond (the SDK refuses what is not 1 to 9999), and
            // times with and without a fraction of a second.
            secs in proptest::prop_oneof![
                -400_000_000_000i64..400_000_000_000,
                0i64..4_102_444_800,
                proptest::prelude::any::<i64>(),
            ],
            nanos in proptest::prop_oneof![
                proptest::strategy::Just(0u32),
                0u32..1_000_000_000,
                0u32..1_000,
            ],
        ) {
            let t = aws_smithy_types::DateTime::from_secs_and_nanos(secs, nanos);
            proptest::prop_assert_eq!(
                StartedAt::from_sdk(&t).map(|s| s.to_string()),
                t.fmt(aws_smithy_types::date_time::Format::DateTime).ok()
            );
        }
    }

    #[test]
    fn started_at_at_the_edges_of_what_rfc_3339_can_say() {
        for secs in [
            -62_135_596_800, // 0001-01-01T00:00:00Z
            -62_135_596_801,
            253_402_300_799, // 9999-12-31T23:59:59Z
            253_402_300_800,
            0,
            951_782_400, // 2000-02-29
            i64::MIN,
            i64::MAX,
        ] {
            let t = aws_smithy_types::DateTime::from_secs(secs);
            assert_eq!(
                StartedAt::from_sdk(&t).map(|s| s.to_string()),
                t.fmt(aws_smithy_types::date_time::Format::DateTime).ok(),
                "{secs}"
            );
        }
    }
}
