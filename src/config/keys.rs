//! The key table: every configuration key, where it is valid, its type, default and meaning.
//!
//! It drives unknown-key errors (with suggestions), `ecs-peers keys`, the NIF's `keys/0`, and the
//! README and moduledoc tables (tests fail when they drift). Adding a key: a row here, and its
//! parsing in the one file of its scope (`mod.rs` for top-level keys, `ecs.rs`, `cloudmap.rs`,
//! `naming.rs` for naming keys).

/// Where a key is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Top level of the configuration.
    Top,
    /// Inside a source with `type = "ecs"`.
    Ecs,
    /// Inside a source with `type = "cloudmap"`.
    CloudMap,
}

/// One configuration key: its name, where it is valid, its type, default and meaning.
#[derive(Debug, Clone, Copy)]
pub struct KeySpec {
    /// The key's name.
    pub key: &'static str,
    /// Where it may appear.
    pub scope: Scope,
    /// The expected type, for humans.
    pub kind: &'static str,
    /// The default, or `required` / `-` (optional, no default).
    pub default: &'static str,
    /// What it does.
    pub doc: &'static str,
}

macro_rules! key {
    ($scope:ident, $key:literal, $kind:literal, $default:literal, $doc:literal) => {
        KeySpec {
            key: $key,
            scope: Scope::$scope,
            kind: $kind,
            default: $default,
            doc: $doc,
        }
    };
}

/// Every configuration key, in documentation order.
pub const KEYS: &[KeySpec] = &[
    key!(Top, "sources", "list of sources", "required", "Where peers come from: ECS and Cloud Map sources in any regions, merged into one namespace."),
    key!(Top, "node_basename", "string", "-", "Node names are `<node_basename>@<ip>`. Default: the name part of this node's own name (`my_app` of `my_app@10.0.1.5`: the Elixir adapters read the running node, the CLI reads RELEASE_NODE); required only where neither is known. Give node_basename or node_name, not both."),
    key!(Top, "node_name", "template", "-", "Node name template instead of node_basename, e.g. `app@{ip}` or `app@{private_dns_name}` (`app@ip-10-1-0-5.ec2.internal` in us-east-1, `app@ip-10-2-0-5.eu-west-2.compute.internal` elsewhere, as ECS reports it). Placeholders: {ip}, {ip_dashed}, {region}, {private_dns_name} (ECS sources only), {task_id} (the last part of the task ARN)."),
    key!(Top, "node_names", "config or epmd", "config", "`epmd`: name each peer name@ip by what its EPMD (port 4369) has registered: its only name, or else the one equal to node_basename; a peer with several names and none chosen is left out (with a warning)."),
    key!(Top, "distribution_port", "integer 1..65535", "4370", "The port every node's Erlang distribution listens on: ECS_PEERS_DIST_PORT when set (EcsPeers.Epmd reads it too), else 4370. ECS on EC2 (bridge or host network mode, no ENI): a task's peer is its instance's private IP and the hostPort its container maps this port to; a task with no such mapping is skipped (and reported). Its node name is `<node_basename>-<task id>@<instance ip>`."),
    key!(Top, "polling_interval", "duration", "5s", "Time between polls (milliseconds as an integer, or a string like `5s`, `500ms`, `1m`). At least 100ms."),
    key!(Top, "jitter", "number 0..1", "0.2", "Each wait is polling_interval scaled by a random factor in [1-jitter, 1+jitter], so a fleet does not poll in lock-step."),
    key!(Top, "poll_timeout", "duration", "20s", "Longest one source's poll may take; a slower poll fails (and keeps the source's last-known peers)."),
    key!(Top, "max_attempts", "integer 1..10", "3", "AWS SDK attempts per API call (1 = no retries)."),
    key!(Top, "endpoint_url", "URL", "-", "Send every AWS call to this endpoint (an emulator, a VPC endpoint). Defaults to AWS_ENDPOINT_URL, else AWS itself."),
    key!(Top, "draining", "boolean", "true", "Keep a task that has left the RUNNING list as a (draining) peer until ECS reports it STOPPED."),
    key!(Top, "local_node", "string", "-", "This node's name; it is left out of the peers. Defaults to the running node (the strategy) or RELEASE_NODE (the CLI)."),
    key!(Top, "local_ip", "IP address", "-", "This node's IP; the peer at this IP (unless reported with a distribution port of its own) is left out of the peers. Filled from the task metadata when a source uses cluster \"auto\"."),
    key!(Top, "metadata_url", "URL", "-", "The task metadata endpoint v4, for cluster \"auto\". Defaults to ECS_CONTAINER_METADATA_URI_V4, which the ECS agent sets."),
    key!(Top, "share_polling", "boolean", "false", "Share polling across the cluster over Erlang distribution: nodes with the same sources and cookie elect, per source, one poller (rendezvous hashing, a node in the source's region preferred) that polls AWS and sends each result to the others; they stop calling AWS for it while fresh results arrive, and poll it themselves again after two polling intervals without a word from it (a result, or its note that it is backing off or still polling). Each source's status says who polls it and where its result came from."),
    key!(Ecs, "type", "\"ecs\"", "required", "An ECS source: running tasks of one cluster."),
    key!(Ecs, "region", "AWS region", "required", "The cluster's region, e.g. `eu-west-2` (optional when cluster is an ARN or \"auto\")."),
    key!(Ecs, "cluster", "name, ARN or \"auto\"", "required", "The ECS cluster. \"auto\": this task's own cluster and region, from the task metadata endpoint; then service defaults to the task's service (EC2) or family (Fargate)."),
    key!(Ecs, "service", "name or ARN", "-", "Only tasks of this service (ListTasks serviceName, and each task's group is checked to be `service:<name>`)."),
    key!(Ecs, "family", "FAMILY or FAMILY:REVISION", "-", "Only tasks of this task-definition family (`api`: every revision), or of one revision of it (`api:3`)."),
    key!(Ecs, "container", "string", "-", "Only tasks that have a container of this name; its network interface is used when the task has no ENI attachment."),
    key!(CloudMap, "type", "\"cloudmap\"", "required", "A Cloud Map source: registered instances of one service (DiscoverInstances)."),
    key!(CloudMap, "region", "AWS region", "required", "The namespace's region."),
    key!(CloudMap, "namespace", "string", "required", "The Cloud Map namespace name, e.g. `internal.local`."),
    key!(CloudMap, "service", "string", "required", "The Cloud Map service name."),
    key!(CloudMap, "health", "healthy, all or healthy_or_else_all", "healthy", "Which instances to return, by health status."),
    key!(CloudMap, "query", "map of string to string", "-", "Only instances whose custom attributes match all of these (DiscoverInstances QueryParameters)."),
];
