//! Escaping text for a Redis glob (`SCAN … MATCH`, `KEYS`).

/// `text` with every glob metacharacter of Redis (`*`, `?`, `[`, `]`, `\`) escaped by a
/// backslash, so that `glob_escape(s) + "*"` matches exactly the keys that start with `s`.
///
/// Without it a namespace is a pattern: `ns[1]:*` matches `ns1:x` and not `ns[1]:x`,
/// and `a*:*` matches every key starting with `a`. (`]`, `^` and `-` only mean something
/// inside brackets; `]` is escaped anyway, which Redis reads as the plain character.)
///
/// Escaping a hash tag's text changes the slot it hashes to (`{kb\*}` is not `{kb*}`'s
/// slot): [`Redis::scan_keys`](crate::redis::Redis::scan_keys) undoes the escapes
/// before it routes a pattern by its tag, so on a cluster the escaped pattern still
/// scans the primary holding the keys.
///
/// # Examples
///
/// ```
/// use stayfast::knowledge::glob_escape;
/// assert_eq!(glob_escape("ns[1]"), r"ns\[1\]");
/// assert_eq!(glob_escape(r"a*b?c\d"), r"a\*b\?c\\d");
/// assert_eq!(glob_escape("plain:text"), "plain:text");
/// let pattern = format!("{{{}}}:fact:*", glob_escape("kb*")); // `{kb\*}:fact:*`
/// ```
pub fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len() + 2);
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}
