//! [`KnowledgeStore`]: the calls, over the resilient [`Redis`] handle.

use std::{
    collections::{BTreeSet, HashSet},
    sync::Arc,
    time::{Duration, SystemTime},
};

use futures_util::future::try_join_all;
use stayfast_core::{
    Error, Name,
    config::ConfigError,
    redis::{Batch, Redis, RedisValue},
};
use uuid::Uuid;

use super::{
    CLUSTER_SHARDS, KnowledgeConfig, KnowledgeHealth, MAX_QUERY_TOKENS,
    fact::{self, Fact},
    index,
    keys::Keys,
    read,
};
use crate::StoreError;

/// Facts in Redis with a word index for AND search. Cheap to clone: clones share the
/// handle. See the [module docs](super) for the key layout and what a failure leaves
/// behind.
///
/// # Examples
///
/// ```no_run
/// use stayfast::knowledge::{KnowledgeConfig, KnowledgeStore};
/// use stayfast::redis::{Redis, RedisConfig};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let redis = Redis::connect(&RedisConfig::default()).await?;
/// let store = KnowledgeStore::new(redis, &KnowledgeConfig::default())?;
/// let id = store.store_fact("The Rhine flows into the North Sea", serde_json::json!({})).await?;
/// let hits = store.search("north RHINE", 10).await?; // every word, any case
/// assert_eq!(hits[0].id, id);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct KnowledgeStore {
    pub(super) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(super) struct Inner {
    pub(super) redis: Redis,
    pub(super) config: KnowledgeConfig,
    pub(super) keys: Keys,
}

impl KnowledgeStore {
    /// A store over `redis`, after checking `config`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field of `config`.
    ///
    /// ```no_run
    /// # use stayfast::knowledge::{KnowledgeConfig, KnowledgeStore};
    /// # use stayfast::redis::{Redis, RedisConfig};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let redis = Redis::connect(&RedisConfig::default()).await?;
    /// let mut config = KnowledgeConfig::default();
    /// config.prefix = "facts{1}".into();
    /// let e = KnowledgeStore::new(redis, &config).unwrap_err();
    /// assert_eq!(e.field(), "prefix"); // braces would break the hash tag
    /// # Ok(()) }
    /// ```
    pub fn new(redis: Redis, config: &KnowledgeConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        // Unset: spread over a cluster's primaries; one tag elsewhere, the layout that
        // single-node data of stayfast 0.1 already has.
        let shards = config
            .shards
            .unwrap_or(if redis.is_cluster() { CLUSTER_SHARDS } else { 1 });
        Ok(Self {
            inner: Arc::new(Inner {
                keys: Keys::new(&config.prefix, shards),
                redis,
                config: config.clone(),
            }),
        })
    }

