//! The session's recent window in Redis: a list of JSON records, oldest first, trimmed
//! to `cache_messages`, with a TTL. Both writes are Lua scripts, so each is atomic and
//! decided on the server by the records' seqs: a late or repeated write can never put
//! an older record after a newer one.

use std::{
    sync::{Arc, LazyLock},
    time::Duration,
};

use stayfast_core::{
    CallMetrics,
    redis::{Redis, RedisError, Script},
};

use super::{
    pushes::Push,
    record::{End, Record},
    session::SessionKey,
};

/// Appends a batch of consecutive records (ARGV[7..], oldest first, the first of seq
/// ARGV[2]) if it extends the window right after the record the first was appended
/// after (same seq, id and timestamp: ARGV[4], ARGV[5]), unless the batch's
/// incarnation (ARGV[6]) was deleted (a member of the tombstone set KEYS[2]).
///
/// Returns -2 for a deleted incarnation, 1 when pushed, 0 when the window already reaches the batch's last seq (a
/// repeated push), -1 when it would leave a gap (an earlier push failed or the window
/// is cold), overlap part of the batch (a repopulation raced it), or follow a record
/// that is not the first one's predecessor (a deleted session's, left by a late
/// write): the window is then left alone, and must be repopulated from the file.
const PUSH_SOURCE: &str = r"
if redis.call('SISMEMBER', KEYS[2], ARGV[6]) == 1 then return -2 end
local first = tonumber(ARGV[2])
local newest = first + #ARGV - 7
local last = redis.call('LINDEX', KEYS[1], -1)
if last then
  local ok, rec = pcall(cjson.decode, last)
  if not ok or type(rec) ~= 'table' or type(rec.seq) ~= 'number' then return -1 end
  if rec.seq >= newest then return 0 end
  if rec.seq ~= first - 1 or rec.id ~= ARGV[4] or rec.at ~= ARGV[5] then return -1 end
elseif first ~= 1 then
  return -1
end
redis.call('RPUSH', KEYS[1], unpack(ARGV, 7))
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[3]), -1)
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
";

/// Replaces the window with the file's tail (ARGV[4..]), unless the window already
/// ends at a newer seq than ARGV[2] (a push that raced this repopulation won): never
/// replaces newer records with older ones; nor when the file's incarnation (ARGV[3])
/// was deleted. Returns 1 when replaced, 0 when left alone.
const REPLACE_SOURCE: &str = r"
if redis.call('SISMEMBER', KEYS[2], ARGV[3]) == 1 then return 0 end
local last = redis.call('LINDEX', KEYS[1], -1)
if last then
  local ok, rec = pcall(cjson.decode, last)
  if ok and type(rec) == 'table' and type(rec.seq) == 'number' and rec.seq > tonumber(ARGV[2]) then
    return 0
  end
end
redis.call('DEL', KEYS[1])
if #ARGV > 3 then
  redis.call('RPUSH', KEYS[1], unpack(ARGV, 4))
  redis.call('EXPIRE', KEYS[1], ARGV[1])
end
return 1
";

/// Deletes the window and, when the deleted file had records, adds its incarnation
/// (ARGV[2]) to the tombstone set, kept ARGV[1] seconds: one atomic step, so no write
/// of that incarnation can land between the two.
const DELETE_SOURCE: &str = r"
redis.call('DEL', KEYS[1])
if ARGV[2] then
  redis.call('SADD', KEYS[2], ARGV[2])
  redis.call('EXPIRE', KEYS[2], ARGV[1])
end
return 1
";

// Run by their SHA1 (`EVALSHA`): Redis hashes an `EVAL`'s whole body on every call
// to find it in its script cache, on the two cores the appenders share (issue #16).
static PUSH: LazyLock<Script> = LazyLock::new(|| Script::new(PUSH_SOURCE));
static REPLACE: LazyLock<Script> = LazyLock::new(|| Script::new(REPLACE_SOURCE));
static DELETE: LazyLock<Script> = LazyLock::new(|| Script::new(DELETE_SOURCE));

