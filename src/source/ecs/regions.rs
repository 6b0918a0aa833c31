//! `regions`: one ECS source's cluster and service (or family) in many regions, each region
//! polled as a source of its own, and the regions where the stack is not (yet) there reported
//! *absent* instead of failing.
//!
//! How a `regions` source becomes sources: one per region of the list, or, for `"all"`, one per
//! region of the partition as the SDK's partition table lists it (`crate::partition`), made at
//! start (`cluster = "auto"`: once the task metadata names this task's region). Which of them
//! the account has enabled is ec2:DescribeRegions' answer (without `AllRegions`: only the
//! enabled regions of the partition the request goes to), asked in the home region (the
//! source's `region`, or this task's) and read again every `region_probe_interval`; the
//! regions share one [`RegionDirectory`], so that is one call per interval, not one per region.
//! ec2:DescribeRegions is in the EC2 crate the core already uses for bridge-mode instances;
//! account:ListRegions would say the same (with ENABLING and DISABLING apart) but needs the
//! Account SDK crate and `account:ListRegions`, a permission organisations guard more closely.
//!
//! A region is absent, with the reason, when DescribeRegions does not list it, or when its
//! ListTasks answers ClusterNotFoundException or ServiceNotFoundException: the stack does not
//! exist there. An existing service with no tasks is present (no peers): it is the stack,
//! scaled to zero. Any other failure is a failure of that region (the failure rule, its fix), so
//! an enabled region that refuses the credentials says so and is never taken for absent.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::aws::{AwsClients, CallCounter, CountCalls};
use crate::config::{Config, EcsSourceConfig, Regions, SourceConfig};
use crate::error::{classify, ErrorKind, SourceError};
use crate::partition;
use crate::source::{Built, PollFuture, Polled, Source};

use super::EcsSource;

/// The enabled regions of one partition, as ec2:DescribeRegions in the home region answers,
/// shared by the sources of one `regions` source and read at most once per probe interval (a
/// failure: at most once per polling interval).
pub(crate) struct RegionDirectory {
    home: String,
    ec2: aws_sdk_ec2::Client,
    calls: CountCalls,
    probe: Duration,
    retry: Duration,
    state: tokio::sync::Mutex<Directory>,
}

#[derive(Default)]
struct Directory {
    /// The last answer and when it was read.
    enabled: Option<(Instant, BTreeSet<String>)>,
    /// The last failure and when, while no newer answer came.
    failed: Option<(Instant, SourceError)>,
}

impl RegionDirectory {
    fn new(
        clients: &AwsClients,
        home: &str,
        calls: CountCalls,
        probe: Duration,
        retry: Duration,
    ) -> Self {
        RegionDirectory {
            home: home.to_string(),
            ec2: clients.ec2(home),
            calls,
            probe,
            retry,
            state: tokio::sync::Mutex::new(Directory::default()),
        }
    }

    /// Whether the account has enabled `region`: the last answer while it is younger than the
    /// probe interval, else asked again. A failed read keeps the last answer when there is one
    /// (asked again next time); without one it is the error.
    async fn is_enabled(&self, region: &str) -> Result<bool, SourceError> {
        let mut dir = self.state.lock().await;
        let now = Instant::now();
        let fresh = dir
            .enabled
            .as_ref()
            .is_some_and(|(at, _)| now.duration_since(*at) < self.probe);
        let failed_lately = dir
            .failed
            .as_ref()
            .is_some_and(|(at, _)| now.duration_since(*at) < self.retry);
        if !fresh && !failed_lately {
            match self.read().await {
                Ok(set) => {
                    dir.enabled = Some((now, set));
                    dir.failed = None;
                }
                Err(e) => {
                    tracing::debug!(region = %self.home, "ec2:DescribeRegions failed: {e}");
                    dir.failed = Some((now, e));
                }
            }
        }
        match (&dir.enabled, &dir.failed) {
            (Some((_, set)), _) => Ok(set.contains(region)),
            (None, Some((_, e))) => Err(e.clone()),
            (None, None) => Ok(true),
        }
    }

    /// ec2:DescribeRegions without AllRegions: the regions of the home region's partition that
    /// the account has enabled.
    async fn read(&self) -> Result<BTreeSet<String>, SourceError> {
        let out = self
            .ec2
            .describe_regions()
            .customize()
            .interceptor(self.calls.clone())
            .send()
            .await
            .map_err(|e| {
                classify(
                    e,
                    "ec2:DescribeRegions",
                    "Resource \"*\"",
                    "ec2:DescribeRegions has no resource to find; check endpoint_url",
                )
            })?;
        Ok(out
            .regions()
            .iter()
            .filter_map(|r| r.region_name().map(str::to_string))
            .collect())
    }
}

