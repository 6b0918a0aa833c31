//! Fleet-shared polling (issue #13): nodes that run the same sources share their polls.
//!
//! The adapters (the Elixir side, over Erlang distribution) tell the poller who is in the
//! sharing group ([`crate::PollerHandle::share`]) and hand it the results other members sent
//! ([`crate::PollerHandle::receive_shared`]); everything else is decided here and in the
//! poller:
//!
//! - **The key** ([`key`]): two nodes share results only when their sharing keys are equal:
//!   XXH3-64 of the canonical form of what changes a result's meaning.
//! - **The election** ([`elect`]): per source, one member polls it: rendezvous hashing (the
//!   member with the highest XXH3-64 of `source id, 0xff, node name` wins), among the members in
//!   the source's own region when there are any. Deterministic from the member set and their
//!   regions, so every member that sees the same group agrees without talking.
//! - **The wire form** ([`encode`], [`decode`]): a postcard-encoded [`SharedResult`]: the
//!   sharing key, the (resolved) source id, the sender's sequence number, the poll's start time
//!   (unix ms) and the raw answer (peers before naming, and the skipped tasks), the failure, or
//!   "the same answer as my full result number `base`". Decoding never panics and refuses
//!   anything over [`MAX_RESULT_BYTES`].
//! - **Per-source state** ([`SourceShare`]): who polls it, whether that poller has gone silent
//!   (no fresh result for two polling intervals: then this node polls the source itself until
//!   results flow again), the order of applied results, what this node last sent, drops.

use std::borrow::Cow;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use crate::config::{Config, HealthFilter, NodeNaming, SourceConfig};
use crate::error::{ErrorKind, SourceError};
use crate::peer::{Found, Skipped};

/// The version of the wire form and of the canonical configuration form; part of the key, so
/// nodes that encode differently never exchange results.
const WIRE_VERSION: &str = "ecs-peers/shared/v2";

/// The largest encoded result accepted (bytes): 64 MiB, about 30 times the encoding of 10,000
/// peers with every field set. Anything larger is dropped before decoding.
pub const MAX_RESULT_BYTES: usize = 64 << 20;

/// A sender that saw the same answer again sends a full result at least every this many
/// results, so a member that missed the full one (a lost message, a late join) gets one again.
pub(crate) const FULL_EVERY: u32 = 8;

/// The canonical form of everything that changes what a poll result means: one line per fact,
/// strings JSON-quoted, sources in configuration order. Not this node's identity, not timings.
pub(crate) fn canonical(config: &Config) -> String {
    let q = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let o = |s: &Option<String>| s.as_deref().map(q).unwrap_or_else(|| "-".into());
    let mut out = String::new();
    out.push_str(WIRE_VERSION);
    out.push('\n');
    match &config.node {
        NodeNaming::Basename(b) => out.push_str(&format!("node basename {}\n", q(b))),
        NodeNaming::Template(t) => out.push_str(&format!("node template {}\n", q(t))),
        NodeNaming::Epmd { prefer } => out.push_str(&format!("node epmd {}\n", o(prefer))),
    }
    out.push_str(&format!("draining {}\n", config.draining));
    out.push_str(&format!("distribution_port {}\n", config.distribution_port));
    for s in &config.sources {
        match s {
            SourceConfig::Ecs(e) => out.push_str(&format!(
                "source ecs region {} cluster {} service {} family {} container {}\n",
                q(&e.region),
                q(&e.cluster),
                o(&e.service),
                o(&e.family),
                o(&e.container)
            )),
            SourceConfig::CloudMap(c) => {
                let health = match c.health {
                    HealthFilter::Healthy => "healthy",
                    HealthFilter::All => "all",
                    HealthFilter::HealthyOrElseAll => "healthy_or_else_all",
                };
                let query: Vec<String> = c
                    .query
                    .iter()
                    .map(|(k, v)| format!("{}={}", q(k), q(v)))
                    .collect();
                out.push_str(&format!(
                    "source cloudmap region {} namespace {} service {} health {} query {}\n",
                    q(&c.region),
                    q(&c.namespace),
                    q(&c.service),
                    health,
                    query.join(",")
                ));
            }
        }
    }
    out
}

