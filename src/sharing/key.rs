//! The sharing key: two nodes share poll results only when their keys are equal.
//!
//! The key is XXH3-64 (seed 0) of a canonical text of everything that changes what a poll result
//! means. That text is built from an exhaustive destructuring of every configuration struct it
//! covers (no `..`): a field added to [`Config`], [`EcsSourceConfig`] or
//! [`CloudMapSourceConfig`] fails to compile here until it is either written into the key or
//! named with `: _` and a reason. Otherwise two nodes with different filters could share
//! results and no test would notice.

use xxhash_rust::xxh3::xxh3_64;

use super::wire::WIRE_VERSION;
use crate::config::{CloudMapSourceConfig, Config, EcsSourceConfig, NodeNaming, SourceConfig};

/// The sharing key of a configuration: equal on nodes that may share poll results
/// (`share_polling`), different when anything that changes what a result means differs: the
/// sources after defaults (region, cluster, service, family, container, tags, regions;
/// namespace, service, health, query, port, owner_account), node naming, `draining`,
/// `distribution_port`, and the version of the sharing wire format; and `polling_interval`,
/// by which a follower judges its poller silent. Independent of this node's identity
/// (`local_node`, `local_ip`) and of the other timings. The same on every node and every build
/// for the same configuration (XXH3-64, seed 0, is specified), so it can be compared across
/// machines; never an error.
///
/// ```
/// let cfg = |port: u16| ecs_peers::Config::from_value(serde_json::json!({
///     "node_basename": "app", "distribution_port": port,
///     "sources": [{"type": "ecs", "region": "eu-west-2", "cluster": "web"}]
/// })).unwrap();
/// assert_eq!(ecs_peers::sharing_key(&cfg(4370)), ecs_peers::sharing_key(&cfg(4370)));
/// assert_ne!(ecs_peers::sharing_key(&cfg(4370)), ecs_peers::sharing_key(&cfg(9100)));
/// ```
pub fn sharing_key(config: &Config) -> u64 {
    xxh3_64(canonical(config).as_bytes())
}

/// The canonical form the key hashes: the wire version, then one line per fact, strings
/// JSON-quoted (so no value can forge a line), sources in configuration order.
pub(crate) fn canonical(config: &Config) -> String {
    let Config {
        sources,
        node,
        draining,
        distribution_port,
        // Not what a result means, but when the next one is due: a follower takes its poller
        // for silent after two of its *own* polling intervals, so a poller with a longer
        // interval (during a rolling change of `polling_interval`) would be taken for silent
        // between every two results, and its followers would poll on their own, warning,
        // again and again.
        polling_interval,
        // The spread around the interval: a round comes at most (1 + jitter) intervals after
        // the last: within the two a follower waits, but for jitter at (or next to) its maximum, 1.
        jitter: _,
        // How patiently a node polls: a poll still running is announced every round; more
        // attempts only make a failure rarer.
        poll_timeout: _,
        max_attempts: _,
        // Where this node's clients send their calls (an emulator, a VPC endpoint): the
        // answers are AWS's either way.
        endpoint_url: _,
        // This node's identity: every member of a group differs in it, and each node leaves
        // itself out of the peers when it merges (results travel before naming).
        local_node: _,
        local_ip: _,
        // Only where `cluster = "auto"` is read from; the resolved source id is what travels.
        metadata_url: _,
        // Whether to share at all, and whether the user said so.
        share_polling: _,
        share_polling_given: _,
        // How this node's distribution is secured, not what a source reports.
        tls: _,
        // How often absent regions are probed: timing, not meaning.
        region_probe_interval: _,
    } = config;
    let mut out = String::new();
    out.push_str(WIRE_VERSION);
    out.push('\n');
    match node {
        NodeNaming::Basename(b) => out.push_str(&format!("node basename {}\n", q(b))),
        NodeNaming::Template(t) => out.push_str(&format!("node template {}\n", q(t))),
        NodeNaming::Epmd { prefer } => out.push_str(&format!("node epmd {}\n", o(prefer))),
    }
    out.push_str(&format!("draining {draining}\n"));
    out.push_str(&format!("distribution_port {distribution_port}\n"));
    out.push_str(&format!(
        "polling_interval_ms {}\n",
        polling_interval.as_millis()
    ));
    for s in sources {
        match s {
            SourceConfig::Ecs(e) => ecs_line(&mut out, e),
            SourceConfig::CloudMap(c) => cloudmap_line(&mut out, c),
        }
    }
    out
}

