//! The merge: many sources' peers become one deterministic snapshot; and the diff between two.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use serde::{Serialize, Serializer};

use crate::config::{NodeNaming, SourceConfig};
use crate::error::{ErrorKind, SourceError};
use crate::fingerprint;
use crate::peer::{Address, Found, Peer, Region, Skipped, SourceId};

/// The schema tag of [`Snapshot`]'s JSON form.
pub const SNAPSHOT_SCHEMA: &str = "ecs-peers/snapshot/v2";

/// What a source's last answer means, decided once here ([`SourceState::of`]) and carried by
/// every adapter as it is: the CLI's STATUS column and exit status, the snapshot JSON's
/// `state` (and `ok`, `pending`, which say the same), the NIF's update and `EcsPeers.status/1`,
/// telemetry. Serialized in snake case: `pending`, `ok`, `skipping`, `absent`, `failing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceState {
    /// No poll of it has finished yet.
    Pending,
    /// Its last answer was complete, and it has peers or found nothing to skip.
    Ok,
    /// It answered, but every RUNNING task or Cloud Map instance it found was skipped (e.g.
    /// bridge-mode tasks with no binding for the distribution port, instances without an
    /// address attribute, a `tags` filter no running task matches): no peers while tasks run,
    /// each reason in [`SourceStatus::skipped`] with its fix.
    Skipping,
    /// It answered that it is absent (a region of a `regions` source not enabled, or without
    /// the cluster or service): a complete answer with no peers, the reason in
    /// [`SourceStatus::absent`].
    Absent,
    /// Its last poll failed; the peers shown are its last-known ones.
    Failing,
}

impl SourceState {
    /// The one rule: `polled` (a result was applied), `answered` (the last one was complete),
    /// `absent` (it said it is absent), its `peers`, and the RUNNING tasks or instances it
    /// `skipped`.
    pub(crate) fn of(
        polled: bool,
        answered: bool,
        absent: bool,
        peers: usize,
        skipped: usize,
    ) -> SourceState {
        match (polled, answered, absent) {
            (false, _, _) => SourceState::Pending,
            (true, false, _) => SourceState::Failing,
            (true, true, true) => SourceState::Absent,
            (true, true, false) if peers == 0 && skipped > 0 => SourceState::Skipping,
            (true, true, false) => SourceState::Ok,
        }
    }

    /// Healthy: nothing to fix (`ok` or `absent`); the JSON's `ok`.
    pub fn is_ok(self) -> bool {
        match self {
            SourceState::Ok | SourceState::Absent => true,
            SourceState::Pending | SourceState::Skipping | SourceState::Failing => false,
        }
    }

    /// Its last answer was complete (`ok`, `skipping` or `absent`).
    pub fn answered(self) -> bool {
        match self {
            SourceState::Ok | SourceState::Skipping | SourceState::Absent => true,
            SourceState::Pending | SourceState::Failing => false,
        }
    }

    /// The word the CLI's table shows: `ok`, `SKIPPING`, `absent`, `FAILING`, `pending` (the
    /// loud ones in capitals).
    pub fn word(self) -> &'static str {
        match self {
            SourceState::Pending => "pending",
            SourceState::Ok => "ok",
            SourceState::Skipping => "SKIPPING",
            SourceState::Absent => "absent",
            SourceState::Failing => "FAILING",
        }
    }
}

/// [`SourceStatus::state`] in JSON: `"state"`, and the two booleans readers of
/// `ecs-peers/snapshot/v1` know, derived from it so they cannot disagree: `"ok"` (`ok` or
/// `absent`) and `"pending"`.
fn state_flat<S: Serializer>(state: &SourceState, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(3))?;
    m.serialize_entry("state", state)?;
    m.serialize_entry("ok", &state.is_ok())?;
    m.serialize_entry("pending", &(*state == SourceState::Pending))?;
    m.end()
}

/// The health of one source after a poll.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceStatus {
    /// The source.
    pub id: SourceId,
    /// `ecs` or `cloudmap`.
    pub kind: &'static str,
    /// Its region.
    pub region: String,
    /// What its last answer means (JSON: `state`, with `ok` and `pending` derived from it).
    #[serde(flatten, serialize_with = "state_flat")]
    pub state: SourceState,
    /// The last poll failed and the peers shown are the last-known ones (or none were ever known).
    pub stale: bool,
    /// Why the last poll failed, naming the fix where it can (the text of `failure`).
    pub error: Option<String>,
    /// The failure's class (`failure.kind`).
    pub error_kind: Option<ErrorKind>,
    /// The last poll's failure as data: `{kind, action, message, fix}`.
    pub failure: Option<SourceError>,
    /// When a poll of this source last succeeded (RFC 3339).
    pub last_success: Option<String>,
    /// Polls failed in a row.
    pub consecutive_failures: u32,
    /// AWS API calls (attempts, retries included) made in this round, i.e. since the previous
    /// snapshot: 0 in a round the source was not polled (backing off).
    pub api_calls: u64,
    /// This round's calls by IAM action, e.g. `{"ecs:ListTasks": 2, "ecs:DescribeTasks": 2}`;
    /// empty when none were made.
    pub api_calls_by_action: BTreeMap<String, u64>,
    /// AWS API calls made since start.
    pub api_calls_total: u64,
    /// Peers this source contributes (last-known ones when failing).
    pub peers: usize,
    /// The source is backing off after throttling and is not polled until then (RFC 3339).
    pub backoff_until: Option<String>,
    /// What the last successful poll found but could not turn into peers: RUNNING tasks (ECS)
    /// or instances (Cloud Map). Named for tasks, as the CLI's JSON schema has it.
    pub skipped_tasks: usize,
    /// Those tasks or instances by reason, each with its fix (empty when none were skipped).
    pub skipped: Vec<Skipped>,
    /// Fleet-shared polling (`share_polling`): the node elected to poll this source, when it is
    /// another one (`None`: this node polls it).
    pub poller: Option<String>,
    /// The node whose shared result is the one applied (`None`: polled here).
    pub received_from: Option<String>,
    /// When that result was applied (RFC 3339; `None`: polled here).
    pub received_at: Option<String>,
    /// Shared results for this source dropped since start: another sharing key, not from its
    /// elected poller, not newer than the last one applied, or a "same" result naming a full one
    /// this node did not apply.
    pub shared_dropped: u64,
    /// The elected poller sent no result for more than two polling intervals, so this node
    /// polls the source itself until one arrives.
    pub poller_silent: bool,
    /// The source is absent, with the reason: a region of a `regions` source that the account
    /// has not enabled, or where the cluster or service does not exist. It is `ok` (a complete
    /// answer, no peers), never failing, and polled again at `probe_at`. `None`: present.
    pub absent: Option<String>,
    /// While absent: when it is polled again (RFC 3339).
    pub probe_at: Option<String>,
}

/// The same IP reported in two regions: overlapping VPC CIDRs, which peering cannot route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conflict {
    /// The contested address.
    pub ip: IpAddr,
    /// Every claim on it.
    pub claims: Vec<Claim>,
}

/// One source's claim on a conflicting IP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Claim {
    /// The source that reported the address.
    pub source: SourceId,
    /// The distribution port it reported with the address, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The region it is in.
    pub region: String,
    /// The task ARN or instance id, where known.
    pub task: Option<String>,
}

