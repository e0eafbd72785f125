//! Cluster slots: where a script's keys and a SCAN pattern's keys live, so the handle
//! routes a command to the primary that serves it instead of a random node (a MOVED
//! redirection, then a cluster-state resync in fred, on most calls).

use fred::{
    error::{Error as FredError, ErrorKind},
    util::redis_keyslot,
};

use super::{Command, RedisError};
use crate::Error;

/// How many slots a Redis Cluster divides its keys into.
pub const CLUSTER_SLOTS: u16 = 16_384;

/// The cluster slot `key` hashes to (CRC16 of its hash tag, or of the whole key),
/// whether or not the deployment is a cluster: what a store spreading its keys over
/// primaries needs to know of them.
///
/// ```
/// use stayfast_core::redis::key_slot;
/// assert_eq!(key_slot("{kb}:fact:1"), key_slot("{kb}:idx:word")); // one hash tag
/// assert!(key_slot("anything") < stayfast_core::redis::CLUSTER_SLOTS);
/// ```
pub fn key_slot(key: &str) -> u16 {
    redis_keyslot(key.as_bytes())
}

/// The slot every key of `keys` hashes to (`None` without keys); an error naming two
/// keys of different slots otherwise, before anything is sent.
///
/// A Lua script runs on one node: on a cluster, keys of several slots fail there with
/// `CROSSSLOT` — or, worse, land on a node that happens to serve the first key while the
/// others live elsewhere. Checked on a single server too, so code that would break on a
/// cluster breaks in development.
pub(super) fn common_slot(command: Command, keys: &[String]) -> Result<Option<u16>, RedisError> {
    let mut keys = keys.iter();
    let Some(first) = keys.next() else {
        return Ok(None);
    };
    let slot = redis_keyslot(first.as_bytes());
    for key in keys {
        let other = redis_keyslot(key.as_bytes());
        if other != slot {
            return Err(Error::Inner {
                operation: command.into(),
                source: FredError::new(
                    ErrorKind::InvalidArgument,
                    format!(
                        "the keys of one script must share a cluster slot (give them one hash \
                         tag, `{{tag}}:…`): `{first}` is in slot {slot}, `{key}` in slot {other}"
                    ),
                ),
                attempts: 0,
            });
        }
    }
    Ok(Some(slot))
}

/// The slot of every key a SCAN `pattern` (a Redis glob) can match, when the pattern
/// fixes it: its text up to the end of the first hash tag (`{…}`) holds no wildcard, so
/// every matching key has that very tag. Escapes are undone first: the pattern
/// `{kb\*}:fact:*` matches the keys `{kb*}:fact:…`, whose tag is `kb*`, not `kb\*`
/// (fred hashes the escaped text and scans the wrong node).
///
/// `None` when the keys may live in any slot: a wildcard before the tag closes, no tag,
/// or an empty one (`{}` hashes the whole key).
pub(super) fn pattern_slot(pattern: &str) -> Option<u16> {
    let mut literal = Vec::with_capacity(pattern.len());
    let mut open = None;
    let mut bytes = pattern.bytes();
    while let Some(b) = bytes.next() {
        let c = match b {
            b'*' | b'?' | b'[' => return None,
            // An escaped character is itself; a trailing backslash is a backslash.
            b'\\' => bytes.next().unwrap_or(b'\\'),
            other => other,
        };
        literal.push(c);
        match (c, open) {
            (b'{', None) => open = Some(literal.len()),
            (b'}', Some(start)) => {
                let tag = &literal[start..literal.len() - 1];
                // `{}`: Redis hashes the whole key, which the rest of the pattern leaves open.
                return (!tag.is_empty()).then(|| redis_keyslot(tag));
            }
            _ => {}
        }
    }
    // No wildcard at all: the pattern names one key.
    Some(redis_keyslot(&literal))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn slot(key: &str) -> u16 {
        redis_keyslot(key.as_bytes())
    }

    #[test]
    fn a_pattern_with_a_literal_tag_has_its_keys_slot() {
        assert_eq!(pattern_slot("{kb}:fact:*"), Some(slot("{kb}:fact:x")));
        // Escaped glob characters are the keys' own characters.
        assert_eq!(pattern_slot(r"{kb\*}:fact:*"), Some(slot("{kb*}:fact:x")));
        assert_ne!(pattern_slot(r"{kb\*}:fact:*"), Some(slot(r"{kb\*}")));
        assert_eq!(pattern_slot(r"{a\[1\]\\}:x*"), Some(slot(r"{a[1]\}:y")));
        assert_eq!(pattern_slot("plain"), Some(slot("plain")));
        assert_eq!(pattern_slot(r"p\?"), Some(slot("p?")));
    }

    #[test]
    fn a_pattern_whose_tag_is_open_has_no_slot() {
        for open in [
            "*",
            "kb:*",
            "{kb#*}:fact:*",
            "a*{kb}:x",
            "{}:x*",
            "{kb:*",
            "{k?}",
            "[ab]{x}",
        ] {
            assert_eq!(pattern_slot(open), None, "{open}");
        }
    }

    #[test]
    fn script_keys_must_share_a_slot() {
        let keys = |ks: &[&str]| ks.iter().map(|k| (*k).to_owned()).collect::<Vec<_>>();
        assert_eq!(common_slot(Command::Eval, &[]).unwrap(), None);
        let tagged = keys(&["{tx:1}:log", "{tx:1}:deleted"]);
        assert_eq!(common_slot(Command::Eval, &tagged).unwrap(), Some(slot("{tx:1}")));
        assert!(common_slot(Command::Eval, &keys(&["visits", "visitors"])).is_err()); // eval's example
        let e = common_slot(Command::Eval, &keys(&["a", "b"])).unwrap_err();
        let text = format!("{e:?}");
        assert!(
            text.contains("share a cluster slot") && text.contains("`b`"),
            "{text}"
        );
    }
}
