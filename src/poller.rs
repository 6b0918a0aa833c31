//! The poller: polls every source concurrently, keeps each source's last-known peers when it
//! fails, backs off per source when throttled, and merges everything into a [`Snapshot`].
//!
//! Each source's poll runs in its own tokio task and reports back over a channel, so a round
//! waits at most `polling_interval` (or `poll_timeout` for a one-shot poll): a black-holed region
//! delays nobody else, and its answer (or timeout) is merged in whichever round it arrives.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::FutureExt;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::aws::{AwsClients, CallCounter};
use crate::config::{Config, NodeNaming, SourceConfig};
use crate::error::{ErrorKind, SourceError};
use crate::namespace::{
    merge, rfc3339, Changes, LocalNode, Snapshot, SourceStatus, SNAPSHOT_SCHEMA,
};
use crate::peer::{Found, Peer, SourceId};
use crate::source::{self, Source};

/// One poll's result: the new snapshot and what changed since the previous one.
#[derive(Debug, Clone)]
pub struct Update {
    /// The merged view after this poll.
    pub snapshot: Arc<Snapshot>,
    /// Peers added, removed, or started draining since the previous snapshot.
    pub changes: Changes,
}

/// A finished poll of one source, sent back by its task.
struct Done {
    idx: usize,
    source: Box<dyn Source>,
    result: Result<Vec<Found>, SourceError>,
}

struct Slot {
    id: SourceId,
    kind: &'static str,
    region: String,
    calls: Arc<CallCounter>,
    /// `None` while a poll is in flight (the task owns it then).
    source: Option<Box<dyn Source>>,
    in_flight: Option<AbortHandle>,
    /// EPMD naming: the name learnt for each listed IP (kept while the IP stays listed).
    epmd_names: Arc<std::sync::Mutex<HashMap<IpAddr, String>>>,
    calls_before: BTreeMap<String, u64>,
    calls_last: BTreeMap<String, u64>,
    peers: Vec<Peer>,
    polled: bool,
    ok: bool,
    error: Option<SourceError>,
    last_success: Option<SystemTime>,
    consecutive_failures: u32,
    backoff_until: Option<Instant>,
}

impl Slot {
    fn total_calls(&self) -> u64 {
        self.calls.totals().values().sum()
    }

    /// Records the calls made since the poll started.
    fn count_calls(&mut self) {
        let now = self.calls.totals();
        self.calls_last = now
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v - self.calls_before.get(k).copied().unwrap_or(0),
                )
            })
            .filter(|(_, v)| *v > 0)
            .collect();
    }

    fn status(&self) -> SourceStatus {
        let now = Instant::now();
        SourceStatus {
            id: self.id.clone(),
            kind: self.kind,
            region: self.region.clone(),
            ok: self.ok,
            stale: !self.ok && self.polled,
            pending: !self.polled,
            error: self.error.as_ref().map(|e| e.to_string()),
            error_kind: self.error.as_ref().map(|e| e.kind),
            last_success: self.last_success.map(rfc3339),
            consecutive_failures: self.consecutive_failures,
            api_calls: self.calls_last.values().sum(),
            api_calls_by_action: self.calls_last.clone(),
            api_calls_total: self.total_calls(),
            peers: self.peers.len(),
            backoff_until: self
                .backoff_until
                .filter(|t| *t > now)
                .map(|t| rfc3339(SystemTime::now() + (t - now))),
        }
    }
}

/// Polls a namespace's sources and merges their peers.
///
/// ```no_run
/// # async fn run() -> Result<(), ecs_peers::Error> {
/// let config = ecs_peers::Config::from_value(serde_json::json!({
///     "node_basename": "app",
///     "sources": [
///         {"type": "ecs", "region": "eu-west-2", "cluster": "web", "service": "api"},
///         {"type": "ecs", "region": "us-west-2", "cluster": "web", "service": "api"}
///     ]
/// }))?;
/// let mut running = ecs_peers::Poller::new(config).await.spawn();
/// while let Some(update) = running.next().await {
///     for p in &update.changes.added { println!("+ {}", p.node); }
///     for p in &update.changes.removed { println!("- {}", p.node); }
/// }
/// # Ok(()) }
/// ```
pub struct Poller {
    slots: Vec<Slot>,
    naming: NodeNaming,
    local: LocalNode,
    interval: Duration,
    jitter: f64,
    poll_timeout: Duration,
    poll_no: u64,
    last: Arc<Snapshot>,
    tx: mpsc::UnboundedSender<Done>,
    rx: mpsc::UnboundedReceiver<Done>,
}

