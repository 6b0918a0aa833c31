//! Typed, validated configuration.
//!
//! Configuration arrives as a tree of values (a TOML or JSON file, CLI flags, or Elixir terms
//! converted by the NIF) and is validated **once**, here, by [`Config::from_value`]. Every error
//! names the key path (`sources[1].region`), the bad value and what is expected. Everything
//! downstream takes the typed [`Config`].
//!
//! [`KEYS`] is the single table of keys: it drives unknown-key errors, `ecs-peers keys`, and
//! the docs (a test fails when the README drifts from it).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::error::Error;
use crate::peer::SourceId;

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
    key!(Top, "node_basename", "string", "-", "Node names are `<node_basename>@<ip>`. One of node_basename or node_name is required."),
    key!(Top, "node_name", "template", "-", "Node name template instead of node_basename, e.g. `app@{ip}` or `app@ip-{ip_dashed}.ec2.internal`. Placeholders: {ip}, {ip_dashed}, {region}."),
    key!(Top, "node_names", "config or epmd", "config", "`epmd`: name each peer name@ip by what its EPMD (port 4369) has registered: its only name, or else the one equal to node_basename; a peer with several names and none chosen is left out (with a warning)."),
    key!(Top, "polling_interval", "duration", "5s", "Time between polls (milliseconds as an integer, or a string like `5s`, `500ms`, `1m`). At least 100ms."),
    key!(Top, "jitter", "number 0..1", "0.2", "Each wait is polling_interval scaled by a random factor in [1-jitter, 1+jitter], so a fleet does not poll in lock-step."),
    key!(Top, "poll_timeout", "duration", "20s", "Longest one source's poll may take; a slower poll fails (and keeps the source's last-known peers)."),
    key!(Top, "max_attempts", "integer 1..10", "3", "AWS SDK attempts per API call (1 = no retries)."),
    key!(Top, "endpoint_url", "URL", "-", "Send every AWS call to this endpoint (an emulator, a VPC endpoint). Defaults to AWS_ENDPOINT_URL, else AWS itself."),
    key!(Top, "draining", "boolean", "true", "Keep a task that has left the RUNNING list as a (draining) peer until ECS reports it STOPPED."),
    key!(Top, "local_node", "string", "-", "This node's name; it is left out of the peers."),
    key!(Top, "local_ip", "IP address", "-", "This node's IP; the peer with this IP is left out of the peers. Filled from the task metadata when a source uses cluster \"auto\"."),
    key!(Top, "metadata_url", "URL", "-", "The task metadata endpoint v4, for cluster \"auto\". Defaults to ECS_CONTAINER_METADATA_URI_V4, which the ECS agent sets."),
    key!(Ecs, "type", "\"ecs\"", "required", "An ECS source: running tasks of one cluster."),
    key!(Ecs, "region", "AWS region", "required", "The cluster's region, e.g. `eu-west-2` (optional when cluster is an ARN or \"auto\")."),
    key!(Ecs, "cluster", "name, ARN or \"auto\"", "required", "The ECS cluster. \"auto\": this task's own cluster and region, from the task metadata endpoint; then service defaults to the task's service (EC2) or family (Fargate)."),
    key!(Ecs, "service", "name or ARN", "-", "Only tasks of this service (ListTasks serviceName, and each task's group is checked to be `service:<name>`)."),
    key!(Ecs, "family", "string", "-", "Only tasks of this task-definition family."),
    key!(Ecs, "container", "string", "-", "Only tasks that have a container of this name; its network interface is used when the task has no ENI attachment."),
    key!(CloudMap, "type", "\"cloudmap\"", "required", "A Cloud Map source: registered instances of one service (DiscoverInstances)."),
    key!(CloudMap, "region", "AWS region", "required", "The namespace's region."),
    key!(CloudMap, "namespace", "string", "required", "The Cloud Map namespace name, e.g. `internal.local`."),
    key!(CloudMap, "service", "string", "required", "The Cloud Map service name."),
    key!(CloudMap, "health", "healthy, all or healthy_or_else_all", "healthy", "Which instances to return, by health status."),
    key!(CloudMap, "query", "map of string to string", "-", "Only instances whose custom attributes match all of these (DiscoverInstances QueryParameters)."),
];

/// The value of `cluster` that means "this task's own cluster" (from the task metadata endpoint).
pub const AUTO: &str = "auto";

/// How node names are built from a peer's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeNaming {
    /// `basename@ip`.
    Basename(String),
    /// A template with `{ip}`, `{ip_dashed}` and `{region}` placeholders.
    Template(String),
    /// `name@ip`, with the name the peer's EPMD has registered: its only name, or else the one
    /// equal to `prefer`; a peer with several names and none preferred is left out.
    Epmd {
        /// The name to choose when a host has several (`node_basename`).
        prefer: Option<String>,
    },
}

impl NodeNaming {
    /// The node name of a peer with this address, in this region; `None` with EPMD naming (the
    /// poller asks the peer's EPMD instead).
    ///
    /// ```
    /// use ecs_peers::NodeNaming;
    /// let ip = "10.0.1.5".parse().unwrap();
    /// assert_eq!(NodeNaming::Basename("app".into()).render(ip, "eu-west-2").unwrap(), "app@10.0.1.5");
    /// let t = NodeNaming::Template("app@ip-{ip_dashed}.{region}.compute.internal".into());
    /// assert_eq!(t.render(ip, "eu-west-2").unwrap(), "app@ip-10-0-1-5.eu-west-2.compute.internal");
    /// ```
    pub fn render(&self, ip: IpAddr, region: &str) -> Option<String> {
        match self {
            NodeNaming::Basename(b) => Some(format!("{b}@{ip}")),
            NodeNaming::Template(t) => {
                let ip_s = ip.to_string();
                let dashed = ip_s.replace(['.', ':'], "-");
                Some(
                    t.replace("{ip_dashed}", &dashed)
                        .replace("{ip}", &ip_s)
                        .replace("{region}", region),
                )
            }
            NodeNaming::Epmd { .. } => None,
        }
    }

