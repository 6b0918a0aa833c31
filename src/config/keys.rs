//! The key table: every configuration key, where it is valid, its type with its bounds and
//! default, and its meaning.
//!
//! It is the one definition of each key. Validation reads the bounds and defaults from it
//! ([`super::Config::from_value_for`] and the typed takes of `fields.rs`), unknown-key errors
//! suggest from it, `ecs-peers keys` and the NIF's `keys/0` print it, and the key tables of
//! docs/configuration.md and of the `EcsPeers.Strategy` and `EcsPeers.Cluster` moduledocs are
//! generated from it between `<!-- keys:begin -->` and `<!-- keys:end -->` (the test
//! `generated_key_tables_are_fresh` fails when one differs and names the command that rewrites
//! them). Adding a key: a row here, and its parsing in the one file of its scope (`mod.rs` for
//! top-level keys, `naming.rs` for naming keys, `ecs.rs`, `cloudmap.rs`).

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

impl Scope {
    /// Every scope, in documentation order.
    pub const ALL: [Scope; 3] = [Scope::Top, Scope::Ecs, Scope::CloudMap];

    /// The scope's name: `top`, or a source's `type` (`ecs`, `cloudmap`), which is also the
    /// source's `kind` in statuses and telemetry. The one place a source kind is spelled.
    pub const fn name(self) -> &'static str {
        match self {
            Scope::Top => "top",
            Scope::Ecs => "ecs",
            Scope::CloudMap => "cloudmap",
        }
    }

    /// The heading of the scope's keys in `ecs-peers keys`.
    pub fn title(self) -> String {
        let source = |what: &str| {
            format!(
                "{what} source keys (an entry of sources with type = \"{}\")",
                self.name()
            )
        };
        match self {
            Scope::Top => "Top-level keys".to_string(),
            Scope::Ecs => source("ECS"),
            Scope::CloudMap => source("Cloud Map"),
        }
    }

    /// The source scope whose `type` is `name` (`"ecs"` → [`Scope::Ecs`]); `None` for anything
    /// else, `"top"` included.
    pub fn of_source_type(name: &str) -> Option<Scope> {
        Scope::ALL
            .into_iter()
            .find(|s| *s != Scope::Top && s.name() == name)
    }
}

/// A key's type, with its bounds and default where it has them: what validation enforces and
/// what the docs print.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Type {
    /// The list of sources (required).
    Sources,
    /// A source's `type`: its scope's name (required).
    SourceType,
    /// A value checked by the parser of its scope; `what` describes it for people.
    Text {
        /// The expected form, e.g. `AWS region`, `name or ARN`.
        what: &'static str,
        /// The key must be given (at least where the meaning says).
        required: bool,
    },
    /// One of a few names.
    OneOf {
        /// The accepted names.
        choices: &'static [&'static str],
        /// The one taken when the key is not given.
        default: &'static str,
    },
    /// `true` or `false`.
    Bool {
        /// The value taken when the key is not given.
        default: bool,
    },
    /// A whole number in `min..=max`.
    Integer {
        /// Smallest accepted value.
        min: u64,
        /// Largest accepted value.
        max: u64,
        /// The value taken when the key is not given.
        default: u64,
    },
    /// A TCP port, 1..65535.
    Port {
        /// The port taken when the key (and its environment variable) is not given.
        default: u16,
    },
    /// A number in `min..=max`.
    Number {
        /// Smallest accepted value.
        min: f64,
        /// Largest accepted value.
        max: f64,
        /// The value taken when the key is not given.
        default: f64,
    },
    /// A duration: milliseconds as an integer, or a string like `5s`, `500ms`, `1m`.
    Duration {
        /// Shortest accepted duration, in milliseconds.
        min_ms: u64,
        /// The duration taken when the key is not given, in milliseconds.
        default_ms: u64,
    },
}

/// One configuration key: its name, where it is valid, its type (with bounds and default) and
/// meaning.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeySpec {
    /// The key's name.
    pub key: &'static str,
    /// Where it may appear.
    pub scope: Scope,
    /// Its type, bounds and default.
    pub ty: Type,
    /// What it does.
    pub doc: &'static str,
}

