//! The one duration format of every stayfast setting: `"150ms"`, `"2s"`, `"1m30s"`, or a
//! number of seconds (`1.5`).
//!
//! Use it on your own fields with `#[serde(with = "stayfast_core::config::duration")]`
//! (or `duration::option` for an `Option<Duration>`).
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use stayfast_core::config::duration;
//!
//! assert_eq!(duration::parse("150ms"), Ok(Duration::from_millis(150)));
//! assert_eq!(duration::parse("1m30s"), Ok(Duration::from_secs(90)));
//! assert_eq!(duration::parse("1.5"), Ok(Duration::from_millis(1500)));
//! assert!(duration::parse("-1s").is_err());
//! assert!(duration::parse("10 parsecs").is_err());
//! ```

use std::{fmt, time::Duration};

use serde::{Deserializer, Serializer, de};

/// Parses `"150ms"`, `"2s"`, `"1.5s"`, `"1m30s"`, `"2h"`, `"250us"`, `"10ns"` or a bare
/// number of seconds (`"1.5"`). Whitespace between parts is allowed.
///
/// # Errors
///
/// A message saying what is wrong with `text`: an unknown unit, a negative, NaN or
/// infinite number, or a value too large for a `Duration`.
///
/// ```
/// # use stayfast_core::config::duration::parse;
/// assert!(parse("").is_err());
/// assert!(parse("nan").is_err());
/// assert!(parse("1e30").is_err());
/// ```
pub fn parse(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("expected a duration such as \"150ms\", \"2s\" or 1.5, found an empty string".into());
    }
    if let Ok(seconds) = trimmed.parse::<f64>() {
        return from_secs_f64(seconds);
    }
    if trimmed.starts_with('-') {
        return Err(format!(
            "invalid duration {text:?}: a duration cannot be negative"
        ));
    }
    let mut total = Duration::ZERO;
    let mut rest = trimmed;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        let after = after.trim_start();
        let unit_len = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let (unit, tail) = after.split_at(unit_len);
        let value: f64 = number
            .parse()
            .map_err(|_| format!("invalid duration {text:?}: expected a number at {rest:?}"))?;
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" | "sec" | "secs" => 1.0,
            "m" | "min" | "mins" => 60.0,
            "h" | "hr" | "hrs" => 3600.0,
            "" => return Err(format!("invalid duration {text:?}: missing unit after {number}")),
            other => {
                return Err(format!(
                    "invalid duration {text:?}: unknown unit {other:?} (use ns, us, ms, s, m or h)"
                ));
            }
        };
        let part = from_secs_f64(value * scale).map_err(|e| format!("invalid duration {text:?}: {e}"))?;
        total = total
            .checked_add(part)
            .ok_or_else(|| format!("invalid duration {text:?}: too large"))?;
        rest = tail.trim_start();
    }
    Ok(total)
}

/// Seconds as a `Duration`, rejecting negative, NaN, infinite and too-large values
/// (where `Duration::from_secs_f64` would panic).
pub(crate) fn from_secs_f64(seconds: f64) -> Result<Duration, String> {
    if seconds.is_nan() {
        return Err("a duration cannot be NaN".into());
    }
    if seconds < 0.0 {
        return Err(format!("a duration cannot be negative, found {seconds}"));
    }
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("duration of {seconds} seconds is too large"))
}

struct DurationVisitor;

impl de::Visitor<'_> for DurationVisitor {
    type Value = Duration;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a duration such as \"150ms\", \"2s\" or a number of seconds")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
        parse(v).map_err(E::custom)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
        from_secs_f64(v).map_err(E::custom)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
        Ok(Duration::from_secs(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
        u64::try_from(v)
            .map(Duration::from_secs)
            .map_err(|_| E::custom(format!("a duration cannot be negative, found {v}")))
    }
}

