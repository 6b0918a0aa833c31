//! One source in the poller, by concern: who it is, its poll in flight, what it last answered,
//! its health and back-off, its AWS calls, and its sharing state (`crate::sharing`). Each
//! concern keeps its own rules, so back-off reads nothing of sharing and calls nothing of
//! health.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::task::AbortHandle;

use crate::aws::CallCounter;
use crate::config::SourceConfig;
use crate::error::SourceError;
use crate::namespace::{rfc3339, SourcePeers, SourceState, SourceStatus};
use crate::peer::{Address, Region, Skipped, SourceId};
use crate::sharing::{Shared, SourceShare};
use crate::source::Source;

/// One source in the poller.
pub(super) struct Slot {
    pub ident: Identity,
    pub run: Run,
    pub known: Known,
    pub health: Health,
    pub calls: Calls,
    pub share: SourceShare,
}

/// Who the source is (see [`Slot::describe`]).
pub(super) struct Identity {
    pub id: SourceId,
    /// `ecs` or `cloudmap`.
    pub kind: &'static str,
    pub region: Region,
    /// Its id is final (not an unresolved `cluster = "auto"`), so it can be shared.
    pub final_id: bool,
}

/// The source's backend, and its poll in flight.
pub(super) struct Run {
    /// `None` while a poll is in flight (the task owns it then).
    pub source: Option<Box<dyn Source>>,
    pub in_flight: Option<AbortHandle>,
}

/// What the source last answered completely.
#[derive(Default)]
pub(super) struct Known {
    pub peers: SourcePeers,
    /// The RUNNING tasks it skipped.
    pub skipped: Vec<Skipped>,
    /// EPMD naming: the name learnt for each listed address (kept while it stays listed).
    pub epmd_names: Arc<Mutex<HashMap<Address, String>>>,
}

/// Whether the source answers, and its back-off after failures that back off.
#[derive(Default)]
pub(super) struct Health {
    /// A result has been applied (polled here or received).
    pub polled: bool,
    /// The last result applied was a complete answer.
    pub ok: bool,
    /// The last failure, while failing.
    pub error: Option<SourceError>,
    pub last_success: Option<SystemTime>,
    pub consecutive_failures: u32,
    /// No poll before this instant (throttled, or a 5xx answer).
    pub backoff_until: Option<Instant>,
    /// The last answer was that the source is absent, for this reason.
    pub absent: Option<String>,
    /// While absent: not polled before this instant (the probe interval).
    pub probe_at: Option<Instant>,
}

/// The source's AWS calls, counted by its backend.
pub(super) struct Calls {
    pub counter: Arc<CallCounter>,
    /// The totals when the previous round's snapshot was taken.
    at_last_round: BTreeMap<String, u64>,
    /// This round's calls (totals now minus `at_last_round`), by action.
    last_round: BTreeMap<String, u64>,
}

impl Slot {
    pub(super) fn new(
        cfg: &SourceConfig,
        source: Box<dyn Source>,
        counter: Arc<CallCounter>,
    ) -> Slot {
        let mut slot = Slot {
            ident: Identity {
                id: cfg.id(),
                kind: "",
                region: Region::default(),
                final_id: false,
            },
            run: Run {
                source: Some(source),
                in_flight: None,
            },
            known: Known::default(),
            health: Health::default(),
            calls: Calls {
                counter,
                at_last_round: BTreeMap::new(),
                last_round: BTreeMap::new(),
            },
            share: SourceShare::default(),
        };
        slot.describe(cfg);
        slot
    }

    /// The one place a slot learns who its source is: at start from the configuration, and
    /// again once the source resolved a placeholder (`cluster = "auto"`), so the source's id,
    /// its region, its peers' region and their `{region}` all name the resolved source.
    pub(super) fn describe(&mut self, cfg: &SourceConfig) {
        self.ident = Identity {
            id: cfg.id(),
            region: Region::from(cfg.region()),
            kind: cfg.kind(),
            final_id: !matches!(cfg, SourceConfig::Ecs(e) if e.is_auto()),
        };
    }