/// The sharing key of a configuration (see [`Config::sharing_key`]): XXH3-64, seed 0, of
/// [`canonical`].
pub(crate) fn key(config: &Config) -> u64 {
    xxh3_64(canonical(config).as_bytes())
}

/// The rendezvous score of `node` for `source`: XXH3-64 of the source id, a 0xff byte (never in
/// UTF-8, so no two pairs give the same bytes) and the node name.
fn score(source: &str, node: &str) -> u64 {
    let mut bytes = Vec::with_capacity(source.len() + 1 + node.len());
    bytes.extend_from_slice(source.as_bytes());
    bytes.push(0xff);
    bytes.extend_from_slice(node.as_bytes());
    xxh3_64(&bytes)
}

/// The member that polls `source` (in `region`): among the members whose region (`region_of`,
/// `None` when unknown) is the source's, or among all members when none is, the one with the
/// highest [`score`] (ties, which need a hash collision, go to the greater name). `None` only
/// when `members` is empty. Any order of `members` gives the same answer; a member joining
/// moves only the sources it wins (about 1/N of them).
pub(crate) fn elect<'m>(
    source: &str,
    region: &str,
    members: &'m [String],
    region_of: impl Fn(&str) -> Option<String>,
) -> Option<&'m str> {
    let local: Vec<&'m str> = members
        .iter()
        .map(String::as_str)
        .filter(|m| region_of(m).as_deref() == Some(region))
        .collect();
    let pool: Vec<&'m str> = if local.is_empty() {
        members.iter().map(String::as_str).collect()
    } else {
        local
    };
    pool.into_iter()
        .max_by(|a, b| score(source, a).cmp(&score(source, b)).then(a.cmp(b)))
}

/// A failure as it travels: [`SourceError`] without its cause, the action as text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct WireError {
    kind: ErrorKind,
    action: String,
    message: String,
    fix: Option<String>,
}

/// The actions a [`SourceError`] names; a received action outside this list becomes `poll`
/// (no string from another node is leaked into a `&'static str`).
const ACTIONS: &[&str] = &[
    "ecs:ListTasks",
    "ecs:DescribeTasks",
    "ecs:DescribeContainerInstances",
    "ec2:DescribeInstances",
    "ecs:task-metadata",
    "servicediscovery:DiscoverInstances",
    "poll",
];

impl WireError {
    fn from_error(e: &SourceError) -> WireError {
        WireError {
            kind: e.kind,
            action: e.action.to_string(),
            message: e.message.clone(),
            fix: e.fix.clone(),
        }
    }

    fn into_error(self) -> SourceError {
        let action = ACTIONS
            .iter()
            .find(|a| **a == self.action)
            .copied()
            .unwrap_or("poll");
        let e = SourceError::new(self.kind, action, self.message);
        match self.fix {
            Some(fix) => e.with_fix(fix),
            None => e,
        }
    }
}

/// What a shared result says about its source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum WireAnswer<'a> {
    /// A complete answer: every peer before naming, and the RUNNING tasks it skipped.
    Peers {
        found: Cow<'a, [Found]>,
        skipped: Cow<'a, [Skipped]>,
    },
    /// The poll failed.
    Failed(WireError),
    /// The same answer as the sender's full result with sequence number `base`.
    Same { base: u64 },
    /// The sender is alive and still this source's poller, but did not poll it this round.
    Waiting(Waiting),
}

/// Why the elected poller did not poll a source this round (see [`SharedAnswer::Waiting`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Waiting {
    /// It is backing off after a failure that backs off (throttling, 5xx), as every node
    /// polling alone would.
    BackingOff,
    /// Its previous poll of the source is still running (bounded by `poll_timeout`).
    InFlight,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Wire<'a> {
    key: u64,
    source: Cow<'a, str>,
    seq: u64,
    started_ms: u64,
    answer: WireAnswer<'a>,
}

/// A shared result, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SharedResult {
    /// The sender's sharing key.
    pub key: u64,
    /// The source's resolved id.
    pub source: String,
    /// The sender's sequence number for this source (from 1).
    pub seq: u64,
    /// When the poll started, unix milliseconds (the sender's clock).
    pub started_ms: u64,
    /// What it found.
    pub answer: SharedAnswer,
}

