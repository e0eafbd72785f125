//! The session's recent window in Redis: a list of JSON records, oldest first, trimmed
//! to `cache_messages`, with a TTL. Both writes are Lua scripts, so each is atomic and
//! decided on the server by the records' seqs: a late or repeated write can never put
//! an older record after a newer one.

use std::{sync::Arc, time::Duration};

use stayfast_core::{
    CallMetrics,
    redis::{Redis, RedisError},
};

use super::{pushes::Push, record::Record};

/// Appends a batch of consecutive records (ARGV[6..], oldest first, the first of seq
/// ARGV[2]) if it extends the window right after the record the first was appended
/// after (same seq, id and timestamp: ARGV[4], ARGV[5]).
///
/// Returns 1 when pushed, 0 when the window already reaches the batch's last seq (a
/// repeated push), -1 when it would leave a gap (an earlier push failed or the window
/// is cold), overlap part of the batch (a repopulation raced it), or follow a record
/// that is not the first one's predecessor (a deleted session's, left by a late
/// write): the window is then left alone, and must be repopulated from the file.
const PUSH: &str = r"
local first = tonumber(ARGV[2])
local newest = first + #ARGV - 6
local last = redis.call('LINDEX', KEYS[1], -1)
if last then
  local ok, rec = pcall(cjson.decode, last)
  if not ok or type(rec) ~= 'table' or type(rec.seq) ~= 'number' then return -1 end
  if rec.seq >= newest then return 0 end
  if rec.seq ~= first - 1 or rec.id ~= ARGV[4] or rec.at ~= ARGV[5] then return -1 end
elseif first ~= 1 then
  return -1
end
redis.call('RPUSH', KEYS[1], unpack(ARGV, 6))
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[3]), -1)
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
";

/// Replaces the window with the file's tail, unless the window already ends at a
/// newer seq (a push that raced this repopulation won): never replaces newer records
/// with older ones. Returns 1 when replaced, 0 when left alone.
const REPLACE: &str = r"
local last = redis.call('LINDEX', KEYS[1], -1)
if last then
  local ok, rec = pcall(cjson.decode, last)
  if ok and type(rec) == 'table' and type(rec.seq) == 'number' and rec.seq > tonumber(ARGV[2]) then
    return 0
  end
end
redis.call('DEL', KEYS[1])
if #ARGV > 2 then
  redis.call('RPUSH', KEYS[1], unpack(ARGV, 3))
  redis.call('EXPIRE', KEYS[1], ARGV[1])
end
return 1
";

/// `record`'s JSON line, as a Redis argument.
fn encode(record: &Record) -> String {
    String::from_utf8_lossy(&record.encode()).into_owned()
}

/// What a push did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// The window now ends with the record.
    Extended,
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
}

impl Window {
    fn ttl_secs(&self) -> String {
        self.ttl.as_secs().max(1).to_string()
    }

    /// Pushes `batch` (consecutive records, oldest first, as appended), or nothing
    /// when it is empty.
    pub(crate) async fn push(&self, key: &str, batch: &[Arc<Push>]) -> Result<Pushed, RedisError> {
        let Some(first) = batch.first() else {
            return Ok(Pushed::AlreadyThere);
        };
        let mut args = Vec::with_capacity(batch.len() + 5);
        args.extend([
            self.ttl_secs(),
            first.record.seq.to_string(),
            self.len.to_string(),
            first.previous.id.clone(),
            first.previous.at.clone(),
        ]);
        args.extend(batch.iter().map(|p| encode(&p.record)));
        let code: i64 = self.redis.eval(PUSH, vec![key.to_owned()], args).await?;
        Ok(match code {
            1 => Pushed::Extended,
            0 => Pushed::AlreadyThere,
            _ => Pushed::Gap,
        })
    }

    /// Replaces the window with `tail` (the file's last records, oldest first), which
    /// ends at `last_seq` (0 for an empty session).
    pub(crate) async fn replace(
        &self,
        key: &str,
        last_seq: u64,
        tail: &[Record],
    ) -> Result<bool, RedisError> {
        let mut args = Vec::with_capacity(tail.len() + 2);
        args.push(self.ttl_secs());
        args.push(last_seq.to_string());
        args.extend(tail.iter().map(encode));
        let code: i64 = self.redis.eval(REPLACE, vec![key.to_owned()], args).await?;
        Ok(code == 1)
    }

    /// The window's last `n` records, oldest first; `None` when an element does not
    /// decode (the window is then treated as cold).
    pub(crate) async fn read(&self, key: &str, n: u32) -> Result<Option<Vec<Record>>, RedisError> {
        let start = -i64::from(n.max(1));
        let raw: Vec<String> = self.redis.lrange(key, start, -1).await?;
        Ok(raw.iter().map(|r| Record::decode(r.as_bytes())).collect())
    }

    pub(crate) async fn delete(&self, key: &str) -> Result<(), RedisError> {
        self.redis.del(key).await.map(drop)
    }
}
