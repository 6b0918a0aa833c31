//! ECS: ListTasks (RUNNING, paginated) → DescribeTasks (≤100 ARNs a call, only for tasks not
//! seen before) → one peer per task, from its ENI attachment's private IP.
//!
//! A task's IP never changes, so descriptions are cached by task ARN: a steady-state poll is one
//! ListTasks call per 100 tasks and no DescribeTasks. A task that leaves the RUNNING list is
//! described again on each poll until ECS reports it STOPPED; until then it stays a peer, marked
//! draining, so a node still handing off work is not cut off early.
//!
//! `tags`: a task's tags come with its first description (DescribeTasks `include: ["TAGS"]`), so
//! a tag filter costs no call. Tags, unlike the address, can change on a running task
//! (TagResource, UntagResource); the cache keeps what a task's tags were when it was first
//! described RUNNING, so a change is seen when the source starts again, not while the task stays
//! listed. A peer that leaves is described without tags and drains until STOPPED whatever its
//! tags say by then.
//!
//! What a described task means (filters, status, address) is [`decode`]'s; a task without an
//! address of its own (bridge or host mode) is placed on its container instance by [`host`];
//! `cluster = "auto"` is [`auto`]'s.

use std::collections::{BTreeMap, HashMap, HashSet};

use aws_sdk_ecs::types::{DesiredStatus, Task, TaskField};

use crate::aws::CountCalls;
use crate::config::EcsSourceConfig;
use crate::error::{classify, ErrorKind, SourceError};
use crate::partition;
use crate::peer::{count_skips, Found, SkipReason, Skipped};
use crate::source::{PollFuture, Polled, Source};

pub(crate) mod auto;
pub(crate) mod decode;
pub(crate) mod host;
pub(crate) mod regions;

use decode::{decode_task, Decision, Filtered, TaskFilter};
use host::{InstanceAddresses, OnInstance};

/// DescribeTasks accepts at most this many ARNs; ListTasks returns at most this many a page.
const BATCH: usize = 100;
/// More pages than this means the listing is not converging (a looping token); fail loudly.
const MAX_PAGES: usize = 10_000;
/// The fix for a listing that does not end: AWS's own paging always ends.
const LOOPING_LIST_FIX: &str = "the endpoint's paging does not end, which AWS's does not do: check that endpoint_url (or a proxy in between) is AWS itself; the source keeps its last-known peers meanwhile";

