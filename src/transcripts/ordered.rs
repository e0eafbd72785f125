//! `order = "redis"`: Redis assigns each session's seq, in one Lua script that also
//! stores the record; each replica's file is its journal of what it acknowledged.
//!
//! The journal is JSON Lines, two kinds of line (one `write()` each, the torn-tail rules
//! of every transcript file):
//!
//! - `{"kind":"message","id":…,"role":…,"content":…,"at":…}`, written (and fsynced per
//!   the policy) before the append asks Redis anything: the acknowledgement rests on it;
//! - `{"kind":"assigned","id":…,"seq":N}`, written after the script answered, never
//!   fsynced on its own: a confirmation lost in a crash only makes the record look
//!   pending, and its replay by message id returns the seq Redis stored.
//!
//! A message line without an assigned line is *pending*: the replay task sends it to
//! the script, in journal order per session, and writes its confirmation.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, LazyLock, Mutex, PoisonError},
    time::{Duration, SystemTime},
};

use metrics::{Counter, Gauge};
use serde::{Deserialize, Serialize};
use stayfast_core::{
    ErrorChain, FallbackReason,
    fs::DurableAppend,
    redis::{Redis, RedisError, Script},
    telemetry::metric_name,
};
use tokio::sync::Notify;

use super::{
    Inner, TranscriptStore,
    record::{Degradation, History, HistorySource, Message, Receipt, Record, SeqSource},
    session::SessionKey,
};
use crate::StoreError;

/// Gauge: records journaled by this process and not yet given a seq by Redis
/// (`order = "redis"`), after the metric prefix.
///
/// ```
/// use stayfast::transcripts::TRANSCRIPTS_PENDING_RECORDS;
/// assert_eq!(format!("stayfast_{TRANSCRIPTS_PENDING_RECORDS}"), "stayfast_transcripts_pending_records");
/// ```
pub const TRANSCRIPTS_PENDING_RECORDS: &str = "transcripts_pending_records";
/// Counter: pending records the replay gave a seq.
///
/// ```
/// use stayfast::transcripts::TRANSCRIPTS_REPLAYED_TOTAL;
/// assert_eq!(TRANSCRIPTS_REPLAYED_TOTAL, "transcripts_replayed_total");
/// ```
pub const TRANSCRIPTS_REPLAYED_TOTAL: &str = "transcripts_replayed_total";
/// Counter: replay calls that failed (Redis still unreachable); each is retried.
///
/// ```
/// use stayfast::transcripts::TRANSCRIPTS_REPLAY_FAILURES_TOTAL;
/// assert_eq!(TRANSCRIPTS_REPLAY_FAILURES_TOTAL, "transcripts_replay_failures_total");
/// ```
pub const TRANSCRIPTS_REPLAY_FAILURES_TOTAL: &str = "transcripts_replay_failures_total";

