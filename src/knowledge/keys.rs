//! The store's key names: `shards` hash tags, each holding its facts and their index,
//! and the insertion counter.

use std::collections::HashMap;

use stayfast_core::redis::{CLUSTER_SLOTS, key_slot};

use super::glob::glob_escape;

/// Cluster hash slots.
const SLOTS: usize = CLUSTER_SLOTS as usize;

/// Tried salts per shard before falling back to a plain name: each try lands in the
/// shard's slot range with probability `1 / shards` (at most 256), so this is never
/// reached in practice; the fallback is still a valid, distinct tag.
const MAX_SALT_TRIES: u32 = 1_000_000;

/// One shard's keys: its hash tag `{<tag>}` on every one, so a shard's multi-key
/// commands (SINTER) stay in one cluster slot.
#[derive(Debug)]
pub(super) struct Shard {
    /// The text between the braces.
    pub(super) tag: String,
    /// `{<tag>}:fact:`, followed by an id.
    fact: String,
    /// `{<tag>}:idx:`, followed by a word.
    index: String,
    /// `{<tag>}:ids`: the set of the shard's ids, for `count`.
    pub(super) ids: String,
}

impl Shard {
    pub(super) fn new(tag: String) -> Self {
        Self {
            fact: format!("{{{tag}}}:fact:"),
            index: format!("{{{tag}}}:idx:"),
            ids: format!("{{{tag}}}:ids"),
            tag,
        }
    }

    /// The hash of the fact `id`.
    pub(super) fn fact(&self, id: &str) -> String {
        format!("{}{id}", self.fact)
    }

    /// The set of the shard's facts holding `word`.
    pub(super) fn index(&self, word: &str) -> String {
        format!("{}{word}", self.index)
    }
}

/// Every key name, built once from the prefix and the shard count.
#[derive(Debug)]
pub(super) struct Keys {
    prefix: String,
    /// The current shards, by index (`shard_of`).
    shards: Vec<Shard>,
    /// A current shard's index by its tag, to read a scanned key.
    by_tag: HashMap<String, usize>,
    /// `{<prefix>}:seq`: the insertion counter, one for every shard (one total order).
    pub(super) seq: String,
    /// SCAN's MATCH for the current shards' fact keys (prefix glob-escaped).
    pub(super) fact_pattern: String,
}

impl Keys {
    pub(super) fn new(prefix: &str, shards: u16) -> Self {
        let shards: Vec<Shard> = (0..usize::from(shards.max(1)))
            .map(|i| Shard::new(shard_tag(prefix, i, usize::from(shards))))
            .collect();
        let by_tag = shards
            .iter()
            .enumerate()
            .map(|(i, s)| (s.tag.clone(), i))
            .collect();
        let escaped = glob_escape(prefix);
        // One shard is the single-tag layout of old, `{<prefix>}`: its pattern fixes the
        // slot (one primary scanned); several tags span every primary.
        let fact_pattern = if shards.len() == 1 {
            format!("{{{escaped}}}:fact:*")
        } else {
            format!("{{{escaped}#*}}:fact:*")
        };
        Self {
            seq: format!("{{{prefix}}}:seq"),
            prefix: prefix.to_owned(),
            shards,
            by_tag,
            fact_pattern,
        }
    }

    /// The current shards.
    pub(super) fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// The shard holding the fact `id`: a stable hash of the id (FNV-1a, 64 bits),
    /// modulo the shard count. Never changes for a given id and count.
    pub(super) fn shard_of(&self, id: &str) -> &Shard {
        &self.shards[shard_index(id, self.shards.len())]
    }

    /// The hash of the fact `id`, in its shard.
    pub(super) fn fact(&self, id: &str) -> String {
        self.shard_of(id).fact(id)
    }

    /// SCAN's MATCH for every key of this prefix in any layout, `{<prefix>}:…` and
    /// `{<prefix>#…}:…` (and other stores' keys that start alike: filter with
    /// [`parse`](Self::parse)).
    pub(super) fn any_layout_pattern(&self) -> String {
        format!("{{{}*", glob_escape(&self.prefix))
    }

    /// A key of this store in any layout: its tag and what follows the tag's `}`;
    /// `None` for another store's key.
    pub(super) fn parse<'k>(&self, key: &'k str) -> Option<(&'k str, &'k str)> {
        let (tag, rest) = key.strip_prefix('{')?.split_once('}')?;
        // A prefix holds no `#` (checked by the config): `<prefix>#…` is this store's alone.
        let ours = tag == self.prefix
            || tag
                .strip_prefix(self.prefix.as_str())
                .is_some_and(|salt| salt.starts_with('#'));
        ours.then_some((tag, rest))
    }

    /// Whether `tag` is one of the current shards'.
    pub(super) fn is_current(&self, tag: &str) -> bool {
        self.by_tag.contains_key(tag)
    }

    /// The id of a current fact key, if it sits in the shard its id belongs to (a fact
    /// elsewhere, left by another shard count, waits for
    /// [`migrate_layout`](super::KnowledgeStore::migrate_layout)).
    pub(super) fn current_fact_id<'k>(&self, key: &'k str) -> Option<&'k str> {
        let (tag, rest) = self.parse(key)?;
        let id = rest.strip_prefix(":fact:")?;
        (self.shard_of(id).tag == tag).then_some(id)
    }
}

