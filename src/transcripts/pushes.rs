//! A session's pushes to its Redis window, sent in seq order by one background drainer
//! at a time.
//!
//! Appends hand their pushes over in seq order (under the session's writer lock). Were
//! each push its own background task, two of a burst could reach Redis swapped: the
//! later one would find a gap and trigger a repopulation, which reads the whole file.
//! The queue keeps them in order instead; the drainer sends everything waiting in one
//! call, so a burst costs one task and a few round trips, however fast it comes.
//!
//! The queue is also exactly what the window lacks of the file while pushes are on
//! their way, so `history` right after an append bridges the window with it rather
//! than reading the file.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, PoisonError},
};

use super::record::{End, Record};

/// One push: the record, the record it was appended after, and the file's first record
/// (its incarnation: a push of a deleted incarnation is refused by Redis).
#[derive(Debug)]
pub(crate) struct Push {
    pub(crate) record: Record,
    /// The record's JSON, as the append wrote it to the file: pushed as is, not
    /// serialised a second time.
    pub(crate) line: String,
    pub(crate) previous: End,
    pub(crate) first: End,
}

impl Push {
    /// The push of `record`, its JSON encoded here.
    #[cfg(test)]
    pub(crate) fn new(record: Record, previous: End, first: End) -> Self {
        let line = String::from_utf8_lossy(&record.encode()).into_owned();
        Self {
            record,
            line,
            previous,
            first,
        }
    }
}

/// The pushes of one session not yet acknowledged by Redis.
#[derive(Debug, Default)]
pub(crate) struct PushQueue {
    state: Mutex<Queue>,
}

#[derive(Debug, Default)]
struct Queue {
    /// Handed to the drainer as one batch, not yet acknowledged; oldest first.
    in_flight: Vec<Arc<Push>>,
    /// Waiting, oldest first.
    pending: VecDeque<Arc<Push>>,
    /// Whether a drainer owns the queue (started, not yet finished or given up).
    draining: bool,
}

impl PushQueue {
    fn state(&self) -> std::sync::MutexGuard<'_, Queue> {
        // Every change is one push/pop/clear: a panic cannot leave it half-made.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `push`, keeping at most `max_pending` waiting: past that the waiting ones
    /// are dropped, so `push` finds a gap and repopulates the window once (memory stays
    /// bounded however slow Redis is, and a batch never holds more than the window).
    ///
    /// Returns a [`Turn`] when no drainer owns the queue: the caller must then start
    /// one with it (dropping it unstarted gives the queue up).
    #[must_use]
    pub(crate) fn enqueue(self: &Arc<Self>, push: Push, max_pending: usize) -> Option<Turn> {
        let mut state = self.state();
        if state.pending.len() >= max_pending {
            state.pending.clear();
        }
        state.pending.push_back(Arc::new(push));
        if state.draining {
            return None;
        }
        state.draining = true;
        Some(Turn {
            queue: Arc::clone(self),
            finished: false,
        })
    }

    /// Every push not yet acknowledged, oldest first. Taken before reading the window,
    /// it holds every record that read can lack: a push acknowledged since was in it.
    pub(crate) fn unacknowledged(&self) -> Vec<Arc<Push>> {
        let state = self.state();
        state.in_flight.iter().chain(&state.pending).cloned().collect()
    }

    /// Drops the waiting pushes (the session was deleted: they are its old records). A
    /// running drainer goes on with whatever is queued after this.
    pub(crate) fn clear(&self) {
        self.state().pending.clear();
    }
}

