//! Typed, validated configuration.
//!
//! Configuration arrives as a tree of values (a TOML or JSON file, CLI flags, or Elixir terms
//! converted by the NIF) and is validated **once**, here, by [`Config::from_value`]. Every error
//! names the key path (`sources[1].region`), the bad value and what is expected. Everything
//! downstream takes the typed [`Config`].
//!
//! Split by concern: [`KEYS`] (`keys.rs`) is the single table of keys: each key's type, bounds
//! and default, which validation reads; it drives unknown-key errors, `ecs-peers keys`, and the
//! generated key tables of the docs; top-level keys are parsed here; each backend's source keys in its own file
//! (`ecs.rs`, `cloudmap.rs`); node naming and this node's identity in `naming.rs`. Adding a key
//! touches the table and one file; adding a backend, the table, its file and [`SourceConfig`].

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use serde_json::Value;

use crate::error::Error;
use crate::peer::SourceId;

mod arn;
mod cloudmap;
mod ecs;
mod fields;
mod keys;
mod naming;
mod tags;
mod text;
mod tls;

pub use cloudmap::{CloudMapSourceConfig, DialPort, HealthFilter};
pub(crate) use ecs::cluster_name;
pub use ecs::{EcsSourceConfig, Regions, AUTO};
pub use fields::parse_duration;
pub use keys::{markdown_table, KeySpec, Scope, Type, DEFAULT_DISTRIBUTION_PORT, KEYS};
pub use naming::{NodeNaming, ThisNode};
pub use tls::{validity_from_text, CaLocation, TlsConfig};

use fields::{describe, show, Fields};

/// `/tags:KEY=VALUE,...` of a source id, empty without tags: sources of one cluster filtered by
/// other tags (team a's tasks and team b's) are other sources. A tag holds no `,`, so entries
/// cannot run together; a `=` inside a key or value can make two tag sets read alike (`a=b`:`c`
/// and `a`:`b=c`), and then they are refused as one source listed twice, never merged.
fn tags_in_id(tags: &std::collections::BTreeMap<String, String>) -> String {
    if tags.is_empty() {
        return String::new();
    }
    let tags: Vec<String> = tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("/tags:{}", tags.join(","))
}

