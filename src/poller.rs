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
use crate::fingerprint;
use crate::namespace::{
    merged, rfc3339, Changes, LocalNode, Snapshot, SourcePeers, SourceStatus, SNAPSHOT_SCHEMA,
};
use crate::peer::{Address, Found, Peer, Region, Skipped, SourceId};
use crate::sharing::{self, Outgoing, SharedAnswer, SourceShare};
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
    /// Fleet-shared polling: the encoded results of the sources this node polled for the
    /// sharing group since the previous update (for a [`Subscription`]: since the previous
    /// update *it* received, as far back as the last 16 updates), empty when not sharing,
    /// alone, or nothing was polled. Opaque bytes for the adapter to send, unchanged, to every
    /// other member, whose poller takes them with [`PollerHandle::receive_shared`].
    pub shared: Vec<Arc<[u8]>>,
}

/// A finished poll of one source, sent back by its task.
struct Done {
    idx: usize,
    source: Box<dyn Source>,
    result: Result<Vec<Found>, SourceError>,
    /// When the poll started, unix ms (orders it against shared results).
    started_ms: u64,
    /// The answer before EPMD naming, kept when it is sent to the sharing group.
    raw: Option<Vec<Found>>,
}

/// A shared result ready to apply (named through this node's EPMD cache where needed).
struct Received {
    idx: usize,
    from: String,
    stamp: (u64, u64),
    found: Vec<Found>,
    skipped: Vec<Skipped>,
}

/// What an adapter asks of a running poller (see [`PollerHandle::share`]).
enum Command {
    Share(Vec<String>),
    Receive { from: String, result: Vec<u8> },
}

/// The poller's side of fleet-shared polling (see `src/sharing.rs`).
struct Sharing {
    /// `share_polling`: off, a share request is ignored.
    enabled: bool,
    /// This configuration's sharing key.
    key: u64,
    /// This node's name; without one it cannot share.
    me: Option<String>,
    /// The group, sorted, this node included; fewer than two: not sharing.
    members: Vec<String>,
    /// Results dropped that name no source of this node or do not decode.
    dropped: u64,
    /// Results encoded since the last update, for [`Update::shared`].
    outbox: Vec<Arc<[u8]>>,
    /// The results of the last [`RECENT_UPDATES`] updates, by update (poll) number, so a
    /// subscriber that skipped updates still gets the results they carried.
    recent: std::collections::VecDeque<(u64, Arc<[u8]>)>,
}

/// How many updates' shared results a subscriber that skips updates can still catch up on.
const RECENT_UPDATES: u64 = 16;

impl Sharing {
    fn active(&self) -> bool {
        self.me.is_some() && self.members.len() > 1
    }
}

struct Slot {
    id: SourceId,
    kind: &'static str,
    region: Region,
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
    /// Its id is final (not an unresolved `cluster = "auto"`), so it can be shared.
    final_id: bool,
    share: SourceShare,
}

impl Slot {
    /// The one place a slot learns who its source is: at start from the configuration, and
    /// again once the source resolved a placeholder (`cluster = "auto"`), so the source's id,
    /// its region, its peers' region and their `{region}` all name the resolved source.
    fn describe(&mut self, cfg: &SourceConfig) {
        self.id = cfg.id();
        self.region = Region::from(cfg.region());
        self.kind = cfg.kind();
        self.final_id = !matches!(cfg, SourceConfig::Ecs(e) if e.is_auto());
    }

    /// Notes a result taken for this source, polled here (`from: None`) or received from
    /// `from`: the source has been polled, the result's `(started_ms, seq)` is the last applied,
    /// and where it came from (a received one also proves its poller is not silent).
    fn took(&mut self, stamp: (u64, u64), from: Option<&str>) {
        self.polled = true;
        self.share.last_applied = Some(stamp);
        match from {
            Some(from) => {
                self.share.refresh();
                self.share.received_from = Some(from.to_string());
                self.share.received_at = Some(SystemTime::now());
            }
            None => {
                self.share.received_from = None;
                self.share.received_at = None;
            }
        }
    }