/// One view of the namespace: what every adapter consumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// Always [`SNAPSHOT_SCHEMA`].
    pub schema: &'static str,
    /// Poll counter, from 1.
    pub poll: u64,
    /// When the poll finished (RFC 3339).
    pub taken_at: String,
    /// How long the poll round took, in milliseconds.
    pub duration_ms: u64,
    /// The peers, sorted by node name (then address), without the local node and without
    /// conflicting IPs. Shared: a peer no source changed is the same allocation in consecutive
    /// snapshots (serialized as plain peer objects).
    #[serde(serialize_with = "shared_peers")]
    pub peers: Vec<Arc<Peer>>,
    /// One status per configured source, in configuration order.
    pub sources: Vec<SourceStatus>,
    /// Addresses claimed by several regions; no peer is emitted for them.
    pub conflicts: Vec<Conflict>,
    /// The local node, when a source reported it (it is not in `peers`).
    pub local: Option<Peer>,
    /// This node has left its source: the source that listed this node's own task, once a
    /// complete, successful poll of it no longer lists it (its task is stopping). Stays set
    /// until a source lists this node again.
    pub left: Option<SourceId>,
    /// Fleet-shared polling: the members of the sharing group, this node included (0: not
    /// sharing).
    pub sharing_with: usize,
    /// Shared results dropped since start that name no source of this node or do not decode
    /// (those for a known source are counted in its [`SourceStatus::shared_dropped`]).
    pub shared_dropped: u64,
}

impl Snapshot {
    /// Sources whose last poll failed (not those still waiting for their first answer).
    pub fn failing(&self) -> impl Iterator<Item = &SourceStatus> {
        self.sources.iter().filter(|s| s.is_failing())
    }

    /// What changed since an earlier snapshot (any earlier one: a subscriber that skipped
    /// updates diffs against the last one it saw): peers added, removed or started draining,
    /// keyed on [`Peer::address`] and node name, and the membership [`Event`]s. This is the one
    /// place these rules live; adapters only report what it returns.
    ///
    /// ```
    /// # use ecs_peers::Snapshot;
    /// let empty = Snapshot::empty();
    /// let changes = empty.diff(&empty);
    /// assert!(changes.is_empty());
    /// ```
    pub fn diff(&self, previous: &Snapshot) -> Changes {
        self.diff_in(previous, Order::Unknown)
    }

    /// [`Snapshot::diff`] of two snapshots the poller made, whose peers are in [`by_node`] order
    /// by construction ([`merge`] sorts them; an unchanged round shares the last round's list):
    /// the order is not checked again. Checking it is a walk over both lists comparing every
    /// peer's node name with the next one's, a tenth of a full 10,000-peer round (see
    /// BENCHMARKS.md; `cargo bench --bench merge` measures it).
    pub(crate) fn diff_merged(&self, previous: &Snapshot) -> Changes {
        self.diff_in(previous, Order::ByNode)
    }

    fn diff_in(&self, previous: &Snapshot, order: Order) -> Changes {
        let mut changes = diff_peers(&self.peers, &previous.peers, order);
        for now in &self.sources {
            let was = previous.sources.iter().find(|s| s.id == now.id);
            // Said again when the failure's kind or fix changes (e.g. once other regions show
            // that credentials this region refuses work), not on every poll.
            let said =
                |s: &SourceStatus| (s.error_kind, s.failure.as_ref().and_then(|f| f.fix.clone()));
            let was_failing = was.filter(|w| w.is_failing()).map(said);
            match (&now.failure, now.is_failing()) {
                (Some(error), true) if was_failing != Some(said(now)) => {
                    changes.events.push(Event::SourceFailing {
                        source: now.id.clone(),
                        region: now.region.to_string(),
                        error: error.clone(),
                        kept_peers: now.peers,
                        consecutive_failures: now.consecutive_failures,
                    })
                }
                _ if now.state.answered() && was_failing.is_some() => {
                    changes.events.push(Event::SourceRecovered {
                        source: now.id.clone(),
                        region: now.region.to_string(),
                        peers: now.peers,
                    })
                }
                _ => {}
            }
            // Said again only when the reasons or counts change, not on every poll.
            let counts = |s: &SourceStatus| -> Vec<(crate::peer::SkipReason, usize)> {
                s.skipped.iter().map(|k| (k.reason, k.tasks)).collect()
            };
            if let Some(was) = was {
                if was.poller != now.poller {
                    changes.events.push(Event::PollerChanged {
                        source: now.id.clone(),
                        poller: now.poller.clone(),
                        members: self.sharing_with,
                    });
                }
                if now.poller_silent && !was.poller_silent {
                    changes.events.push(Event::PollerSilent {
                        source: now.id.clone(),
                        poller: now.poller.clone().unwrap_or_default(),
                    });
                }
            }
            if now.state.answered()
                && !now.skipped.is_empty()
                && was.map(counts) != Some(counts(now))
            {
                changes.events.push(Event::TasksSkipped {
                    source: now.id.clone(),
                    region: now.region.to_string(),
                    skipped: now.skipped.clone(),
                });
            }
        }
        for c in &self.conflicts {
            if !previous.conflicts.iter().any(|p| p.ip == c.ip) {
                changes.events.push(Event::ConflictFound {
                    conflict: c.clone(),
                });
            }
        }
        if let (Some(source), None) = (&self.left, &previous.left) {
            changes.events.push(Event::LocalLeft {
                source: source.clone(),
            });
        }
        changes
    }

    /// A snapshot with nothing in it (poll 0), the "previous" of the first poll.
    pub fn empty() -> Snapshot {
        Snapshot {
            schema: SNAPSHOT_SCHEMA,
            poll: 0,
            taken_at: rfc3339(SystemTime::now()),
            duration_ms: 0,
            peers: Vec::new(),
            sources: Vec::new(),
            conflicts: Vec::new(),
            local: None,
            left: None,
            sharing_with: 0,
            shared_dropped: 0,
        }
    }

    /// A fingerprint of the node names the adapters act on (the peers' `node`s, in order):
    /// equal fingerprints mean the same membership, so a subscriber that already holds the list
    /// for one need not rebuild it. FNV-1a (64 bit): stable across processes and builds.
    pub fn membership(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for p in &self.peers {
            for b in p.node.bytes().chain(std::iter::once(b'\n')) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        h
    }
}

impl SourceStatus {
    /// The status of a configured source no poll of which has finished yet: what a snapshot
    /// reports of it before its first answer (`pending`, no peers, no calls, no error).
    ///
    /// ```
    /// let config = ecs_peers::Config::from_value(serde_json::json!({"node_basename": "app",
    ///     "sources": [{"type": "ecs", "region": "eu-west-2", "cluster": "web"}]})).unwrap();
    /// let status = ecs_peers::SourceStatus::pending(&config.sources[0]);
    /// assert_eq!((status.id.as_str(), status.kind), ("ecs:eu-west-2/web", "ecs"));
    /// assert!(status.state == ecs_peers::SourceState::Pending && !status.ok() && !status.is_failing());
    /// ```
    pub fn pending(source: &SourceConfig) -> SourceStatus {
        SourceStatus {
            id: source.id(),
            kind: source.kind(),
            region: source.region().to_string(),
            state: SourceState::Pending,
            stale: false,
            error: None,
            error_kind: None,
            failure: None,
            last_success: None,
            consecutive_failures: 0,
            api_calls: 0,
            api_calls_by_action: BTreeMap::new(),
            api_calls_total: 0,
            peers: 0,
            backoff_until: None,
            skipped_tasks: 0,
            skipped: Vec::new(),
            poller: None,
            received_from: None,
            received_at: None,
            shared_dropped: 0,
            poller_silent: false,
            absent: None,
            probe_at: None,
        }
    }

    /// Its last poll failed (a source still waiting for its first answer is not failing).
    pub fn is_failing(&self) -> bool {
        self.state == SourceState::Failing
    }