    /// The source as sharing sees it.
    pub(super) fn shared(&mut self) -> Shared<'_> {
        Shared {
            id: &self.ident.id,
            region: &self.ident.region,
            // An absent region is probed by each node itself: its answer (nothing there) is
            // cheap, and a node must see a region appear within its own probe interval.
            final_id: self.ident.final_id && self.health.absent.is_none(),
            state: &mut self.share,
        }
    }

    pub(super) fn status(&self) -> SourceStatus {
        let Health {
            polled,
            ok,
            error,
            last_success,
            consecutive_failures,
            backoff_until,
            absent,
            probe_at,
        } = &self.health;
        let now = Instant::now();
        SourceStatus {
            id: self.ident.id.clone(),
            kind: self.ident.kind,
            region: self.ident.region.to_string(),
            state: SourceState::of(
                *polled,
                *ok,
                absent.is_some(),
                self.known.peers.len(),
                self.known.skipped.iter().map(|s| s.tasks).sum(),
            ),
            stale: !ok && *polled,
            error: error.as_ref().map(|e| e.to_string()),
            error_kind: error.as_ref().map(|e| e.kind),
            failure: error.clone(),
            last_success: last_success.map(rfc3339),
            consecutive_failures: *consecutive_failures,
            api_calls: self.calls.last_round.values().sum(),
            api_calls_by_action: self.calls.last_round.clone(),
            api_calls_total: self.calls.total(),
            peers: self.known.peers.len(),
            backoff_until: backoff_until
                .filter(|t| *t > now)
                .map(|t| rfc3339(SystemTime::now() + (t - now))),
            skipped_tasks: self.known.skipped.iter().map(|s| s.tasks).sum(),
            skipped: self.known.skipped.clone(),
            poller: self.share.poller.clone(),
            received_from: self.share.received_from.clone(),
            received_at: self.share.received_at.map(rfc3339),
            shared_dropped: self.share.dropped,
            poller_silent: self.share.silent,
            absent: absent.clone(),
            probe_at: probe_at
                .filter(|t| *t > now)
                .map(|t| rfc3339(SystemTime::now() + (t - now))),
        }
    }
}

impl Health {
    /// A complete answer (polled here or received): healthy, not backing off.
    pub(super) fn succeeded(&mut self) {
        self.ok = true;
        self.error = None;
        self.last_success = Some(SystemTime::now());
        self.consecutive_failures = 0;
        self.backoff_until = None;
        self.absent = None;
        self.probe_at = None;
    }

    /// A complete answer that the source is absent (`why`): healthy, not backing off, polled
    /// again at `probe_at`.
    pub(super) fn absent_until(&mut self, why: String, probe_at: Instant) {
        self.succeeded();
        self.absent = Some(why);
        self.probe_at = Some(probe_at);
    }

    /// Absent, and not due for its probe at `now`.
    pub(super) fn probe_later(&self, now: Instant) -> bool {
        self.absent.is_some() && self.probe_at.is_some_and(|t| t > now)
    }

    /// A failure: counted, backing off (see [`backoff`]) when its kind backs off. Returns
    /// whether it is news (the source was healthy, or failed another way).
    pub(super) fn failed(&mut self, e: SourceError, interval: Duration) -> bool {
        self.consecutive_failures += 1;
        if e.kind.backs_off() {
            self.backoff_until =
                Some(Instant::now() + backoff(interval, self.consecutive_failures));
        }
        let same_failure = !self.ok && self.error.as_ref().map(|x| x.kind) == Some(e.kind);
        self.ok = false;
        self.error = Some(e);
        !same_failure
    }

    /// Waiting out a back-off at `now`.
    pub(super) fn backing_off(&self, now: Instant) -> bool {
        self.backoff_until.is_some_and(|t| t > now)
    }
}

impl Calls {
    pub(super) fn total(&self) -> u64 {
        self.counter.totals().values().sum()
    }

    /// Closes a round's call count: every per-round figure is of its own round, so a round in
    /// which the source made no call (backing off, or its poll still in flight without calls)
    /// reports 0, whatever the previous poll made.
    pub(super) fn count_round(&mut self) {
        let now = self.counter.totals();
        self.last_round = now
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.saturating_sub(self.at_last_round.get(k).copied().unwrap_or(0)),
                )
            })
            .filter(|(_, v)| *v > 0)
            .collect();
        self.at_last_round = now;
    }
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
pub(super) fn backoff(interval: Duration, failures: u32) -> Duration {
    let exp = interval.saturating_mul(1 << failures.min(10));
    exp.min(interval * 2).mul_f64(0.5 + fastrand::f64() * 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

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
        }
    }

    #[test]
    fn only_failures_that_back_off_start_a_back_off_and_a_repeat_is_no_news() {
        let i = Duration::from_secs(5);
        let now = Instant::now();
        let mut h = Health::default();
        let denied = || SourceError::new(ErrorKind::AccessDenied, "ecs:ListTasks", "no");
        let throttled = || SourceError::new(ErrorKind::Throttled, "ecs:ListTasks", "slow");
        assert!(h.failed(denied(), i), "news");
        assert!(!h.backing_off(now), "access denied does not back off");
        assert!(!h.failed(denied(), i), "the same failure again");
        assert!(h.failed(throttled(), i), "another kind");
        assert!(h.backing_off(now) && h.consecutive_failures == 3);
        h.succeeded();
        assert!(h.ok && !h.backing_off(now) && h.consecutive_failures == 0);
    }
}
