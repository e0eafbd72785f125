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
///
/// Equality, ordering and hashing go by content: a static and an owned name with the
/// same text are the same name.
///
/// ```
/// use stayfast_core::Name;
/// assert_eq!(Name::from("redis.get"), Name::from(String::from("redis.get")));
/// ```
#[derive(Clone)]
pub struct Name(Repr);

#[derive(Clone)]
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

// By content, never by representation: `Name::from("x")` and `Name::from(String::from("x"))`
// must be one key in a map and one label value.
impl PartialEq for Name {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Name {}

impl std::hash::Hash for Name {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Name {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::Name;

    #[test]
    fn static_and_owned_names_are_one_name() {
        let (a, b) = (Name::from("redis.get"), Name::from(String::from("redis.get")));
        assert_eq!(a, b);
        assert_eq!(a.cmp(&b), std::cmp::Ordering::Equal);
        let set: HashSet<Name> = [a, b].into_iter().collect();
        assert_eq!(set.len(), 1, "one name, one map key");
        assert!(Name::from("a") < Name::from(String::from("b")));
    }
}