impl KeySpec {
    /// The expected type, for people: `duration`, `integer 1..10`, `config or epmd`, ...
    pub fn kind(&self) -> String {
        match self.ty {
            Type::Sources => "list of sources".into(),
            Type::SourceType => format!("\"{}\"", self.scope.name()),
            Type::Text { what, .. } => what.into(),
            Type::OneOf { choices, .. } => match choices {
                [] => String::new(),
                [one] => (*one).into(),
                [init @ .., last] => format!("{} or {last}", init.join(", ")),
            },
            Type::Bool { .. } => "boolean".into(),
            Type::Integer { min, max, .. } => format!("integer {min}..{max}"),
            Type::Port { .. } => "integer 1..65535".into(),
            Type::Number { min, max, .. } => format!("number {min}..{max}"),
            Type::Duration { min_ms, .. } => format!("duration ≥ {}", show_ms(min_ms)),
        }
    }

    /// The default, for people: the value, `required`, or `-` (optional, no default).
    pub fn default_text(&self) -> String {
        match self.ty {
            Type::Sources | Type::SourceType | Type::Text { required: true, .. } => {
                "required".into()
            }
            Type::Text {
                required: false, ..
            } => "-".into(),
            Type::OneOf { default, .. } => default.into(),
            Type::Bool { default } => default.to_string(),
            Type::Integer { default, .. } => default.to_string(),
            Type::Port { default } => default.to_string(),
            Type::Number { default, .. } => default.to_string(),
            Type::Duration { default_ms, .. } => show_ms(default_ms),
        }
    }
}

/// A duration in milliseconds as people write it in the config: `5s`, `500ms`, `1m`, `1h`.
pub fn show_ms(ms: u64) -> String {
    match ms {
        0 => "0ms".into(),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1_000 == 0 => format!("{}s", ms / 1_000),
        ms => format!("{ms}ms"),
    }
}

/// The key table in Markdown (`| scope | key | type | default | meaning |`), as the docs carry
/// it between `<!-- keys:begin -->` and `<!-- keys:end -->`.
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| scope | key | type | default | meaning |\n| --- | --- | --- | --- | --- |\n",
    );
    for k in KEYS {
        out.push_str(&format!(
            "| {} | `{}` | {} | {} | {} |\n",
            k.scope.name(),
            k.key,
            k.kind(),
            k.default_text(),
            k.doc
        ));
    }
    out
}

/// The distribution port when neither `distribution_port` nor `ECS_PEERS_DIST_PORT` is given:
/// EcsPeers.Epmd's default.
pub const DEFAULT_DISTRIBUTION_PORT: u16 = 4370;

const fn text(what: &'static str) -> Type {
    Type::Text {
        what,
        required: false,
    }
}

const fn required(what: &'static str) -> Type {
    Type::Text {
        what,
        required: true,
    }
}

macro_rules! key {
    ($scope:ident, $key:literal, $ty:expr, $doc:literal) => {
        KeySpec {
            key: $key,
            scope: Scope::$scope,
            ty: $ty,
            doc: $doc,
        }
    };
}