    /// With EPMD naming: which of the names a host's EPMD has registered is its node, by the rule
    /// above (`Err` says why none).
    pub fn choose<'a>(&self, names: &'a [(String, u16)]) -> Result<&'a str, String> {
        let prefer = match self {
            NodeNaming::Epmd { prefer } => prefer.as_deref(),
            _ => None,
        };
        match names {
            [] => Err("its EPMD has no node registered".into()),
            [(only, _)] => Ok(only),
            several => match prefer.and_then(|p| several.iter().find(|(n, _)| n == p)) {
                Some((n, _)) => Ok(n),
                None => Err(format!(
                    "its EPMD has several nodes ({}); set node_basename to choose one",
                    several
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            },
        }
    }
}

/// Which Cloud Map instances to return, by health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthFilter {
    /// Only healthy instances (the default).
    Healthy,
    /// All instances.
    All,
    /// Healthy ones, or all of them when none is healthy.
    HealthyOrElseAll,
}

/// An ECS source: running tasks of one cluster, optionally of one service or family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcsSourceConfig {
    /// AWS region.
    pub region: String,
    /// Cluster name or ARN.
    pub cluster: String,
    /// Service name or ARN.
    pub service: Option<String>,
    /// Task definition family.
    pub family: Option<String>,
    /// Container name.
    pub container: Option<String>,
}

impl EcsSourceConfig {
    /// This is `cluster = "auto"`, not resolved yet.
    pub fn is_auto(&self) -> bool {
        self.cluster == AUTO
    }

    /// Resolves `cluster = "auto"` from this task's metadata.
    pub(crate) fn resolve(&mut self, md: &crate::metadata::TaskMetadata) {
        self.cluster = md.cluster.clone();
        self.region = md.region.clone();
        if self.service.is_none() && self.family.is_none() {
            self.service = md.service.clone();
            if self.service.is_none() {
                self.family = md.family.clone();
            }
        }
    }
}

/// A Cloud Map source: instances of one service in one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudMapSourceConfig {
    /// AWS region.
    pub region: String,
    /// Namespace name.
    pub namespace: String,
    /// Service name.
    pub service: String,
    /// Health filter.
    pub health: HealthFilter,
    /// Custom attribute filters.
    pub query: BTreeMap<String, String>,
}

/// One configured source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceConfig {
    /// ECS ListTasks/DescribeTasks.
    Ecs(EcsSourceConfig),
    /// Cloud Map DiscoverInstances.
    CloudMap(CloudMapSourceConfig),
}

impl SourceConfig {
    /// The source's stable, human-readable id, e.g. `ecs:eu-west-2/web/app`.
    pub fn id(&self) -> SourceId {
        match self {
            SourceConfig::Ecs(e) if e.is_auto() => SourceId::new(format!("ecs:{}/auto", e.region)),
            SourceConfig::Ecs(e) => {
                let cluster = e.cluster.rsplit('/').next().unwrap_or(&e.cluster);
                let mut id = format!("ecs:{}/{}", e.region, cluster);
                if let Some(s) = &e.service {
                    id.push('/');
                    id.push_str(s.rsplit('/').next().unwrap_or(s));
                }
                if let Some(f) = &e.family {
                    id.push_str("/family:");
                    id.push_str(f);
                }
                SourceId::new(id)
            }
            SourceConfig::CloudMap(c) => SourceId::new(format!(
                "cloudmap:{}/{}/{}",
                c.region, c.namespace, c.service
            )),
        }
    }

    /// The source's region.
    pub fn region(&self) -> &str {
        match self {
            SourceConfig::Ecs(e) => &e.region,
            SourceConfig::CloudMap(c) => &c.region,
        }
    }
}

/// A validated namespace configuration.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// The sources, in configuration order (at least one).
    pub sources: Vec<SourceConfig>,
    /// How node names are built.
    pub node: NodeNaming,
    /// Time between polls.
    pub polling_interval: Duration,
    /// Random spread of each wait, 0..=1.
    pub jitter: f64,
    /// Longest one source's poll may take.
    pub poll_timeout: Duration,
    /// SDK attempts per call.
    pub max_attempts: u32,
    /// Endpoint override for every AWS client.
    pub endpoint_url: Option<String>,
    /// Keep draining tasks as peers.
    pub draining: bool,
    /// This node's name, excluded from peers.
    pub local_node: Option<String>,
    /// This node's IP, excluded from peers.
    pub local_ip: Option<IpAddr>,
    /// The task metadata endpoint (for `cluster = "auto"`); `None`: from the environment.
    pub metadata_url: Option<String>,
}

