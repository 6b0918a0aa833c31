//! The poller: polls every source concurrently, keeps each source's last-known peers when it
//! fails, backs off per source when throttled, and merges everything into a [`Snapshot`].
//!
//! Each source's poll runs in its own tokio task and reports back over a channel, so a round
//! waits at most `polling_interval` (or `poll_timeout` for a one-shot poll): a black-holed region
//! delays nobody else, and its answer (or timeout) is merged in whichever round it arrives.
//!
//! Split by concern: a source's state, grouped (`slot.rs`); the handle and subscriptions users
//! hold (`handle.rs`); fleet-shared polling (`crate::sharing`), which this loop asks whether
//! to poll a source, what to send after a poll and what to apply of a received result.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::FutureExt;
use tokio::sync::{mpsc, watch};

use crate::aws::AwsClients;
use crate::config::{Config, NodeNaming};
use crate::error::{ErrorKind, SourceError};
use crate::namespace::{
    explain_refused_regions, merged, rfc3339, Changes, LocalNode, Snapshot, SNAPSHOT_SCHEMA,
};
use crate::peer::{count_skips, merge_skips, Address, Found, Peer, SkipReason, Skipped, SourceId};
use crate::sharing::{self, Answer, Inbound, Sharing, Stamp, Waiting};
use crate::source::{self, Polled, Source};

mod handle;
mod slot;

use handle::{Command, Published};
pub use handle::{PollerHandle, Stopped, Subscription};
use slot::Slot;

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
    /// What the poll found but could not use (empty when it failed).
    skipped: Vec<Skipped>,
    /// When the poll started, unix ms (orders it against shared results).
    started_ms: u64,
    /// The answer before EPMD naming, kept when it is sent to the sharing group.
    raw: Option<Vec<Found>>,
    /// What EPMD naming skipped (never shared: each node names by its own EPMD look-ups).
    named_skipped: Vec<Skipped>,
    /// The source answered that it is absent, with the reason.
    absent: Option<String>,
}

/// A shared result named through this node's EPMD cache, ready to apply.
struct Named {
    idx: usize,
    from: String,
    stamp: Stamp,
    answer: Answer,
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
    /// `region_probe_interval`: how often an absent source is polled.
    probe: Duration,
    jitter: f64,
    poll_timeout: Duration,
    /// `distribution_port`, for the words of what naming skips.
    dist_port: u16,
    /// Where a peer's EPMD listens (`node_names = "epmd"`): [`crate::epmd::EPMD_PORT`].
    epmd_port: u16,
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
    named_tx: mpsc::UnboundedSender<Named>,
    named: mpsc::UnboundedReceiver<Named>,
}

impl Poller {
    /// Builds the AWS clients (one credential chain, one client per service and region) and a
    /// backend per source. Makes no API call yet.
    pub async fn new(config: Config) -> Poller {
        let clients = Arc::new(AwsClients::load(&config).await);
        let sources = config
            .sources
            .iter()
            .flat_map(|s| source::build(&config, s, &clients))
            .collect();
        Poller::with_sources(&config, sources)
    }

