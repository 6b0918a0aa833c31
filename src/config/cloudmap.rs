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

impl HealthFilter {
    /// The source's `health` value that means this filter (its source id and sharing key write it).
    pub fn as_str(self) -> &'static str {
        match self {
            HealthFilter::Healthy => "healthy",
            HealthFilter::All => "all",
            HealthFilter::HealthyOrElseAll => "healthy_or_else_all",
        }
    }
}

/// Which port a Cloud Map instance's node is dialled on (the source's `port` key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialPort {
    /// The instance's `AWS_INSTANCE_PORT` when it registers one (SRV records: ECS service
    /// discovery registers the host port of the container port named in the service's
    /// `serviceRegistries`, which is the distribution port's only when that is the port named);
    /// else `distribution_port`. An instance with a port of its own is named like a bridge-mode
    /// task, `<node_basename>-<instance id>@<ip>`, so two instances on one host are two peers.
    Registered,
    /// Always `distribution_port`; `AWS_INSTANCE_PORT` is ignored, and peers are `<basename>@<ip>`
    /// (awsvpc tasks that register another container port, e.g. their HTTP port, in SRV records).
    DistributionPort,
}

impl DialPort {
    /// The source's `port` value that means this choice (its source id and sharing key write it).
    pub fn as_str(self) -> &'static str {
        match self {
            DialPort::Registered => "registered",
            DialPort::DistributionPort => "distribution_port",
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
    /// The port each instance's node is dialled on.
    pub port: DialPort,
    /// The account that owns the namespace, when it is shared with this one through AWS RAM
    /// (DiscoverInstances `OwnerAccount`): 12 digits.
    pub owner_account: Option<String>,
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
    let port = match f.take_string("port")?.as_deref() {
        None | Some("registered") => DialPort::Registered,
        Some("distribution_port") => DialPort::DistributionPort,
        Some(other) => {
            return Err(Error::config(
                format!("{path}.port"),
                format!("{other:?} is not a port choice; expected \"registered\" (each instance's AWS_INSTANCE_PORT, else distribution_port) or \"distribution_port\""),
            ))
        }
    };
    let owner_account = f.take_string("owner_account")?;
    if let Some(a) = &owner_account {
        if a.len() != 12 || !a.bytes().all(|b| b.is_ascii_digit()) {
            return Err(Error::config(
                format!("{path}.owner_account"),
                format!("{a:?} is not an AWS account id; expected the 12 digits of the account that owns the shared namespace (its ResourceOwner, e.g. \"111122223333\")"),
            ));
        }
    }
    f.finish()?;
    Ok(CloudMapSourceConfig {
        region,
        namespace,
        service,
        health,
        query,
        port,
        owner_account,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn source(extra: Value) -> Result<CloudMapSourceConfig, Error> {
        let mut s =
            json!({"type": "cloudmap", "region": "us-west-2", "namespace": "n", "service": "s"});
        for (k, v) in extra.as_object().unwrap() {
            s[k] = v.clone();
        }
        let Value::Object(map) = s else {
            unreachable!()
        };
        parse(map, "sources[0]".into())
    }

    #[test]
    fn the_dial_port_and_the_owner_account_are_checked_and_named() {
        let d = source(json!({})).unwrap();
        assert_eq!((d.port, d.owner_account), (DialPort::Registered, None));
        let s =
            source(json!({"port": "distribution_port", "owner_account": "111122223333"})).unwrap();
        assert_eq!(s.port, DialPort::DistributionPort);
        assert_eq!(s.owner_account.as_deref(), Some("111122223333"));
        let e = source(json!({"port": "4370"})).unwrap_err().to_string();
        assert!(
            e.contains("sources[0].port") && e.contains("\"distribution_port\""),
            "{e}"
        );
        for bad in [
            "11112222333",
            "1111222233334",
            "arn:aws:iam::111122223333:root",
            "",
        ] {
            let e = source(json!({"owner_account": bad}))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("sources[0].owner_account") && e.contains("12 digits"),
                "{e}"
            );
        }
    }
}
