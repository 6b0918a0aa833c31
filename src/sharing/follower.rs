//! One source's sharing state: who polls it, whether that poller has gone silent, the order of
//! the results applied (sequence numbers and start times), and what this node last sent when it
//! polls the source for the others.

use std::time::{Duration, Instant, SystemTime};

/// A sender that saw the same answer again sends a full result at least every this many
/// results, so a member that missed the full one (a lost message, a late join) gets one again.
pub(crate) const FULL_EVERY: u32 = 8;

/// A result's place in the order of a source's results: `(started_ms, seq)`, the poll's start
/// (unix ms, the sender's clock) and the sender's sequence number. A result that is not newer
/// than the last one applied is ignored.
pub(crate) type Stamp = (u64, u64);

/// One source's sharing state in the poller.
#[derive(Debug, Default)]
pub(crate) struct SourceShare {
    /// The elected poller, when it is another node (`None`: this node polls the source).
    pub poller: Option<String>,
    /// Since when a fresh result is expected: the election, or the last result accepted.
    pub fresh_since: Option<Instant>,
    /// The elected poller sent nothing for more than two polling intervals: this node polls
    /// the source itself until a result arrives again.
    pub silent: bool,
    /// The node whose result is the one applied (`None`: polled here).
    pub received_from: Option<String>,
    /// When that result was applied.
    pub received_at: Option<SystemTime>,
    /// Results for this source dropped since start.
    pub dropped: u64,
    /// The stamp of the last result applied (polled here or received).
    last_applied: Option<Stamp>,
    /// The full received result the peers come from, `(sender, seq)`: what a "same" result
    /// must name to be applied.
    applied_base: Option<(String, u64)>,
    /// This node's sequence number for the source: one per poll of it here.
    seq: u64,
    /// What this node last sent in full: `(answer fingerprint, seq)`; reset when the members
    /// change, so a new member gets a full result.
    sent_full: Option<(u64, u64)>,
    /// Results sent since the last full one.
    sent_since_full: u32,
}

impl SourceShare {
    /// `stamp` is not newer than the last result applied.
    pub(crate) fn is_stale(&self, stamp: Stamp) -> bool {
        self.last_applied.is_some_and(|last| stamp <= last)
    }

    /// The stamp of a poll of the source here that started at `started_ms` and just finished.
    pub(crate) fn next_stamp(&mut self, started_ms: u64) -> Stamp {
        self.seq += 1;
        (started_ms, self.seq)
    }

    /// This node's last sequence number for the source (what a "waiting" result carries).
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    /// Marks a result from the elected poller as fresh (now).
    pub(crate) fn refresh(&mut self) {
        self.fresh_since = Some(Instant::now());
        self.silent = false;
    }

    /// Notes a result applied to the source, polled here (`from: None`) or received from
    /// `from`: its stamp is the last applied, where it came from (a received one also proves
    /// its poller is not silent), and, for a complete answer (`complete`), that it is the full
    /// result a later "same" must name.
    pub(crate) fn applied(&mut self, stamp: Stamp, from: Option<&str>, complete: bool) {
        self.last_applied = Some(stamp);
        match from {
            Some(from) => {
                self.refresh();
                self.received_from = Some(from.to_string());
                self.received_at = Some(SystemTime::now());
            }
            None => {
                self.received_from = None;
                self.received_at = None;
            }
        }
        if complete {
            self.applied_base = from.map(|f| (f.to_string(), stamp.1));
        }
    }

    /// Whether a "same as `base`" result from `from` names the full result applied here.
    pub(crate) fn applied_base_is(&self, from: &str, base: u64) -> bool {
        self.applied_base
            .as_ref()
            .is_some_and(|(f, b)| f == from && *b == base)
    }

