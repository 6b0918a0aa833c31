//! ECS source keys (`type = "ecs"`): parsing and validation of one source entry.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::arn::{self, EcsResource};
use super::fields::{show, validate_region, Fields};
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
    /// `regions`: the same cluster and service (or family) in other regions too, each polled
    /// as a source of its own region; `None`: `region` only.
    pub regions: Option<Regions>,
}

/// The value of an ECS source's `regions` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Regions {
    /// `"all"`: every region of the partition of the source's `region` (for `cluster =
    /// "auto"`, of this task's region) that the account has enabled, as ec2:DescribeRegions
    /// reports them (read again every `region_probe_interval`).
    All,
    /// These regions (and the source's own `region`), sorted, each listed once; all of one
    /// partition.
    List(Vec<String>),
}

impl Regions {
    /// `all`, or the regions joined by `,`: how the source id and the sharing key write it.
    pub fn as_text(&self) -> String {
        match self {
            Regions::All => "all".to_string(),
            Regions::List(l) => l.join(","),
        }
    }
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
///
/// `cluster`, `service` and `family` each take a name or an ARN as the console and the AWS CLI
/// show it (read by [`arn::read`], the one rule): `cluster` a cluster ARN, or a service ARN of
/// the long format (`service/CLUSTER/NAME`) as the whole source; `service` a service ARN of
/// either format; `family` a task definition ARN (that revision). Every other ARN is refused with
/// the form that works, and the regions of all ARNs given must agree with each other and with
/// `region`.
pub(super) fn parse(map: Map<String, Value>, path: String) -> Result<EcsSourceConfig, Error> {
    let mut f = Fields::new(map, path.clone(), Scope::Ecs);
    f.take("type");
    let cluster = f.require_string(
        "cluster",
        "the ECS cluster name or ARN, a service ARN, or \"auto\"",
    )?;
    let key = |k: &str| format!("{path}.{k}");
    // (key, region) of every ARN given, in key order.
    let mut arn_regions: Vec<(String, String)> = Vec::new();
    let (cluster, service_of_cluster) = if cluster == AUTO {
        (cluster, None)
    } else if cluster.starts_with("arn:") {
        let arn = arn::read(&key("cluster"), &cluster)?;
        let read = match arn.resource {
            EcsResource::Cluster(_) => (cluster.clone(), None),
            EcsResource::Service {
                cluster: Some(_),
                name,
            } => (
                arn.cluster_arn().unwrap_or_else(|| cluster.clone()),
                Some(name.to_string()),
            ),
            _ => {
                return Err(arn::refused(
                    &key("cluster"),
                    &arn,
                    "the cluster's name or ARN, or a service ARN (service/CLUSTER/NAME) for the whole source",
                ))
            }
        };
        arn_regions.push((key("cluster"), arn.region.clone()));
        read
    } else if arn::valid_name(&cluster) {
        (cluster, None)
    } else {
        return Err(Error::config(
            key("cluster"),
            format!("{cluster:?} is not a cluster name; expected 1-255 letters, digits, hyphens or underscores, or a cluster or service ARN"),
        ));
    };
    let region_given = f.take_string("region")?;
    let service = match f.take_nonempty("service")? {
        Some(s) if s.starts_with("arn:") => {
            let arn = arn::read(&key("service"), &s)?;
            let EcsResource::Service { cluster: of, name } = arn.resource else {
                return Err(arn::refused(
                    &key("service"),
                    &arn,
                    "the service's name or ARN",
                ));
            };
            if let Some(of) = of.filter(|of| cluster != AUTO && *of != cluster_name(&cluster)) {
                return Err(Error::config(
                    key("service"),
                    format!(
                        "{s:?} is a service of cluster {of:?}, but cluster is {:?}; give the service's own cluster, or give the service ARN alone as cluster",
                        cluster_name(&cluster)
                    ),
                ));
            }
            arn_regions.push((key("service"), arn.region.clone()));
            Some(name.to_string())
        }
        other => other,
    };
    let service = match (service, service_of_cluster) {
        (Some(s), Some(c)) if s != c => {
            return Err(Error::config(
                key("service"),
                format!("{s:?} is not the service {c:?} that cluster's service ARN names; drop service, or give cluster as the cluster's name or ARN"),
            ))
        }
        (s, c) => s.or(c),
    };
    let family = match f.take_nonempty("family")? {
        Some(fam) if fam.starts_with("arn:") => {
            let arn = arn::read(&key("family"), &fam)?;
            let EcsResource::TaskDefinition { family, revision } = arn.resource else {
                return Err(arn::refused(
                    &key("family"),
                    &arn,
                    "a task definition family (FAMILY, or FAMILY:REVISION) or a task definition ARN",
                ));
            };
            arn_regions.push((key("family"), arn.region.clone()));
            Some(format!("{family}:{revision}"))
        }
        Some(fam) => {
            validate_family(&key("family"), &fam)?;
            Some(fam)
        }
        None => None,
    };
    let container = f.take_nonempty("container")?;
    if let Some(c) = container.as_deref().filter(|c| c.starts_with("arn:")) {
        return Err(Error::config(
            key("container"),
            format!("{c:?} is an ARN, but container takes the container's name as the task definition writes it (containerDefinitions[].name, e.g. \"app\")"),
        ));
    }
    // Every ARN names its region; they must agree with each other and with `region`.
    let arn_region = match arn_regions.split_first() {
        None => None,
        Some(((first_key, first), rest)) => {
            if let Some((k, r)) = rest.iter().find(|(_, r)| r != first) {
                return Err(Error::config(
                    k.clone(),
                    format!("the ARN's region {r:?} is not the region {first:?} of the ARN in {first_key}; one source is one region"),
                ));
            }
            Some(first.clone())
        }
    };
    let regions_value = f.take("regions");
    // A list of regions names the partition, and its first region stands for `region`.
    let first_listed = match &regions_value {
        Some(Value::Array(items)) => items.first().and_then(Value::as_str).map(str::to_string),
        _ => None,
    };
    let region = match (region_given, arn_region) {
        (Some(r), Some(a)) if r != a => {
            return Err(Error::config(
                key("region"),
                format!(
                    "{r:?} does not match the region {a:?} of the ARN in {}; drop region or fix it",
                    arn_regions[0].0
                ),
            ))
        }
        (Some(r), _) => validate_region(&key("region"), r)?,
        (None, Some(a)) => a,
        (None, None) if cluster == AUTO => AUTO.to_string(),
        (None, None) => match first_listed {
            Some(r) => validate_region(&key("regions[0]"), r)?,
            None => {
                return Err(Error::config(
                    key("region"),
                    "is required (e.g. \"eu-west-2\"), unless cluster or service is an ARN, or regions lists the regions (with regions = \"all\", region names the partition)",
                ))
            }
        },
    };
    let tags = super::tags::parse(&key("tags"), f.take("tags"))?;
    let regions = parse_regions(&key("regions"), regions_value, &region)?;
    f.finish()?;
    Ok(EcsSourceConfig {
        region,
        cluster,
        service,
        family,
        container,
        tags,
        regions,
    })
}

/// `regions`: `"all"`, or a list of region names of one partition, the source's own `region`'s
/// (`region` is `"auto"` for `cluster = "auto"`: this task's region, known at run time, whose
/// partition the list must then be of).
fn parse_regions(key: &str, value: Option<Value>, region: &str) -> Result<Option<Regions>, Error> {
    let expected = "expected \"all\" (every region of the partition the account has enabled) or a list of region names, e.g. [\"eu-west-2\", \"us-west-2\"]";
    let list = match value {
        None => return Ok(None),
        Some(Value::String(s)) if s == "all" => return Ok(Some(Regions::All)),
        Some(Value::Array(items)) if !items.is_empty() => items,
        Some(Value::Array(_)) => {
            return Err(Error::config(
                key,
                format!("is an empty list; {expected}, or leave the key out"),
            ))
        }
        Some(other) => {
            return Err(Error::config(
                key,
                format!("{} is not a regions value; {expected}", show(&other)),
            ))
        }
    };
    let mut regions = Vec::with_capacity(list.len() + 1);
    for (i, item) in list.into_iter().enumerate() {
        let Value::String(r) = item else {
            return Err(Error::config(
                format!("{key}[{i}]"),
                format!("{} is not a region name; {expected}", show(&item)),
            ));
        };
        regions.push(validate_region(&format!("{key}[{i}]"), r)?);
    }
    if region != AUTO {
        regions.push(region.to_string());
    }
    let first = crate::partition::of_region(&regions[0]).id;
    if let Some(other) = regions
        .iter()
        .find(|r| crate::partition::of_region(r).id != first)
    {
        return Err(Error::config(
            key,
            format!("{other:?} is in partition {:?}, but {:?} is in {first:?}; one source's regions are of one partition (one set of credentials): give a source per partition", crate::partition::of_region(other).id, regions[0]),
        ));
    }
    regions.sort();
    regions.dedup();
    Ok(Some(Regions::List(regions)))
}

/// `FAMILY` or `FAMILY:REVISION` as ECS names task definitions: a family of 1-255 letters,
/// digits, hyphens or underscores; a revision a positive integer.
fn validate_family(key: &str, family: &str) -> Result<(), Error> {
    let (name, rev) = match family.split_once(':') {
        Some((n, r)) => (n, Some(r)),
        None => (family, None),
    };
    if arn::valid_name(name) && rev.is_none_or(arn::valid_revision) {
        Ok(())
    } else {
        Err(Error::config(
            key,
            format!("{family:?} is not a task definition family; expected FAMILY (every revision) or FAMILY:REVISION (that revision only), e.g. \"api\" or \"api:3\", or a task definition ARN"),
        ))
    }
}
