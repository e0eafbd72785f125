//! [`RedisValue`]: one reply, read without naming fred's types.

use std::collections::HashMap;

use fred::{
    error::Error as FredError,
    types::{FromValue, Value},
};

/// One reply from Redis, as the server sent it: for replies whose shape the caller
/// checks itself (a hash that may be damaged, a pipeline's mixed replies).
///
/// Usable wherever a command takes a reply type (`redis.hgetall::<HashMap<String,
/// RedisValue>>(..)`), and the element of [`Redis::batch`](super::Redis::batch)'s replies.
///
/// ```
/// use stayfast_core::redis::RedisValue;
/// let v = RedisValue::from("42");
/// assert_eq!(v.as_bytes(), Some(&b"42"[..]));
/// assert_eq!(v.as_text().and_then(|t| t.parse::<u64>().ok()), Some(42));
/// assert!(RedisValue::nil().is_nil());
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct RedisValue(Value);

impl RedisValue {
    /// The nil reply (a missing key or field).
    ///
    /// ```
    /// assert!(stayfast_core::redis::RedisValue::nil().as_bytes().is_none());
    /// ```
    pub fn nil() -> Self {
        Self(Value::Null)
    }

    /// Whether it is nil.
    ///
    /// ```
    /// assert!(!stayfast_core::redis::RedisValue::from("x").is_nil());
    /// ```
    pub fn is_nil(&self) -> bool {
        self.0.is_null()
    }

    /// The bytes of a string reply; `None` for any other kind (an integer, an array, nil).
    ///
    /// ```
    /// use stayfast_core::redis::RedisValue;
    /// assert_eq!(RedisValue::from("a\0b").as_bytes(), Some(&b"a\0b"[..]));
    /// ```
    pub fn as_bytes(&self) -> Option<&[u8]> {
        self.0.as_bytes()
    }

    /// The text of a string reply that is UTF-8; `None` otherwise.
    ///
    /// ```
    /// use stayfast_core::redis::RedisValue;
    /// assert_eq!(RedisValue::from("7").as_text(), Some("7"));
    /// ```
    pub fn as_text(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// The number of an integer reply (DEL's, SADD's count…); `None` for any other kind.
    ///
    /// ```
    /// use stayfast_core::redis::RedisValue;
    /// assert_eq!(RedisValue::from("7").as_integer(), None); // a string, not an integer reply
    /// ```
    pub fn as_integer(&self) -> Option<i64> {
        match self.0 {
            Value::Integer(n) => Some(n),
            _ => None,
        }
    }

    /// A map reply (HGETALL's) as field → value; `None` when it is not one, or a
    /// field name is not UTF-8.
    ///
    /// ```
    /// use stayfast_core::redis::RedisValue;
    /// assert_eq!(RedisValue::from("x").into_map(), None);
    /// ```
    pub fn into_map(self) -> Option<HashMap<String, RedisValue>> {
        self.0.convert().ok()
    }
}

impl From<&str> for RedisValue {
    fn from(text: &str) -> Self {
        Self(Value::from(text))
    }
}

impl From<String> for RedisValue {
    fn from(text: String) -> Self {
        Self(Value::from(text))
    }
}

impl FromValue for RedisValue {
    fn from_value(value: Value) -> Result<Self, FredError> {
        Ok(Self(value))
    }
}
