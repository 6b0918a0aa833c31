//! The poller: polls every source concurrently, keeps each source's last-known peers when it
//! fails, backs off per source when throttled, and merges everything into a [`Snapshot`].
//!
//! Each source's poll runs in its own tokio task and reports back over a channel, so a round
//! waits at most `polling_interval` (or `poll_timeout` for a one-shot poll): a black-holed region
//! delays nobody else, and its answer (or timeout) is merged in whichever round it arrives.

use std::collections::{BTreeMap, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::FutureExt;
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;

use crate::aws::{AwsClients, CallCounter};
use crate::config::{Config, NodeNaming, SourceConfig};
use crate::error::{ErrorKind, SourceError};
use crate::namespace::{
    merged, rfc3339, Changes, LocalNode, Snapshot, SourcePeers, SourceStatus, SNAPSHOT_SCHEMA,
};
use crate::peer::{Address, Found, Peer, Skipped, SourceId};
use crate::source::{self, Source};

/// One poll's result: the new snapshot and what changed since the previous one (for a
/// [`Subscription`], since the previous update *it* received).
///
/// Self-contained: the snapshot is the whole state (shared, immutable), so a receiver needs
/// nothing from earlier updates to act on it.
#[derive(Debug, Clone)]
pub struct Update {
    /// The merged view after this poll.
    pub snapshot: Arc<Snapshot>,
    /// Peers added, removed, or started draining, and membership events, since the previous
    /// snapshot.
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
    /// EPMD naming: the name learnt for each listed address (kept while it stays listed).
    epmd_names: Arc<std::sync::Mutex<HashMap<Address, String>>>,
    /// The call totals when the previous round's snapshot was taken.
    calls_at_last_round: BTreeMap<String, u64>,
    /// This round's calls (totals now minus `calls_at_last_round`), by action.
    calls_last: BTreeMap<String, u64>,
    peers: SourcePeers,
    polled: bool,
    ok: bool,
    error: Option<SourceError>,
    last_success: Option<SystemTime>,
    consecutive_failures: u32,
    backoff_until: Option<Instant>,
    skipped: Vec<Skipped>,
}

impl Slot {
    /// The one place a slot learns who its source is: at start from the configuration, and
    /// again once the source resolved a placeholder (`cluster = "auto"`), so the source's id,
    /// its region, its peers' region and their `{region}` all name the resolved source.
    fn describe(&mut self, cfg: &SourceConfig) {
        self.id = cfg.id();
        self.region = cfg.region().to_string();
        self.kind = match cfg {
            SourceConfig::Ecs(_) => "ecs",
            SourceConfig::CloudMap(_) => "cloudmap",
        };
    }

    fn total_calls(&self) -> u64 {
        self.calls.totals().values().sum()
    }

    /// Closes a round's call count: every per-round figure is of its own round, so a round in
    /// which the source made no call (backing off, or its poll still in flight without calls)
    /// reports 0, whatever the previous poll made.
    fn count_round_calls(&mut self) {
        let now = self.calls.totals();
        self.calls_last = now
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.saturating_sub(self.calls_at_last_round.get(k).copied().unwrap_or(0)),
                )
            })
            .filter(|(_, v)| *v > 0)
            .collect();
        self.calls_at_last_round = now;
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
            failure: self.error.clone(),
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
            skipped_tasks: self.skipped.iter().map(|s| s.tasks).sum(),
            skipped: self.skipped.clone(),
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
    /// A source's answer (or who this node is) changed since `last` was merged.
    changed: bool,
    /// The source that last listed this node's own task.
    local_source: Option<SourceId>,
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
                .map(|(cfg, backend, calls)| {
                    let mut slot = Slot {
                        id: cfg.id(),
                        kind: "",
                        region: String::new(),
                        calls,
                        source: Some(backend),
                        in_flight: None,
                        epmd_names: Arc::default(),
                        calls_at_last_round: BTreeMap::new(),
                        calls_last: BTreeMap::new(),
                        peers: SourcePeers::default(),
                        polled: false,
                        ok: false,
                        error: None,
                        last_success: None,
                        consecutive_failures: 0,
                        backoff_until: None,
                        skipped: Vec::new(),
                    };
                    slot.describe(&cfg);
                    slot
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
            changed: true,
            local_source: None,
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
    /// `polling_interval` (± jitter); the first one once every source has answered or failed (at
    /// most `poll_timeout`). Each round is published to every [`Subscription`]
    /// ([`PollerHandle::subscribe`]; the handle itself is one). Dropping the handle stops it.
    pub fn spawn(mut self) -> PollerHandle {
        let (tx, rx) = watch::channel(None::<Published>);
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
                let previous = self.last.clone();
                let update = self.round(wait).await;
                if tx.send(Some(Published { update, previous })).is_err() {
                    // Every subscriber is gone.
                    return;
                }
                tokio::time::sleep_until(started + jittered(self.interval, self.jitter)).await;
            }
        });
        PollerHandle {
            first: Subscription::new(rx),
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
        for slot in &mut self.slots {
            slot.count_round_calls();
        }
        let (peers, conflicts, local) = merged(
            std::mem::take(&mut self.changed),
            self.slots.iter().map(|s| s.peers.as_slice()),
            &self.local,
            &self.last,
        );
        let left = self.leaving(&local);
        let snapshot = Snapshot {
            schema: SNAPSHOT_SCHEMA,
            poll: self.poll_no,
            taken_at: rfc3339(SystemTime::now()),
            duration_ms: start.elapsed().as_millis() as u64,
            peers,
            sources: self.slots.iter().map(Slot::status).collect(),
            conflicts,
            local,
            left,
        };
        let changes = snapshot.diff(&self.last);
        for event in &changes.events {
            if event.is_warning() {
                tracing::warn!(%event, "{event}");
            } else {
                tracing::info!(%event, "{event}");
            }
        }
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

    /// Whether this node has left its source (see [`Snapshot::left`]): its task was listed by a
    /// source, and a complete, successful poll of that source no longer lists it.
    fn leaving(&mut self, local: &Option<Peer>) -> Option<SourceId> {
        if let Some(me) = local {
            self.local_source = Some(me.source.clone());
            return None;
        }
        if self.last.left.is_some() {
            return self.last.left.clone();
        }
        let source = self.local_source.as_ref()?;
        self.slots
            .iter()
            .any(|s| &s.id == source && s.ok)
            .then(|| source.clone())
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
            self.changed |= self.local.ip.is_some();
        }
        if let Some(cfg) = done.source.resolved() {
            slot.describe(cfg);
        }
        let skipped = done.source.skipped();
        slot.source = Some(done.source);
        slot.in_flight = None;
        slot.polled = true;
        match done.result {
            Ok(found) => {
                self.changed |= slot.peers.apply(found, naming, &slot.region, &slot.id);
                slot.ok = true;
                slot.error = None;
                slot.skipped = skipped;
                slot.last_success = Some(SystemTime::now());
                slot.consecutive_failures = 0;
                slot.backoff_until = None;
                tracing::debug!(source = %slot.id, peers = slot.peers.len(), api_calls_total = slot.total_calls(), "source polled");
            }
            Err(e) => {
                slot.consecutive_failures += 1;
                if e.kind.backs_off() {
                    let backoff = backoff(interval, slot.consecutive_failures);
                    slot.backoff_until = Some(Instant::now() + backoff);
                }
                // Reported once, as a SourceFailing event of the round (see Snapshot::diff).
                tracing::debug!(
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

/// What the poller publishes after each round: the update, and the snapshot it was diffed
/// against (so a subscriber that saw exactly that one can reuse its changes).
#[derive(Clone)]
struct Published {
    update: Update,
    previous: Arc<Snapshot>,
}

/// A poller running in the background. It is itself a [`Subscription`] ([`PollerHandle::next`]);
/// [`PollerHandle::subscribe`] adds more. Dropping it stops the poller.
pub struct PollerHandle {
    first: Subscription,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl PollerHandle {
    /// The next update; `None` once the poller has stopped.
    pub async fn next(&mut self) -> Option<Update> {
        self.first.next().await
    }

    /// Another subscriber of this poller. Its first update is the latest round (at once, if
    /// one has finished), with every peer added; then every round it has not seen, with the
    /// changes since the last update *it* received, however many rounds it skipped.
    pub fn subscribe(&self) -> Subscription {
        let mut rx = self.first.rx.clone();
        rx.mark_changed();
        Subscription::new(rx)
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

/// One receiver of a running poller's updates. Each update is self-contained: the snapshot is
/// the whole (shared) state, and the changes are computed against the last snapshot this
/// subscriber received, so a slow subscriber skips rounds without missing a peer or an event
/// (it sees their net effect). Any number of subscribers can follow one poller.
pub struct Subscription {
    rx: watch::Receiver<Option<Published>>,
    last: Arc<Snapshot>,
}

impl Subscription {
    fn new(rx: watch::Receiver<Option<Published>>) -> Subscription {
        Subscription {
            rx,
            last: Arc::new(Snapshot::empty()),
        }
    }

    /// The next update this subscriber has not seen (the latest round); `None` once the
    /// poller has stopped.
    pub async fn next(&mut self) -> Option<Update> {
        loop {
            if self.rx.changed().await.is_err() {
                return None;
            }
            let Some(published) = self.rx.borrow_and_update().clone() else {
                continue;
            };
            let Published { update, previous } = published;
            let changes = if Arc::ptr_eq(&previous, &self.last) {
                update.changes
            } else {
                update.snapshot.diff(&self.last)
            };
            self.last = update.snapshot.clone();
            return Some(Update {
                snapshot: update.snapshot,
                changes,
            });
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
    cache: &std::sync::Mutex<HashMap<Address, String>>,
    poll_timeout: Duration,
) -> Vec<Found> {
    use futures_util::stream::{self, StreamExt};
    let known: HashMap<Address, String> = {
        let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
        c.retain(|addr, _| found.iter().any(|f| f.address() == *addr));
        c.clone()
    };
    let timeout = (poll_timeout / 4).min(Duration::from_secs(2));
    let unknown: Vec<Address> = found
        .iter()
        .map(Found::address)
        .filter(|addr| !known.contains_key(addr))
        .collect();
    let learnt: Vec<(Address, Result<String, String>)> = stream::iter(unknown)
        .map(|addr| async move {
            let answer = crate::epmd::names(addr.ip, timeout).await;
            let name = answer.registered().and_then(|names| {
                // A peer with its own distribution port is the name registered on that port.
                let on_port: Vec<(String, u16)> = names
                    .iter()
                    .filter(|(_, p)| addr.port.is_none_or(|want| *p == want))
                    .cloned()
                    .collect();
                naming.choose(&on_port).map(str::to_string)
            });
            (addr, name)
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
    for (addr, name) in learnt {
        match name {
            Ok(n) => {
                c.insert(addr, format!("{n}@{}", addr.ip));
            }
            Err(why) => tracing::warn!(%addr, "peer left out until it can be named: {why}"),
        }
    }
    found
        .into_iter()
        .filter_map(|f| {
            let node = c.get(&f.address())?.clone();
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
    use crate::namespace::Event;
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

    /// The address of a peer, however the snapshot holds it.
    fn at(p: &Peer) -> *const Peer {
        p
    }

    fn shared(a: &Update, b: &Update) -> bool {
        let (a, b) = (&a.snapshot.peers, &b.snapshot.peers);
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| at(x) == at(y))
    }

    #[tokio::test]
    async fn a_round_in_which_no_answer_changed_reuses_the_peers_it_has() {
        let cfg = config(2);
        let draining = Found {
            draining: true,
            ..found("10.1.0.5")
        };
        let (mut p, _) = poller(
            &cfg,
            vec![
                vec![
                    Step::Answer(Ok(vec![found("10.1.0.4"), found("10.1.0.5")])),
                    // The same answer in another order.
                    Step::Answer(Ok(vec![found("10.1.0.5"), found("10.1.0.4")])),
                    Step::Answer(Ok(vec![found("10.1.0.4"), draining])),
                    Step::Answer(Err(throttled())),
                ],
                vec![Step::Answer(Ok(vec![found("10.2.0.4")]))],
            ],
        );
        let first = p.poll().await;
        let second = p.poll().await;
        assert!(
            shared(&first, &second),
            "no answer changed: the same peers, not named and merged again"
        );
        assert!(second.changes.is_empty());
        let third = p.poll().await;
        assert!(!shared(&second, &third), "source 0 changed: rebuilt");
        assert_eq!(nodes(&third), nodes(&second));
        assert_eq!(third.changes.draining.len(), 1);
        let unchanged_source = |u: &Update| {
            at(u.snapshot
                .peers
                .iter()
                .find(|p| p.node == "app@10.2.0.4")
                .unwrap())
        };
        assert_eq!(
            unchanged_source(&second),
            unchanged_source(&third),
            "source 1 did not change: its peer is shared"
        );
        let fourth = p.poll().await;
        assert!(!fourth.snapshot.sources[0].ok);
        assert!(
            shared(&third, &fourth),
            "a failed poll keeps the peers, as they were"
        );
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

    fn denied() -> SourceError {
        SourceError::new(
            ErrorKind::AccessDenied,
            "ecs:ListTasks",
            "AccessDeniedException: no",
        )
    }

    async fn next(sub: &mut Subscription) -> Update {
        tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .expect("an update within 5 s")
            .expect("the poller runs")
    }

    fn names(peers: &[Peer]) -> Vec<&str> {
        peers.iter().map(|p| p.node.as_str()).collect()
    }

    #[tokio::test]
    async fn two_subscribers_of_one_poller_converge_however_many_updates_one_skips() {
        let cfg = config(1);
        let (p, _) = poller(
            &cfg,
            vec![vec![
                Step::Answer(Ok(vec![found("10.1.0.4")])),
                Step::Answer(Ok(vec![found("10.1.0.4"), found("10.1.0.5")])),
                Step::Answer(Ok(vec![found("10.1.0.5"), found("10.1.0.6")])),
                Step::Answer(Err(denied())),
            ]],
        );
        let mut h = p.spawn();
        let mut slow = h.subscribe();
        // The fast subscriber follows every round until the source fails, applying each
        // update's changes to what it knew.
        let mut known: std::collections::BTreeSet<String> = Default::default();
        let mut events = Vec::new();
        loop {
            let u = next(&mut h.first).await;
            for a in &u.changes.added {
                known.insert(a.node.clone());
            }
            for r in &u.changes.removed {
                known.remove(&r.node);
            }
            events.extend(u.changes.events.clone());
            if u.snapshot.failing().count() > 0 {
                break;
            }
        }
        assert_eq!(
            known.iter().map(String::as_str).collect::<Vec<_>>(),
            ["app@10.1.0.5", "app@10.1.0.6"]
        );
        assert!(matches!(events[..], [Event::SourceFailing { .. }]));
        // The slow one skipped every round so far: one update, with the net effect of all.
        let u = next(&mut slow).await;
        assert!(u.snapshot.poll >= 4, "the latest round, not the first");
        assert_eq!(names(&u.changes.added), ["app@10.1.0.5", "app@10.1.0.6"]);
        assert!(u.changes.removed.is_empty(), "it never saw 10.1.0.4");
        assert!(
            matches!(&u.changes.events[..], [Event::SourceFailing { error, .. }] if error.kind == ErrorKind::AccessDenied),
            "{:?}",
            u.changes.events
        );
        // A subscriber that joins late gets the current state at once.
        let mut late = h.subscribe();
        let u = next(&mut late).await;
        assert_eq!(names(&u.changes.added), ["app@10.1.0.5", "app@10.1.0.6"]);
        // Both keep receiving later rounds, with nothing new in them.
        let a = next(&mut h.first).await;
        let b = next(&mut slow).await;
        assert!(a.changes.is_empty() && b.changes.is_empty());
        assert!(a.changes.events.is_empty() && b.changes.events.is_empty());
        h.stop().await;
        assert!(
            slow.next().await.is_none(),
            "a stopped poller ends its subscriptions"
        );
    }

    #[tokio::test]
    async fn this_node_leaving_its_source_is_reported_once_and_stays() {
        let mut cfg = config(1);
        cfg.local_node = Some("app@10.1.0.4".into());
        let (mut p, _) = poller(
            &cfg,
            vec![vec![
                Step::Answer(Ok(vec![found("10.1.0.4"), found("10.1.0.5")])),
                Step::Answer(Err(throttled())),
                Step::Answer(Ok(vec![found("10.1.0.5")])),
            ]],
        );
        let u = p.poll().await;
        assert_eq!(nodes(&u), ["app@10.1.0.5"], "never its own peer");
        assert_eq!(u.snapshot.local.as_ref().unwrap().node, "app@10.1.0.4");
        // A failed poll keeps the last-known peers, this node among them: not leaving.
        p.slots[0].backoff_until = None;
        let u = p.poll().await;
        assert!(u.snapshot.left.is_none());
        p.slots[0].backoff_until = None;
        let u = p.poll().await;
        let source = cfg.sources[0].id();
        assert_eq!(u.snapshot.left.as_ref(), Some(&source));
        assert!(
            matches!(&u.changes.events[..], [.., Event::LocalLeft { source: s }] if *s == source)
        );
        let u = p.poll().await;
        assert_eq!(u.snapshot.left.as_ref(), Some(&source), "it stays left");
        assert!(u.changes.events.is_empty(), "reported once");
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
