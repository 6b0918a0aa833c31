//! The one reading of an ARN a user pastes into a source's key: what it names, and, when the key
//! cannot take it, the form that works.
//!
//! ECS ARNs are `arn:PARTITION:ecs:REGION:ACCOUNT:RESOURCE`, where RESOURCE is
//! `cluster/NAME`, `service/CLUSTER/NAME` (the long format, the default since 2021) or
//! `service/NAME` (the old one), `task-definition/FAMILY:REVISION`, `task/CLUSTER/ID` (or
//! `task/ID`), `container-instance/CLUSTER/ID` (or `container-instance/ID`),
//! `task-set/CLUSTER/SERVICE/ID`, `container/CLUSTER/TASK/ID`, `capacity-provider/NAME`
//! (<https://docs.aws.amazon.com/AmazonECS/latest/developerguide/ecs-account-settings.html#ecs-resource-ids>,
//! <https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonelasticcontainerservice.html#amazonelasticcontainerservice-resources-for-iam-policies>).

use crate::error::Error;
use crate::partition::{self, Arn};

use super::fields::validate_region;

/// What an ECS ARN names, as far as a source's keys can use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EcsResource<'a> {
    /// `cluster/NAME`.
    Cluster(&'a str),
    /// `service/CLUSTER/NAME`, or `service/NAME` (old format: `cluster` is `None`).
    Service {
        cluster: Option<&'a str>,
        name: &'a str,
    },
    /// `task-definition/FAMILY:REVISION`.
    TaskDefinition { family: &'a str, revision: &'a str },
    /// Any other resource type (`task`, `container-instance`, `task-set`, `container`,
    /// `capacity-provider`, ...), with its cluster when the resource names one after its type.
    Other {
        kind: &'a str,
        cluster: Option<&'a str>,
    },
}

/// An ECS ARN read by [`read`]: its region (checked), account and resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct EcsArn<'a> {
    /// The ARN as given.
    pub(super) text: &'a str,
    /// Its region, a valid region name in the ARN's partition.
    pub(super) region: String,
    /// Its account (may be empty).
    pub(super) account: &'a str,
    /// What it names.
    pub(super) resource: EcsResource<'a>,
}

impl EcsArn<'_> {
    /// The ARN of the cluster this one names (`None` when it names none), in its region's
    /// partition and account.
    pub(super) fn cluster_arn(&self) -> Option<String> {
        let name = match self.resource {
            EcsResource::Cluster(c) => c,
            EcsResource::Service { cluster, .. } | EcsResource::Other { cluster, .. } => cluster?,
            EcsResource::TaskDefinition { .. } => return None,
        };
        Some(partition::arn(
            "ecs",
            &self.region,
            self.account,
            &format!("cluster/{name}"),
        ))
    }

    /// What it is, in words, for an error: `a task ARN`, `a service ARN`.
    pub(super) fn what(&self) -> String {
        match self.resource {
            EcsResource::Cluster(_) => "a cluster ARN".into(),
            EcsResource::Service { cluster: None, .. } => {
                "a service ARN in the old format (service/NAME, which names no cluster)".into()
            }
            EcsResource::Service { .. } => "a service ARN".into(),
            EcsResource::TaskDefinition { .. } => "a task definition ARN".into(),
            EcsResource::Other { kind, .. } => format!("an ECS {kind} ARN"),
        }
    }
}

