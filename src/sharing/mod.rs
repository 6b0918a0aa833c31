//! Fleet-shared polling: nodes that run the same sources share their polls.
//!
//! The adapters (the Elixir side, over Erlang distribution) tell the poller who is in the
//! sharing group ([`crate::PollerHandle::share`]) and hand it the results other members sent
//! ([`crate::PollerHandle::receive_shared`]). The poller asks this module three things, and
//! keeps its own rules (the poll loop, back-off, the one rule that applies a result):
//!
//! - **Should this source be polled here now?** ([`Sharing::should_poll`]; when not, and this
//!   node is its poller, [`Sharing::not_polled`] tells the followers it is alive.)
//! - **A poll finished: what to send?** ([`Sharing::polled`]: its stamp, and the encoded
//!   result in the outbox when this node polls the source for the group.)
//! - **Bytes received: what to apply?** ([`Sharing::receive`]: nothing, or an [`Answer`] for
//!   the poller's one rule.)
//!
//! Inside: the key (`key.rs`: two nodes share results only when their keys are equal), the
//! election (`election.rs`: per source, one member polls it, by rendezvous hashing), the wire
//! format (`wire.rs`: its own versioned types), and each source's follower state
//! (`follower.rs`: who polls it, whether that poller has gone silent, the order of results).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::config::Config;
use crate::error::{ErrorKind, SourceError};
use crate::fingerprint;
use crate::namespace::Snapshot;
use crate::peer::{Found, SkipReason, Skipped, SourceId};

mod election;
mod follower;
mod key;
mod wire;

pub(crate) use follower::{SourceShare, Stamp};
pub use key::sharing_key;
pub(crate) use wire::{decode, encode, Outgoing, SharedAnswer, Waiting};

#[cfg(test)]
pub(crate) use election::elect;

/// How many updates' shared results a subscriber that skips updates can still catch up on.
const RECENT_UPDATES: u64 = 16;

/// A source as sharing sees it: the poller's slot lends its identity and its sharing state.
pub(crate) struct Shared<'a> {
    /// The source's id (resolved once `cluster = "auto"` is).
    pub id: &'a SourceId,
    /// The source's region.
    pub region: &'a str,
    /// Its id is final (not an unresolved `cluster = "auto"`), so it can be shared.
    pub final_id: bool,
    /// Its sharing state.
    pub state: &'a mut SourceShare,
}

/// A source's result as the poller's one rule takes it (polled here or received).
#[derive(Debug)]
pub(crate) enum Answer {
    /// A complete answer (peers before naming) and the RUNNING tasks it skipped.
    Complete(Vec<Found>, Vec<Skipped>),
    /// The same complete answer as the one applied: the source is healthy, its peers stay.
    Unchanged,
    /// The poll failed.
    Failed(SourceError),
    /// A complete answer polled here: the source is absent, for this reason (never shared:
    /// each node probes an absent region itself).
    Absent(String),
}

/// What to do with bytes received from another member ([`Sharing::receive`]).
#[derive(Debug)]
pub(crate) enum Inbound {
    /// Nothing to apply: dropped (and counted), or only a word that its poller is alive.
    /// `heard_again`: the source's poller had gone silent and is heard again (its status
    /// changed).
    Nothing { heard_again: bool },
    /// Apply `answer` to source number `idx` (named by this node first), stamped `stamp`.
    Apply {
        idx: usize,
        answer: Answer,
        stamp: Stamp,
        heard_again: bool,
    },
}

/// The poller's side of fleet-shared polling: the group, and the results to send.
pub(crate) struct Sharing {
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
    /// Results encoded since the last update.
    outbox: Vec<Arc<[u8]>>,
    /// The results of the last [`RECENT_UPDATES`] updates, by update (poll) number, so a
    /// subscriber that skipped updates still gets the results they carried.
    recent: VecDeque<(u64, Arc<[u8]>)>,
}

