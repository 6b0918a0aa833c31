//! ECS source keys (`type = "ecs"`): parsing and validation of one source entry.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::fields::{validate_region, Fields};
use super::keys::Scope;
use crate::error::Error;
use crate::metadata::TaskMetadata;

/// The value of `cluster` (and of `region` beside it) that means "this task's own", from the
/// task metadata endpoint.
pub const AUTO: &str = "auto";

/// An ECS source: running tasks of one cluster, optionally of one service or family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcsSourceConfig {
    /// AWS region.
    pub region: String,
    /// Cluster name or ARN.
    pub cluster: String,
    /// Service name or ARN.
    pub service: Option<String>,
    /// Task definition family (`api`: every revision), or family and revision (`api:3`: the
    /// tasks of that revision only; ListTasks filters by family, the revision is checked on
    /// each described task's `taskDefinitionArn`).
    pub family: Option<String>,
    /// Container name.
    pub container: Option<String>,
    /// Task tags a task must carry, each with exactly this value (case-sensitive), to be a peer;
    /// empty: any task. Read with DescribeTasks' `include: ["TAGS"]` when a task is first
    /// described RUNNING. Keys and values within ECS's tag limits (1-128 and 0-256 characters,
    /// no `aws:` prefix), at most 50.
    pub tags: BTreeMap<String, String>,
}

impl EcsSourceConfig {
    /// This is `cluster = "auto"`, not resolved yet.
    pub fn is_auto(&self) -> bool {
        self.cluster == AUTO
    }

    /// The cluster's name (`web` of `web` or of `arn:aws:ecs:eu-west-2:1:cluster/web`).
    pub fn cluster_name(&self) -> &str {
        cluster_name(&self.cluster)
    }

    /// The family part of `family` (`api` of `api:3`): what ListTasks' `family` filter takes.
    pub fn family_name(&self) -> Option<&str> {
        let f = self.family.as_deref()?;
        Some(f.split_once(':').map_or(f, |(name, _)| name))
    }

    /// The revision part of `family = "FAMILY:REVISION"`, when one is given.
    pub fn family_revision(&self) -> Option<&str> {
        self.family.as_deref()?.split_once(':').map(|(_, rev)| rev)
    }

    /// Resolves `cluster = "auto"` from this task's metadata.
    pub(crate) fn resolve(&mut self, md: &TaskMetadata) {
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

/// The name of an ECS cluster given by name or by ARN (the part after the last `/`, which is
/// the whole of a name): what ECS ARNs and IAM resources write after `cluster/`.
pub(crate) fn cluster_name(cluster: &str) -> &str {
    cluster.rsplit('/').next().unwrap_or(cluster)
}

/// Parses the entry `sources[i]` (at `path`) whose `type` is `"ecs"`.
pub(super) fn parse(map: Map<String, Value>, path: String) -> Result<EcsSourceConfig, Error> {
    let mut f = Fields::new(map, path.clone(), Scope::Ecs);
    f.take("type");
    let cluster = f.require_string("cluster", "the ECS cluster name or ARN, or \"auto\"")?;
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
                format!(
                    "{r:?} does not match the cluster ARN's region {a:?}; drop region or fix it"
                ),
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
    if let Some(fam) = &family {
        validate_family(&format!("{path}.family"), fam)?;
    }
    let container = f.take_nonempty("container")?;
    let tags = super::tags::parse(&format!("{path}.tags"), f.take("tags"))?;
    f.finish()?;
    Ok(EcsSourceConfig {
        region,
        cluster,
        service,
        family,
        container,
        tags,
    })
}

/// Validates a cluster name or ARN; returns the ARN's region when it is an ARN. An ARN of any
/// partition is accepted when its partition is its region's.
fn parse_cluster(key: &str, c: &str) -> Result<Option<String>, Error> {
    if c.starts_with("arn:") {
        let arn = crate::partition::Arn::parse(c).filter(|a| {
            a.service == "ecs" && a.resource.strip_prefix("cluster/").is_some_and(valid_name)
        });
        let Some(arn) = arn else {
            return Err(Error::config(
                key,
                format!("{c:?} is not an ECS cluster ARN; expected arn:PARTITION:ecs:REGION:ACCOUNT:cluster/NAME (PARTITION aws, aws-cn, aws-us-gov, ...: the region's)"),
            ));
        };
        let region = validate_region(key, arn.region.to_string())?;
        let partition = crate::partition::of_region(&region).id;
        if crate::partition::known(&region).is_some() && arn.partition != partition {
            return Err(Error::config(
                key,
                format!(
                    "{c:?} names partition {:?}, but region {region} is in partition {partition:?}; expected {}",
                    arn.partition,
                    crate::partition::arn("ecs", &region, arn.account, arn.resource)
                ),
            ));
        }
        return Ok(Some(region));
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

/// `FAMILY` or `FAMILY:REVISION` as ECS names task definitions: a family of 1-255 letters,
/// digits, hyphens or underscores; a revision a positive integer.
fn validate_family(key: &str, family: &str) -> Result<(), Error> {
    let (name, rev) = match family.split_once(':') {
        Some((n, r)) => (n, Some(r)),
        None => (family, None),
    };
    let rev_ok = rev.is_none_or(|r| {
        !r.is_empty()
            && !r.starts_with('0')
            && r.len() <= 10
            && r.bytes().all(|b| b.is_ascii_digit())
    });
    if valid_name(name) && rev_ok {
        Ok(())
    } else {
        Err(Error::config(
            key,
            format!("{family:?} is not a task definition family; expected FAMILY (every revision) or FAMILY:REVISION (that revision only), e.g. \"api\" or \"api:3\", not an ARN"),
        ))
    }
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 255
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}