/// `/regions:all` or `/regions:R1,R2` of a configured source id, empty without `regions`: the
/// source as configured, before it becomes one source per region (each with the plain id of
/// its region, `ecs:us-west-2/web/api`).
fn regions_in_id(regions: Option<&Regions>) -> String {
    regions.map_or_else(String::new, |r| format!("/regions:{}", r.as_text()))
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
    /// The source's stable, human-readable id, e.g. `ecs:eu-west-2/web/app`: its kind, then
    /// what names it within the kind.
    ///
    /// Every key that changes what the source finds is in it (each written only when it is
    /// not its default, so the id of a source without it stays as it was): ECS `service`,
    /// `family` (`/family:api:3`), `container` (`/container:app`), `tags` (`/tags:team=a`) and
    /// `regions`; Cloud Map `health` (`/health:all`), `port` (`/port:distribution_port`),
    /// `query` (`/query:stage=blue`) and `owner_account` (`/owner:111122223333`). Two sources
    /// differ exactly when their ids do: one listed twice is refused by its id, and results,
    /// events and peers are told apart by it. Built by exhaustive destructuring, so a new key
    /// fails to compile here until it is considered.
    pub fn id(&self) -> SourceId {
        let name = match self {
            SourceConfig::Ecs(e) => {
                let EcsSourceConfig {
                    region,
                    cluster: _,
                    service,
                    family,
                    container,
                    tags,
                    regions,
                } = e;
                // The cluster by its name (config/arn.rs reads an ARN to it); "auto" until resolved.
                let mut id = format!("{region}/{}", e.cluster_name());
                if let Some(s) = service {
                    id.push('/');
                    id.push_str(s.rsplit('/').next().unwrap_or(s));
                }
                if let Some(f) = family {
                    id.push_str("/family:");
                    id.push_str(f);
                }
                if let Some(c) = container {
                    id.push_str("/container:");
                    id.push_str(c);
                }
                id.push_str(&tags_in_id(tags));
                id.push_str(&regions_in_id(regions.as_ref()));
                id
            }
            SourceConfig::CloudMap(c) => {
                let CloudMapSourceConfig {
                    region,
                    namespace,
                    service,
                    health,
                    query,
                    port,
                    owner_account,
                } = c;
                let mut id = format!("{region}/{namespace}/{service}");
                // The defaults leave the id as it was before these keys existed.
                if *health != HealthFilter::Healthy {
                    id.push_str(&format!("/health:{}", health.as_str()));
                }
                if *port != DialPort::Registered {
                    id.push_str(&format!("/port:{}", port.as_str()));
                }
                if !query.is_empty() {
                    let q: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    id.push_str("/query:");
                    id.push_str(&q.join(","));
                }
                if let Some(a) = owner_account {
                    id.push_str("/owner:");
                    id.push_str(a);
                }
                id
            }
        };
        SourceId::new(format!("{}:{name}", self.kind()))
    }

    /// The scope of the source's keys; its name is the source's `type` and `kind`.
    pub fn scope(&self) -> Scope {
        match self {
            SourceConfig::Ecs(_) => Scope::Ecs,
            SourceConfig::CloudMap(_) => Scope::CloudMap,
        }
    }

    /// The source's kind, `ecs` or `cloudmap`: its `type` in the configuration (spelled once,
    /// by [`Scope::name`]).
    pub fn kind(&self) -> &'static str {
        self.scope().name()
    }

    /// The source's region.
    pub fn region(&self) -> &str {
        match self {
            SourceConfig::Ecs(e) => &e.region,
            SourceConfig::CloudMap(c) => &c.region,
        }
    }
}