/// How long a deleted incarnation stays refused, at least: longer than any write can
/// plausibly stay in flight (a paused or partitioned server applies it when it comes
/// back), and never shorter than the window's own TTL.
const MIN_TOMBSTONE_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// `record`'s JSON line, as a Redis argument.
fn encode(record: &Record) -> String {
    String::from_utf8_lossy(&record.encode()).into_owned()
}

/// What a push did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// The window now ends with the record.
    Extended,
    /// The session's incarnation was deleted: nothing to push, ever.
    Deleted,
    /// The window already held it.
    AlreadyThere,
    /// The window has a gap before it (or is cold): repopulate.
    Gap,
}

/// The Redis side of a transcript store.
#[derive(Clone, Debug)]
pub(crate) struct Window {
    pub(crate) redis: Redis,
    /// Metrics of `history` as one logical call (`transcripts.history`).
    pub(crate) history_metrics: CallMetrics,
    pub(crate) len: u32,
    pub(crate) ttl: Duration,
    /// [`TranscriptConfig::key_prefix`](super::TranscriptConfig::key_prefix).
    pub(crate) prefix: String,
}

impl Window {
    fn ttl_secs(&self) -> String {
        self.ttl.as_secs().max(1).to_string()
    }

    /// Pushes `batch` (consecutive records, oldest first, as appended), or nothing
    /// when it is empty.
    pub(crate) async fn push(&self, key: &SessionKey, batch: &[Arc<Push>]) -> Result<Pushed, RedisError> {
        let Some(first) = batch.first() else {
            return Ok(Pushed::AlreadyThere);
        };
        let mut args = Vec::with_capacity(batch.len() + 6);
        args.extend([
            self.ttl_secs(),
            first.record.seq.to_string(),
            self.len.to_string(),
            first.previous.id.clone(),
            first.previous.at.clone(),
            // A batch is queued under one writer lock, cleared by a delete: one incarnation.
            first.first.incarnation(),
        ]);
        args.extend(batch.iter().map(|p| p.line.clone()));
        let code: i64 = self.redis.eval_script(&PUSH, self.keys(key), args).await?;
        Ok(match code {
            1 => Pushed::Extended,
            0 => Pushed::AlreadyThere,
            -2 => Pushed::Deleted,
            _ => Pushed::Gap,
        })
    }

    /// Replaces the window with `tail` (the last records of the file whose first record
    /// is `first`, oldest first; empty for an empty session).
    pub(crate) async fn replace(
        &self,
        key: &SessionKey,
        first: &End,
        tail: &[Record],
    ) -> Result<bool, RedisError> {
        let last_seq = tail.last().map_or(0, |r| r.seq);
        let mut args = Vec::with_capacity(tail.len() + 3);
        args.extend([self.ttl_secs(), last_seq.to_string(), first.incarnation()]);
        args.extend(tail.iter().map(encode));
        let code: i64 = self.redis.eval_script(&REPLACE, self.keys(key), args).await?;
        Ok(code == 1)
    }

    /// The window's last `n` records, oldest first; `None` when an element does not
    /// decode (the window is then treated as cold).
    pub(crate) async fn read(&self, key: &SessionKey, n: u32) -> Result<Option<Vec<Record>>, RedisError> {
        let start = -i64::from(n.max(1));
        let raw: Vec<String> = self.redis.lrange(key.redis_key(&self.prefix), start, -1).await?;
        Ok(raw.iter().map(|r| Record::decode(r.as_bytes())).collect())
    }

    /// Deletes the window; with `incarnation` (the deleted file's, when it had
    /// records), refuses every later write of that incarnation.
    pub(crate) async fn delete(&self, key: &SessionKey, incarnation: Option<&str>) -> Result<(), RedisError> {
        let keep = self.ttl.max(MIN_TOMBSTONE_TTL).as_secs().to_string();
        let args = [Some(keep), incarnation.map(str::to_owned)]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>();
        let _: i64 = self.redis.eval_script(&DELETE, self.keys(key), args).await?;
        Ok(())
    }
}

impl Window {
    /// The window and the tombstone set: one hash tag, so one slot for the scripts.
    fn keys(&self, key: &SessionKey) -> Vec<String> {
        vec![key.redis_key(&self.prefix), key.tombstone_key(&self.prefix)]
    }
}
