//! [`KnowledgeStore::migrate_layout`]: moving facts of another layout (the single tag
//! `{<prefix>}` of old, or another shard count) into the shard of their id.

use std::collections::{HashMap, HashSet};

use futures_util::{StreamExt, stream};
use stayfast_core::redis::{Batch, RedisValue};

use super::{
    KnowledgeStore,
    fact::{self, StoredFact},
    index,
    keys::Shard,
};
use crate::StoreError;

/// Facts moved concurrently by a migration.
const MOVES_AT_ONCE: usize = 16;

/// What [`KnowledgeStore::migrate_layout`] did.
///
/// ```
/// let nothing = stayfast::knowledge::LayoutMigration::default();
/// assert_eq!((nothing.moved, nothing.skipped, nothing.removed), (0, 0, 0));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LayoutMigration {
    /// Facts moved into the shard of their id, with their index entries.
    pub moved: u64,
    /// Keys named like a fact of another layout that hold no fact (corrupt, or gone
    /// meanwhile): left where they are.
    pub skipped: u64,
    /// Index and id sets of tags the store no longer uses, deleted.
    pub removed: u64,
}

impl KnowledgeStore {
    /// Moves every fact this store does not find where it looks — facts of the
    /// single-tag layout `{<prefix>}:…` of stayfast 0.1 when
    /// [`shards`](super::KnowledgeConfig::shards) is above 1, or of another shard count
    /// — into the shard of its id, then deletes the index and id sets of the tags no
    /// longer used. Run it once after upgrading, and after changing `shards`, once
    /// every writer runs the new configuration; until it has run, those facts are not
    /// found (not by `get_fact`, `search`, `list_facts` nor `count`).
    ///
    /// Idempotent and resumable: a fact is written to its shard (index entries, id,
    /// hash: the order of `store_fact`) before it is removed from where it was, so an
    /// interrupted run leaves at worst a fact in both places — readers see only its
    /// shard — and the next run finishes the move; a run with nothing left to move
    /// moves nothing. It keeps each fact's id, content, metadata, `created_at` and
    /// insertion sequence (the counter `{<prefix>}:seq` is shared by every layout), so
    /// the order of search and list is unchanged.
    ///
    /// One SCAN of every key starting with `{<prefix>` (every primary of a cluster),
    /// then per fact an HGETALL and two pipelines, 16 facts at a time: meant to run
    /// once, not per request.
    /// Keys of other stores are never touched.
    ///
    /// # Errors
    ///
    /// [`StoreError::Redis`] when Redis fails; the facts moved so far stay moved, and
    /// running it again resumes.
    ///
    /// # Cancellation
    ///
    /// Dropping the future stops the migration: up to 16 facts being moved may be left
    /// in both places (their shard's copy is the one read); run it again to finish.
    ///
    /// ```no_run
    /// # use stayfast::knowledge::{KnowledgeConfig, KnowledgeStore};
    /// # use stayfast::redis::{Redis, RedisConfig};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let redis = Redis::connect(&RedisConfig::default()).await?;
    /// let store = KnowledgeStore::new(redis, &KnowledgeConfig::default())?; // 16 shards
    /// let done = store.migrate_layout().await?; // the facts of `{kb}:…` move to `{kb#…}:…`
    /// println!("{} facts moved, {} stale sets removed", done.moved, done.removed);
    /// assert_eq!(store.migrate_layout().await?.moved, 0); // nothing left to move
    /// # Ok(()) }
    /// ```
    pub async fn migrate_layout(&self) -> Result<LayoutMigration, StoreError> {
        let (redis, config, keys) = (&self.inner.redis, &self.inner.config, &self.inner.keys);
        let found = redis
            .scan_keys(&keys.any_layout_pattern(), config.scan_count, usize::MAX)
            .await?;
        let mut misplaced: Vec<(String, String)> = Vec::new();
        let mut obsolete = Vec::new();
        let mut seen = HashSet::with_capacity(found.len());
        for key in &found {
            // SCAN may repeat a key; the pattern also matches other stores' keys.
            let Some((tag, rest)) = keys.parse(key).filter(|_| seen.insert(key.as_str())) else {
                continue;
            };
            if let Some(id) = rest.strip_prefix(":fact:") {
                if fact::is_stored_id(id) && keys.shard_of(id).tag != tag {
                    misplaced.push((tag.to_owned(), id.to_owned()));
                }
            } else if !keys.is_current(tag) && (rest.starts_with(":idx:") || rest == ":ids") {
                // Never `{<prefix>}:seq`: the counter of every layout.
                obsolete.push(key.clone());
            }
        }
        let mut report = LayoutMigration::default();
        // A few facts at a time: each move is three round trips, to (mostly) other
        // primaries; one at a time took about 1 ms per fact on loopback.
        let mut moves = stream::iter(misplaced)
            .map(|(tag, id)| async move { self.move_fact(&Shard::new(tag), &id).await })
            .buffer_unordered(MOVES_AT_ONCE);
        while let Some(moved) = moves.next().await {
            if moved? {
                report.moved += 1;
            } else {
                report.skipped += 1;
            }
        }
        drop(moves);
        // Derived sets of unused tags: their facts are gone now, so their members only
        // name facts that live elsewhere (or nowhere).
        for chunk in obsolete.chunks(config.scan_count.max(1) as usize) {
            let mut batch = Batch::new();
            for key in chunk {
                batch.del(key.as_str());
            }
            let replies = redis.batch(&batch).await?;
            report.removed += replies
                .iter()
                .filter_map(RedisValue::as_integer)
                .map(|n| n.max(0).unsigned_abs())
                .sum::<u64>();
        }
        Ok(report)
    }