impl Config {
    /// Validates a configuration tree (as parsed from JSON or TOML, or converted from Elixir).
    ///
    /// ```
    /// let cfg = ecs_peers::Config::from_value(serde_json::json!({
    ///     "node_basename": "app",
    ///     "sources": [{"type": "ecs", "region": "eu-west-2", "cluster": "web", "service": "api"}]
    /// })).unwrap();
    /// assert_eq!(cfg.sources[0].id().as_str(), "ecs:eu-west-2/web/api");
    ///
    /// let err = ecs_peers::Config::from_value(serde_json::json!({
    ///     "node_basename": "app",
    ///     "sources": [{"type": "ecs", "region": "eu-west", "cluster": "web"}]
    /// })).unwrap_err();
    /// assert!(err.to_string().starts_with("sources[0].region: \"eu-west\" is not an AWS region"));
    /// ```
    pub fn from_value(value: Value) -> Result<Config, Error> {
        let Value::Object(map) = value else {
            return Err(Error::config(
                "(top level)",
                format!("expected a map of keys, got {}", describe(&value)),
            ));
        };
        let mut top = Fields::new(map, String::new(), Scope::Top);

        let basename = top.take_string("node_basename")?;
        let template = top.take_string("node_name")?;
        let from_epmd = match top.take_string("node_names")?.as_deref() {
            None | Some("config") => false,
            Some("epmd") => true,
            Some(other) => {
                return Err(Error::config(
                    "node_names",
                    format!("{other:?} is not a naming mode; expected \"config\" (node_basename or node_name) or \"epmd\" (what each peer's EPMD reports)"),
                ))
            }
        };
        let node = match (basename, template) {
            (_, Some(_)) if from_epmd => {
                return Err(Error::config(
                    "node_name",
                    "a template cannot be used with node_names = \"epmd\" (names come from each peer's EPMD); use node_basename to choose among several names",
                ))
            }
            (b, None) if from_epmd => NodeNaming::Epmd {
                prefer: b.map(|b| validate_basename(&b)).transpose()?,
            },
            (Some(_), Some(_)) => {
                return Err(Error::config(
                    "node_name",
                    "give either node_basename or node_name, not both",
                ))
            }
            (Some(b), None) => NodeNaming::Basename(validate_basename(&b)?),
            (None, Some(t)) => NodeNaming::Template(validate_template(&t)?),
            (None, None) => {
                return Err(Error::config(
                    "node_basename",
                    "is required (the part before @ in your release's node name, e.g. \"app\"), or give a node_name template such as \"app@{ip}\"",
                ))
            }
        };

        let polling_interval = top
            .take_duration("polling_interval")?
            .unwrap_or(Duration::from_secs(5));
        if polling_interval < Duration::from_millis(100) {
            return Err(Error::config(
                "polling_interval",
                format!("{polling_interval:?} is too short; expected at least 100ms (5s is a good start)"),
            ));
        }
        let jitter = match top.take("jitter") {
            None => 0.2,
            Some(v) => match v.as_f64() {
                Some(j) if (0.0..=1.0).contains(&j) => j,
                _ => {
                    return Err(Error::config(
                        "jitter",
                        format!("{} is not a number between 0 and 1 (e.g. 0.2)", show(&v)),
                    ))
                }
            },
        };
        let poll_timeout = top
            .take_duration("poll_timeout")?
            .unwrap_or(Duration::from_secs(20));
        if poll_timeout.is_zero() {
            return Err(Error::config(
                "poll_timeout",
                "must be more than 0 (e.g. \"20s\")",
            ));
        }
        let max_attempts = match top.take("max_attempts") {
            None => 3,
            Some(v) => match v.as_u64() {
                Some(n @ 1..=10) => n as u32,
                _ => {
                    return Err(Error::config(
                        "max_attempts",
                        format!("{} is not a whole number from 1 to 10", show(&v)),
                    ))
                }
            },
        };
        let endpoint_url = match top.take_string("endpoint_url")? {
            None => None,
            Some(u) if u.starts_with("http://") || u.starts_with("https://") => Some(u),
            Some(u) => {
                return Err(Error::config(
                    "endpoint_url",
                    format!(
                        "{u:?} is not an http:// or https:// URL (e.g. \"http://127.0.0.1:5000\")"
                    ),
                ))
            }
        };
        let draining = top.take_bool("draining")?.unwrap_or(true);
        let local_node = top.take_string("local_node")?;
        if let Some(n) = &local_node {
            if n.matches('@').count() != 1 {
                return Err(Error::config(
                    "local_node",
                    format!("{n:?} is not a node name; expected name@host, e.g. \"app@10.0.1.5\""),
                ));
            }
        }
        let local_ip = match top.take_string("local_ip")? {
            None => None,
            Some(s) => Some(s.parse::<IpAddr>().map_err(|_| {
                Error::config(
                    "local_ip",
                    format!("{s:?} is not an IP address (e.g. \"10.0.1.5\")"),
                )
            })?),
        };

        let metadata_url = match top.take_string("metadata_url")? {
            Some(u) if !u.starts_with("http://") => {
                return Err(Error::config(
                    "metadata_url",
                    format!("{u:?} is not an http:// URL (the endpoint is plain http, e.g. \"http://169.254.170.2/v4/<id>\")"),
                ))
            }
            other => other,
        };

        let sources = match top.take("sources") {
            None => {
                return Err(Error::config(
                    "sources",
                    "is required: a list of at least one source, e.g. [{type = \"ecs\", region = \"eu-west-2\", cluster = \"web\"}]",
                ))
            }
            Some(Value::Array(items)) if items.is_empty() => {
                return Err(Error::config("sources", "is empty; give at least one source"))
            }
            Some(Value::Array(items)) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| parse_source(i, v))
                .collect::<Result<Vec<_>, _>>()?,
            Some(other) => {
                return Err(Error::config(
                    "sources",
                    format!("expected a list of sources, got {}", describe(&other)),
                ))
            }
        };
        let mut seen = BTreeSet::new();
        for (i, s) in sources.iter().enumerate() {
            if !seen.insert(s.id()) {
                return Err(Error::config(
                    format!("sources[{i}]"),
                    format!("{} is listed twice; remove the duplicate", s.id()),
                ));
            }
        }
        top.finish()?;

