//! `KnowledgeStore`: facts in Redis, with a word index for AND search.
//!
//! # Keys
//!
//! The facts are spread over [`shards`](KnowledgeConfig::shards) hash tags (by default
//! 16 on a Redis Cluster and 1 elsewhere), so a Redis Cluster spreads them over its
//! primaries. A fact lives in the
//! shard of a stable hash of its id (FNV-1a of the id, modulo the shard count), with
//! its index entries and its id, so every multi-key command (a shard's SINTER) stays in
//! one cluster slot. Shard `i`'s tag is `<prefix>#<salt>`, the first salt whose slot
//! lies in the `i`-th of `shards` equal ranges of the 16,384 slots: the shards spread
//! evenly over primaries that serve even, contiguous slot ranges. With `shards = 1` the
//! one tag is `{<prefix>}`, the layout of stayfast 0.1.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `{<tag>}:fact:<id>` | hash | `id`, `content`, `metadata` (JSON text), `created_at` (RFC 3339), `seq` |
//! | `{<tag>}:idx:<word>` | set | `<seq>:<id>` of every fact of the shard containing the word |
//! | `{<tag>}:ids` | set | every id stored in the shard (`count` sums their SCARDs) |
//! | `{<prefix>}:seq` | string | the insertion counter (INCR), one for every shard |
//!
//! [`search`](KnowledgeStore::search) sends every shard's SINTER at once and merges
//! them under one deadline ([`search_timeout`](KnowledgeConfig::search_timeout));
//! [`list_facts`](KnowledgeStore::list_facts) scans every primary. Facts stored under
//! another layout (the single tag of old, another shard count) are not found until
//! [`migrate_layout`](KnowledgeStore::migrate_layout) moves them.
//!
//! # Ranking
//!
//! Facts are ranked by insertion order — [`list_facts`](KnowledgeStore::list_facts) oldest
//! first, [`search`](KnowledgeStore::search) and
//! [`list_facts_limited`](KnowledgeStore::list_facts_limited) newest first, so a limit
//! drops the oldest — by a sequence number from `INCR` rather than by `created_at`: the counter is one total order shared by every process
//! writing to the store, while clocks of different hosts disagree, and one host's clock
//! can step back. It costs one round trip per stored fact. The index members carry the
//! number (`<seq>:<id>`), so a search ranks its matches before reading any of them.
//!
//! # What a failure leaves behind
//!
//! A fact is written by a plain pipeline — not MULTI nor a Lua script, which an ACL
//! user limited to `+@read +@write +@keyspace` could not run. Derived entries go first
//! and the hash last on store, the hash first on delete. A pipeline cut short (a
//! connection lost mid-write; the caller sees `OutcomeUnknown`) can therefore leave
//! index members or an id without a fact — search and list skip them, `count` may count
//! such an id — but never a fact that is listed yet missing from the index.
//!
//! # Examples
//!
//! ```no_run
//! use stayfast::knowledge::{KnowledgeConfig, KnowledgeStore};
//! use stayfast::redis::{Redis, RedisConfig};
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let redis = Redis::connect(&RedisConfig::default()).await?;
//! let store = KnowledgeStore::new(redis, &KnowledgeConfig::default())?;
//! let id = store.store_fact("Water boils at 100 °C at sea level", serde_json::json!({"src": "physics"})).await?;
//! assert_eq!(store.search("WATER sea", 10).await?[0].id, id);
//! assert!(store.delete_fact(&id).await?);
//! # Ok(()) }
//! ```

mod fact;
mod glob;
mod health;
mod index;
mod keys;
mod migrate;
mod read;
mod store;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use stayfast_core::config::{ConfigError, duration};

pub use self::{
    fact::Fact, glob::glob_escape, health::KnowledgeHealth, migrate::LayoutMigration, store::KnowledgeStore,
};

/// The most distinct words a [`KnowledgeStore::search`] query may hold: each is one key
/// of the SINTER.
///
/// ```
/// let words: Vec<String> = (0..=stayfast::knowledge::MAX_QUERY_TOKENS).map(|i| format!("w{i}")).collect();
/// assert_eq!(words.len(), 33); // one too many: `search` refuses it before any I/O
/// ```
pub const MAX_QUERY_TOKENS: usize = 32;