/// Reads `s`, the value of `key`, as an ECS ARN of any resource type. Errors name the key: not an
/// ARN of ECS (with what it is instead), a region that is not one, or a partition that is not
/// the region's (with the ARN written right).
pub(super) fn read<'a>(key: &str, s: &'a str) -> Result<EcsArn<'a>, Error> {
    let expected = "expected an ECS ARN such as arn:aws:ecs:REGION:ACCOUNT:cluster/NAME or arn:aws:ecs:REGION:ACCOUNT:service/CLUSTER/NAME (PARTITION aws, aws-cn, aws-us-gov, ...: the region's)";
    let Some(arn) = Arn::parse(s) else {
        return Err(Error::config(
            key,
            format!("{s:?} is not an ARN; {expected}"),
        ));
    };
    if arn.service != "ecs" {
        let what = match arn.service {
            "servicediscovery" => "a Cloud Map ARN: a Cloud Map source (type \"cloudmap\") takes the namespace's and the service's names".to_string(),
            other => format!("an ARN of {other:?}, not of ECS"),
        };
        return Err(Error::config(key, format!("{s:?} is {what}; {expected}")));
    }
    let region = validate_region(key, arn.region.to_string())?;
    let partition_id = partition::of_region(&region).id;
    if partition::known(&region).is_some() && arn.partition != partition_id {
        return Err(Error::config(
            key,
            format!(
                "{s:?} names partition {:?}, but region {region} is in partition {partition_id:?}; expected {}",
                arn.partition,
                partition::arn("ecs", &region, arn.account, arn.resource)
            ),
        ));
    }
    let bad = |why: &str| Error::config(key, format!("{s:?} {why}; {expected}"));
    let (kind, rest) = arn
        .resource
        .split_once('/')
        .ok_or_else(|| bad("has no resource type (cluster/, service/, ...)"))?;
    let parts: Vec<&str> = rest.split('/').collect();
    let resource = match (kind, parts.as_slice()) {
        ("cluster", [name]) if valid_name(name) => EcsResource::Cluster(name),
        ("service", [name]) if valid_name(name) => EcsResource::Service {
            cluster: None,
            name,
        },
        ("service", [cluster, name]) if valid_name(cluster) && valid_name(name) => {
            EcsResource::Service {
                cluster: Some(cluster),
                name,
            }
        }
        ("task-definition", [fam_rev]) => match fam_rev.split_once(':') {
            Some((family, revision)) if valid_name(family) && valid_revision(revision) => {
                EcsResource::TaskDefinition { family, revision }
            }
            _ => {
                return Err(bad(
                    "is not a task definition ARN (task-definition/FAMILY:REVISION)",
                ))
            }
        },
        ("cluster" | "service", _) => {
            return Err(bad(&format!(
                "names no valid {kind} (names are 1-255 letters, digits, hyphens or underscores)"
            )))
        }
        // Resources that live in a cluster name it first in the long ARN format.
        ("task" | "container-instance" | "task-set" | "container", [cluster, _, ..])
            if valid_name(cluster) =>
        {
            EcsResource::Other {
                kind,
                cluster: Some(cluster),
            }
        }
        _ => EcsResource::Other {
            kind,
            cluster: None,
        },
    };
    Ok(EcsArn {
        text: s,
        region,
        account: arn.account,
        resource,
    })
}

/// The error for an ECS ARN in `key`, which cannot take it: what it is and the form that works.
/// `what_key_takes` says what the key takes (`the cluster's name or ARN`).
pub(super) fn refused(key: &str, arn: &EcsArn<'_>, what_key_takes: &str) -> Error {
    let instead = match arn.resource {
        EcsResource::Cluster(_) => format!("put it in cluster (cluster = {:?})", arn.text),
        EcsResource::Service {
            cluster: Some(c),
            name,
        } => format!(
            "give it as the whole source (cluster = {:?}, or --ecs {}), or as cluster = {c:?} and service = {name:?}",
            arn.text, arn.text
        ),
        EcsResource::Service {
            cluster: None,
            name,
        } => format!(
            "give cluster (the service's cluster, by name or ARN) and service = {:?} (or {name:?}); the new-format ARN arn:{}:ecs:{}:{}:service/CLUSTER/{name}, as the console and aws ecs list-services show it today, names both",
            arn.text,
            partition::of_region(&arn.region).id,
            arn.region,
            arn.account
        ),
        EcsResource::TaskDefinition { family, revision } => format!(
            "put it in family (family = \"{family}:{revision}\": that revision's tasks; family = \"{family}\": every revision's)"
        ),
        EcsResource::Other { .. } => {
            let cluster = match arn.cluster_arn() {
                Some(c) => format!("cluster = {c:?}"),
                None => "cluster = the cluster's name or ARN (arn:PARTITION:ecs:REGION:ACCOUNT:cluster/NAME)".into(),
            };
            format!(
                "ecs-peers finds a cluster's tasks itself: name the cluster ({cluster}), and narrow it by service or family if needed"
            )
        }
    };
    let name = key.rsplit('.').next().unwrap_or(key);
    Error::config(
        key,
        format!(
            "{:?} is {}, but {name} takes {what_key_takes}; {instead}",
            arn.text,
            arn.what()
        ),
    )
}