/// Assigns the next seq to each record and stores it, unless its message id is stored
/// already — for a batch of records of one session, in their order.
///
/// KEYS: the counter, the id → seq hash, the history list. ARGV: pairs of a message id
/// and the record's JSON without its seq (`{"id":…}`). Returns, per record, the new seq,
/// or minus the stored one for a known id (so a replay or a retry stores nothing
/// twice). The stored element is `{"seq":N,` followed by the JSON without its `{`: the
/// record's JSON exactly as the client encoded it, the seq first.
const ASSIGN_SOURCE: &str = r#"
local out = {}
for i = 1, #ARGV, 2 do
  local stored = redis.call('HGET', KEYS[2], ARGV[i])
  if stored then
    out[#out + 1] = -tonumber(stored)
  else
    local seq = redis.call('INCR', KEYS[1])
    redis.call('HSET', KEYS[2], ARGV[i], seq)
    redis.call('RPUSH', KEYS[3], '{"seq":' .. seq .. ',' .. string.sub(ARGV[i + 1], 2))
    out[#out + 1] = seq
  end
end
return out
"#;

/// [`ASSIGN_SOURCE`], run by its SHA1 (`EVALSHA`): Redis hashes an `EVAL`'s whole body
/// on every call to find it in its script cache (issue #16).
static ASSIGN: LazyLock<Script> = LazyLock::new(|| Script::new(ASSIGN_SOURCE));

/// Most records one replay call sends (one script run, one round trip).
const REPLAY_BATCH: usize = 256;
/// Most bytes of records one replay call sends (a batch holds one record at least).
const REPLAY_BATCH_BYTES: usize = 1 << 20;
/// Sessions replayed at once.
const REPLAY_SESSIONS: usize = 16;

/// Deletes a session's order keys.
const DELETE_SOURCE: &str = "return redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])";
/// [`DELETE_SOURCE`], run by its SHA1, as [`ASSIGN`].
static DELETE: LazyLock<Script> = LazyLock::new(|| Script::new(DELETE_SOURCE));

/// How often the replay looks at its pending records when nothing wakes it.
const REPLAY_EVERY: Duration = Duration::from_millis(250);

/// One line of a journal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Entry {
    Message(Unsequenced),
    /// Seqs Redis assigned, by message id (one line per script call).
    Assigned {
        seqs: Vec<(String, u64)>,
    },
}

impl Entry {
    fn encode(&self) -> Vec<u8> {
        // Strings and an integer always serialize.
        serde_json::to_vec(self).unwrap_or_default()
    }

    fn decode(line: &[u8]) -> Option<Entry> {
        serde_json::from_slice(line).ok()
    }
}

/// Whether `line` is a journal line (the validator of a journal's reads and repairs).
pub(crate) fn is_entry(line: &[u8]) -> bool {
    Entry::decode(line).is_some()
}

/// A record before Redis gave it a seq: the fields of [`Record`] but `seq`, in its
/// field order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Unsequenced {
    id: String,
    role: String,
    content: String,
    at: String,
}

impl Unsequenced {
    fn record(&self, seq: u64) -> Record {
        Record {
            seq,
            id: self.id.clone(),
            role: self.role.clone(),
            content: self.content.clone(),
            at: self.at.clone(),
        }
    }

