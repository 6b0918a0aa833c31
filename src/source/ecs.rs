//! ECS: ListTasks (RUNNING, paginated) → DescribeTasks (≤100 ARNs a call, only for tasks not
//! seen before) → one peer per task, from its ENI attachment's private IP.
//!
//! A task's IP never changes, so descriptions are cached by task ARN: a steady-state poll is one
//! ListTasks call per 100 tasks and no DescribeTasks. A task that leaves the RUNNING list is
//! described again on each poll until ECS reports it STOPPED; until then it stays a peer, marked
//! draining, so a node still handing off work is not cut off early.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use aws_sdk_ecs::types::{DesiredStatus, Task};

use crate::aws::CountCalls;
use crate::config::EcsSourceConfig;
use crate::error::{classify, ErrorKind, SourceError};
use crate::peer::{parse_ip, Found, SkipReason, Skipped, StartedAt};
use crate::source::ec2::{self, InstanceAddresses, OnInstance};
use crate::source::{PollFuture, Source};

/// DescribeTasks accepts at most this many ARNs; ListTasks returns at most this many a page.
pub(crate) const BATCH: usize = 100;
/// More pages than this means the listing is not converging (a looping token); fail loudly.
const MAX_PAGES: usize = 10_000;
/// The fix for a listing that does not end: AWS's own paging always ends.
const LOOPING_LIST_FIX: &str = "the endpoint's paging does not end, which AWS's does not do: check that endpoint_url (or a proxy in between) is AWS itself; the source keeps its last-known peers meanwhile";

/// What one described task means for discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// A peer at this address.
    Peer(Found),
    /// Not a peer, for good (filtered out): cache it.
    Skip(&'static str),
    /// Bridge or host mode: a peer at its container instance's address, once that is known.
    OnInstance(OnInstance),
    /// Matches the filters and runs, but cannot be a peer (reported per source): cache it.
    Unusable(SkipReason),
    /// Not a peer yet (still PROVISIONING/PENDING/ACTIVATING): describe it again next poll.
    NotYet(String),
    /// ECS reports it STOPPED.
    Stopped,
}

/// A source's filters as each described task is checked against them: worked out once per poll
/// (the service's name out of its ARN, the family and revision), not once per task.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TaskFilter<'a> {
    /// The service's name (`api` of `arn:aws:ecs:…:service/web/api`): a task of it has the
    /// group `service:api`.
    service: Option<&'a str>,
    family: Option<&'a str>,
    revision: Option<&'a str>,
    container: Option<&'a str>,
    /// The container port of Erlang distribution (`distribution_port`).
    dist_port: u16,
}

impl<'a> TaskFilter<'a> {
    pub(crate) fn new(cfg: &'a EcsSourceConfig, dist_port: u16) -> Self {
        TaskFilter {
            service: cfg
                .service
                .as_deref()
                .map(|s| s.rsplit_once('/').map_or(s, |(_, name)| name)),
            family: cfg.family_name(),
            revision: cfg.family_revision(),
            container: cfg.container.as_deref(),
            dist_port,
        }
    }
}

/// Decodes one DescribeTasks task against the source's filters; a task without an ENI address
/// is addressed by its container instance and the binding of the distribution port (see
/// [`super::ec2`]).
pub(crate) fn decode_task(task: &Task, filter: &TaskFilter<'_>) -> Decision {
    if let Some(want) = filter.service {
        let group = task.group().unwrap_or("");
        if group.strip_prefix("service:") != Some(want) {
            return Decision::Skip(
                "its group is not service:<service> (not a task of the configured service)",
            );
        }
    }
    if let Some(family) = filter.family {
        let (task_fam, task_rev) = task_family(task);
        if task_fam != Some(family) {
            return Decision::Skip("its task definition is of another family");
        }
        if filter.revision.is_some_and(|r| task_rev != Some(r)) {
            return Decision::Skip("its task definition is another revision of the family");
        }
    }
    if let Some(container) = filter.container {
        if !task
            .containers()
            .iter()
            .any(|c| c.name() == Some(container))
        {
            return Decision::Skip("it has no container of the configured name");
        }
    }
    let draining = match task.last_status() {
        Some("RUNNING") => false,
        Some("STOPPED") => return Decision::Stopped,
        // Described while leaving: still reachable, draining.
        Some("DEACTIVATING" | "STOPPING" | "DEPROVISIONING") => true,
        other => return Decision::NotYet(other.unwrap_or("no lastStatus").to_string()),
    };
    let eni = Eni::of(task);
    let address = eni
        .address
        .or_else(|| container_address(task, filter.container));
    match address {
        Some(ip) => Decision::Peer(Found {
            draining,
            ..found(task, ip, eni.private_dns_name)
        }),
        None => match on_instance(task, filter, eni.private_dns_name) {
            Decision::OnInstance(mut t) if draining => {
                t.found.draining = true;
                Decision::OnInstance(t)
            }
            // A leaving task that cannot be placed is as good as gone.
            _ if draining => Decision::Stopped,
            d => d,
        },
    }
}

/// The hook to the EC2 backend: a task with no address of its own.
fn on_instance(task: &Task, filter: &TaskFilter<'_>, dns: Option<&str>) -> Decision {
    let placeholder = found(task, IpAddr::from([0, 0, 0, 0]), dns);
    match ec2::decode(task, filter.container, filter.dist_port, placeholder) {
        Ok(t) => Decision::OnInstance(t),
        Err(why) => Decision::Unusable(why),
    }
}

fn found(task: &Task, ip: IpAddr, private_dns_name: Option<&str>) -> Found {
    Found {
        task_arn: task.task_arn().map(str::to_string),
        availability_zone: task.availability_zone().map(str::to_string),
        started_at: task.started_at().and_then(StartedAt::from_sdk),
        health: task.health_status().map(|h| h.as_str().to_string()),
        private_dns_name: private_dns_name.map(str::to_string),
        ..Found::at(ip)
    }
}