impl Poller {
    /// Builds the AWS clients (one credential chain, one client per service and region) and a
    /// backend per source. Makes no API call yet.
    pub async fn new(config: Config) -> Poller {
        let clients = Arc::new(AwsClients::load(&config).await);
        let sources = config
            .sources
            .iter()
            .map(|s| {
                let calls = Arc::new(CallCounter::default());
                let backend = source::build(&config, s, &clients, calls.clone());
                (s.clone(), backend, calls)
            })
            .collect();
        Poller::with_sources(&config, sources)
    }

    pub(crate) fn with_sources(
        config: &Config,
        sources: Vec<(SourceConfig, Box<dyn Source>, Arc<CallCounter>)>,
    ) -> Poller {
        let (tx, rx) = mpsc::unbounded_channel();
        Poller {
            slots: sources
                .into_iter()
                .map(|(cfg, backend, calls)| Slot {
                    id: cfg.id(),
                    kind: match cfg {
                        SourceConfig::Ecs(_) => "ecs",
                        SourceConfig::CloudMap(_) => "cloudmap",
                    },
                    region: cfg.region().to_string(),
                    calls,
                    source: Some(backend),
                    in_flight: None,
                    epmd_names: Arc::default(),
                    calls_before: BTreeMap::new(),
                    calls_last: BTreeMap::new(),
                    peers: Vec::new(),
                    polled: false,
                    ok: false,
                    error: None,
                    last_success: None,
                    consecutive_failures: 0,
                    backoff_until: None,
                })
                .collect(),
            naming: config.node.clone(),
            local: LocalNode {
                node: config.local_node.clone(),
                ip: config.local_ip,
            },
            interval: config.polling_interval,
            jitter: config.jitter,
            poll_timeout: config.poll_timeout,
            poll_no: 0,
            last: Arc::new(Snapshot::empty()),
            tx,
            rx,
        }
    }

    /// One complete poll: every source that is not backing off is polled, and this waits for
    /// all of them (each bounded by `poll_timeout`).
    pub async fn poll(&mut self) -> Update {
        self.round(self.poll_timeout + Duration::from_secs(1)).await
    }

    /// Runs the poller in the background on the current tokio runtime: a round every
    /// `polling_interval` (± jitter), each delivered as an [`Update`]; the first one once every
    /// source has answered or failed (at most `poll_timeout`). Dropping the handle stops it.
    pub fn spawn(mut self) -> PollerHandle {
        let (tx, rx) = mpsc::channel(8);
        let task = tokio::spawn(async move {
            loop {
                let started = tokio::time::Instant::now();
                // While some source has never answered, a round waits for its first answer
                // (bounded by poll_timeout), so the first snapshot is complete. After that a
                // round waits at most an interval, so a stalled region delays nobody.
                let wait = if self.slots.iter().any(|s| !s.polled) {
                    self.poll_timeout + Duration::from_secs(1)
                } else {
                    self.interval.min(self.poll_timeout)
                };
                let update = self.round(wait).await;
                if tx.send(update).await.is_err() {
                    return;
                }
                tokio::time::sleep_until(started + jittered(self.interval, self.jitter)).await;
            }
        });
        PollerHandle {
            rx,
            task: Some(task),
        }
    }