/// Refuses an ARN in a Cloud Map source's `namespace` or `service` key (`key`), with the form
/// that works: DiscoverInstances takes the namespace's and the service's *names*, while a Cloud
/// Map ARN names them by id (`namespace/ns-…`, `service/srv-…`), which only a call could turn
/// into a name
/// (<https://docs.aws.amazon.com/cloud-map/latest/api/API_DiscoverInstances.html>).
pub(super) fn cloudmap_name(key: &str, s: &str) -> Result<(), Error> {
    let Some(arn) = Arn::parse(s) else {
        return Ok(());
    };
    let name = key.rsplit('.').next().unwrap_or(key);
    let look_up = match arn.resource.split_once('/') {
        Some(("namespace", id)) => format!(
            "aws servicediscovery get-namespace --region {} --id {id} --query Namespace.Name",
            arn.region
        ),
        Some(("service", id)) => format!(
            "aws servicediscovery get-service --region {} --id {id} --query Service.Name",
            arn.region
        ),
        _ => "aws servicediscovery list-namespaces / list-services".to_string(),
    };
    Err(Error::config(
        key,
        format!("{s:?} is an ARN, but {name} takes the Cloud Map {name}'s name (as DiscoverInstances does; an ARN names it by id); find the name with: {look_up}"),
    ))
}