    /// Healthy: [`SourceState::is_ok`] (`ok` or `absent`), the JSON's `ok`.
    pub fn ok(&self) -> bool {
        self.state.is_ok()
    }
}

/// The regions that show this run's credentials work, when `s`'s calls are refused as
/// unrecognised credentials ([`SourceError::unrecognized_credentials`]) in a region where they
/// never worked: the other regions of its partition with a source that is healthy or has
/// succeeded since start (every source of a run signs with the same credential chain). `None`
/// when `s` is not failing so, when its own region accepted the credentials in this run (then
/// they changed: expired or revoked), or when no other region shows anything (then they may be
/// invalid everywhere). Sorted, each region once.
///
/// This is the one rule by which a refused region is told apart from bad credentials: the
/// snapshot's fix ([`explain_refused_regions`]) and the doctor's diagnosis both read it.
pub(crate) fn credentials_work_elsewhere<'a>(
    s: &SourceStatus,
    all: &'a [SourceStatus],
) -> Option<Vec<&'a str>> {
    let refused = s.is_failing()
        && s.failure
            .as_ref()
            .is_some_and(SourceError::unrecognized_credentials);
    let worked = |o: &SourceStatus| o.state.answered() || o.last_success.is_some();
    if !refused || all.iter().any(|o| o.region == s.region && worked(o)) {
        return None;
    }
    let partition = crate::partition::of_region(&s.region).id;
    let mut working: Vec<&str> = all
        .iter()
        .filter(|o| {
            o.region != s.region
                && worked(o)
                && crate::partition::of_region(&o.region).id == partition
        })
        .map(|o| o.region.as_str())
        .collect();
    working.sort_unstable();
    working.dedup();
    (!working.is_empty()).then_some(working)
}

/// Names the refused region in the fix of every source [`credentials_work_elsewhere`] finds
/// (with [`crate::error::region_refused_fix`]), instead of "the credentials are invalid".
pub(crate) fn explain_refused_regions(sources: &mut [SourceStatus]) {
    let fixes: Vec<Option<String>> = sources
        .iter()
        .map(|s| {
            credentials_work_elsewhere(s, sources)
                .map(|working| crate::error::region_refused_fix(&s.region, &working))
        })
        .collect();
    for (s, fix) in sources.iter_mut().zip(fixes) {
        if let (Some(fix), Some(failure)) = (fix, s.failure.as_mut()) {
            failure.fix = Some(fix);
            s.error = Some(failure.to_string());
        }
    }
}

/// What changed between two snapshots (see [`Snapshot::diff`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Changes {
    /// Peers that are new.
    pub added: Vec<Peer>,
    /// Peers that are gone.
    pub removed: Vec<Peer>,
    /// Peers still present that have started draining.
    pub draining: Vec<Peer>,
    /// Membership events: sources failing or recovered, conflicts found, this node leaving.
    pub events: Vec<Event>,
}

impl Changes {
    /// No peer was added, removed or started draining (membership events aside: a failing
    /// source changes no peer; see [`Changes::events`]).
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.draining.is_empty()
    }
}

/// A membership event, as data. Adapters report these (the CLI's `watch`, the strategy's logs and
/// telemetry, tracing); none of them derives one itself. Serialized with an `event` tag:
/// `{"event": "source_failing", "source": ..., "error": {"kind", "action", "message", "fix"}, ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// A source's poll failed, and the one before did not (or failed differently). Its
    /// last-known peers are kept.
    SourceFailing {
        /// The source.
        source: SourceId,
        /// Its region.
        region: String,
        /// Why, and the fix.
        error: SourceError,
        /// Last-known peers it keeps.
        kept_peers: usize,
        /// Polls failed in a row.
        consecutive_failures: u32,
    },
    /// A failing source answered completely again.
    SourceRecovered {
        /// The source.
        source: SourceId,
        /// Its region.
        region: String,
        /// The peers it lists now.
        peers: usize,
    },
    /// An IP is newly claimed by several regions (overlapping VPC CIDRs); no peer is made of it.
    ConflictFound {
        /// The address and its claims.
        conflict: Conflict,
    },
    /// This node's own task has left the source that listed it (see [`Snapshot::left`]).
    LocalLeft {
        /// The source that listed it.
        source: SourceId,
    },
    /// A source answered with RUNNING tasks or Cloud Map instances it could not turn into
    /// peers, and which (or how many) changed since the last snapshot (see
    /// [`SourceStatus::skipped`]). Named for tasks, as the JSON Lines event `tasks_skipped` is.
    TasksSkipped {
        /// The source.
        source: SourceId,
        /// Its region.
        region: String,
        /// The skipped tasks or instances by reason, each with its fix.
        skipped: Vec<Skipped>,
    },
    /// Fleet-shared polling: another member now polls this source, or this node does again
    /// (`poller: None`): the sharing group changed, or a member's region became known.
    PollerChanged {
        /// The source.
        source: SourceId,
        /// The node that polls it now; `None`: this node.
        poller: Option<String>,
        /// Members of the sharing group, this node included.
        members: usize,
    },
    /// Fleet-shared polling: the elected poller of a source sent no result for more than two
    /// polling intervals, so this node polls the source itself until results arrive again.
    PollerSilent {
        /// The source.
        source: SourceId,
        /// The silent poller.
        poller: String,
    },
}

impl Event {
    /// How loud a log of it should be: `true` for warnings (a failing source, a conflict).
    pub fn is_warning(&self) -> bool {
        matches!(
            self,
            Event::SourceFailing { .. }
                | Event::ConflictFound { .. }
                | Event::TasksSkipped { .. }
                | Event::PollerSilent { .. }
        )
    }
}

/// The sentence adapters log (after their own prefix), e.g. `source ecs:eu-west-2/web/api is
/// failing (keeping its 3 last-known peers): ecs:ListTasks failed (throttled): ...`.
impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::SourceFailing {
                source,
                error,
                kept_peers,
                ..
            } => write!(
                f,
                "source {source} is failing (keeping its {kept_peers} last-known peers): {error}"
            ),
            Event::SourceRecovered { source, peers, .. } => {
                write!(f, "source {source} recovered ({peers} peers)")
            }
            Event::ConflictFound { conflict } => {
                let claims: Vec<String> = conflict
                    .claims
                    .iter()
                    .map(|c| format!("{} ({})", c.source, c.region))
                    .collect();
                write!(
                    f,
                    "{} is reported by {}: overlapping VPC CIDRs cannot be peered; not connecting to it",
                    conflict.ip,
                    claims.join(" and ")
                )
            }
            Event::LocalLeft { source } => write!(
                f,
                "this node's task has left {source}; not connecting to peers any more"
            ),
            Event::TasksSkipped {
                source, skipped, ..
            } => {
                let parts: Vec<String> = skipped
                    .iter()
                    .map(|s| {
                        format!(
                            "{} ({}, e.g. {}): {}. Fix: {}",
                            s.counted(),
                            serde_json::to_value(s.reason)
                                .ok()
                                .and_then(|v| v.as_str().map(str::to_string))
                                .unwrap_or_default(),
                            s.example(),
                            s.message,
                            s.fix
                        )
                    })
                    .collect();
                write!(f, "source {source}: {}", parts.join("; "))
            }
            Event::PollerChanged {
                source,
                poller: Some(poller),
                members,
            } => write!(
                f,
                "{source}: polled by {poller} (sharing with {} nodes)",
                members.saturating_sub(1)
            ),
            Event::PollerChanged { source, .. } => write!(f, "{source}: polled here"),
            Event::PollerSilent { source, poller } => write!(
                f,
                "{source}: {poller} sent no result for more than two polling intervals; polling it here until its results arrive again"
            ),
        }
    }
}

/// Serializes shared peers as the peer objects themselves (the schema's `peers` array).
fn shared_peers<S: Serializer>(peers: &[Arc<Peer>], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(peers.iter().map(|p| &**p))
}

/// The order of [`Snapshot::peers`]: by node name, then address. Its equality is the diff's
/// identity (same address, same node name).
fn by_node(a: &Peer, b: &Peer) -> Ordering {
    a.node
        .as_str()
        .cmp(b.node.as_str())
        .then_with(|| a.address().cmp(&b.address()))
}

/// What [`diff_peers`] knows of its lists' order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    /// Any order (a hand-made snapshot): checked, and diffed through maps when not sorted.
    Unknown,
    /// Both strictly in [`by_node`] order, as [`merge`] makes them.
    ByNode,
}