/// `polling_interval`.
pub const POLLING_INTERVAL: KeySpec = key!(
    Top,
    "polling_interval",
    Type::Duration {
        min_ms: 100,
        default_ms: 5_000
    },
    "Time between polls (milliseconds as an integer, or a string like `5s`, `500ms`, `1m`)."
);
/// `jitter`.
pub const JITTER: KeySpec = key!(Top, "jitter", Type::Number { min: 0.0, max: 1.0, default: 0.2 }, "Each wait is polling_interval scaled by a random factor in [1-jitter, 1+jitter], so a fleet does not poll in lock-step.");
/// `poll_timeout`.
pub const POLL_TIMEOUT: KeySpec = key!(Top, "poll_timeout", Type::Duration { min_ms: 1, default_ms: 20_000 }, "Longest one source's poll may take; a slower poll fails (and keeps the source's last-known peers).");
/// `max_attempts`.
pub const MAX_ATTEMPTS: KeySpec = key!(
    Top,
    "max_attempts",
    Type::Integer {
        min: 1,
        max: 10,
        default: 3
    },
    "AWS SDK attempts per API call (1 = no retries)."
);
/// `draining`.
pub const DRAINING: KeySpec = key!(
    Top,
    "draining",
    Type::Bool { default: true },
    "Keep a task that has left the RUNNING list as a (draining) peer until ECS reports it STOPPED."
);
/// `share_polling`.
pub const SHARE_POLLING: KeySpec = key!(Top, "share_polling", Type::Bool { default: true }, "Share polling across the cluster over Erlang distribution (false: every node polls every source itself): connected nodes with the same sources, polling interval and cookie elect, per source, one poller (rendezvous hashing, a node in the source's region preferred) that polls AWS and sends each result to the others; they stop calling AWS for it while fresh results arrive, and poll it themselves again after two polling intervals without a word from it (a result, or its note that it is backing off or still polling). Each source's status says who polls it and where its result came from.");
/// `distribution_port`.
pub const DISTRIBUTION_PORT: KeySpec = key!(Top, "distribution_port", Type::Port { default: DEFAULT_DISTRIBUTION_PORT }, "The port every node's Erlang distribution listens on: ECS_PEERS_DIST_PORT when set (EcsPeers.Epmd reads it too), else the default. ECS on EC2 (bridge or host network mode, no ENI): a task's peer is its instance's private IP and the hostPort its container maps this port to; a task with no such mapping is skipped (and reported). Its node name is `<node_basename>-<task id>@<instance ip>`.");
/// `tls_ca`.
pub const TLS_CA: KeySpec = key!(Top, "tls_ca", text("secret name or ARN, or SSM parameter ARN"), "TLS distribution: where the cluster CA is kept, a Secrets Manager secret (name, read in this task's region, or ARN) or an SSM SecureString parameter ARN, whose value is the CA certificate and its private key, both PEM, concatenated (docs/tls.md). At boot, and again before each expiry, this task's certificate is issued in memory from it for this task's address (and private DNS name). Unset: TLS is off.");
/// `tls_validity`.
pub const TLS_VALIDITY: KeySpec = key!(Top, "tls_validity", Type::Duration { min_ms: 60_000, default_ms: 86_400_000 }, "TLS distribution: how long each certificate is valid (a string like `24h`, `10m`, or milliseconds). It is renewed when two thirds of it have passed. Only with tls_ca.");
/// `region_probe_interval`.
pub const REGION_PROBE_INTERVAL: KeySpec = key!(Top, "region_probe_interval", Type::Duration { min_ms: 100, default_ms: 120_000 }, "For sources with `regions`: how often the enabled regions are read again (ec2:DescribeRegions, one call in this task's region) and a region where the cluster or service is absent (or that the account has not enabled) is polled again. A region where the same stack appears joins within one such interval; absent regions cost no warning and no back-off.");
/// `node_names`.
pub const NODE_NAMES: KeySpec = key!(Top, "node_names", Type::OneOf { choices: &["config", "epmd"], default: "config" }, "`epmd`: name each peer name@ip by what its EPMD (port 4369) has registered: its only name, or else the one equal to node_basename; a peer with several names and none chosen is skipped (`several_epmd_names` in its source's skipped tasks, with the fix).");
/// `health` of a Cloud Map source.
pub const HEALTH: KeySpec = key!(
    CloudMap,
    "health",
    Type::OneOf {
        choices: &["healthy", "all", "healthy_or_else_all"],
        default: "healthy"
    },
    "Which instances to return, by health status."
);
/// `port` of a Cloud Map source.
pub const CLOUDMAP_PORT: KeySpec = key!(CloudMap, "port", Type::OneOf { choices: &["registered", "distribution_port"], default: "registered" }, "Which port an instance's node is dialled on. `registered`: its AWS_INSTANCE_PORT when it registers one (SRV records), else distribution_port; such an instance is named `<node_basename>-<instance id>@<ip>` (ECS service discovery: the instance id is the task id, as bridge-mode ECS peers are named), so two instances on one host are two peers. The registered port is the host port of whichever container port the service registered (serviceRegistries containerPort), not necessarily the distribution port: register that one. `distribution_port`: every instance on distribution_port, named `<node_basename>@<ip>`, AWS_INSTANCE_PORT ignored (awsvpc tasks that register another port).");

