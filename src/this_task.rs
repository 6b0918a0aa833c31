//! This task's own node name, by the rule every peer's name comes from: the name its peers give
//! it. A release computes it once at boot (`EcsPeers.Release`, called from rel/env.sh) to set
//! `RELEASE_NODE` before the VM starts, so `start`, `remote` and `rpc` agree with the fleet.
//!
//! The task metadata endpoint v4 names this task (its ARN, cluster and region); one
//! ecs:DescribeTasks of that ARN describes it as its peers see it, and it is decoded and named
//! exactly as a peer is: the ENI's address (IPv4, else IPv6) in awsvpc mode; in bridge or host
//! mode its EC2 instance's address (ecs:DescribeContainerInstances → ec2:DescribeInstances) and
//! `<basename>-<task id>`. Nothing about the address is read from the container itself, which in
//! bridge mode sees only Docker's network.

use std::net::IpAddr;

use crate::aws::{AwsClients, CallCounter, CountCalls};
use crate::config::{Config, EcsSourceConfig, SourceConfig};
use crate::error::{classify, ErrorKind, SourceError};
use crate::metadata::{self, TaskMetadata};
use crate::peer::Found;
use crate::source::ecs::decode::{decode_task, Decision, Filtered, TaskFilter};
use crate::source::ecs::host::InstanceAddresses;

/// This task as its peers name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThisTask {
    /// Its Erlang node name, e.g. `app@10.0.1.5` or `app-4e3c…@10.0.1.5` (bridge or host mode).
    pub node: String,
    /// The address in that name: the task's own (awsvpc) or its EC2 instance's.
    pub ip: IpAddr,
    /// The distribution port its peers dial when it is not the default one: the host port the
    /// container maps `distribution_port` to (bridge mode); `None` in awsvpc mode.
    pub port: Option<u16>,
    /// Its task ARN.
    pub task_arn: String,
    /// Its region (from the task ARN).
    pub region: String,
}

/// Names this task as its peers name it, from the task metadata endpoint v4
/// (`config.metadata_url`, else `ECS_CONTAINER_METADATA_URI_V4`) and one ecs:DescribeTasks call
/// (plus ecs:DescribeContainerInstances and ec2:DescribeInstances in bridge or host mode), made
/// with the config's `endpoint_url` and `max_attempts`. Names come from `config.node` (the
/// `node_basename` or `node_name` keys); the container filter, when set, is the first
/// `cluster: auto` ECS source's `container`. The task may still be starting (PENDING,
/// ACTIVATING): it is named as it will be once RUNNING.
///
/// # Errors
///
/// A [`SourceError`] naming the action and the fix: not in an ECS task, or the metadata
/// endpoint failing (`ecs:task-metadata`, see [`metadata::fetch`]); an AWS call refused or
/// failing (e.g. AccessDenied: grant ecs:DescribeTasks on the task); ECS not knowing this task;
/// a task that cannot be a peer (no address, no binding of the distribution port in bridge
/// mode); or EPMD naming (`node_names: "epmd"`), which names a node by what it registers, so it
/// cannot name itself before it starts.
pub async fn this_task(config: &Config) -> Result<ThisTask, SourceError> {
    let clients = AwsClients::load(config).await;
    let (found, md) = found(config, &clients).await?;
    name(found, md, config)
}

/// This task as its peers find it (before naming), with the task metadata that named it: what
/// [`this_task`] names, and what its TLS certificate (`crate::tls`) is issued for. The same
/// calls and errors as [`this_task`], except naming's.
pub(crate) async fn found(
    config: &Config,
    clients: &AwsClients,
) -> Result<(Found, TaskMetadata), SourceError> {
    let md = metadata::fetch(config.metadata_url.as_deref()).await?;
    let (ecs, ec2) = (clients.ecs(&md.region), clients.ec2(&md.region));
    let found = describe(&md, ecs, ec2, config).await?;
    Ok((found, md))
}