    /// Moves the fact `id` from `source` to its shard; `false` when `source` holds no
    /// fact there (gone meanwhile, or corrupt: left alone).
    async fn move_fact(&self, source: &Shard, id: &str) -> Result<bool, StoreError> {
        let (redis, config, keys) = (&self.inner.redis, &self.inner.config, &self.inner.keys);
        let hash: HashMap<String, RedisValue> = match redis.hgetall(source.fact(id)).await {
            Ok(hash) => hash,
            Err(e) if e.is_wrong_type() => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        if hash.is_empty() {
            return Ok(false); // moved or deleted meanwhile
        }
        // The fields as stored, byte for byte (metadata is not re-serialized).
        let fields: Vec<(String, String)> = hash
            .iter()
            .filter_map(|(field, value)| {
                let text = String::from_utf8(value.as_bytes()?.to_vec()).ok()?;
                Some((field.clone(), text))
            })
            .collect();
        let stored = match StoredFact::decode(id, hash) {
            Ok(stored) => stored,
            Err(problem) => {
                tracing::warn!(
                    target: "stayfast::knowledge",
                    %id, %problem, "not moving a key that does not hold a fact"
                );
                return Ok(false);
            }
        };
        let words = index::indexed_words(
            &stored.fact.content,
            config.max_indexed_words,
            config.max_word_bytes,
        );
        let member = index::member(stored.seq, id);
        let target = keys.shard_of(id);
        // As `store_fact`: derived entries first, the hash last.
        let mut write = Batch::new();
        for word in &words {
            write.sadd(target.index(word), member.as_str());
        }
        write.sadd(target.ids.as_str(), id).hset(target.fact(id), fields);
        redis.batch(&write).await?;
        // As `delete_fact`: the hash first. Cut short here, the fact is in both places
        // (readers see its shard's copy) and the next run removes this one.
        let mut clear = Batch::new();
        clear.del(source.fact(id));
        for word in &words {
            clear.srem(source.index(word), member.as_str());
        }
        clear.srem(source.ids.as_str(), id);
        redis.batch(&clear).await?;
        Ok(true)
    }
}