/// FNV-1a (64 bits) of `id`, modulo `shards`: stable across builds and platforms (the
/// standard library's hasher is not), so an id always finds its shard again.
pub(super) fn shard_index(id: &str, shards: usize) -> usize {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // `shards` ≥ 1; the remainder is below it, so it fits a usize.
    (hash % shards.max(1) as u64) as usize
}

/// The tag of shard `i` of `shards`: `<prefix>` for a single shard (the layout of old);
/// otherwise `<prefix>#<salt>`, the first salt whose slot lies in the `i`-th of
/// `shards` equal ranges of the 16,384 slots. Primaries serve contiguous, even slot
/// ranges (as `redis-cli --cluster create` assigns them), so the shards spread evenly
/// over the primaries instead of wherever the tags' CRC16 happens to fall.
fn shard_tag(prefix: &str, i: usize, shards: usize) -> String {
    if shards <= 1 {
        return prefix.to_owned();
    }
    let range = i * SLOTS / shards..(i + 1) * SLOTS / shards;
    (0..MAX_SALT_TRIES)
        .map(|salt| format!("{prefix}#{salt}"))
        .find(|tag| range.contains(&usize::from(key_slot(tag))))
        .unwrap_or_else(|| format!("{prefix}#x{i}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shard_is_the_single_tag_layout() {
        let k = Keys::new("a*[b]", 1);
        assert_eq!(k.fact("x"), "{a*[b]}:fact:x");
        assert_eq!(k.shard_of("x").index("w"), "{a*[b]}:idx:w");
        assert_eq!(k.seq, "{a*[b]}:seq");
        assert_eq!(k.shard_of("x").ids, "{a*[b]}:ids");
        assert_eq!(k.fact_pattern, r"{a\*\[b\]}:fact:*");
    }

    #[test]
    fn shards_spread_over_the_slot_space_and_keep_their_tag() {
        let k = Keys::new("kb", 16);
        assert_eq!(k.shards().len(), 16);
        for (i, shard) in k.shards().iter().enumerate() {
            let slot = usize::from(key_slot(&shard.fact("x")));
            assert_eq!(slot * 16 / SLOTS, i, "{}", shard.tag);
            assert!(shard.tag.starts_with("kb#"));
            assert_eq!(key_slot(&shard.index("w")), key_slot(&shard.ids));
        }
        assert_eq!(k.seq, "{kb}:seq");
        assert_eq!(k.fact_pattern, "{kb#*}:fact:*");
        // Stable: the same tags every time.
        let again = Keys::new("kb", 16);
        assert!(k.shards().iter().zip(again.shards()).all(|(a, b)| a.tag == b.tag));
    }

    #[test]
    fn ids_spread_evenly_over_shards() {
        let mut per = [0usize; 16];
        for i in 0..16_000u32 {
            let id = format!(
                "{:08x}-10b1-426f-9247-bb680e5fe0c8",
                i.wrapping_mul(2_654_435_761)
            );
            per[shard_index(&id, 16)] += 1;
        }
        assert!(per.iter().all(|&n| (800..1200).contains(&n)), "{per:?}");
        // Pinned: a change of the hash would strand every stored fact.
        let id = "67e55044-10b1-426f-9247-bb680e5fe0c8";
        assert_eq!((shard_index(id, 16), shard_index(id, 3)), (1, 0));
        assert_eq!(shard_index("", 7), (0xcbf2_9ce4_8422_2325u64 % 7) as usize);
    }

    #[test]
    fn keys_are_read_back_per_store() {
        let k = Keys::new("kb", 4);
        let id = "67e55044-10b1-426f-9247-bb680e5fe0c8";
        let key = k.fact(id);
        assert_eq!(k.current_fact_id(&key), Some(id));
        let wrong = k
            .shards()
            .iter()
            .find(|s| s.tag != k.shard_of(id).tag)
            .map(|s| s.fact(id));
        assert_eq!(k.current_fact_id(&wrong.unwrap_or_default()), None, "misplaced");
        assert_eq!(k.parse("{kb}:fact:x"), Some(("kb", ":fact:x")));
        assert_eq!(k.parse("{kb#3}:idx:w"), Some(("kb#3", ":idx:w")));
        for foreign in ["{kb2}:fact:x", "{kb2#3}:fact:x", "{k}:fact:x", "kb:fact:x", "{kb"] {
            assert_eq!(k.parse(foreign), None, "{foreign}");
        }
        assert_eq!(Keys::new("kb*", 4).any_layout_pattern(), r"{kb\**");
        assert_eq!(Keys::new("kb*", 4).fact_pattern, r"{kb\*#*}:fact:*");
    }
}
