//! Reading facts back: one, or many in pipelines, skipping what is not a fact.

use std::collections::HashMap;

use stayfast_core::redis::{
    Command, Redis, RedisError,
    fred::{error::ErrorKind, interfaces::HashesInterface, types::Value},
};

use super::{
    fact::{self, StoredFact},
    keys::Keys,
};
use crate::StoreError;

/// The fact `id` (already checked), `None` if absent.
pub(super) async fn one(redis: &Redis, keys: &Keys, id: &str) -> Result<Option<StoredFact>, StoreError> {
    let hash: HashMap<String, Value> = match redis.hgetall(keys.fact(id)).await {
        Ok(hash) => hash,
        Err(e) if is_wrong_type(&e) => {
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
        let read: Result<Vec<Value>, _> = redis
            .pipeline(|p| {
                let fact_keys = fact_keys.clone();
                async move {
                    for key in fact_keys {
                        let () = p.hgetall(key).await?;
                    }
                    Ok(p)
                }
            })
            .await;
        let hashes: Vec<Option<HashMap<String, Value>>> = match read {
            Ok(values) => values.into_iter().map(|v| v.convert().ok()).collect(),
            // A pipeline stops at its first error: one foreign non-hash key among the
            // fact keys fails the whole chunk. Rare, so that chunk is read key by key.
            Err(e) if is_wrong_type(&e) => each(redis, &fact_keys).await?,
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
        let read: Result<Vec<Value>, _> = redis
            .pipeline(|p| {
                let fact_keys = fact_keys.clone();
                async move {
                    for key in fact_keys {
                        let () = p.hget(key, fact::SEQ).await?;
                    }
                    Ok(p)
                }
            })
            .await;
        let values: Vec<Option<Value>> = match read {
            Ok(values) => values.into_iter().map(Some).collect(),
            // As in `many`: a foreign non-hash key fails the chunk; read it key by key.
            Err(e) if is_wrong_type(&e) => seq_each(redis, &fact_keys).await?,
            Err(e) => return Err(e.into()),
        };
        for (id, value) in chunk.iter().zip(values) {
            let seq = value
                .and_then(|v| v.as_bytes().map(<[u8]>::to_vec))
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .and_then(|text| text.parse().ok());
            if let Some(seq) = seq {
                ranked.push((seq, id.clone()));
            }
        }
    }
    Ok(ranked)
}

/// `HGET seq` of each key; `None` for a key holding another type.
async fn seq_each(redis: &Redis, fact_keys: &[String]) -> Result<Vec<Option<Value>>, StoreError> {
    let mut values = Vec::with_capacity(fact_keys.len());
    for key in fact_keys {
        let key = key.clone();
        let read = redis
            .run(Command::Other, |c| {
                let key = key.clone();
                async move { c.hget::<Value, _, _>(key, fact::SEQ).await }
            })
            .await;
        match read {
            Ok(value) => values.push(Some(value)),
            Err(e) if is_wrong_type(&e) => values.push(None),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(values)
}

/// HGETALL of each key; `None` for a key holding another type.
async fn each(
    redis: &Redis,
    fact_keys: &[String],
) -> Result<Vec<Option<HashMap<String, Value>>>, StoreError> {
    let mut hashes = Vec::with_capacity(fact_keys.len());
    for key in fact_keys {
        match redis.hgetall(key.as_str()).await {
            Ok(hash) => hashes.push(Some(hash)),
            Err(e) if is_wrong_type(&e) => hashes.push(None),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(hashes)
}

/// A `WRONGTYPE` reply: the key exists but holds another type (not the store's).
fn is_wrong_type(e: &RedisError) -> bool {
    e.inner()
        .is_some_and(|f| *f.kind() == ErrorKind::InvalidArgument && f.details().starts_with("WRONGTYPE"))
}
