//! `cluster = "auto"`: this task's own cluster, region and service, from the task metadata.

use std::net::IpAddr;
use std::sync::Arc;

use crate::aws::{AwsClients, CountCalls};
use crate::config::{EcsSourceConfig, SourceConfig};
use crate::error::SourceError;
use crate::metadata::{self, TaskMetadata};
use crate::source::{PollFuture, Polled, Source};

use super::EcsSource;

/// `cluster = "auto"`: resolves this task's cluster from the task metadata endpoint on its first
/// successful poll (retrying on every poll until then, failing with a clear error), then polls
/// it as an ordinary ECS source.
pub(crate) struct AutoEcsSource {
    clients: Arc<AwsClients>,
    cfg: EcsSourceConfig,
    draining: bool,
    dist_port: u16,
    calls: CountCalls,
    metadata_url: Option<String>,
    resolved: Option<(EcsSource, TaskMetadata, SourceConfig)>,
}

impl AutoEcsSource {
    pub(crate) fn new(
        clients: Arc<AwsClients>,
        cfg: EcsSourceConfig,
        draining: bool,
        dist_port: u16,
        calls: CountCalls,
        metadata_url: Option<String>,
    ) -> Self {
        AutoEcsSource {
            clients,
            cfg,
            draining,
            dist_port,
            calls,
            metadata_url,
            resolved: None,
        }
    }

    async fn poll_inner(&mut self) -> Result<Polled, SourceError> {
        if self.resolved.is_none() {
            let md = metadata::fetch(self.metadata_url.as_deref()).await?;
            let mut cfg = self.cfg.clone();
            cfg.resolve(&md);
            let resolved = SourceConfig::Ecs(cfg.clone());
            tracing::info!(source = %resolved.id(), region = %cfg.region, "cluster \"auto\" resolved from the task metadata");
            let client = self.clients.ecs(&cfg.region);
            let ec2 = self.clients.ec2(&cfg.region);
            let source = EcsSource::new(
                client,
                ec2,
                cfg,
                self.draining,
                self.dist_port,
                self.calls.clone(),
            );
            self.resolved = Some((source, md, resolved));
        }
        let Some((source, _, _)) = self.resolved.as_mut() else {
            // Resolved just above; nothing was found, so nothing was skipped either.
            return Ok(Polled {
                found: Vec::new(),
                skipped: Vec::new(),
            });
        };
        source.poll_inner().await
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
}
