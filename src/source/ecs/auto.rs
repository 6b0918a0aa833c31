//! `cluster = "auto"`: this task's own cluster, region and service, from the task metadata.

use std::net::IpAddr;
use std::sync::Arc;

use crate::aws::{AwsClients, CountCalls};
use crate::config::{Config, EcsSourceConfig, SourceConfig};
use crate::error::SourceError;
use crate::metadata::{self, TaskMetadata};
use crate::source::{Built, PollFuture, Polled, Source};

use super::{regions, EcsSource};

/// `cluster = "auto"`: resolves this task's cluster from the task metadata endpoint on its first
/// successful poll (retrying on every poll until then, failing with a clear error), then polls
/// it as an ordinary ECS source. With `regions`, it polls this task's region (as one region of
/// [`regions`]) and hands the poller the other regions' sources once
/// ([`Source::take_siblings`]).
pub(crate) struct AutoEcsSource {
    clients: Arc<AwsClients>,
    cfg: EcsSourceConfig,
    config: Config,
    calls: CountCalls,
    resolved: Option<(Box<dyn Source>, TaskMetadata, SourceConfig)>,
    siblings: Vec<Built>,
}

impl AutoEcsSource {
    pub(crate) fn new(
        clients: Arc<AwsClients>,
        cfg: EcsSourceConfig,
        calls: CountCalls,
        config: Config,
    ) -> Self {
        AutoEcsSource {
            clients,
            cfg,
            config,
            calls,
            resolved: None,
            siblings: Vec::new(),
        }
    }

    async fn poll_inner(&mut self) -> Result<Polled, SourceError> {
        if self.resolved.is_none() {
            let md = metadata::fetch(self.config.metadata_url.as_deref()).await?;
            let mut cfg = self.cfg.clone();
            cfg.resolve(&md);
            tracing::info!(source = %SourceConfig::Ecs(cfg.clone()).id(), region = %cfg.region, "cluster \"auto\" resolved from the task metadata");
            let (resolved, source): (SourceConfig, Box<dyn Source>) = if cfg.regions.is_some() {
                let mut built =
                    regions::build_with(&self.config, &cfg, &self.clients, self.calls.0.clone());
                let (own, source, _) = built.remove(0);
                self.siblings = built;
                (own, source)
            } else {
                let source = EcsSource::new(
                    self.clients.ecs(&cfg.region),
                    self.clients.ec2(&cfg.region),
                    cfg.clone(),
                    self.config.draining,
                    self.config.distribution_port,
                    self.calls.clone(),
                );
                (SourceConfig::Ecs(cfg), Box::new(source))
            };
            self.resolved = Some((source, md, resolved));
        }
        let Some((source, _, _)) = self.resolved.as_mut() else {
            // Resolved just above; nothing was found, so nothing was skipped either.
            return Ok(Polled {
                found: Vec::new(),
                skipped: Vec::new(),
                absent: None,
            });
        };
        source.poll().await
    }
}

impl Source for AutoEcsSource {
    fn poll(&mut self) -> PollFuture<'_> {
        Box::pin(self.poll_inner())
    }

    fn local_ip(&self) -> Option<IpAddr> {
        self.resolved.as_ref().and_then(|(_, md, _)| md.private_ip)
    }

    fn resolved(&self) -> Option<&SourceConfig> {
        self.resolved.as_ref().map(|(_, _, cfg)| cfg)
    }

    fn take_siblings(&mut self) -> Vec<Built> {
        std::mem::take(&mut self.siblings)
    }
}