/// What a shared result found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SharedAnswer {
    /// A complete answer (peers before naming) and the skipped tasks.
    Peers(Vec<Found>, Vec<Skipped>),
    /// The poll failed.
    Failed(SourceError),
    /// The same answer as the sender's full result number `base`.
    Same {
        /// The sequence number of that full result.
        base: u64,
    },
    /// No answer this round: the poller is alive and keeps the source, but is backing off or
    /// still polling. Its followers hear from it every round, so "silent" (two intervals
    /// without a word) means the poller is gone, never that it is waiting as a lone poller
    /// would: followers that polled on their own then would multiply the calls exactly when
    /// AWS throttles.
    Waiting(Waiting),
}

/// What to encode: borrowed from the poller's slot, so encoding copies nothing but bytes.
pub(crate) enum Outgoing<'a> {
    Peers(&'a [Found], &'a [Skipped]),
    Failed(&'a SourceError),
    Same { base: u64 },
    Waiting(Waiting),
}

/// Encodes a result (postcard). `None` only if serialization fails, which it cannot for these
/// types (logged if it ever does).
pub(crate) fn encode(
    key: u64,
    source: &str,
    seq: u64,
    started_ms: u64,
    answer: Outgoing<'_>,
) -> Option<Vec<u8>> {
    let answer = match answer {
        Outgoing::Peers(found, skipped) => WireAnswer::Peers {
            found: Cow::Borrowed(found),
            skipped: Cow::Borrowed(skipped),
        },
        Outgoing::Failed(e) => WireAnswer::Failed(WireError::from_error(e)),
        Outgoing::Same { base } => WireAnswer::Same { base },
        Outgoing::Waiting(w) => WireAnswer::Waiting(w),
    };
    let wire = Wire {
        key,
        source: Cow::Borrowed(source),
        seq,
        started_ms,
        answer,
    };
    postcard::to_allocvec(&wire)
        .inspect_err(|e| tracing::warn!(source, "cannot encode a shared result: {e}"))
        .ok()
}

/// Why a received result could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// Larger than [`MAX_RESULT_BYTES`].
    TooLarge(usize),
    /// Not a result of this wire version (postcard's own words).
    Malformed(String),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::TooLarge(n) => write!(
                f,
                "{n} bytes is more than the {MAX_RESULT_BYTES} a shared result may have"
            ),
            DecodeError::Malformed(why) => write!(f, "not a shared result ({why})"),
        }
    }
}

/// Decodes a result from another node. Never panics: any input is a result or an error
/// (postcard checks every length against the bytes left, and the whole is bounded by
/// [`MAX_RESULT_BYTES`]); trailing bytes are an error.
pub(crate) fn decode(bytes: &[u8]) -> Result<SharedResult, DecodeError> {
    if bytes.len() > MAX_RESULT_BYTES {
        return Err(DecodeError::TooLarge(bytes.len()));
    }
    let (wire, rest): (Wire<'_>, &[u8]) =
        postcard::take_from_bytes(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::Malformed(format!(
            "{} bytes after the result",
            rest.len()
        )));
    }
    Ok(SharedResult {
        key: wire.key,
        source: wire.source.into_owned(),
        seq: wire.seq,
        started_ms: wire.started_ms,
        answer: match wire.answer {
            WireAnswer::Peers { found, skipped } => {
                SharedAnswer::Peers(found.into_owned(), skipped.into_owned())
            }
            WireAnswer::Failed(e) => SharedAnswer::Failed(e.into_error()),
            WireAnswer::Same { base } => SharedAnswer::Same { base },
            WireAnswer::Waiting(w) => SharedAnswer::Waiting(w),
        },
    })
}

