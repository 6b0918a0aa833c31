//! Cloud Map source keys (`type = "cloudmap"`): parsing and validation of one source entry.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::fields::{describe, show, validate_region, Fields};
use super::keys::Scope;
use crate::error::Error;

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

/// Parses the entry `sources[i]` (at `path`) whose `type` is `"cloudmap"`.
pub(super) fn parse(map: Map<String, Value>, path: String) -> Result<CloudMapSourceConfig, Error> {
    let mut f = Fields::new(map, path.clone(), Scope::CloudMap);
    f.take("type");
    let region = f.require_string("region", "an AWS region such as \"us-west-2\"")?;
    let region = validate_region(&format!("{path}.region"), region)?;
    let namespace = f.require_string("namespace", "the Cloud Map namespace name")?;
    let service = f.require_string("service", "the Cloud Map service name")?;
    super::arn::cloudmap_name(&format!("{path}.namespace"), &namespace)?;
    super::arn::cloudmap_name(&format!("{path}.service"), &service)?;
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
    Ok(CloudMapSourceConfig {
        region,
        namespace,
        service,
        health,
        query,
    })
}