/// What a task's ENI attachment reports (never blindly `attachments[0]`: Service Connect and
/// other features add attachments of other types), read in one walk over its details.
struct Eni<'a> {
    /// Its address: the first IPv4 address (`privateIPv4Address`), else the first IPv6 one
    /// (`ipv6Address`), as [`task_address`] picks.
    address: Option<IpAddr>,
    /// Its `privateDnsName`, trimmed; `None` when absent or empty.
    private_dns_name: Option<&'a str>,
}

impl<'a> Eni<'a> {
    fn of(task: &'a Task) -> Eni<'a> {
        let mut address = AddressPick::default();
        // The first privateDnsName detail (AWS reports one per ENI), even when it is empty.
        let mut dns: Option<Option<&str>> = None;
        for kv in task
            .attachments()
            .iter()
            .filter(|a| a.r#type() == Some("ElasticNetworkInterface"))
            .flat_map(|a| a.details())
        {
            match kv.name() {
                Some("privateIPv4Address" | "ipv6Address") if !address.done() => {
                    if let Some(ip) = kv.value().and_then(parse_ip) {
                        address.offer(ip);
                    }
                }
                Some("privateDnsName") if dns.is_none() => {
                    dns = Some(kv.value().map(str::trim).filter(|v| !v.is_empty()));
                }
                _ => {}
            }
        }
        Eni {
            address: address.picked(),
            private_dns_name: dns.flatten(),
        }
    }
}

/// `arn:aws:ecs:r:a:task-definition/FAMILY:REV` → (`FAMILY`, `REV`).
fn task_family(task: &Task) -> (Option<&str>, Option<&str>) {
    let Some(name) = task
        .task_definition_arn()
        .and_then(|def| def.rsplit('/').next())
    else {
        return (None, None);
    };
    match name.rsplit_once(':') {
        Some((f, rev)) => (Some(f), Some(rev)),
        None => (Some(name), None),
    }
}

/// The one address a task (or a Cloud Map instance) is known by, among those AWS reports for it:
/// the first IPv4 address when it has one, else the first IPv6 address (an IPv6-only task).
///
/// IPv4 wins on a dual-stack task because Erlang distribution listens on IPv4 by default
/// (`inet_tcp`); an IPv6-only task's nodes run `-proto_dist inet6_tcp`. Every place that reads a
/// task's address (DescribeTasks' ENI details and container interfaces, the task metadata
/// endpoint, Cloud Map's `AWS_INSTANCE_IPV4`/`AWS_INSTANCE_IPV6`) picks with this rule, so a task
/// reading its own metadata finds the same address its peers see.
pub(crate) fn task_address(candidates: impl IntoIterator<Item = IpAddr>) -> Option<IpAddr> {
    let mut pick = AddressPick::default();
    for ip in candidates {
        pick.offer(ip);
        if pick.done() {
            break;
        }
    }
    pick.picked()
}

/// [`task_address`]'s rule, offered one candidate at a time (for a walk that reads other
/// details too).
#[derive(Default)]
struct AddressPick {
    v4: Option<IpAddr>,
    v6: Option<IpAddr>,
}

impl AddressPick {
    fn offer(&mut self, ip: IpAddr) {
        if self.v4.is_some() {
            return;
        }
        if ip.is_ipv4() {
            self.v4 = Some(ip);
        } else {
            self.v6 = self.v6.or(Some(ip));
        }
    }

    /// An IPv4 address was offered: nothing offered later can change the pick.
    fn done(&self) -> bool {
        self.v4.is_some()
    }

    fn picked(self) -> Option<IpAddr> {
        self.v4.or(self.v6)
    }
}

/// The address of a task with no ENI address: a container network interface's (the configured
/// container's first); [`task_address`] picks between IPv4 and IPv6.
fn container_address(task: &Task, container: Option<&str>) -> Option<IpAddr> {
    let mut containers: Vec<_> = task.containers().iter().collect();
    if let Some(name) = container {
        containers.sort_by_key(|c| c.name() != Some(name));
    }
    containers
        .iter()
        .flat_map(|c| c.network_interfaces())
        .find_map(|ni| {
            task_address(
                [ni.private_ipv4_address(), ni.ipv6_address()]
                    .into_iter()
                    .flatten()
                    .filter_map(parse_ip),
            )
        })
}

/// What the cache remembers of a task that was RUNNING when described.
#[derive(Debug, Clone)]
// Most entries are peers: boxing them would cost an allocation each for nothing.
#[allow(clippy::large_enum_variant)]
enum Known {
    Peer(Found),
    Skip,
    Unusable(SkipReason),
}

/// The ECS backend of one source.
pub(crate) struct EcsSource {
    client: aws_sdk_ecs::Client,
    cfg: EcsSourceConfig,
    draining_enabled: bool,
    calls: CountCalls,
    /// Task ARN → decoded description, for tasks that were RUNNING when described.
    known: HashMap<String, Known>,
    /// Bridge and host mode: container instance → EC2 instance → address, cached.
    instances: InstanceAddresses,
    /// The container port of Erlang distribution (`distribution_port`).
    dist_port: u16,
    /// The last successful poll's RUNNING tasks that could not be peers, by reason.
    skipped: Vec<Skipped>,
}

impl EcsSource {
    pub(crate) fn new(
        client: aws_sdk_ecs::Client,
        ec2: aws_sdk_ec2::Client,
        cfg: EcsSourceConfig,
        draining_enabled: bool,
        dist_port: u16,
        calls: CountCalls,
    ) -> Self {
        EcsSource {
            instances: InstanceAddresses::new(client.clone(), ec2, calls.clone()),
            client,
            cfg,
            draining_enabled,
            calls,
            known: HashMap::new(),
            dist_port,
            skipped: Vec::new(),
        }
    }

    /// Turns tasks addressed by their container instance into peers (or reasons they cannot
    /// be), looking up the instances not seen before.
    async fn place(
        &mut self,
        tasks: Vec<OnInstance>,
    ) -> Result<Vec<Result<Found, SkipReason>>, SourceError> {
        if tasks.is_empty() {
            return Ok(Vec::new());
        }
        let account = self.account().to_string();
        self.instances
            .learn(
                tasks.iter().map(|t| t.container_instance.as_str()),
                &self.cfg.cluster,
                &self.cfg.region,
                &account,
            )
            .await?;
        Ok(tasks.into_iter().map(|t| self.instances.place(t)).collect())
    }

    fn account(&self) -> &str {
        // arn:aws:ecs:REGION:ACCOUNT:cluster/NAME
        self.cfg
            .cluster
            .strip_prefix("arn:")
            .and_then(|r| r.split(':').nth(3))
            .unwrap_or("*")
    }

    fn cluster_name(&self) -> &str {
        self.cfg
            .cluster
            .rsplit('/')
            .next()
            .unwrap_or(&self.cfg.cluster)
    }

    fn not_found(&self) -> String {
        match &self.cfg.service {
            Some(s) => format!(
                "check that cluster {:?} exists in {} and has a service {:?} (names are case-sensitive; region must be the cluster's)",
                self.cluster_name(), self.cfg.region, s
            ),
            None => format!(
                "check that cluster {:?} exists in {} (names are case-sensitive; region must be the cluster's)",
                self.cluster_name(),
                self.cfg.region
            ),
        }
    }

    /// Every task ARN with desiredStatus RUNNING, all pages.
    async fn list_running(&self) -> Result<Vec<String>, SourceError> {
        // Scoping ListTasks by container-instance ARN does not work for Fargate tasks; the
        // ecs:cluster condition does.
        let resource = format!(
            "Resource \"*\" and Condition ArnEquals ecs:cluster \"arn:aws:ecs:{}:{}:cluster/{}\"",
            self.cfg.region,
            self.account(),
            self.cluster_name()
        );
        let mut arns = Vec::new();
        let mut token: Option<String> = None;
        let mut seen_tokens = HashSet::new();
        for _ in 0..MAX_PAGES {
            let mut req = self
                .client
                .list_tasks()
                .cluster(&self.cfg.cluster)
                .desired_status(DesiredStatus::Running)
                .max_results(BATCH as i32)
                .set_next_token(token.clone());
            req = match (&self.cfg.service, &self.cfg.family) {
                (Some(s), _) => req.service_name(s),
                // ListTasks' family filter takes a family only; a revision is checked on the
                // described tasks (decode_task).
                (None, Some(_)) => req.set_family(self.cfg.family_name().map(str::to_string)),
                (None, None) => req,
            };
            let page = req
                .customize()
                .interceptor(self.calls.clone())
                .send()
                .await
                .map_err(|e| classify(e, "ecs:ListTasks", &resource, &self.not_found()))?;
            arns.extend(page.task_arns().iter().cloned());
            match page.next_token() {
                Some(t) if !t.is_empty() => {
                    if !seen_tokens.insert(t.to_string()) {
                        return Err(SourceError::new(
                            ErrorKind::Malformed,
                            "ecs:ListTasks",
                            "ListTasks returned the same nextToken twice; the listing does not end",
                        )
                        .with_fix(LOOPING_LIST_FIX));
                    }
                    token = Some(t.to_string());
                }
                _ => return Ok(arns),
            }
        }
        Err(SourceError::new(
            ErrorKind::Malformed,
            "ecs:ListTasks",
            format!("ListTasks returned more than {MAX_PAGES} pages"),
        )
        .with_fix(LOOPING_LIST_FIX))
    }

    /// Describes tasks, at most [`BATCH`] a call. Tasks ECS does not know (failures, e.g.
    /// MISSING) are left out of the result.
    async fn describe(&self, arns: &[String]) -> Result<Vec<Task>, SourceError> {
        let resource = format!(
            "Resource \"arn:aws:ecs:{}:{}:task/{}/*\"",
            self.cfg.region,
            self.account(),
            self.cluster_name()
        );
        let mut tasks = Vec::with_capacity(arns.len());
        for batch in arns.chunks(BATCH) {
            let out = self
                .client
                .describe_tasks()
                .cluster(&self.cfg.cluster)
                .set_tasks(Some(batch.to_vec()))
                .customize()
                .interceptor(self.calls.clone())
                .send()
                .await
                .map_err(|e| classify(e, "ecs:DescribeTasks", &resource, &self.not_found()))?;
            for f in out.failures() {
                tracing::debug!(
                    arn = f.arn().unwrap_or("?"),
                    reason = f.reason().unwrap_or("?"),
                    "DescribeTasks could not describe a task; it is not a peer"
                );
            }
            tasks.extend(out.tasks().iter().cloned());
        }
        Ok(tasks)
    }

    async fn poll_inner(&mut self) -> Result<Vec<Found>, SourceError> {
        let running = self.list_running().await?;
        let listed: HashSet<&str> = running.iter().map(String::as_str).collect();

        // Tasks never described (or not RUNNING yet when last described).
        let unknown: Vec<String> = running
            .iter()
            .filter(|a| !self.known.contains_key(a.as_str()))
            .cloned()
            .collect();
        let mut decided = Vec::new();
        let mut on_instance = Vec::new();
        let described = self.describe(&unknown).await?;
        let filter = TaskFilter::new(&self.cfg, self.dist_port);
        for task in described {
            let Some(arn) = task.task_arn().map(str::to_string) else {
                continue;
            };
            match decode_task(&task, &filter) {
                Decision::OnInstance(t) if !t.found.draining => on_instance.push((arn, t)),
                d => decided.push((arn, d)),
            }
        }
        // Resolved before anything is cached: a failed look-up fails the poll as a whole.
        let (arns, tasks): (Vec<String>, Vec<OnInstance>) = on_instance.into_iter().unzip();
        for (arn, placed) in arns.into_iter().zip(self.place(tasks).await?) {
            decided.push((
                arn,
                match placed {
                    Ok(f) => Decision::Peer(f),
                    Err(why) => Decision::Unusable(why),
                },
            ));
        }
        for (arn, decision) in decided {
            match decision {
                Decision::Peer(f) if !f.draining => {
                    self.known.insert(arn, Known::Peer(f));
                }
                Decision::Peer(_) | Decision::Stopped | Decision::OnInstance(_) => {
                    tracing::debug!(task = %arn, "listed as RUNNING but already leaving; not a peer");
                }
                Decision::Unusable(why) => {
                    tracing::debug!(task = %arn, reason = ?why, "running task cannot be a peer: {}", why.message(self.dist_port));
                    self.known.insert(arn, Known::Unusable(why));
                }
                Decision::Skip(why) => {
                    tracing::debug!(task = %arn, "task is not a peer: {why}");
                    self.known.insert(arn, Known::Skip);
                }
                Decision::NotYet(status) => {
                    tracing::debug!(task = %arn, %status, "task is not running yet; will look again next poll");
                }
            }
        }

        // Tasks that were peers and have left the RUNNING list: draining until STOPPED.
        let departed: Vec<String> = self
            .known
            .iter()
            .filter(|(arn, k)| !listed.contains(arn.as_str()) && matches!(k, Known::Peer(_)))
            .map(|(arn, _)| arn.clone())
            .collect();
        self.known
            .retain(|arn, k| listed.contains(arn.as_str()) || matches!(k, Known::Peer(_)));
        let mut draining = Vec::new();
        if self.draining_enabled && !departed.is_empty() {
            let mut still_there = HashSet::new();
            let mut leaving = Vec::new();
            let described = self.describe(&departed).await?;
            let filter = TaskFilter::new(&self.cfg, self.dist_port);
            for task in described {
                let arn = task.task_arn().unwrap_or_default().to_string();
                match decode_task(&task, &filter) {
                    Decision::Peer(f) => {
                        still_there.insert(arn);
                        draining.push(Found {
                            draining: true,
                            ..f
                        });
                    }
                    Decision::OnInstance(t) => leaving.push((arn, t)),
                    _ => {}
                }
            }
            let (arns, tasks): (Vec<String>, Vec<OnInstance>) = leaving.into_iter().unzip();
            for (arn, placed) in arns.into_iter().zip(self.place(tasks).await?) {
                if let Ok(f) = placed {
                    still_there.insert(arn);
                    draining.push(Found {
                        draining: true,
                        ..f
                    });
                }
            }
            self.known
                .retain(|arn, _| listed.contains(arn.as_str()) || still_there.contains(arn));
        } else {
            self.known.retain(|arn, _| listed.contains(arn.as_str()));
        }

        let mut peers: Vec<Found> = Vec::with_capacity(running.len() + draining.len());
        peers.extend(running.iter().filter_map(|arn| match self.known.get(arn) {
            Some(Known::Peer(f)) => Some(f.clone()),
            _ => None,
        }));
        peers.extend(draining);

        // RUNNING tasks that cannot be peers, by reason (with one task to look at).
        let mut by_reason: std::collections::BTreeMap<SkipReason, (usize, &str)> =
            std::collections::BTreeMap::new();
        for arn in &running {
            if let Some(Known::Unusable(why)) = self.known.get(arn) {
                by_reason.entry(*why).or_insert((0, arn.as_str())).0 += 1;
            }
        }
        self.skipped = by_reason
            .into_iter()
            .map(|(reason, (tasks, example))| Skipped {
                reason,
                tasks,
                example_task: example.to_string(),
                message: reason.message(self.dist_port),
                fix: reason.fix(self.dist_port),
            })
            .collect();
        let in_use: HashSet<&str> = self
            .known
            .values()
            .filter_map(|k| match k {
                Known::Peer(f) => f.container_instance.as_deref(),
                _ => None,
            })
            .collect();
        self.instances.retain(&in_use);
        Ok(peers)
    }
}

impl Source for EcsSource {
    fn poll(&mut self) -> PollFuture<'_> {
        Box::pin(self.poll_inner())
    }

    fn skipped(&self) -> Vec<Skipped> {
        self.skipped.clone()
    }
}

/// `cluster = "auto"`: resolves this task's cluster from the task metadata endpoint on its first
/// successful poll (retrying on every poll until then, failing with a clear error), then polls
/// it as an ordinary ECS source.
pub(crate) struct AutoEcsSource {
    clients: std::sync::Arc<crate::aws::AwsClients>,
    cfg: EcsSourceConfig,
    draining: bool,
    dist_port: u16,
    calls: CountCalls,
    metadata_url: Option<String>,
    resolved: Option<(
        EcsSource,
        crate::metadata::TaskMetadata,
        crate::SourceConfig,
    )>,
}

impl AutoEcsSource {
    pub(crate) fn new(
        clients: std::sync::Arc<crate::aws::AwsClients>,
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

    async fn poll_inner(&mut self) -> Result<Vec<Found>, SourceError> {
        if self.resolved.is_none() {
            let md = crate::metadata::fetch(self.metadata_url.as_deref()).await?;
            let mut cfg = self.cfg.clone();
            cfg.resolve(&md);
            let resolved = crate::SourceConfig::Ecs(cfg.clone());
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
            return Ok(Vec::new());
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

    fn resolved(&self) -> Option<&crate::SourceConfig> {
        self.resolved.as_ref().map(|(_, _, cfg)| cfg)
    }

    fn skipped(&self) -> Vec<Skipped> {
        self.resolved
            .as_ref()
            .map(|(s, _, _)| s.skipped.clone())
            .unwrap_or_default()
    }
}

/// Decodes DescribeTasks tasks into a source's answer (for the benchmarks).
pub fn bench_answer(tasks: &[Task], filter: &EcsSourceConfig) -> crate::namespace::BenchAnswer {
    let mut found = Vec::with_capacity(tasks.len());
    let filter = TaskFilter::new(filter, crate::config::DEFAULT_DISTRIBUTION_PORT);
    for t in tasks {
        if let Decision::Peer(f) = decode_task(t, &filter) {
            found.push(f);
        }
    }
    crate::namespace::BenchAnswer(found)
}

/// Decodes DescribeTasks tasks into named peers exactly as a poll does: decoded, then applied
/// as a new answer of the source (fingerprinted and named) (for the benchmarks).
pub fn bench_decode(
    tasks: &[Task],
    filter: &EcsSourceConfig,
    naming: &crate::NodeNaming,
) -> Vec<std::sync::Arc<crate::Peer>> {
    let id = crate::SourceConfig::Ecs(filter.clone()).id();
    let mut peers = crate::namespace::SourcePeers::default();
    peers.apply(
        bench_answer(tasks, filter).0,
        naming,
        &crate::peer::Region::from(filter.region.as_str()),
        &id,
    );
    peers.into_peers()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ecs::types::{Attachment, Container, KeyValuePair, NetworkInterface};

    fn cfg() -> EcsSourceConfig {
        EcsSourceConfig {
            region: "eu-west-2".into(),
            cluster: "web".into(),
            service: None,
            family: None,
            container: None,
        }
    }

    fn kv(n: &str, v: &str) -> KeyValuePair {
        KeyValuePair::builder().name(n).value(v).build()
    }

    fn eni(ip: &str) -> Attachment {
        Attachment::builder()
            .r#type("ElasticNetworkInterface")
            .status("ATTACHED")
            .details(kv("subnetId", "subnet-1"))
            .details(kv("privateIPv4Address", ip))
            .build()
    }

    fn task(status: &str) -> aws_sdk_ecs::types::builders::TaskBuilder {
        Task::builder()
            .task_arn("arn:aws:ecs:eu-west-2:1:task/web/abc")
            .last_status(status)
            .group("service:api")
            .task_definition_arn("arn:aws:ecs:eu-west-2:1:task-definition/api:7")
            .availability_zone("eu-west-2a")
    }

    fn ip_of(d: Decision) -> String {
        match d {
            Decision::Peer(f) => f.ip.to_string(),
            other => panic!("not a peer: {other:?}"),
        }
    }

    #[test]
    fn uses_the_eni_attachment_not_the_first_one() {
        let sc = Attachment::builder()
            .r#type("ServiceConnect")
            .details(kv("privateIPv4Address", "192.0.2.1"))
            .build();
        let t = task("RUNNING")
            .attachments(sc)
            .attachments(eni("10.0.1.5"))
            .build();
        assert_eq!(
            ip_of(decode_task(&t, &TaskFilter::new(&cfg(), 4370))),
            "10.0.1.5"
        );
    }

    #[test]
    fn falls_back_to_the_named_containers_interface() {
        let side = Container::builder()
            .name("envoy")
            .network_interfaces(
                NetworkInterface::builder()
                    .private_ipv4_address("10.0.9.9")
                    .build(),
            )
            .build();
        let app = Container::builder()
            .name("app")
            .network_interfaces(
                NetworkInterface::builder()
                    .private_ipv4_address("10.0.1.6")
                    .build(),
            )
            .build();
        let t = task("RUNNING").containers(side).containers(app).build();
        let mut c = cfg();
        c.container = Some("app".into());
        assert_eq!(
            ip_of(decode_task(&t, &TaskFilter::new(&c, 4370))),
            "10.0.1.6"
        );
    }

    #[test]
    fn records_az_start_and_health() {
        let t = task("RUNNING")
            .attachments(eni("10.0.1.5"))
            .started_at(aws_smithy_types::DateTime::from_secs(1_700_000_000))
            .health_status(aws_sdk_ecs::types::HealthStatus::Healthy)
            .build();
        let Decision::Peer(f) = decode_task(&t, &TaskFilter::new(&cfg(), 4370)) else {
            panic!()
        };
        assert_eq!(f.availability_zone.as_deref(), Some("eu-west-2a"));
        assert_eq!(
            f.started_at.map(|t| t.to_string()).as_deref(),
            Some("2023-11-14T22:13:20Z")
        );
        assert_eq!(f.health.as_deref(), Some("HEALTHY"));
        assert_eq!(
            f.task_arn.as_deref(),
            Some("arn:aws:ecs:eu-west-2:1:task/web/abc")
        );
        assert!(!f.draining);
    }

    #[test]
    fn filters_by_service_group_family_and_container() {
        let t = task("RUNNING").attachments(eni("10.0.1.5")).build();
        let mut c = cfg();
        c.service = Some("arn:aws:ecs:eu-west-2:1:service/web/api".into());
        assert!(matches!(
            decode_task(&t, &TaskFilter::new(&c, 4370)),
            Decision::Peer(_)
        ));
        c.service = Some("worker".into());
        assert!(matches!(
            decode_task(&t, &TaskFilter::new(&c, 4370)),
            Decision::Skip(_)
        ));
        let mut c = cfg();
        c.family = Some("api".into());
        assert!(matches!(
            decode_task(&t, &TaskFilter::new(&c, 4370)),
            Decision::Peer(_)
        ));
        c.family = Some("batch".into());
        assert!(matches!(
            decode_task(&t, &TaskFilter::new(&c, 4370)),
            Decision::Skip(_)
        ));
        let mut c = cfg();
        c.container = Some("app".into());
        assert!(matches!(
            decode_task(&t, &TaskFilter::new(&c, 4370)),
            Decision::Skip(_)
        ));
    }

    #[test]
    fn statuses_decide_peer_not_yet_draining_or_stopped() {
        let pending = task("PROVISIONING").build();
        assert_eq!(
            decode_task(&pending, &TaskFilter::new(&cfg(), 4370)),
            Decision::NotYet("PROVISIONING".into())
        );
        let stopping = task("DEACTIVATING").attachments(eni("10.0.1.5")).build();
        let Decision::Peer(f) = decode_task(&stopping, &TaskFilter::new(&cfg(), 4370)) else {
            panic!()
        };
        assert!(f.draining);
        let stopped = task("STOPPED").attachments(eni("10.0.1.5")).build();
        assert_eq!(
            decode_task(&stopped, &TaskFilter::new(&cfg(), 4370)),
            Decision::Stopped
        );
        let no_ip = task("RUNNING").build();
        assert_eq!(
            decode_task(&no_ip, &TaskFilter::new(&cfg(), 4370)),
            Decision::Unusable(SkipReason::NoAddress)
        );
    }

    #[test]
    fn ipv6_only_enis_are_used() {
        let a = Attachment::builder()
            .r#type("ElasticNetworkInterface")
            .details(kv("ipv6Address", "2001:db8::5"))
            .build();
        let t = task("RUNNING").attachments(a).build();
        assert_eq!(
            ip_of(decode_task(&t, &TaskFilter::new(&cfg(), 4370))),
            "2001:db8::5"
        );
    }

    /// A task finds itself among its peers: the address DescribeTasks gives a peer and the one
    /// the task's own metadata gives it are chosen by one rule, IPv6-only or dual-stack.
    #[test]
    fn a_task_and_its_metadata_agree_on_its_address() {
        let metadata = |v4: &str, v6: &str| {
            crate::metadata::parse(&format!(
                r#"{{"Cluster": "web", "TaskARN": "arn:aws:ecs:eu-west-2:1:task/web/abc",
                    "Containers": [{{"Networks": [{{"NetworkMode": "awsvpc", "IPv4Addresses": [{v4}], "IPv6Addresses": [{v6}]}}]}}]}}"#
            ))
            .unwrap()
            .private_ip
            .map(|ip| ip.to_string())
        };
        let v6_only = Attachment::builder()
            .r#type("ElasticNetworkInterface")
            .details(kv("subnetId", "subnet-1"))
            .details(kv("ipv6Address", "2001:db8::5"))
            .build();
        let t = task("RUNNING").attachments(v6_only).build();
        assert_eq!(
            Some(ip_of(decode_task(&t, &TaskFilter::new(&cfg(), 4370)))),
            metadata("", r#""2001:db8::5""#)
        );
        // Dual stack, IPv6 listed first by AWS: IPv4 in both places.
        let dual = Attachment::builder()
            .r#type("ElasticNetworkInterface")
            .details(kv("ipv6Address", "2001:db8::5"))
            .details(kv("privateIPv4Address", "10.0.1.5"))
            .build();
        let t = task("RUNNING").attachments(dual).build();
        assert_eq!(
            ip_of(decode_task(&t, &TaskFilter::new(&cfg(), 4370))),
            "10.0.1.5"
        );
        assert_eq!(
            metadata(r#""10.0.1.5""#, r#""2001:db8::5""#).as_deref(),
            Some("10.0.1.5")
        );
        // A container interface with only an IPv6 address.
        let c = Container::builder()
            .name("app")
            .network_interfaces(
                NetworkInterface::builder()
                    .ipv6_address("2001:db8::6")
                    .build(),
            )
            .build();
        let t = task("RUNNING").containers(c).build();
        assert_eq!(
            ip_of(decode_task(&t, &TaskFilter::new(&cfg(), 4370))),
            "2001:db8::6"
        );
    }

    proptest::proptest! {
        #[test]
        fn started_at_is_kept_exactly_when_the_sdk_can_write_it(
            // Years -9999 to 9999 and beyond (the SDK refuses what is not 1 to 9999), and
            // times with and without a fraction of a second.
            secs in proptest::prop_oneof![
                -400_000_000_000i64..400_000_000_000,
                0i64..4_102_444_800,
                proptest::prelude::any::<i64>(),
            ],
            nanos in proptest::prop_oneof![
                proptest::strategy::Just(0u32),
                0u32..1_000_000_000,
                0u32..1_000,
            ],
        ) {
            let t = aws_smithy_types::DateTime::from_secs_and_nanos(secs, nanos);
            proptest::prop_assert_eq!(
                StartedAt::from_sdk(&t).map(|s| s.to_string()),
                t.fmt(aws_smithy_types::date_time::Format::DateTime).ok()
            );
        }
    }

    #[test]
    fn started_at_at_the_edges_of_what_rfc_3339_can_say() {
        for secs in [
            -62_135_596_800, // 0001-01-01T00:00:00Z
            -62_135_596_801,
            253_402_300_799, // 9999-12-31T23:59:59Z
            253_402_300_800,
            0,
            951_782_400, // 2000-02-29
            i64::MIN,
            i64::MAX,
        ] {
            let t = aws_smithy_types::DateTime::from_secs(secs);
            assert_eq!(
                StartedAt::from_sdk(&t).map(|s| s.to_string()),
                t.fmt(aws_smithy_types::date_time::Format::DateTime).ok(),
                "{secs}"
            );
        }
    }
}

/// The source's poll logic (cache, drain, re-describe) against hand-written ECS answers, for
/// the shapes the emulator cannot produce: PROVISIONING tasks and tasks that drain before they
/// stop. The answers go through the real SDK (its replay HTTP client), so decoding is real too.
#[cfg(test)]
mod replay_tests {
    use std::sync::Arc;

    use aws_sdk_ecs::config::{BehaviorVersion, Credentials, Region};
    use aws_smithy_http_client::test_util::{ReplayEvent, StaticReplayClient};
    use aws_smithy_types::body::SdkBody;

    use super::*;
    use crate::aws::CallCounter;

    fn task(id: &str, status: &str, ip: &str) -> String {
        format!(
            r#"{{"taskArn":"arn:aws:ecs:eu-west-2:1:task/web/{id}","lastStatus":"{status}","desiredStatus":"RUNNING","group":"service:api",
               "attachments":[{{"type":"ServiceConnect","details":[{{"name":"privateIPv4Address","value":"192.0.2.1"}}]}},
                              {{"type":"ElasticNetworkInterface","details":[{{"name":"privateIPv4Address","value":"{ip}"}}]}}]}}"#
        )
    }

    fn list(ids: &[&str]) -> String {
        let arns: Vec<String> = ids
            .iter()
            .map(|i| format!("\"arn:aws:ecs:eu-west-2:1:task/web/{i}\""))
            .collect();
        format!(r#"{{"taskArns":[{}]}}"#, arns.join(","))
    }

    fn describe(tasks: &[String]) -> String {
        format!(r#"{{"tasks":[{}],"failures":[]}}"#, tasks.join(","))
    }

    fn event(body: String) -> ReplayEvent {
        ReplayEvent::new(
            http::Request::builder()
                .uri("https://ecs.eu-west-2.amazonaws.com/")
                .body(SdkBody::empty())
                .unwrap(),
            http::Response::builder()
                .status(200)
                .header("content-type", "application/x-amz-json-1.1")
                .body(SdkBody::from(body))
                .unwrap(),
        )
    }

    /// An answer with any status, headers and body.
    fn answer(status: u16, headers: &[(&str, &str)], body: &str) -> ReplayEvent {
        let mut resp = http::Response::builder().status(status);
        for (k, v) in headers {
            resp = resp.header(*k, *v);
        }
        ReplayEvent::new(
            http::Request::builder()
                .uri("https://ecs.eu-west-2.amazonaws.com/")
                .body(SdkBody::empty())
                .unwrap(),
            resp.body(SdkBody::from(body.to_string())).unwrap(),
        )
    }

    fn source(events: Vec<ReplayEvent>) -> (EcsSource, StaticReplayClient) {
        let http = StaticReplayClient::new(events);
        let conf = aws_sdk_ecs::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("eu-west-2"))
            .credentials_provider(Credentials::new("a", "b", None, None, "test"))
            // One answer per call: a retried 5xx would consume the next scripted answer.
            .retry_config(aws_sdk_ecs::config::retry::RetryConfig::disabled())
            .http_client(http.clone())
            .build();
        let cfg = EcsSourceConfig {
            region: "eu-west-2".into(),
            cluster: "web".into(),
            service: Some("api".into()),
            family: None,
            container: None,
        };
        let ec2 = aws_sdk_ec2::Config::builder()
            .behavior_version(aws_sdk_ec2::config::BehaviorVersion::latest())
            .region(aws_sdk_ec2::config::Region::new("eu-west-2"))
            .credentials_provider(Credentials::new("a", "b", None, None, "test"))
            .retry_config(aws_sdk_ec2::config::retry::RetryConfig::disabled())
            .http_client(http.clone())
            .build();
        let src = EcsSource::new(
            aws_sdk_ecs::Client::from_conf(conf),
            aws_sdk_ec2::Client::from_conf(ec2),
            cfg,
            true,
            4370,
            CountCalls(Arc::new(CallCounter::default())),
        );
        (src, http)
    }

    fn view(found: &[Found]) -> Vec<(String, bool)> {
        let mut v: Vec<_> = found
            .iter()
            .map(|f| (f.ip.to_string(), f.draining))
            .collect();
        v.sort();
        v
    }

    fn bodies(http: &StaticReplayClient) -> Vec<String> {
        http.actual_requests()
            .map(|r| String::from_utf8_lossy(r.body().bytes().unwrap_or_default()).into_owned())
            .collect()
    }

    #[tokio::test]
    async fn provisioning_tasks_are_described_again_and_departed_tasks_drain_until_stopped() {
        let (mut src, http) = source(vec![
            // Poll 1: a, b RUNNING; c still PROVISIONING (no peer yet).
            event(list(&["a", "b", "c"])),
            event(describe(&[
                task("a", "RUNNING", "10.0.0.1"),
                task("b", "RUNNING", "10.0.0.2"),
                task("c", "PROVISIONING", "10.0.0.3"),
            ])),
            // Poll 2: b left the RUNNING list; c is described again and is RUNNING now.
            event(list(&["a", "c"])),
            event(describe(&[task("c", "RUNNING", "10.0.0.3")])),
            event(describe(&[task("b", "DEACTIVATING", "10.0.0.2")])),
            // Poll 3: b is still stopping: still a draining peer.
            event(list(&["a", "c"])),
            event(describe(&[task("b", "STOPPING", "10.0.0.2")])),
            // Poll 4: b is STOPPED: gone.
            event(list(&["a", "c"])),
            event(describe(&[task("b", "STOPPED", "10.0.0.2")])),
            // Poll 5: steady state: one ListTasks call and nothing else.
            event(list(&["a", "c"])),
        ]);
        let p1 = src.poll().await.unwrap();
        assert_eq!(
            view(&p1),
            [("10.0.0.1".into(), false), ("10.0.0.2".into(), false)]
        );
        let p2 = src.poll().await.unwrap();
        assert_eq!(
            view(&p2),
            [
                ("10.0.0.1".into(), false),
                ("10.0.0.2".into(), true),
                ("10.0.0.3".into(), false)
            ]
        );
        let p3 = src.poll().await.unwrap();
        assert_eq!(
            view(&p3),
            [
                ("10.0.0.1".into(), false),
                ("10.0.0.2".into(), true),
                ("10.0.0.3".into(), false)
            ]
        );
        let p4 = src.poll().await.unwrap();
        assert_eq!(
            view(&p4),
            [("10.0.0.1".into(), false), ("10.0.0.3".into(), false)]
        );
        let p5 = src.poll().await.unwrap();
        assert_eq!(view(&p5), view(&p4));

        let sent = bodies(&http);
        assert_eq!(sent.len(), 10, "one request per scripted answer, no more");
        assert!(
            sent[3].contains("task/web/c") && !sent[3].contains("task/web/a"),
            "only the unknown task is described again: {}",
            sent[3]
        );
        assert!(
            sent[4].contains("task/web/b"),
            "the departed task is described: {}",
            sent[4]
        );
        assert!(
            sent[0].contains(r#""desiredStatus":"RUNNING""#)
                && sent[0].contains(r#""serviceName":"api""#)
                && sent[0].contains(r#""maxResults":100"#),
            "{}",
            sent[0]
        );
    }

    #[tokio::test]
    async fn describe_batches_hold_at_most_100_arns_and_pages_are_followed() {
        let ids: Vec<String> = (0..250).map(|i| format!("t{i}")).collect();
        let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let page = |from: usize, to: usize, token: Option<&str>| {
            let mut l = list(&id_refs[from..to]);
            if let Some(t) = token {
                l = l.replacen('{', &format!(r#"{{"nextToken":"{t}","#), 1);
            }
            l
        };
        let tasks = |from: usize, to: usize| -> Vec<String> {
            (from..to)
                .map(|i| {
                    task(
                        &ids[i],
                        "RUNNING",
                        &format!("10.0.{}.{}", i / 200, i % 200 + 1),
                    )
                })
                .collect()
        };
        let (mut src, http) = source(vec![
            event(page(0, 100, Some("p2"))),
            event(page(100, 200, Some("p3"))),
            event(page(200, 250, None)),
            event(describe(&tasks(0, 100))),
            event(describe(&tasks(100, 200))),
            event(describe(&tasks(200, 250))),
        ]);
        let found = src.poll().await.unwrap();
        assert_eq!(found.len(), 250);
        let sent = bodies(&http);
        assert!(sent[1].contains(r#""nextToken":"p2""#) && sent[2].contains(r#""nextToken":"p3""#));
        for body in &sent[3..] {
            let n = body.matches("arn:aws:ecs:eu-west-2:1:task/web/").count();
            assert!(n <= BATCH, "a DescribeTasks call held {n} ARNs");
        }
    }

    /// What happened decides the kind, and the SDK's own error stays reachable as the cause.
    #[tokio::test]
    async fn errors_are_classified_by_what_happened_and_keep_the_sdk_error() {
        let json = [("content-type", "application/x-amz-json-1.1")];
        let (mut src, _) = source(vec![
            // ECS's documented client error.
            answer(
                400,
                &json,
                r#"{"__type":"ClientException","message":"The referenced cluster was inactive."}"#,
            ),
            // A code no SDK model knows, with a 4xx status.
            answer(
                400,
                &json,
                r#"{"__type":"BrandNewException","message":"something new"}"#,
            ),
            // The same unknown code with a 5xx status.
            answer(
                503,
                &json,
                r#"{"__type":"BrandNewException","message":"try later"}"#,
            ),
            // Not an AWS answer at all: a proxy's HTML 403, no error code.
            answer(
                403,
                &[("content-type", "text/html")],
                "<html><body><h1>403 Forbidden</h1>blocked by egress policy</body></html>",
            ),
        ]);
        let e = src.poll().await.unwrap_err();
        assert_eq!(
            (e.kind, e.action),
            (ErrorKind::Client, "ecs:ListTasks"),
            "{e}"
        );
        assert!(
            e.message
                .contains("ClientException: The referenced cluster was inactive"),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains("Fix: AWS refused ecs:ListTasks as a client error"),
            "{e}"
        );
        assert!(!e.kind.backs_off());
        let cause = std::error::Error::source(&e).expect("the SDK error is kept");
        assert!(
            cause
                .downcast_ref::<aws_smithy_runtime_api::client::result::SdkError<
                    aws_sdk_ecs::operation::list_tasks::ListTasksError,
                    aws_smithy_runtime_api::client::orchestrator::HttpResponse,
                >>()
                .is_some(),
            "cause is {cause:?}"
        );

        let e = src.poll().await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Client, "{e}");
        assert!(
            e.message.contains("BrandNewException: something new"),
            "{e}"
        );

        let e = src.poll().await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Service, "{e}");
        assert!(e.kind.backs_off());

        let e = src.poll().await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::AccessDenied, "{e}");
        assert!(
            e.message.contains("HTTP 403") && e.message.contains("blocked by egress policy"),
            "the remote's own reason is kept: {e}"
        );
    }

    #[tokio::test]
    async fn a_listing_that_repeats_its_token_fails_with_a_fix() {
        let page = r#"{"nextToken":"same","taskArns":["arn:aws:ecs:eu-west-2:1:task/web/a"]}"#;
        let (mut src, _) = source(vec![event(page.into()), event(page.into())]);
        let e = src.poll().await.unwrap_err();
        assert_eq!((e.kind, e.action), (ErrorKind::Malformed, "ecs:ListTasks"));
        assert!(e.message.contains("same nextToken twice"), "{e}");
        assert!(
            e.to_string()
                .contains("Fix: the endpoint's paging does not end"),
            "{e}"
        );
    }
}
