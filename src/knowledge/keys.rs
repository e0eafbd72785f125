//! The store's key names.

use super::glob::glob_escape;

/// Every key name, built once from the prefix. All share the hash tag `{<prefix>}`, so
/// every multi-key command stays in one cluster slot.
#[derive(Debug)]
pub(super) struct Keys {
    /// `{<prefix>}:fact:`, followed by an id.
    pub(super) fact: String,
    /// `{<prefix>}:idx:`, followed by a word.
    index: String,
    /// `{<prefix>}:seq`: the insertion counter.
    pub(super) seq: String,
    /// `{<prefix>}:ids`: the set of stored ids, for `count`.
    pub(super) ids: String,
    /// `{<escaped prefix>}:fact:*`: SCAN's MATCH.
    pub(super) fact_pattern: String,
}

impl Keys {
    pub(super) fn new(prefix: &str) -> Self {
        Self {
            fact: format!("{{{prefix}}}:fact:"),
            index: format!("{{{prefix}}}:idx:"),
            seq: format!("{{{prefix}}}:seq"),
            ids: format!("{{{prefix}}}:ids"),
            fact_pattern: format!("{{{}}}:fact:*", glob_escape(prefix)),
        }
    }

    /// The hash of the fact `id`.
    pub(super) fn fact(&self, id: &str) -> String {
        format!("{}{id}", self.fact)
    }

    /// The set of the facts holding `word`.
    pub(super) fn index(&self, word: &str) -> String {
        format!("{}{word}", self.index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_share_the_hash_tag_and_the_pattern_is_escaped() {
        let k = Keys::new("a*[b]");
        assert_eq!(k.fact("x"), "{a*[b]}:fact:x");
        assert_eq!(k.index("w"), "{a*[b]}:idx:w");
        assert_eq!((k.seq.as_str(), k.ids.as_str()), ("{a*[b]}:seq", "{a*[b]}:ids"));
        assert_eq!(k.fact_pattern, r"{a\*\[b\]}:fact:*");
    }
}