    async fn round(&mut self, wait: Duration) -> Update {
        let span = tracing::debug_span!("poll", n = self.poll_no + 1);
        let _enter = span.enter();
        let start = Instant::now();
        while let Ok(done) = self.rx.try_recv() {
            self.finish(done);
        }
        for idx in 0..self.slots.len() {
            self.start(idx, start);
        }
        let deadline = tokio::time::Instant::from_std(start + wait);
        while self.slots.iter().any(|s| s.in_flight.is_some()) {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(done)) => self.finish(done),
                Ok(None) | Err(_) => break,
            }
        }
        self.poll_no += 1;
        let (peers, conflicts, local) =
            merge(self.slots.iter().map(|s| s.peers.as_slice()), &self.local);
        for c in &conflicts {
            tracing::warn!(ip = %c.ip, claims = c.claims.len(), "the same IP is reported in several regions (overlapping VPC CIDRs); it is not used as a peer");
        }
        let snapshot = Snapshot {
            schema: SNAPSHOT_SCHEMA,
            poll: self.poll_no,
            taken_at: rfc3339(SystemTime::now()),
            duration_ms: start.elapsed().as_millis() as u64,
            peers,
            sources: self.slots.iter().map(Slot::status).collect(),
            conflicts,
            local,
        };
        let changes = snapshot.diff(&self.last);
        tracing::debug!(
            peers = snapshot.peers.len(),
            added = changes.added.len(),
            removed = changes.removed.len(),
            failing = snapshot.failing().count(),
            elapsed_ms = start.elapsed().as_millis() as u64,
            "poll done"
        );
        self.last = Arc::new(snapshot);
        Update {
            snapshot: self.last.clone(),
            changes,
        }
    }

    /// Starts a poll of a source, unless it is in flight or backing off.
    fn start(&mut self, idx: usize, now: Instant) {
        let timeout = self.poll_timeout;
        let tx = self.tx.clone();
        let slot = &mut self.slots[idx];
        if slot.backoff_until.is_some_and(|t| t > now) {
            tracing::debug!(source = %slot.id, "backing off; not polled this round");
            return;
        }
        let Some(mut source) = slot.source.take() else {
            return;
        };
        slot.calls_before = slot.calls.totals();
        let epmd = matches!(self.naming, NodeNaming::Epmd { .. })
            .then(|| (self.naming.clone(), slot.epmd_names.clone()));
        let task = tokio::spawn(async move {
            let polled =
                tokio::time::timeout(timeout, AssertUnwindSafe(source.poll()).catch_unwind()).await;
            let result = match polled {
                Ok(Ok(Ok(found))) => match &epmd {
                    Some((naming, cache)) => Ok(name_from_epmd(found, naming, cache, timeout).await),
                    None => Ok(found),
                },
                Ok(Ok(r)) => r,
                Ok(Err(panic)) => Err(SourceError::new(
                    ErrorKind::Malformed,
                    "poll",
                    format!("internal error while polling: {}", panic_message(&panic)),
                )),
                Err(_) => Err(SourceError::new(
                    ErrorKind::Timeout,
                    "poll",
                    format!("no complete answer within poll_timeout ({timeout:?})"),
                )
                .with_fix("the region's AWS endpoint is slow or unreachable; check routes to it, or raise poll_timeout")),
            };
            let _ = tx.send(Done {
                idx,
                source,
                result,
            });
        });
        slot.in_flight = Some(task.abort_handle());
    }

    fn finish(&mut self, done: Done) {
        let naming = &self.naming;
        let interval = self.interval;
        let slot = &mut self.slots[done.idx];
        if self.local.ip.is_none() {
            self.local.ip = done.source.local_ip();
        }
        if let Some(id) = done.source.resolved_id() {
            slot.id = id;
        }
        slot.source = Some(done.source);
        slot.in_flight = None;
        slot.polled = true;
        slot.count_calls();
        match done.result {
            Ok(found) => {
                if !slot.ok && slot.consecutive_failures > 0 {
                    tracing::info!(source = %slot.id, region = %slot.region, "source recovered");
                }
                slot.peers = found
                    .into_iter()
                    .filter_map(|f| {
                        let node = f
                            .node
                            .clone()
                            .or_else(|| naming.render(f.ip, &slot.region))?;
                        Some(f.into_peer(node, &slot.region, &slot.id))
                    })
                    .collect();
                slot.ok = true;
                slot.error = None;
                slot.last_success = Some(SystemTime::now());
                slot.consecutive_failures = 0;
                slot.backoff_until = None;
                tracing::debug!(source = %slot.id, peers = slot.peers.len(), api_calls = ?slot.calls_last, "source polled");
            }
            Err(e) => {
                slot.consecutive_failures += 1;
                if e.kind.backs_off() {
                    let backoff = backoff(interval, slot.consecutive_failures);
                    slot.backoff_until = Some(Instant::now() + backoff);
                }
                tracing::warn!(
                    source = %slot.id,
                    region = %slot.region,
                    action = e.action,
                    kind = %e.kind,
                    failures = slot.consecutive_failures,
                    kept_peers = slot.peers.len(),
                    "source poll failed; keeping its last-known peers: {e}"
                );
                slot.ok = false;
                slot.error = Some(e);
            }
        }
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        for slot in &self.slots {
            if let Some(h) = &slot.in_flight {
                h.abort();
            }
        }
    }
}

