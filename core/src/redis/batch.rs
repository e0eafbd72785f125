//! [`Batch`]: commands queued as data and sent in one round trip by
//! [`Redis::batch`], so a caller pipelines without fred's command traits.

use fred::{
    interfaces::{HashesInterface, KeysInterface, SetsInterface},
    types::{Key, Map, Value},
};

use super::{Redis, RedisError, RedisValue, lanes::Lane};

/// Commands to send in one round trip with [`Redis::batch`]: built once, replayed on
/// every attempt. Each method queues one command and returns the batch, for chaining.
///
/// ```
/// use stayfast_core::redis::Batch;
/// let mut batch = Batch::new();
/// batch.sadd("tags", "a").hset("user:1", [("plan", "pro")]).hgetall("user:1");
/// assert_eq!(batch.len(), 3);
/// ```
#[derive(Clone, Debug, Default)]
pub struct Batch {
    queued: Vec<Queued>,
}

#[derive(Clone, Debug)]
enum Queued {
    Sadd(Key, Value),
    Srem(Key, Value),
    Hset(Key, Map),
    Hget(Key, Key),
    Hgetall(Key),
    Del(Key),
}

impl Batch {
    /// An empty batch.
    ///
    /// ```
    /// assert!(stayfast_core::redis::Batch::new().is_empty());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// How many commands are queued.
    ///
    /// ```
    /// let mut b = stayfast_core::redis::Batch::new();
    /// assert_eq!(b.del("k").len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.queued.len()
    }

    /// Whether no command is queued.
    ///
    /// ```
    /// assert!(stayfast_core::redis::Batch::new().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.queued.is_empty()
    }

    /// Queues `SADD key member`.
    ///
    /// ```
    /// let mut b = stayfast_core::redis::Batch::new();
    /// b.sadd("tags", "a").sadd("tags", "b");
    /// ```
    pub fn sadd(&mut self, key: impl Into<Key>, member: impl Into<String>) -> &mut Self {
        self.push(Queued::Sadd(key.into(), Value::from(member.into())))
    }

    /// Queues `SREM key member`.
    ///
    /// ```
    /// let mut b = stayfast_core::redis::Batch::new();
    /// b.srem("tags", "a");
    /// ```
    pub fn srem(&mut self, key: impl Into<Key>, member: impl Into<String>) -> &mut Self {
        self.push(Queued::Srem(key.into(), Value::from(member.into())))
    }

    /// Queues `HSET key field value…`.
    ///
    /// ```
    /// let mut b = stayfast_core::redis::Batch::new();
    /// b.hset("user:1", [("name", "alice"), ("plan", "pro")]);
    /// ```
    pub fn hset<F, V>(&mut self, key: impl Into<Key>, fields: impl IntoIterator<Item = (F, V)>) -> &mut Self
    where
        F: Into<String>,
        V: Into<String>,
    {
        let fields: Map = fields
            .into_iter()
            .map(|(f, v)| (Key::from(f.into()), Value::from(v.into())))
            .collect();
        self.push(Queued::Hset(key.into(), fields))
    }

    /// Queues `HGET key field`.
    ///
    /// ```
    /// let mut b = stayfast_core::redis::Batch::new();
    /// b.hget("user:1", "plan");
    /// ```
    pub fn hget(&mut self, key: impl Into<Key>, field: impl Into<Key>) -> &mut Self {
        self.push(Queued::Hget(key.into(), field.into()))
    }

    /// Queues `HGETALL key`.
    ///
    /// ```
    /// let mut b = stayfast_core::redis::Batch::new();
    /// b.hgetall("user:1");
    /// ```
    pub fn hgetall(&mut self, key: impl Into<Key>) -> &mut Self {
        self.push(Queued::Hgetall(key.into()))
    }

    /// Queues `DEL key`.
    ///
    /// ```
    /// let mut b = stayfast_core::redis::Batch::new();
    /// b.del("user:1");
    /// ```
    pub fn del(&mut self, key: impl Into<Key>) -> &mut Self {
        self.push(Queued::Del(key.into()))
    }

    fn push(&mut self, queued: Queued) -> &mut Self {
        self.queued.push(queued);
        self
    }
}

impl Redis {
    /// Sends every command of `batch` in one round trip, through
    /// [`pipeline`](Self::pipeline) (its policy, its deadline: not idempotent, never
    /// retried), and returns every reply in order.
    ///
    /// # Errors
    ///
    /// As [`pipeline`](Self::pipeline): one command's error reply (a `WRONGTYPE`…)
    /// fails the whole batch, though the commands before it were applied.
    ///
    /// # Cancellation
    ///
    /// As [`pipeline`](Self::pipeline): dropping the future after the batch was
    /// written may leave some or all of its commands applied.
    ///
    /// ```no_run
    /// # use stayfast_core::redis::{Batch, Redis, RedisConfig};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let redis = Redis::connect(&RedisConfig::default()).await?;
    /// let mut batch = Batch::new();
    /// batch.hset("user:1", [("plan", "pro")]).hget("user:1", "plan");
    /// let replies = redis.batch(&batch).await?; // one round trip
    /// assert_eq!(replies[1].as_text(), Some("pro"));
    /// # Ok(()) }
    /// ```
    pub async fn batch(&self, batch: &Batch) -> Result<Vec<RedisValue>, RedisError> {
        // A batch of reads goes to the read connections (see `lanes.rs`).
        let reads_only = batch
            .queued
            .iter()
            .all(|q| matches!(q, Queued::Hget(..) | Queued::Hgetall(..)));
        let lane = if reads_only { Lane::Read } else { Lane::Write };
        self.pipeline_in(lane, |p| async move {
            for queued in &batch.queued {
                let () = match queued.clone() {
                    Queued::Sadd(key, member) => p.sadd(key, member).await?,
                    Queued::Srem(key, member) => p.srem(key, member).await?,
                    Queued::Hset(key, fields) => p.hset(key, fields).await?,
                    Queued::Hget(key, field) => p.hget(key, field).await?,
                    Queued::Hgetall(key) => p.hgetall(key).await?,
                    Queued::Del(key) => p.del(key).await?,
                };
            }
            Ok(p)
        })
        .await
    }
}
