//! A session's pushes to its Redis window, sent in seq order by one background drainer
//! at a time.
//!
//! Appends hand their pushes over in seq order (under the session's writer lock). Were
//! each push its own background task, two of a burst could reach Redis swapped: the
//! later one would find a gap and trigger a repopulation, which reads the whole file.
//! The queue keeps them in order instead, and a burst costs one task.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, PoisonError},
};

use super::{record::Record, session::End};

/// One push: the record and the record it was appended after.
pub(crate) type Push = (Record, End);

/// The pushes of one session waiting for their drainer.
#[derive(Debug, Default)]
pub(crate) struct PushQueue {
    state: Mutex<Queue>,
}

#[derive(Debug, Default)]
struct Queue {
    pending: VecDeque<Push>,
    /// Whether a drainer owns the queue (started, not yet finished or abandoned).
    draining: bool,
}

impl PushQueue {
    fn state(&self) -> std::sync::MutexGuard<'_, Queue> {
        // Every change is one push/pop/clear: a panic cannot leave it half-made.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `push`. Returns a [`Turn`] when no drainer owns the queue: the caller
    /// must then start one with it (dropping it unstarted gives the queue up).
    #[must_use]
    pub(crate) fn enqueue(self: &Arc<Self>, push: Push) -> Option<Turn> {
        let mut state = self.state();
        state.pending.push_back(push);
        if state.draining {
            return None;
        }
        state.draining = true;
        Some(Turn {
            queue: Arc::clone(self),
            finished: false,
        })
    }

    /// Drops the pushes not yet sent (the session was deleted: they are its old
    /// records). A running drainer goes on with whatever is queued after this.
    pub(crate) fn clear(&self) {
        self.state().pending.clear();
    }
}

/// The right to drain a session's queue; at most one exists per queue.
///
/// Dropped before the queue is empty (a failed push, the task shed, timed out or
/// cancelled), it drops the pushes left: the window is then behind the file, which
/// `history` notices and repairs with one repopulation, rather than a slow or failing
/// Redis being sent the rest one deadline at a time.
#[derive(Debug)]
pub(crate) struct Turn {
    queue: Arc<PushQueue>,
    finished: bool,
}

impl Turn {
    /// The next push to send, in seq order; `None` ends the turn (the next enqueue
    /// starts a new drainer).
    pub(crate) fn next(&mut self) -> Option<Push> {
        let mut state = self.queue.state();
        let next = state.pending.pop_front();
        if next.is_none() {
            state.draining = false;
            self.finished = true;
        }
        next
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        if !self.finished {
            let mut state = self.queue.state();
            state.pending.clear();
            state.draining = false;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn push(seq: u64) -> Push {
        let record = Record {
            seq,
            id: format!("m{seq}"),
            role: "user".into(),
            content: String::new(),
            at: String::new(),
        };
        (record, End::default())
    }

    fn seqs(turn: &mut Turn) -> Vec<u64> {
        std::iter::from_fn(|| turn.next()).map(|(r, _)| r.seq).collect()
    }

    #[test]
    fn one_turn_at_a_time_drains_in_order() {
        let queue = Arc::new(PushQueue::default());
        let mut turn = queue.enqueue(push(1)).unwrap();
        assert!(queue.enqueue(push(2)).is_none(), "a drainer already owns it");
        assert!(queue.enqueue(push(3)).is_none());
        assert_eq!(seqs(&mut turn), [1, 2, 3]);
        // That turn is over: the next push starts another.
        let mut again = queue.enqueue(push(4)).unwrap();
        drop(turn);
        assert_eq!(seqs(&mut again), [4], "an ended turn's drop takes nothing");
    }

    #[test]
    fn a_turn_given_up_drops_the_rest_and_frees_the_queue() {
        let queue = Arc::new(PushQueue::default());
        let mut turn = queue.enqueue(push(1)).unwrap();
        assert!(queue.enqueue(push(2)).is_none());
        assert_eq!(turn.next().unwrap().0.seq, 1);
        drop(turn); // the push of seq 1 failed
        let mut next = queue.enqueue(push(3)).unwrap();
        assert_eq!(seqs(&mut next), [3], "seq 2 was dropped, not sent after 3");
    }

    #[test]
    fn clear_drops_what_is_pending_only() {
        let queue = Arc::new(PushQueue::default());
        let mut turn = queue.enqueue(push(1)).unwrap();
        assert!(queue.enqueue(push(2)).is_none());
        queue.clear();
        assert!(queue.enqueue(push(1)).is_none(), "the drainer still runs");
        assert_eq!(seqs(&mut turn), [1]);
    }
}
