//! [`SettingsError`]: what is wrong with the settings, key by key, and where each bad
//! value came from — never echoing a secret.

use std::{fmt, path::PathBuf};

/// Settings that cannot be used.
///
/// Every message names the file or variable to fix. Values of secret keys
/// (`redis.url`, `redis.password`) and of unknown keys are never shown, and a TOML
/// syntax error gives the line and column without quoting the line.
///
/// # Examples
///
/// ```
/// use stayfast::settings::{Settings, SettingsError};
///
/// let err = Settings::from_toml("[redis]\npool_size = 0").unwrap_err();
/// let SettingsError::Invalid { problems } = &err else { panic!("{err}") };
/// assert_eq!(problems[0].key, "redis.pool_size");
/// assert_eq!(err.to_string(), "invalid setting `redis.pool_size` (from TOML string): must be at least 1, found 0");
/// ```
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// The settings file is missing, unreadable, too large, not UTF-8, or not a file.
    #[error("cannot read settings file {}: {problem}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why it cannot be read.
        problem: String,
    },
    /// The settings text is not valid TOML. The message never quotes the text.
    #[error("{origin}:{line}:{column}: invalid TOML: {message}")]
    Syntax {
        /// Where the text came from (its file).
        origin: SettingSource,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column (in characters) of the error.
        column: usize,
        /// What is wrong, without the offending text.
        message: String,
    },
    /// Values that do not fit the schema or are out of range.
    #[error("{}", Problems(problems))]
    Invalid {
        /// One entry per problem found.
        problems: Vec<Problem>,
    },
}

impl SettingsError {
    /// The individual problems (empty for a file that could not be read or parsed).
    ///
    /// ```
    /// let err = stayfast::settings::Settings::from_toml("[retry]\nmax_attempts = 0").unwrap_err();
    /// assert_eq!(err.problems()[0].key, "retry.max_attempts");
    /// ```
    pub fn problems(&self) -> &[Problem] {
        match self {
            SettingsError::Invalid { problems } => problems,
            _ => &[],
        }
    }
}

struct Problems<'a>(&'a [Problem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            [one] if one.key.is_empty() => write!(f, "{one}"),
            [one] => write!(f, "invalid setting {one}"),
            many => {
                write!(f, "{} invalid settings:", many.len())?;
                for problem in many {
                    write!(f, "\n  - {problem}")?;
                }
                Ok(())
            }
        }
    }
}

/// One problem with one setting.
///
/// ```
/// use stayfast::settings::{Problem, SettingSource};
/// let err = stayfast::settings::Settings::from_toml("[timeouts.files]\nread = 0").unwrap_err();
/// let problem: &Problem = &err.problems()[0];
/// assert_eq!(problem.key, "timeouts.files.read");
/// assert_eq!(problem.message, "must be greater than zero");
/// assert_eq!(problem.value.as_deref(), Some("0"));
/// assert_eq!(problem.origin, Some(SettingSource::Other("TOML string".into())));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Problem {
    /// The dotted key (`timeouts.redis.operations.get`); empty when the problem is with
    /// a source as a whole (a provider that failed).
    pub key: String,
    /// What is wrong.
    pub message: String,
    /// The offending value as written, when it is known and not secret.
    pub value: Option<String>,
    /// Where the value came from, when known (`None` for a `Settings` built in code).
    pub origin: Option<SettingSource>,
}

impl Problem {
    pub(crate) fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
            value: None,
            origin: None,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            // A source that failed as a whole: its message usually names it already.
            f.write_str(&self.message)?;
            return match &self.origin {
                Some(origin) if !self.message.contains(&origin.to_string()) => write!(f, " (from {origin})"),
                _ => Ok(()),
            };
        }
        write!(f, "`{}`", self.key)?;
        if let Some(origin) = &self.origin {
            write!(f, " (from {origin})")?;
        }
        write!(f, ": {}", self.message)?;
        // NOTE: messages often quote the value already ("…, found 1.5").
        match &self.value {
            Some(value) if !self.message.contains("found ") && !self.message.contains(value.as_str()) => {
                write!(f, ", found {value}")
            }
            _ => Ok(()),
        }
    }
}

/// Where a setting's value came from.
///
/// ```
/// use stayfast::settings::SettingSource;
/// let env = SettingSource::Env("STAYFAST_REDIS__POOL_SIZE".into());
/// assert_eq!(env.to_string(), "environment variable STAYFAST_REDIS__POOL_SIZE");
/// assert_eq!(SettingSource::File("stayfast.toml".into()).to_string(), "stayfast.toml");
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SettingSource {
    /// The built-in default.
    Default,
    /// A TOML file.
    File(PathBuf),
    /// An environment variable (its full name).
    Env(String),
    /// Anything else: a TOML string, a provider added to the figment.
    Other(String),
}

impl fmt::Display for SettingSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SettingSource::Default => f.write_str("default"),
            SettingSource::File(path) => write!(f, "{}", path.display()),
            SettingSource::Env(name) => write!(f, "environment variable {name}"),
            SettingSource::Other(name) => f.write_str(name),
        }
    }
}
