//! Sources: one file per backend, one small interface for all.
//!
//! A source answers one question — which peers does it see right now? — and either answers it
//! completely or fails. It never answers partly: a failed page fails the whole poll, so the
//! namespace keeps the source's last-known peers (see the poller). A complete answer is
//! [`Polled`]: the peers *and* what the source found but could not use, with the reason, so no
//! source can drop a task or an instance without saying so.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::aws::{AwsClients, CallCounter, CountCalls};
use crate::config::{Config, SourceConfig};
use crate::error::SourceError;
use crate::peer::{Found, Skipped};

pub(crate) mod cloudmap;
pub(crate) mod ecs;
#[cfg(test)]
pub(crate) mod fixed;

/// One complete answer of a source: every peer it found, and everything it found but could not
/// turn into a peer (RUNNING tasks, Cloud Map instances), counted by reason with the fix.
/// There is no default for `skipped`: a source that drops something says why, or says nothing
/// was dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Polled {
    pub found: Vec<Found>,
    pub skipped: Vec<Skipped>,
    /// The source is absent (a region of a `regions` source that the account has not enabled,
    /// or where the cluster or service does not exist), with the reason: a complete answer
    /// with no peers, which the poller asks again only every `region_probe_interval`, without a
    /// warning or a back-off. `None`: present.
    pub absent: Option<String>,
}

impl Polled {
    /// A complete answer: the source is absent, for `why`.
    pub(crate) fn absent(why: String) -> Polled {
        Polled {
            found: Vec::new(),
            skipped: Vec::new(),
            absent: Some(why),
        }
    }
}

/// A backend, the configuration it polls, and the counter of its API calls: what the poller
/// makes a slot of.
pub(crate) type Built = (SourceConfig, Box<dyn Source>, Arc<CallCounter>);

/// The future a poll returns.
pub(crate) type PollFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Polled, SourceError>> + Send + 'a>>;

/// A backend that can list the peers it sees.
pub(crate) trait Source: Send + 'static {
    /// One complete poll: every peer the source sees now and what it saw but could not use,
    /// or an error.
    fn poll(&mut self) -> PollFuture<'_>;

    /// This task's own IP, when the source learnt it (from the task metadata).
    fn local_ip(&self) -> Option<std::net::IpAddr> {
        None
    }

    /// The source as it is known once its placeholders are resolved (`cluster = "auto"`: this
    /// task's cluster, region and service, from the task metadata); `None` while unresolved or
    /// when nothing was a placeholder. The poller describes the source, its peers and this node
    /// by it from then on (id, region, and the `{region}` of node names).
    fn resolved(&self) -> Option<&SourceConfig> {
        None
    }

    /// Sources this one found it stands for besides itself once resolved (`cluster = "auto"`
    /// with `regions`: this task's cluster in the other regions), each taken once; the poller
    /// gives each a slot of its own.
    fn take_siblings(&mut self) -> Vec<Built> {
        Vec::new()
    }
}

/// Builds the backends of one configured source, each counting its API calls: one, or one per
/// region for an ECS source with `regions` (its cluster named; `cluster = "auto"` is one that
/// adds the other regions once resolved, [`Source::take_siblings`]).
pub(crate) fn build(
    config: &Config,
    source: &SourceConfig,
    clients: &Arc<AwsClients>,
) -> Vec<Built> {
    match source {
        SourceConfig::Ecs(e) if e.regions.is_some() && !e.is_auto() => {
            ecs::regions::build(config, e, clients)
        }
        _ => {
            let calls = Arc::new(CallCounter::default());
            let backend = build_one(config, source, clients, calls.clone());
            vec![(source.clone(), backend, calls)]
        }
    }
}

/// The backend of one source polled as configured.
fn build_one(
    config: &Config,
    source: &SourceConfig,
    clients: &Arc<AwsClients>,
    calls: Arc<CallCounter>,
) -> Box<dyn Source> {
    let calls = CountCalls(calls);
    match source {
        SourceConfig::Ecs(e) if e.is_auto() => Box::new(ecs::auto::AutoEcsSource::new(
            clients.clone(),
            e.clone(),
            calls,
            config.clone(),
        )),
        SourceConfig::Ecs(e) => Box::new(ecs::EcsSource::new(
            clients.ecs(&e.region),
            clients.ec2(&e.region),
            e.clone(),
            config.draining,
            config.distribution_port,
            calls,
        )),
        SourceConfig::CloudMap(c) => Box::new(cloudmap::CloudMapSource::new(
            clients.cloudmap(&c.region),
            c.clone(),
            config.distribution_port,
            calls,
        )),
    }
}