    /// Marks a complete answer (polled here or received): healthy, not backing off.
    fn succeeded(&mut self) {
        self.ok = true;
        self.error = None;
        self.last_success = Some(SystemTime::now());
        self.consecutive_failures = 0;
        self.backoff_until = None;
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
            region: self.region.to_string(),
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
            poller: self.share.poller.clone(),
            received_from: self.share.received_from.clone(),
            received_at: self.share.received_at.map(rfc3339),
            shared_dropped: self.share.dropped,
            poller_silent: self.share.silent,
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
    sharing: Sharing,
    commands_tx: mpsc::UnboundedSender<Command>,
    commands: mpsc::UnboundedReceiver<Command>,
    received_tx: mpsc::UnboundedSender<Received>,
    received: mpsc::UnboundedReceiver<Received>,
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
        let (commands_tx, commands) = mpsc::unbounded_channel();
        let (received_tx, received) = mpsc::unbounded_channel();
        Poller {
            slots: sources
                .into_iter()
                .map(|(cfg, backend, calls)| {
                    let mut slot = Slot {
                        id: cfg.id(),
                        kind: "",
                        region: Region::default(),
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
                        final_id: false,
                        share: SourceShare::default(),
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
            sharing: Sharing {
                enabled: config.share_polling,
                key: config.sharing_key(),
                me: config.local_node.clone(),
                members: Vec::new(),
                dropped: 0,
                outbox: Vec::new(),
                recent: Default::default(),
            },
            commands_tx,
            commands,
            received_tx,
            received,
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
    /// ([`PollerHandle::subscribe`]; the handle itself is one), and so is, at once, every
    /// shared result or sharing-group change that changes anything. Dropping the handle stops
    /// it.
    pub fn spawn(mut self) -> PollerHandle {
        let (tx, rx) = watch::channel(None::<Published>);
        let commands = self.commands_tx.clone();
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
                if tx.send(Some(self.published(update, previous))).is_err() {
                    // Every subscriber is gone.
                    return;
                }
                let next = started + jittered(self.interval, self.jitter);
                loop {
                    let changed = tokio::select! {
                        _ = tokio::time::sleep_until(next) => break,
                        Some(c) = self.commands.recv() => self.command(c),
                        Some(r) = self.received.recv() => self.accept(r),
                    };
                    if changed {
                        let previous = self.last.clone();
                        let update = self.publish(Instant::now());
                        if tx.send(Some(self.published(update, previous))).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        PollerHandle {
            first: Subscription::new(rx),
            task: Some(task),
            commands,
        }
    }

    async fn round(&mut self, wait: Duration) -> Update {
        let span = tracing::debug_span!("poll", n = self.poll_no + 1);
        let _enter = span.enter();
        let start = Instant::now();
        while let Ok(done) = self.rx.try_recv() {
            self.finish(done);
        }
        while let Ok(r) = self.received.try_recv() {
            self.accept(r);
        }
        for idx in 0..self.slots.len() {
            self.start(idx, start);
        }
        let deadline = tokio::time::Instant::now() + wait;
        while self.slots.iter().any(|s| s.in_flight.is_some()) {
            tokio::select! {
                done = tokio::time::timeout_at(deadline, self.rx.recv()) => match done {
                    Ok(Some(done)) => self.finish(done),
                    Ok(None) | Err(_) => break,
                },
                Some(c) = self.commands.recv() => {
                    self.command(c);
                }
                Some(r) = self.received.recv() => {
                    self.accept(r);
                }
            }
        }
        self.publish(start)
    }

    /// Makes the snapshot of the state now (merged again only if something changed), diffs it
    /// against the last one, logs its events, and returns it as the next update with the
    /// results encoded for the sharing group since the last one.
    fn publish(&mut self, start: Instant) -> Update {
        self.elect();
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
            sharing_with: if self.sharing.active() {
                self.sharing.members.len()
            } else {
                0
            },
            shared_dropped: self.sharing.dropped,
        };
        let changes = snapshot.diff_merged(&self.last);
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
        let shared = std::mem::take(&mut self.sharing.outbox);
        let recent = &mut self.sharing.recent;
        recent.extend(shared.iter().map(|r| (self.poll_no, r.clone())));
        while recent
            .front()
            .is_some_and(|(n, _)| *n + RECENT_UPDATES <= self.poll_no)
        {
            recent.pop_front();
        }
        Update {
            snapshot: self.last.clone(),
            changes,
            shared,
        }
    }

    /// An update as published to subscribers, with the shared results of recent updates.
    fn published(&self, update: Update, previous: Arc<Snapshot>) -> Published {
        Published {
            update,
            previous,
            recent: Arc::new(self.sharing.recent.iter().cloned().collect()),
        }
    }

    /// Fleet-shared polling: `members` (node names, this node included) are the nodes sharing
    /// polls with this one now. Elects, per source, the member that polls it (see
    /// `src/sharing.rs`); this node stops polling the sources elected elsewhere while their
    /// results arrive ([`Poller::receive_shared`]). An empty list, or this node alone, makes it
    /// poll every source itself. Ignored when `share_polling` is off or this node's name is
    /// unknown (`local_node`). Returns whether any source changed poller.
    pub fn share(&mut self, members: Vec<String>) -> bool {
        if !self.sharing.enabled || self.sharing.me.is_none() {
            tracing::debug!("share_polling is off (or this node's name is unknown): not sharing");
            return false;
        }
        let mut members = members;
        members.sort_unstable();
        members.dedup();
        if let Some(me) = &self.sharing.me {
            if !members.is_empty() && members.binary_search(me).is_err() {
                members.push(me.clone());
                members.sort_unstable();
            }
        }
        if members != self.sharing.members {
            tracing::debug!(members = members.len(), "sharing group changed");
            self.sharing.members = members;
            // A new member has none of the full results sent so far.
            for slot in &mut self.slots {
                slot.share.sent_full = None;
            }
        }
        self.elect()
    }

    /// Elects each source's poller among the members, with their regions as the last snapshot
    /// knows them; returns whether any changed.
    fn elect(&mut self) -> bool {
        let active = self.sharing.active();
        let me = self.sharing.me.as_deref();
        let last = &self.last;
        let region_of = |node: &str| -> Option<String> {
            if Some(node) == me {
                return last.local.as_ref().map(|p| p.region.to_string());
            }
            let i = last.peers.partition_point(|p| p.node.as_str() < node);
            last.peers
                .get(i)
                .filter(|p| p.node == node)
                .map(|p| p.region.to_string())
        };
        let mut any = false;
        for slot in &mut self.slots {
            let poller = if active && slot.final_id {
                sharing::elect(
                    slot.id.as_str(),
                    &slot.region,
                    &self.sharing.members,
                    region_of,
                )
                .filter(|w| Some(*w) != me)
                .map(str::to_string)
            } else {
                None
            };
            if slot.share.poller != poller {
                tracing::debug!(source = %slot.id, poller = ?poller, "poller elected");
                slot.share.follow(poller);
                any = true;
            }
        }
        any
    }

    /// Fleet-shared polling: takes a result `from` another member (the bytes of its
    /// [`Update::shared`]). Applied through the same rule as a poll here (a failure keeps the
    /// source's peers) when it is for a source of this node, with this node's sharing key, from
    /// the source's elected poller, and newer than the last result applied; otherwise dropped
    /// and counted ([`SourceStatus::shared_dropped`], or [`Snapshot::shared_dropped`] when it
    /// names no source or does not decode). With EPMD naming its peers are named through this
    /// node's own EPMD cache first (asynchronously). Returns whether it changed anything now.
    pub fn receive_shared(&mut self, from: &str, bytes: &[u8]) -> bool {
        let result = match sharing::decode(bytes) {
            Ok(r) => r,
            Err(e) => {
                self.sharing.dropped += 1;
                tracing::debug!(from, "shared result dropped: {e}");
                return false;
            }
        };
        let Some(idx) = self
            .slots
            .iter()
            .position(|s| s.id.as_str() == result.source)
        else {
            self.sharing.dropped += 1;
            tracing::debug!(
                from,
                source = result.source,
                "shared result dropped: no such source here"
            );
            return false;
        };
        let stamp = (result.started_ms, result.seq);
        let slot = &mut self.slots[idx];
        let waiting = matches!(result.answer, SharedAnswer::Waiting(_));
        let why = if result.key != self.sharing.key {
            Some("another sharing key (other sources or naming)")
        } else if slot.share.poller.as_deref() != Some(from) {
            Some("not from the source's elected poller")
        } else {
            None
        };
        if let Some(why) = why {
            slot.share.dropped += 1;
            tracing::debug!(from, source = %slot.id, "shared result dropped: {why}");
            return false;
        }
        // From the elected poller, with this node's key: the poller is alive and polls the
        // source, whatever becomes of this result, so this node does not poll it too. Liveness
        // must not wait for a result this node can apply: a follower that polled the source
        // itself while its poller seemed silent (a restart, a late join) holds its own, newer
        // stamp, and if its polls start just after the poller's, every result the poller sends
        // is older than its own last one; polling on because of that, it would never follow
        // again. Once it stops, the poller's next result is newer and applies.
        let was_silent = slot.share.silent;
        slot.share.refresh();
        if !waiting && slot.share.is_stale(stamp) {
            slot.share.dropped += 1;
            tracing::debug!(from, source = %slot.id, "shared result dropped: not newer than the last result applied");
            return was_silent;
        }
        match result.answer {
            SharedAnswer::Waiting(why) => {
                // The poller keeps the source but did not poll it this round. Nothing is applied.
                tracing::debug!(from, source = %slot.id, ?why, "the source's poller did not poll it this round");
                was_silent
            }
            SharedAnswer::Same { base } => {
                if slot.share.applied_base.as_ref() != Some(&(from.to_string(), base)) {
                    // Not applied here (missed, or polled here since): the poller sends a full
                    // result at least every FULL_EVERY results; until then this node keeps the
                    // peers it has.
                    slot.share.dropped += 1;
                    tracing::debug!(from, source = %slot.id, base, "shared result dropped: the same as a result not applied here");
                    return was_silent;
                }
                let was_ok = slot.ok;
                slot.took(stamp, Some(from));
                slot.succeeded();
                !was_ok
            }
            SharedAnswer::Failed(e) => self.apply(idx, Err(e), Vec::new(), stamp, Some(from)),
            SharedAnswer::Peers(mut found, skipped) => {
                // Names are this node's to make (its naming, or its own EPMD look-ups): a name
                // in a received answer is never used.
                for f in &mut found {
                    f.node = None;
                }
                if matches!(self.naming, NodeNaming::Epmd { .. }) {
                    // Named by this node's own EPMD look-ups, then applied (Poller::accept).
                    let (tx, naming, cache, timeout) = (
                        self.received_tx.clone(),
                        self.naming.clone(),
                        slot.epmd_names.clone(),
                        self.poll_timeout,
                    );
                    let from = from.to_string();
                    tokio::spawn(async move {
                        let found = name_from_epmd(found, &naming, &cache, timeout).await;
                        let _ = tx.send(Received {
                            idx,
                            from,
                            stamp,
                            found,
                            skipped,
                        });
                    });
                    was_silent
                } else {
                    self.apply(idx, Ok(found), skipped, stamp, Some(from))
                }
            }
        }
    }

    /// Applies a received result named through EPMD, unless a newer one was applied meanwhile.
    fn accept(&mut self, r: Received) -> bool {
        let share = &mut self.slots[r.idx].share;
        if share.is_stale(r.stamp) || share.poller.as_deref() != Some(r.from.as_str()) {
            share.dropped += 1;
            return false;
        }
        self.apply(r.idx, Ok(r.found), r.skipped, r.stamp, Some(&r.from))
    }

    fn command(&mut self, c: Command) -> bool {
        match c {
            Command::Share(members) => self.share(members),
            Command::Receive { from, result } => self.receive_shared(&from, &result),
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

    /// Starts a poll of a source, unless it is in flight, backing off, or followed (another
    /// member polls it and its results are fresh).
    fn start(&mut self, idx: usize, now: Instant) {
        let timeout = self.poll_timeout;
        let tx = self.tx.clone();
        let interval = self.interval;
        let leads = self.leads(idx);
        let slot = &mut self.slots[idx];
        if slot.in_flight.is_none() && !slot.share.polls_here(interval, slot.backoff_until) {
            tracing::debug!(source = %slot.id, poller = ?slot.share.poller, "polled by another member; not polled here");
            return;
        }
        let waiting = if slot.backoff_until.is_some_and(|t| t > now) {
            tracing::debug!(source = %slot.id, "backing off; not polled this round");
            Some(sharing::Waiting::BackingOff)
        } else if slot.source.is_none() {
            Some(sharing::Waiting::InFlight)
        } else {
            None
        };
        if let Some(waiting) = waiting {
            // Its followers hear that this poller is alive and keeps the source.
            if leads {
                let bytes = sharing::encode(
                    self.sharing.key,
                    slot.id.as_str(),
                    slot.share.seq,
                    sharing::unix_ms(SystemTime::now()),
                    Outgoing::Waiting(waiting),
                );
                self.sharing.outbox.extend(bytes.map(Arc::from));
            }
            return;
        }
        let Some(mut source) = slot.source.take() else {
            return;
        };
        let epmd = matches!(self.naming, NodeNaming::Epmd { .. })
            .then(|| (self.naming.clone(), slot.epmd_names.clone()));
        let started_ms = sharing::unix_ms(SystemTime::now());
        let task = tokio::spawn(async move {
            let polled =
                tokio::time::timeout(timeout, AssertUnwindSafe(source.poll()).catch_unwind()).await;
            let mut raw = None;
            let result = match polled {
                Ok(Ok(Ok(found))) => match &epmd {
                    Some((naming, cache)) => {
                        raw = leads.then(|| found.clone());
                        Ok(name_from_epmd(found, naming, cache, timeout).await)
                    }
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
                started_ms,
                raw,
            });
        });
        slot.in_flight = Some(task.abort_handle());
    }

    /// This node polls the source for other members of the sharing group.
    fn leads(&self, idx: usize) -> bool {
        let slot = &self.slots[idx];
        self.sharing.active() && slot.final_id && slot.share.poller.is_none()
    }

    fn finish(&mut self, done: Done) {
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
        slot.share.seq += 1;
        let stamp = (done.started_ms, slot.share.seq);
        if slot.share.is_stale(stamp) {
            tracing::debug!(source = %slot.id, "a newer shared result was applied while this poll ran; its answer is ignored");
            return;
        }
        let mut result = done.result;
        if self.leads(done.idx) {
            let key = self.sharing.key;
            let slot = &mut self.slots[done.idx];
            let mut raw = done.raw;
            let bytes = match &mut result {
                Ok(found) => {
                    let answer = raw.as_mut().unwrap_or(found);
                    let fp = fingerprint::answer(answer) ^ skipped_fingerprint(&skipped);
                    let out = match slot.share.send_same(fp, stamp.1) {
                        Some(base) => Outgoing::Same { base },
                        None => Outgoing::Peers(answer, &skipped),
                    };
                    sharing::encode(key, slot.id.as_str(), stamp.1, stamp.0, out)
                }
                Err(e) => {
                    sharing::encode(key, slot.id.as_str(), stamp.1, stamp.0, Outgoing::Failed(e))
                }
            };
            self.sharing.outbox.extend(bytes.map(Arc::from));
        }
        self.apply(done.idx, result, skipped, stamp, None);
    }

    /// The one rule for a source's result, polled here (`from: None`) or received from the
    /// member that polled it: a complete answer replaces the source's peers (named by this
    /// node's naming); a failure keeps them and marks the source failing (backing off when
    /// throttled). Returns whether it changed the peers or whether the source is failing.
    fn apply(
        &mut self,
        idx: usize,
        result: Result<Vec<Found>, SourceError>,
        skipped: Vec<Skipped>,
        stamp: (u64, u64),
        from: Option<&str>,
    ) -> bool {
        let naming = &self.naming;
        let interval = self.interval;
        let slot = &mut self.slots[idx];
        let was = (slot.polled, slot.ok);
        slot.took(stamp, from);
        let mut changed = false;
        match result {
            Ok(found) => {
                changed = slot.peers.apply(found, naming, &slot.region, &slot.id);
                self.changed |= changed;
                slot.share.applied_base = from.map(|f| (f.to_string(), stamp.1));
                slot.skipped = skipped;
                slot.succeeded();
                tracing::debug!(source = %slot.id, peers = slot.peers.len(), api_calls_total = slot.total_calls(), from, "source polled");
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
                    from,
                    "source poll failed; keeping its last-known peers: {e}"
                );
                let same_failure = !slot.ok && slot.error.as_ref().map(|x| x.kind) == Some(e.kind);
                changed |= !same_failure;
                slot.ok = false;
                slot.error = Some(e);
            }
        }
        changed || was != (slot.polled, slot.ok)
    }
}

/// A fingerprint of the skipped tasks (reasons and counts), so a "same" shared result also
/// means the same skipped tasks.
fn skipped_fingerprint(skipped: &[Skipped]) -> u64 {
    use std::hash::BuildHasher;
    let v: Vec<(crate::peer::SkipReason, usize)> =
        skipped.iter().map(|s| (s.reason, s.tasks)).collect();
    foldhash::quality::FixedState::default().hash_one(&v)
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
    /// Shared results of the recent updates, by update number (see [`Update::shared`]).
    recent: Arc<Vec<(u64, Arc<[u8]>)>>,
}

/// A poller running in the background. It is itself a [`Subscription`] ([`PollerHandle::next`]);
/// [`PollerHandle::subscribe`] adds more. Dropping it stops the poller.
pub struct PollerHandle {
    first: Subscription,
    task: Option<tokio::task::JoinHandle<()>>,
    commands: mpsc::UnboundedSender<Command>,
}

/// The poller has stopped, so it takes no more requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped;

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the poller has stopped")
    }
}

impl std::error::Error for Stopped {}

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

    /// Fleet-shared polling: the node names (this node included) in the sharing group now
    /// ([`Poller::share`]). Returns at once; the poller elects on its own task.
    ///
    /// # Errors
    /// [`Stopped`] when the poller has stopped.
    pub fn share(&self, members: Vec<String>) -> Result<(), Stopped> {
        self.commands
            .send(Command::Share(members))
            .map_err(|_| Stopped)
    }

    /// Fleet-shared polling: a result (one binary of another member's [`Update::shared`])
    /// `from` that member's node ([`Poller::receive_shared`]). Returns at once; decoding and
    /// applying happen on the poller's task, and an update is published at once when it
    /// changes anything.
    ///
    /// # Errors
    /// [`Stopped`] when the poller has stopped.
    pub fn receive_shared(&self, from: String, result: Vec<u8>) -> Result<(), Stopped> {
        self.commands
            .send(Command::Receive { from, result })
            .map_err(|_| Stopped)
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
            let Published {
                update,
                previous,
                recent,
            } = published;
            let (changes, shared) = if Arc::ptr_eq(&previous, &self.last) {
                (update.changes, update.shared)
            } else {
                // Skipped updates: their net changes, and every shared result they carried
                // (as far back as the poller keeps them).
                let seen = self.last.poll;
                let shared = recent
                    .iter()
                    .filter(|(n, _)| *n > seen)
                    .map(|(_, r)| r.clone())
                    .collect();
                (update.snapshot.diff_merged(&self.last), shared)
            };
            self.last = update.snapshot.clone();
            return Some(Update {
                snapshot: update.snapshot,
                changes,
                shared,
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

    pub(super) fn found(ip: &str) -> Found {
        Found::at(ip.parse().unwrap())
    }

    pub(super) fn throttled() -> SourceError {
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

    pub(super) fn poller(cfg: &Config, scripts: Vec<Vec<Step>>) -> (Poller, Vec<FixedSource>) {
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

    pub(super) fn nodes(u: &Update) -> Vec<&str> {
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

/// Fleet-shared polling: the poller's side (election effects, freshness, the one apply rule for
/// received results, drops), against in-memory sources.
#[cfg(test)]
mod sharing_tests {
    use super::*;
    use crate::namespace::Event;
    use crate::sharing::{elect, encode, unix_ms, Outgoing};
    use crate::source::fixed::{FixedSource, Step};
    use serde_json::json;

    // The poller test module's helpers: sources answering from a script, and how to read an
    // update.
    use super::tests::{found, nodes, poller, throttled};

    const ME: &str = "app@10.9.0.1";

    fn config(n: usize, me: &str) -> Config {
        let sources: Vec<_> = (0..n)
            .map(|i| json!({"type":"ecs","region":"eu-west-2","cluster": format!("c{i}")}))
            .collect();
        Config::from_value(
            json!({"node_basename":"app","polling_interval":"100ms","poll_timeout":"300ms",
            "share_polling": true, "local_node": me, "sources":sources}),
        )
        .unwrap()
    }

    /// A member name that the election makes the poller of `source` (in a group with ME).
    fn other_poller_of(source: &SourceId) -> String {
        (2..200)
            .map(|k| format!("app@10.9.0.{k}"))
            .find(|o| {
                let members = vec![ME.to_string(), o.clone()];
                elect(source.as_str(), "eu-west-2", &members, |_| None) == Some(o.as_str())
            })
            .unwrap()
    }

    /// Makes every source's last fresh result (or election) `ms` older: time passing, without
    /// waiting for it.
    fn age(p: &mut Poller, ms: u64) {
        for slot in &mut p.slots {
            if let Some(t) = &mut slot.share.fresh_since {
                *t = t.checked_sub(Duration::from_millis(ms)).unwrap();
            }
        }
    }

    fn polls(f: &FixedSource) -> u32 {
        *f.polls.lock().unwrap()
    }

    fn now_ms() -> u64 {
        unix_ms(SystemTime::now())
    }

    fn peers_result(cfg: &Config, seq: u64, started_ms: u64, ips: &[&str]) -> Vec<u8> {
        let found: Vec<Found> = ips.iter().map(|ip| found(ip)).collect();
        let id = cfg.sources[0].id();
        encode(
            cfg.sharing_key(),
            id.as_str(),
            seq,
            started_ms,
            Outgoing::Peers(&found, &[]),
        )
        .unwrap()
    }

    fn same_result(cfg: &Config, seq: u64, started_ms: u64, base: u64) -> Vec<u8> {
        let id = cfg.sources[0].id();
        encode(
            cfg.sharing_key(),
            id.as_str(),
            seq,
            started_ms,
            Outgoing::Same { base },
        )
        .unwrap()
    }

    #[tokio::test]
    async fn a_follower_whose_own_poll_is_newer_still_hears_its_poller_and_follows_again() {
        let cfg = config(1, ME);
        let other = other_poller_of(&cfg.sources[0].id());
        let (mut p, fixed) = poller(&cfg, vec![vec![Step::Answer(Ok(vec![found("10.1.0.4")]))]]);
        assert!(p.share(vec![other.clone(), ME.into()]));
        // Nothing heard for more than two intervals (a restart, a late join): polled here.
        age(&mut p, 250);
        let u = p.poll().await;
        assert_eq!(polls(&fixed[0]), 1);
        assert!(u.snapshot.sources[0].poller_silent);
        // The poller's result started before this node's own poll: not applied (older), but
        // the poller is alive, so this node stops polling the source.
        let older = now_ms() - 60_000;
        p.receive_shared(&other, &peers_result(&cfg, 7, older, &["10.1.0.9"]));
        let u = p.poll().await;
        assert_eq!(polls(&fixed[0]), 1, "the poller is heard: not polled here");
        assert!(!u.snapshot.sources[0].poller_silent);
        assert_eq!(
            nodes(&u),
            ["app@10.1.0.4"],
            "the older result is not applied"
        );
        assert_eq!(u.snapshot.sources[0].shared_dropped, 1);
        // A "same as" result this node never applied is not applied either, and keeps it
        // following too.
        age(&mut p, 150);
        p.receive_shared(&other, &same_result(&cfg, 8, now_ms() + 1, 7));
        age(&mut p, 150);
        let u = p.poll().await;
        assert_eq!(polls(&fixed[0]), 1, "still heard: not polled here");
        assert_eq!(u.snapshot.sources[0].shared_dropped, 2);
        // The poller's next full result is newer than this node's own poll: applied.
        assert!(p.receive_shared(
            &other,
            &peers_result(&cfg, 9, now_ms() + 2, &["10.1.0.4", "10.1.0.5"])
        ));
        let u = p.poll().await;
        assert_eq!(polls(&fixed[0]), 1);
        assert_eq!(nodes(&u), ["app@10.1.0.4", "app@10.1.0.5"]);
        assert_eq!(
            u.snapshot.sources[0].received_from.as_deref(),
            Some(other.as_str())
        );
    }

    #[tokio::test]
    async fn a_follower_does_not_poll_while_fresh_results_arrive_and_polls_after_two_silent_intervals(
    ) {
        let cfg = config(1, ME);
        let other = other_poller_of(&cfg.sources[0].id());
        let (mut p, fixed) = poller(&cfg, vec![vec![Step::Answer(Ok(vec![found("10.1.0.4")]))]]);
        p.poll().await;
        assert_eq!(polls(&fixed[0]), 1, "alone: polled here");
        assert!(p.share(vec![other.clone(), ME.into()]));
        let u = p.poll().await;
        assert_eq!(polls(&fixed[0]), 1, "followed: not polled here");
        let s = &u.snapshot.sources[0];
        assert_eq!(s.poller.as_deref(), Some(other.as_str()));
        assert_eq!(u.snapshot.sharing_with, 2);
        assert!(
            matches!(&u.changes.events[..], [Event::PollerChanged { poller: Some(o), members: 2, .. }] if *o == other),
            "{:?}",
            u.changes.events
        );
        assert_eq!(
            u.changes.events[0].to_string(),
            format!("ecs:eu-west-2/c0: polled by {other} (sharing with 1 nodes)")
        );
        // Started after this node's own poll (same millisecond at most).
        let t0 = now_ms() + 1;
        assert!(p.receive_shared(
            &other,
            &peers_result(&cfg, 1, t0, &["10.1.0.4", "10.1.0.5"])
        ));
        age(&mut p, 150);
        let u = p.poll().await;
        assert_eq!(nodes(&u), ["app@10.1.0.4", "app@10.1.0.5"]);
        assert_eq!(
            u.snapshot.sources[0].received_from.as_deref(),
            Some(other.as_str())
        );
        assert!(u.snapshot.sources[0].received_at.is_some());
        assert!(u.changes.events.is_empty(), "{:?}", u.changes.events);
        p.receive_shared(
            &other,
            &peers_result(&cfg, 2, t0 + 1, &["10.1.0.4", "10.1.0.5"]),
        );
        age(&mut p, 150);
        let u = p.poll().await;
        assert_eq!(polls(&fixed[0]), 1, "fresh results: still not polled here");
        assert!(!u.snapshot.sources[0].poller_silent);
        // Silent for more than two intervals (200 ms): polled here again, said once.
        age(&mut p, 250);
        let u = p.poll().await;
        assert_eq!(polls(&fixed[0]), 2, "silent poller: polled here");
        assert!(u.snapshot.sources[0].poller_silent);
        assert!(
            matches!(&u.changes.events[..], [Event::PollerSilent { poller, .. }] if *poller == other),
            "{:?}",
            u.changes.events
        );
        assert!(u.changes.events[0].is_warning());
        let u = p.poll().await;
        assert_eq!(polls(&fixed[0]), 3, "still silent: polled here every round");
        assert!(
            u.changes.events.is_empty(),
            "said once: {:?}",
            u.changes.events
        );
        // Results flow again: followed again.
        assert!(p.receive_shared(
            &other,
            &peers_result(&cfg, 3, now_ms() + 1000, &["10.1.0.6"])
        ));
        let u = p.poll().await;
        assert_eq!(polls(&fixed[0]), 3);
        assert!(!u.snapshot.sources[0].poller_silent);
        assert_eq!(nodes(&u), ["app@10.1.0.6"]);
        // Alone again: polled here, said once.
        assert!(p.share(vec![ME.into()]));
        let u = p.poll().await;
        assert_eq!(polls(&fixed[0]), 4);
        assert!(u.snapshot.sources[0].poller.is_none());
        assert!(u.snapshot.sources[0].received_from.is_none());
        assert!(
            matches!(
                &u.changes.events[..],
                [Event::PollerChanged { poller: None, .. }]
            ),
            "{:?}",
            u.changes.events
        );
        assert_eq!(
            u.changes.events[0].to_string(),
            "ecs:eu-west-2/c0: polled here"
        );
    }

    #[tokio::test]
    async fn an_older_or_repeated_result_never_removes_a_peer() {
        let cfg = config(1, ME);
        let other = other_poller_of(&cfg.sources[0].id());
        let (mut p, _) = poller(&cfg, vec![vec![Step::Answer(Ok(vec![]))]]);
        p.share(vec![ME.into(), other.clone()]);
        let t = now_ms();
        assert!(p.receive_shared(
            &other,
            &peers_result(&cfg, 5, t + 10, &["10.1.0.4", "10.1.0.5"])
        ));
        // Older (earlier start, whatever its sequence), then the same one again.
        assert!(!p.receive_shared(&other, &peers_result(&cfg, 9, t, &["10.1.0.4"])));
        assert!(!p.receive_shared(&other, &peers_result(&cfg, 5, t + 10, &["10.1.0.4"])));
        // Same start, lower sequence.
        assert!(!p.receive_shared(&other, &peers_result(&cfg, 4, t + 10, &[])));
        let u = p.poll().await;
        assert_eq!(nodes(&u), ["app@10.1.0.4", "app@10.1.0.5"]);
        assert_eq!(u.snapshot.sources[0].shared_dropped, 3);
        // Same start, higher sequence: newer.
        assert!(p.receive_shared(&other, &peers_result(&cfg, 6, t + 10, &["10.1.0.4"])));
        let u = p.poll().await;
        assert_eq!(nodes(&u), ["app@10.1.0.4"]);
    }

    #[tokio::test]
    async fn a_received_answer_is_named_by_this_nodes_naming_never_by_the_sender() {
        let cfg = config(1, ME);
        let id = cfg.sources[0].id();
        let other = other_poller_of(&id);
        let (mut p, _) = poller(&cfg, vec![vec![Step::Answer(Ok(vec![]))]]);
        p.share(vec![ME.into(), other.clone()]);
        let named = [Found {
            node: Some("evil@203.0.113.9".into()),
            ..found("10.1.0.4")
        }];
        let bytes = encode(
            cfg.sharing_key(),
            id.as_str(),
            1,
            now_ms() + 1,
            Outgoing::Peers(&named, &[]),
        )
        .unwrap();
        assert!(p.receive_shared(&other, &bytes));
        let u = p.poll().await;
        assert_eq!(nodes(&u), ["app@10.1.0.4"]);
    }

    #[tokio::test]
    async fn a_failed_shared_result_keeps_the_peers_and_marks_the_source_failing() {
        let cfg = config(1, ME);
        let other = other_poller_of(&cfg.sources[0].id());
        let (mut p, fixed) = poller(&cfg, vec![vec![Step::Answer(Ok(vec![]))]]);
        p.share(vec![ME.into(), other.clone()]);
        let t = now_ms();
        p.receive_shared(&other, &peers_result(&cfg, 1, t, &["10.1.0.4", "10.1.0.5"]));
        let u = p.poll().await;
        assert_eq!(nodes(&u), ["app@10.1.0.4", "app@10.1.0.5"]);
        let id = cfg.sources[0].id();
        let failed = encode(
            cfg.sharing_key(),
            id.as_str(),
            2,
            t + 1,
            Outgoing::Failed(&throttled()),
        )
        .unwrap();
        assert!(p.receive_shared(&other, &failed));
        let u = p.poll().await;
        assert_eq!(nodes(&u), ["app@10.1.0.4", "app@10.1.0.5"], "kept");
        assert!(u.changes.removed.is_empty());
        let s = &u.snapshot.sources[0];
        assert!(!s.ok && s.stale);
        assert_eq!(s.peers, 2);
        assert_eq!(s.error_kind, Some(ErrorKind::Throttled));
        assert!(s.error.as_deref().unwrap().contains("Rate exceeded"));
        assert_eq!(s.consecutive_failures, 1);
        assert_eq!(s.received_from.as_deref(), Some(other.as_str()));
        assert!(
            matches!(
                &u.changes.events[..],
                [Event::SourceFailing { kept_peers: 2, .. }]
            ),
            "{:?}",
            u.changes.events
        );
        assert_eq!(polls(&fixed[0]), 0, "no AWS call here");
    }

    #[tokio::test]
    async fn results_with_another_key_from_another_node_or_for_no_source_are_dropped_and_counted() {
        let cfg = config(1, ME);
        let id = cfg.sources[0].id();
        let other = other_poller_of(&id);
        let (mut p, _) = poller(&cfg, vec![vec![Step::Answer(Ok(vec![]))]]);
        p.share(vec![ME.into(), other.clone(), "app@10.9.0.250".into()]);
        let elected = p.slots[0].share.poller.clone().unwrap();
        let not_elected = [ME, other.as_str(), "app@10.9.0.250"]
            .into_iter()
            .find(|m| *m != elected && *m != ME)
            .unwrap();
        let t = now_ms();
        let found = [found("10.1.0.4")];
        let with_key = |key: u64, source: &str| {
            encode(key, source, 1, t, Outgoing::Peers(&found, &[])).unwrap()
        };
        let key = cfg.sharing_key();
        assert!(!p.receive_shared(&elected, &with_key(key ^ 1, id.as_str())));
        assert!(!p.receive_shared(not_elected, &with_key(key, id.as_str())));
        assert!(
            !p.receive_shared(ME, &with_key(key, id.as_str())),
            "from itself"
        );
        assert!(!p.receive_shared(&elected, &with_key(key, "ecs:eu-west-2/elsewhere")));
        assert!(!p.receive_shared(&elected, b"\xff\xff\xff garbage"));
        let u = p.poll().await;
        assert!(u.snapshot.peers.is_empty());
        assert_eq!(u.snapshot.sources[0].shared_dropped, 3);
        assert_eq!(u.snapshot.shared_dropped, 2, "no such source, undecodable");
        assert!(u.snapshot.sources[0].received_from.is_none());
        // The right one is applied.
        assert!(p.receive_shared(&elected, &with_key(key, id.as_str())));
    }

    #[tokio::test]
    async fn a_same_result_refreshes_freshness_without_merging_again() {
        let cfg = config(1, ME);
        let id = cfg.sources[0].id();
        let other = other_poller_of(&id);
        let (mut p, fixed) = poller(&cfg, vec![vec![Step::Answer(Ok(vec![]))]]);
        p.share(vec![ME.into(), other.clone()]);
        let t = now_ms();
        p.receive_shared(&other, &peers_result(&cfg, 1, t, &["10.1.0.4", "10.1.0.5"]));
        let first = p.poll().await;
        let same = |seq: u64, base: u64| same_result(&cfg, seq, t + seq, base);
        for seq in 2..6 {
            age(&mut p, 150);
            assert!(!p.receive_shared(&other, &same(seq, 1)), "nothing changed");
            assert!(!p.changed, "not merged again");
            let u = p.poll().await;
            let shared_peers = first
                .snapshot
                .peers
                .iter()
                .zip(&u.snapshot.peers)
                .all(|(a, b)| Arc::ptr_eq(a, b));
            assert!(shared_peers && u.snapshot.peers.len() == 2);
            assert!(!u.snapshot.sources[0].poller_silent, "kept fresh");
        }
        assert_eq!(
            polls(&fixed[0]),
            0,
            "600 ms of 'same' results: never polled here"
        );
        // A "same" naming a full result this node never applied is dropped.
        assert!(!p.receive_shared(&other, &same(7, 6)));
        let u = p.poll().await;
        assert_eq!(u.snapshot.sources[0].shared_dropped, 1);
    }

    /// A poller that backs off after throttling (or whose poll is still running) tells its
    /// followers it is alive each round, so none of them takes it for silent and polls on its
    /// own: that would multiply the calls exactly when AWS throttles. The short soak with
    /// sharing found it: followers polled us-west-2 while its poller backed off (65-69 calls a
    /// minute under throttling against ~60 fault-free). Without the word from the poller, the
    /// follower below polls in the third round of the poller's back-off.
    #[tokio::test]
    async fn a_poller_backing_off_keeps_its_followers_from_polling() {
        let leader_cfg = config(1, ME);
        let id = leader_cfg.sources[0].id();
        let follower = (2..200)
            .map(|k| format!("app@10.9.0.{k}"))
            .find(|o| {
                let members = vec![ME.to_string(), o.clone()];
                elect(id.as_str(), "eu-west-2", &members, |_| None) == Some(ME)
            })
            .unwrap();
        let follower_cfg = config(1, &follower);
        let members = vec![ME.to_string(), follower.clone()];
        let (mut l, lf) = poller(
            &leader_cfg,
            vec![vec![
                Step::Answer(Ok(vec![found("10.1.0.4")])),
                Step::Answer(Err(throttled())),
            ]],
        );
        let (mut f, ff) = poller(&follower_cfg, vec![vec![Step::Answer(Ok(vec![]))]]);
        l.share(members.clone());
        f.share(members);
        async fn relay(l: &mut Poller, f: &mut Poller) -> usize {
            let u = l.poll().await;
            for b in &u.shared {
                f.receive_shared(ME, b);
            }
            u.shared.len()
        }
        // The poller's first poll answers; its second is throttled: it backs off (held far in
        // the future here, as a long back-off would).
        assert_eq!(relay(&mut l, &mut f).await, 1);
        assert_eq!(nodes(&f.poll().await), ["app@10.1.0.4"]);
        assert_eq!(relay(&mut l, &mut f).await, 1);
        assert_eq!(polls(&lf[0]), 2);
        l.slots[0].backoff_until = Some(Instant::now() + Duration::from_secs(60));
        let u = f.poll().await;
        assert!(
            !u.snapshot.sources[0].ok,
            "the poller's failure is the follower's"
        );
        assert_eq!(nodes(&u), ["app@10.1.0.4"], "a failure keeps the peers");
        for round in 0..4 {
            // Time passes on the follower: its last result, and its own back-off after the
            // received failure, grow older than two intervals.
            age(&mut f, 250);
            f.slots[0].backoff_until = None;
            assert_eq!(
                relay(&mut l, &mut f).await,
                1,
                "round {round}: a word from the poller"
            );
            let u = f.poll().await;
            assert_eq!(
                polls(&ff[0]),
                0,
                "round {round}: the follower polled on its own"
            );
            assert!(!u.snapshot.sources[0].poller_silent);
            assert_eq!(nodes(&u), ["app@10.1.0.4"]);
        }
        assert_eq!(polls(&lf[0]), 2, "the poller itself waits out its back-off");
        // Gone quiet for real (no word at all): the follower polls the source itself.
        age(&mut f, 250);
        f.poll().await;
        assert_eq!(polls(&ff[0]), 1);
    }

    #[tokio::test]
    async fn two_pollers_wired_to_each_other_agree_and_the_follower_never_calls_aws() {
        let cfg_me = config(2, ME);
        let ids: Vec<SourceId> = cfg_me.sources.iter().map(SourceConfig::id).collect();
        // A partner that polls source 0 (source 1 goes to whichever the election says).
        let other = other_poller_of(&ids[0]);
        let cfg_other = config(2, &other);
        let scripts = || {
            vec![
                vec![
                    Step::Answer(Ok(vec![found("10.1.0.4")])),
                    Step::Answer(Ok(vec![found("10.1.0.4"), found("10.1.0.5")])),
                    Step::Answer(Ok(vec![found("10.1.0.5")])),
                    Step::Answer(Err(throttled())),
                ],
                vec![
                    Step::Answer(Ok(vec![found("10.2.0.4")])),
                    Step::Answer(Ok(vec![found("10.2.0.4"), found("10.2.0.6")])),
                ],
            ]
        };
        let (mut me, my_sources) = poller(&cfg_me, scripts());
        let (mut them, their_sources) = poller(&cfg_other, scripts());
        let members = vec![ME.to_string(), other.clone()];
        me.share(members.clone());
        them.share(members);
        let mut full = 0;
        let mut same = 0;
        for round in 0..6 {
            let a = them.poll().await;
            for r in &a.shared {
                match crate::sharing::decode(r).unwrap().answer {
                    crate::sharing::SharedAnswer::Same { .. } => same += 1,
                    _ => full += 1,
                }
                me.receive_shared(&other, r);
            }
            let b = me.poll().await;
            for r in &b.shared {
                match crate::sharing::decode(r).unwrap().answer {
                    crate::sharing::SharedAnswer::Same { .. } => same += 1,
                    _ => full += 1,
                }
                them.receive_shared(ME, r);
            }
            // Their state with my results applied (published without polling).
            let a = them.publish(Instant::now());
            assert_eq!(
                nodes(&a),
                nodes(&b),
                "round {round}: both nodes see the same peers"
            );
            assert_eq!(
                a.snapshot.sources.iter().map(|s| s.ok).collect::<Vec<_>>(),
                b.snapshot.sources.iter().map(|s| s.ok).collect::<Vec<_>>()
            );
        }
        assert_eq!(
            polls(&my_sources[0]),
            0,
            "the follower made no call for source 0"
        );
        assert!(
            polls(&their_sources[0]) >= 4,
            "the poller polled it (backing off once throttled)"
        );
        for (i, id) in ids.iter().enumerate() {
            let led_by_me = me.slots[i].share.poller.is_none();
            assert_eq!(
                led_by_me,
                them.slots[i].share.poller.is_some(),
                "{id}: one poller, agreed"
            );
            let follower = if led_by_me {
                &their_sources[i]
            } else {
                &my_sources[i]
            };
            assert_eq!(polls(follower), 0, "{id}: its follower made no call");
        }
        assert!(
            full >= 3 && same >= 1,
            "changes sent in full, repeats as 'same': {full} full, {same} same"
        );
        let me_last = me.poll().await;
        assert!(
            !me_last.snapshot.sources[0].ok,
            "the poller's failure reached the follower"
        );
        assert_eq!(
            nodes(&me_last),
            ["app@10.1.0.5", "app@10.2.0.4", "app@10.2.0.6"]
        );
    }

    #[tokio::test]
    async fn a_received_result_is_published_at_once_without_a_call() {
        let mut cfg = config(1, ME);
        cfg.polling_interval = Duration::from_secs(3600);
        let other = other_poller_of(&cfg.sources[0].id());
        let (p, fixed) = poller(&cfg, vec![vec![Step::Answer(Ok(vec![found("10.1.0.4")]))]]);
        let mut h = p.spawn();
        let first = tokio::time::timeout(Duration::from_secs(5), h.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(nodes(&first), ["app@10.1.0.4"]);
        h.share(vec![ME.into(), other.clone()]).unwrap();
        h.receive_shared(
            other.clone(),
            peers_result(&cfg, 1, now_ms() + 1000, &["10.1.0.4", "10.1.0.7"]),
        )
        .unwrap();
        // The next round is an hour away: an update within seconds is the received result's.
        let u = loop {
            let u = tokio::time::timeout(Duration::from_secs(5), h.next())
                .await
                .unwrap()
                .unwrap();
            if !u.changes.added.is_empty() {
                break u;
            }
        };
        assert_eq!(nodes(&u), ["app@10.1.0.4", "app@10.1.0.7"]);
        assert_eq!(
            u.snapshot.sources[0].received_from.as_deref(),
            Some(other.as_str())
        );
        assert_eq!(polls(&fixed[0]), 1, "no call for it");
        h.stop().await;
    }

    #[tokio::test]
    async fn a_subscriber_that_skips_updates_still_gets_their_shared_results() {
        let (tx, rx) = watch::channel(None::<Published>);
        let mut sub = Subscription::new(rx);
        let snapshot = |poll| {
            Arc::new(Snapshot {
                poll,
                ..Snapshot::empty()
            })
        };
        let result = |b: u8| -> Arc<[u8]> { Arc::from(vec![b]) };
        let mut recent = Vec::new();
        let mut previous = snapshot(0);
        let mut publish = |poll: u64, shared: Vec<Arc<[u8]>>| {
            recent.extend(shared.iter().map(|r| (poll, r.clone())));
            let now = snapshot(poll);
            let update = Update {
                snapshot: now.clone(),
                changes: Changes::default(),
                shared,
            };
            tx.send(Some(Published {
                update,
                previous: std::mem::replace(&mut previous, now),
                recent: Arc::new(recent.clone()),
            }))
            .unwrap();
        };
        // Two updates before the subscriber looks: it gets both updates' results.
        publish(1, vec![result(1)]);
        publish(2, vec![result(2), result(3)]);
        let u = sub.next().await.unwrap();
        assert_eq!(u.snapshot.poll, 2);
        assert_eq!(u.shared, vec![result(1), result(2), result(3)]);
        // The next one only: its own results, not again the earlier ones.
        publish(3, vec![result(4)]);
        assert_eq!(sub.next().await.unwrap().shared, vec![result(4)]);
    }

    #[tokio::test]
    async fn the_poller_sends_changed_answers_in_full_and_repeats_as_same() {
        let cfg = config(1, ME);
        let id = cfg.sources[0].id();
        // A partner that does NOT poll the source: this node does.
        let other = (2..200)
            .map(|k| format!("app@10.9.0.{k}"))
            .find(|o| {
                let m = vec![ME.to_string(), o.clone()];
                elect(id.as_str(), "eu-west-2", &m, |_| None) == Some(ME)
            })
            .unwrap();
        let (mut p, _) = poller(
            &cfg,
            vec![vec![
                Step::Answer(Ok(vec![found("10.1.0.4")])),
                Step::Answer(Ok(vec![found("10.1.0.4")])),
                Step::Answer(Ok(vec![found("10.1.0.4")])),
                Step::Answer(Ok(vec![found("10.1.0.5")])),
            ]],
        );
        let alone = p.poll().await;
        assert!(alone.shared.is_empty(), "alone: nothing to share");
        p.share(vec![ME.into(), other.clone()]);
        let decoded = |u: &Update| {
            assert_eq!(u.shared.len(), 1);
            crate::sharing::decode(&u.shared[0]).unwrap()
        };
        let r1 = decoded(&p.poll().await);
        assert!(matches!(&r1.answer, SharedAnswer::Peers(f, _) if f.len() == 1));
        assert_eq!(
            (r1.key, r1.source.as_str()),
            (cfg.sharing_key(), id.as_str())
        );
        let r2 = decoded(&p.poll().await);
        assert_eq!(r2.answer, SharedAnswer::Same { base: r1.seq });
        assert!(r2.seq > r1.seq);
        let r3 = decoded(&p.poll().await);
        assert!(
            matches!(&r3.answer, SharedAnswer::Peers(f, _) if f[0].ip.to_string() == "10.1.0.5")
        );
        // A new member gets a full result, though the answer did not change.
        p.share(vec![ME.into(), other, "app@10.9.0.250".into()]);
        if p.slots[0].share.poller.is_none() {
            let r4 = decoded(&p.poll().await);
            assert!(matches!(r4.answer, SharedAnswer::Peers(..)));
        }
    }
}
