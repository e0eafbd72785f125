//! The read path: `history` from the Redis window, else from the file's end, else the
//! whole file; never an error for a slow or unavailable dependency.

use stayfast_core::{ErrorChain, FallbackReason, Metered, Outcome, ToOutcome};

use super::{
    Inner, TranscriptStore,
    pushes::bridge,
    record::{Degradation, End, History, HistorySource, Record},
    session::{Session, SessionKey},
};
use crate::StoreError;

impl TranscriptStore {
    /// The last `limit` messages of `session`, oldest first.
    ///
    /// Served from the Redis window when it is reachable within its deadline and
    /// agrees with the file's end; otherwise from the file — its last records read
    /// backwards from its end when the session's end is known, so the cost follows
    /// `limit`, not the transcript's length. A window found cold or behind is
    /// repopulated in the background. When the file cannot be read in time either (or
    /// its circuit is open), the history is empty and degraded rather than an error.
    /// The result's `source`, `degraded` and `reason` say which happened.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidInput`] for a bad session id; [`StoreError::ReadLog`] when
    /// the file is not readable as a transcript (not a regular file, a permission
    /// refused, an I/O error).
    ///
    /// # Cancellation
    ///
    /// Dropping the future changes no data; with Redis, the call is counted as
    /// `cancelled` in the `transcripts.history` metrics (one count, at the drop).
    ///
    /// ```
    /// # use stayfast::transcripts::{HistorySource, Message, TranscriptConfig, TranscriptStore};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut config = TranscriptConfig::default();
    /// # config.dir = std::env::temp_dir().join(format!("stayfast-doc-tx-history-{}", std::process::id()));
    /// let store = TranscriptStore::builder(&config).open().await?;
    /// for text in ["a", "b", "c"] {
    ///     store.append("s", Message::new("user", text)).await?;
    /// }
    /// let last_two = store.history("s", 2).await?;
    /// let texts: Vec<_> = last_two.records.iter().map(|r| r.content.as_str()).collect();
    /// assert_eq!(texts, ["b", "c"]);
    /// assert_eq!(store.history("never-used", 10).await?.source, HistorySource::None);
    /// # std::fs::remove_dir_all(&config.dir)?;
    /// # Ok(()) }
    /// ```
    pub async fn history(&self, session: &str, limit: usize) -> Result<History, StoreError> {
        if self.inner.ordered.is_some() {
            return self.history_ordered(SessionKey::new(session)?, limit).await;
        }
        let Some(window) = &self.inner.window else {
            // File-only: no Redis target to count the call against.
            return self.read_history(session, limit).await;
        };
        // `Metered` records the call when it ends, and `cancelled` when it is dropped
        // first, as every other wrapped call is. It labels an `Err` by its outcome, so
        // the read's result travels as an `Err` whenever it is not a plain success.
        let metered = Metered::new(
            async {
                let result = self.read_history(session, limit).await;
                let outcome = outcome(&result);
                if let Ok(History {
                    reason: Some(Degradation::Redis(reason)),
                    ..
                }) = &result
                {
                    window.history_metrics.fallback(*reason);
                }
                match outcome {
                    Outcome::Success => Ok(result),
                    outcome => Err(Counted { result, outcome }),
                }
            },
            window.history_metrics.clone(),
        );
        match metered.await {
            Ok(result) | Err(Counted { result, .. }) => result,
        }
    }

    async fn read_history(&self, session: &str, limit: usize) -> Result<History, StoreError> {
        let key = SessionKey::new(session)?;
        let inner = &*self.inner;
        let session = inner.sessions.get(&key);
        let mut redis_failed = None;
        // The window was read and found cold or behind: the file's read repopulates it.
        let mut window_stale = false;
        let known = session.known_end();
        if let (Some(window), Some(end)) = (&inner.window, &known) {
            let want = u64::try_from(limit).unwrap_or(u64::MAX).min(end.seq);
            if want == 0 {
                return Ok(History::new(Vec::new(), HistorySource::None, None));
            }
            if want <= u64::from(window.len) {
                // `want` ≤ the window length, a u32.
                let n = u32::try_from(want).unwrap_or(window.len);
                // Taken before the read, it holds every record that read can lack.
                let unacknowledged = session.pushes.unacknowledged();
                let read = window.read(&key, n).await;
                // Pushes still on their way bridge a window that is merely behind.
                let read = read.map(|r| r.map(|r| bridge(r, &unacknowledged, end.seq, n as usize)));
                match read {
                    Ok(Some(records)) if is_tail(&records, n, end) => {
                        return Ok(History::new(records, HistorySource::Redis, None));
                    }
                    // Cold, expired, behind the file, or not this file's records (a
                    // deleted session's, left by a late write): the file answers.
                    Ok(_) => window_stale = true,
                    Err(e) => {
                        tracing::debug!(target: "stayfast::transcripts", error = %ErrorChain(&e), "Redis window unavailable; reading the file");
                        redis_failed = Some(FallbackReason::of(&e));
                    }
                }
            }
        }
        let redis = redis_failed.map(Degradation::Redis);
        let read = match inner
            .history_from_file(&key, &session, limit, window_stale && redis.is_none())
            .await
        {
            Ok(read) => read,
            // The file is slow or its circuit open: say so, and serve nothing rather
            // than fail the caller (who can still answer without the history).
            Err(StoreError::ReadLog(e)) if !e.is_inner() => {
                tracing::warn!(target: "stayfast::transcripts", error = %ErrorChain(&e), "transcript unreadable in time; serving an empty history");
                let reason = Some(Degradation::FileUnavailable(FallbackReason::of(&e)));
                return Ok(History::new(Vec::new(), HistorySource::None, reason));
            }
            Err(e) => return Err(e),
        };
        let (mut records, damaged) = read;
        let source = if records.is_empty() {
            HistorySource::None
        } else {
            HistorySource::File
        };
        let skip = records.len().saturating_sub(limit);
        records.drain(..skip);
        let reason = if damaged {
            Some(Degradation::Damaged)
        } else {
            redis
        };
        Ok(History::new(records, source, reason))
    }
}

