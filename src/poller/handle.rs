//! What a running poller hands its users: the handle that stops it and takes the sharing
//! group's requests, and any number of subscriptions to its updates.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use super::Update;
use crate::namespace::Snapshot;

/// What an adapter asks of a running poller (see [`PollerHandle::share`]).
pub(super) enum Command {
    Share(Vec<String>),
    Receive { from: String, result: Vec<u8> },
}

/// What the poller publishes after each round: the update, and the snapshot it was diffed
/// against (so a subscriber that saw exactly that one can reuse its changes).
#[derive(Clone)]
pub(super) struct Published {
    pub update: Update,
    pub previous: Arc<Snapshot>,
    /// Shared results of the recent updates, by update number (see [`Update::shared`]).
    pub recent: Arc<Vec<(u64, Arc<[u8]>)>>,
}

/// A poller running in the background. It is itself a [`Subscription`] ([`PollerHandle::next`]);
/// [`PollerHandle::subscribe`] adds more. Dropping it stops the poller.
pub struct PollerHandle {
    pub(super) first: Subscription,
    pub(super) task: Option<tokio::task::JoinHandle<()>>,
    pub(super) commands: mpsc::UnboundedSender<Command>,
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
    /// ([`Poller::share`](super::Poller::share)). Returns at once; the poller elects on its own task.
    ///
    /// # Errors
    /// [`Stopped`] when the poller has stopped.
    pub fn share(&self, members: Vec<String>) -> Result<(), Stopped> {
        self.commands
            .send(Command::Share(members))
            .map_err(|_| Stopped)
    }

    /// Fleet-shared polling: a result (one binary of another member's [`Update::shared`])
    /// `from` that member's node ([`Poller::receive_shared`](super::Poller::receive_shared)). Returns at once; decoding and
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
    pub(super) fn new(rx: watch::Receiver<Option<Published>>) -> Subscription {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::namespace::Changes;

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
}
