//! [`Name`]: the operation or target a policy, breaker or error talks about.

use std::{borrow::Cow, fmt, sync::Arc};

/// The name of an operation (`"redis.get"`) or of a dependency (`"redis.main"`).
///
/// Names are fixed when a policy or breaker is built and then cloned into errors and
/// events. Cloning never allocates: a `&'static str` is copied, an owned name is shared.
/// Names become metric label values, so they must come from code or configuration,
/// never from user input (every distinct value is a new time series).
///
/// # Examples
///
/// ```
/// use stayfast_core::Name;
///
/// let op = Name::from("redis.get");
/// let target = Name::from(String::from("redis.main"));
/// assert_eq!(op.as_str(), "redis.get");
/// assert_eq!(target.to_string(), "redis.main");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(Repr);

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Repr {
    Static(&'static str),
    Shared(Arc<str>),
}

impl Name {
    /// A name from a string literal, usable in `const` context.
    ///
    /// ```
    /// const GET: stayfast_core::Name = stayfast_core::Name::new_static("redis.get");
    /// assert_eq!(GET.as_str(), "redis.get");
    /// ```
    pub const fn new_static(name: &'static str) -> Self {
        Self(Repr::Static(name))
    }

    /// The name as a string slice.
    ///
    /// ```
    /// assert_eq!(stayfast_core::Name::from("fs.read").as_str(), "fs.read");
    /// ```
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Static(s) => s,
            Repr::Shared(s) => s,
        }
    }

    /// The name as a metric label value.
    pub(crate) fn to_label(&self) -> Cow<'static, str> {
        match &self.0 {
            Repr::Static(s) => Cow::Borrowed(s),
            Repr::Shared(s) => Cow::Owned(s.to_string()),
        }
    }
}

impl From<&'static str> for Name {
    fn from(name: &'static str) -> Self {
        Self::new_static(name)
    }
}

impl From<String> for Name {
    fn from(name: String) -> Self {
        Self(Repr::Shared(name.into()))
    }
}

impl From<Arc<str>> for Name {
    fn from(name: Arc<str>) -> Self {
        Self(Repr::Shared(name))
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}