impl Inner {
    /// At least the last `limit` records of the session's file (all of them for a
    /// cold session, which is loaded from them), and whether damage cut them short.
    /// With `repopulate`, the Redis window is rebuilt from them in the background.
    async fn history_from_file(
        &self,
        key: &SessionKey,
        session: &Session,
        limit: usize,
        repopulate: bool,
    ) -> Result<(Vec<Record>, bool), StoreError> {
        let path = key.file(&self.dir);
        let window_len = self.window.as_ref().map_or(0, |w| w.len as usize);
        if let (Some(end), Some(first)) = (session.known_end(), session.known_first())
            && end.seq > 0
        {
            // A warm session: its end is known, its last records are read from there.
            let n = if repopulate { limit.max(window_len) } else { limit };
            let read = self
                .reader
                .read_last(&path, n, |l| Record::decode(l).is_some())
                .await?;
            if let Some(lines) = read {
                let records: Vec<Record> = lines.iter().filter_map(|l| Record::decode(l)).collect();
                if repopulate && !records.is_empty() {
                    self.repopulate_in_background(key, &first, &records);
                }
                return Ok((records, false));
            }
            // A torn or damaged end: the whole file, which repairs or reports it.
        }
        // A cold session is loaded from this read. Its writer lock (when free) is held
        // across the read, so no delete can run between the read and the load (the
        // state of a deleted file would be loaded); an append holding it loads itself.
        let was_cold = session.known_end().is_none();
        let mut cold = session.writer.try_lock().ok().filter(|w| !w.loaded);
        let read = self.read_file(&path).await?;
        if read.damaged {
            tracing::warn!(target: "stayfast::transcripts", path = %path.display(),
                "transcript damaged; serving its valid part (TranscriptStore::repair takes the damage out)");
        } else if let Some(writer) = cold.as_mut() {
            // Issued after every earlier operation on this path, this read saw all of
            // them: it is the file's current state.
            super::load(writer, session, &read.records);
        }
        drop(cold);
        if (repopulate || was_cold) && !read.damaged && !read.records.is_empty() {
            self.repopulate_in_background(key, &End::of(read.records.first()), &read.records);
        }
        Ok((read.records, read.damaged))
    }
}

/// A `history` result that is not a plain success, with the outcome it counts as.
struct Counted {
    result: Result<History, StoreError>,
    outcome: Outcome,
}

impl ToOutcome for Counted {
    fn outcome(&self) -> Outcome {
        self.outcome
    }
}

/// The outcome a `history` result counts as.
fn outcome(result: &Result<History, StoreError>) -> Outcome {
    match result {
        Ok(history) => match history.reason {
            Some(Degradation::Redis(_)) => Outcome::Fallback,
            // The file could not stand in: the call failed in substance.
            Some(Degradation::FileUnavailable(reason)) => match reason {
                FallbackReason::Timeout => Outcome::Timeout,
                FallbackReason::Rejected => Outcome::Rejected,
                _ => Outcome::Failure,
            },
            _ => Outcome::Success,
        },
        Err(e) => e.outcome(),
    }
}

/// Whether `records` are the `n` last of the file ending with `end`, gap-free. The
/// window is written whole from one read of a file, then extended only by pushes that
/// follow their very predecessor, so a window ending with the file's last *record* (not
/// merely its seq: a deleted session's records may linger) holds this file's records.
fn is_tail(records: &[Record], n: u32, end: &End) -> bool {
    records.len() == n as usize
        && records.last().is_some_and(|r| end.is(r))
        && records.windows(2).all(|w| w[1].seq == w[0].seq + 1)
}