fn ecs_line(out: &mut String, source: &EcsSourceConfig) {
    let EcsSourceConfig {
        region,
        cluster,
        service,
        family,
        container,
        tags,
        regions,
    } = source;
    // The cluster's name, however it was written: config/arn.rs reads a cluster or service ARN
    // to the name the source id and every region of a `regions` source use too. Its account adds
    // nothing: ECS resources are the caller's account's, so a cluster given by ARN and by name
    // is the same cluster (the account is read only for the IAM hints of errors).
    out.push_str(&format!(
        "source ecs region {} cluster {} service {} family {} container {}",
        q(region),
        q(crate::config::cluster_name(cluster)),
        o(service),
        o(family),
        o(container)
    ));
    // Written only when given: the line of a source without tags, and so the key of every
    // configuration without them, stays what it was.
    if !tags.is_empty() {
        let tags: Vec<String> = tags
            .iter()
            .map(|(k, v)| format!("{}={}", q(k), q(v)))
            .collect();
        out.push_str(&format!(" tags {}", tags.join(",")));
    }
    // The regions asked for (`all`), never the set found: nodes that found different regions
    // so far still share, each region's result under its own source id. Written only when
    // given, as tags are.
    if let Some(regions) = regions {
        out.push_str(&format!(" regions {}", q(&regions.as_text())));
    }
    out.push('\n');
}

fn cloudmap_line(out: &mut String, source: &CloudMapSourceConfig) {
    let CloudMapSourceConfig {
        region,
        namespace,
        service,
        health,
        query,
        port,
        owner_account,
    } = source;
    let (port, health) = (port.as_str(), health.as_str());
    let query: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{}={}", q(k), q(v)))
        .collect();
    out.push_str(&format!(
        "source cloudmap region {} namespace {} service {} health {} query {} port {} owner_account {}\n",
        q(region),
        q(namespace),
        q(service),
        health,
        query.join(","),
        port,
        o(owner_account)
    ));
}

