//! [`redact_url`]: a connection URL with every password hidden, safe to log.

use std::ops::Range;

/// The URL with every password replaced by `***`: the userinfo's password
/// (`scheme://user:***@host`; a lone credential, `scheme://***@host`, may be a password
/// so it is hidden whole) and the value of every query parameter that names a secret
/// (`password=`, `sentinel_password=`, any key holding `pass`, `secret` or `token`,
/// `pwd`, `auth`). Hosts (one or several, `h1:1,h2:2`), the path and other parameters
/// are kept. The one redaction of stayfast, used by the core's `RedisConfig` and the
/// facade's settings alike.
///
/// Redaction errs on the side of hiding: the userinfo ends at the *last* `@` outside a
/// secret parameter's value, so a password holding a raw `/`, `?`, `#` or `@` stays
/// hidden; an `@` later in the path or an ordinary parameter only widens the hidden
/// part (the host may then be hidden too). A string without `://` is treated as
/// starting at the userinfo.
///
/// # Examples
///
/// ```
/// use stayfast_core::redact_url;
///
/// assert_eq!(redact_url("redis://app:s3cret@db:6379/1"), "redis://app:***@db:6379/1");
/// assert_eq!(redact_url("redis://s3cret@db"), "redis://***@db");
/// assert_eq!(redact_url("redis-cluster://:pw@h1:1,h2:2"), "redis-cluster://:***@h1:1,h2:2");
/// assert_eq!(
///     redact_url("redis-sentinel://h1:26379/mymaster?sentinel_password=s3c@ret&db=2"),
///     "redis-sentinel://h1:26379/mymaster?sentinel_password=***&db=2"
/// );
/// assert_eq!(redact_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
/// ```
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (&url[..scheme.len() + 3], rest),
        None => ("", url),
    };
    let mut hidden = secret_values(rest);
    // The last `@` that is not inside a secret value ends the userinfo.
    let userinfo_end = rest
        .match_indices('@')
        .map(|(i, _)| i)
        .rfind(|i| !hidden.iter().any(|r| r.contains(i)));
    if let Some(end) = userinfo_end {
        // The user name is kept when a `:` follows it; a lone credential is hidden.
        let start = rest[..end].find(':').map_or(0, |colon| colon + 1);
        hidden.push(start..end);
    }
    let mut out = String::with_capacity(url.len());
    out.push_str(scheme);
    let mut at = 0;
    for range in merged(hidden) {
        out.push_str(&rest[at..range.start]);
        out.push_str("***");
        at = range.end;
    }
    out.push_str(&rest[at..]);
    out
}

/// The byte ranges of the values of parameters that name a secret: from after the `=`
/// to the next `&` or the end (a `#` does not end it: a fragment means nothing to a
/// connection URL, and a raw `#` in a password must not end the hidden part early).
fn secret_values(rest: &str) -> Vec<Range<usize>> {
    let mut ranges = Vec::new();
    for (i, _) in rest.match_indices(['?', '&']) {
        let key_start = i + 1;
        let Some(eq) = rest[key_start..].find('=') else {
            continue;
        };
        let key = &rest[key_start..key_start + eq];
        if key.contains(['?', '&', '/', '@', '#', ':']) || !names_a_secret(key) {
            continue;
        }
        let value_start = key_start + eq + 1;
        let value_end = rest[value_start..]
            .find('&')
            .map_or(rest.len(), |n| value_start + n);
        ranges.push(value_start..value_end);
    }
    ranges
}

fn names_a_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["pass", "secret", "token"].iter().any(|s| key.contains(s)) || key == "pwd" || key == "auth"
}

/// Sorted, with overlapping or touching ranges joined, so each hidden run shows as one
/// `***`.
fn merged(mut ranges: Vec<Range<usize>>) -> Vec<Range<usize>> {
    ranges.sort_by_key(|r| r.start);
    let mut out: Vec<Range<usize>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn every_shape_is_hidden() {
        for (url, shown) in [
            ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
            ("redis://s3cret@host", "redis://***@host"),
            ("redis://:pw@h:1/0", "redis://:***@h:1/0"),
            ("redis://u:pw@h", "redis://u:***@h"),
            ("redis://u:@h", "redis://u:***@h"),
            ("redis://u:p@w@h", "redis://u:***@h"),
            ("redis://:p/w@h/2", "redis://:***@h/2"),
            ("redis://:p?w#x@h", "redis://:***@h"),
            ("u:pw@h", "u:***@h"),
            ("redis-cluster://u:p@h1:1,h2:2", "redis-cluster://u:***@h1:1,h2:2"),
            (
                "redis-sentinel://:pw@s1:26379/0?sentinelServiceName=m",
                "redis-sentinel://:***@s1:26379/0?sentinelServiceName=m",
            ),
            (
                "redis-sentinel://u:pw@s1:1,s2:2/m?sentinel_username=x&sentinel_password=y@z&db=1",
                "redis-sentinel://u:***@s1:1,s2:2/m?sentinel_username=x&sentinel_password=***&db=1",
            ),
            ("redis://h/0?password=pw", "redis://h/0?password=***"),
            ("redis://h/0?PASSWORD=pw&x=1", "redis://h/0?PASSWORD=***&x=1"),
            // An `@` in an ordinary parameter widens the hidden part; it never narrows it.
            ("redis://u:pw@h/0?name=a@b", "redis://u:***@b"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }
}