/// `distribution_port` when the key is not given: `ECS_PEERS_DIST_PORT` (the variable
/// EcsPeers.Epmd and the release's boot step read, so the node's listener and its peers' ports
/// agree without configuring it twice), else [`DEFAULT_DISTRIBUTION_PORT`].
fn distribution_port_from(env: Option<&str>) -> Result<u16, Error> {
    match env.map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(DEFAULT_DISTRIBUTION_PORT),
        Some(v) => v.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
            Error::config(
                "distribution_port",
                format!("is not set, and ECS_PEERS_DIST_PORT={v:?} is not a port number; expected an integer 1..65535, e.g. 4370"),
            )
        }),
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
    /// The container port every node's distribution listens on; ECS on EC2 peers are reached
    /// at the host port their container maps it to (default 4370, EcsPeers.Epmd's).
    pub distribution_port: u16,
    /// Fleet-shared polling (`share_polling`, default `true`): this node offers to share its
    /// polls with the nodes that run the same sources (see [`crate::sharing_key`]).
    pub share_polling: bool,
    /// `share_polling` was given (true or false), not left to its default: an adapter that
    /// cannot share (a node that is not distributed) warns only about sharing a user asked for.
    pub share_polling_given: bool,
    /// TLS distribution (`tls_ca`, `tls_validity`); `None`: off.
    pub tls: Option<TlsConfig>,
    /// `region_probe_interval` (default 2 minutes): how often a source with `regions` reads the
    /// enabled regions again (ec2:DescribeRegions) and polls a region where its cluster or
    /// service is absent.
    pub region_probe_interval: Duration,
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
        Config::from_value_for(value, &ThisNode::unknown())
    }

    /// [`Config::from_value`] for a known node: what the naming keys leave open comes from
    /// `this` (see [`ThisNode`]): the basename defaults to this node's, and this node is left
    /// out of the peers.
    ///
    /// ```
    /// use ecs_peers::config::{NodeNaming, ThisNode};
    /// let me = ThisNode::from_erlang("web@10.0.0.5", None);
    /// let cfg = ecs_peers::Config::from_value_for(serde_json::json!({
    ///     "sources": [{"type": "ecs", "region": "eu-west-2", "cluster": "web"}]
    /// }), &me).unwrap();
    /// assert_eq!(cfg.node, NodeNaming::Basename("web".into()));
    /// assert_eq!(cfg.local_node.as_deref(), Some("web@10.0.0.5"));
    /// ```
    pub fn from_value_for(value: Value, this: &ThisNode) -> Result<Config, Error> {
        let Value::Object(map) = value else {
            return Err(Error::config(
                "(top level)",
                format!("expected a map of keys, got {}", describe(&value)),
            ));
        };
        let mut top = Fields::new(map, String::new(), Scope::Top);

        let naming::Naming { node, local_node } = naming::parse(&mut top, this)?;

        let polling_interval = top.duration_key(&keys::POLLING_INTERVAL)?;
        let jitter = top.number_key(&keys::JITTER)?;
        let poll_timeout = top.duration_key(&keys::POLL_TIMEOUT)?;
        let max_attempts = u32::try_from(top.integer_key(&keys::MAX_ATTEMPTS)?)
            .map_err(|_| Error::config("max_attempts", "is too large"))?;
        let endpoint_url = endpoint_url(&mut top)?;
        let draining = top.bool_key(&keys::DRAINING)?;
        let share_polling_given = top.given(keys::SHARE_POLLING.key);
        let share_polling = top.bool_key(&keys::SHARE_POLLING)?;
        let region_probe_interval = top.duration_key(&keys::REGION_PROBE_INTERVAL)?;
        let distribution_port = match top.port_key(&keys::DISTRIBUTION_PORT)? {
            Some(port) => port,
            None => distribution_port_from(std::env::var("ECS_PEERS_DIST_PORT").ok().as_deref())?,
        };
        let local_ip = local_ip(&mut top)?;
        let metadata_url = metadata_url(&mut top)?;
        let sources = sources(&mut top, &node)?;
        let tls = tls::parse(&mut top)?;
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
            distribution_port,
            share_polling,
            share_polling_given,
            tls,
            region_probe_interval,
        })
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

/// `endpoint_url`: an http(s) URL, if given.
fn endpoint_url(top: &mut Fields) -> Result<Option<String>, Error> {
    match top.take_string("endpoint_url")? {
        Some(u) if !(u.starts_with("http://") || u.starts_with("https://")) => Err(Error::config(
            "endpoint_url",
            format!("{u:?} is not an http:// or https:// URL (e.g. \"http://127.0.0.1:5000\")"),
        )),
        other => Ok(other),
    }
}

/// `local_ip`: an IP address, if given.
fn local_ip(top: &mut Fields) -> Result<Option<IpAddr>, Error> {
    top.take_string("local_ip")?
        .map(|s| {
            s.parse::<IpAddr>().map_err(|_| {
                Error::config(
                    "local_ip",
                    format!("{s:?} is not an IP address (e.g. \"10.0.1.5\")"),
                )
            })
        })
        .transpose()
}

/// `metadata_url`: a plain http URL (the task metadata endpoint is never https), if given.
fn metadata_url(top: &mut Fields) -> Result<Option<String>, Error> {
    match top.take_string("metadata_url")? {
        Some(u) if !u.starts_with("http://") => Err(Error::config(
            "metadata_url",
            format!("{u:?} is not an http:// URL (the endpoint is plain http, e.g. \"http://169.254.170.2/v4/<id>\")"),
        )),
        other => Ok(other),
    }
}

