//! The TLS distribution keys (`tls_ca`, `tls_validity`): where the cluster CA lives and how long
//! this task's certificate is valid. Parsed once here; `crate::tls` fetches and issues.

use std::time::Duration;

use super::fields::Fields;
use super::keys;
use crate::error::Error;
use crate::partition::{self, Arn};

/// TLS distribution: this task's certificate is issued at boot by the cluster CA. Absent
/// (`tls_ca` unset): TLS is off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// Where the cluster CA's certificate and private key are stored.
    pub ca: CaLocation,
    /// The validity of each certificate issued (`tls_validity`, at least 60 s).
    pub validity: Duration,
}

/// Where the cluster CA is stored (`tls_ca`). Its value is the CA certificate and its private
/// key, both PEM, concatenated (see docs/tls.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaLocation {
    /// A Secrets Manager secret: `id` is its name or ARN (GetSecretValue's `SecretId`);
    /// `region` is the ARN's, or `None` for a name: this task's region.
    Secret {
        /// The secret's name or full ARN, as given.
        id: String,
        /// The ARN's region; `None` (a name): the task's own region.
        region: Option<String>,
    },
    /// An SSM SecureString parameter, by ARN (`arn:PARTITION:ssm:REGION:ACCOUNT:parameter/NAME`).
    Parameter {
        /// The parameter's ARN, as given (GetParameter's `Name` accepts it).
        arn: String,
        /// The ARN's region.
        region: String,
    },
}

impl CaLocation {
    /// The region the CA is read in: the ARN's, else `task_region`.
    pub fn region<'a>(&'a self, task_region: &'a str) -> &'a str {
        match self {
            CaLocation::Secret { region, .. } => region.as_deref().unwrap_or(task_region),
            CaLocation::Parameter { region, .. } => region,
        }
    }

    /// The value as given in `tls_ca`.
    pub fn as_str(&self) -> &str {
        match self {
            CaLocation::Secret { id, .. } => id,
            CaLocation::Parameter { arn, .. } => arn,
        }
    }
}

/// `tls_ca` and `tls_validity`: `Some` when `tls_ca` is given; `tls_validity` without it is an
/// error (it would silently do nothing).
pub(super) fn parse(top: &mut Fields) -> Result<Option<TlsConfig>, Error> {
    let Some(ca) = top.take_nonempty(keys::TLS_CA.key)? else {
        if top.take(keys::TLS_VALIDITY.key).is_some() {
            return Err(Error::config(
                "tls_validity",
                "is set but tls_ca is not: TLS distribution is off without a cluster CA; set tls_ca to the Secrets Manager secret (name or ARN) or SSM SecureString parameter ARN that holds it, or remove tls_validity",
            ));
        }
        return Ok(None);
    };
    let ca = ca_location(&ca)?;
    let validity = top.duration_key(&keys::TLS_VALIDITY)?;
    Ok(Some(TlsConfig { ca, validity }))
}

/// `tls_validity` as a node's environment gives it (`ECS_PEERS_TLS_VALIDITY`'s text: `"10m"`,
/// `"600000"`; `None`: unset), read as the configuration reads the key: its type, its least
/// (60 s) and its default (24 h). For the in-process diagnosis, which is handed the text.
pub fn validity_from_text(text: Option<&str>) -> Result<Duration, Error> {
    let mut map = serde_json::Map::new();
    if let Some(text) = text {
        map.insert(
            keys::TLS_VALIDITY.key.into(),
            keys::TLS_VALIDITY.value_from_text(text),
        );
    }
    Fields::new(map, String::new(), super::Scope::Top).duration_key(&keys::TLS_VALIDITY)
}

const CA_FORMS: &str = "a Secrets Manager secret name (e.g. \"ecs-peers/cluster-ca\") or ARN (arn:aws:secretsmanager:eu-west-2:123456789012:secret:ecs-peers/cluster-ca-AbCdEf), or an SSM SecureString parameter ARN (arn:aws:ssm:eu-west-2:123456789012:parameter/ecs-peers/cluster-ca)";