/// Peers added, removed and started draining from `before` to `now`, keyed on (address, node
/// name). Both lists are in [`by_node`] order when the namespace made them, so this is one walk
/// over both, and a peer shared by both (the same `Arc`) is not even compared; lists in any
/// other order (a hand-made snapshot) are diffed through maps, with the same result.
fn diff_peers(now: &[Arc<Peer>], before: &[Arc<Peer>], order: Order) -> Changes {
    let mut c = Changes::default();
    if now.len() == before.len() && now.iter().zip(before).all(|(a, b)| Arc::ptr_eq(a, b)) {
        return c;
    }
    let strictly_sorted = |v: &[Arc<Peer>]| v.windows(2).all(|w| by_node(&w[0], &w[1]).is_lt());
    debug_assert!(
        order == Order::Unknown || (strictly_sorted(now) && strictly_sorted(before)),
        "diff_merged of peers not in by_node order"
    );
    if order == Order::Unknown && (!strictly_sorted(now) || !strictly_sorted(before)) {
        fn key(p: &Peer) -> (Address, &str) {
            (p.address(), p.node.as_str())
        }
        let was: BTreeMap<(Address, &str), &Peer> = before.iter().map(|p| (key(p), &**p)).collect();
        let is: BTreeSet<(Address, &str)> = now.iter().map(|p| key(p)).collect();
        for p in now {
            match was.get(&key(p)) {
                None => c.added.push(Peer::clone(p)),
                Some(b) if p.draining && !b.draining => c.draining.push(Peer::clone(p)),
                Some(_) => {}
            }
        }
        c.removed = before
            .iter()
            .filter(|p| !is.contains(&key(p)))
            .map(|p| Peer::clone(p))
            .collect();
        return c;
    }
    let (mut i, mut j) = (0, 0);
    while let (Some(a), Some(b)) = (now.get(i), before.get(j)) {
        if Arc::ptr_eq(a, b) {
            (i, j) = (i + 1, j + 1);
            continue;
        }
        match by_node(a, b) {
            Ordering::Less => {
                c.added.push(Peer::clone(a));
                i += 1;
            }
            Ordering::Greater => {
                c.removed.push(Peer::clone(b));
                j += 1;
            }
            Ordering::Equal => {
                if a.draining && !b.draining {
                    c.draining.push(Peer::clone(a));
                }
                (i, j) = (i + 1, j + 1);
            }
        }
    }
    c.added.extend(now[i..].iter().map(|p| Peer::clone(p)));
    c.removed.extend(before[j..].iter().map(|p| Peer::clone(p)));
    c
}

/// One source's peers as of its last complete answer, named, and that answer's fingerprint.
#[derive(Debug, Default)]
pub(crate) struct SourcePeers {
    fingerprint: Option<u64>,
    peers: Vec<Arc<Peer>>,
    /// The answer's peers `{private_dns_name}` could not name (AWS reports no private DNS name
    /// for them): how many, and one of them (its task ARN, else its address).
    unnamed: Option<(usize, String)>,
}

impl SourcePeers {
    /// Takes a source's complete answer. When it is the answer it already holds (the same
    /// [`fingerprint::answer`], for the same source id), it keeps its peers (the same `Arc`s)
    /// and returns `false`; otherwise it names every peer (`naming`, or the name learnt from
    /// EPMD; a peer it cannot name is left out) and returns `true`.
    pub(crate) fn apply(
        &mut self,
        mut found: Vec<Found>,
        naming: &NodeNaming,
        region: &Region,
        id: &SourceId,
    ) -> bool {
        let fp = fingerprint::answer(&mut found);
        let same_id = self.peers.first().is_none_or(|p| &p.source == id);
        if self.fingerprint == Some(fp) && same_id {
            return false;
        }
        // The last answer's peers, in address order like `found`: a peer reported exactly as
        // before (same fields, same name) is kept as it is, the same `Arc`, so an answer that
        // changed by a few tasks names and allocates only those, and the diff skips the rest.
        let last = std::mem::replace(&mut self.peers, Vec::with_capacity(found.len()));
        let mut next_last = 0;
        let mut rendered = String::new();
        let mut unnamed: Option<(usize, String)> = None;
        for mut f in found {
            let learnt = f.node.take();
            if learnt.is_none() && !naming.render_found_into(&f, region, &mut rendered) {
                if naming.needs_private_dns_name() && f.private_dns_name.is_none() {
                    let (n, _) = unnamed.get_or_insert_with(|| {
                        (
                            0,
                            f.task_arn
                                .clone()
                                .unwrap_or_else(|| f.address().to_string()),
                        )
                    });
                    *n += 1;
                }
                continue;
            }
            let node = learnt.as_deref().unwrap_or(&rendered);
            let address = f.address();
            while last.get(next_last).is_some_and(|p| p.address() < address) {
                next_last += 1;
            }
            if let Some(p) = last
                .get(next_last)
                .filter(|p| f.is_reported_as(p, node, region, id))
            {
                self.peers.push(Arc::clone(p));
                next_last += 1;
                continue;
            }
            let node = learnt.unwrap_or_else(|| rendered.clone());
            self.peers.push(Arc::new(f.into_peer(node, region, id)));
        }
        self.unnamed = unnamed;
        self.fingerprint = Some(fp);
        true
    }

    /// The peers of the answer it holds that naming left out, as skips
    /// ([`SkipReason::NoPrivateDnsName`](crate::peer::SkipReason::NoPrivateDnsName)), for
    /// `dist_port`: what the source status counts with the source's own skips.
    pub(crate) fn naming_skips(&self, dist_port: u16) -> Vec<Skipped> {
        self.unnamed
            .iter()
            .map(|(n, example)| {
                Skipped::new(
                    crate::peer::SkipReason::NoPrivateDnsName,
                    *n,
                    example,
                    dist_port,
                )
            })
            .collect()
    }

    /// How many peers it holds.
    pub(crate) fn len(&self) -> usize {
        self.peers.len()
    }

    /// Its peers, in address order.
    pub(crate) fn as_slice(&self) -> &[Arc<Peer>] {
        &self.peers
    }

    /// Its peers, in address order, taken.
    pub(crate) fn into_peers(self) -> Vec<Arc<Peer>> {
        self.peers
    }
}

/// Who this node is, so it can be left out of its own peers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LocalNode {
    pub node: Option<String>,
    pub ip: Option<IpAddr>,
}

impl LocalNode {
    /// By node name, or by address: this node's IP with no port of its own (a peer reported
    /// with its own distribution port shares the IP with other tasks, e.g. in bridge mode, and
    /// is this node only by name).
    fn is(&self, p: &Peer) -> bool {
        self.node.as_deref() == Some(p.node.as_str()) || (self.ip == Some(p.ip) && p.port.is_none())
    }
}

