//! An in-memory source for fast tests: answers from a script, one entry per poll.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::SourceError;
use crate::peer::Found;
use crate::source::{PollFuture, Polled, Source};

/// One scripted answer.
#[derive(Clone)]
pub(crate) enum Step {
    Answer(Result<Vec<Found>, SourceError>),
    /// Answer after a delay.
    Slow(Duration, Result<Vec<Found>, SourceError>),
    Panic,
    /// A complete answer: absent, for this reason.
    Absent(&'static str),
}

/// Answers each poll with the next step; repeats the last one when the script runs out.
#[derive(Clone, Default)]
pub(crate) struct FixedSource {
    pub script: Arc<Mutex<VecDeque<Step>>>,
    last: Option<Step>,
    pub polls: Arc<Mutex<u32>>,
}

impl FixedSource {
    pub(crate) fn new(steps: Vec<Step>) -> Self {
        FixedSource {
            script: Arc::new(Mutex::new(steps.into())),
            ..Default::default()
        }
    }
}

impl Source for FixedSource {
    fn poll(&mut self) -> PollFuture<'_> {
        Box::pin(async move {
            *self.polls.lock().unwrap() += 1;
            let next = self.script.lock().unwrap().pop_front();
            let step = next.or_else(|| self.last.clone()).expect("script is empty");
            self.last = Some(step.clone());
            let r = match step {
                Step::Answer(r) => r,
                Step::Slow(d, r) => {
                    tokio::time::sleep(d).await;
                    r
                }
                Step::Panic => panic!("scripted panic"),
                Step::Absent(why) => return Ok(Polled::absent(why.to_string())),
            };
            // A scripted answer is exactly its peers: it never finds anything it cannot use.
            r.map(|found| Polled {
                found,
                skipped: Vec::new(),
                absent: None,
            })
        })
    }
}
