//! [`Settings`]: every knob of the facade, from defaults, a TOML file and the environment.
//!
//! Layers, each overriding the one before:
//!
//! 1. the defaults (`Settings::default()`, which agree with core's config types);
//! 2. the TOML file named by `STAYFAST_CONFIG` (which must then exist), else
//!    `./stayfast.toml` if there is one — `stayfast.example.toml` lists every key;
//! 3. `STAYFAST_*` environment variables, `__` separating the parts of a key:
//!    `STAYFAST_TIMEOUTS__REDIS__OPERATIONS__GET=1.5s`, `STAYFAST_REDIS__POOL_SIZE=8`.
//!
//! Then everything is validated. A [`SettingsError`] names each bad key, its value and
//! the file or variable that set it; secrets (`redis.url`, `redis.password`) are
//! [`Secret`]s, never printed, not even in errors.
//!
//! Durations are written `"150ms"`, `"2s"`, `"1m30s"` or as a number of seconds (`1.5`).
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use stayfast::settings::Settings;
//!
//! let settings = Settings::from_toml(r#"
//!     [timeouts.redis.operations]
//!     get = "150ms"
//!     [redis]
//!     url = "redis://:hunter2@cache.internal:6379/0"
//! "#).unwrap();
//! assert_eq!(settings.timeouts.redis.operations.get, Some(Duration::from_millis(150)));
//! assert!(!format!("{settings:?}").contains("hunter2"));
//!
//! let err = Settings::from_toml("[redis]\nurll = \"redis://h\"").unwrap_err();
//! assert!(err.to_string().contains("`redis.urll` (from TOML string): unknown key, expected one of"));
//! ```

mod error;
mod problems;
mod schema;
mod secret;
mod sources;
mod validate;

use figment::Figment;
use serde::Deserialize;
use stayfast_core::{
    BackgroundConfig,
    config::{BreakerConfig, RetryConfig},
    redis::RedisConfig,
};

pub use self::{
    error::{Problem, SettingSource, SettingsError},
    schema::{
        FileTimeouts, RedisConnectionTimeouts, RedisOperationTimeouts, RedisSettings, RedisTimeouts, Timeouts,
    },
    secret::{RedisUrl, Secret},
};
use crate::{
    cache::CacheConfig, knowledge::KnowledgeConfig, telemetry::TelemetryConfig, transcripts::TranscriptConfig,
};

/// Every setting of the facade. See the [module docs](self) for where they come from.
///
/// `Debug` never shows a secret.
///
/// # Examples
///
/// ```
/// use stayfast::settings::Settings;
///
/// let mut settings = Settings::default();
/// settings.redis.pool_size = 8;
/// assert!(settings.validate().is_ok());
/// settings.redis.pool_size = 0;
/// assert_eq!(settings.validate().unwrap_err().problems()[0].key, "redis.pool_size");
/// ```
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Settings {
    /// `[timeouts]`: the bound of every Redis and file call.
    pub timeouts: Timeouts,
    /// `[breaker]`: the circuit breakers, one shared by every Redis command and one for the
    /// transcript directory (`fs.transcripts`).
    pub breaker: BreakerConfig,
    /// `[retry]`: retries of idempotent Redis commands. Defaults to the Redis handle's
    /// (2 attempts); a section that sets some fields keeps these defaults for the
    /// others when read through [`figment`](Self::figment).
    pub retry: RetryConfig,
    /// `[background]`: the fire-and-forget spawner (cache repopulation).
    pub background: BackgroundConfig,
    /// `[redis]`: the connection pool.
    pub redis: RedisSettings,
    /// `[knowledge]`: the knowledge store.
    pub knowledge: KnowledgeConfig,
    /// `[transcripts]`: the transcript store.
    pub transcripts: TranscriptConfig,
    /// `[cache]`: the JSON cache.
    pub cache: CacheConfig,
    /// `[metrics]`: the Prometheus exporter.
    pub metrics: TelemetryConfig,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            timeouts: Timeouts::default(),
            breaker: BreakerConfig::default(),
            retry: RedisConfig::default().retry,
            background: BackgroundConfig::default(),
            redis: RedisSettings::default(),
            knowledge: KnowledgeConfig::default(),
            transcripts: TranscriptConfig::default(),
            cache: CacheConfig::default(),
            metrics: TelemetryConfig::default(),
        }
    }
}

impl Settings {
    /// The variable naming the settings file.
    ///
    /// ```
    /// assert_eq!(stayfast::settings::Settings::CONFIG_ENV, "STAYFAST_CONFIG");
    /// ```
    pub const CONFIG_ENV: &'static str = sources::CONFIG_VAR;