/// Merges per-source peer lists (in configuration order) into sorted peers, conflicts and the
/// local node. A peer is its [`Address`] (IP and distribution port): the same address in one
/// region from several sources is one peer (the first source's, a non-draining report
/// preferred); one IP with different ports is several peers. The same IP in different regions,
/// whatever the ports, is a conflict (overlapping CIDRs), and no peer.
///
/// One sort of every claim by address (stable, so configuration order is kept within an
/// address; each source's peers are already in address order, so it merges runs), one walk over
/// it, and one sort of the result by node name. Peers are shared, never copied.
pub(crate) fn merge<'a>(
    per_source: impl IntoIterator<Item = &'a [Arc<Peer>]>,
    local: &LocalNode,
) -> (Vec<Arc<Peer>>, Vec<Conflict>, Option<Peer>) {
    let lists: Vec<&[Arc<Peer>]> = per_source.into_iter().collect();
    // (configuration order, claim)
    let mut claims: Vec<(usize, &Arc<Peer>)> =
        Vec::with_capacity(lists.iter().map(|l| l.len()).sum());
    claims.extend(lists.iter().copied().flatten().enumerate());
    // Sources in different address ranges (one VPC CIDR each) are often in order already.
    if !claims.is_sorted_by_key(|(_, p)| p.address()) {
        claims.sort_by_key(|(_, p)| p.address());
    }
    // Each peer's place in the node-name order is found by sorting plain numbers: the first 12
    // bytes of its node name after the prefix every name shares (`app@10.`), big-endian, above
    // its index. That order is `by_node`'s, except among names equal in those 12 bytes, which
    // are put in `by_node` order afterwards; sorting numbers instead of strings is most of what
    // makes the merge cheap.
    let shared = claims.first().map_or(0, |(_, first)| {
        claims.iter().fold(first.node.len(), |n, (_, p)| {
            first.node.as_bytes()[..n]
                .iter()
                .zip(p.node.as_bytes())
                .take_while(|(a, b)| a == b)
                .count()
        })
    });
    let key = |p: &Peer, index: usize| {
        let mut k = [0u8; 16];
        let rest = p.node.as_bytes().get(shared..).unwrap_or_default();
        let n = rest.len().min(12);
        k[..n].copy_from_slice(&rest[..n]);
        // Fewer than 2³² peers: the index fits in the low 4 bytes.
        k[12..].copy_from_slice(&(index as u32).to_be_bytes());
        u128::from_be_bytes(k)
    };
    let mut peers: Vec<&Arc<Peer>> = Vec::with_capacity(claims.len());
    let mut keys: Vec<u128> = Vec::with_capacity(claims.len());
    let mut conflicts = Vec::new();
    let mut me = None;
    for same_ip in claims.chunk_by(|(_, a), (_, b)| a.ip == b.ip) {
        let region = &same_ip[0].1.region;
        if same_ip[1..].iter().any(|(_, p)| &p.region != region) {
            let mut in_order = same_ip.to_vec();
            in_order.sort_by_key(|(order, _)| *order);
            conflicts.push(Conflict {
                ip: same_ip[0].1.ip,
                claims: in_order
                    .iter()
                    .map(|(_, p)| Claim {
                        source: p.source.clone(),
                        port: p.port,
                        region: p.region.to_string(),
                        task: p.task_arn.clone().or_else(|| p.instance_id.clone()),
                    })
                    .collect(),
            });
            continue;
        }
        for same in same_ip.chunk_by(|(_, a), (_, b)| a.port == b.port) {
            let (_, best) = same.iter().find(|(_, p)| !p.draining).unwrap_or(&same[0]);
            if local.is(best) {
                me = Some(Peer::clone(best));
            } else {
                keys.push(key(best, peers.len()));
                peers.push(best);
            }
        }
    }
    keys.sort_unstable();
    for run in keys.chunk_by_mut(|a, b| a >> 32 == b >> 32) {
        if run.len() > 1 {
            run.sort_unstable_by(|a, b| {
                by_node(peers[*a as u32 as usize], peers[*b as u32 as usize])
            });
        }
    }
    let sorted = keys
        .iter()
        .map(|k| Arc::clone(peers[*k as u32 as usize]))
        .collect();
    (sorted, conflicts, me)
}

/// The merged peers, conflicts and local node of a round: merged again only when a source's
/// answer (or who this node is) `changed` since `last` was made; otherwise `last`'s, shared.
pub(crate) fn merged<'a>(
    changed: bool,
    per_source: impl IntoIterator<Item = &'a [Arc<Peer>]>,
    local: &LocalNode,
    last: &Snapshot,
) -> (Vec<Arc<Peer>>, Vec<Conflict>, Option<Peer>) {
    if changed {
        merge(per_source, local)
    } else {
        (
            last.peers.clone(),
            last.conflicts.clone(),
            last.local.clone(),
        )
    }
}