/// This task's `Found` once the task metadata is read, with the region's clients.
async fn describe(
    md: &TaskMetadata,
    ecs: aws_sdk_ecs::Client,
    ec2: aws_sdk_ec2::Client,
    config: &Config,
) -> Result<Found, SourceError> {
    const ACTION: &str = "ecs:DescribeTasks";
    let cluster = md.cluster.as_str();
    let cluster_name = crate::config::cluster_name(cluster);
    let account = crate::partition::account_or_any(&md.task_arn);
    let calls = CountCalls(std::sync::Arc::new(CallCounter::default()));
    let resource = format!(
        "Resource \"{}\"",
        crate::partition::arn(
            "ecs",
            &md.region,
            account,
            &format!("task/{cluster_name}/*")
        )
    );
    let not_found = format!(
        "check that this task's cluster {cluster_name:?} exists in {} (the task metadata names it)",
        md.region
    );
    let out = ecs
        .describe_tasks()
        .cluster(cluster)
        .tasks(&md.task_arn)
        .customize()
        .interceptor(calls.clone())
        .send()
        .await
        .map_err(|e| classify(e, ACTION, &resource, &not_found))?;
    let Some(mut task) = out
        .tasks()
        .iter()
        .find(|t| t.task_arn() == Some(md.task_arn.as_str()))
        .cloned()
    else {
        let reason = out
            .failures()
            .first()
            .and_then(|f| f.reason())
            .unwrap_or("no such task");
        return Err(SourceError::new(
            ErrorKind::NotFound,
            ACTION,
            format!("ECS does not know this task {} in cluster {cluster:?}: {reason}", md.task_arn),
        )
        .with_fix(format!("the task metadata endpoint and the AWS endpoint disagree: check that AWS calls go to {} (AWS_ENDPOINT_URL or endpoint_url, when set, must be that region's ECS)", md.region)));
    };
    // Its own containers start before ECS reports the task RUNNING; its peers name it from
    // the same description once it is.
    if matches!(
        task.last_status(),
        Some("PROVISIONING" | "PENDING" | "ACTIVATING") | None
    ) {
        task.last_status = Some("RUNNING".into());
    }
    let source = EcsSourceConfig {
        region: md.region.clone(),
        cluster: md.cluster.clone(),
        service: None,
        family: None,
        container: config.sources.iter().find_map(|s| match s {
            SourceConfig::Ecs(e) if e.is_auto() => e.container.clone(),
            _ => None,
        }),
        // Like service and family, tags choose which tasks are peers, not how a task is named:
        // this task gets the name its peers would give it whether or not it carries them.
        tags: std::collections::BTreeMap::new(),
        // This task's own region only.
        regions: None,
    };
    let filter = TaskFilter::new(&source, config.distribution_port);
    let found = match decode_task(&task, &filter) {
        Decision::Peer(found) => found,
        Decision::OnInstance(on) => {
            let mut instances = InstanceAddresses::new(ecs, ec2, calls);
            instances
                .learn(
                    [on.container_instance.as_str()],
                    cluster,
                    &md.region,
                    account,
                )
                .await?;
            instances
                .place(on)
                .map_err(|why| cannot_be_a_peer(why, &md.task_arn, config.distribution_port))?
        }
        Decision::Unusable(why) => {
            return Err(cannot_be_a_peer(
                why,
                &md.task_arn,
                config.distribution_port,
            ))
        }
        Decision::Filtered(filtered) => {
            let (why, fix) = match filtered {
                Filtered::Revision(_) => (
                    "it runs another revision of the family than the source's family names",
                    "set family to the family alone, or to the revision this task runs",
                ),
                Filtered::Container(_) => (
                    "it has no container of the configured name",
                    "set container to the name of the container that runs the release",
                ),
                Filtered::Tags(_) => (
                    "it does not carry the source's tags with their values",
                    "tag the task as the source's tags say (propagateTags on the service), or change the source's tags",
                ),
            };
            return Err(SourceError::new(
                ErrorKind::InvalidRequest,
                ACTION,
                format!("this task {} is not a peer: {why}", md.task_arn),
            )
            .with_fix(fix));
        }
        Decision::Skip(why) => {
            return Err(SourceError::new(
                ErrorKind::InvalidRequest,
                ACTION,
                format!("this task {} is not a peer: {why}", md.task_arn),
            )
            .with_fix("set container to the name of the container that runs the release"))
        }
        Decision::NotYet(_) | Decision::Stopped => {
            return Err(SourceError::new(
                ErrorKind::InvalidRequest,
                ACTION,
                format!(
                    "this task {} is {} in ECS",
                    md.task_arn,
                    task.last_status().unwrap_or("in no status")
                ),
            )
            .with_fix(
                "a stopping task is not given a node name; ECS starts a new task in its place",
            ))
        }
    };
    Ok(found)
}

/// Names this task, found as its peers find it, by the node rule.
fn name(found: Found, md: TaskMetadata, config: &Config) -> Result<ThisTask, SourceError> {
    let mut node = String::new();
    if !config.node.render_found_into(&found, &md.region, &mut node) {
        return Err(SourceError::new(
            ErrorKind::InvalidRequest,
            "node-name",
            format!("{:?} names no node for this task {}", config.node, md.task_arn),
        )
        .with_fix("name this node with node_basename (ECS_PEERS_NODE_BASENAME), or set RELEASE_NODE yourself: EPMD naming, and a node_name template with a placeholder this task has no value for, cannot name a node before it starts"));
    }
    Ok(ThisTask {
        node,
        ip: found.ip,
        port: found.port,
        task_arn: md.task_arn,
        region: md.region,
    })
}

/// A task that its peers leave out (no address, no binding of the distribution port), as an
/// error with the same message and fix the source reports for it.
fn cannot_be_a_peer(why: crate::peer::SkipReason, task_arn: &str, dist_port: u16) -> SourceError {
    SourceError::new(
        ErrorKind::InvalidRequest,
        "ecs:DescribeTasks",
        format!("this task {task_arn}: {}", why.message(dist_port)),
    )
    .with_fix(why.fix(dist_port))
}