        Ok(Config {
            sources,
            node,
            polling_interval,
            jitter,
            poll_timeout,
            max_attempts,
            endpoint_url,
            draining,
            local_node,
            local_ip,
            metadata_url,
        })
    }

    /// Fills what `cluster = "auto"` leaves open from this task's metadata: the cluster, the
    /// region, the service (or else the family) unless one is configured, and `local_ip`.
    pub fn with_metadata(mut self, md: &crate::metadata::TaskMetadata) -> Config {
        for s in &mut self.sources {
            if let SourceConfig::Ecs(e) = s {
                if e.cluster == AUTO {
                    e.resolve(md);
                }
            }
        }
        if self.local_ip.is_none() {
            self.local_ip = md.private_ip;
        }
        self
    }

    /// Reads and validates a TOML (`.toml`) or JSON (any other extension) file.
    pub fn from_file(path: &std::path::Path) -> Result<Config, Error> {
        Config::from_value(read_value(path)?)
    }
}

/// Reads a TOML (`.toml`) or JSON file into an unvalidated value tree, for callers that add
/// to it (CLI flags) before [`Config::from_value`].
pub fn read_value(path: &std::path::Path) -> Result<Value, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::ConfigFile {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    parse_text(path, &text)
}

/// Parses a file's text into a value tree (TOML for `.toml`, else JSON).
fn parse_text(path: &std::path::Path, text: &str) -> Result<Value, Error> {
    let file_err = |message: String| Error::ConfigFile {
        path: path.display().to_string(),
        message,
    };
    if path.extension().is_some_and(|e| e == "toml") {
        let v: toml::Value = toml::from_str(text).map_err(|e| file_err(e.to_string()))?;
        serde_json::to_value(v).map_err(|e| file_err(e.to_string()))
    } else {
        serde_json::from_str(text).map_err(|e| file_err(e.to_string()))
    }
}

fn parse_source(i: usize, v: Value) -> Result<SourceConfig, Error> {
    let path = format!("sources[{i}]");
    let Value::Object(map) = v else {
        return Err(Error::config(
            path,
            format!(
                "expected a map with type, region, ..., got {}",
                describe(&v)
            ),
        ));
    };
    let kind = match map.get("type") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(Error::config(
                format!("{path}.type"),
                format!(
                    "{} is not a source type; expected \"ecs\" or \"cloudmap\"",
                    show(other)
                ),
            ))
        }
        None => {
            return Err(Error::config(
                format!("{path}.type"),
                "is required: \"ecs\" or \"cloudmap\"",
            ))
        }
    };
    match kind.as_str() {
        "ecs" => {
            let mut f = Fields::new(map, path.clone(), Scope::Ecs);
            f.take("type");
            let cluster =
                f.require_string("cluster", "the ECS cluster name or ARN, or \"auto\"")?;
            // "auto": this task's own cluster and region, from the task metadata endpoint.
            let arn_region = if cluster == AUTO {
                Some(f.take_string("region")?.map_or(Ok(AUTO.to_string()), |r| {
                    validate_region(&format!("{path}.region"), r)
                })?)
            } else {
                parse_cluster(&format!("{path}.cluster"), &cluster)?
            };
            let region = match (f.take_string("region")?, arn_region) {
                (Some(r), Some(a)) if r != a => {
                    return Err(Error::config(
                        format!("{path}.region"),
                        format!("{r:?} does not match the cluster ARN's region {a:?}; drop region or fix it"),
                    ))
                }
                (Some(r), _) => validate_region(&format!("{path}.region"), r)?,
                (None, Some(a)) => a,
                (None, None) => {
                    return Err(Error::config(
                        format!("{path}.region"),
                        "is required (e.g. \"eu-west-2\"), unless cluster is an ARN",
                    ))
                }
            };
            let service = f.take_nonempty("service")?;
            let family = f.take_nonempty("family")?;
            let container = f.take_nonempty("container")?;
            f.finish()?;
            Ok(SourceConfig::Ecs(EcsSourceConfig {
                region,
                cluster,
                service,
                family,
                container,
            }))
        }
        "cloudmap" => {
            let mut f = Fields::new(map, path.clone(), Scope::CloudMap);
            f.take("type");
            let region = f.require_string("region", "an AWS region such as \"us-west-2\"")?;
            let region = validate_region(&format!("{path}.region"), region)?;
            let namespace = f.require_string("namespace", "the Cloud Map namespace name")?;
            let service = f.require_string("service", "the Cloud Map service name")?;
            let health = match f.take_string("health")?.as_deref() {
                None | Some("healthy") => HealthFilter::Healthy,
                Some("all") => HealthFilter::All,
                Some("healthy_or_else_all") => HealthFilter::HealthyOrElseAll,
                Some(other) => {
                    return Err(Error::config(
                        format!("{path}.health"),
                        format!("{other:?} is not a health filter; expected \"healthy\", \"all\" or \"healthy_or_else_all\""),
                    ))
                }
            };
            let query = match f.take("query") {
                None => BTreeMap::new(),
                Some(Value::Object(q)) => q
                    .into_iter()
                    .map(|(k, v)| match v {
                        Value::String(s) => Ok((k, s)),
                        other => Err(Error::config(
                            format!("{path}.query.{k}"),
                            format!(
                                "{} is not a string; attribute values are strings",
                                show(&other)
                            ),
                        )),
                    })
                    .collect::<Result<_, _>>()?,
                Some(other) => {
                    return Err(Error::config(
                        format!("{path}.query"),
                        format!(
                            "expected a map of attribute name to value, got {}",
                            describe(&other)
                        ),
                    ))
                }
            };
            f.finish()?;
            Ok(SourceConfig::CloudMap(CloudMapSourceConfig {
                region,
                namespace,
                service,
                health,
                query,
            }))
        }
        other => Err(Error::config(
            format!("{path}.type"),
            format!("{other:?} is not a source type; expected \"ecs\" or \"cloudmap\""),
        )),
    }
}

