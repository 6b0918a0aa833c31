//! `tags` of an ECS source: the task tags a task must carry to be a peer, checked against the
//! limits ECS puts on the tags it accepts, so a filter that no task could ever match stops the
//! start instead of finding no peers.
//!
//! The limits are those of ECS's `Tag` shape and of TagResource
//! (<https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_Tag.html>): a key of 1 to 128
//! Unicode characters, a value of 0 to 256, both of letters, numbers, spaces and `_ . : / = + -
//! @` (the pattern `[\p{L}\p{Z}\p{N}_.:/=+\-@]*`), case-sensitive, at most 50 tags on a task, and
//! no key or value beginning with `aws:` in any case, which AWS reserves for the tags it sets
//! itself (ECS managed tags say a task's cluster and service, which `cluster` and `service`
//! filter by already).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::fields::{describe, show};
use crate::error::Error;

/// Longest tag key ECS accepts, in Unicode characters.
pub const MAX_KEY_CHARS: usize = 128;
/// Longest tag value ECS accepts, in Unicode characters.
pub const MAX_VALUE_CHARS: usize = 256;
/// Most user tags one ECS resource may carry.
pub const MAX_TAGS: usize = 50;

/// Reads `tags` (at `key`, e.g. `sources[0].tags`): a map of tag key to tag value, every value a
/// string. An empty list is no tags (an empty keyword list from Elixir is `[]`). Errors name the
/// tag's key path (`sources[0].tags.team`), the value and the limit it breaks.
pub(super) fn parse(key: &str, v: Option<Value>) -> Result<BTreeMap<String, String>, Error> {
    let map = match v {
        None => return Ok(BTreeMap::new()),
        Some(Value::Array(items)) if items.is_empty() => return Ok(BTreeMap::new()),
        Some(Value::Object(m)) => m,
        Some(other) => {
            return Err(Error::config(
                key,
                format!(
                    "expected a map of tag key to value, e.g. {{\"team\" = \"payments\"}}, got {}",
                    describe(&other)
                ),
            ))
        }
    };
    if map.len() > MAX_TAGS {
        return Err(Error::config(
            key,
            format!(
                "lists {} tags; an ECS task carries at most {MAX_TAGS}, so no task could match",
                map.len()
            ),
        ));
    }
    tags(key, map)
}

fn tags(key: &str, map: Map<String, Value>) -> Result<BTreeMap<String, String>, Error> {
    map.into_iter()
        .map(|(k, v)| {
            let at = format!("{key}.{k}");
            check(&at, "key", &k, 1, MAX_KEY_CHARS)?;
            let value = match v {
                Value::String(s) => s,
                other => {
                    return Err(Error::config(
                        at,
                        format!(
                            "{} is not a string; tag values are strings (\"\" for a tag without a value)",
                            show(&other)
                        ),
                    ))
                }
            };
            check(&at, "value", &value, 0, MAX_VALUE_CHARS)?;
            Ok((k, value))
        })
        .collect()
}

/// Checks a tag key or value (`what`) against ECS's length, character and prefix rules.
fn check(at: &str, what: &str, s: &str, min: usize, max: usize) -> Result<(), Error> {
    let chars = s.chars().count();
    if chars < min || chars > max {
        let range = if min == 0 {
            format!("at most {max}")
        } else {
            format!("{min} to {max}")
        };
        return Err(Error::config(
            at,
            format!("the tag {what} {s:?} has {chars} characters; ECS takes {range}"),
        ));
    }
    if let Some(bad) = s.chars().find(|c| !allowed(*c)) {
        return Err(Error::config(
            at,
            format!("the tag {what} {s:?} holds {bad:?}, which ECS does not take in tags; they hold letters, numbers, spaces and _ . : / = + - @"),
        ));
    }
    if s.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("aws:")) {
        return Err(Error::config(
            at,
            format!("the tag {what} {s:?} begins with aws:, which AWS reserves for the tags it sets itself (with ECS managed tags, aws:ecs:clusterName and aws:ecs:serviceName); filter by your own tags, or by cluster and service"),
        ));
    }
    Ok(())
}