    /// `{"id":…,"role":…,"content":…,"at":…}`: the script prepends the seq.
    fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The Redis order of a store: the script's Redis, the pending records and the replay.
#[derive(Debug)]
pub(crate) struct RedisOrder {
    pub(crate) redis: Redis,
    pub(crate) prefix: String,
    pub(crate) wait_replicas: u32,
    pub(crate) wait_timeout: Duration,
    /// Writes the confirmation lines: never fsynced on their own (see the module docs).
    pub(crate) confirmer: DurableAppend,
    /// Per session, its pending records in journal order.
    pending: Mutex<HashMap<SessionKey, VecDeque<Unsequenced>>>,
    /// Wakes the replay.
    pub(crate) wake: Arc<Notify>,
    metrics: OrderMetrics,
}

#[derive(Debug)]
struct OrderMetrics {
    pending: Gauge,
    replayed: Counter,
    failures: Counter,
}

impl RedisOrder {
    pub(crate) fn new(
        redis: Redis,
        prefix: String,
        (wait_replicas, wait_timeout): (u32, Duration),
        confirmer: DurableAppend,
        metrics_prefix: &str,
    ) -> Self {
        let name = |suffix| metric_name(metrics_prefix, suffix);
        Self {
            redis,
            prefix,
            wait_replicas,
            wait_timeout,
            confirmer,
            pending: Mutex::default(),
            wake: Arc::default(),
            metrics: OrderMetrics {
                pending: metrics::gauge!(name(TRANSCRIPTS_PENDING_RECORDS)),
                replayed: metrics::counter!(name(TRANSCRIPTS_REPLAYED_TOTAL)),
                failures: metrics::counter!(name(TRANSCRIPTS_REPLAY_FAILURES_TOTAL)),
            },
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<SessionKey, VecDeque<Unsequenced>>> {
        // Every change is one push, pop or removal: a panic cannot leave it half-made.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records journaled and not yet given a seq, over every session.
    pub(crate) fn pending_count(&self) -> usize {
        self.pending().values().map(VecDeque::len).sum()
    }

    fn add_pending(&self, key: &SessionKey, record: Unsequenced) {
        self.pending().entry(key.clone()).or_default().push_back(record);
        self.metrics.pending.increment(1.0);
    }

    /// Runs the script for `records` (one session's, in order): their seqs (the stored
    /// ones for known ids), and with `wait_replicas`, how many replicas acknowledged
    /// them (`Redis::eval_script_then_wait`: the script and the `WAIT` on one connection).
    async fn assign(
        &self,
        key: &SessionKey,
        records: &[Unsequenced],
    ) -> Result<(Vec<u64>, Option<u32>), RedisError> {
        let keys = key.order_keys(&self.prefix);
        let args: Vec<String> = records.iter().flat_map(|r| [r.id.clone(), r.json()]).collect();
        let seqs = |codes: Vec<i64>| codes.into_iter().map(i64::unsigned_abs).collect::<Vec<_>>();
        if self.wait_replicas == 0 {
            let codes: Vec<i64> = self.redis.eval_script(&ASSIGN, keys, args).await?;
            return Ok((seqs(codes), None));
        }
        let (codes, replicas): (Vec<i64>, u32) = self
            .redis
            .eval_script_then_wait(&ASSIGN, keys, args, self.wait_replicas, self.wait_timeout)
            .await?;
        Ok((seqs(codes), Some(replicas)))
    }

    /// The session's journal, read: its records in journal order (each message id once,
    /// with its seq when assigned, else 0) and the pending ones.
    fn pending_of(entries: impl IntoIterator<Item = Entry>) -> (Vec<Record>, Vec<Unsequenced>) {
        let mut assigned = HashMap::new();
        let mut messages = Vec::new();
        let mut seen = HashSet::new();
        for entry in entries {
            match entry {
                Entry::Message(m) => {
                    if seen.insert(m.id.clone()) {
                        messages.push(m);
                    }
                }
                Entry::Assigned { seqs } => assigned.extend(seqs),
            }
        }
        let records = messages
            .iter()
            .map(|m| m.record(assigned.get(&m.id).copied().unwrap_or(0)))
            .collect();
        let pending = messages
            .into_iter()
            .filter(|m| !assigned.contains_key(&m.id))
            .collect();
        (records, pending)
    }
}

impl Inner {
    fn order(&self) -> Result<&RedisOrder, StoreError> {
        self.ordered.as_deref().ok_or_else(|| StoreError::InvalidInput {
            what: "transcript order",
            problem: "not redis".into(),
        })
    }

    /// Every journal line of the session's file; damage in the middle keeps the prefix.
    async fn journal(&self, key: &SessionKey) -> Result<Vec<Entry>, StoreError> {
        let path = key.file(&self.dir);
        let lines = match self.reader.read(&path, is_entry).await {
            Ok(recovered) => recovered.records,
            Err(stayfast_core::Error::Inner {
                source: stayfast_core::fs::ReadLogError::Corrupt(c),
                ..
            }) => {
                tracing::warn!(target: "stayfast::transcripts", path = %path.display(),
                    "journal damaged; using its valid part");
                c.valid
            }
            Err(e) => return Err(e.into()),
        };
        Ok(lines.iter().filter_map(|l| Entry::decode(l)).collect())
    }

    /// Finds the pending records of every journal in the directory (at open, before
    /// any append): a replica restarted with pending records replays them.
    pub(crate) async fn load_pending(&self) -> Result<usize, StoreError> {
        let order = self.order()?;
        let dir = self.dir.clone();
        let names = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<String>> {
            let mut names = Vec::new();
            for entry in std::fs::read_dir(dir)? {
                if let Some(name) = entry?.file_name().to_str() {
                    names.push(name.to_owned());
                }
            }
            Ok(names)
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())))
        .map_err(|e| StoreError::InvalidInput {
            what: "transcript directory",
            problem: format!("{}: {e}", self.dir.display()),
        })?;
        let mut found = 0;
        for key in names.iter().filter_map(|n| SessionKey::from_file_name(n)) {
            let (_, pending) = RedisOrder::pending_of(self.journal(&key).await?);
            found += pending.len();
            for record in pending {
                order.add_pending(&key, record);
            }
        }
        if found > 0 {
            tracing::info!(target: "stayfast::transcripts", pending = found, "journaled records await their seq: replaying");
            order.wake.notify_one();
        }
        Ok(found)
    }

    /// Writes the confirmation line of records given their seqs by Redis; a failure
    /// only leaves them looking pending to a later open, which replays them harmlessly.
    async fn confirm(&self, key: &SessionKey, seqs: Vec<(String, u64)>) {
        let Some(order) = &self.ordered else { return };
        let line = Entry::Assigned { seqs }.encode();
        if let Err(e) = order.confirmer.append(key.file(&self.dir), line).await {
            tracing::warn!(target: "stayfast::transcripts", error = %ErrorChain(&e),
                "could not journal assigned seqs (the records will be replayed at the next open)");
        }
    }

    /// One pass of the replay: every session's pending records, oldest first, in
    /// batches (one script call each), [`REPLAY_SESSIONS`] sessions at once; a failure
    /// ends the pass (Redis is still unreachable: the next pass retries). Returns the
    /// records replayed.
    pub(crate) async fn replay_pass(&self) -> usize {
        use futures_util::StreamExt as _;
        let Some(order) = &self.ordered else { return 0 };
        let keys: Vec<SessionKey> = order.pending().keys().cloned().collect();
        let failed = std::sync::atomic::AtomicBool::new(false);
        let replayed = std::sync::atomic::AtomicUsize::new(0);
        futures_util::stream::iter(keys)
            .for_each_concurrent(REPLAY_SESSIONS, |key| {
                let (failed, replayed) = (&failed, &replayed);
                async move {
                    while !failed.load(std::sync::atomic::Ordering::Relaxed) {
                        match self.replay_batch(order, &key).await {
                            Ok(0) => return,
                            Ok(n) => {
                                replayed.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                            }
                            Err(()) => failed.store(true, std::sync::atomic::Ordering::Relaxed),
                        }
                    }
                }
            })
            .await;
        replayed.into_inner()
    }

    /// Replays the next batch of `key`'s pending records: how many (0: none left).
    async fn replay_batch(&self, order: &RedisOrder, key: &SessionKey) -> Result<usize, ()> {
        // NOTE: only this (single) replay task takes records off a session's queue, and
        // an append queues behind a non-empty one instead of asking Redis: so the
        // session's records reach Redis in journal order.
        let session = self.sessions.get(key);
        // A delete of the session waits for this batch, and one that came first leaves
        // no queue to take it from: else a batch whose script ran after the delete's DEL
        // would store the deleted session in Redis again, and its confirmation would
        // re-create the deleted journal.
        let _replaying = session.replay.lock().await;
        let batch: Vec<Unsequenced> = {
            let pending = order.pending();
            let Some(queue) = pending.get(key) else {
                return Ok(0);
            };
            let mut batch = Vec::new();
            let mut bytes = 0;
            for record in queue.iter().take(REPLAY_BATCH) {
                bytes += record.content.len() + record.id.len() + record.role.len() + 64;
                // The first record goes whatever its size.
                if !batch.is_empty() && bytes > REPLAY_BATCH_BYTES {
                    break;
                }
                batch.push(record.clone());
            }
            batch
        };
        if batch.is_empty() {
            return Ok(0);
        }
        match order.assign(key, &batch).await {
            Ok((seqs, _)) => {
                let n = batch.len();
                let confirmed = batch.into_iter().map(|r| r.id).zip(seqs).collect();
                self.confirm(key, confirmed).await;
                let mut pending = order.pending();
                if let Some(queue) = pending.get_mut(key) {
                    queue.drain(..n.min(queue.len()));
                    if queue.is_empty() {
                        pending.remove(key);
                    }
                }
                drop(pending);
                order.metrics.pending.decrement(n as f64);
                order.metrics.replayed.increment(n as u64);
                Ok(n)
            }
            Err(e) => {
                order.metrics.failures.increment(1);
                tracing::debug!(target: "stayfast::transcripts", error = %ErrorChain(&e),
                    "replay: Redis still unreachable");
                Err(())
            }
        }
    }
}

/// The replay task: a pass whenever woken (an append saw Redis answer while records
/// were pending, or the store opened with some) and every [`REPLAY_EVERY`] while any
/// is pending. Ends when the store is dropped.
pub(crate) async fn replay(inner: std::sync::Weak<Inner>, wake: Arc<Notify>) {
    loop {
        {
            let Some(inner) = inner.upgrade() else { return };
            let pending = inner.ordered.as_ref().map_or(0, |o| o.pending_count());
            if pending > 0 {
                let started = std::time::Instant::now();
                let replayed = inner.replay_pass().await;
                if replayed > 0 {
                    tracing::info!(target: "stayfast::transcripts", replayed,
                        left = inner.ordered.as_ref().map_or(0, |o| o.pending_count()),
                        took_ms = started.elapsed().as_millis() as u64, "replayed journaled records into Redis");
                }
            }
        }
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(REPLAY_EVERY) => {}
        }
    }
}

impl TranscriptStore {
    /// Records this store journaled that await their seq from Redis (`order = "redis"`;
    /// always 0 with file order). The replay sends them when Redis is back.
    ///
    /// ```
    /// # use stayfast::transcripts::{TranscriptConfig, TranscriptStore};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut config = TranscriptConfig::default();
    /// # config.dir = std::env::temp_dir().join(format!("stayfast-doc-tx-pending-count-{}", std::process::id()));
    /// let store = TranscriptStore::builder(&config).open().await?;
    /// assert_eq!(store.pending(), 0);
    /// # std::fs::remove_dir_all(&config.dir)?;
    /// # Ok(()) }
    /// ```
    pub fn pending(&self) -> usize {
        self.inner.ordered.as_ref().map_or(0, |o| o.pending_count())
    }