/// A string JSON-quoted (cannot fail for a `&str`).
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// An optional string JSON-quoted, `-` when absent.
fn o(s: &Option<String>) -> String {
    s.as_deref().map(q).unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(v: serde_json::Value) -> Config {
        Config::from_value(v).unwrap()
    }

    #[test]
    fn the_key_covers_what_a_result_means_and_nothing_else() {
        let base = json!({"node_basename": "app", "distribution_port": 4370,
            "sources": [{"type":"ecs","region":"eu-west-2","cluster":"web","service":"api"}]});
        let k = sharing_key(&cfg(base.clone()));
        let with = |k2: &str, v: serde_json::Value| {
            let mut c = base.clone();
            c[k2] = v;
            sharing_key(&cfg(c))
        };
        // Not result-relevant: the same key.
        assert_eq!(with("jitter", json!(0.5)), k);
        assert_eq!(with("poll_timeout", json!("3s")), k);
        assert_eq!(with("share_polling", json!(false)), k);
        assert_eq!(with("local_node", json!("app@10.0.0.9")), k);
        assert_eq!(with("share_polling", json!(true)), k);
        // Result-relevant: another key.
        assert_ne!(with("draining", json!(false)), k);
        // When the next result is due: a follower waits two of its own intervals.
        assert_ne!(with("polling_interval", json!("30s")), k);
        assert_eq!(with("polling_interval", json!("5s")), k, "the default");
        assert_ne!(with("distribution_port", json!(9000)), k);
        assert_ne!(with("node_basename", json!("web")), k);
        for other in [
            json!({"type":"ecs","region":"eu-west-2","cluster":"web","service":"other"}),
            json!({"type":"ecs","region":"eu-west-2","cluster":"web","service":"api","container":"app"}),
            json!({"type":"ecs","region":"eu-west-2","cluster":"web","family":"api"}),
            json!({"type":"ecs","region":"eu-west-1","cluster":"web","service":"api"}),
        ] {
            assert_ne!(with("sources", json!([other])), k, "{other}");
        }
        // Pinned: the canonical form and XXH3-64 are specified, so every build agrees.
        assert_eq!(
            canonical(&cfg(base)),
            "ecs-peers/shared/v5\nnode basename \"app\"\ndraining true\ndistribution_port 4370\npolling_interval_ms 5000\nsource ecs region \"eu-west-2\" cluster \"web\" service \"api\" family - container -\n"
        );
        assert_eq!(format!("{k:016x}"), PINNED_KEY);
    }

    #[test]
    fn task_tags_are_in_the_key_and_absent_tags_change_nothing() {
        let source = |tags: serde_json::Value| {
            let mut s = json!({"type":"ecs","region":"eu-west-2","cluster":"web","service":"api"});
            if !tags.is_null() {
                s["tags"] = tags;
            }
            cfg(json!({"node_basename": "app", "sources": [s]}))
        };
        let base = sharing_key(&source(serde_json::Value::Null));
        assert_eq!(
            sharing_key(&source(json!({}))),
            base,
            "no tags is no filter"
        );
        let team_a = sharing_key(&source(json!({"team": "a"})));
        assert_ne!(team_a, base);
        for other in [
            json!({"team": "b"}),
            json!({"Team": "a"}),
            json!({"team": "a", "stage": "blue"}),
            json!({"team": "a=stage"}),
        ] {
            assert_ne!(sharing_key(&source(other.clone())), team_a, "{other}");
        }
        assert!(canonical(&source(json!({"team": "a", "stage": "blue"})))
            .ends_with(" container - tags \"stage\"=\"blue\",\"team\"=\"a\"\n"));
    }

    /// One source, one key: a source written with a cluster or service ARN (as the console
    /// shows it) has the key of the same source written by name, so nodes configured the two
    /// ways share.
    #[test]
    fn a_source_written_by_arn_has_the_key_of_the_same_source_by_name() {
        let key = |s: serde_json::Value| {
            let c = cfg(json!({"node_basename": "app", "sources": [s]}));
            (sharing_key(&c), c.sources[0].id())
        };
        let by_name =
            key(json!({"type":"ecs","region":"eu-west-2","cluster":"web","service":"api"}));
        for arn in [
            json!({"type":"ecs","cluster":"arn:aws:ecs:eu-west-2:123456789012:service/web/api"}),
            json!({"type":"ecs","cluster":"arn:aws:ecs:eu-west-2:123456789012:cluster/web","service":"api"}),
            json!({"type":"ecs","cluster":"web","service":"arn:aws:ecs:eu-west-2:123456789012:service/web/api"}),
            json!({"type":"ecs","region":"eu-west-2","cluster":"arn:aws:ecs:eu-west-2:123456789012:cluster/web","service":"arn:aws:ecs:eu-west-2:123456789012:service/api"}),
        ] {
            assert_eq!(key(arn.clone()), by_name, "{arn}");
        }
        // A task definition ARN is that revision of the family, as FAMILY:REVISION is.
        assert_eq!(
            key(
                json!({"type":"ecs","cluster":"web","family":"arn:aws:ecs:eu-west-2:123456789012:task-definition/api:3"})
            ),
            key(json!({"type":"ecs","region":"eu-west-2","cluster":"web","family":"api:3"}))
        );
        // Another cluster is another key.
        assert_ne!(
            key(
                json!({"type":"ecs","cluster":"arn:aws:ecs:eu-west-2:123456789012:service/other/api"})
            ),
            by_name
        );
    }

    #[test]
    fn regions_asked_for_are_in_the_key_and_the_probe_interval_is_not() {
        let source = |regions: serde_json::Value, probe: &str| {
            let mut s = json!({"type":"ecs","cluster":"auto"});
            if !regions.is_null() {
                s["regions"] = regions;
            }
            cfg(json!({"node_basename": "app", "region_probe_interval": probe, "sources": [s]}))
        };
        let all = sharing_key(&source(json!("all"), "2m"));
        assert_eq!(sharing_key(&source(json!("all"), "5s")), all);
        assert_ne!(sharing_key(&source(serde_json::Value::Null, "2m")), all);
        assert_ne!(sharing_key(&source(json!(["eu-west-2"]), "2m")), all);
        // "all", never the regions found: nodes that have found different regions so far agree.
        assert!(canonical(&source(json!("all"), "2m")).ends_with(" container - regions \"all\"\n"));
    }

    #[test]
    fn every_cloud_map_filter_is_in_the_key() {
        let source = |extra: serde_json::Value| {
            let mut s = json!({"type":"cloudmap","region":"us-west-2","namespace":"internal","service":"api"});
            for (k, v) in extra.as_object().unwrap() {
                s[k] = v.clone();
            }
            sharing_key(&cfg(json!({"node_basename": "app", "sources": [s]})))
        };
        let base = source(json!({}));
        assert_eq!(source(json!({"health": "healthy"})), base, "the default");
        assert_eq!(source(json!({"port": "registered"})), base, "the default");
        for other in [
            json!({"port": "distribution_port"}),
            json!({"owner_account": "111122223333"}),
            json!({"health": "all"}),
            json!({"health": "healthy_or_else_all"}),
            json!({"query": {"stage": "blue"}}),
            json!({"namespace": "other"}),
            json!({"service": "other"}),
            json!({"region": "us-east-1"}),
        ] {
            assert_ne!(source(other.clone()), base, "{other}");
        }
    }

    /// The key of the base configuration above, computed once.
    const PINNED_KEY: &str = "73cc8ae304cb8963";
}