impl Sharing {
    /// Not sharing yet: the group is empty until [`Sharing::share`].
    pub(crate) fn new(config: &Config) -> Sharing {
        Sharing {
            enabled: config.share_polling,
            key: sharing_key(config),
            me: config.local_node.clone(),
            members: Vec::new(),
            dropped: 0,
            outbox: Vec::new(),
            recent: VecDeque::new(),
        }
    }

    fn active(&self) -> bool {
        self.me.is_some() && self.members.len() > 1
    }

    /// The members of the group, this node included; 0 when not sharing.
    pub(crate) fn group_size(&self) -> usize {
        if self.active() {
            self.members.len()
        } else {
            0
        }
    }

    /// Results dropped that named no source of this node or did not decode.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped
    }

    /// This node polls `source` for the other members of the group.
    pub(crate) fn leads(&self, source: &Shared<'_>) -> bool {
        self.active() && source.final_id && source.state.poller.is_none()
    }

    /// `members` (node names, this node included) share polls with this one now. Ignored
    /// when `share_polling` is off or this node's name is unknown. Elects every source's
    /// poller again; returns whether any changed.
    pub(crate) fn share<'a>(
        &mut self,
        members: Vec<String>,
        sources: impl Iterator<Item = Shared<'a>>,
        last: &Snapshot,
    ) -> bool {
        let Some(me) = self.me.as_ref().filter(|_| self.enabled) else {
            tracing::debug!("share_polling is off (or this node's name is unknown): not sharing");
            return false;
        };
        let mut members = members;
        members.sort_unstable();
        members.dedup();
        if !members.is_empty() && members.binary_search(me).is_err() {
            members.push(me.clone());
            members.sort_unstable();
        }
        let changed = members != self.members;
        if changed {
            tracing::debug!(members = members.len(), "sharing group changed");
            self.members = members;
        }
        self.elect_forgetting(sources, last, changed)
    }

    /// Elects each source's poller among the members, with their regions as the `last`
    /// snapshot knows them; returns whether any changed.
    pub(crate) fn elect<'a>(
        &self,
        sources: impl Iterator<Item = Shared<'a>>,
        last: &Snapshot,
    ) -> bool {
        self.elect_forgetting(sources, last, false)
    }

    /// [`Sharing::elect`]; with `forget_sent` (the group changed), every source also forgets
    /// the full results it sent, so each new member gets a full one.
    fn elect_forgetting<'a>(
        &self,
        sources: impl Iterator<Item = Shared<'a>>,
        last: &Snapshot,
        forget_sent: bool,
    ) -> bool {
        let active = self.active();
        let me = self.me.as_deref();
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
        for s in sources {
            if forget_sent {
                s.state.forget_sent();
            }
            let poller = if active && s.final_id {
                election::elect(s.id.as_str(), s.region, &self.members, region_of)
                    .filter(|w| Some(*w) != me)
                    .map(str::to_string)
            } else {
                None
            };
            if s.state.poller != poller {
                tracing::debug!(source = %s.id, poller = ?poller, "poller elected");
                s.state.follow(poller);
                any = true;
            }
        }
        any
    }

    /// Should this source be polled here now (as far as sharing goes; the poller also waits
    /// out back-off and a poll in flight)? Yes unless another member polls it and its results
    /// are fresh: it sent a word within two polling intervals (`interval`), counted from the
    /// end of the back-off its last failure started (`backoff_until`), if later.
    pub(crate) fn should_poll(
        &self,
        source: Shared<'_>,
        interval: Duration,
        backoff_until: Option<Instant>,
    ) -> bool {
        source.state.polls_here(interval, backoff_until)
    }

    /// This node did not poll `source` this round (`why`): when it polls the source for the
    /// group, its followers hear that it is alive and keeps the source, so they do not take it
    /// for silent and poll on their own (which would multiply the calls exactly when AWS
    /// throttles).
    pub(crate) fn not_polled(&mut self, source: Shared<'_>, why: Waiting) {
        if self.leads(&source) {
            let bytes = wire::encode(
                self.key,
                source.id.as_str(),
                source.state.seq(),
                unix_ms(SystemTime::now()),
                Outgoing::Waiting(why),
            );
            self.outbox.extend(bytes.map(Arc::from));
        }
    }

    /// A poll of `source` here, started at `started_ms`, finished with `result` (`raw`: its
    /// answer before EPMD naming, when it was named). Returns the result's stamp, or `None`
    /// when a newer shared result was applied while it ran (the poller ignores it). When this
    /// node polls the source for the group, the result goes to the outbox: in full, or as
    /// "same as my full result number `base`" when the answer and its skipped tasks did not
    /// change (a full one at least every [`follower::FULL_EVERY`] results); a failure only when
    /// it is the same for every member ([`shares_failure`]).
    pub(crate) fn polled(
        &mut self,
        source: Shared<'_>,
        started_ms: u64,
        result: &mut Result<Vec<Found>, SourceError>,
        raw: Option<Vec<Found>>,
        skipped: &[Skipped],
    ) -> Option<Stamp> {
        let stamp = source.state.next_stamp(started_ms);
        if source.state.is_stale(stamp) {
            tracing::debug!(source = %source.id, "a newer shared result was applied while this poll ran; its answer is ignored");
            return None;
        }
        if self.leads(&source) {
            let mut raw = raw;
            let (key, id, (started_ms, seq)) = (self.key, source.id.as_str(), stamp);
            let bytes = match result {
                Ok(found) => {
                    let answer = raw.as_mut().unwrap_or(found);
                    let fp = fingerprint::answer(answer) ^ skipped_fingerprint(skipped);
                    let out = match source.state.send_same(fp, seq) {
                        Some(base) => Outgoing::Same { base },
                        None => Outgoing::Peers(answer, skipped),
                    };
                    wire::encode(key, id, seq, started_ms, out)
                }
                Err(e) if !shares_failure(e) => {
                    tracing::debug!(source = %source.id, kind = %e.kind, "AWS refused this node's own credentials or role: not shared, the followers poll on their own once it is silent");
                    return Some(stamp);
                }
                Err(e) => wire::encode(key, id, seq, started_ms, Outgoing::Failed(e)),
            };
            self.outbox.extend(bytes.map(Arc::from));
        }
        Some(stamp)
    }

    /// Takes a result `from` another member (the bytes of its `Update::shared`): what to apply
    /// to which of `sources`, if anything. A result is applied when it is for a source of this
    /// node, with this node's sharing key, from the source's elected poller, and newer than
    /// the last result applied; otherwise dropped and counted (in the source's state, or in
    /// [`Sharing::dropped`] when it names no source or does not decode).
    pub(crate) fn receive<'a>(
        &mut self,
        from: &str,
        bytes: &[u8],
        sources: impl Iterator<Item = Shared<'a>>,
    ) -> Inbound {
        let nothing = Inbound::Nothing { heard_again: false };
        let result = match wire::decode(bytes) {
            Ok(r) => r,
            Err(e) => {
                self.dropped += 1;
                tracing::debug!(from, "shared result dropped: {e}");
                return nothing;
            }
        };
        let Some((idx, source)) = sources
            .enumerate()
            .find(|(_, s)| s.id.as_str() == result.source)
        else {
            self.dropped += 1;
            tracing::debug!(
                from,
                source = result.source,
                "shared result dropped: no such source here"
            );
            return nothing;
        };
        let (id, share) = (source.id, source.state);
        let stamp = (result.started_ms, result.seq);
        let why = if result.key != self.key {
            Some("another sharing key (other sources or naming)")
        } else if share.poller.as_deref() != Some(from) {
            Some("not from the source's elected poller")
        } else {
            None
        };
        if let Some(why) = why {
            share.dropped += 1;
            tracing::debug!(from, source = %id, "shared result dropped: {why}");
            return nothing;
        }
        // From the elected poller, with this node's key: the poller is alive and polls the
        // source, whatever becomes of this result, so this node does not poll it too. Liveness
        // must not wait for a result this node can apply: a follower that polled the source
        // itself while its poller seemed silent (a restart, a late join) holds its own, newer
        // stamp, and if its polls start just after the poller's, every result the poller sends
        // is older than its own last one; polling on because of that, it would never follow
        // again. Once it stops, the poller's next result is newer and applies.
        let heard_again = share.silent;
        share.refresh();
        let waiting = matches!(result.answer, SharedAnswer::Waiting(_));
        if !waiting && share.is_stale(stamp) {
            share.dropped += 1;
            tracing::debug!(from, source = %id, "shared result dropped: not newer than the last result applied");
            return Inbound::Nothing { heard_again };
        }
        let answer = match result.answer {
            SharedAnswer::Waiting(why) => {
                // The poller keeps the source but did not poll it this round.
                tracing::debug!(from, source = %id, ?why, "the source's poller did not poll it this round");
                return Inbound::Nothing { heard_again };
            }
            SharedAnswer::Same { base } if !share.applied_base_is(from, base) => {
                // Not applied here (missed, or polled here since): the poller sends a full
                // result at least every FULL_EVERY results; until then this node keeps the
                // peers it has.
                share.dropped += 1;
                tracing::debug!(from, source = %id, base, "shared result dropped: the same as a result not applied here");
                return Inbound::Nothing { heard_again };
            }
            SharedAnswer::Same { .. } => Answer::Unchanged,
            SharedAnswer::Failed(e) => Answer::Failed(e),
            SharedAnswer::Peers(found, skipped) => Answer::Complete(found, skipped),
        };
        Inbound::Apply {
            idx,
            answer,
            stamp,
            heard_again,
        }
    }

    /// The results encoded since the last update, for update number `poll_no`'s
    /// `Update::shared`; kept for [`RECENT_UPDATES`] updates ([`Sharing::recent`]).
    pub(crate) fn take_outbox(&mut self, poll_no: u64) -> Vec<Arc<[u8]>> {
        let shared = std::mem::take(&mut self.outbox);
        let recent = &mut self.recent;
        recent.extend(shared.iter().map(|r| (poll_no, r.clone())));
        while recent
            .front()
            .is_some_and(|(n, _)| *n + RECENT_UPDATES <= poll_no)
        {
            recent.pop_front();
        }
        shared
    }

    /// The results of the recent updates, by update number.
    pub(crate) fn recent(&self) -> Vec<(u64, Arc<[u8]>)> {
        self.recent.iter().cloned().collect()
    }
}

/// Whether a poller sends its followers this failure of a poll. Not when AWS refused *this
/// node*: its credentials (`credentials`: missing, expired) or its IAM role (`access_denied`)
/// are its own, and its followers, whose own may work (a task definition revision with a
/// broken task role during a rolling deploy, a canary with another role), would otherwise
/// keep the source failing and find no new task. Sent nothing, they take the poller for
/// silent after two intervals and poll the source themselves until it answers again. Every
/// other failure is AWS's answer for the account (throttling, a 5xx, a stalled region, a
/// cluster not found) and is shared, so the followers wait with the poller rather than call
/// AWS just when it throttles.
fn shares_failure(e: &SourceError) -> bool {
    !matches!(e.kind, ErrorKind::Credentials | ErrorKind::AccessDenied)
}

/// A fingerprint of the skipped tasks (reasons and counts), so a "same" shared result also
/// means the same skipped tasks.
fn skipped_fingerprint(skipped: &[Skipped]) -> u64 {
    use std::hash::BuildHasher;
    let v: Vec<(SkipReason, usize)> = skipped.iter().map(|s| (s.reason, s.tasks)).collect();
    foldhash::quality::FixedState::default().hash_one(&v)
}

/// `t` as unix milliseconds (0 before 1970).
pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