/// What the cache remembers of a task that was RUNNING when described.
#[derive(Debug, Clone)]
// Most entries are peers: boxing them would cost an allocation each for nothing.
#[allow(clippy::large_enum_variant)]
enum Known {
    Peer(Found),
    Skip,
    Unusable(SkipReason),
    /// Left out by a filter checked on the task (`family`'s revision, `container`, `tags`), with
    /// what it has instead.
    Filtered(Filtered),
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
        crate::partition::account_or_any(&self.cfg.cluster)
    }

    fn cluster_name(&self) -> &str {
        self.cfg.cluster_name()
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
            "Resource \"*\" and Condition ArnEquals ecs:cluster \"{}\"",
            partition::arn(
                "ecs",
                &self.cfg.region,
                self.account(),
                &format!("cluster/{}", self.cluster_name())
            )
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

    /// Describes tasks, at most [`BATCH`] a call, with their tags when `with_tags`
    /// (`include: ["TAGS"]`: the same calls, a longer answer). Tasks ECS does not know
    /// (failures, e.g. MISSING) are left out of the result.
    async fn describe(&self, arns: &[String], with_tags: bool) -> Result<Vec<Task>, SourceError> {
        let resource = format!(
            "Resource \"{}\"",
            partition::arn(
                "ecs",
                &self.cfg.region,
                self.account(),
                &format!("task/{}/*", self.cluster_name())
            )
        );
        let mut tasks = Vec::with_capacity(arns.len());
        for batch in arns.chunks(BATCH) {
            let out = self
                .client
                .describe_tasks()
                .cluster(&self.cfg.cluster)
                .set_tasks(Some(batch.to_vec()))
                .set_include(with_tags.then(|| vec![TaskField::Tags]))
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

    /// One complete poll: the RUNNING tasks listed, the new ones described and cached, the
    /// departed ones drained until STOPPED. Nothing is kept of a poll that fails part-way but
    /// what it learnt for good (task descriptions, instance addresses).
    pub(super) async fn poll_inner(&mut self) -> Result<Polled, SourceError> {
        let running = self.list_running().await?;
        let listed: HashSet<&str> = running.iter().map(String::as_str).collect();
        self.learn(&running).await?;
        let draining = self.drain(&listed).await?;

        let mut peers: Vec<Found> = Vec::with_capacity(running.len() + draining.len());
        peers.extend(running.iter().filter_map(|arn| match self.known.get(arn) {
            Some(Known::Peer(f)) => Some(f.clone()),
            _ => None,
        }));
        peers.extend(draining);
        let skipped = self.skipped_by_reason(&running);
        self.forget_unused_instances();
        Ok(Polled {
            found: peers,
            skipped,
            absent: None,
        })
    }

    /// Describes the listed tasks never described (or not RUNNING yet when last described),
    /// places those addressed by their container instance, and caches what each one is.
    async fn learn(&mut self, running: &[String]) -> Result<(), SourceError> {
        let unknown: Vec<String> = running
            .iter()
            .filter(|a| !self.known.contains_key(a.as_str()))
            .cloned()
            .collect();
        let mut decided = Vec::new();
        let mut on_instance = Vec::new();
        let filter = TaskFilter::new(&self.cfg, self.dist_port);
        let described = self.describe(&unknown, filter.needs_tags()).await?;
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
                Decision::Filtered(what) => {
                    tracing::debug!(task = %arn, ?what, "task is not a peer: left out by a filter");
                    self.known.insert(arn, Known::Filtered(what));
                }
                Decision::NotYet(status) => {
                    tracing::debug!(task = %arn, %status, "task is not running yet; will look again next poll");
                }
            }
        }
        Ok(())
    }

    /// Tasks that were peers and have left the RUNNING list: described again, and peers marked
    /// draining until ECS reports them STOPPED (with draining off, dropped at once). Forgets
    /// every cached task that is neither listed nor draining.
    async fn drain(&mut self, listed: &HashSet<&str>) -> Result<Vec<Found>, SourceError> {
        let departed: Vec<String> = self
            .known
            .iter()
            .filter(|(arn, k)| !listed.contains(arn.as_str()) && matches!(k, Known::Peer(_)))
            .map(|(arn, _)| arn.clone())
            .collect();
        self.known
            .retain(|arn, k| listed.contains(arn.as_str()) || matches!(k, Known::Peer(_)));
        if !self.draining_enabled || departed.is_empty() {
            self.known.retain(|arn, _| listed.contains(arn.as_str()));
            return Ok(Vec::new());
        }
        let mut draining = Vec::new();
        let mut still_there = HashSet::new();
        let mut leaving = Vec::new();
        let described = self.describe(&departed, false).await?;
        let filter = TaskFilter::new(&self.cfg, self.dist_port).ignoring_tags();
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
        Ok(draining)
    }

    /// RUNNING tasks that cannot be peers, by reason, each with one task to look at.
    fn skipped_by_reason(&self, running: &[String]) -> Vec<Skipped> {
        let mut skipped = count_skips(
            running.iter().filter_map(|arn| match self.known.get(arn) {
                Some(Known::Unusable(why)) => Some((*why, arn.as_str())),
                _ => None,
            }),
            self.dist_port,
        );
        skipped.extend(self.filters_matched_none(running));
        skipped
    }

    /// When the filters checked on each task (`family`'s revision, `container`, `tags`) left
    /// out every RUNNING task the source listed (none is a peer or skipped for another reason),
    /// those tasks as skips, one per filter ([`SkipReason::RevisionMismatch`],
    /// [`SkipReason::NoSuchContainer`], [`SkipReason::TagMismatch`]), each saying what the
    /// tasks have instead: a filter that matches nothing says so, with its fix, instead of "0
    /// peers". While some task passes, the others are filtered out as the filters mean, in
    /// silence.
    fn filters_matched_none(&self, running: &[String]) -> Vec<Skipped> {
        // Per filter: how many tasks, one of them, and what they have (value → tasks).
        #[derive(Default)]
        struct Seen<'a> {
            tasks: usize,
            example: Option<&'a str>,
            values: Vec<BTreeMap<Option<&'a str>, usize>>,
        }
        impl<'a> Seen<'a> {
            fn add(
                &mut self,
                arn: &'a str,
                values: impl IntoIterator<Item = Vec<Option<&'a str>>>,
            ) {
                self.tasks += 1;
                self.example.get_or_insert(arn);
                for (i, vs) in values.into_iter().enumerate() {
                    if self.values.len() <= i {
                        self.values.push(BTreeMap::new());
                    }
                    for v in vs {
                        *self.values[i].entry(v).or_insert(0) += 1;
                    }
                }
            }
        }
        let (mut revision, mut container, mut tags) =
            (Seen::default(), Seen::default(), Seen::default());
        for arn in running {
            match self.known.get(arn) {
                Some(Known::Peer(_) | Known::Unusable(_)) => return Vec::new(),
                Some(Known::Filtered(Filtered::Revision(r))) => {
                    revision.add(arn, [vec![r.as_deref()]]);
                }
                Some(Known::Filtered(Filtered::Container(names))) => {
                    container.add(arn, [names.iter().map(|n| Some(n.as_str())).collect()]);
                }
                Some(Known::Filtered(Filtered::Tags(values))) => {
                    tags.add(arn, values.iter().map(|v| vec![v.as_deref()]));
                }
                Some(Known::Skip) | None => {}
            }
        }
        let want_revision = self.cfg.family_revision().unwrap_or_default();
        let want_container = self.cfg.container.as_deref().unwrap_or_default();
        let mut out = Vec::new();
        for (reason, seen, what) in [
            (
                SkipReason::RevisionMismatch,
                &revision,
                vec![format!(
                    "revision {want_revision:?} wanted; they run {}",
                    listed(&revision.values[..], "no revision")
                )],
            ),
            (
                SkipReason::NoSuchContainer,
                &container,
                vec![format!(
                    "container {want_container:?} wanted; their containers are {}",
                    listed(&container.values[..], "none")
                )],
            ),
            (
                SkipReason::TagMismatch,
                &tags,
                self.cfg
                    .tags
                    .iter()
                    .enumerate()
                    .map(|(i, (k, want))| {
                        let none = format!("no {k:?} tag");
                        format!(
                            "{k:?}={want:?} wanted; they carry {}",
                            listed(tags.values.get(i..=i).unwrap_or_default(), &none)
                        )
                    })
                    .collect(),
            ),
        ] {
            let Some(example) = seen.example else {
                continue;
            };
            out.push(Skipped {
                reason,
                tasks: seen.tasks,
                example_task: example.to_string(),
                message: format!("{}: {}", reason.message(self.dist_port), what.join("; ")),
                fix: reason.fix(self.dist_port),
            });
        }
        out
    }

    /// Drops the cached container instances no known peer runs on any more.
    fn forget_unused_instances(&mut self) {
        let in_use: HashSet<&str> = self
            .known
            .values()
            .filter_map(|k| match k {
                Known::Peer(f) => f.container_instance.as_deref(),
                _ => None,
            })
            .collect();
        self.instances.retain(&in_use);
    }
}