    /// Whether a received result, named since it arrived (EPMD look-ups), still applies: it is
    /// newer than the last result applied and its sender still polls the source. Counts a drop
    /// when not.
    pub(crate) fn still_applies(&mut self, stamp: Stamp, from: &str) -> bool {
        let applies = !self.is_stale(stamp) && self.poller.as_deref() == Some(from);
        if !applies {
            self.dropped += 1;
        }
        applies
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
            self.fresh_since = Some(Instant::now());
            // Whoever follows now holds none of this node's earlier full results.
            self.sent_full = None;
        }
    }

    /// The group changed: a new member holds none of the full results sent so far.
    pub(crate) fn forget_sent(&mut self) {
        self.sent_full = None;
    }

    /// Whether the source is polled here this round: it is not followed, or its poller has
    /// been silent for more than `2 × interval` (updates [`SourceShare::silent`]), counted from
    /// the last fresh result or, when that result was a failure that backs off, from the end
    /// of that back-off (`backoff_until`: the poller waits as long before its next poll).
    pub(crate) fn polls_here(
        &mut self,
        interval: Duration,
        backoff_until: Option<Instant>,
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
    /// number `seq`: "same as base" (`Some(base)`) when the last full result had the same
    /// fingerprint and fewer than [`FULL_EVERY`] results followed it, else a full one
    /// (remembered).
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

    /// Makes the last fresh result (or election) `by` older: time passing, for tests that
    /// must not wait for it.
    #[cfg(test)]
    pub(crate) fn age(&mut self, by: Duration) {
        if let Some(t) = &mut self.fresh_since {
            if let Some(older) = t.checked_sub(by) {
                *t = older;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_is_stale_unless_newer_by_start_then_by_sequence() {
        let mut s = SourceShare::default();
        assert!(!s.is_stale((5, 1)), "nothing applied yet");
        s.applied((5, 3), Some("a@1"), true);
        assert!(s.is_stale((5, 3)), "the same");
        assert!(s.is_stale((5, 2)), "same start, lower sequence");
        assert!(s.is_stale((4, 9)), "earlier start, whatever its sequence");
        assert!(!s.is_stale((5, 4)));
        assert!(!s.is_stale((6, 0)));
    }

    #[test]
    fn a_same_result_must_name_the_full_result_applied_from_its_sender() {
        let mut s = SourceShare::default();
        s.applied((1, 7), Some("a@1"), true);
        assert!(s.applied_base_is("a@1", 7));
        assert!(!s.applied_base_is("b@2", 7));
        assert!(!s.applied_base_is("a@1", 6));
        // A failure applied since does not change the base; an own poll clears it.
        s.applied((2, 8), Some("a@1"), false);
        assert!(s.applied_base_is("a@1", 7));
        s.applied((3, 1), None, true);
        assert!(!s.applied_base_is("a@1", 7));
    }

    #[test]
    fn a_repeated_answer_is_sent_as_same_and_in_full_every_full_every_results() {
        let mut s = SourceShare::default();
        assert_eq!(s.send_same(42, 1), None, "the first is full");
        for seq in 2..=FULL_EVERY as u64 {
            assert_eq!(s.send_same(42, seq), Some(1));
        }
        assert_eq!(s.send_same(42, 9), None, "full again after FULL_EVERY");
        assert_eq!(s.send_same(43, 10), None, "another answer: full");
        assert_eq!(s.send_same(43, 11), Some(10));
        s.forget_sent();
        assert_eq!(s.send_same(43, 12), None, "a new member gets a full one");
    }

    #[test]
    fn a_followed_source_is_polled_here_only_once_its_poller_is_silent() {
        let interval = Duration::from_millis(100);
        let mut s = SourceShare::default();
        assert!(s.polls_here(interval, None), "not followed");
        s.follow(Some("a@1".into()));
        assert!(!s.polls_here(interval, None), "just elected");
        s.age(Duration::from_millis(250));
        assert!(s.polls_here(interval, None) && s.silent);
        // A back-off of the poller's that ends later counts from its end.
        let later = Instant::now() + Duration::from_secs(60);
        assert!(!s.polls_here(interval, Some(later)));
        s.refresh();
        assert!(!s.polls_here(interval, None) && !s.silent);
    }
}