/// The `[knowledge]` settings.
///
/// ```
/// let c: stayfast::knowledge::KnowledgeConfig = toml::from_str(r#"prefix = "facts""#).unwrap();
/// assert_eq!(c.prefix, "facts");
/// assert_eq!((c.max_indexed_words, c.max_word_bytes), (256, 64)); // the defaults
/// assert_eq!((c.shards, c.search_timeout), (None, std::time::Duration::from_secs(2)));
/// assert!(c.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct KnowledgeConfig {
    /// Namespace of every key, and the start of their hash tags: `{<prefix>#<salt>}:fact:<id>`,
    /// `{<prefix>#<salt>}:idx:<token>` (see the [module docs](self)). Neither `{`, `}`
    /// nor `#`.
    pub prefix: String,
    /// Largest accepted `content`, in bytes (checked before any I/O).
    pub max_content_bytes: usize,
    /// Largest accepted `metadata`, in bytes of its JSON.
    pub max_metadata_bytes: usize,
    /// `COUNT` hint of each SCAN page.
    pub scan_count: u32,
    /// Most distinct words of a fact that are indexed, the first ones in the text: a
    /// fact's store (and delete) writes one index entry per word, and a 64 KiB fact can
    /// hold ten thousand. Words past the cap are not indexed: search does not find the
    /// fact by them. The default, 256, indexes the whole of an ordinary fact of a page
    /// or two (prose of 1–2 KB holds fewer distinct words) and bounds a large one to one
    /// pipeline of 258 commands. Changing it later leaves facts stored before indexed by
    /// the old cap (delete removes the entries the current cap names; search skips the
    /// others once their fact is gone). At most 65 536.
    pub max_indexed_words: usize,
    /// Longest word indexed, in bytes of its lower-case UTF-8 form: longer runs of
    /// letters and digits (hashes, base64, an unspaced CJK sentence of over 21
    /// characters) are not indexed, and a query holding one finds nothing. The default,
    /// 64, is well above the longest words of natural languages (German compounds
    /// rarely reach 40 letters). At most 1024.
    pub max_word_bytes: usize,
    /// How many hash tags (shards) hold the facts and their index, 1 to 256: a fact
    /// lives in the shard of a stable hash of its id, with its index entries, so a
    /// Redis Cluster spreads the store over its primaries (one tag would put it all on
    /// one). The tags spread evenly over the 16,384 slots. Search asks every shard at
    /// once and merges. Unset (the default): [`CLUSTER_SHARDS`] (16, enough for
    /// clusters of up to about 8 primaries) on a Redis Cluster, and 1 on one node or a
    /// sentinel deployment — the single-tag layout `{<prefix>}` of stayfast 0.1, so
    /// existing single-node data needs no migration. Changing it (or upgrading data of the single-tag layout) leaves
    /// facts where the new count does not look for them until
    /// [`KnowledgeStore::migrate_layout`] moves them (meanwhile `count` may still
    /// count some of them, and the others are not found).
    pub shards: Option<u16>,
    /// The bound of one [`KnowledgeStore::search`] as a whole: every shard's SINTER
    /// (sent at once) and the reads of the matches.
    #[serde(with = "duration")]
    pub search_timeout: Duration,
}

/// The most shards a store may have ([`KnowledgeConfig::shards`]).
///
/// ```
/// let mut c = stayfast::knowledge::KnowledgeConfig::default();
/// c.shards = Some(stayfast::knowledge::MAX_SHARDS);
/// assert!(c.validate().is_ok());
/// c.shards = Some(stayfast::knowledge::MAX_SHARDS + 1);
/// assert_eq!(c.validate().unwrap_err().field(), "shards");
/// ```
pub const MAX_SHARDS: u16 = 256;

/// The shards of a store on a Redis Cluster when [`KnowledgeConfig::shards`] is unset.
///
/// ```
/// assert_eq!(stayfast::knowledge::CLUSTER_SHARDS, 16);
/// ```
pub const CLUSTER_SHARDS: u16 = 16;

impl Default for KnowledgeConfig {
    fn default() -> Self {
        Self {
            prefix: "kb".into(),
            max_content_bytes: 64 * 1024,
            max_metadata_bytes: 16 * 1024,
            scan_count: 500,
            max_indexed_words: 256,
            max_word_bytes: 64,
            shards: None,
            search_timeout: Duration::from_secs(2),
        }
    }
}

impl KnowledgeConfig {
    /// Checks every field.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field.
    ///
    /// ```
    /// let mut c = stayfast::knowledge::KnowledgeConfig::default();
    /// c.prefix = "a{b".into();
    /// assert_eq!(c.validate().unwrap_err().field(), "prefix");
    ///
    /// let mut c = stayfast::knowledge::KnowledgeConfig::default();
    /// c.max_indexed_words = 0;
    /// assert_eq!(c.validate().unwrap_err().field(), "max_indexed_words");
    ///
    /// let mut c = stayfast::knowledge::KnowledgeConfig::default();
    /// c.shards = Some(0);
    /// assert_eq!(c.validate().unwrap_err().field(), "shards");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.prefix.is_empty() || self.prefix.len() > 64 {
            return Err(ConfigError::new("prefix", "must be 1 to 64 bytes"));
        }
        if self.prefix.contains(['{', '}']) {
            return Err(ConfigError::new(
                "prefix",
                "must not contain `{` or `}` (it is the hash tag)",
            ));
        }
        if self.prefix.contains('#') {
            return Err(ConfigError::new(
                "prefix",
                "must not contain `#` (it separates the prefix from a shard's salt)",
            ));
        }
        if let Some(shards) = self.shards
            && !(1..=MAX_SHARDS).contains(&shards)
        {
            return Err(ConfigError::new("shards", format!("must be 1 to {MAX_SHARDS}")));
        }
        if self.search_timeout.is_zero() {
            return Err(ConfigError::new("search_timeout", "must be above zero"));
        }
        if self.max_content_bytes == 0 {
            return Err(ConfigError::new("max_content_bytes", "must be at least 1"));
        }
        if self.max_metadata_bytes == 0 {
            return Err(ConfigError::new("max_metadata_bytes", "must be at least 1"));
        }
        if self.scan_count == 0 {
            return Err(ConfigError::new("scan_count", "must be at least 1"));
        }
        if !(1..=65_536).contains(&self.max_indexed_words) {
            return Err(ConfigError::new("max_indexed_words", "must be 1 to 65536"));
        }
        if !(1..=1024).contains(&self.max_word_bytes) {
            return Err(ConfigError::new("max_word_bytes", "must be 1 to 1024"));
        }
        Ok(())
    }
}
