//! The search index's two encodings: the words of a text, and the member a fact leaves
//! in each word's set.

use std::collections::BTreeSet;

/// The distinct search words of `text`: maximal runs of alphanumeric characters
/// (`char::is_alphanumeric`, so any script), lower-cased.
///
/// Splitting happens before lower-casing, so a word's lower-case form may hold a
/// character that is not alphanumeric itself (`"İ"` → `"i\u{307}"`): store and search
/// use this one function, so they always agree. No Unicode normalization is applied: a
/// precomposed `"é"` and `"e\u{301}"` are different words.
pub(crate) fn words(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// The words of `text` the index holds: distinct, in order of first appearance, each
/// at most `max_bytes` long (longer ones are skipped), at most `max_words` of them.
/// Store and delete use this one function with the same caps, so they name the same
/// sets.
pub(crate) fn indexed_words(text: &str, max_words: usize, max_bytes: usize) -> Vec<String> {
    let mut seen = BTreeSet::new();
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .filter(|w| w.len() <= max_bytes)
        .filter(|w| seen.insert(w.clone()))
        .take(max_words)
        .collect()
}

/// The member a fact adds to each of its words' sets: `<seq>:<id>`.
///
/// The insertion sequence travels with the id so SINTER's answer can be ranked without
/// reading every matching fact: only the `limit` first are fetched.
pub(crate) fn member(seq: u64, id: &str) -> String {
    format!("{seq}:{id}")
}

/// The `(seq, id)` of an index member; `None` for anything this module did not write.
pub(crate) fn parse_member(member: &str) -> Option<(u64, &str)> {
    let (seq, id) = member.split_once(':')?;
    Some((seq.parse().ok()?, id))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn words_are_lowercased_unicode_runs() {
        let got: Vec<_> = words("Hello, WORLD! well-known Grüße 東京 ΕΛΛΆΔΑ x2 hello")
            .into_iter()
            .collect();
        assert_eq!(
            got,
            ["grüße", "hello", "known", "well", "world", "x2", "ελλάδα", "東京"]
        );
        assert!(words("").is_empty());
        assert!(words(" \r\n\0!?").is_empty());
        // A combining mark is not alphanumeric: it separates.
        assert_eq!(words("cafe\u{301}").into_iter().collect::<Vec<_>>(), ["cafe"]);
    }

    #[test]
    fn indexed_words_are_capped_in_text_order() {
        let text = "Zeta alpha ZETA beta 0123456789abcdef gamma delta";
        assert_eq!(indexed_words(text, 3, 64), ["zeta", "alpha", "beta"]);
        assert_eq!(
            indexed_words(text, 10, 5),
            ["zeta", "alpha", "beta", "gamma", "delta"]
        );
        // The cap is on bytes of the lower-case form: "東京" is 6 bytes.
        assert_eq!(indexed_words("東京 x", 10, 5), ["x"]);
        let huge: String = (0..10_000).map(|i| format!("w{i} ")).collect();
        assert_eq!(indexed_words(&huge, 256, 64).len(), 256);
    }

    #[test]
    fn members_round_trip() {
        let m = member(42, "67e55044-10b1-426f-9247-bb680e5fe0c8");
        assert_eq!(
            parse_member(&m),
            Some((42, "67e55044-10b1-426f-9247-bb680e5fe0c8"))
        );
        assert_eq!(parse_member("x:y"), None);
        assert_eq!(parse_member("nocolon"), None);
    }
}