/// Deserializes a duration (see the [module docs](self)).
///
/// # Errors
///
/// The deserializer's error carrying [`parse`]'s message.
///
/// ```
/// # use std::time::Duration;
/// #[derive(serde::Deserialize)]
/// struct Settings {
///     #[serde(with = "stayfast_core::config::duration")]
///     poll_every: Duration,
/// }
/// let settings: Settings = toml::from_str(r#"poll_every = "1m30s""#).unwrap();
/// assert_eq!(settings.poll_every, Duration::from_secs(90));
/// assert!(toml::from_str::<Settings>(r#"poll_every = "5 parsecs""#).is_err());
/// ```
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    deserializer.deserialize_any(DurationVisitor)
}

/// Serializes a duration as a string `parse` reads back, in the largest unit that is
/// exact (`"2s"`, `"1500ms"`).
///
/// # Errors
///
/// Only the serializer's own errors.
///
/// ```
/// # use std::time::Duration;
/// #[derive(serde::Serialize)]
/// struct Settings {
///     #[serde(with = "stayfast_core::config::duration")]
///     poll_every: Duration,
/// }
/// let settings = Settings { poll_every: Duration::from_millis(150) };
/// assert_eq!(serde_json::to_string(&settings).unwrap(), r#"{"poll_every":"150ms"}"#);
/// ```
pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&format_args!("{}", format(*value)))
}

/// A duration in the shortest unit `parse` reads back exactly.
pub(crate) fn format(value: Duration) -> String {
    let nanos = value.as_nanos();
    if nanos.is_multiple_of(1_000_000_000) {
        format!("{}s", value.as_secs())
    } else if nanos.is_multiple_of(1_000_000) {
        format!("{}ms", nanos / 1_000_000)
    } else if nanos.is_multiple_of(1_000) {
        format!("{}us", nanos / 1_000)
    } else {
        format!("{nanos}ns")
    }
}

/// The same format for an `Option<Duration>` (absent or `null` = `None`). Use with
/// `#[serde(default, with = "stayfast_core::config::duration::option")]`.
pub mod option {
    use std::{fmt, time::Duration};

    use serde::{Deserializer, Serializer, de};

    struct OptionVisitor;

    impl<'de> de::Visitor<'de> for OptionVisitor {
        type Value = Option<Duration>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as \"150ms\", \"2s\", a number of seconds, or nothing")
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            super::deserialize(d).map(Some)
        }
    }

    /// Deserializes an optional duration.
    ///
    /// # Errors
    ///
    /// As [`super::deserialize`].
    ///
    /// ```
    /// # use std::time::Duration;
    /// #[derive(serde::Deserialize)]
    /// struct Settings {
    ///     #[serde(default, with = "stayfast_core::config::duration::option")]
    ///     timeout: Option<Duration>,
    /// }
    /// let settings: Settings = toml::from_str(r#"timeout = "250ms""#).unwrap();
    /// assert_eq!(settings.timeout, Some(Duration::from_millis(250)));
    /// assert_eq!(toml::from_str::<Settings>("").unwrap().timeout, None);
    /// ```
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        d.deserialize_option(OptionVisitor)
    }

    /// Serializes an optional duration (`None` as nothing).
    ///
    /// # Errors
    ///
    /// Only the serializer's own errors.
    ///
    /// ```
    /// # use std::time::Duration;
    /// #[derive(serde::Serialize)]
    /// struct Settings {
    ///     #[serde(with = "stayfast_core::config::duration::option")]
    ///     timeout: Option<Duration>,
    /// }
    /// let (set, unset) = (Settings { timeout: Some(Duration::from_secs(2)) }, Settings { timeout: None });
    /// assert_eq!(serde_json::to_string(&set).unwrap(), r#"{"timeout":"2s"}"#);
    /// assert_eq!(serde_json::to_string(&unset).unwrap(), r#"{"timeout":null}"#);
    /// ```
    pub fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => s.serialize_some(&super::format(*d)),
            None => s.serialize_none(),
        }
    }
}
