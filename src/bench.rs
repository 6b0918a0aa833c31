//! Not part of the API: entry points for the benchmarks (`benches/`), built with the library so
//! `cargo test --all-targets` compiles them.

use crate::namespace::BenchAnswer;
use crate::sharing::{decode, encode, Outgoing, SharedAnswer};

impl BenchAnswer {
    /// This answer as the elected poller sends it to the other members: the bytes of a full
    /// shared result for `source` (the sender's encoding cost and size).
    pub fn shared(&self, source: &str) -> Vec<u8> {
        encode(0, source, 1, 0, Outgoing::Peers(&self.0, &[])).unwrap_or_default()
    }

    /// A shared result's bytes decoded back into the answer, as a follower does before applying
    /// it (decode, then [`crate::internals::BenchRound::round`] is a follower's whole cost).
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
    use crate::peer::Found;

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