/// Checks an AWS region name such as `eu-west-2`, `us-gov-west-1` or `cn-north-1`.
fn validate_region(key: &str, r: String) -> Result<String, Error> {
    let parts: Vec<&str> = r.split('-').collect();
    let ok = parts.len() >= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
        && parts[0].len() == 2
        && parts[0].chars().all(|c| c.is_ascii_lowercase())
        && parts
            .last()
            .is_some_and(|p| p.chars().all(|c| c.is_ascii_digit()));
    if ok {
        Ok(r)
    } else {
        Err(Error::config(
            key,
            format!(
                "{r:?} is not an AWS region name; expected e.g. \"eu-west-2\" or \"us-east-1\""
            ),
        ))
    }
}

/// Validates a cluster name or ARN; returns the ARN's region when it is an ARN.
fn parse_cluster(key: &str, c: &str) -> Result<Option<String>, Error> {
    if let Some(rest) = c.strip_prefix("arn:") {
        // arn:PARTITION:ecs:REGION:ACCOUNT:cluster/NAME
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        let ok = parts.len() == 5
            && parts[1] == "ecs"
            && parts[4].strip_prefix("cluster/").is_some_and(valid_name);
        if !ok {
            return Err(Error::config(
                key,
                format!("{c:?} is not an ECS cluster ARN; expected arn:aws:ecs:REGION:ACCOUNT:cluster/NAME"),
            ));
        }
        return validate_region(key, parts[2].to_string()).map(Some);
    }
    if valid_name(c) {
        Ok(None)
    } else {
        Err(Error::config(
            key,
            format!("{c:?} is not a cluster name; expected 1-255 letters, digits, hyphens or underscores, or a cluster ARN"),
        ))
    }
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 255
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn validate_basename(b: &str) -> Result<String, Error> {
    let ok = !b.is_empty()
        && b.len() <= 200
        && b.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(b.to_string())
    } else {
        Err(Error::config(
            "node_basename",
            format!("{b:?} is not a node basename; expected letters, digits, _ or - (the part before @, e.g. \"app\")"),
        ))
    }
}

fn validate_template(t: &str) -> Result<String, Error> {
    let Some((name, host)) = t.split_once('@') else {
        return Err(Error::config(
            "node_name",
            format!("{t:?} has no @; expected a template such as \"app@{{ip}}\""),
        ));
    };
    if name.is_empty() || host.contains('@') {
        return Err(Error::config(
            "node_name",
            format!("{t:?} must be name@host with exactly one @, e.g. \"app@{{ip}}\""),
        ));
    }
    if !host.contains("{ip}") && !host.contains("{ip_dashed}") {
        return Err(Error::config(
            "node_name",
            format!("{t:?} must contain {{ip}} or {{ip_dashed}} after the @, or every peer gets the same name"),
        ));
    }
    let mut rest = t;
    while let Some(start) = rest.find('{') {
        let end = rest[start..]
            .find('}')
            .map(|e| start + e)
            .ok_or_else(|| Error::config("node_name", format!("{t:?} has an unclosed {{")))?;
        let ph = &rest[start + 1..end];
        if !matches!(ph, "ip" | "ip_dashed" | "region") {
            return Err(Error::config(
                "node_name",
                format!("{{{ph}}} in {t:?} is not a placeholder; expected {{ip}}, {{ip_dashed}} or {{region}}"),
            ));
        }
        rest = &rest[end + 1..];
    }
    Ok(t.to_string())
}

/// Parses `500ms`, `5s`, `2m`, `1h`, or an integer number of milliseconds; errors name `key`.
///
/// ```
/// use std::time::Duration;
/// let v = serde_json::json!("500ms");
/// assert_eq!(ecs_peers::config::parse_duration("timeout", &v).unwrap(), Duration::from_millis(500));
/// ```
pub fn parse_duration(key: &str, v: &Value) -> Result<Duration, Error> {
    let bad = || {
        Error::config(
            key,
            format!("{} is not a duration; expected milliseconds as an integer (5000) or a string like \"5s\", \"500ms\", \"1m\"", show(v)),
        )
    };
    match v {
        Value::Number(n) => n.as_u64().map(Duration::from_millis).ok_or_else(bad),
        Value::String(s) => {
            let s = s.trim();
            let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let (num, unit) = s.split_at(split);
            let n: u64 = num.parse().map_err(|_| bad())?;
            let ms = match unit.trim() {
                "ms" => Some(n),
                "s" | "" if !unit.is_empty() => n.checked_mul(1_000),
                "m" | "min" => n.checked_mul(60_000),
                "h" => n.checked_mul(3_600_000),
                _ => None,
            };
            ms.map(Duration::from_millis).ok_or_else(bad)
        }
        _ => Err(bad()),
    }
}