    /// The append of `order = "redis"` (see [`append`](Self::append)).
    pub(crate) async fn append_ordered(
        &self,
        key: SessionKey,
        message: Message,
    ) -> Result<Receipt, StoreError> {
        let inner = &*self.inner;
        let order = inner.order()?;
        let session = inner.sessions.get(&key);
        // Serialises this process's appends of the session: journal order is the order
        // in which they ask Redis, so this replica's records get increasing seqs.
        let writer = inner.lock_writer(&session, "transcripts.append").await?;
        let record = Unsequenced {
            id: message.id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            role: message.role,
            content: message.content,
            at: humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
        };
        let (queued, stored) = {
            let pending = order.pending();
            let queue = pending.get(&key);
            let stored = queue.and_then(|q| q.iter().find(|r| r.id == record.id).cloned());
            (queue.is_some_and(|q| !q.is_empty()), stored)
        };
        if let Some(stored) = stored {
            // A retry of a pending record: journaled already.
            return Ok(Receipt {
                record: stored.record(0),
                durability: inner.journal_durability(&key).await?,
                seq_source: SeqSource::Pending,
            });
        }
        let path = key.file(&inner.dir);
        let line = Entry::Message(record.clone()).encode();
        let appended = inner
            .appender
            .append(&path, line)
            .await
            .map_err(StoreError::from)?;
        let durability = appended.durability;
        if queued {
            // Records of this session wait for the replay: this one goes after them.
            order.add_pending(&key, record.clone());
            order.wake.notify_one();
            return Ok(pending_receipt(&record, durability));
        }
        match order.assign(&key, std::slice::from_ref(&record)).await {
            Ok((seqs, replicas)) => {
                let seq = seqs.first().copied().unwrap_or(0);
                inner.confirm(&key, vec![(record.id.clone(), seq)]).await;
                drop(writer);
                if order.pending_count() > 0 {
                    order.wake.notify_one(); // Redis answers again: replay the rest
                }
                Ok(Receipt {
                    record: record.record(seq),
                    durability,
                    seq_source: SeqSource::Redis { replicas },
                })
            }
            Err(e) => {
                tracing::debug!(target: "stayfast::transcripts", error = %ErrorChain(&e),
                    "Redis unreachable: the record is journaled, pending its seq");
                order.add_pending(&key, record.clone());
                Ok(pending_receipt(&record, durability))
            }
        }
    }