/// `t` as unix milliseconds (0 before 1970).
pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One source's sharing state in the poller.
#[derive(Debug, Default)]
pub(crate) struct SourceShare {
    /// The elected poller, when it is another node (`None`: this node polls the source).
    pub poller: Option<String>,
    /// Since when a fresh result is expected: the election, or the last result accepted.
    pub fresh_since: Option<std::time::Instant>,
    /// The elected poller sent nothing for more than two polling intervals: this node polls
    /// the source itself until a result arrives again.
    pub silent: bool,
    /// The node whose result is the one applied (`None`: polled here).
    pub received_from: Option<String>,
    /// When that result was applied.
    pub received_at: Option<SystemTime>,
    /// Results for this source dropped since start.
    pub dropped: u64,
    /// `(started_ms, seq)` of the last result applied (polled here or received): a result that
    /// is not newer is ignored.
    pub last_applied: Option<(u64, u64)>,
    /// The full received result the peers come from, `(sender, seq)`: what a "same" result
    /// must name to be applied.
    pub applied_base: Option<(String, u64)>,
    /// This node's sequence number for the source: one per poll of it here.
    pub seq: u64,
    /// What this node last sent in full: `(answer fingerprint, seq)`; reset when the members
    /// change, so a new member gets a full result.
    pub sent_full: Option<(u64, u64)>,
    /// Results sent since the last full one.
    pub sent_since_full: u32,
}

impl SourceShare {
    /// `stamp` is not newer than the last result applied.
    pub(crate) fn is_stale(&self, stamp: (u64, u64)) -> bool {
        self.last_applied.is_some_and(|last| stamp <= last)
    }

    /// Marks a result from the elected poller as fresh (now).
    pub(crate) fn refresh(&mut self) {
        self.fresh_since = Some(std::time::Instant::now());
        self.silent = false;
    }

    /// Follows `poller` from now on (`None`: this node polls the source itself).
    pub(crate) fn follow(&mut self, poller: Option<String>) {
        if self.poller != poller {
            if poller.is_none() {
                // Polled here from now on: this node's own polls are the newest results (a
                // former poller's clock may be ahead of this node's).
                self.last_applied = None;
                self.applied_base = None;
            }
            self.poller = poller;
            self.silent = false;
            self.fresh_since = Some(std::time::Instant::now());
            // Whoever follows now holds none of this node's earlier full results.
            self.sent_full = None;
        }
    }

    /// Whether the source is polled here this round: it is not followed, or its poller has
    /// been silent for more than `2 × interval` (updates [`SourceShare::silent`]), counted from
    /// the last fresh result or, when that result was a failure that backs off, from the end
    /// of that back-off (`backoff_until`: the poller waits as long before its next poll).
    pub(crate) fn polls_here(
        &mut self,
        interval: std::time::Duration,
        backoff_until: Option<std::time::Instant>,
    ) -> bool {
        if self.poller.is_none() {
            self.silent = false;
            return true;
        }
        let since = match (self.fresh_since, backoff_until) {
            (Some(f), Some(b)) => Some(f.max(b)),
            (f, _) => f,
        };
        self.silent = since.is_none_or(|t| t.elapsed() > interval.saturating_mul(2));
        self.silent
    }

    /// What to send after a successful poll here with answer fingerprint `fp` and sequence
    /// number `seq`: "same as base" when the last full result had the same fingerprint and
    /// fewer than [`FULL_EVERY`] results followed it, else a full one (remembered).
    pub(crate) fn send_same(&mut self, fp: u64, seq: u64) -> Option<u64> {
        match self.sent_full {
            Some((sent, base)) if sent == fp && self.sent_since_full + 1 < FULL_EVERY => {
                self.sent_since_full += 1;
                Some(base)
            }
            _ => {
                self.sent_full = Some((fp, seq));
                self.sent_since_full = 0;
                None
            }
        }
    }
}

impl crate::bench::BenchAnswer {
    /// This answer as the elected poller sends it to the other members: the bytes of a full
    /// shared result for `source` (for the benchmarks: the sender's encoding cost and size).
    pub fn shared(&self, source: &str) -> Vec<u8> {
        encode(0, source, 1, 0, Outgoing::Peers(&self.0, &[])).unwrap_or_default()
    }