/// The values a filter saw, for its hint: the first map of `values` (value → tasks), most
/// common first, among equals by name and then the tasks without one (written `none`), each
/// with its count; the five most common, then how many other values there were.
fn listed(values: &[BTreeMap<Option<&str>, usize>], none: &str) -> String {
    const SHOWN: usize = 5;
    let Some(by_value) = values.first() else {
        return String::new();
    };
    let mut values: Vec<(Option<&str>, usize)> = by_value.iter().map(|(v, n)| (*v, *n)).collect();
    values.sort_by(|a, b| (b.1, a.0.is_none(), a.0).cmp(&(a.1, b.0.is_none(), b.0)));
    let mut shown: Vec<String> = values
        .iter()
        .take(SHOWN)
        .map(|(v, n)| match v {
            Some(v) => format!("{v:?} ({n})"),
            None => format!("{none} ({n})"),
        })
        .collect();
    if values.len() > SHOWN {
        shown.push(format!("{} other values", values.len() - SHOWN));
    }
    shown.join(", ")
}

impl Source for EcsSource {
    fn poll(&mut self) -> PollFuture<'_> {
        Box::pin(self.poll_inner())
    }
}

/// The source's poll logic (cache, drain, re-describe) against hand-written ECS answers, for
/// the shapes the emulator cannot produce: PROVISIONING tasks and tasks that drain before they
/// stop. The answers go through the real SDK (its replay HTTP client), so decoding is real too.
#[cfg(test)]
mod replay_tests {
    use std::collections::BTreeMap;
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
        source_in("eu-west-2", events)
    }

    fn source_in(region: &str, events: Vec<ReplayEvent>) -> (EcsSource, StaticReplayClient) {
        source_tagged(region, BTreeMap::new(), events)
    }

    fn source_tagged(
        region: &str,
        tags: BTreeMap<String, String>,
        events: Vec<ReplayEvent>,
    ) -> (EcsSource, StaticReplayClient) {
        let http = StaticReplayClient::new(events);
        let conf = aws_sdk_ecs::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .credentials_provider(Credentials::new("a", "b", None, None, "test"))
            // One answer per call: a retried 5xx would consume the next scripted answer.
            .retry_config(aws_sdk_ecs::config::retry::RetryConfig::disabled())
            .http_client(http.clone())
            .build();
        let cfg = EcsSourceConfig {
            region: region.into(),
            cluster: "web".into(),
            service: Some("api".into()),
            family: None,
            container: None,
            tags,
            regions: None,
        };
        let ec2 = aws_sdk_ec2::Config::builder()
            .behavior_version(aws_sdk_ec2::config::BehaviorVersion::latest())
            .region(aws_sdk_ec2::config::Region::new(region.to_string()))
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
        let p1 = src.poll().await.unwrap().found;
        assert_eq!(
            view(&p1),
            [("10.0.0.1".into(), false), ("10.0.0.2".into(), false)]
        );
        let p2 = src.poll().await.unwrap().found;
        assert_eq!(
            view(&p2),
            [
                ("10.0.0.1".into(), false),
                ("10.0.0.2".into(), true),
                ("10.0.0.3".into(), false)
            ]
        );
        let p3 = src.poll().await.unwrap().found;
        assert_eq!(
            view(&p3),
            [
                ("10.0.0.1".into(), false),
                ("10.0.0.2".into(), true),
                ("10.0.0.3".into(), false)
            ]
        );
        let p4 = src.poll().await.unwrap().found;
        assert_eq!(
            view(&p4),
            [("10.0.0.1".into(), false), ("10.0.0.3".into(), false)]
        );
        let p5 = src.poll().await.unwrap().found;
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

    /// A tag filter asks for the tags on the DescribeTasks calls the source makes anyway, and no
    /// call more: steady state is one ListTasks, whatever a task's tags. A leaving peer is
    /// described without them and drains.
    #[tokio::test]
    async fn a_tag_filter_reads_tags_on_the_first_description_and_costs_no_call() {
        let tagged = |id: &str, status: &str, ip: &str, team: &str| {
            task(id, status, ip).replacen(
                '{',
                &format!(r#"{{"tags":[{{"key":"team","value":"{team}"}},{{"key":"stage"}}],"#),
                1,
            )
        };
        let (mut src, http) = source_tagged(
            "eu-west-2",
            [("team".to_string(), "a".to_string())].into(),
            vec![
                // Poll 1: a (team a) and b (team b) described with their tags.
                event(list(&["a", "b"])),
                event(describe(&[
                    tagged("a", "RUNNING", "10.0.0.1", "a"),
                    tagged("b", "RUNNING", "10.0.0.2", "b"),
                ])),
                // Poll 2: steady: one ListTasks, b's skip cached like a's peer.
                event(list(&["a", "b"])),
                // Poll 3: a leaves; described again, without tags, and drains.
                event(list(&["b"])),
                event(describe(&[task("a", "DEACTIVATING", "10.0.0.1")])),
            ],
        );
        assert_eq!(
            view(&src.poll().await.unwrap().found),
            [("10.0.0.1".into(), false)]
        );
        assert_eq!(
            view(&src.poll().await.unwrap().found),
            [("10.0.0.1".into(), false)]
        );
        assert_eq!(
            view(&src.poll().await.unwrap().found),
            [("10.0.0.1".into(), true)]
        );
        let sent = bodies(&http);
        assert_eq!(sent.len(), 5, "one request per scripted answer: {sent:#?}");
        assert!(sent[1].contains(r#""include":["TAGS"]"#), "{}", sent[1]);
        assert!(!sent[4].contains("include"), "{}", sent[4]);
    }

    /// An unfiltered source asks for no tags (a shorter answer).
    #[tokio::test]
    async fn a_source_without_tags_asks_for_none() {
        let (mut src, http) = source(vec![
            event(list(&["a"])),
            event(describe(&[task("a", "RUNNING", "10.0.0.1")])),
        ]);
        src.poll().await.unwrap();
        let sent = bodies(&http);
        assert!(!sent[1].contains("include"), "{}", sent[1]);
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
        let found = src.poll().await.unwrap().found;
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

    /// China and GovCloud ARNs are `arn:aws-cn:` and `arn:aws-us-gov:`: a fix naming
    /// `arn:aws:ecs:cn-north-1:…` would be pasted into a policy that never matches.
    #[tokio::test]
    async fn access_denied_fixes_name_resources_in_the_regions_partition() {
        let json = [("content-type", "application/x-amz-json-1.1")];
        let denied = || {
            answer(
                400,
                &json,
                r#"{"__type":"AccessDeniedException","message":"User: x is not authorized"}"#,
            )
        };
        for (region, partition) in [("cn-north-1", "aws-cn"), ("us-gov-west-1", "aws-us-gov")] {
            let arn = |resource: &str| format!("arn:{partition}:ecs:{region}:1:{resource}");
            let bridge_task = format!(
                r#"{{"taskArn":"{}","lastStatus":"RUNNING","desiredStatus":"RUNNING","group":"service:api",
                   "containerInstanceArn":"{}",
                   "containers":[{{"networkBindings":[{{"containerPort":4370,"hostPort":32768}}]}}]}}"#,
                arn("task/web/t1"),
                arn("container-instance/web/ci1")
            );
            let (mut src, _) = source_in(
                region,
                vec![
                    denied(),
                    event(format!(r#"{{"taskArns":["{}"]}}"#, arn("task/web/t1"))),
                    denied(),
                    event(format!(r#"{{"taskArns":["{}"]}}"#, arn("task/web/t1"))),
                    event(describe(&[bridge_task])),
                    denied(),
                ],
            );
            for (action, resource) in [
                (
                    "ecs:ListTasks",
                    format!(
                        "Resource \"*\" and Condition ArnEquals ecs:cluster \"arn:{partition}:ecs:{region}:*:cluster/web\""
                    ),
                ),
                (
                    "ecs:DescribeTasks",
                    format!("Resource \"arn:{partition}:ecs:{region}:*:task/web/*\""),
                ),
                (
                    "ecs:DescribeContainerInstances",
                    format!(
                        "Resource \"arn:{partition}:ecs:{region}:*:container-instance/web/*\""
                    ),
                ),
            ] {
                let e = src.poll().await.unwrap_err();
                assert_eq!(e.kind, ErrorKind::AccessDenied, "{e}");
                let text = e.to_string();
                assert!(
                    text.contains(&format!("Fix: grant {action} to the task role, with {resource}")),
                    "{text}"
                );
            }
        }
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