    /// Stores a fact and indexes its words; returns its new id (a UUID v4).
    ///
    /// At most [`max_indexed_words`](KnowledgeConfig::max_indexed_words) distinct words
    /// are indexed, the first in the text, each at most
    /// [`max_word_bytes`](KnowledgeConfig::max_word_bytes) long: search does not find
    /// the fact by the others.
    ///
    /// Two round trips: `INCR` of the insertion counter (`{<prefix>}:seq`, one for every
    /// shard), then one pipeline to the fact's shard that adds the id to each word's set
    /// and to the shard's id set, and writes the hash last.
    ///
    /// # Errors
    ///
    /// [`StoreError::TooLarge`] when `content` is over `max_content_bytes` or the
    /// metadata's JSON over `max_metadata_bytes`, before any I/O. [`StoreError::Redis`]
    /// otherwise; the pipeline is not retried, so a timeout or a lost connection is
    /// [`Error::OutcomeUnknown`](crate::Error::OutcomeUnknown): the fact may or may not
    /// be stored (possibly without all its index entries), and storing it again creates
    /// a second fact.
    ///
    /// # Cancellation
    ///
    /// Dropping the future before the pipeline is sent stores nothing (a counter value
    /// is skipped, which is harmless); dropping it later leaves the outcome unknown, as
    /// above.
    ///
    /// ```no_run
    /// # use stayfast::knowledge::{KnowledgeConfig, KnowledgeStore};
    /// # use stayfast::redis::{Redis, RedisConfig};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let store = KnowledgeStore::new(Redis::connect(&RedisConfig::default()).await?, &KnowledgeConfig::default())?;
    /// let id = store.store_fact("Água é vida 💧\r\n", serde_json::json!({"lang": "pt"})).await?;
    /// let too_big = "x".repeat(KnowledgeConfig::default().max_content_bytes + 1);
    /// assert!(store.store_fact(too_big, serde_json::json!(null)).await.unwrap_err().is_bad_input());
    /// # Ok(()) }
    /// ```
    pub async fn store_fact(
        &self,
        content: impl Into<String>,
        metadata: serde_json::Value,
    ) -> Result<String, StoreError> {
        let Inner { redis, config, keys } = &*self.inner;
        let content = content.into();
        check_size("content", content.len(), config.max_content_bytes)?;
        let metadata = serde_json::to_string(&metadata).map_err(|source| StoreError::Encode {
            what: "metadata",
            source,
        })?;
        check_size("metadata", metadata.len(), config.max_metadata_bytes)?;
        let id = Uuid::new_v4().hyphenated().to_string();
        let created_at = humantime::format_rfc3339_micros(SystemTime::now()).to_string();
        // The fact, its index entries and its id: one shard, one hash tag.
        let shard = keys.shard_of(&id);
        let index_keys: Vec<String> =
            index::indexed_words(&content, config.max_indexed_words, config.max_word_bytes)
                .iter()
                .map(|w| shard.index(w))
                .collect();

        let seq: u64 = redis.incr(keys.seq.as_str()).await?;
        let member = index::member(seq, &id);
        let fields = [
            (fact::ID, id.clone()),
            (fact::CONTENT, content),
            (fact::METADATA, metadata),
            (fact::CREATED_AT, created_at),
            (fact::SEQ, seq.to_string()),
        ];
        // NOTE: derived entries (index, id set) first, the hash last; `delete_fact` does
        // the reverse. A pipeline cut short thus leaves, at worst, index members without
        // a fact (readers skip them), never a listed fact that search cannot find.
        let mut batch = Batch::new();
        for key in index_keys {
            batch.sadd(key, member.as_str());
        }
        batch
            .sadd(shard.ids.as_str(), id.as_str())
            .hset(shard.fact(&id), fields);
        redis.batch(&batch).await?;
        Ok(id)
    }

    /// The fact `id`, or `None` if there is none.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidInput`] for an id that is not a hyphenated UUID, before any
    /// I/O; [`StoreError::Corrupt`] when the key holds something that is not a fact;
    /// [`StoreError::Redis`] when Redis fails (a read: retried within its bound).
    ///
    /// # Cancellation
    ///
    /// A read: dropping the future has no effect on the store.
    ///
    /// ```no_run
    /// # use stayfast::knowledge::{KnowledgeConfig, KnowledgeStore};
    /// # use stayfast::redis::{Redis, RedisConfig};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let store = KnowledgeStore::new(Redis::connect(&RedisConfig::default()).await?, &KnowledgeConfig::default())?;
    /// assert_eq!(store.get_fact("67e55044-10b1-426f-9247-bb680e5fe0c8").await?, None);
    /// assert!(store.get_fact("../etc/passwd").await.unwrap_err().is_bad_input());
    /// # Ok(()) }
    /// ```
    pub async fn get_fact(&self, id: &str) -> Result<Option<Fact>, StoreError> {
        let id = fact::parse_id(id)?;
        Ok(read::one(&self.inner.redis, &self.inner.keys, &id)
            .await?
            .map(|stored| stored.fact))
    }