/// 1-255 letters, digits, hyphens or underscores: ECS's rule for cluster, service and task
/// definition family names.
pub(super) fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 255
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// A task definition revision: a positive integer without leading zeros.
pub(super) fn valid_revision(r: &str) -> bool {
    !r.is_empty() && !r.starts_with('0') && r.len() <= 10 && r.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use crate::config::{Config, SourceConfig};

    fn ecs(source: Value) -> Result<crate::config::EcsSourceConfig, String> {
        let mut source = source;
        source["type"] = json!("ecs");
        let c = Config::from_value(json!({"node_basename": "app", "sources": [source]}))
            .map_err(|e| e.to_string())?;
        match c.sources.into_iter().next() {
            Some(SourceConfig::Ecs(e)) => Ok(e),
            other => panic!("not an ECS source: {other:?}"),
        }
    }

    fn refused(source: Value) -> String {
        ecs(source.clone()).expect_err(&format!("{source} was accepted"))
    }

    #[test]
    fn a_service_arn_is_a_whole_source_in_either_format_and_key() {
        // The long format, as the console and `aws ecs list-services` show it, alone.
        let e =
            ecs(json!({"cluster": "arn:aws:ecs:eu-west-2:123456789012:service/web/api"})).unwrap();
        assert_eq!(e.region, "eu-west-2");
        assert_eq!(e.cluster, "arn:aws:ecs:eu-west-2:123456789012:cluster/web");
        assert_eq!(e.service.as_deref(), Some("api"));
        assert_eq!(
            SourceConfig::Ecs(e.clone()).id().as_str(),
            "ecs:eu-west-2/web/api"
        );
        // The same ARN in service, with the cluster by name and no region.
        let s = ecs(json!({"cluster": "web",
                           "service": "arn:aws:ecs:eu-west-2:123456789012:service/web/api"}))
        .unwrap();
        assert_eq!(
            (s.region.as_str(), s.service.as_deref()),
            ("eu-west-2", Some("api"))
        );
        // The old format names no cluster: fine in service beside a cluster.
        let old = ecs(json!({"cluster": "web",
                             "service": "arn:aws-cn:ecs:cn-north-1:1:service/api"}))
        .unwrap();
        assert_eq!(
            (old.region.as_str(), old.service.as_deref()),
            ("cn-north-1", Some("api"))
        );
        // Given twice, the same service is fine.
        assert!(ecs(
            json!({"cluster": "arn:aws:ecs:eu-west-2:1:service/web/api", "service": "api",
                           "region": "eu-west-2"})
        )
        .is_ok());
    }

    #[test]
    fn a_task_definition_arn_is_that_revision_in_family() {
        let e = ecs(json!({"cluster": "web",
                           "family": "arn:aws:ecs:eu-west-2:1:task-definition/api:7"}))
        .unwrap();
        assert_eq!(
            (e.region.as_str(), e.family.as_deref()),
            ("eu-west-2", Some("api:7"))
        );
    }

    #[test]
    fn every_other_arn_is_refused_with_the_form_that_works() {
        let cases = [
            // The old service format as the whole source: there is no cluster in it.
            (
                json!({"cluster": "arn:aws:ecs:eu-west-2:1:service/api"}),
                vec![
                    "sources[0].cluster: \"arn:aws:ecs:eu-west-2:1:service/api\" is a service ARN in the old format",
                    "give cluster (the service's cluster, by name or ARN) and service = \"arn:aws:ecs:eu-west-2:1:service/api\"",
                    "arn:aws:ecs:eu-west-2:1:service/CLUSTER/api",
                ],
            ),
            (
                json!({"cluster": "arn:aws:ecs:eu-west-2:1:task/web/0123456789abcdef"}),
                vec![
                    "sources[0].cluster: \"arn:aws:ecs:eu-west-2:1:task/web/0123456789abcdef\" is an ECS task ARN, but cluster takes",
                    "cluster = \"arn:aws:ecs:eu-west-2:1:cluster/web\"",
                ],
            ),
            (
                json!({"cluster": "arn:aws:ecs:eu-west-2:1:task-definition/api:3"}),
                vec!["is a task definition ARN", "family = \"api:3\""],
            ),
            (
                json!({"cluster": "web", "service": "arn:aws:ecs:eu-west-2:1:cluster/web"}),
                vec![
                    "sources[0].service: \"arn:aws:ecs:eu-west-2:1:cluster/web\" is a cluster ARN",
                    "put it in cluster",
                ],
            ),
            (
                json!({"cluster": "web", "region": "eu-west-2",
                       "family": "arn:aws:ecs:eu-west-2:1:service/web/api"}),
                vec![
                    "sources[0].family: \"arn:aws:ecs:eu-west-2:1:service/web/api\" is a service ARN",
                    "cluster = \"arn:aws:ecs:eu-west-2:1:service/web/api\"",
                ],
            ),
            (
                json!({"cluster": "web", "region": "eu-west-2",
                       "container": "arn:aws:ecs:eu-west-2:1:container/web/t/c"}),
                vec!["sources[0].container:", "containerDefinitions[].name"],
            ),
            (
                json!({"cluster": "arn:aws:servicediscovery:eu-west-2:1:namespace/ns-abc"}),
                vec!["is a Cloud Map ARN", "type \"cloudmap\""],
            ),
            (
                json!({"cluster": "arn:aws:ecs:eu-west-2:1:cluster/a b"}),
                vec!["names no valid cluster"],
            ),
            // Two ARNs that disagree: a service of another cluster, or in another region.
            (
                json!({"cluster": "db", "service": "arn:aws:ecs:eu-west-2:1:service/web/api"}),
                vec!["is a service of cluster \"web\", but cluster is \"db\""],
            ),
            (
                json!({"cluster": "arn:aws:ecs:eu-west-2:1:cluster/web",
                       "service": "arn:aws:ecs:us-east-1:1:service/web/api"}),
                vec!["sources[0].service: the ARN's region \"us-east-1\" is not the region \"eu-west-2\" of the ARN in sources[0].cluster"],
            ),
            (
                json!({"cluster": "arn:aws:ecs:eu-west-2:1:service/web/api", "service": "other"}),
                vec!["sources[0].service: \"other\" is not the service \"api\""],
            ),
        ];
        for (source, wanted) in cases {
            let e = refused(source.clone());
            for w in wanted {
                assert!(e.contains(w), "{source}:\n  {e}\nlacks\n  {w}");
            }
        }
    }

    #[test]
    fn a_cloud_map_arn_is_refused_naming_the_call_that_gives_the_name() {
        let cases = [
            (
                json!({"namespace": "arn:aws:servicediscovery:us-west-2:1:namespace/ns-abc", "service": "api"}),
                vec!["sources[0].namespace:", "takes the Cloud Map namespace's name",
                     "aws servicediscovery get-namespace --region us-west-2 --id ns-abc --query Namespace.Name"],
            ),
            (
                json!({"namespace": "internal", "service": "arn:aws:servicediscovery:us-west-2:1:service/srv-abc"}),
                vec!["sources[0].service:", "get-service --region us-west-2 --id srv-abc --query Service.Name"],
            ),
        ];
        for (mut source, wanted) in cases {
            source["type"] = json!("cloudmap");
            source["region"] = json!("us-west-2");
            let e =
                Config::from_value(json!({"node_basename": "app", "sources": [source.clone()]}))
                    .expect_err(&source.to_string())
                    .to_string();
            for w in wanted {
                assert!(e.contains(w), "{source}:\n  {e}\nlacks\n  {w}");
            }
        }
    }
}
