//! [`Secret`] and [`RedisUrl`]: setting values that may hold credentials, redacted
//! wherever they are printed.

use std::fmt;

use serde::{Deserialize, Deserializer, de};

/// A setting that must never be printed: a password, a token.
///
/// `Debug` and `Display` show `***`; [`expose`](Self::expose) is the one way to read
/// it, so every place that handles the clear text is easy to find.
///
/// It deserializes from a string, and also from a number or a boolean: a password
/// `12345` written unquoted in TOML (or typed as a number by another figment provider)
/// is taken as its text, not refused with an error that would echo it. Its own errors
/// name the type that was found, never the value.
///
/// # Examples
///
/// ```
/// use stayfast::settings::Secret;
///
/// let password = Secret::new("hunter2");
/// assert_eq!(password.expose(), "hunter2");
/// assert_eq!(format!("{password} {password:?}"), "*** ***");
///
/// #[derive(serde::Deserialize)]
/// struct Login { password: Secret }
/// let login: Login = toml::from_str("password = 12345").unwrap();
/// assert_eq!(login.password.expose(), "12345");
/// let err = toml::from_str::<Login>(r#"password = ["hunter2"]"#).err().unwrap();
/// assert!(!err.message().contains("hunter2"));
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    ///
    /// ```
    /// assert_eq!(stayfast::settings::Secret::new("s3cret").expose(), "s3cret");
    /// ```
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The clear text. Hand it to the client that needs it; never log it.
    ///
    /// ```
    /// let token = stayfast::settings::Secret::new("t0ken");
    /// assert_eq!(token.expose().len(), 5);
    /// ```
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SecretVisitor).map(Secret)
    }
}

/// Takes any scalar as text. Every rejection goes through `invalid_type` with a
/// value-free `Unexpected` (a table, an array…), so no error can carry the secret.
struct SecretVisitor;

impl de::Visitor<'_> for SecretVisitor {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }

    fn visit_char<E: de::Error>(self, v: char) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<String, E> {
        // NOTE: serde's default would put the bytes into the error.
        String::from_utf8(v.to_vec())
            .map_err(|_| E::custom("expected a string, found bytes that are not UTF-8"))
    }
}

/// The Redis URL setting: `redis://[user:password@]host[:port][/db]`.
///
/// It may hold a password, so `Debug` and `Display` show it with the password replaced
/// by `***` (and anything unrecognisable before an `@` hidden as well).
///
/// # Examples
///
/// ```
/// use stayfast::settings::RedisUrl;
///
/// let url = RedisUrl::new("redis://app:hunter2@db.internal:6379/1");
/// assert_eq!(format!("{url:?}"), "redis://app:***@db.internal:6379/1");
/// assert_eq!(url.expose(), "redis://app:hunter2@db.internal:6379/1");
/// assert_eq!(RedisUrl::default().to_string(), "redis://127.0.0.1:6379");
/// ```
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct RedisUrl(Secret);

impl RedisUrl {
    /// Wraps `url`.
    ///
    /// ```
    /// let url = stayfast::settings::RedisUrl::new("redis://cache:6379");
    /// assert_eq!(url.to_string(), "redis://cache:6379");
    /// ```
    pub fn new(url: impl Into<String>) -> Self {
        Self(Secret::new(url))
    }

    /// The URL as written, password included. Hand it to the client; never log it.
    ///
    /// ```
    /// let url = stayfast::settings::RedisUrl::new("redis://:pw@cache:6379");
    /// assert_eq!(url.expose(), "redis://:pw@cache:6379");
    /// ```
    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    /// The URL with its credentials' password, and any secret query parameter, replaced
    /// by `***` ([`stayfast_core::redact_url`]).
    ///
    /// ```
    /// let url = stayfast::settings::RedisUrl::new("rediss://:pw/with?odd#chars@cache:6380");
    /// assert_eq!(url.redacted(), "rediss://:***@cache:6380");
    /// ```
    pub fn redacted(&self) -> String {
        stayfast_core::redact_url(self.expose())
    }
}

/// [`RedisUrl::new`], so that a URL is set as `settings.redis.url = "redis://…".into()`.
///
/// ```
/// let mut settings = stayfast::Settings::default();
/// settings.redis.url = "redis://cache:6379".into();
/// assert_eq!(settings.redis.url.expose(), "redis://cache:6379");
/// ```
impl From<&str> for RedisUrl {
    fn from(url: &str) -> Self {
        Self::new(url)
    }
}

/// [`RedisUrl::new`].
///
/// ```
/// let url: stayfast::settings::RedisUrl = String::from("redis://cache:6379").into();
/// assert_eq!(url.expose(), "redis://cache:6379");
/// ```
impl From<String> for RedisUrl {
    fn from(url: String) -> Self {
        Self::new(url)
    }
}

impl Default for RedisUrl {
    fn default() -> Self {
        Self::new(stayfast_core::redis::RedisConfig::default().url)
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}