/// Every configuration key, in documentation order.
pub const KEYS: &[KeySpec] = &[
    key!(Top, "sources", Type::Sources, "Where peers come from: ECS and Cloud Map sources in any regions, merged into one namespace."),
    key!(Top, "node_basename", text("string"), "Node names are `<node_basename>@<ip>`. Default: the name part of this node's own name (`my_app` of `my_app@10.0.1.5`: the Elixir adapters read the running node, the CLI reads RELEASE_NODE); required only where neither is known. Give node_basename or node_name, not both."),
    key!(Top, "node_name", text("template"), "Node name template instead of node_basename, e.g. `app@{ip}` or `app@{private_dns_name}` (`app@ip-10-1-0-5.ec2.internal` in us-east-1, `app@ip-10-2-0-5.eu-west-2.compute.internal` elsewhere, as ECS reports it). Placeholders: {ip}, {ip_dashed}, {region}, {private_dns_name} (ECS sources only), {task_id} (the last part of the task ARN; a Cloud Map instance's id, which ECS service discovery sets to the task id)."),
    NODE_NAMES,
    DISTRIBUTION_PORT,
    POLLING_INTERVAL,
    JITTER,
    POLL_TIMEOUT,
    MAX_ATTEMPTS,
    key!(Top, "endpoint_url", text("URL"), "Send every AWS call to this endpoint (an emulator, a VPC endpoint). Defaults to AWS_ENDPOINT_URL, else AWS itself."),
    DRAINING,
    key!(Top, "local_node", text("string"), "This node's name; it is left out of the peers. Defaults to the running node (the strategy) or RELEASE_NODE (the CLI)."),
    key!(Top, "local_ip", text("IP address"), "This node's IP; the peer at this IP (unless reported with a distribution port of its own) is left out of the peers. Filled from the task metadata when a source uses cluster \"auto\"."),
    key!(Top, "metadata_url", text("URL"), "The task metadata endpoint v4, for cluster \"auto\". Defaults to ECS_CONTAINER_METADATA_URI_V4, which the ECS agent sets."),
    SHARE_POLLING,
    TLS_CA,
    TLS_VALIDITY,
    REGION_PROBE_INTERVAL,
    key!(Ecs, "type", Type::SourceType, "An ECS source: running tasks of one cluster."),
    key!(Ecs, "region", required("AWS region"), "The cluster's region, e.g. `eu-west-2` (optional when cluster, service or family is an ARN, or cluster is \"auto\"). Any region of the AWS partitions the AWS SDK knows (`cn-north-1`, `us-gov-west-1`, `eusc-de-east-1`, ...), and a new one named as its partition names regions; IAM fixes name ARNs of the region's partition (`arn:aws-cn:ecs:…`)."),
    key!(Ecs, "cluster", required("name, ARN or \"auto\""), "The ECS cluster, by name or ARN. A service ARN as the console and `aws ecs list-services` show it (`arn:aws:ecs:REGION:ACCOUNT:service/CLUSTER/NAME`) is a whole source: region, cluster and service. Any other ARN (a task's, a task definition's, an old-format service ARN without a cluster) is refused, naming the key that takes it. \"auto\": this task's own cluster and region, from the task metadata endpoint; then service defaults to the task's service (EC2) or family (Fargate)."),
    key!(Ecs, "service", text("name or ARN"), "Only tasks of this service (ListTasks serviceName, and each task's group is checked to be `service:<name>`). An ARN in either format (`service/NAME`, or `service/CLUSTER/NAME`, whose cluster must be this source's) gives the name and the region."),
    key!(Ecs, "family", text("FAMILY, FAMILY:REVISION or ARN"), "Only tasks of this task-definition family (`api`: every revision), or of one revision of it (`api:3`); a task definition ARN (`arn:aws:ecs:REGION:ACCOUNT:task-definition/api:3`) is that revision."),
    key!(Ecs, "container", text("string"), "Only tasks that have a container of this name; its network interface is used when the task has no ENI attachment."),
    key!(Ecs, "regions", text("\"all\" or list of regions"), "The same cluster and service (or family) in other regions too: `\"all\"` (every region of the partition of `region`, or of this task's region with cluster \"auto\", that the account has enabled, read with ec2:DescribeRegions every region_probe_interval), or a list such as `[\"eu-west-2\", \"us-west-2\"]` (one partition; `region` is included). Each region is polled as a source of its own; a region not enabled, or where the cluster or service does not exist (ClusterNotFoundException, ServiceNotFoundException), is absent: no peers, no warning, polled again every region_probe_interval. A service scaled to zero is present. Clusters named differently per region need a source each."),
    key!(Ecs, "tags", text("map of string to string"), "Only tasks that carry all of these task tags, each with exactly this value (case-sensitive), e.g. `{team = \"payments\"}`. Read with DescribeTasks `include: TAGS` on the calls the source makes anyway: no extra call. Tags are read when a task is first described RUNNING; a tag added, changed or removed on a running task (TagResource, UntagResource) is seen when the source starts again, and a peer that leaves drains until STOPPED whatever its tags say then. Keys 1-128 and values 0-256 characters, no `aws:` prefix, at most 50."),
    key!(CloudMap, "type", Type::SourceType, "A Cloud Map source: registered instances of one service (DiscoverInstances)."),
    key!(CloudMap, "region", required("AWS region"), "The namespace's region, of any AWS partition (as for an ECS source)."),
    key!(CloudMap, "namespace", required("string"), "The Cloud Map namespace name, e.g. `internal.local`."),
    key!(CloudMap, "service", required("string"), "The Cloud Map service name."),
    HEALTH,
    key!(CloudMap, "query", text("map of string to string"), "Only instances whose custom attributes match all of these (DiscoverInstances QueryParameters)."),
    CLOUDMAP_PORT,
    key!(CloudMap, "owner_account", text("12-digit account id"), "The account that owns the namespace, when it is shared with this account through AWS RAM (DiscoverInstances OwnerAccount, the namespace's ResourceOwner); required for a shared namespace, which is otherwise not found."),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// The files whose key tables are generated from [`KEYS`], relative to the repository root.
    const GENERATED: &[&str] = &[
        "docs/configuration.md",
        "elixir/lib/ecs_peers/strategy.ex",
        "elixir/lib/ecs_peers/cluster.ex",
    ];
    const BEGIN: &str = "<!-- keys:begin -->";
    const END: &str = "<!-- keys:end -->";

    /// `text` with the lines between the markers replaced by [`markdown_table`], indented as
    /// the begin marker is (a moduledoc's heredoc is indented with its code).
    fn regenerate(file: &str, text: &str) -> Result<String, String> {
        let begin = text
            .find(BEGIN)
            .ok_or_else(|| format!("{file} has no {BEGIN} line"))?;
        let line_start = text[..begin].rfind('\n').map_or(0, |i| i + 1);
        let indent = &text[line_start..begin];
        let body_start = begin
            + text[begin..]
                .find('\n')
                .ok_or_else(|| format!("{file}: nothing after {BEGIN}"))?
            + 1;
        let end = body_start
            + text[body_start..]
                .find(END)
                .ok_or_else(|| format!("{file} has no {END} after {BEGIN}"))?;
        let end_line = text[..end].rfind('\n').map_or(0, |i| i + 1);
        let table = markdown_table();
        if file.ends_with(".ex") && (table.contains('\\') || table.contains("#{")) {
            return Err(format!(
                "the key table holds a backslash or #{{, which the heredoc of {file} would read as an escape or interpolation; reword the doc"
            ));
        }
        let mut out = String::from(&text[..body_start]);
        for line in table.lines() {
            out.push_str(indent);
            out.push_str(line);
            out.push('\n');
        }
        out.push_str(&text[end_line..]);
        Ok(out)
    }

    /// One freshness test for every generated key table. `ECS_PEERS_WRITE_DOCS=1` rewrites them.
    #[test]
    fn generated_key_tables_are_fresh() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let write = std::env::var_os("ECS_PEERS_WRITE_DOCS").is_some_and(|v| v == "1");
        let mut stale = Vec::new();
        for file in GENERATED {
            let path = root.join(file);
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
            let fresh = regenerate(file, &text).unwrap_or_else(|e| panic!("{e}"));
            if fresh != text {
                if write {
                    std::fs::write(&path, fresh).unwrap_or_else(|e| panic!("{file}: {e}"));
                } else {
                    stale.push(*file);
                }
            }
        }
        assert!(
            stale.is_empty(),
            "the key tables of {stale:?} differ from KEYS (src/config/keys.rs); regenerate them with\n  ECS_PEERS_WRITE_DOCS=1 cargo test --lib generated_key_tables_are_fresh"
        );
    }

    #[test]
    fn regenerating_replaces_only_the_marked_lines_and_keeps_their_indent() {
        let text = format!("a\n    {BEGIN}\n    | old |\n    {END}\nb\n");
        let out = regenerate("x.ex", &text).unwrap();
        assert!(
            out.starts_with(&format!("a\n    {BEGIN}\n    | scope | key |")),
            "{out}"
        );
        assert!(out.ends_with(&format!(" |\n    {END}\nb\n")), "{out}");
        assert!(!out.contains("| old |"));
        assert_eq!(
            regenerate("x.ex", &out).unwrap(),
            out,
            "regenerating is stable"
        );
        assert!(regenerate("x.md", "no markers")
            .unwrap_err()
            .contains("no <!-- keys:begin"));
    }

    #[test]
    fn kinds_and_defaults_read_as_people_write_them() {
        let row = |scope: Scope, key: &str| {
            let k = KEYS
                .iter()
                .find(|k| k.scope == scope && k.key == key)
                .unwrap_or_else(|| panic!("no key {key}"));
            (k.kind(), k.default_text())
        };
        let s = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(
            row(Scope::Top, "polling_interval"),
            s("duration ≥ 100ms", "5s")
        );
        assert_eq!(row(Scope::Top, "poll_timeout"), s("duration ≥ 1ms", "20s"));
        assert_eq!(row(Scope::Top, "max_attempts"), s("integer 1..10", "3"));
        assert_eq!(row(Scope::Top, "jitter"), s("number 0..1", "0.2"));
        assert_eq!(
            row(Scope::Top, "distribution_port"),
            s("integer 1..65535", "4370")
        );
        assert_eq!(row(Scope::Top, "node_names"), s("config or epmd", "config"));
        assert_eq!(row(Scope::Top, "sources"), s("list of sources", "required"));
        assert_eq!(row(Scope::Top, "local_ip"), s("IP address", "-"));
        assert_eq!(row(Scope::Ecs, "type"), s("\"ecs\"", "required"));
        assert_eq!(
            row(Scope::CloudMap, "health"),
            s("healthy, all or healthy_or_else_all", "healthy")
        );
        assert_eq!(show_ms(90_000), "90s");
        assert_eq!(show_ms(1_500), "1500ms");
    }

    #[test]
    fn scope_names_are_the_source_types() {
        for scope in Scope::ALL {
            let found = Scope::of_source_type(scope.name());
            match scope {
                Scope::Top => assert_eq!(found, None, "top is no source type"),
                Scope::Ecs | Scope::CloudMap => assert_eq!(found, Some(scope)),
            }
        }
        assert_eq!(Scope::of_source_type("k8s"), None);
        let mut seen = std::collections::BTreeSet::new();
        for k in KEYS {
            assert!(
                seen.insert((k.scope.name(), k.key)),
                "{} listed twice",
                k.key
            );
        }
    }
}