/// A character of ECS's tag pattern `[\p{L}\p{Z}\p{N}_.:/=+\-@]`. `is_alphabetic` also takes the
/// few combining marks Unicode counts as alphabetic; a filter holding one matches no task, which
/// is the cost of not rejecting a tag AWS accepts.
fn allowed(c: char) -> bool {
    c.is_alphabetic()
        || c.is_numeric()
        || (c.is_whitespace() && !c.is_control())
        || matches!(c, '_' | '.' | ':' | '/' | '=' | '+' | '-' | '@')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(v: Value) -> BTreeMap<String, String> {
        parse("sources[0].tags", Some(v)).unwrap()
    }

    fn err(v: Value) -> String {
        parse("sources[0].tags", Some(v)).unwrap_err().to_string()
    }

    #[test]
    fn a_map_of_strings_within_ecs_limits_is_taken() {
        let max_key = "k".repeat(MAX_KEY_CHARS);
        let max_value = "é".repeat(MAX_VALUE_CHARS);
        let got = ok(
            json!({"team": "payments", "app.kubernetes.io/name": "web@eu +1=2:x_y-z",
                            "empty": "", "名前": "値 値", &max_key: &max_value}),
        );
        assert_eq!(got.len(), 5);
        assert_eq!(got["empty"], "");
        assert_eq!(got[&max_key], max_value);
        assert!(parse("sources[0].tags", None).unwrap().is_empty());
        assert!(ok(json!([])).is_empty(), "an empty keyword list");
    }

    #[test]
    fn an_ecs_source_reads_tags_and_names_their_path() {
        let cfg = |tags: Value| {
            crate::Config::from_value(json!({"node_basename": "app", "sources": [
                {"type": "ecs", "region": "eu-west-2", "cluster": "web"},
                {"type": "ecs", "region": "us-west-2", "cluster": "web", "tags": tags}]}))
        };
        let ok = cfg(json!({"team": "a"})).unwrap();
        let crate::config::SourceConfig::Ecs(e) = &ok.sources[1] else {
            panic!("{:?}", ok.sources[1])
        };
        assert_eq!(e.tags, BTreeMap::from([("team".into(), "a".into())]));
        // Team a's and team b's tasks of one cluster are two sources, each with its own id.
        let two = crate::Config::from_value(json!({"node_basename": "app", "sources": [
            {"type": "ecs", "region": "eu-west-2", "cluster": "web", "service": "api", "tags": {"team": "a", "stage": "blue"}},
            {"type": "ecs", "region": "eu-west-2", "cluster": "web", "service": "api", "tags": {"team": "b"}},
            {"type": "ecs", "region": "eu-west-2", "cluster": "auto", "tags": {"team": "b"}}]}))
        .unwrap();
        let ids: Vec<String> = two
            .sources
            .iter()
            .map(|s| s.id().as_str().to_string())
            .collect();
        assert_eq!(
            ids,
            [
                "ecs:eu-west-2/web/api/tags:stage=blue,team=a",
                "ecs:eu-west-2/web/api/tags:team=b",
                "ecs:eu-west-2/auto/tags:team=b"
            ]
        );
        let e = cfg(json!({"team": ["a"]})).unwrap_err().to_string();
        assert!(
            e.starts_with("sources[1].tags.team: [\"a\"] is not a string"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_the_tag_and_the_limit() {
        for (v, want) in [
            (json!("team=a"), "sources[0].tags: expected a map of tag key to value"),
            (json!(["team"]), "sources[0].tags: expected a map of tag key to value"),
            (json!({"team": 1}), "sources[0].tags.team: 1 is not a string"),
            (json!({"": "a"}), "sources[0].tags.: the tag key \"\" has 0 characters; ECS takes 1 to 128"),
            (json!({"team": "a".repeat(257)}), "sources[0].tags.team: the tag value \"aaa"),
            (json!({"team": "a;b"}), "sources[0].tags.team: the tag value \"a;b\" holds ';'"),
            (json!({"te\tam": "a"}), "holds '\\t'"),
            (json!({"aws:ecs:serviceName": "api"}), "sources[0].tags.aws:ecs:serviceName: the tag key \"aws:ecs:serviceName\" begins with aws:"),
            (json!({"team": "AWS:x"}), "the tag value \"AWS:x\" begins with aws:"),
        ] {
            let e = err(v.clone());
            assert!(e.contains(want), "{v}: {e}");
        }
        assert!(
            err(json!({"k".repeat(129): "a"})).contains("has 129 characters; ECS takes 1 to 128")
        );
        assert!(err(json!({"team": "é".repeat(257)}))
            .contains("has 257 characters; ECS takes at most 256"));
        let many: Map<String, Value> = (0..=MAX_TAGS)
            .map(|i| (format!("k{i}"), json!("v")))
            .collect();
        assert!(err(Value::Object(many)).contains("lists 51 tags; an ECS task carries at most 50"));
    }
}