    /// Deletes the fact `id` and its index entries; whether it existed.
    ///
    /// Reads the fact first (its words name the index sets to clean), then one pipeline
    /// deletes the hash and removes the id from each word's set and from the id set.
    ///
    /// # Errors
    ///
    /// As [`get_fact`](Self::get_fact) for the read. The pipeline is not retried: a
    /// timeout is [`Error::OutcomeUnknown`](crate::Error::OutcomeUnknown) (deleting
    /// again is safe: it answers `Ok(false)` once the fact is gone).
    ///
    /// # Cancellation
    ///
    /// Dropping the future after the pipeline is sent may still delete the fact.
    ///
    /// ```no_run
    /// # use stayfast::knowledge::{KnowledgeConfig, KnowledgeStore};
    /// # use stayfast::redis::{Redis, RedisConfig};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let store = KnowledgeStore::new(Redis::connect(&RedisConfig::default()).await?, &KnowledgeConfig::default())?;
    /// let id = store.store_fact("temporary", serde_json::json!({})).await?;
    /// assert!(store.delete_fact(&id).await?);
    /// assert!(!store.delete_fact(&id).await?); // already gone
    /// assert!(store.search("temporary", 10).await?.is_empty());
    /// # Ok(()) }
    /// ```
    pub async fn delete_fact(&self, id: &str) -> Result<bool, StoreError> {
        let id = fact::parse_id(id)?;
        let Some(stored) = read::one(&self.inner.redis, &self.inner.keys, &id).await? else {
            return Ok(false);
        };
        let (shard, config) = (self.inner.keys.shard_of(&id), &self.inner.config);
        let member = index::member(stored.seq, &id);
        let content = &stored.fact.content;
        let index_keys: Vec<String> =
            index::indexed_words(content, config.max_indexed_words, config.max_word_bytes)
                .iter()
                .map(|w| shard.index(w))
                .collect();
        let mut batch = Batch::new();
        batch.del(shard.fact(&id));
        for key in index_keys {
            batch.srem(key, member.as_str());
        }
        batch.srem(shard.ids.as_str(), id.as_str());
        let removed = self.inner.redis.batch(&batch).await?;
        // DEL's count decides: of two concurrent deletes, exactly one answers `true`.
        Ok(removed
            .first()
            .and_then(RedisValue::as_integer)
            .is_some_and(|n| n > 0))
    }