    /// `history` of `order = "redis"`: the session's Redis list; when Redis fails, this
    /// replica's journal, flagged partial.
    pub(crate) async fn history_ordered(&self, key: SessionKey, limit: usize) -> Result<History, StoreError> {
        let inner = &*self.inner;
        let order = inner.order()?;
        if limit == 0 {
            return Ok(History::new(Vec::new(), HistorySource::None, None));
        }
        let [_, _, list] = <[String; 3]>::try_from(key.order_keys(&order.prefix)).unwrap_or_default();
        let start = -i64::try_from(limit).unwrap_or(i64::MAX);
        let read: Result<Vec<String>, RedisError> = order.redis.lrange(list, start, -1).await;
        match read {
            Ok(raw) => {
                let records: Vec<Record> = raw.iter().filter_map(|r| Record::decode(r.as_bytes())).collect();
                let source = if records.is_empty() {
                    HistorySource::None
                } else {
                    HistorySource::Redis
                };
                Ok(History::new(records, source, None))
            }
            Err(e) => {
                let reason = Some(Degradation::Redis(FallbackReason::of(&e)));
                let (mut records, _) = RedisOrder::pending_of(inner.journal(&key).await?);
                let skip = records.len().saturating_sub(limit);
                records.drain(..skip);
                let source = if records.is_empty() {
                    HistorySource::None
                } else {
                    HistorySource::File
                };
                let mut history = History::new(records, source, reason);
                history.partial = true;
                Ok(history)
            }
        }
    }