/// Reads `tls_ca`: an ARN of Secrets Manager or SSM (its region and partition checked), or a
/// secret name (the characters Secrets Manager allows: letters, digits, `/_+=.@-`, at most 512).
pub(super) fn ca_location(s: &str) -> Result<CaLocation, Error> {
    let bad = |why: String| Error::config("tls_ca", format!("{s:?} {why}; expected {CA_FORMS}"));
    let Some(arn) = Arn::parse(s) else {
        if s.starts_with("arn:") {
            return Err(bad("is not a complete ARN".into()));
        }
        let allowed = |c: char| c.is_ascii_alphanumeric() || "/_+=.@-".contains(c);
        if s.len() > 512 || !s.chars().all(allowed) {
            return Err(bad(
                "is not a secret name (letters, digits and /_+=.@- only, at most 512)".into(),
            ));
        }
        return Ok(CaLocation::Secret {
            id: s.to_string(),
            region: None,
        });
    };
    if !partition::is_region(arn.region) {
        return Err(bad(format!("names no AWS region ({:?})", arn.region)));
    }
    let expected = partition::of_region(arn.region).id;
    if arn.partition != expected {
        return Err(bad(format!(
            "has partition {:?}, but {} is in partition {expected:?}",
            arn.partition, arn.region
        )));
    }
    let region = arn.region.to_string();
    match (arn.service, arn.resource) {
        ("secretsmanager", r) if r.strip_prefix("secret:").is_some_and(|n| !n.is_empty()) => {
            Ok(CaLocation::Secret {
                id: s.to_string(),
                region: Some(region),
            })
        }
        ("ssm", r) if r.strip_prefix("parameter/").is_some_and(|n| !n.is_empty()) => {
            Ok(CaLocation::Parameter {
                arn: s.to_string(),
                region,
            })
        }
        (service, _) => Err(bad(format!(
            "is not a secret or parameter ARN (service {service:?})"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(extra: serde_json::Value) -> Result<crate::Config, Error> {
        let mut v =
            json!({"node_basename": "app", "sources": [{"type": "ecs", "cluster": "auto"}]});
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        crate::Config::from_value(v)
    }

    #[test]
    fn validity_from_text_reads_the_variable_as_the_configuration_does() {
        let d = |t| validity_from_text(t).map_err(|e| e.to_string());
        assert_eq!(d(Some("10m")), Ok(Duration::from_secs(600)));
        assert_eq!(d(Some("600000")), Ok(Duration::from_secs(600)));
        assert_eq!(d(None), Ok(Duration::from_secs(86_400)));
        let short = d(Some("30s")).unwrap_err();
        assert!(
            short.contains("tls_validity") && short.contains("too short"),
            "{short}"
        );
        let bad = d(Some("ten")).unwrap_err();
        assert!(
            bad.contains("tls_validity") && bad.contains("not a duration"),
            "{bad}"
        );
    }

    #[test]
    fn issuing_needs_neither_sources_nor_a_node_name() {
        let c = crate::tls::config(json!({"tls_ca": "ca"})).unwrap();
        assert!(c.tls.is_some());
        assert!(matches!(&c.sources[..], [crate::SourceConfig::Ecs(e)] if e.is_auto()));
        let e = crate::tls::config(json!({"tls_ca": "ca", "polling_interval": 1})).unwrap_err();
        assert!(e.to_string().starts_with("polling_interval: "), "{e}");
    }

    #[test]
    fn tls_is_off_without_tls_ca() {
        assert_eq!(config(json!({})).unwrap().tls, None);
    }

    #[test]
    fn a_secret_name_is_read_in_the_tasks_region() {
        let tls = config(json!({"tls_ca": "ecs-peers/ca"}))
            .unwrap()
            .tls
            .unwrap();
        assert_eq!(
            tls.ca,
            CaLocation::Secret {
                id: "ecs-peers/ca".into(),
                region: None
            }
        );
        assert_eq!(tls.ca.region("eu-west-2"), "eu-west-2");
        assert_eq!(tls.validity, Duration::from_secs(24 * 3600));
    }

    #[test]
    fn arns_are_read_in_their_own_region() {
        let s = "arn:aws-cn:secretsmanager:cn-north-1:123456789012:secret:ca-AbCdEf";
        let tls = config(json!({"tls_ca": s, "tls_validity": "90s"}))
            .unwrap()
            .tls
            .unwrap();
        assert_eq!(tls.ca.region("eu-west-2"), "cn-north-1");
        assert_eq!(tls.validity, Duration::from_secs(90));
        let p = "arn:aws:ssm:us-east-1:123456789012:parameter/ecs-peers/ca";
        let tls = config(json!({"tls_ca": p})).unwrap().tls.unwrap();
        assert_eq!(
            tls.ca,
            CaLocation::Parameter {
                arn: p.into(),
                region: "us-east-1".into()
            }
        );
    }

    #[test]
    fn bad_values_name_the_key_and_the_forms() {
        for (value, why) in [
            ("arn:aws:ssm:eu-west-2", "is not a complete ARN"),
            (
                "arn:aws:ssm:eu-west-2:1:document/x",
                "is not a secret or parameter ARN",
            ),
            (
                "arn:aws:ssm:cn-north-1:1:parameter/x",
                "is in partition \"aws-cn\"",
            ),
            (
                "arn:aws:secretsmanager:eu-west:1:secret:x",
                "names no AWS region",
            ),
            ("my ca", "is not a secret name"),
        ] {
            let e = config(json!({"tls_ca": value})).unwrap_err().to_string();
            assert!(e.starts_with("tls_ca: "), "{e}");
            assert!(e.contains(why), "{value}: {e}");
            assert!(e.contains("parameter ARN"), "{e}");
        }
    }

    #[test]
    fn validity_has_a_floor_and_needs_a_ca() {
        let e = config(json!({"tls_ca": "ca", "tls_validity": "59s"})).unwrap_err();
        assert!(e.to_string().starts_with("tls_validity: "), "{e}");
        let e = config(json!({"tls_validity": "1h"})).unwrap_err();
        assert!(e.to_string().contains("tls_ca is not"), "{e}");
    }
}