/// The last `n` records of `window` (oldest first, as read from Redis) extended with
/// the `unacknowledged` records up to seq `upto` that follow its last one, each after
/// its very predecessor (an empty window: from a session's first record).
pub(crate) fn bridge(
    mut window: Vec<Record>,
    unacknowledged: &[Arc<Push>],
    upto: u64,
    n: usize,
) -> Vec<Record> {
    let last = End::of(window.last());
    let follows = |p: &Arc<Push>| p.previous == last && p.record.seq == last.seq + 1;
    if let Some(from) = unacknowledged.iter().position(follows) {
        let missing = unacknowledged[from..].iter().take_while(|p| p.record.seq <= upto);
        window.extend(missing.map(|p| p.record.clone()));
        window.drain(..window.len().saturating_sub(n));
    }
    window
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
    /// Acknowledges the batch handed out before (it reached Redis) and hands out every
    /// push waiting since, oldest first; `None` ends the turn (the next enqueue starts
    /// a drainer).
    pub(crate) fn next(&mut self) -> Option<Vec<Arc<Push>>> {
        let mut state = self.queue.state();
        state.in_flight = state.pending.drain(..).collect();
        if state.in_flight.is_empty() {
            state.draining = false;
            self.finished = true;
            return None;
        }
        Some(state.in_flight.clone())
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        if !self.finished {
            let mut state = self.queue.state();
            state.in_flight.clear();
            state.pending.clear();
            state.draining = false;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const ROOM: usize = 100;

    fn record(seq: u64) -> Record {
        Record {
            seq,
            id: format!("m{seq}"),
            role: "user".into(),
            content: String::new(),
            at: format!("t{seq}"),
        }
    }

    fn push(seq: u64) -> Push {
        let previous = (seq > 1).then(|| record(seq - 1));
        Push::new(record(seq), End::of(previous.as_ref()), End::of(Some(&record(1))))
    }

    fn seqs_of(records: &[Record]) -> Vec<u64> {
        records.iter().map(|r| r.seq).collect()
    }

    /// The next batch's seqs.
    fn batch(turn: &mut Turn) -> Option<Vec<u64>> {
        turn.next().map(|b| b.iter().map(|p| p.record.seq).collect())
    }

    fn queued(queue: &PushQueue) -> Vec<u64> {
        queue.unacknowledged().iter().map(|p| p.record.seq).collect()
    }

    #[test]
    fn one_turn_at_a_time_sends_what_waits_as_one_batch() {
        let queue = Arc::new(PushQueue::default());
        let mut turn = queue.enqueue(push(1), ROOM).unwrap();
        assert_eq!(batch(&mut turn), Some(vec![1]));
        assert!(queue.enqueue(push(2), ROOM).is_none(), "a drainer owns it");
        assert!(queue.enqueue(push(3), ROOM).is_none());
        assert_eq!(queued(&queue), [1, 2, 3], "1 is on its way");
        assert_eq!(batch(&mut turn), Some(vec![2, 3]), "1 acknowledged");
        assert_eq!(batch(&mut turn), None);
        assert!(queued(&queue).is_empty(), "the last batch was acknowledged");
        // That turn is over: the next push starts another.
        let mut again = queue.enqueue(push(4), ROOM).unwrap();
        drop(turn);
        assert_eq!(
            batch(&mut again),
            Some(vec![4]),
            "an ended turn's drop takes nothing"
        );
    }

    #[test]
    fn a_turn_given_up_drops_the_rest_and_frees_the_queue() {
        let queue = Arc::new(PushQueue::default());
        let mut turn = queue.enqueue(push(1), ROOM).unwrap();
        assert_eq!(batch(&mut turn), Some(vec![1]));
        assert!(queue.enqueue(push(2), ROOM).is_none());
        drop(turn); // the push of seq 1 failed
        assert!(queued(&queue).is_empty());
        let mut next = queue.enqueue(push(3), ROOM).unwrap();
        assert_eq!(
            batch(&mut next),
            Some(vec![3]),
            "seq 2 was dropped, not sent after 3"
        );
    }

    #[test]
    fn clear_drops_the_waiting_not_the_batch_on_its_way() {
        let queue = Arc::new(PushQueue::default());
        let mut turn = queue.enqueue(push(1), ROOM).unwrap();
        assert_eq!(batch(&mut turn), Some(vec![1]));
        assert!(queue.enqueue(push(2), ROOM).is_none());
        queue.clear();
        assert_eq!(queued(&queue), [1]);
        assert!(queue.enqueue(push(1), ROOM).is_none(), "the drainer still runs");
        assert_eq!(batch(&mut turn), Some(vec![1]), "the new session's first record");
    }

    #[test]
    fn past_the_bound_the_waiting_are_dropped() {
        let queue = Arc::new(PushQueue::default());
        let _turn = queue.enqueue(push(1), 3).unwrap();
        for seq in 2..=4 {
            assert!(queue.enqueue(push(seq), 3).is_none());
        }
        assert_eq!(queued(&queue), [4], "seq 4 will find a gap and repopulate");
    }

    #[test]
    fn bridge_extends_a_window_only_from_its_very_last_record() {
        let queue = Arc::new(PushQueue::default());
        let mut turn = queue.enqueue(push(1), ROOM).unwrap();
        assert_eq!(batch(&mut turn), Some(vec![1]));
        assert!(queue.enqueue(push(2), ROOM).is_none());
        assert_eq!(batch(&mut turn), Some(vec![2]), "1 acknowledged");
        for seq in 3..=5 {
            assert!(queue.enqueue(push(seq), ROOM).is_none());
        }
        let unacknowledged = queue.unacknowledged();
        // The window holds 1 and 2 (2 landed, not yet acknowledged): 3..5 follow.
        let window = || vec![record(1), record(2)];
        let bridged = |w, upto, n| seqs_of(&bridge(w, &unacknowledged, upto, n));
        assert_eq!(bridged(window(), 5, 9), [1, 2, 3, 4, 5]);
        assert_eq!(bridged(window(), 5, 3), [3, 4, 5], "the last n");
        assert_eq!(bridged(window(), 4, 9), [1, 2, 3, 4], "up to");
        // A window behind what the queue holds: no bridge, the file answers.
        assert!(bridged(vec![], 5, 9).is_empty());
        // A window whose last record is another's (a deleted session's seq 2).
        let mut stranger = record(2);
        stranger.id = "other".into();
        assert_eq!(bridged(vec![stranger], 5, 9), [2]);
        // A new session: its whole history is still on its way.
        let fresh = Arc::new(PushQueue::default());
        let _t = fresh.enqueue(push(1), ROOM).unwrap();
        assert!(fresh.enqueue(push(2), ROOM).is_none());
        assert_eq!(seqs_of(&bridge(vec![], &fresh.unacknowledged(), 2, 9)), [1, 2]);
    }
}
