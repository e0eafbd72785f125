//! [`Fact`], and how it is laid out in its Redis hash.

use std::collections::HashMap;

use serde::Serialize;
use stayfast_core::redis::RedisValue;
use uuid::Uuid;

use crate::StoreError;

/// One stored fact, as [`KnowledgeStore`](super::KnowledgeStore) returns it.
///
/// # Examples
///
/// ```no_run
/// # use stayfast::knowledge::{KnowledgeConfig, KnowledgeStore};
/// # use stayfast::redis::{Redis, RedisConfig};
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let redis = Redis::connect(&RedisConfig::default()).await?;
/// # let store = KnowledgeStore::new(redis, &KnowledgeConfig::default())?;
/// let id = store.store_fact("Paris is the capital of France", serde_json::json!({"src": "atlas"})).await?;
/// let fact = store.get_fact(&id).await?.expect("just stored");
/// assert_eq!((fact.id.as_str(), fact.metadata["src"].as_str()), (id.as_str(), Some("atlas")));
/// println!("stored at {}", fact.created_at); // RFC 3339, e.g. 2026-01-02T03:04:05.123456Z
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Fact {
    /// Its id: a UUID v4, lower-case and hyphenated.
    pub id: String,
    /// The text, byte for byte as stored.
    pub content: String,
    /// The JSON metadata given when it was stored.
    pub metadata: serde_json::Value,
    /// When it was stored, RFC 3339 in UTC with microseconds (the storing host's clock).
    pub created_at: String,
}

/// The hash's field names.
pub(crate) const CONTENT: &str = "content";
pub(crate) const METADATA: &str = "metadata";
pub(crate) const CREATED_AT: &str = "created_at";
pub(crate) const ID: &str = "id";
/// The insertion sequence (from `INCR {<prefix>}:seq`): the rank in search and list.
pub(crate) const SEQ: &str = "seq";

/// Checks a caller's fact id and returns it in the form keys use (lower-case,
/// hyphenated), before any I/O.
pub(crate) fn parse_id(id: &str) -> Result<String, StoreError> {
    let invalid = || StoreError::InvalidInput {
        what: "fact id",
        problem: "expected a hyphenated UUID like 67e55044-10b1-426f-9247-bb680e5fe0c8".into(),
    };
    // `Uuid::try_parse` also takes the simple, braced and URN forms; only the form the
    // store hands out is accepted, so one fact has one id.
    if id.len() != 36 {
        return Err(invalid());
    }
    let uuid = Uuid::try_parse(id).map_err(|_| invalid())?;
    Ok(uuid.hyphenated().to_string())
}

/// Whether a key's tail is an id exactly as the store writes it.
pub(crate) fn is_stored_id(text: &str) -> bool {
    parse_id(text).is_ok_and(|id| id == text)
}

/// A fact read back from its hash, with its insertion sequence.
#[derive(Debug)]
pub(crate) struct StoredFact {
    pub(crate) seq: u64,
    pub(crate) fact: Fact,
}

impl StoredFact {
    /// Decodes the hash of the fact `id`; an error names what is wrong, never the content.
    pub(crate) fn decode(id: &str, mut hash: HashMap<String, RedisValue>) -> Result<Self, String> {
        let mut text = |field: &'static str| -> Result<String, String> {
            let value = hash
                .remove(field)
                .ok_or_else(|| format!("field `{field}` is missing"))?;
            let bytes = value
                .as_bytes()
                .ok_or_else(|| format!("field `{field}` is not a string"))?;
            String::from_utf8(bytes.to_vec()).map_err(|_| format!("field `{field}` is not UTF-8"))
        };
        let stored_id = text(ID)?;
        if stored_id != id {
            return Err("field `id` does not match the key".into());
        }
        let content = text(CONTENT)?;
        let metadata = serde_json::from_str(&text(METADATA)?)
            .map_err(|e| format!("field `metadata` is not JSON ({e})"))?;
        let created_at = text(CREATED_AT)?;
        let seq = text(SEQ)?
            .parse()
            .map_err(|_| "field `seq` is not an unsigned integer".to_owned())?;
        Ok(Self {
            seq,
            fact: Fact {
                id: stored_id,
                content,
                metadata,
                created_at,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ids_are_checked_and_normalized() {
        let id = "67E55044-10B1-426F-9247-BB680E5FE0C8";
        assert_eq!(parse_id(id).unwrap(), id.to_lowercase());
        assert!(is_stored_id(&id.to_lowercase()));
        assert!(!is_stored_id(id));
        for bad in [
            "",
            "junk",
            "67e5504410b1426f9247bb680e5fe0c8",
            "{67e55044-10b1-426f-9247-bb680e5fe0c}",
            "67e55044-10b1-426f-9247-bb680e5fe0cg",
            "../../../../../../../../etc/passwd00",
        ] {
            let e = parse_id(bad).unwrap_err();
            assert!(e.is_bad_input(), "{bad}");
        }
    }

    #[test]
    fn decode_names_the_bad_field() {
        let id = "67e55044-10b1-426f-9247-bb680e5fe0c8";
        let hash = |pairs: &[(&str, &str)]| -> HashMap<String, RedisValue> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), RedisValue::from(*v)))
                .collect()
        };
        let good = [
            (ID, id),
            (CONTENT, "a\0b"),
            (METADATA, r#"{"k":1}"#),
            (CREATED_AT, "2026-01-01T00:00:00.000000Z"),
            (SEQ, "7"),
        ];
        let s = StoredFact::decode(id, hash(&good)).unwrap();
        assert_eq!((s.seq, s.fact.content.as_str()), (7, "a\0b"));
        let e = StoredFact::decode(id, hash(&good[1..])).unwrap_err();
        assert_eq!(e, "field `id` is missing");
        let mut bad = good;
        bad[2] = (METADATA, "{");
        assert!(
            StoredFact::decode(id, hash(&bad))
                .unwrap_err()
                .contains("metadata")
        );
        bad = good;
        bad[4] = (SEQ, "-1");
        assert!(StoredFact::decode(id, hash(&bad)).unwrap_err().contains("seq"));
    }
}
