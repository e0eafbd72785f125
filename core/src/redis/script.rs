//! [`Script`]: a Lua script with its SHA1, hashed once, so the handle can send
//! `EVALSHA` (40 bytes) instead of the script's body on every call.

use std::{fmt, sync::Arc};

use fred::{bytes_utils::Str, types::Value};

/// A Lua script and its SHA1 (hex), computed once by [`Script::new`]. Cheap to clone
/// (one reference count); run it with [`Redis::eval_script`](super::Redis::eval_script).
///
/// Redis hashes the whole body of every `EVAL` to find the script in its cache; with a
/// `Script` the handle sends `EVALSHA <sha1>` instead, and the body only when a node
/// does not know the script yet (`NOSCRIPT`: a fresh or flushed cache, a primary of a
/// cluster that had not run it), which also loads it there.
///
/// Build it once, for instance in a `static` (the hash is computed on first use):
///
/// ```
/// use std::sync::LazyLock;
/// use stayfast_core::redis::Script;
///
/// static VISIT: LazyLock<Script> =
///     LazyLock::new(|| Script::new("return redis.call('INCRBY', KEYS[1], ARGV[1])"));
///
/// assert_eq!(VISIT.sha1().len(), 40);
/// assert_eq!(Script::new("return 1").sha1(), "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
/// ```
#[derive(Clone)]
pub struct Script {
    inner: Arc<Body>,
}

struct Body {
    source: Str,
    sha1: Str,
}

impl Script {
    /// The script `source`, hashed now (SHA1, lowercase hex, as Redis names it).
    ///
    /// ```
    /// use stayfast_core::redis::Script;
    /// let script = Script::new(String::from("return #KEYS"));
    /// assert_eq!(script.source(), "return #KEYS");
    /// ```
    pub fn new(source: impl Into<String>) -> Self {
        let source: String = source.into();
        let sha1 = fred::util::sha1_hash(&source);
        Self {
            inner: Arc::new(Body {
                source: Str::from(source),
                sha1: Str::from(sha1),
            }),
        }
    }

    /// The script's body.
    ///
    /// ```
    /// use stayfast_core::redis::Script;
    /// assert_eq!(Script::new("return 1").source(), "return 1");
    /// ```
    pub fn source(&self) -> &str {
        &self.inner.source
    }

    /// The SHA1 of the body, in lowercase hex: what `EVALSHA` and `SCRIPT EXISTS` take.
    ///
    /// ```
    /// use stayfast_core::redis::Script;
    /// let script = Script::new("return 1");
    /// assert_eq!(script.sha1(), "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
    /// ```
    pub fn sha1(&self) -> &str {
        &self.inner.sha1
    }

    /// `EVALSHA`'s first argument, without copying it.
    pub(super) fn sha1_value(&self) -> Value {
        Value::String(self.inner.sha1.clone())
    }

    /// `EVAL`'s first argument, without copying it.
    pub(super) fn source_value(&self) -> Value {
        Value::String(self.inner.source.clone())
    }
}

impl fmt::Debug for Script {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The body can be long: its hash and length identify it.
        f.debug_struct("Script")
            .field("sha1", &self.sha1())
            .field("len", &self.source().len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::Script;

    #[test]
    fn the_hash_is_redis_s() {
        // What `SCRIPT LOAD` answers for it (and `sha1sum`).
        let script = Script::new("return redis.call('GET', KEYS[1])");
        assert_eq!(script.sha1(), "d3c21d0c2b9ca22f82737626a27bcaf5d288f99f");
        let clone = script.clone();
        assert_eq!(clone.sha1(), script.sha1());
        let debug = format!("{script:?}");
        assert!(debug.contains("d3c21d0c") && debug.contains("len"), "{debug}");
    }
}