    /// Reads the settings: defaults, then the file, then the environment (see the
    /// [module docs](self)), and validates them.
    ///
    /// # Errors
    ///
    /// A file named by `STAYFAST_CONFIG` that does not exist; a file that cannot be
    /// read, is over 1 MiB or is not valid TOML; unknown keys, values of the wrong type,
    /// values out of range — each naming its key and where it came from.
    ///
    /// ```standalone_crate
    /// # // Its own process: a Jail changes the process's working directory and env.
    /// # figment::Jail::expect_with(|jail| {
    /// jail.create_file("stayfast.toml", "[redis]\npool_size = 8")?;
    /// jail.set_env("STAYFAST_REDIS__POOL_SIZE", "16");
    /// let settings = stayfast::settings::Settings::load().unwrap();
    /// assert_eq!(settings.redis.pool_size, 16); // the environment wins over the file
    /// # Ok(()) });
    /// ```
    pub fn load() -> Result<Self, SettingsError> {
        let file = sources::config_file()?;
        Self::from_figment(&sources::layers(file))
    }

    /// The figment [`load`](Self::load) reads, for adding your own providers before
    /// [`from_figment`](Self::from_figment). A settings file that cannot be read is
    /// reported when the figment is extracted.
    ///
    /// ```standalone_crate
    /// use figment::providers::Serialized;
    /// use stayfast::settings::Settings;
    /// # figment::Jail::expect_with(|_| {
    /// let figment = Settings::figment().merge(Serialized::default("redis.pool_size", 2));
    /// assert_eq!(Settings::from_figment(&figment).unwrap().redis.pool_size, 2);
    /// # Ok(()) });
    /// ```
    pub fn figment() -> Figment {
        let file = sources::config_file().unwrap_or_else(|e| Some(sources::TomlSource::failed(e)));
        sources::layers(file)
    }

    /// Extracts and validates the settings from `figment`.
    ///
    /// # Errors
    ///
    /// Every error figment reports (unknown keys, wrong types, a provider that failed),
    /// else every invalid value — each naming its key and source.
    ///
    /// ```
    /// use figment::{Figment, providers::{Format, Toml}};
    /// use stayfast::settings::{Settings, SettingSource};
    ///
    /// let figment = Figment::from(Toml::string("[redis]\npool_size = 0"));
    /// let err = Settings::from_figment(&figment).unwrap_err();
    /// assert_eq!(err.problems()[0].key, "redis.pool_size");
    /// ```
    pub fn from_figment(figment: &Figment) -> Result<Self, SettingsError> {
        let settings: Settings = figment
            .extract()
            .map_err(|e| problems::from_figment_error(e, figment))?;
        match settings.problems() {
            found if found.is_empty() => Ok(settings),
            found => Err(problems::located(found, figment)),
        }
    }

    /// Settings from a TOML document over the defaults (no file, no environment).
    ///
    /// # Errors
    ///
    /// As [`from_figment`](Self::from_figment), and [`SettingsError::Syntax`] for text
    /// that is not TOML.
    ///
    /// ```
    /// let settings = stayfast::settings::Settings::from_toml("[retry]\nmin_delay = \"10ms\"").unwrap();
    /// assert_eq!(settings.retry.max_attempts, 2); // the rest of [retry] keeps its defaults
    /// ```
    pub fn from_toml(text: &str) -> Result<Self, SettingsError> {
        let origin = SettingSource::Other(sources::STRING_NAME.into());
        let source = sources::TomlSource::checked(origin, text.to_owned())?;
        Self::from_figment(&sources::defaults().merge(source))
    }

    /// Checks every section with its own validator.
    ///
    /// # Errors
    ///
    /// [`SettingsError::Invalid`] with the first problem of each section, keyed as in
    /// the file (`timeouts.redis.operations.default`, not core's `command_timeout`).
    /// Called on settings built in code, problems have no `origin`.
    ///
    /// ```
    /// let mut settings = stayfast::settings::Settings::default();
    /// settings.timeouts.redis.operations.default = std::time::Duration::ZERO;
    /// let err = settings.validate().unwrap_err();
    /// assert_eq!(err.problems()[0].key, "timeouts.redis.operations.default");
    /// ```
    pub fn validate(&self) -> Result<(), SettingsError> {
        match self.problems() {
            problems if problems.is_empty() => Ok(()),
            problems => Err(SettingsError::Invalid { problems }),
        }
    }
}