    pub(crate) fn with_sources(config: &Config, sources: Vec<source::Built>) -> Poller {
        let (tx, rx) = mpsc::unbounded_channel();
        let (commands_tx, commands) = mpsc::unbounded_channel();
        let (named_tx, named) = mpsc::unbounded_channel();
        Poller {
            slots: sources
                .into_iter()
                .map(|(cfg, backend, calls)| Slot::new(&cfg, backend, calls))
                .collect(),
            naming: config.node.clone(),
            local: LocalNode {
                node: config.local_node.clone(),
                ip: config.local_ip,
            },
            interval: config.polling_interval,
            probe: config.region_probe_interval,
            jitter: config.jitter,
            poll_timeout: config.poll_timeout,
            dist_port: config.distribution_port,
            epmd_port: crate::epmd::EPMD_PORT,
            poll_no: 0,
            last: Arc::new(Snapshot::empty()),
            changed: true,
            local_source: None,
            tx,
            rx,
            sharing: Sharing::new(config),
            commands_tx,
            commands,
            named_tx,
            named,
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
                let wait = if self.slots.iter().any(|s| !s.health.polled) {
                    self.poll_timeout + Duration::from_secs(1)
                } else {
                    self.interval.min(self.poll_timeout)
                };
                let previous = self.last.clone();
                let update = self.round(wait).await;
                if tx.send(Some(self.published(update, previous))).is_err() {
                    return;
                }
                let next = started + jittered(self.interval, self.jitter);
                loop {
                    let changed = tokio::select! {
                        _ = tokio::time::sleep_until(next) => break,
                        Some(c) = self.commands.recv() => self.command(c),
                        Some(r) = self.named.recv() => self.accept(r),
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
        while let Ok(r) = self.named.try_recv() {
            self.accept(r);
        }
        for idx in 0..self.slots.len() {
            self.start(idx, start);
        }
        let deadline = tokio::time::Instant::now() + wait;
        while self.slots.iter().any(|s| s.run.in_flight.is_some()) {
            tokio::select! {
                done = tokio::time::timeout_at(deadline, self.rx.recv()) => match done {
                    Ok(Some(done)) => self.finish(done),
                    Ok(None) | Err(_) => break,
                },
                Some(c) = self.commands.recv() => {
                    self.command(c);
                }
                Some(r) = self.named.recv() => {
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
        self.sharing
            .elect(self.slots.iter_mut().map(Slot::shared), &self.last);
        self.poll_no += 1;
        for slot in &mut self.slots {
            slot.calls.count_round();
        }
        let (peers, conflicts, local) = merged(
            std::mem::take(&mut self.changed),
            self.slots.iter().map(|s| s.known.peers.as_slice()),
            &self.local,
            &self.last,
        );
        let left = self.leaving(&local);
        let mut sources: Vec<_> = self.slots.iter().map(Slot::status).collect();
        explain_refused_regions(&mut sources);
        let snapshot = Snapshot {
            schema: SNAPSHOT_SCHEMA,
            poll: self.poll_no,
            taken_at: rfc3339(SystemTime::now()),
            duration_ms: start.elapsed().as_millis() as u64,
            peers,
            sources,
            conflicts,
            local,
            left,
            sharing_with: self.sharing.group_size(),
            shared_dropped: self.sharing.dropped(),
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
        Update {
            snapshot: self.last.clone(),
            changes,
            shared: self.sharing.take_outbox(self.poll_no),
        }
    }

    /// An update as published to subscribers, with the shared results of recent updates.
    fn published(&self, update: Update, previous: Arc<Snapshot>) -> Published {
        Published {
            update,
            previous,
            recent: Arc::new(self.sharing.recent()),
        }
    }

    /// Fleet-shared polling: `members` (node names, this node included) are the nodes sharing
    /// polls with this one now. Elects, per source, the member that polls it (see
    /// `src/sharing/`); this node stops polling the sources elected elsewhere while their
    /// results arrive ([`Poller::receive_shared`]). An empty list, or this node alone, makes it
    /// poll every source itself. Ignored when `share_polling` is off or this node's name is
    /// unknown (`local_node`). Returns whether any source changed poller.
    pub fn share(&mut self, members: Vec<String>) -> bool {
        let sources = self.slots.iter_mut().map(Slot::shared);
        self.sharing.share(members, sources, &self.last)
    }

    /// Fleet-shared polling: takes a result `from` another member (the bytes of its
    /// [`Update::shared`]). Applied through the same rule as a poll here (a failure keeps the
    /// source's peers) when it is for a source of this node, with this node's sharing key, from
    /// the source's elected poller, and newer than the last result applied; otherwise dropped
    /// and counted ([`SourceStatus::shared_dropped`](crate::SourceStatus::shared_dropped), or
    /// [`Snapshot::shared_dropped`] when it names no source or does not decode). With EPMD
    /// naming its peers are named through this node's own EPMD cache first (asynchronously).
    /// Returns whether it changed anything now.
    pub fn receive_shared(&mut self, from: &str, bytes: &[u8]) -> bool {
        let sources = self.slots.iter_mut().map(Slot::shared);
        let (idx, answer, stamp, heard_again) = match self.sharing.receive(from, bytes, sources) {
            Inbound::Nothing { heard_again } => return heard_again,
            Inbound::Apply {
                idx,
                answer,
                stamp,
                heard_again,
            } => (idx, answer, stamp, heard_again),
        };
        match answer {
            Answer::Complete(found, skipped) if matches!(self.naming, NodeNaming::Epmd { .. }) => {
                // Named by this node's own EPMD look-ups, then applied (Poller::accept).
                let (tx, naming, cache, timeout) = (
                    self.named_tx.clone(),
                    self.naming.clone(),
                    self.slots[idx].known.epmd_names.clone(),
                    self.poll_timeout,
                );
                let ports = (self.epmd_port, self.dist_port);
                let from = from.to_string();
                tokio::spawn(async move {
                    let (found, named_skipped) =
                        name_from_epmd(found, &naming, &cache, timeout, ports).await;
                    let answer = Answer::Complete(found, merge_skips(skipped, named_skipped));
                    let _ = tx.send(Named {
                        idx,
                        from,
                        stamp,
                        answer,
                    });
                });
                heard_again
            }
            answer => self.apply(idx, answer, stamp, Some(from)),
        }
    }

    /// Applies a received result named through EPMD, unless a newer one was applied meanwhile
    /// or its sender no longer polls the source.
    fn accept(&mut self, r: Named) -> bool {
        if !self.slots[r.idx].share.still_applies(r.stamp, &r.from) {
            return false;
        }
        self.apply(r.idx, r.answer, r.stamp, Some(&r.from))
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
            .any(|s| &s.ident.id == source && s.health.ok)
            .then(|| source.clone())
    }

    /// Starts a poll of a source, unless it is in flight, backing off, or followed (another
    /// member polls it and its results are fresh).
    fn start(&mut self, idx: usize, now: Instant) {
        let (timeout, interval) = (self.poll_timeout, self.interval);
        let slot = &mut self.slots[idx];
        let backoff_until = slot.health.backoff_until;
        if slot.run.in_flight.is_none()
            && !self
                .sharing
                .should_poll(slot.shared(), interval, backoff_until)
        {
            tracing::debug!(source = %slot.ident.id, poller = ?slot.share.poller, "polled by another member; not polled here");
            return;
        }
        if slot.run.in_flight.is_none() && slot.health.probe_later(now) {
            tracing::debug!(source = %slot.ident.id, "absent; probed again at region_probe_interval");
            return;
        }
        let waiting = if slot.health.backing_off(now) {
            tracing::debug!(source = %slot.ident.id, "backing off; not polled this round");
            Some(Waiting::BackingOff)
        } else if slot.run.source.is_none() {
            Some(Waiting::InFlight)
        } else {
            None
        };
        if let Some(why) = waiting {
            self.sharing.not_polled(slot.shared(), why);
            return;
        }
        let leads = self.sharing.leads(&slot.shared());
        let Some(mut source) = slot.run.source.take() else {
            return;
        };
        let epmd = matches!(self.naming, NodeNaming::Epmd { .. })
            .then(|| (self.naming.clone(), slot.known.epmd_names.clone()));
        let ports = (self.epmd_port, self.dist_port);
        let started_ms = sharing::unix_ms(SystemTime::now());
        let tx = self.tx.clone();
        let task = tokio::spawn(async move {
            let polled =
                tokio::time::timeout(timeout, AssertUnwindSafe(source.poll()).catch_unwind()).await;
            let mut raw = None;
            let mut skipped = Vec::new();
            let mut named_skipped = Vec::new();
            let mut absent = None;
            let result = match polled {
                Ok(Ok(Ok(Polled {
                    found,
                    skipped: s,
                    absent: a,
                }))) => {
                    skipped = s;
                    absent = a;
                    match &epmd {
                    Some((naming, cache)) => {
                        raw = leads.then(|| found.clone());
                        let (named, skips) =
                            name_from_epmd(found, naming, cache, timeout, ports).await;
                        named_skipped = skips;
                        Ok(named)
                    }
                    None => Ok(found),
                    }
                }
                Ok(Ok(Err(e))) => Err(e),
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
                skipped,
                started_ms,
                raw,
                named_skipped,
                absent,
            });
        });
        slot.run.in_flight = Some(task.abort_handle());
    }

    fn finish(&mut self, done: Done) {
        let Done {
            idx,
            source,
            mut result,
            skipped,
            started_ms,
            raw,
            named_skipped,
            absent,
        } = done;
        let mut source = source;
        // Regions a resolved source stands for besides its own: a slot each, polled at once
        // (this round waits for them as for every source in flight).
        for (cfg, backend, calls) in source.take_siblings() {
            tracing::debug!(source = %cfg.id(), "polled from now on");
            self.slots.push(Slot::new(&cfg, backend, calls));
            self.changed = true;
            self.start(self.slots.len() - 1, Instant::now());
        }
        let slot = &mut self.slots[idx];
        if self.local.ip.is_none() {
            self.local.ip = source.local_ip();
            self.changed |= self.local.ip.is_some();
        }
        if let Some(cfg) = source.resolved() {
            slot.describe(cfg);
        }
        slot.run.source = Some(source);
        slot.run.in_flight = None;
        let shared = slot.shared();
        let Some(stamp) = self
            .sharing
            .polled(shared, started_ms, &mut result, raw, &skipped)
        else {
            return;
        };
        let answer = match (result, absent) {
            (Ok(_), Some(why)) => Answer::Absent(why),
            (Ok(found), None) => Answer::Complete(found, merge_skips(skipped, named_skipped)),
            (Err(e), _) => Answer::Failed(e),
        };
        self.apply(idx, answer, stamp, None);
    }

    /// The one rule for a source's result, polled here (`from: None`) or received from the
    /// member that polled it: a complete answer replaces the source's peers (named by this
    /// node's naming); the same answer again keeps them; a failure keeps them and marks the
    /// source failing (backing off when throttled). Returns whether it changed the peers or
    /// whether the source is failing.
    fn apply(&mut self, idx: usize, answer: Answer, stamp: Stamp, from: Option<&str>) -> bool {
        let slot = &mut self.slots[idx];
        let was = (slot.health.polled, slot.health.ok);
        slot.health.polled = true;
        slot.share
            .applied(stamp, from, matches!(answer, Answer::Complete(..)));
        let changed = match answer {
            Answer::Complete(found, skipped) => {
                let ident = &slot.ident;
                let changed = slot
                    .known
                    .peers
                    .apply(found, &self.naming, &ident.region, &ident.id);
                self.changed |= changed;
                slot.known.skipped =
                    merge_skips(skipped, slot.known.peers.naming_skips(self.dist_port));
                slot.health.succeeded();
                tracing::debug!(source = %ident.id, peers = slot.known.peers.len(), api_calls_total = slot.calls.total(), from, "source polled");
                changed
            }
            Answer::Unchanged => {
                slot.health.succeeded();
                false
            }
            Answer::Absent(why) => {
                // A complete answer: nothing there. Asked again at the probe interval, with no
                // warning and no back-off.
                let ident = &slot.ident;
                let changed =
                    slot.known
                        .peers
                        .apply(Vec::new(), &self.naming, &ident.region, &ident.id);
                self.changed |= changed;
                slot.known.skipped = Vec::new();
                let news = slot.health.absent.as_deref() != Some(why.as_str());
                if news {
                    tracing::debug!(source = %ident.id, region = %ident.region, "absent: {why}; probed again every {:?}", self.probe);
                }
                slot.health.absent_until(why, Instant::now() + self.probe);
                changed || news
            }
            Answer::Failed(e) => {
                // Reported once, as a SourceFailing event of the round (see Snapshot::diff).
                tracing::debug!(
                    source = %slot.ident.id,
                    region = %slot.ident.region,
                    action = e.action,
                    kind = %e.kind,
                    failures = slot.health.consecutive_failures + 1,
                    kept_peers = slot.known.peers.len(),
                    from,
                    "source poll failed; keeping its last-known peers: {e}"
                );
                slot.health.failed(e, self.interval)
            }
        };
        changed || was != (slot.health.polled, slot.health.ok)
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        for slot in &self.slots {
            if let Some(h) = &slot.run.in_flight {
                h.abort();
            }
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

/// EPMD naming: names each peer by what its EPMD has registered (see [`NodeNaming::choose`]),
/// asking the EPMD at `epmd_port` of each peer's IP. A name once learnt is kept while the IP
/// stays listed, so a failed lookup never renames or drops a known peer; a peer not named yet
/// (its EPMD unreachable, or listing no node: it is starting) is left out of this poll and
/// asked again next time. A peer whose EPMD lists several names and none is `node_basename`
/// is left out as a skip, [`SkipReason::SeveralEpmdNames`] (with `dist_port`'s words), which the
/// source's status counts: asking again gives the same answer until someone fixes it.
async fn name_from_epmd(
    found: Vec<Found>,
    naming: &NodeNaming,
    cache: &std::sync::Mutex<HashMap<Address, String>>,
    poll_timeout: Duration,
    (epmd_port, dist_port): (u16, u16),
) -> (Vec<Found>, Vec<Skipped>) {
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
    /// Why a peer is not named this time.
    enum Unnamed {
        /// Its EPMD lists several names, none chosen: a skip.
        Several(String),
        /// Not yet (unreachable, nothing registered, a failed answer): asked again next poll.
        NotYet(String),
    }
    let learnt: Vec<(Address, Result<String, Unnamed>)> = stream::iter(unknown)
        .map(|addr| async move {
            let at = std::net::SocketAddr::new(addr.ip, epmd_port);
            let answer = crate::epmd::names_at(at, timeout).await;
            let name = match answer.registered() {
                Err(why) => Err(Unnamed::NotYet(why)),
                Ok(names) => {
                    // A peer with its own distribution port is the name registered on that port.
                    let on_port: Vec<(String, u16)> = names
                        .iter()
                        .filter(|(_, p)| addr.port.is_none_or(|want| *p == want))
                        .cloned()
                        .collect();
                    naming
                        .choose(&on_port)
                        .map(str::to_string)
                        .map_err(|why| match on_port.len() {
                            0 | 1 => Unnamed::NotYet(why),
                            _ => Unnamed::Several(why),
                        })
                }
            };
            (addr, name)
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
    let mut several: HashMap<Address, String> = HashMap::new();
    for (addr, name) in learnt {
        match name {
            Ok(n) => {
                c.insert(addr, format!("{n}@{}", addr.ip));
            }
            Err(Unnamed::Several(why)) => {
                tracing::debug!(%addr, "peer skipped: {why}");
                several.insert(addr, why);
            }
            Err(Unnamed::NotYet(why)) => {
                tracing::warn!(%addr, "peer left out until it can be named: {why}")
            }
        }
    }
    let mut skips: Vec<(SkipReason, String)> = Vec::new();
    let named = found
        .into_iter()
        .filter_map(|f| {
            let addr = f.address();
            if several.contains_key(&addr) {
                let example = f.task_arn.clone().or_else(|| f.instance_id.clone());
                skips.push((
                    SkipReason::SeveralEpmdNames,
                    example.unwrap_or_else(|| addr.to_string()),
                ));
                return None;
            }
            let node = c.get(&addr)?.clone();
            Some(Found {
                node: Some(node),
                ..f
            })
        })
        .collect();
    let mut skipped = count_skips(skips.iter().map(|(r, e)| (*r, e.as_str())), dist_port);
    // The names the first one's EPMD lists, in its words: what node_basename must choose from.
    if let (Some(s), Some((addr, why))) = (skipped.first_mut(), several.iter().min()) {
        s.message = format!("{} (e.g. {addr}: {why})", s.message);
    }
    (named, skipped)
}

/// `interval` scaled by a random factor in `[1 - jitter, 1 + jitter]`.
fn jittered(interval: Duration, jitter: f64) -> Duration {
    let factor = 1.0 + jitter * (fastrand::f64() * 2.0 - 1.0);
    interval.mul_f64(factor.max(0.0))
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
    use crate::aws::CallCounter;
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

    /// An EPMD on loopback that answers every NAMES request (`n`, EPMD's `NAMES_REQ`) with
    /// `names`, as `erl_epmd` writes them: its own port (4 bytes), then one `name N at port P`
    /// line per node. Returns its port.
    async fn serve_epmd_names(names: &'static [(&'static str, u16)]) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut req = [0u8; 3];
                    if s.read_exact(&mut req).await.is_err() || req != [0, 1, b'n'] {
                        return;
                    }
                    let mut reply = u32::from(crate::epmd::EPMD_PORT).to_be_bytes().to_vec();
                    for (n, p) in names {
                        reply.extend(format!("name {n} at port {p}\n").into_bytes());
                    }
                    let _ = s.write_all(&reply).await;
                });
            }
        });
        port
    }

    /// With `node_names = "epmd"`, a peer whose EPMD lists several names and none is
    /// `node_basename` is not dropped in silence: the source counts it as skipped
    /// (`several_epmd_names`, with the names and the fix), so a source whose every peer is so is
    /// SKIPPING, not ok with no peers.
    #[tokio::test]
    async fn a_peer_whose_epmd_lists_several_names_is_a_skip_with_the_fix() {
        let epmd = serve_epmd_names(&[("api", 4370), ("worker", 4371)]).await;
        let cfg = Config::from_value(json!({"node_names": "epmd", "node_basename": "web",
            "poll_timeout": "2s",
            "sources": [{"type": "ecs", "region": "eu-west-2", "cluster": "c0"}]}))
        .unwrap();
        let mut task = found("127.0.0.1");
        task.task_arn = Some("arn:aws:ecs:eu-west-2:1:task/c0/4e3c".into());
        let (mut p, _) = poller(&cfg, vec![vec![Step::Answer(Ok(vec![task]))]]);
        p.epmd_port = epmd;
        let u = p.poll().await;
        let s = &u.snapshot.sources[0];
        assert!(u.snapshot.peers.is_empty(), "{:?}", u.snapshot.peers);
        assert_eq!(s.state, crate::SourceState::Skipping, "{s:#?}");
        assert_eq!(s.skipped_tasks, 1, "{s:#?}");
        let k = &s.skipped[0];
        assert_eq!(k.reason, SkipReason::SeveralEpmdNames);
        assert_eq!(k.example(), "4e3c");
        assert!(
            k.message
                .contains("127.0.0.1: its EPMD has several nodes (api, worker)"),
            "{}",
            k.message
        );
        assert!(k.fix.starts_with("set node_basename"), "{}", k.fix);
        let [Event::TasksSkipped { .. }] = &u.changes.events[..] else {
            panic!("{:?}", u.changes.events)
        };
        // node_basename naming one of them names the peer by it.
        let cfg = Config::from_value(json!({"node_names": "epmd", "node_basename": "worker",
            "poll_timeout": "2s",
            "sources": [{"type": "ecs", "region": "eu-west-2", "cluster": "c0"}]}))
        .unwrap();
        let (mut p, _) = poller(&cfg, vec![vec![Step::Answer(Ok(vec![found("127.0.0.1")]))]]);
        p.epmd_port = epmd;
        let u = p.poll().await;
        assert_eq!(nodes(&u), ["worker@127.0.0.1"]);
        assert_eq!(u.snapshot.sources[0].state, crate::SourceState::Ok);
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
        assert!(!s0.ok() && s0.stale);
        assert_eq!(s0.peers, 2);
        assert_eq!(s0.error_kind, Some(ErrorKind::Throttled));
        assert!(s0.error.as_deref().unwrap().contains("Rate exceeded"));
        assert!(s0.backoff_until.is_some(), "throttling backs off");
        assert!(s0.last_success.is_some());
        assert!(second.snapshot.sources[1].ok());
    }

    #[tokio::test]
    async fn an_absent_source_is_probed_only_at_the_probe_interval_without_warning_and_joins_when_present(
    ) {
        let mut cfg = config(2);
        cfg.region_probe_interval = Duration::from_millis(300);
        let (mut p, fixed) = poller(
            &cfg,
            vec![
                vec![
                    Step::Absent("the cluster does not exist in us-west-2"),
                    Step::Absent("the cluster does not exist in us-west-2"),
                    Step::Answer(Ok(vec![found("10.1.0.4")])),
                ],
                vec![Step::Answer(Ok(vec![found("10.2.0.4")]))],
            ],
        );
        let polls = |i: usize| *fixed[i].polls.lock().unwrap();
        let first = p.poll().await;
        let s0 = &first.snapshot.sources[0];
        assert_eq!(
            s0.absent.as_deref(),
            Some("the cluster does not exist in us-west-2")
        );
        assert!(s0.ok() && !s0.stale && !s0.is_failing());
        assert_eq!(s0.state, crate::SourceState::Absent);
        assert!(s0.probe_at.is_some() && s0.backoff_until.is_none());
        assert_eq!(s0.consecutive_failures, 0);
        assert!(first.changes.events.iter().all(|e| !e.is_warning()));
        assert_eq!(nodes(&first), ["app@10.2.0.4"]);
        // Within the probe interval: not polled again, still absent, the other source polled.
        let second = p.poll().await;
        assert_eq!((polls(0), polls(1)), (1, 2));
        assert!(second.snapshot.sources[0].absent.is_some());
        assert!(second.changes.events.is_empty());
        // The probe interval passing is the input here, not a synchronisation.
        tokio::time::sleep(Duration::from_millis(350)).await;
        let third = p.poll().await;
        assert_eq!(polls(0), 2, "probed once the interval passed");
        assert!(third.changes.events.iter().all(|e| !e.is_warning()));
        tokio::time::sleep(Duration::from_millis(350)).await;
        let fourth = p.poll().await;
        assert_eq!(polls(0), 3);
        let s0 = &fourth.snapshot.sources[0];
        assert!(s0.absent.is_none() && s0.probe_at.is_none() && s0.ok());
        assert_eq!(nodes(&fourth), ["app@10.1.0.4", "app@10.2.0.4"]);
        assert_eq!(fourth.changes.added.len(), 1);
        // Present: polled every round again.
        p.poll().await;
        assert_eq!(polls(0), 4);
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
        assert!(!fourth.snapshot.sources[0].ok());
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
        assert!(u.snapshot.sources[0].ok(), "the source survives its panic");
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
        assert!(first
            .snapshot
            .sources
            .iter()
            .all(|s| s.state == crate::SourceState::Ok));
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
        p.slots[0].health.backoff_until = None;
        let u = p.poll().await;
        assert!(u.snapshot.left.is_none());
        p.slots[0].health.backoff_until = None;
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
    fn a_round_waits_the_interval_within_the_jitter() {
        let i = Duration::from_secs(5);
        for _ in 0..50 {
            let j = jittered(i, 0.2);
            assert!(
                j >= Duration::from_secs(4) && j <= Duration::from_secs(6),
                "{j:?}"
            );
        }
    }
}

#[cfg(test)]
mod sharing_tests;