    /// `delete_session` of `order = "redis"`: the journal, the pending records and the
    /// Redis keys.
    pub(crate) async fn delete_ordered(&self, key: SessionKey) -> Result<bool, StoreError> {
        let inner = &*self.inner;
        let order = inner.order()?;
        let session = inner.sessions.get(&key);
        // Appends of the session wait until the delete is whole, Redis included: one that
        // got in before the DEL would lose its record to it.
        let _writer = inner.lock_writer(&session, "transcripts.delete").await?;
        let _replaying = inner.lock_within(&session.replay, "transcripts.delete").await?;
        let removed = inner.appender.remove(key.file(&inner.dir)).await;
        if let Some(queue) = order.pending().remove(&key) {
            order.metrics.pending.decrement(queue.len() as f64);
        }
        let existed = removed?;
        let _: i64 = order
            .redis
            .eval_script(&DELETE, key.order_keys(&order.prefix), Vec::new())
            .await?;
        Ok(existed)
    }
}

fn pending_receipt(record: &Unsequenced, durability: super::Durability) -> Receipt {
    Receipt {
        record: record.record(0),
        durability,
        seq_source: SeqSource::Pending,
    }
}

impl Inner {
    /// The durability of a journal line written earlier, for a repeated append: under
    /// `Always` the journal is synced again (the first answer was lost), else `Written`.
    async fn journal_durability(&self, key: &SessionKey) -> Result<super::Durability, StoreError> {
        if self.fsync == stayfast_core::fs::FsyncPolicy::Always {
            self.appender.sync(key.file(&self.dir)).await?;
            Ok(super::Durability::Synced)
        } else {
            Ok(super::Durability::Written)
        }
    }
}