/// One region of a `regions` source: an ECS source of that region, absent where the account
/// has not enabled the region or the cluster or service does not exist.
pub(crate) struct RegionalEcsSource {
    inner: EcsSource,
    region: String,
    directory: Arc<RegionDirectory>,
}

impl RegionalEcsSource {
    async fn poll_inner(&mut self) -> Result<Polled, SourceError> {
        let enabled = match self.directory.is_enabled(&self.region).await {
            Ok(e) => e,
            // The home region is where this task runs (or the region configured): polled
            // whatever DescribeRegions said; the others cannot be told absent from failing.
            Err(_) if self.region == self.directory.home => true,
            Err(e) => return Err(e),
        };
        if !enabled {
            return Ok(Polled::absent(format!(
                "region {} is not enabled for this account (ec2:DescribeRegions in {} does not list it)",
                self.region, self.directory.home
            )));
        }
        match self.inner.poll_inner().await {
            Err(e) if e.kind == ErrorKind::NotFound => match stack_missing(&e) {
                Some(what) => Ok(Polled::absent(format!("{what} in {}", self.region))),
                None => Err(e),
            },
            other => other,
        }
    }
}

/// What ClusterNotFoundException or ServiceNotFoundException says is missing (read from the
/// code `classify` puts first in the message, so a failure received from another node reads
/// the same), `None` for any other error.
fn stack_missing(e: &SourceError) -> Option<&'static str> {
    let code = e.message.split([':', ' ']).next()?;
    match code {
        "ClusterNotFoundException" => Some("the cluster does not exist"),
        "ServiceNotFoundException" => Some("the service does not exist"),
        _ => None,
    }
}

impl Source for RegionalEcsSource {
    fn poll(&mut self) -> PollFuture<'_> {
        Box::pin(self.poll_inner())
    }
}

/// The sources of a `regions` ECS source whose cluster is named (`cfg.region` is the home
/// region, resolved for `cluster = "auto"`): the home region first, counting its calls and the
/// DescribeRegions calls into `home_calls`, then the other regions in order, each with a
/// counter of its own. Each is configured as a plain source of its region (`regions: None`),
/// the cluster by name outside the home region (an ARN names one region).
pub(crate) fn build_with(
    config: &Config,
    cfg: &EcsSourceConfig,
    clients: &AwsClients,
    home_calls: Arc<CallCounter>,
) -> Vec<Built> {
    let home = cfg.region.clone();
    let mut regions: Vec<String> = match &cfg.regions {
        Some(Regions::All) | None => partition::of_region(&home)
            .regions
            .iter()
            // Not the SDK's `*-global` endpoint aliases.
            .filter(|r| partition::is_region(r))
            .map(|r| r.to_string())
            .collect(),
        Some(Regions::List(l)) => l.clone(),
    };
    regions.retain(|r| *r != home);
    regions.insert(0, home.clone());
    let directory = Arc::new(RegionDirectory::new(
        clients,
        &home,
        CountCalls(home_calls.clone()),
        config.region_probe_interval,
        config.polling_interval,
    ));
    regions
        .into_iter()
        .map(|region| {
            let calls = if region == home {
                home_calls.clone()
            } else {
                Arc::new(CallCounter::default())
            };
            let mut one = cfg.clone();
            one.regions = None;
            if region != home {
                one.cluster = cfg.cluster_name().to_string();
            }
            one.region = region.clone();
            let backend = RegionalEcsSource {
                inner: EcsSource::new(
                    clients.ecs(&region),
                    clients.ec2(&region),
                    one.clone(),
                    config.draining,
                    config.distribution_port,
                    CountCalls(calls.clone()),
                ),
                region,
                directory: directory.clone(),
            };
            (
                SourceConfig::Ecs(one),
                Box::new(backend) as Box<dyn Source>,
                calls,
            )
        })
        .collect()
}

/// [`build_with`] with a new counter for the home region.
pub(crate) fn build(config: &Config, cfg: &EcsSourceConfig, clients: &AwsClients) -> Vec<Built> {
    build_with(config, cfg, clients, Arc::new(CallCounter::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_cluster_and_service_not_found_mean_the_stack_is_missing() {
        let e = |m: &str| SourceError::new(ErrorKind::NotFound, "ecs:ListTasks", m);
        assert_eq!(
            stack_missing(&e("ClusterNotFoundException: Cluster not found.")),
            Some("the cluster does not exist")
        );
        assert_eq!(
            stack_missing(&e("ServiceNotFoundException (HTTP 400, no message)")),
            Some("the service does not exist")
        );
        assert_eq!(stack_missing(&e("ResourceNotFoundException: x")), None);
        assert_eq!(stack_missing(&e("HTTP 404: <html>")), None);
    }
}