/// A poller running in the background. Dropping it stops the poller.
pub struct PollerHandle {
    rx: mpsc::Receiver<Update>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl PollerHandle {
    /// The next update; `None` once the poller has stopped.
    pub async fn next(&mut self) -> Option<Update> {
        self.rx.recv().await
    }

    /// Stops the poller (and any poll in flight) and waits until it has.
    pub async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for PollerHandle {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// Polls every source once and returns the merged snapshot.
///
/// ```no_run
/// # async fn run() -> Result<(), ecs_peers::Error> {
/// let config = ecs_peers::Config::from_file("ecs-peers.toml".as_ref())?;
/// let snapshot = ecs_peers::discover(config).await;
/// for peer in &snapshot.peers {
///     println!("{} {} {}", peer.node, peer.region, peer.source);
/// }
/// # Ok(()) }
/// ```
pub async fn discover(config: Config) -> Snapshot {
    let mut poller = Poller::new(config).await;
    let update = poller.poll().await;
    Arc::unwrap_or_clone(update.snapshot)
}

/// EPMD naming: names each peer by what its EPMD has registered (see [`NodeNaming::choose`]). A
/// name once learnt is kept while the IP stays listed, so a failed lookup never renames or
/// drops a known peer; a peer not named yet is left out of this poll and asked again next time.
async fn name_from_epmd(
    found: Vec<Found>,
    naming: &NodeNaming,
    cache: &std::sync::Mutex<HashMap<IpAddr, String>>,
    poll_timeout: Duration,
) -> Vec<Found> {
    use futures_util::stream::{self, StreamExt};
    let known: HashMap<IpAddr, String> = {
        let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
        c.retain(|ip, _| found.iter().any(|f| f.ip == *ip));
        c.clone()
    };
    let timeout = (poll_timeout / 4).min(Duration::from_secs(2));
    let unknown: Vec<IpAddr> = found
        .iter()
        .map(|f| f.ip)
        .filter(|ip| !known.contains_key(ip))
        .collect();
    let learnt: Vec<(IpAddr, Result<String, String>)> = stream::iter(unknown)
        .map(|ip| async move {
            let answer = crate::epmd::names(ip, timeout).await;
            let name = answer
                .registered()
                .and_then(|names| naming.choose(names).map(str::to_string));
            (ip, name)
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
    for (ip, name) in learnt {
        match name {
            Ok(n) => {
                c.insert(ip, format!("{n}@{ip}"));
            }
            Err(why) => tracing::warn!(%ip, "peer left out until it can be named: {why}"),
        }
    }
    found
        .into_iter()
        .filter_map(|f| {
            let node = c.get(&f.ip)?.clone();
            Some(Found {
                node: Some(node),
                ..f
            })
        })
        .collect()
}

/// `interval` scaled by a random factor in `[1 - jitter, 1 + jitter]`.
fn jittered(interval: Duration, jitter: f64) -> Duration {
    let factor = 1.0 + jitter * (fastrand::f64() * 2.0 - 1.0);
    interval.mul_f64(factor.max(0.0))
}

/// How long a throttled (or 5xx-answering) source waits before its next poll: `interval · 2^n`
/// for its n-th failure in a row, scaled by a random factor in [0.5, 1] (so a fleet that was
/// throttled together does not come back together), and never more than two intervals.
///
/// Why so short a cap: every poll is already one call per page per interval, so a failing source
/// can never storm; the back-off takes load off a throttled account (a source polls at most
/// every other round while it fails) and de-synchronises the fleet. A longer cap would buy
/// little more relief and cost what matters: after AWS recovers, membership must catch up within
/// two polls. A fleet that stays throttled needs a longer `polling_interval` (each node calls
/// each region about `pages / polling_interval` times a second), which the error's fix says.
fn backoff(interval: Duration, failures: u32) -> Duration {
    let exp = interval.saturating_mul(1 << failures.min(10));
    exp.min(interval * 2).mul_f64(0.5 + fastrand::f64() * 0.5)
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panic".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::fixed::{FixedSource, Step};
    use serde_json::json;

    fn found(ip: &str) -> Found {
        Found::at(ip.parse().unwrap())
    }

    fn throttled() -> SourceError {
        SourceError::new(
            ErrorKind::Throttled,
            "ecs:ListTasks",
            "ThrottlingException: Rate exceeded",
        )
    }

    fn config(n: usize) -> Config {
        let sources: Vec<_> = (0..n)
            .map(|i| json!({"type":"ecs","region": if i % 2 == 0 {"eu-west-2"} else {"us-west-2"},"cluster": format!("c{i}")}))
            .collect();
        Config::from_value(json!({"node_basename":"app","polling_interval":"100ms","poll_timeout":"300ms","sources":sources})).unwrap()
    }

    fn poller(cfg: &Config, scripts: Vec<Vec<Step>>) -> (Poller, Vec<FixedSource>) {
        let fixed: Vec<FixedSource> = scripts.into_iter().map(FixedSource::new).collect();
        let sources = cfg
            .sources
            .iter()
            .zip(&fixed)
            .map(|(c, f)| {
                (
                    c.clone(),
                    Box::new(f.clone()) as Box<dyn Source>,
                    Arc::new(CallCounter::default()),
                )
            })
            .collect();
        (Poller::with_sources(cfg, sources), fixed)
    }

    fn nodes(u: &Update) -> Vec<&str> {
        u.snapshot.peers.iter().map(|p| p.node.as_str()).collect()
    }

    #[tokio::test]
    async fn keeps_peers_when_a_source_fails() {
        let cfg = config(2);
        let (mut p, _) = poller(
            &cfg,
            vec![
                vec![
                    Step::Answer(Ok(vec![found("10.1.0.4"), found("10.1.0.5")])),
                    Step::Answer(Err(throttled())),
                ],
                vec![
                    Step::Answer(Ok(vec![found("10.2.0.4")])),
                    Step::Answer(Ok(vec![])),
                ],
            ],
        );
        let first = p.poll().await;
        assert_eq!(
            nodes(&first),
            ["app@10.1.0.4", "app@10.1.0.5", "app@10.2.0.4"]
        );
        assert_eq!(first.changes.added.len(), 3);
        let second = p.poll().await;
        // Source 0 failed: its peers stay. Source 1 answered completely with none: its peer goes.
        assert_eq!(nodes(&second), ["app@10.1.0.4", "app@10.1.0.5"]);
        assert_eq!(
            second
                .changes
                .removed
                .iter()
                .map(|p| p.node.as_str())
                .collect::<Vec<_>>(),
            ["app@10.2.0.4"]
        );
        let s0 = &second.snapshot.sources[0];
        assert!(!s0.ok && s0.stale);
        assert_eq!(s0.peers, 2);
        assert_eq!(s0.error_kind, Some(ErrorKind::Throttled));
        assert!(s0.error.as_deref().unwrap().contains("Rate exceeded"));
        assert!(s0.backoff_until.is_some(), "throttling backs off");
        assert!(s0.last_success.is_some());
        assert!(second.snapshot.sources[1].ok);
    }

    #[tokio::test]
    async fn a_backing_off_source_is_not_polled() {
        let cfg = config(1);
        let (mut p, fixed) = poller(&cfg, vec![vec![Step::Answer(Err(throttled()))]]);
        p.poll().await;
        p.poll().await;
        p.poll().await;
        assert_eq!(
            *fixed[0].polls.lock().unwrap(),
            1,
            "polled again while backing off"
        );
    }

    #[tokio::test]
    async fn a_slow_source_times_out_and_keeps_its_peers() {
        let cfg = config(2);
        let (mut p, _) = poller(
            &cfg,
            vec![
                vec![
                    Step::Answer(Ok(vec![found("10.1.0.4")])),
                    Step::Slow(Duration::from_secs(5), Ok(vec![])),
                ],
                vec![Step::Answer(Ok(vec![found("10.2.0.4")]))],
            ],
        );
        p.poll().await;
        let started = Instant::now();
        let u = p.poll().await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "one slow source must not hold the poll past poll_timeout"
        );
        assert_eq!(nodes(&u), ["app@10.1.0.4", "app@10.2.0.4"]);
        let s0 = &u.snapshot.sources[0];
        assert_eq!(s0.error_kind, Some(ErrorKind::Timeout));
        assert!(s0.error.as_deref().unwrap().contains("poll_timeout"));
    }

    #[tokio::test]
    async fn a_panicking_source_is_an_error_not_a_crash() {
        let cfg = config(1);
        let (mut p, _) = poller(
            &cfg,
            vec![vec![
                Step::Answer(Ok(vec![found("10.1.0.4")])),
                Step::Panic,
                Step::Answer(Ok(vec![])),
            ]],
        );
        p.poll().await;
        let u = p.poll().await;
        assert_eq!(nodes(&u), ["app@10.1.0.4"]);
        assert!(u.snapshot.sources[0]
            .error
            .as_deref()
            .unwrap()
            .contains("scripted panic"));
        let u = p.poll().await;
        assert!(u.snapshot.sources[0].ok, "the source survives its panic");
        assert!(nodes(&u).is_empty());
    }

    #[tokio::test]
    async fn spawned_poller_streams_updates_and_stops_on_drop() {
        let cfg = config(1);
        let (p, fixed) = poller(
            &cfg,
            vec![vec![
                Step::Answer(Ok(vec![found("10.1.0.4")])),
                Step::Answer(Ok(vec![found("10.1.0.4"), found("10.1.0.5")])),
            ]],
        );
        let mut h = p.spawn();
        let u1 = tokio::time::timeout(Duration::from_secs(5), h.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(nodes(&u1), ["app@10.1.0.4"]);
        let u2 = tokio::time::timeout(Duration::from_secs(5), h.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            u2.changes
                .added
                .iter()
                .map(|p| p.node.as_str())
                .collect::<Vec<_>>(),
            ["app@10.1.0.5"]
        );
        h.stop().await;
        let polls = *fixed[0].polls.lock().unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(*fixed[0].polls.lock().unwrap(), polls, "no poll after stop");
    }

    #[tokio::test]
    async fn the_first_update_waits_for_first_answers_and_later_ones_do_not() {
        let cfg = config(2);
        let (p, _) = poller(
            &cfg,
            vec![
                // Slower than the 100 ms interval, faster than the 300 ms poll_timeout.
                vec![
                    Step::Slow(Duration::from_millis(250), Ok(vec![found("10.1.0.4")])),
                    Step::Slow(Duration::from_secs(5), Ok(vec![])),
                ],
                vec![Step::Answer(Ok(vec![found("10.2.0.4")]))],
            ],
        );
        let mut h = p.spawn();
        let first = tokio::time::timeout(Duration::from_secs(5), h.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            nodes(&first),
            ["app@10.1.0.4", "app@10.2.0.4"],
            "the first snapshot is complete"
        );
        assert!(first.snapshot.sources.iter().all(|s| s.ok && !s.pending));
        let started = Instant::now();
        let second = tokio::time::timeout(Duration::from_secs(5), h.next())
            .await
            .unwrap()
            .unwrap();
        assert!(
            started.elapsed() < Duration::from_millis(250),
            "a later round waited for a slow source"
        );
        assert_eq!(second.snapshot.failing().count(), 0);
        h.stop().await;
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let i = Duration::from_secs(5);
        for _ in 0..50 {
            let b1 = backoff(i, 1);
            assert!(
                b1 >= Duration::from_secs(5) && b1 <= Duration::from_secs(10),
                "{b1:?}"
            );
            let b3 = backoff(i, 3);
            assert!(
                b3 >= Duration::from_secs(5) && b3 <= Duration::from_secs(10),
                "capped at two intervals: {b3:?}"
            );
            assert!(backoff(i, 30) <= i * 2);
            let j = jittered(i, 0.2);
            assert!(
                j >= Duration::from_secs(4) && j <= Duration::from_secs(6),
                "{j:?}"
            );
        }
    }
}
