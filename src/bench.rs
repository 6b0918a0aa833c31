//! Entry points for the benchmarks (`benches/`): the poller's CPU work on a round of answers,
//! through the very functions a poll runs (decode, apply, merge, diff), without AWS or a clock.
//! Built with the library (a bench links the library as any user does), hidden from its docs,
//! and not part of the API: names and shapes change with the code they measure.

use std::sync::Arc;

use aws_sdk_ecs::types::Task;

use crate::config::{EcsSourceConfig, NodeNaming, SourceConfig, DEFAULT_DISTRIBUTION_PORT};
use crate::namespace::{merge, merged, Changes, LocalNode, Snapshot, SourcePeers};
use crate::peer::{Found, Peer, Region, SourceId};
use crate::sharing::{decode, encode, Outgoing, SharedAnswer};
use crate::source::ecs::decode::{decode_task, Decision, TaskFilter};

/// Merges per-source peers into a snapshot and diffs it against `previous`, exactly as a poll
/// does (for the benchmarks).
pub fn bench_merge(per_source: &[Vec<Arc<Peer>>], previous: &Snapshot) -> (Snapshot, Changes) {
    let (peers, conflicts, local) =
        merge(per_source.iter().map(Vec::as_slice), &LocalNode::default());
    let snapshot = Snapshot {
        peers,
        conflicts,
        local,
        poll: previous.poll + 1,
        ..Snapshot::empty()
    };
    let changes = snapshot.diff_merged(previous);
    (snapshot, changes)
}

/// A source's complete answer, before naming (for the benchmarks).
#[derive(Clone)]
pub struct BenchAnswer(pub(crate) Vec<Found>);

/// The poller's per-round CPU work on complete answers, through the poller's own functions (for
/// the benchmarks): each source's answer applied ([`SourcePeers::apply`]), merged only when one
/// changed ([`merged`]), diffed against the previous snapshot.
pub struct BenchRound {
    naming: NodeNaming,
    sources: Vec<(Region, SourceId, SourcePeers)>,
    last: Snapshot,
}

impl BenchRound {
    /// Sources as `(region, id)`, in configuration order.
    pub fn new(naming: NodeNaming, sources: &[(&str, &str)]) -> BenchRound {
        BenchRound {
            naming,
            sources: sources
                .iter()
                .map(|(r, id)| {
                    (
                        Region::from(*r),
                        SourceId::new(id.to_string()),
                        SourcePeers::default(),
                    )
                })
                .collect(),
            last: Snapshot::empty(),
        }
    }

    /// One round with these answers (one per source); returns what changed.
    pub fn round(&mut self, answers: Vec<BenchAnswer>) -> Changes {
        let mut changed = self.last.poll == 0;
        for ((region, id, peers), answer) in self.sources.iter_mut().zip(answers) {
            changed |= peers.apply(answer.0, &self.naming, region, id);
        }
        let (peers, conflicts, local) = merged(
            changed,
            self.sources.iter().map(|(_, _, p)| p.as_slice()),
            &LocalNode::default(),
            &self.last,
        );
        let snapshot = Snapshot {
            peers,
            conflicts,
            local,
            poll: self.last.poll + 1,
            ..Snapshot::empty()
        };
        let changes = snapshot.diff_merged(&self.last);
        self.last = snapshot;
        changes
    }
}

/// Decodes DescribeTasks tasks into a source's answer (for the benchmarks).
pub fn bench_answer(tasks: &[Task], filter: &EcsSourceConfig) -> BenchAnswer {
    let mut found = Vec::with_capacity(tasks.len());
    let filter = TaskFilter::new(filter, DEFAULT_DISTRIBUTION_PORT);
    for t in tasks {
        if let Decision::Peer(f) = decode_task(t, &filter) {
            found.push(f);
        }
    }
    BenchAnswer(found)
}

/// Decodes DescribeTasks tasks into named peers exactly as a poll does: decoded, then applied
/// as a new answer of the source (fingerprinted and named) (for the benchmarks).
pub fn bench_decode(
    tasks: &[Task],
    filter: &EcsSourceConfig,
    naming: &NodeNaming,
) -> Vec<Arc<Peer>> {
    let id = SourceConfig::Ecs(filter.clone()).id();
    let mut peers = SourcePeers::default();
    peers.apply(
        bench_answer(tasks, filter).0,
        naming,
        &Region::from(filter.region.as_str()),
        &id,
    );
    peers.into_peers()
}

impl BenchAnswer {
    /// This answer as the elected poller sends it to the other members: the bytes of a full
    /// shared result for `source` (the sender's encoding cost and size).
    pub fn shared(&self, source: &str) -> Vec<u8> {
        encode(0, source, 1, 0, Outgoing::Peers(&self.0, &[])).unwrap_or_default()
    }

    /// A shared result's bytes decoded back into the answer, as a follower does before applying
    /// it (decode, then [`BenchRound::round`] is a follower's whole cost).
    /// `None` when the bytes are not a full result.
    pub fn from_shared(bytes: &[u8]) -> Option<BenchAnswer> {
        match decode(bytes).ok()?.answer {
            SharedAnswer::Peers(found, _) => Some(BenchAnswer(found)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_benchmark_hooks_round_trip_an_answer() {
        let found = |ip: &str| Found {
            task_arn: Some(format!("arn:aws:ecs:eu-west-2:1:task/web/{ip}")),
            ..Found::at(ip.parse().unwrap())
        };
        let answer = BenchAnswer(vec![found("10.0.0.1"), found("10.0.0.2")]);
        let bytes = answer.shared("ecs:eu-west-2/web");
        let back = BenchAnswer::from_shared(&bytes).unwrap();
        assert_eq!(back.0, answer.0);
        assert!(BenchAnswer::from_shared(b"nope").is_none());
    }
}
