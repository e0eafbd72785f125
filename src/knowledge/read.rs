//! Reading facts back: one, or many in pipelines, skipping what is not a fact.

use std::collections::HashMap;

use stayfast_core::redis::{Batch, Redis, RedisValue};

use super::{
    fact::{self, StoredFact},
    keys::Keys,
};
use crate::StoreError;

/// The fact `id` (already checked), `None` if absent.
pub(super) async fn one(redis: &Redis, keys: &Keys, id: &str) -> Result<Option<StoredFact>, StoreError> {
    let hash: HashMap<String, RedisValue> = match redis.hgetall(keys.fact(id)).await {
        Ok(hash) => hash,
        Err(e) if e.is_wrong_type() => {
            return Err(StoreError::Corrupt {
                what: "fact",
                problem: "its key holds something other than a hash".into(),
            });
        }
        Err(e) => return Err(e.into()),
    };
    if hash.is_empty() {
        return Ok(None);
    }
    StoredFact::decode(id, hash)
        .map(Some)
        .map_err(|problem| StoreError::Corrupt {
            what: "fact",
            problem,
        })
}

/// The facts `ids` (already checked), `per_pipeline` HGETALLs per round trip; absent
/// ones and keys that do not hold a fact are skipped. Order follows `ids`.
pub(super) async fn many(
    redis: &Redis,
    keys: &Keys,
    ids: &[String],
    per_pipeline: usize,
) -> Result<Vec<StoredFact>, StoreError> {
    let mut facts = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(per_pipeline.max(1)) {
        let fact_keys: Vec<String> = chunk.iter().map(|id| keys.fact(id)).collect();
        let mut batch = Batch::new();
        for key in &fact_keys {
            batch.hgetall(key.as_str());
        }
        let read = redis.batch(&batch).await;
        let hashes: Vec<Option<HashMap<String, RedisValue>>> = match read {
            Ok(values) => values.into_iter().map(RedisValue::into_map).collect(),
            // A pipeline stops at its first error: one foreign non-hash key among the
            // fact keys fails the whole chunk. Rare, so that chunk is read key by key.
            Err(e) if e.is_wrong_type() => each(redis, &fact_keys).await?,
            Err(e) => return Err(e.into()),
        };
        for (id, hash) in chunk.iter().zip(hashes) {
            let Some(hash) = hash.filter(|h| !h.is_empty()) else {
                continue; // gone since the SCAN / SINTER, or not a hash
            };
            match StoredFact::decode(id, hash) {
                Ok(stored) => facts.push(stored),
                Err(problem) => tracing::warn!(
                    target: "stayfast::knowledge",
                    %id, %problem, "skipping a key that does not hold a fact"
                ),
            }
        }
    }
    Ok(facts)
}

/// The `(seq, id)` of the facts `ids` (already checked), `per_pipeline` `HGET seq`s
/// per round trip: enough to rank them without reading their contents. Absent ones,
/// and keys that do not hold a fact's `seq`, are skipped.
pub(super) async fn seqs(
    redis: &Redis,
    keys: &Keys,
    ids: &[String],
    per_pipeline: usize,
) -> Result<Vec<(u64, String)>, StoreError> {
    let mut ranked = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(per_pipeline.max(1)) {
        let fact_keys: Vec<String> = chunk.iter().map(|id| keys.fact(id)).collect();
        let mut batch = Batch::new();
        for key in &fact_keys {
            batch.hget(key.as_str(), fact::SEQ);
        }
        let read = redis.batch(&batch).await;
        let values: Vec<Option<RedisValue>> = match read {
            Ok(values) => values.into_iter().map(Some).collect(),
            // As in `many`: a foreign non-hash key fails the chunk; read it key by key.
            Err(e) if e.is_wrong_type() => seq_each(redis, &fact_keys).await?,
            Err(e) => return Err(e.into()),
        };
        for (id, value) in chunk.iter().zip(values) {
            let seq = value
                .as_ref()
                .and_then(RedisValue::as_text)
                .and_then(|text| text.parse().ok());
            if let Some(seq) = seq {
                ranked.push((seq, id.clone()));
            }
        }
    }
    Ok(ranked)
}

/// `HGET seq` of each key; `None` for a key holding another type.
async fn seq_each(redis: &Redis, fact_keys: &[String]) -> Result<Vec<Option<RedisValue>>, StoreError> {
    let mut values = Vec::with_capacity(fact_keys.len());
    for key in fact_keys {
        match redis.hget(key.as_str(), fact::SEQ).await {
            Ok(value) => values.push(Some(value)),
            Err(e) if e.is_wrong_type() => values.push(None),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(values)
}

/// HGETALL of each key; `None` for a key holding another type.
async fn each(
    redis: &Redis,
    fact_keys: &[String],
) -> Result<Vec<Option<HashMap<String, RedisValue>>>, StoreError> {
    let mut hashes = Vec::with_capacity(fact_keys.len());
    for key in fact_keys {
        match redis.hgetall(key.as_str()).await {
            Ok(hash) => hashes.push(Some(hash)),
            Err(e) if e.is_wrong_type() => hashes.push(None),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(hashes)
}