    /// Every fact, in insertion order.
    ///
    /// One SCAN with `MATCH {<prefix>#*}:fact:*` (`{<prefix>}:fact:*` with one shard;
    /// the prefix glob-escaped, `scan_count` keys per page; every primary of a cluster),
    /// then pipelined HGETALLs, `scan_count` keys each. Keys are kept only if they sit
    /// in one of the store's shards — the shard of their id — and end in an id (SCAN is
    /// not filtered by ACLs), each id once (SCAN may repeat a key); keys that vanished meanwhile or do
    /// not hold a fact are skipped. A fact present for the whole call is returned exactly
    /// once; one stored or deleted meanwhile may or may not be.
    ///
    /// Everything is read into memory: meant for collections of thousands, not
    /// millions; [`list_facts_limited`](Self::list_facts_limited) reads only the newest.
    ///
    /// # Errors
    ///
    /// [`StoreError::Redis`]: the SCAN as a whole is bounded by `operations.scan` and
    /// retried from the start within it; each pipeline by `operations.pipeline`, not
    /// retried (a read: an `OutcomeUnknown` there only means it timed out).
    ///
    /// # Cancellation
    ///
    /// A read: dropping the future has no effect on the store.
    ///
    /// ```no_run
    /// # use stayfast::knowledge::{KnowledgeConfig, KnowledgeStore};
    /// # use stayfast::redis::{Redis, RedisConfig};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let store = KnowledgeStore::new(Redis::connect(&RedisConfig::default()).await?, &KnowledgeConfig::default())?;
    /// for fact in store.list_facts().await? {
    ///     println!("{} {}", fact.created_at, fact.content);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn list_facts(&self) -> Result<Vec<Fact>, StoreError> {
        let Inner { redis, config, keys } = &*self.inner;
        let ids = self.scan_ids().await?;
        let mut facts = read::many(redis, keys, &ids, config.scan_count as usize).await?;
        facts.sort_unstable_by_key(|stored| stored.seq);
        Ok(facts.into_iter().map(|stored| stored.fact).collect())
    }

    /// The newest `limit` facts, newest first: [`list_facts`](Self::list_facts) with a
    /// bound on what is read and returned.
    ///
    /// The same SCAN, then pipelined `HGET seq` of every fact (a few bytes each) to rank
    /// them, then pipelined HGETALLs of the newest `limit` only: memory and transfer grow
    /// with the number of facts by their ids, not their contents. A fact present for the
    /// whole call and among the newest `limit` is returned exactly once.
    ///
    /// # Errors
    ///
    /// As [`list_facts`](Self::list_facts). `limit == 0` returns nothing without I/O.
    ///
    /// # Cancellation
    ///
    /// A read: dropping the future has no effect on the store.
    ///
    /// ```no_run
    /// # use stayfast::knowledge::{KnowledgeConfig, KnowledgeStore};
    /// # use stayfast::redis::{Redis, RedisConfig};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let store = KnowledgeStore::new(Redis::connect(&RedisConfig::default()).await?, &KnowledgeConfig::default())?;
    /// let latest = store.list_facts_limited(100).await?;
    /// assert!(latest.len() <= 100);
    /// # Ok(()) }
    /// ```
    pub async fn list_facts_limited(&self, limit: usize) -> Result<Vec<Fact>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let Inner { redis, config, keys } = &*self.inner;
        let ids = self.scan_ids().await?;
        let per_pipeline = config.scan_count as usize;
        let mut ranked = read::seqs(redis, keys, &ids, per_pipeline).await?;
        ranked.sort_unstable_by(|a, b| b.cmp(a));
        // Fetch newest first until `limit` facts are found: one gone since is skipped.
        let mut found = Vec::new();
        let mut rest = &ranked[..];
        while found.len() < limit && !rest.is_empty() {
            let take = (limit - found.len()).min(per_pipeline).min(rest.len());
            let (batch, tail) = rest.split_at(take);
            rest = tail;
            let ids: Vec<String> = batch.iter().map(|(_, id)| id.clone()).collect();
            found.extend(read::many(redis, keys, &ids, per_pipeline).await?);
        }
        found.sort_unstable_by_key(|stored| std::cmp::Reverse(stored.seq));
        found.truncate(limit);
        Ok(found.into_iter().map(|stored| stored.fact).collect())
    }

    /// The ids of every fact key SCAN finds, each once.
    async fn scan_ids(&self) -> Result<Vec<String>, StoreError> {
        let Inner { redis, config, keys } = &*self.inner;
        let found = redis
            .scan_keys(&keys.fact_pattern, config.scan_count, usize::MAX)
            .await?;
        let mut seen = HashSet::with_capacity(found.len());
        Ok(found
            .into_iter()
            .filter_map(|key| {
                let id = keys.current_fact_id(&key)?;
                (fact::is_stored_id(id) && seen.insert(id.to_owned())).then(|| id.to_owned())
            })
            .collect())
    }

    /// The newest `limit` facts holding every word of `query`, newest first (with more
    /// matches than `limit`, the oldest are dropped).
    ///
    /// Words are runs of alphanumeric characters (any script), compared lower-cased;
    /// punctuation and spaces separate them (`"well-known"` is `well` and `known`). No
    /// Unicode normalization: `"é"` and `"e\u{301}"` differ. One SINTER of the words'
    /// sets per shard, every shard at once, merged by insertion order (one counter for
    /// every shard: the order a single index would give), then pipelined HGETALLs of
    /// the newest `limit` matches only. The whole search is bounded by
    /// [`search_timeout`](KnowledgeConfig::search_timeout). A word over
    /// [`max_word_bytes`](KnowledgeConfig::max_word_bytes) is never indexed: a query
    /// holding one finds nothing (without I/O).
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidInput`] for more than [`MAX_QUERY_TOKENS`] distinct words,
    /// before any I/O; [`StoreError::Redis`] when Redis fails, with
    /// [`Error::Timeout`](crate::Error::Timeout) of operation `knowledge.search` when
    /// `search_timeout` passes. A query without words, or `limit == 0`, returns nothing
    /// without I/O.
    ///
    /// # Cancellation
    ///
    /// A read: dropping the future has no effect on the store.
    ///
    /// ```no_run
    /// # use stayfast::knowledge::{KnowledgeConfig, KnowledgeStore};
    /// # use stayfast::redis::{Redis, RedisConfig};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let store = KnowledgeStore::new(Redis::connect(&RedisConfig::default()).await?, &KnowledgeConfig::default())?;
    /// store.store_fact("Tokyo (東京) is in Japan", serde_json::json!({})).await?;
    /// assert_eq!(store.search("japan 東京", 5).await?.len(), 1);
    /// assert!(store.search("japan kyoto", 5).await?.is_empty()); // every word must match
    /// assert!(store.search("?!", 5).await?.is_empty()); // no words: nothing
    /// # Ok(()) }
    /// ```
    pub async fn search(&self, query: &str, limit: usize) -> Result<Vec<Fact>, StoreError> {
        let words = index::words(query);
        if words.len() > MAX_QUERY_TOKENS {
            return Err(StoreError::InvalidInput {
                what: "query",
                problem: format!(
                    "{} distinct words, over the limit of {MAX_QUERY_TOKENS}",
                    words.len()
                ),
            });
        }
        let config = &self.inner.config;
        if words.is_empty() || limit == 0 || words.iter().any(|w| w.len() > config.max_word_bytes) {
            return Ok(Vec::new());
        }
        let bound = config.search_timeout;
        match tokio::time::timeout(bound, self.search_shards(&words, limit)).await {
            Ok(found) => found,
            // Only reads were in flight: dropping them changes nothing in Redis.
            Err(_) => Err(StoreError::Redis(Error::Timeout {
                operation: Name::new_static("knowledge.search"),
                after: bound,
            })),
        }
    }

    /// `search`'s I/O: every shard's SINTER at once, merged, then the newest matches.
    async fn search_shards(&self, words: &BTreeSet<String>, limit: usize) -> Result<Vec<Fact>, StoreError> {
        let Inner { redis, config, keys } = &*self.inner;
        // Every shard at once: the slowest shard bounds the search, not their sum.
        let per_shard = keys.shards().iter().map(|shard| async move {
            let index_keys: Vec<String> = words.iter().map(|w| shard.index(w)).collect();
            let members: Vec<String> = redis.sinter(index_keys).await?;
            // A member of a fact that belongs to another shard (left by another shard
            // count, until `migrate_layout`) is not found by `get_fact` either: skipped.
            Ok::<_, StoreError>(
                members
                    .iter()
                    .filter_map(|m| index::parse_member(m))
                    .filter(|(_, id)| fact::is_stored_id(id) && keys.shard_of(id).tag == shard.tag)
                    .map(|(seq, id)| (seq, id.to_owned()))
                    .collect::<Vec<_>>(),
            )
        });
        let mut matches: Vec<(u64, String)> = try_join_all(per_shard).await?.into_iter().flatten().collect();
        // Newest first: a limit drops the oldest matches. The seq is one counter for
        // every shard, so the merged order is the order of a single index.
        matches.sort_unstable_by(|a, b| b.cmp(a));
        // Fetch in rank order until `limit` facts are found: a member whose fact is gone
        // (deleted meanwhile, or a cut-short store) is skipped and the next one taken.
        let mut found = Vec::new();
        let mut rest = &matches[..];
        while found.len() < limit && !rest.is_empty() {
            let take = (limit - found.len())
                .min(config.scan_count as usize)
                .min(rest.len());
            let (batch, tail) = rest.split_at(take);
            rest = tail;
            let ids: Vec<String> = batch.iter().map(|(_, id)| id.clone()).collect();
            found.extend(read::many(redis, keys, &ids, config.scan_count as usize).await?);
        }
        found.sort_unstable_by_key(|stored| std::cmp::Reverse(stored.seq));
        found.truncate(limit);
        Ok(found.into_iter().map(|stored| stored.fact).collect())
    }

    /// How many facts are stored: the `SCARD`s of the shards' id sets, sent at once and
    /// summed (`O(shards)`; a SCAN would cost a full pass over the keyspace, and count
    /// foreign keys too).
    ///
    /// # Errors
    ///
    /// [`StoreError::Redis`], the first shard's error: each SCARD runs under the
    /// handle's `redis.scard` policy (a read, retried within its bound).
    ///
    /// # Cancellation
    ///
    /// A read: dropping the future has no effect on the store.
    ///
    /// ```no_run
    /// # use stayfast::knowledge::{KnowledgeConfig, KnowledgeStore};
    /// # use stayfast::redis::{Redis, RedisConfig};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let store = KnowledgeStore::new(Redis::connect(&RedisConfig::default()).await?, &KnowledgeConfig::default())?;
    /// let before = store.count().await?;
    /// store.store_fact("one more", serde_json::json!({})).await?;
    /// assert_eq!(store.count().await?, before + 1);
    /// # Ok(()) }
    /// ```
    pub async fn count(&self) -> Result<u64, StoreError> {
        let Inner { redis, keys, .. } = &*self.inner;
        let per_shard = keys.shards().iter().map(|shard| redis.scard(shard.ids.as_str()));
        Ok(try_join_all(per_shard).await?.into_iter().sum())
    }

    /// The Redis handle's state, read without I/O: the breaker and the connections.
    ///
    /// Cheap, but it trusts fred's view of its connections, which stays "connected"
    /// until fred notices a loss (through the reconnect delay after a killed server,
    /// indefinitely for a stopped one): use [`check_health`](Self::check_health) for a
    /// health endpoint.
    ///
    /// ```no_run
    /// # use stayfast::knowledge::{KnowledgeConfig, KnowledgeStore};
    /// # use stayfast::redis::{Redis, RedisConfig};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let store = KnowledgeStore::new(Redis::connect(&RedisConfig::default()).await?, &KnowledgeConfig::default())?;
    /// let h = store.health();
    /// assert!(h.connected <= h.pool_size);
    /// # Ok(()) }
    /// ```
    pub fn health(&self) -> KnowledgeHealth {
        KnowledgeHealth::of(&self.inner.redis)
    }

    /// Whether Redis answers: a PING bounded by `timeout` (the service's
    /// `timeouts.redis.connection.health_check`, say), under the handle's `redis.other`
    /// policy (an open breaker refuses it at once). `ok` only if the PING was answered
    /// in time; `ping` is how long it took. Takes `timeout` at most.
    ///
    /// # Cancellation
    ///
    /// Dropping the future abandons the PING; it changes nothing in Redis.
    ///
    /// ```
    /// use std::time::Duration;
    /// # use stayfast::knowledge::{KnowledgeConfig, KnowledgeStore};
    /// # use stayfast::redis::{Redis, RedisConfig};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port(); // closed again
    /// # let mut redis_config = RedisConfig::default();
    /// # redis_config.url = format!("redis://127.0.0.1:{port}");
    /// # redis_config.connect_timeout = Duration::from_millis(50);
    /// # let store = KnowledgeStore::new(Redis::connect(&redis_config).await?, &KnowledgeConfig::default())?;
    /// let started = std::time::Instant::now();
    /// let health = store.check_health(Duration::from_millis(500)).await;
    /// assert!(!health.ok && health.ping.is_none()); // nothing listens there
    /// assert!(started.elapsed() < Duration::from_secs(1));
    /// # Ok(()) }
    /// ```
    pub async fn check_health(&self, timeout: Duration) -> KnowledgeHealth {
        KnowledgeHealth::checked(&self.inner.redis, timeout).await
    }
}

fn check_size(what: &'static str, len: usize, max: usize) -> Result<(), StoreError> {
    if len > max {
        return Err(StoreError::TooLarge { what, len, max });
    }
    Ok(())
}