/// Describes a value's type for error messages.
fn describe(v: &Value) -> String {
    match v {
        Value::Null => "nothing (null)".into(),
        Value::Bool(_) => format!("a boolean ({v})"),
        Value::Number(_) => format!("a number ({v})"),
        Value::String(s) => format!("a string ({s:?})"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a map".into(),
    }
}

/// Shows a value compactly for error messages.
fn show(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 80 {
        format!("{}...", &s[..77])
    } else {
        s
    }
}

/// A map of keys being consumed; what is left at the end is unknown.
struct Fields {
    map: Map<String, Value>,
    path: String,
    scope: Scope,
}

impl Fields {
    fn new(map: Map<String, Value>, path: String, scope: Scope) -> Self {
        Fields { map, path, scope }
    }

    fn key(&self, k: &str) -> String {
        if self.path.is_empty() {
            k.to_string()
        } else {
            format!("{}.{k}", self.path)
        }
    }

    fn take(&mut self, k: &str) -> Option<Value> {
        match self.map.remove(k) {
            Some(Value::Null) | None => None,
            Some(v) => Some(v),
        }
    }

    fn take_string(&mut self, k: &str) -> Result<Option<String>, Error> {
        match self.take(k) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(Error::config(
                self.key(k),
                format!("expected a string, got {}", describe(&other)),
            )),
        }
    }

    fn take_nonempty(&mut self, k: &str) -> Result<Option<String>, Error> {
        match self.take_string(k)? {
            Some(s) if s.trim().is_empty() => Err(Error::config(
                self.key(k),
                "is empty; give a value or leave the key out",
            )),
            other => Ok(other),
        }
    }

    fn require_string(&mut self, k: &str, what: &str) -> Result<String, Error> {
        match self.take_nonempty(k)? {
            Some(s) => Ok(s),
            None => Err(Error::config(self.key(k), format!("is required: {what}"))),
        }
    }

    fn take_bool(&mut self, k: &str) -> Result<Option<bool>, Error> {
        match self.take(k) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(other) => Err(Error::config(
                self.key(k),
                format!("expected true or false, got {}", describe(&other)),
            )),
        }
    }

    fn take_duration(&mut self, k: &str) -> Result<Option<Duration>, Error> {
        let key = self.key(k);
        self.take(k).map(|v| parse_duration(&key, &v)).transpose()
    }

    /// Fails on the first key that was not consumed, suggesting the closest valid key.
    fn finish(self) -> Result<(), Error> {
        let Some(unknown) = self.map.keys().next() else {
            return Ok(());
        };
        let valid: Vec<&str> = KEYS
            .iter()
            .filter(|k| k.scope == self.scope)
            .map(|k| k.key)
            .collect();
        let suggestion = valid
            .iter()
            .map(|k| (edit_distance(unknown, k), *k))
            .min()
            .filter(|(d, _)| *d <= 3)
            .map(|(_, k)| format!("did you mean {k:?}? "))
            .unwrap_or_default();
        Err(Error::config(
            self.key(unknown),
            format!(
                "is not a known key; {suggestion}valid keys here: {}",
                valid.join(", ")
            ),
        ))
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(v: Value) -> String {
        Config::from_value(v).unwrap_err().to_string()
    }

    fn base(sources: Value) -> Value {
        json!({"node_basename": "app", "sources": sources})
    }

    #[test]
    fn defaults_apply() {
        let c = Config::from_value(base(
            json!([{"type":"ecs","region":"eu-west-2","cluster":"web"}]),
        ))
        .unwrap();
        assert_eq!(c.polling_interval, Duration::from_secs(5));
        assert_eq!(c.jitter, 0.2);
        assert_eq!(c.max_attempts, 3);
        assert!(c.draining);
        assert_eq!(c.node, NodeNaming::Basename("app".into()));
    }

    #[test]
    fn region_comes_from_cluster_arn() {
        let c = Config::from_value(base(
            json!([{"type":"ecs","cluster":"arn:aws:ecs:us-west-2:123456789012:cluster/web"}]),
        ))
        .unwrap();
        assert_eq!(c.sources[0].region(), "us-west-2");
        assert_eq!(c.sources[0].id().as_str(), "ecs:us-west-2/web");
        let e = err(base(
            json!([{"type":"ecs","region":"eu-west-2","cluster":"arn:aws:ecs:us-west-2:123456789012:cluster/web"}]),
        ));
        assert!(
            e.starts_with("sources[0].region: \"eu-west-2\" does not match"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_key_value_and_expectation() {
        let cases = [
            (json!({"sources": []}), "node_basename: is required"),
            (base(json!([])), "sources: is empty"),
            (
                base(json!("ecs")),
                "sources: expected a list of sources, got a string (\"ecs\")",
            ),
            (
                base(json!([{"region":"eu-west-2"}])),
                "sources[0].type: is required",
            ),
            (
                base(json!([{"type":"k8s"}])),
                "sources[0].type: \"k8s\" is not a source type",
            ),
            (
                base(json!([{"type":"ecs","region":"eu-west-2"}])),
                "sources[0].cluster: is required",
            ),
            (
                base(json!([{"type":"ecs","region":"EU","cluster":"web"}])),
                "sources[0].region: \"EU\" is not an AWS region",
            ),
            (
                base(json!([{"type":"ecs","region":"eu-west-2","cluster":"a b"}])),
                "sources[0].cluster: \"a b\" is not a cluster name",
            ),
            (
                base(json!([{"type":"ecs","region":"eu-west-2","cluster":"web","servce":"x"}])),
                "sources[0].servce: is not a known key; did you mean \"service\"?",
            ),
            (
                base(json!([{"type":"ecs","region":"eu-west-2","cluster":"web","service":""}])),
                "sources[0].service: is empty",
            ),
            (
                base(json!([{"type":"ecs","region":"eu-west-2","cluster":"web","service":5}])),
                "sources[0].service: expected a string, got a number (5)",
            ),
            (
                base(json!([{"type":"cloudmap","region":"us-west-2","namespace":"n"}])),
                "sources[0].service: is required: the Cloud Map service name",
            ),
            (
                base(
                    json!([{"type":"cloudmap","region":"us-west-2","namespace":"n","service":"s","health":"ok"}]),
                ),
                "sources[0].health: \"ok\" is not a health filter",
            ),
            (
                base(
                    json!([{"type":"cloudmap","region":"us-west-2","namespace":"n","service":"s","query":{"a":1}}]),
                ),
                "sources[0].query.a: 1 is not a string",
            ),
            (
                base(
                    json!([{"type":"ecs","region":"eu-west-2","cluster":"web"},{"type":"ecs","region":"eu-west-2","cluster":"web"}]),
                ),
                "sources[1]: ecs:eu-west-2/web is listed twice",
            ),
        ];
        for (v, want) in cases {
            let e = err(v);
            assert!(e.starts_with(want), "got {e:?}, want prefix {want:?}");
        }
    }

    #[test]
    fn top_level_errors() {
        let src = json!([{"type":"ecs","region":"eu-west-2","cluster":"web"}]);
        let with = |k: &str, v: Value| {
            let mut m = base(src.clone());
            m[k] = v;
            err(m)
        };
        assert!(with("polling_interval", json!("soon"))
            .starts_with("polling_interval: \"soon\" is not a duration"));
        assert!(
            with("polling_interval", json!(10)).starts_with("polling_interval: 10ms is too short")
        );
        assert!(with("jitter", json!(2)).starts_with("jitter: 2 is not a number between 0 and 1"));
        assert!(with("max_attempts", json!(0)).starts_with("max_attempts: 0 is not a whole number"));
        assert!(with("endpoint_url", json!("localhost:5000"))
            .starts_with("endpoint_url: \"localhost:5000\" is not an http"));
        assert!(with("draining", json!("yes")).starts_with("draining: expected true or false"));
        assert!(with("local_ip", json!("10.0.0"))
            .starts_with("local_ip: \"10.0.0\" is not an IP address"));
        assert!(with("node_name", json!("app@{ip}")).starts_with("node_name: give either"));
        assert!(with("pollinginterval", json!(5)).starts_with(
            "pollinginterval: is not a known key; did you mean \"polling_interval\"?"
        ));
        assert!(err(json!([1])).starts_with("(top level): expected a map"));
    }

    #[test]
    fn auto_cluster_resolves_from_task_metadata() {
        let c = Config::from_value(base(json!([{"type":"ecs","cluster":"auto"}, {"type":"ecs","cluster":"auto","region":"us-west-2","service":"api"}]))).unwrap();
        assert_eq!(c.sources[0].id().as_str(), "ecs:auto/auto");
        assert_eq!(c.sources[1].id().as_str(), "ecs:us-west-2/auto");
        let md = crate::metadata::TaskMetadata {
            cluster: "arn:aws:ecs:eu-west-2:1:cluster/web".into(),
            task_arn: "arn:aws:ecs:eu-west-2:1:task/web/x".into(),
            region: "eu-west-2".into(),
            family: Some("api-td".into()),
            service: None,
            availability_zone: None,
            private_ip: Some("10.1.0.7".parse().unwrap()),
        };
        let c = c.with_metadata(&md);
        assert_eq!(
            c.sources[0].id().as_str(),
            "ecs:eu-west-2/web/family:api-td",
            "Fargate: no ServiceName, so the family"
        );
        assert_eq!(
            c.sources[1].id().as_str(),
            "ecs:eu-west-2/web/api",
            "a configured service is kept"
        );
        assert_eq!(c.local_ip, Some("10.1.0.7".parse().unwrap()));
        let e = err(
            json!({"node_basename": "app", "metadata_url": "169.254.170.2", "sources": [{"type":"ecs","cluster":"auto"}]}),
        );
        assert!(
            e.starts_with("metadata_url: \"169.254.170.2\" is not an http:// URL"),
            "{e}"
        );
    }

    #[test]
    fn epmd_naming_chooses_by_a_clear_rule() {
        let c = Config::from_value(json!({"node_names": "epmd", "sources": [{"type":"ecs","region":"eu-west-2","cluster":"web"}]})).unwrap();
        assert_eq!(c.node, NodeNaming::Epmd { prefer: None });
        let names = |ns: &[&str]| ns.iter().map(|n| (n.to_string(), 9100)).collect::<Vec<_>>();
        assert_eq!(c.node.choose(&names(&["web"])).unwrap(), "web");
        assert!(c
            .node
            .choose(&names(&["a", "b"]))
            .unwrap_err()
            .contains("several nodes (a, b); set node_basename"));
        assert!(c
            .node
            .choose(&[])
            .unwrap_err()
            .contains("no node registered"));
        let p = NodeNaming::Epmd {
            prefer: Some("b".into()),
        };
        assert_eq!(p.choose(&names(&["a", "b"])).unwrap(), "b");
        assert_eq!(
            p.choose(&names(&["a"])).unwrap(),
            "a",
            "a single name is used even if not the preferred one"
        );
        let e = err(
            json!({"node_names": "epmd", "node_name": "x@{ip}", "sources": [{"type":"ecs","region":"eu-west-2","cluster":"web"}]}),
        );
        assert!(e.starts_with("node_name: a template cannot be used"), "{e}");
        let e = err(json!({"node_names": "dns", "sources": []}));
        assert!(
            e.starts_with("node_names: \"dns\" is not a naming mode"),
            "{e}"
        );
    }

    #[test]
    fn templates_are_checked() {
        let src = json!([{"type":"ecs","region":"eu-west-2","cluster":"web"}]);
        let t = |tpl: &str| Config::from_value(json!({"node_name": tpl, "sources": src.clone()}));
        assert!(t("app@{ip}").is_ok());
        assert!(t("app@ip-{ip_dashed}.{region}.compute.internal").is_ok());
        assert!(t("app").unwrap_err().to_string().contains("has no @"));
        assert!(t("app@host")
            .unwrap_err()
            .to_string()
            .contains("must contain {ip}"));
        assert!(t("app@{ip}.{zone}")
            .unwrap_err()
            .to_string()
            .contains("{zone} in"));
        assert!(t("a@b@{ip}")
            .unwrap_err()
            .to_string()
            .contains("exactly one @"));
    }

    #[test]
    fn durations_parse() {
        let d = |v: Value| parse_duration("k", &v);
        assert_eq!(d(json!(1500)).unwrap(), Duration::from_millis(1500));
        assert_eq!(d(json!("500ms")).unwrap(), Duration::from_millis(500));
        assert_eq!(d(json!("5s")).unwrap(), Duration::from_secs(5));
        assert_eq!(d(json!("2m")).unwrap(), Duration::from_secs(120));
        assert!(d(json!("5")).is_err());
        assert!(d(json!("-5s")).is_err());
        assert!(d(json!(1.5)).is_err());
    }

    #[test]
    fn toml_and_json_files_agree() {
        let dir = std::env::temp_dir().join(format!("ecs-peers-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let toml_path = dir.join("c.toml");
        std::fs::write(&toml_path, "node_basename = \"app\"\npolling_interval = \"2s\"\n[[sources]]\ntype = \"cloudmap\"\nregion = \"us-west-2\"\nnamespace = \"internal\"\nservice = \"app\"\nquery = { stage = \"prod\" }\n").unwrap();
        let json_path = dir.join("c.json");
        std::fs::write(&json_path, r#"{"node_basename":"app","polling_interval":2000,"sources":[{"type":"cloudmap","region":"us-west-2","namespace":"internal","service":"app","query":{"stage":"prod"}}]}"#).unwrap();
        let a = Config::from_file(&toml_path).unwrap();
        let b = Config::from_file(&json_path).unwrap();
        assert_eq!(a, b);
        std::fs::write(&toml_path, "node_basename = ").unwrap();
        let e = Config::from_file(&toml_path).unwrap_err().to_string();
        assert!(e.starts_with("cannot read config file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The README's key table is generated from KEYS; this fails when they drift.
    #[test]
    fn readme_documents_every_key() {
        let readme = include_str!("../README.md");
        let mut missing = Vec::new();
        for k in KEYS {
            let scope = match k.scope {
                Scope::Top => "top",
                Scope::Ecs => "ecs",
                Scope::CloudMap => "cloudmap",
            };
            let row = format!(
                "| {scope} | `{}` | {} | {} | {} |",
                k.key, k.kind, k.default, k.doc
            );
            if !readme.contains(&row) {
                missing.push(row);
            }
        }
        assert!(
            missing.is_empty(),
            "README.md must contain these rows of the key table:\n{}",
            missing.join("\n")
        );
    }

    #[test]
    fn every_key_parsed_is_in_the_table() {
        // A config that uses every key of the table must be accepted: the table and the parser agree.
        let full = json!({
            "node_basename": "app", "polling_interval": "1s", "jitter": 0.1, "poll_timeout": "3s",
            "max_attempts": 2, "endpoint_url": "http://127.0.0.1:1", "draining": false,
            "local_node": "app@10.0.0.1", "local_ip": "10.0.0.1", "metadata_url": "http://169.254.170.2/v4/x", "node_names": "config",
            "sources": [
                {"type":"ecs","region":"eu-west-2","cluster":"web","service":"s","family":"f","container":"c"},
                {"type":"cloudmap","region":"us-west-2","namespace":"n","service":"s","health":"all","query":{"a":"b"}}
            ]
        });
        let used: BTreeSet<(String, &str)> = KEYS
            .iter()
            .map(|k| (format!("{:?}", k.scope), k.key))
            .collect();
        let mut keys_in_full: BTreeSet<(String, &str)> = BTreeSet::new();
        for k in full.as_object().unwrap().keys() {
            keys_in_full.insert(("Top".into(), KEYS.iter().find(|s| s.key == k).unwrap().key));
        }
        for (src, scope) in full["sources"]
            .as_array()
            .unwrap()
            .iter()
            .zip(["Ecs", "CloudMap"])
        {
            for k in src.as_object().unwrap().keys() {
                keys_in_full.insert((scope.into(), KEYS.iter().find(|s| s.key == k).unwrap().key));
            }
        }
        // node_name excludes node_basename, so it is checked with a second config.
        keys_in_full.insert(("Top".into(), "node_name"));
        assert_eq!(
            keys_in_full, used,
            "the test configs must use exactly the keys of KEYS"
        );
        let mut templated = full.clone();
        templated.as_object_mut().unwrap().remove("node_basename");
        templated["node_name"] = json!("app@{ip}");
        Config::from_value(full).unwrap();
        Config::from_value(templated).unwrap();
    }
}