/// Formats a time as RFC 3339 (UTC, seconds).
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let dt = aws_smithy_types::DateTime::from(t);
    let secs = aws_smithy_types::DateTime::from_secs(dt.secs());
    secs.fmt(aws_smithy_types::date_time::Format::DateTime)
        .unwrap_or_else(|_| dt.secs().to_string())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Merges unshared peers (each source's list as written).
    fn merge<'a>(
        per_source: impl IntoIterator<Item = &'a [Peer]>,
        local: &LocalNode,
    ) -> (Vec<Arc<Peer>>, Vec<Conflict>, Option<Peer>) {
        let shared: Vec<Vec<Arc<Peer>>> = per_source.into_iter().map(arcs).collect();
        super::merge(shared.iter().map(Vec::as_slice), local)
    }

    fn arcs(peers: &[Peer]) -> Vec<Arc<Peer>> {
        peers.iter().cloned().map(Arc::new).collect()
    }

    pub(crate) fn peer(ip: &str, region: &str, source: &str) -> Peer {
        Peer {
            node: format!("app@{ip}"),
            ip: ip.parse().unwrap(),
            port: None,
            region: region.into(),
            source: SourceId::new(source.into()),
            task_arn: Some(format!("arn:task/{ip}")),
            instance_id: None,
            availability_zone: None,
            started_at: None,
            health: None,
            private_dns_name: None,
            ec2_instance_id: None,
            draining: false,
        }
    }

    #[test]
    fn merge_sorts_and_dedupes_within_a_region() {
        let a = vec![
            peer("10.0.0.9", "eu-west-2", "ecs:a"),
            peer("10.0.0.10", "eu-west-2", "ecs:a"),
        ];
        let b = vec![peer("10.0.0.9", "eu-west-2", "cloudmap:b")];
        let (peers, conflicts, me) = merge([a.as_slice(), b.as_slice()], &LocalNode::default());
        let names: Vec<_> = peers.iter().map(|p| p.node.as_str()).collect();
        assert_eq!(names, ["app@10.0.0.10", "app@10.0.0.9"]);
        assert_eq!(
            peers[1].source.as_str(),
            "ecs:a",
            "first source in config order wins"
        );
        assert!(conflicts.is_empty());
        assert!(me.is_none());
    }

    #[test]
    fn merge_prefers_a_running_report_over_a_draining_one() {
        let mut d = peer("10.0.0.9", "eu-west-2", "ecs:a");
        d.draining = true;
        let b = vec![peer("10.0.0.9", "eu-west-2", "cloudmap:b")];
        let (peers, _, _) = merge([vec![d].as_slice(), b.as_slice()], &LocalNode::default());
        assert!(!peers[0].draining);
        assert_eq!(peers[0].source.as_str(), "cloudmap:b");
    }

    proptest::proptest! {
        #[test]
        fn merged_peers_are_in_node_name_order_whatever_the_names(
            // Names sharing long prefixes, equal in their first bytes after the shared part,
            // of any length (empty too), and the same name at two addresses.
            names in proptest::collection::vec(
                "(a|app|app-4e3cfb1a6d2a4b0f9d6c2f9f5b8a7c11)@(10\\.0\\.0\\.1|ip-10-0-0-1-x)?[0-9.]{0,3}",
                0..40,
            ),
            draining in proptest::collection::vec(proptest::prelude::any::<bool>(), 40),
        ) {
            let a: Vec<Peer> = names
                .iter()
                .enumerate()
                .map(|(i, name)| Peer {
                    node: name.clone(),
                    draining: draining[i],
                    ..peer(&format!("10.1.{}.{}", i % 3, i), "eu-west-2", "ecs:a")
                })
                .collect();
            let (peers, _, _) = merge([a.as_slice()], &LocalNode::default());
            let mut expected: Vec<Peer> = a.clone();
            expected.sort_by(by_node);
            let got: Vec<Peer> = peers.iter().map(|p| Peer::clone(p)).collect();
            proptest::prop_assert_eq!(got, expected);
        }
    }

    #[test]
    fn a_changed_answer_keeps_the_peers_it_reports_as_before_and_names_the_rest() {
        let id = SourceId::new("ecs:a".into());
        let app = NodeNaming::Basename("app".into());
        let found = |ip: &str, arn: &str| Found {
            task_arn: Some(format!("arn:task/{arn}")),
            ..Found::at(ip.parse().unwrap())
        };
        let first = vec![
            found("10.0.0.1", "a"),
            found("10.0.0.2", "b"),
            found("10.0.0.3", "c"),
        ];
        let mut source = SourcePeers::default();
        assert!(source.apply(first, &app, &"eu-west-2".into(), &id));
        let before = source.as_slice().to_vec();
        // In another order; 10.0.0.2 starts draining, 10.0.0.3 is another task at the same
        // address, 10.0.0.4 is new.
        let second = vec![
            found("10.0.0.4", "d"),
            found("10.0.0.3", "e"),
            Found {
                draining: true,
                ..found("10.0.0.2", "b")
            },
            found("10.0.0.1", "a"),
        ];
        assert!(source.apply(second.clone(), &app, &"eu-west-2".into(), &id));
        let after = source.as_slice();
        assert!(
            Arc::ptr_eq(&after[0], &before[0]),
            "reported as before: kept"
        );
        assert!(!Arc::ptr_eq(&after[1], &before[1]) && after[1].draining);
        assert!(!Arc::ptr_eq(&after[2], &before[2]));
        assert_eq!(after[2].task_arn.as_deref(), Some("arn:task/e"));
        let mut fresh = SourcePeers::default();
        fresh.apply(second.clone(), &app, &"eu-west-2".into(), &id);
        let peers = |s: &SourcePeers| {
            s.as_slice()
                .iter()
                .map(|p| Peer::clone(p))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            peers(&source),
            peers(&fresh),
            "the same peers as named afresh"
        );

        // Named another way, in another region, or learnt: nothing is kept that would differ.
        let kept = source.as_slice().to_vec();
        let mut third = second.clone();
        third.pop();
        let web = NodeNaming::Basename("web".into());
        assert!(source.apply(third.clone(), &web, &"eu-west-2".into(), &id));
        assert!(source.as_slice().iter().all(|p| p.node.starts_with("web@")));
        assert!(!kept
            .iter()
            .any(|k| source.as_slice().iter().any(|p| Arc::ptr_eq(k, p))));
        third.pop();
        assert!(source.apply(third.clone(), &web, &"us-west-2".into(), &id));
        assert!(source.as_slice().iter().all(|p| p.region == "us-west-2"));
        let learnt: Vec<Found> = third
            .iter()
            .map(|f| Found {
                node: Some(format!("other@{}", f.ip)),
                ..f.clone()
            })
            .collect();
        let epmd = NodeNaming::Epmd { prefer: None };
        assert!(source.apply(learnt, &epmd, &"us-west-2".into(), &id));
        assert!(source
            .as_slice()
            .iter()
            .all(|p| p.node.starts_with("other@")));
    }

    #[test]
    fn same_ip_in_two_regions_is_a_conflict_not_a_peer() {
        let a = vec![
            peer("10.0.0.5", "eu-west-2", "ecs:eu"),
            peer("10.0.0.6", "eu-west-2", "ecs:eu"),
        ];
        let b = vec![peer("10.0.0.5", "us-west-2", "ecs:us")];
        let (peers, conflicts, _) = merge([a.as_slice(), b.as_slice()], &LocalNode::default());
        assert_eq!(peers.len(), 1);
        assert_eq!(peers[0].node, "app@10.0.0.6");
        assert_eq!(conflicts.len(), 1);
        assert_eq!(conflicts[0].ip.to_string(), "10.0.0.5");
        let regions: Vec<_> = conflicts[0]
            .claims
            .iter()
            .map(|c| c.region.as_str())
            .collect();
        assert_eq!(regions, ["eu-west-2", "us-west-2"]);
    }

    #[test]
    fn local_node_is_excluded_by_name_or_ip() {
        let a = vec![
            peer("10.0.0.5", "eu-west-2", "s"),
            peer("10.0.0.6", "eu-west-2", "s"),
        ];
        let by_name = LocalNode {
            node: Some("app@10.0.0.5".into()),
            ip: None,
        };
        let (peers, _, me) = merge([a.as_slice()], &by_name);
        assert_eq!(peers.len(), 1);
        assert_eq!(me.unwrap().node, "app@10.0.0.5");
        let by_ip = LocalNode {
            node: None,
            ip: Some("10.0.0.6".parse().unwrap()),
        };
        let (peers, _, me) = merge([a.as_slice()], &by_ip);
        assert_eq!(peers[0].node, "app@10.0.0.5");
        assert_eq!(me.unwrap().node, "app@10.0.0.6");
    }

    #[test]
    fn diff_reports_added_removed_and_draining() {
        let mut before = Snapshot::empty();
        before.peers = arcs(&[peer("10.0.0.1", "r", "s"), peer("10.0.0.2", "r", "s")]);
        let mut after = Snapshot::empty();
        let mut drained = peer("10.0.0.2", "r", "s");
        drained.draining = true;
        after.peers = arcs(&[drained, peer("10.0.0.3", "r", "s")]);
        let c = after.diff(&before);
        assert_eq!(
            c.added.iter().map(|p| p.node.as_str()).collect::<Vec<_>>(),
            ["app@10.0.0.3"]
        );
        assert_eq!(
            c.removed
                .iter()
                .map(|p| p.node.as_str())
                .collect::<Vec<_>>(),
            ["app@10.0.0.1"]
        );
        assert_eq!(
            c.draining
                .iter()
                .map(|p| p.node.as_str())
                .collect::<Vec<_>>(),
            ["app@10.0.0.2"]
        );
        assert!(before.diff(&before).is_empty());
    }

    #[test]
    fn diff_of_hand_made_unsorted_snapshots_is_the_same_as_of_sorted_ones() {
        let mut drained = peer("10.0.0.2", "r", "s");
        drained.draining = true;
        let before = [
            peer("10.0.0.1", "r", "s"),
            peer("10.0.0.2", "r", "s"),
            peer("10.0.0.4", "r", "s"),
        ];
        let after = [
            peer("10.0.0.4", "r", "s"),
            peer("10.0.0.3", "r", "s"),
            drained,
        ];
        let snap = |peers: &[Peer], rev: bool| {
            let mut s = Snapshot::empty();
            s.peers = arcs(peers);
            s.peers
                .sort_by(|a, b| if rev { by_node(b, a) } else { by_node(a, b) });
            s
        };
        let sorted = snap(&after, false).diff(&snap(&before, false));
        let unsorted = snap(&after, true).diff(&snap(&before, true));
        let names = |v: &[Peer]| v.iter().map(|p| p.node.clone()).collect::<Vec<_>>();
        assert_eq!(names(&sorted.added), ["app@10.0.0.3"]);
        assert_eq!(names(&sorted.removed), ["app@10.0.0.1"]);
        assert_eq!(names(&sorted.draining), ["app@10.0.0.2"]);
        assert_eq!(names(&unsorted.added), names(&sorted.added));
        assert_eq!(names(&unsorted.removed), names(&sorted.removed));
        assert_eq!(names(&unsorted.draining), names(&sorted.draining));
        // The poller's diff, which takes the order as made by merge, agrees.
        let merged = snap(&after, false).diff_merged(&snap(&before, false));
        assert_eq!(names(&merged.added), names(&sorted.added));
        assert_eq!(names(&merged.removed), names(&sorted.removed));
        assert_eq!(names(&merged.draining), names(&sorted.draining));
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "diff_merged of peers not in by_node order")]
    fn diff_merged_of_peers_out_of_order_is_caught_in_tests() {
        let mut now = Snapshot::empty();
        now.peers = arcs(&[peer("10.0.0.2", "r", "s"), peer("10.0.0.1", "r", "s")]);
        now.diff_merged(&Snapshot::empty());
    }

    #[test]
    fn conflict_claims_are_in_configuration_order_whatever_the_ports() {
        let a = vec![at_port("10.0.0.5", 9002, "a")];
        let b = vec![Peer {
            region: "us-west-2".into(),
            ..at_port("10.0.0.5", 9001, "b")
        }];
        let (_, conflicts, _) = merge([a.as_slice(), b.as_slice()], &LocalNode::default());
        assert_eq!(
            conflicts[0]
                .claims
                .iter()
                .map(|c| c.port)
                .collect::<Vec<_>>(),
            [Some(9002), Some(9001)]
        );
    }

    fn at_port(ip: &str, port: u16, task: &str) -> Peer {
        Peer {
            port: Some(port),
            node: format!("{task}@{ip}"),
            task_arn: Some(format!("arn:task/{task}")),
            ..peer(ip, "eu-west-2", "ecs:a")
        }
    }

    #[test]
    fn two_tasks_on_one_ip_with_different_ports_are_two_peers() {
        // ECS bridge mode: two tasks on one container instance share its IP.
        let a = vec![
            at_port("10.0.0.5", 9001, "a"),
            at_port("10.0.0.5", 9002, "b"),
        ];
        let (peers, conflicts, _) = merge([a.as_slice()], &LocalNode::default());
        assert_eq!(
            peers
                .iter()
                .map(|p| p.address().to_string())
                .collect::<Vec<_>>(),
            ["10.0.0.5:9001", "10.0.0.5:9002"]
        );
        assert!(conflicts.is_empty());
        // And the diff keys on the address: the second one arriving is one peer added.
        let mut before = Snapshot::empty();
        before.peers = arcs(&[at_port("10.0.0.5", 9001, "a")]);
        let mut after = Snapshot::empty();
        after.peers = peers;
        let c = after.diff(&before);
        assert_eq!(c.added.len(), 1);
        assert_eq!(c.added[0].port, Some(9002));
        assert!(c.removed.is_empty());
        // The same task reported by two sources is still one peer.
        let b = vec![Peer {
            source: SourceId::new("cloudmap:b".into()),
            ..at_port("10.0.0.5", 9001, "a")
        }];
        let (peers, _, _) = merge([a.as_slice(), b.as_slice()], &LocalNode::default());
        assert_eq!(peers.len(), 2);
    }

    #[test]
    fn the_same_ip_in_two_regions_is_a_conflict_whatever_the_ports() {
        let a = vec![at_port("10.0.0.5", 9001, "a")];
        let b = vec![Peer {
            region: "us-west-2".into(),
            ..at_port("10.0.0.5", 9002, "b")
        }];
        let (peers, conflicts, _) = merge([a.as_slice(), b.as_slice()], &LocalNode::default());
        assert!(peers.is_empty());
        assert_eq!(conflicts.len(), 1);
        assert_eq!(
            conflicts[0]
                .claims
                .iter()
                .map(|c| c.port)
                .collect::<Vec<_>>(),
            [Some(9001), Some(9002)]
        );
    }

    #[test]
    fn local_ip_alone_does_not_exclude_a_peer_with_its_own_port() {
        let a = vec![
            at_port("10.0.0.5", 9001, "a"),
            at_port("10.0.0.5", 9002, "b"),
        ];
        let by_ip = LocalNode {
            node: None,
            ip: Some("10.0.0.5".parse().unwrap()),
        };
        let (peers, _, me) = merge([a.as_slice()], &by_ip);
        assert_eq!(peers.len(), 2);
        assert!(me.is_none());
        let by_name = LocalNode {
            node: Some("b@10.0.0.5".into()),
            ip: None,
        };
        let (peers, _, me) = merge([a.as_slice()], &by_name);
        assert_eq!(peers.len(), 1);
        assert_eq!(me.unwrap().port, Some(9002));
    }

    #[test]
    fn a_region_refusing_credentials_that_work_elsewhere_names_both_remedies() {
        let refused = || {
            crate::error::classify_code(
                Some("UnrecognizedClientException"),
                Some(400),
                "ecs:ListTasks",
                "UnrecognizedClientException: The security token included in the request is invalid.".into(),
                "",
                "",
            )
        };
        let mut sources = vec![
            status("ecs:ap-east-1/web", "ap-east-1", 0, Some(refused())),
            status("ecs:eu-west-2/web", "eu-west-2", 2, None),
            status("ecs:us-east-1/web", "us-east-1", 1, None),
            // Another partition proves nothing about this one.
            status("ecs:cn-north-1/web", "cn-north-1", 1, None),
        ];
        explain_refused_regions(&mut sources);
        let fix = sources[0].failure.as_ref().unwrap().fix.clone().unwrap();
        assert!(
            fix.starts_with("ap-east-1 refuses the credentials that work in eu-west-2, us-east-1 in this run: enable ap-east-1"),
            "{fix}"
        );
        for remedy in [
            "aws account enable-region --region-name ap-east-1",
            "AWS_STS_REGIONAL_ENDPOINTS=regional",
            "--global-endpoint-token-version v2Token",
        ] {
            assert!(fix.contains(remedy), "{fix}");
        }
        assert!(!fix.contains("invalid"), "{fix}");
        assert!(sources[0].error.as_ref().unwrap().ends_with(&fix));
        // Told again once the run shows the credentials work elsewhere (the first round's
        // fix could not say so), and not again while nothing changes.
        let snapshot = |sources: Vec<SourceStatus>| Snapshot {
            sources,
            ..Snapshot::empty()
        };
        let mut first = sources.clone();
        first[0] = status("ecs:ap-east-1/web", "ap-east-1", 0, Some(refused()));
        first[1].state = SourceState::Pending;
        first[2].state = SourceState::Pending;
        let (before, after) = (snapshot(first), snapshot(sources.clone()));
        let failing = |c: &Changes| {
            c.events
                .iter()
                .filter(|e| matches!(e, Event::SourceFailing { .. }))
                .count()
        };
        assert_eq!(failing(&before.diff(&Snapshot::empty())), 1);
        assert_eq!(failing(&after.diff(&before)), 1, "the better fix is told");
        assert_eq!(failing(&after.diff(&after)), 0);
        assert_eq!(sources[0].error_kind, Some(ErrorKind::Credentials));

        let untouched = |mut sources: Vec<SourceStatus>| {
            let before = sources.clone();
            explain_refused_regions(&mut sources);
            assert_eq!(sources, before);
            assert!(credentials_work_elsewhere(&sources[0], &sources).is_none());
        };
        // Refused everywhere: the credentials may be invalid; the general fix stays.
        untouched(vec![
            status("ecs:ap-east-1/web", "ap-east-1", 0, Some(refused())),
            status("ecs:eu-west-2/web", "eu-west-2", 0, Some(refused())),
        ]);
        // Only another partition works.
        untouched(vec![
            status("ecs:cn-north-1/web", "cn-north-1", 0, Some(refused())),
            status("ecs:eu-west-2/web", "eu-west-2", 1, None),
        ]);
        // The same region accepted them in this run: they changed, the region did not.
        let mut worked_here = status("ecs:ap-east-1/web", "ap-east-1", 0, Some(refused()));
        worked_here.last_success = Some("2026-01-01T00:00:00Z".into());
        untouched(vec![
            worked_here,
            status("ecs:eu-west-2/web", "eu-west-2", 1, None),
        ]);
        untouched(vec![
            status("ecs:ap-east-1/web", "ap-east-1", 0, Some(refused())),
            status("ecs:ap-east-1/db", "ap-east-1", 1, None),
            status("ecs:eu-west-2/web", "eu-west-2", 1, None),
        ]);
        // Expired credentials are not a region's refusal.
        let expired = crate::error::classify_code(
            Some("ExpiredTokenException"),
            Some(400),
            "ecs:ListTasks",
            "ExpiredTokenException: expired".into(),
            "",
            "",
        );
        untouched(vec![
            status("ecs:ap-east-1/web", "ap-east-1", 0, Some(expired)),
            status("ecs:eu-west-2/web", "eu-west-2", 1, None),
        ]);
    }

    /// A source's status after a poll (failed when `failure` is given), for the tests of this
    /// module and of the doctor: an ECS source `id` in `region` with `peers` peers.
    pub(crate) fn status(
        id: &str,
        region: &str,
        peers: usize,
        failure: Option<SourceError>,
    ) -> SourceStatus {
        let source = SourceConfig::Ecs(crate::config::EcsSourceConfig {
            region: region.into(),
            cluster: "web".into(),
            service: None,
            family: None,
            container: None,
            tags: Default::default(),
            regions: None,
        });
        SourceStatus {
            id: SourceId::new(id.into()),
            state: if failure.is_some() {
                SourceState::Failing
            } else {
                SourceState::Ok
            },
            stale: failure.is_some(),
            error: failure.as_ref().map(ToString::to_string),
            error_kind: failure.as_ref().map(|e| e.kind),
            consecutive_failures: u32::from(failure.is_some()),
            failure,
            api_calls: 1,
            api_calls_total: 1,
            peers,
            ..SourceStatus::pending(&source)
        }
    }

    #[test]
    fn diff_reports_membership_events_once_each() {
        let denied = SourceError::new(
            ErrorKind::AccessDenied,
            "ecs:ListTasks",
            "AccessDeniedException: no",
        )
        .with_fix("grant ecs:ListTasks");
        let snap = |failure: Option<SourceError>, conflict: bool, left: bool| {
            let mut s = Snapshot::empty();
            s.sources = vec![status("ecs:a", "eu-west-2", 2, failure)];
            if conflict {
                let (_, c, _) = merge(
                    [
                        vec![peer("10.0.0.9", "eu-west-2", "ecs:a")].as_slice(),
                        vec![peer("10.0.0.9", "us-west-2", "ecs:b")].as_slice(),
                    ],
                    &LocalNode::default(),
                );
                s.conflicts = c;
            }
            s.left = left.then(|| SourceId::new("ecs:a".into()));
            s
        };
        let ok = snap(None, false, false);
        let failing = snap(Some(denied.clone()), true, false);
        let events = failing.diff(&ok).events;
        assert_eq!(events.len(), 2, "{events:?}");
        let Event::SourceFailing {
            error, kept_peers, ..
        } = &events[0]
        else {
            panic!("{events:?}")
        };
        assert_eq!((error, *kept_peers), (&denied, 2));
        assert_eq!(
            serde_json::to_value(error).unwrap(),
            serde_json::json!({"kind": "access_denied", "action": "ecs:ListTasks", "message": "AccessDeniedException: no", "fix": "grant ecs:ListTasks"})
        );
        assert!(events[0].to_string().starts_with(
            "source ecs:a is failing (keeping its 2 last-known peers): ecs:ListTasks failed (access_denied)"
        ));
        assert!(
            matches!(&events[1], Event::ConflictFound { conflict } if conflict.ip.to_string() == "10.0.0.9")
        );
        assert!(
            failing.diff(&failing).events.is_empty(),
            "still failing the same way: no event"
        );
        let throttled = snap(
            Some(SourceError::new(
                ErrorKind::Throttled,
                "ecs:ListTasks",
                "Rate exceeded",
            )),
            true,
            false,
        );
        assert!(
            matches!(
                throttled.diff(&failing).events[..],
                [Event::SourceFailing { .. }]
            ),
            "failing differently: reported"
        );
        let recovered = snap(None, false, true);
        let events = recovered.diff(&failing).events;
        assert_eq!(
            events.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "source ecs:a recovered (2 peers)",
                "this node's task has left ecs:a; not connecting to peers any more"
            ]
        );
        let again = recovered.diff(&recovered);
        assert!(again.is_empty() && again.events.is_empty());
        // A subscriber that skipped the failing snapshot sees the net effect: only the leaving.
        assert!(matches!(
            recovered.diff(&ok).events[..],
            [Event::LocalLeft { .. }]
        ));
    }

    /// The one rule of a source's state, and the JSON's `ok` and `pending` read from it.
    #[test]
    fn a_source_state_is_decided_once_and_ok_agrees_with_it() {
        use SourceState::*;
        for ((polled, answered, absent, peers, skipped), want) in [
            ((false, false, false, 0, 0), Pending),
            ((true, false, false, 3, 0), Failing),
            ((true, false, true, 0, 2), Failing),
            ((true, true, true, 0, 0), Absent),
            ((true, true, false, 0, 2), Skipping),
            ((true, true, false, 1, 2), Ok),
            ((true, true, false, 0, 0), Ok),
        ] {
            let state = SourceState::of(polled, answered, absent, peers, skipped);
            assert_eq!(
                state, want,
                "{polled} {answered} {absent} {peers} {skipped}"
            );
            let mut st = status("ecs:a", "eu-west-2", peers, None);
            st.state = state;
            let json = serde_json::to_value(&st).unwrap();
            assert_eq!(json["state"], serde_json::to_value(want).unwrap());
            assert_eq!(json["ok"], matches!(want, Ok | Absent), "{json}");
            assert_eq!(json["pending"], want == Pending, "{json}");
        }
    }

    /// Cloud Map instances a source could not use are the same warning, in their own words
    /// (instances, not running tasks), and the source is skipping, not ok.
    #[test]
    fn skipped_cloud_map_instances_are_a_warning_about_instances() {
        use crate::peer::{count_skips, SkipReason};
        let mut st = status("cloudmap:us-west-2/internal/api", "us-west-2", 0, None);
        st.peers = 0;
        st.skipped = count_skips(
            [
                (SkipReason::NoAddressAttribute, "c1"),
                (SkipReason::NoAddressAttribute, "c2"),
            ],
            4370,
        );
        st.skipped_tasks = 2;
        st.state = SourceState::of(true, true, false, st.peers, st.skipped_tasks);
        let s = Snapshot {
            sources: vec![st],
            ..Snapshot::empty()
        };
        assert!(s.sources[0].state == crate::SourceState::Skipping);
        let changes = s.diff(&Snapshot::empty());
        let [e @ Event::TasksSkipped { .. }] = &changes.events[..] else {
            panic!("{:?}", changes.events)
        };
        assert!(e.is_warning());
        let text = e.to_string();
        assert!(
            text.starts_with("source cloudmap:us-west-2/internal/api: 2 Cloud Map instance(s) skipped (no_address_attribute, e.g. instance c1): the instance has no AWS_INSTANCE_IPV4 or AWS_INSTANCE_IPV6 attribute")
                && text.contains("Fix: register the instance with AWS_INSTANCE_IPV4"),
            "{text}"
        );
    }

    #[test]
    fn skipped_tasks_are_an_event_once_per_change() {
        use crate::peer::SkipReason;
        let skipping = |n: usize| {
            let mut st = status("ecs:a", "eu-west-2", 2, None);
            st.peers = 0;
            if n > 0 {
                st.skipped_tasks = n;
                st.skipped = vec![Skipped {
                    reason: SkipReason::NoDistributionBinding,
                    tasks: n,
                    example_task: "arn:aws:ecs:eu-west-2:1:task/web/4e3c".into(),
                    message: SkipReason::NoDistributionBinding.message(4370),
                    fix: SkipReason::NoDistributionBinding.fix(4370),
                }];
            }
            st.state = SourceState::of(true, true, false, st.peers, st.skipped_tasks);
            Snapshot {
                sources: vec![st],
                ..Snapshot::empty()
            }
        };
        let first = skipping(2).diff(&Snapshot::empty());
        let [Event::TasksSkipped { skipped, .. }] = &first.events[..] else {
            panic!("{:?}", first.events)
        };
        assert_eq!(skipped[0].tasks, 2);
        assert!(first.events[0].is_warning());
        let text = first.events[0].to_string();
        assert!(
            text.starts_with("source ecs:a: 2 running task(s) skipped (no_distribution_binding, e.g. task 4e3c): no container of the task maps the distribution port 4370")
                && text.contains(r#"Fix: add to the app container of the task definition "portMappings": [{"containerPort": 4370, "hostPort": 0"#),
            "{text}"
        );
        assert!(skipping(2).sources[0].state == crate::SourceState::Skipping);
        assert!(
            skipping(2).diff(&skipping(2)).events.is_empty(),
            "not again while unchanged"
        );
        assert_eq!(
            skipping(3).diff(&skipping(2)).events.len(),
            1,
            "again when it changes"
        );
        assert!(skipping(0).diff(&skipping(2)).events.is_empty());
    }

    #[test]
    fn rfc3339_formats_utc_seconds() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_500);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20Z");
    }
}