/// `sources`: at least one, none listed twice, and each able to name its peers with `node`.
fn sources(top: &mut Fields, node: &NodeNaming) -> Result<Vec<SourceConfig>, Error> {
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
    if node.needs_private_dns_name() {
        if let Some((i, s)) = sources
            .iter()
            .enumerate()
            .find(|(_, s)| matches!(s, SourceConfig::CloudMap(_)))
        {
            return Err(Error::config(
                "node_name",
                format!("{{private_dns_name}} is the private DNS name ECS reports for a task (its ENI's privateDnsName), but sources[{i}] ({}) is Cloud Map, which reports none, so its peers could not be named; use {{ip}} or {{ip_dashed}}, or list those tasks with an ECS source", s.id()),
            ));
        }
    }
    Ok(sources)
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
    let types = || {
        Scope::ALL
            .into_iter()
            .filter(|s| *s != Scope::Top)
            .map(|s| format!("{:?}", s.name()))
            .collect::<Vec<_>>()
            .join(" or ")
    };
    let scope = match map.get("type") {
        Some(Value::String(s)) => Scope::of_source_type(s).ok_or_else(|| {
            Error::config(
                format!("{path}.type"),
                format!("{s:?} is not a source type; expected {}", types()),
            )
        })?,
        Some(other) => {
            return Err(Error::config(
                format!("{path}.type"),
                format!("{} is not a source type; expected {}", show(other), types()),
            ))
        }
        None => {
            return Err(Error::config(
                format!("{path}.type"),
                format!("is required: {}", types()),
            ))
        }
    };
    match scope {
        Scope::Ecs => ecs::parse(map, path).map(SourceConfig::Ecs),
        Scope::CloudMap => cloudmap::parse(map, path).map(SourceConfig::CloudMap),
        Scope::Top => Err(Error::config(
            format!("{path}.type"),
            format!("\"top\" is not a source type; expected {}", types()),
        )),
    }
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
    fn a_long_bad_value_of_any_text_is_shown_cut_on_a_character_boundary() {
        // More than 80 bytes of text, with a 3-byte character across byte 77.
        let value = format!("{}\u{feff}{}", "x".repeat(74), "é".repeat(20));
        let e = err(json!({"node_basename": "app", "distribution_port": value}));
        assert!(e.contains("distribution_port"), "{e}");
        assert!(e.contains(&format!("\"{}...", "x".repeat(74))), "{e}");
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
        assert!(c.share_polling && !c.share_polling_given);
    }

    #[test]
    fn share_polling_says_whether_the_user_gave_it() {
        let with = |v: Value| {
            let mut c = base(json!([{"type":"ecs","region":"eu-west-2","cluster":"web"}]));
            c["share_polling"] = v;
            let c = Config::from_value(c).unwrap();
            (c.share_polling, c.share_polling_given)
        };
        assert_eq!(with(json!(true)), (true, true));
        assert_eq!(with(json!(false)), (false, true));
        // null (Elixir's nil) is the key left out, as for every key.
        assert_eq!(with(Value::Null), (true, false));
    }

    #[test]
    fn regions_take_all_or_a_list_of_one_partition_and_name_the_source() {
        let src = |extra: Value| {
            let mut s = json!({"type":"ecs","cluster":"web","service":"api"});
            s.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            base(json!([s]))
        };
        let c = Config::from_value(src(json!({"region":"eu-west-2","regions":"all"}))).unwrap();
        let SourceConfig::Ecs(e) = &c.sources[0] else {
            panic!()
        };
        assert_eq!(e.regions, Some(Regions::All));
        assert_eq!(
            c.sources[0].id().as_str(),
            "ecs:eu-west-2/web/api/regions:all"
        );
        assert_eq!(c.region_probe_interval, Duration::from_secs(120));
        // A list: its first region stands for region; region itself is included; sorted.
        let c = Config::from_value(src(json!({"regions":["us-west-2","eu-west-2"]}))).unwrap();
        assert_eq!(c.sources[0].region(), "us-west-2");
        assert_eq!(
            c.sources[0].id().as_str(),
            "ecs:us-west-2/web/api/regions:eu-west-2,us-west-2"
        );
        let auto = Config::from_value(base(
            json!([{"type":"ecs","cluster":"auto","regions":"all"}]),
        ))
        .unwrap();
        assert_eq!(auto.sources[0].id().as_str(), "ecs:auto/auto/regions:all");
        let e = err(src(json!({"regions":"all"})));
        assert!(e.starts_with("sources[0].region: is required"), "{e}");
        assert!(
            e.contains("regions = \"all\", region names the partition"),
            "{e}"
        );
        let e = err(src(json!({"region":"eu-west-2","regions":["cn-north-1"]})));
        assert!(e.starts_with("sources[0].regions: "), "{e}");
        assert!(e.contains("one partition"), "{e}");
        let e = err(src(json!({"region":"eu-west-2","regions":["eu-west"]})));
        assert!(
            e.starts_with("sources[0].regions[0]: \"eu-west\" is not an AWS region"),
            "{e}"
        );
        let e = err(src(json!({"region":"eu-west-2","regions":"everywhere"})));
        assert!(
            e.starts_with(
                "sources[0].regions: \"everywhere\" is not a regions value; expected \"all\""
            ),
            "{e}"
        );
        let e = err(src(json!({"region":"eu-west-2","regions":[]})));
        assert!(e.contains("empty list"), "{e}");
        let e = err(
            base(json!([{"type":"ecs","cluster":"web","region":"eu-west-2"}]))
                .as_object()
                .map(|m| {
                    let mut m = m.clone();
                    m.insert("region_probe_interval".into(), json!("10ms"));
                    Value::Object(m)
                })
                .unwrap(),
        );
        assert!(
            e.starts_with("region_probe_interval: 10ms is too short"),
            "{e}"
        );
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
    fn regions_of_every_partition_are_accepted_by_name_and_in_an_arn() {
        for (region, partition) in [
            ("eusc-de-east-1", "aws-eusc"),
            ("cn-north-1", "aws-cn"),
            ("us-gov-west-1", "aws-us-gov"),
            ("us-isob-east-1", "aws-iso-b"),
            ("eu-isoe-west-1", "aws-iso-e"),
        ] {
            for src in [
                json!({"type":"ecs","region":region,"cluster":"web"}),
                json!({"type":"cloudmap","region":region,"namespace":"internal","service":"api"}),
                json!({"type":"ecs","cluster":format!("arn:{partition}:ecs:{region}:1:cluster/web")}),
            ] {
                let c =
                    Config::from_value(base(json!([src]))).unwrap_or_else(|e| panic!("{src}: {e}"));
                assert_eq!(c.sources[0].region(), region, "{src}");
            }
        }
        // A region shaped like one and accepted before any partition data was read stays so.
        assert!(Config::from_value(base(
            json!([{"type":"ecs","region":"xx-new-1","cluster":"web"}])
        ))
        .is_ok());
    }

    #[test]
    fn a_cluster_arn_in_another_partition_than_its_region_names_the_right_arn() {
        let e = err(base(
            json!([{"type":"ecs","cluster":"arn:aws:ecs:cn-north-1:1:cluster/web"}]),
        ));
        assert!(
            e.contains("partition \"aws\", but region cn-north-1 is in partition \"aws-cn\"; expected arn:aws-cn:ecs:cn-north-1:1:cluster/web"),
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
                base(json!([{"type":"ecs","region":"eu-west-2","cluster":"web","family":"api:x"}])),
                "sources[0].family: \"api:x\" is not a task definition family; expected FAMILY (every revision) or FAMILY:REVISION",
            ),
            (
                base(json!([{"type":"ecs","region":"eu-west-2","cluster":"web","family":"api:0"}])),
                "sources[0].family: \"api:0\" is not a task definition family",
            ),
            (
                base(json!([{"type":"ecs","region":"eu-west-2","cluster":"web","family":"arn:aws:ecs:eu-west-2:1:task-definition/api:x"}])),
                "sources[0].family: \"arn:aws:ecs:eu-west-2:1:task-definition/api:x\" is not a task definition ARN",
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
            (
                base(
                    json!([{"type":"ecs","region":"eu-west-2","cluster":"web","tags":{"team":"a"}},{"type":"ecs","region":"eu-west-2","cluster":"web","tags":{"team":"a"}}]),
                ),
                "sources[1]: ecs:eu-west-2/web/tags:team=a is listed twice",
            ),
        ];
        for (v, want) in cases {
            let e = err(v);
            assert!(e.starts_with(want), "got {e:?}, want prefix {want:?}");
        }
    }

    /// Sources that differ only in a key that changes what they find are two sources, each with
    /// its own id; the same source twice (however written) is refused by its id.
    #[test]
    fn sources_that_differ_in_any_filter_are_two_sources() {
        let ids = |sources: Value| -> Result<Vec<String>, String> {
            Config::from_value(base(sources))
                .map(|c| c.sources.iter().map(|s| s.id().to_string()).collect())
                .map_err(|e| e.to_string())
        };
        let ecs = json!({"type":"ecs","region":"eu-west-2","cluster":"web","service":"api"});
        let cm =
            json!({"type":"cloudmap","region":"us-west-2","namespace":"internal","service":"api"});
        let with = |s: &Value, k: &str, v: Value| {
            let mut s = s.clone();
            s[k] = v;
            s
        };
        for (other, id) in [
            (
                with(&ecs, "container", json!("app")),
                "ecs:eu-west-2/web/api/container:app",
            ),
            (
                with(&cm, "query", json!({"stage": "blue"})),
                "cloudmap:us-west-2/internal/api/query:stage=blue",
            ),
            (
                with(&cm, "owner_account", json!("111122223333")),
                "cloudmap:us-west-2/internal/api/owner:111122223333",
            ),
            (
                with(&cm, "health", json!("all")),
                "cloudmap:us-west-2/internal/api/health:all",
            ),
            (
                with(&cm, "port", json!("distribution_port")),
                "cloudmap:us-west-2/internal/api/port:distribution_port",
            ),
        ] {
            let plain = if other["type"] == "ecs" { &ecs } else { &cm };
            let got = ids(json!([plain, other])).unwrap_or_else(|e| panic!("{other}: {e}"));
            assert_eq!(got[1], id, "{other}");
            assert_ne!(got[0], got[1]);
            let twice = ids(json!([other, other])).unwrap_err();
            assert!(twice.contains(&format!("{id} is listed twice")), "{twice}");
        }
        // Defaults written out are the source without them.
        let e = ids(json!([
            cm,
            with(
                &with(&cm, "health", json!("healthy")),
                "port",
                json!("registered")
            )
        ]))
        .unwrap_err();
        assert!(
            e.contains("cloudmap:us-west-2/internal/api is listed twice"),
            "{e}"
        );
        // By ARN or by name, one source.
        let arn =
            json!({"type":"ecs","cluster":"arn:aws:ecs:eu-west-2:123456789012:service/web/api"});
        let e = ids(json!([ecs, arn])).unwrap_err();
        assert!(e.contains("ecs:eu-west-2/web/api is listed twice"), "{e}");
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
        assert_eq!(c.sources[1].id().as_str(), "ecs:us-west-2/auto/api");
        let md = crate::metadata::TaskMetadata {
            cluster: "arn:aws:ecs:eu-west-2:1:cluster/web".into(),
            task_arn: "arn:aws:ecs:eu-west-2:1:task/web/x".into(),
            region: "eu-west-2".into(),
            family: Some("api-td".into()),
            service: None,
            availability_zone: None,
            private_ip: Some("10.1.0.7".parse().unwrap()),
        };
        let resolved: Vec<String> = c
            .sources
            .into_iter()
            .map(|s| match s {
                SourceConfig::Ecs(mut e) => {
                    e.resolve(&md);
                    SourceConfig::Ecs(e).id().to_string()
                }
                other => other.id().to_string(),
            })
            .collect();
        assert_eq!(
            resolved[0], "ecs:eu-west-2/web/family:api-td",
            "Fargate: no ServiceName, so the family"
        );
        assert_eq!(
            resolved[1], "ecs:eu-west-2/web/api",
            "a configured service is kept"
        );
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

    /// The defaults the parsers of other files apply (naming, Cloud Map) are the key table's,
    /// and every choice the table lists is accepted.
    #[test]
    fn the_table_s_choices_and_defaults_are_the_parsers() {
        let src = json!([{"type":"ecs","region":"eu-west-2","cluster":"web"}]);
        let plain = Config::from_value(base(src.clone())).unwrap();
        for spec in KEYS {
            let Type::OneOf { choices, default } = spec.ty else {
                continue;
            };
            let with = |v: &str| {
                let mut c = base(src.clone());
                match spec.scope {
                    Scope::Top => c[spec.key] = json!(v),
                    Scope::Ecs => c["sources"][0][spec.key] = json!(v),
                    Scope::CloudMap => {
                        c["sources"] = json!([{"type":"cloudmap","region":"us-west-2","namespace":"n","service":"s", spec.key: v}]);
                    }
                }
                Config::from_value(c)
            };
            for choice in choices {
                assert!(with(choice).is_ok(), "{}: {choice}", spec.key);
            }
            assert!(with("nonsense").is_err(), "{}", spec.key);
            let defaulted = match spec.scope {
                Scope::CloudMap => {
                    let mut c = base(src.clone());
                    c["sources"] = json!([{"type":"cloudmap","region":"us-west-2","namespace":"n","service":"s"}]);
                    Config::from_value(c).unwrap()
                }
                Scope::Top | Scope::Ecs => plain.clone(),
            };
            assert_eq!(
                with(default).unwrap(),
                defaulted,
                "{}: default {default}",
                spec.key
            );
        }
        let d = |spec: &KeySpec| match spec.ty {
            Type::Duration { default_ms, .. } => Duration::from_millis(default_ms),
            _ => unreachable!(),
        };
        assert_eq!(plain.polling_interval, d(&keys::POLLING_INTERVAL));
        assert_eq!(plain.poll_timeout, d(&keys::POLL_TIMEOUT));
    }

    #[test]
    fn the_distribution_port_defaults_to_the_one_the_node_listens_on() {
        assert_eq!(distribution_port_from(None).unwrap(), 4370);
        assert_eq!(distribution_port_from(Some("9100")).unwrap(), 9100);
        let e = distribution_port_from(Some("70000"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("distribution_port: is not set, and ECS_PEERS_DIST_PORT=\"70000\" is not a port number"),
            "{e}"
        );
        let with = |v| {
            Config::from_value(json!({"node_basename": "a", "distribution_port": v,
                "sources": [{"type":"ecs","region":"eu-west-2","cluster":"web"}]}))
        };
        assert_eq!(with(json!(4000)).unwrap().distribution_port, 4000);
        assert!(with(json!(0))
            .unwrap_err()
            .to_string()
            .starts_with("distribution_port: 0 is not a port number"));
    }

    #[test]
    fn every_key_parsed_is_in_the_table() {
        // A config that uses every key of the table must be accepted: the table and the parser agree.
        let full = json!({
            "node_basename": "app", "polling_interval": "1s", "jitter": 0.1, "poll_timeout": "3s",
            "max_attempts": 2, "endpoint_url": "http://127.0.0.1:1", "draining": false,
            "local_node": "app@10.0.0.1", "local_ip": "10.0.0.1", "metadata_url": "http://169.254.170.2/v4/x", "node_names": "config",
            "distribution_port": 4370, "share_polling": true, "region_probe_interval": "30s",
            "tls_ca": "ecs-peers/ca", "tls_validity": "1h",
            "sources": [
                {"type":"ecs","region":"eu-west-2","cluster":"web","service":"s","family":"f","container":"c","tags":{"team":"a"},"regions":"all"},
                {"type":"cloudmap","region":"us-west-2","namespace":"n","service":"s","health":"all","query":{"a":"b"},"port":"distribution_port","owner_account":"111122223333"}
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