    /// A shared result's bytes decoded back into the answer, as a follower does before applying
    /// it (for the benchmarks: decode, then [`crate::bench::BenchRound::round`] is a
    /// follower's whole cost). `None` when the bytes are not a full result.
    pub fn from_shared(bytes: &[u8]) -> Option<crate::bench::BenchAnswer> {
        match decode(bytes).ok()?.answer {
            SharedAnswer::Peers(found, _) => Some(crate::bench::BenchAnswer(found)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn members(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn no_region(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn the_election_is_deterministic_and_agrees_across_member_orders() {
        let a = members(&[
            "app@10.0.0.1",
            "app@10.0.0.2",
            "app@10.0.0.3",
            "app@10.0.0.4",
        ]);
        let mut b = a.clone();
        b.reverse();
        let mut c = a.clone();
        c.rotate_left(1);
        let mut winners = std::collections::BTreeSet::new();
        for i in 0..100 {
            let id = format!("ecs:eu-west-2/c{i}");
            let w = elect(&id, "eu-west-2", &a, no_region).unwrap();
            assert_eq!(Some(w), elect(&id, "eu-west-2", &b, no_region));
            assert_eq!(Some(w), elect(&id, "eu-west-2", &c, no_region));
            winners.insert(w.to_string());
        }
        assert_eq!(winners.len(), 4, "100 sources spread over all 4 members");
        // Pinned: XXH3-64 is specified, so this is the answer on every build and machine.
        assert_eq!(
            elect("ecs:eu-west-2/web/api", "eu-west-2", &a, no_region),
            Some(PINNED_WINNER)
        );
        assert_eq!(elect("x", "r", &[], no_region), None);
    }

    /// The winner of `ecs:eu-west-2/web/api` among app@10.0.0.1..4, computed once.
    const PINNED_WINNER: &str = "app@10.0.0.3";

    #[test]
    fn the_election_prefers_a_member_in_the_sources_region() {
        let all = members(&["a@1", "b@2", "c@3", "d@4", "e@5", "f@6"]);
        let region = |m: &str| Some(if m == "e@5" { "us-west-2" } else { "eu-west-2" }.into());
        for i in 0..50 {
            let id = format!("ecs:us-west-2/c{i}");
            assert_eq!(elect(&id, "us-west-2", &all, region), Some("e@5"));
        }
        // No member in the region: any member may win.
        let mut winners = std::collections::BTreeSet::new();
        for i in 0..50 {
            let id = format!("ecs:ap-south-1/c{i}");
            winners.insert(elect(&id, "ap-south-1", &all, region).unwrap().to_string());
        }
        assert!(winners.len() > 3, "{winners:?}");
    }

    #[test]
    fn a_member_joining_moves_about_one_nth_of_the_sources() {
        let before = members(&[
            "app@10.0.0.1",
            "app@10.0.0.2",
            "app@10.0.0.3",
            "app@10.0.0.4",
        ]);
        let mut after = before.clone();
        after.push("app@10.0.0.5".into());
        let n = 2000;
        let mut moved = 0;
        for i in 0..n {
            let id = format!("ecs:eu-west-2/c{i}");
            let b = elect(&id, "eu-west-2", &before, no_region).unwrap();
            let a = elect(&id, "eu-west-2", &after, no_region).unwrap();
            if a != b {
                assert_eq!(a, "app@10.0.0.5", "a source moves only to the new member");
                moved += 1;
            }
        }
        // Expected n/5 = 400; a modulo-style assignment would move about 4/5 of them.
        assert!((300..=500).contains(&moved), "moved {moved} of {n}");
    }

    fn found(ip: &str) -> Found {
        Found {
            task_arn: Some(format!("arn:aws:ecs:eu-west-2:1:task/web/{ip}")),
            private_dns_name: Some("ip-x.eu-west-2.compute.internal".into()),
            port: Some(4370),
            draining: true,
            ..Found::at(ip.parse().unwrap())
        }
    }

    #[test]
    fn results_round_trip() {
        let peers = vec![found("10.0.0.1"), found("fd00::1")];
        let skipped = vec![Skipped {
            reason: crate::peer::SkipReason::NoAddress,
            tasks: 2,
            example_task: "arn:t".into(),
            message: "m".into(),
            fix: "f".into(),
        }];
        let bytes = encode(
            7,
            "ecs:eu-west-2/web",
            3,
            99,
            Outgoing::Peers(&peers, &skipped),
        )
        .unwrap();
        assert_eq!(
            decode(&bytes).unwrap(),
            SharedResult {
                key: 7,
                source: "ecs:eu-west-2/web".into(),
                seq: 3,
                started_ms: 99,
                answer: SharedAnswer::Peers(peers, skipped),
            }
        );
        let e = SourceError::new(ErrorKind::Throttled, "ecs:ListTasks", "Rate exceeded")
            .with_fix("slow down");
        let bytes = encode(7, "s", 4, 100, Outgoing::Failed(&e)).unwrap();
        assert_eq!(decode(&bytes).unwrap().answer, SharedAnswer::Failed(e));
        let bytes = encode(7, "s", 5, 101, Outgoing::Same { base: 3 }).unwrap();
        assert_eq!(
            decode(&bytes).unwrap().answer,
            SharedAnswer::Same { base: 3 }
        );
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_err(), "trailing bytes");
        assert!(decode(&bytes[..bytes.len() - 1]).is_err(), "truncated");
        assert_eq!(
            decode(&vec![0; MAX_RESULT_BYTES + 1]),
            Err(DecodeError::TooLarge(MAX_RESULT_BYTES + 1))
        );
    }

    #[test]
    fn the_benchmark_hooks_round_trip_an_answer() {
        let answer = crate::bench::BenchAnswer(vec![found("10.0.0.1"), found("10.0.0.2")]);
        let bytes = answer.shared("ecs:eu-west-2/web");
        let back = crate::bench::BenchAnswer::from_shared(&bytes).unwrap();
        assert_eq!(back.0, answer.0);
        assert!(crate::bench::BenchAnswer::from_shared(b"nope").is_none());
    }

    #[test]
    fn an_unknown_action_is_not_made_static() {
        let wire = WireError {
            kind: ErrorKind::Service,
            action: "made:Up".into(),
            message: "m".into(),
            fix: None,
        };
        assert_eq!(wire.into_error().action, "poll");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes);
        }

        #[test]
        fn mutated_results_never_panic(flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
            let peers = vec![found("10.0.0.1"), found("10.0.0.2")];
            let mut bytes = encode(1, "ecs:eu-west-2/web", 1, 1, Outgoing::Peers(&peers, &[])).unwrap();
            for (at, b) in flips {
                let i = at % bytes.len();
                bytes[i] = b;
            }
            let _ = decode(&bytes);
        }
    }

    fn cfg(v: serde_json::Value) -> Config {
        Config::from_value(v).unwrap()
    }

    #[test]
    fn the_key_covers_what_a_result_means_and_nothing_else() {
        let base = json!({"node_basename": "app", "distribution_port": 4370,
            "sources": [{"type":"ecs","region":"eu-west-2","cluster":"web","service":"api"}]});
        let k = key(&cfg(base.clone()));
        let with = |k2: &str, v: serde_json::Value| {
            let mut c = base.clone();
            c[k2] = v;
            key(&cfg(c))
        };
        // Not result-relevant: the same key.
        assert_eq!(with("polling_interval", json!("1s")), k);
        assert_eq!(with("local_node", json!("app@10.0.0.9")), k);
        assert_eq!(with("share_polling", json!(true)), k);
        // Result-relevant: another key.
        assert_ne!(with("draining", json!(false)), k);
        assert_ne!(with("distribution_port", json!(9000)), k);
        assert_ne!(with("node_basename", json!("web")), k);
        assert_ne!(
            with(
                "sources",
                json!([{"type":"ecs","region":"eu-west-2","cluster":"web","service":"other"}])
            ),
            k
        );
        // Pinned: the canonical form and XXH3-64 are specified, so every build agrees.
        assert_eq!(
            canonical(&cfg(base)),
            "ecs-peers/shared/v2\nnode basename \"app\"\ndraining true\ndistribution_port 4370\nsource ecs region \"eu-west-2\" cluster \"web\" service \"api\" family - container -\n"
        );
        assert_eq!(format!("{k:016x}"), PINNED_KEY);
    }

    /// The key of the base configuration above, computed once.
    const PINNED_KEY: &str = "c21ce707339210d8";
}
