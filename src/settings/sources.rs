//! Where settings come from: the defaults, a TOML file (or string), and `STAYFAST_*`
//! environment variables — each a figment [`Provider`] whose [`Metadata`] lets a bad
//! value be traced back to the file or variable that set it.

use std::{
    io::Read,
    path::{Path, PathBuf},
};

use figment::{
    Figment, Metadata, Profile, Provider, Source,
    providers::{Env, Format, Serialized, Toml},
    value::{Dict, Map, Value},
};
use stayfast_core::redis::RedisConfig;

use super::{SettingSource, SettingsError};

/// The prefix of every environment variable.
pub(crate) const ENV_PREFIX: &str = "STAYFAST_";
/// The variable naming the settings file.
pub(crate) const CONFIG_VAR: &str = "STAYFAST_CONFIG";
/// The file read from the working directory when `STAYFAST_CONFIG` is not set.
const DEFAULT_FILE: &str = "stayfast.toml";
/// A settings file is a few KiB; a larger one is a mistake (or `/dev/zero`).
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Keys whose values may hold credentials: never shown in errors, and read verbatim
/// from the environment (below).
pub(crate) const SECRET_KEYS: [&str; 3] = ["redis.url", "redis.password", "redis.sentinel_password"];

// Metadata names, recognised again when a value or an error is traced to its source.
const DEFAULTS_NAME: &str = "stayfast defaults";
/// Both environment providers' name, so both trace back the same way.
const ENV_NAME: &str = "STAYFAST_* environment variables";
const FILE_NAME: &str = "TOML file";
pub(crate) const STRING_NAME: &str = "TOML string";

/// The defaults layer alone.
pub(crate) fn defaults() -> Figment {
    Figment::from(Defaults)
}

/// defaults → `file` → environment.
pub(crate) fn layers(file: Option<TomlSource>) -> Figment {
    let mut figment = defaults();
    if let Some(file) = file {
        figment = figment.merge(file);
    }
    figment.merge(EnvVars).merge(SecretEnv)
}

fn env_metadata() -> Metadata {
    Metadata::named(ENV_NAME).interpolater(|_: &Profile, keys: &[&str]| env_var_name(keys))
}

/// Every `STAYFAST_*` variable but the file's name and the secrets, `__` for nesting
/// (`STAYFAST_TIMEOUTS__REDIS__OPERATIONS__GET`). A single `_` cannot nest: it is part
/// of key names like `pool_size`. figment's `Env` under a name of our own, so that the
/// variable behind a value is found again whatever figment calls its provider.
struct EnvVars;

impl Provider for EnvVars {
    fn metadata(&self) -> Metadata {
        env_metadata()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Env::prefixed(ENV_PREFIX)
            .ignore(&["CONFIG", "REDIS__URL", "REDIS__PASSWORD"])
            .split("__")
            .data()
    }
}

/// The settings file: the one `STAYFAST_CONFIG` names (which must exist), else
/// `./stayfast.toml` if there is one, else none.
///
/// # Errors
///
/// A file that cannot be read or is not valid TOML.
pub(crate) fn config_file() -> Result<Option<TomlSource>, SettingsError> {
    match std::env::var_os(CONFIG_VAR) {
        Some(path) if path.is_empty() => Err(SettingsError::File {
            path: PathBuf::new(),
            problem: format!("{CONFIG_VAR} is set but empty"),
        }),
        Some(path) => read(Path::new(&path), true).map(Some),
        None => match Path::new(DEFAULT_FILE).try_exists() {
            Ok(false) => Ok(None),
            Ok(true) => read(Path::new(DEFAULT_FILE), false).map(Some),
            Err(e) => Err(SettingsError::File {
                path: DEFAULT_FILE.into(),
                problem: e.to_string(),
            }),
        },
    }
}

fn read(path: &Path, named_by_env: bool) -> Result<TomlSource, SettingsError> {
    let fail = |problem: String| SettingsError::File {
        path: path.to_owned(),
        problem,
    };
    // NOTE: checked before opening, since opening a FIFO would block.
    let metadata = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound if named_by_env => {
            fail(format!("it does not exist (named by {CONFIG_VAR})"))
        }
        _ => fail(e.to_string()),
    })?;
    if !metadata.is_file() {
        return Err(fail("not a regular file".into()));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| fail(e.to_string()))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(fail(format!("larger than {MAX_FILE_BYTES} bytes")));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        fail(format!(
            "not valid UTF-8 (at byte {})",
            e.utf8_error().valid_up_to()
        ))
    })?;
    TomlSource::checked(SettingSource::File(path.to_owned()), text)
}

/// A TOML document already checked for syntax, or the reason it could not be.
pub(crate) struct TomlSource {
    origin: SettingSource,
    text: Result<String, SettingsError>,
}

impl TomlSource {
    /// Checks `text`'s syntax.
    ///
    /// # Errors
    ///
    /// [`SettingsError::Syntax`] with the line and column, and toml's message without
    /// the excerpt it would quote (figment's own error repeats the whole line, password
    /// included).
    pub(crate) fn checked(origin: SettingSource, text: String) -> Result<Self, SettingsError> {
        if let Err(e) = toml::from_str::<toml::Table>(&text) {
            let offset = e.span().map_or(0, |span| span.start);
            let before = text.get(..offset).unwrap_or(&text);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().unwrap_or_default().chars().count() + 1;
            return Err(SettingsError::Syntax {
                origin,
                line,
                column,
                message: e.message().trim().replace('\n', "; "),
            });
        }
        Ok(Self {
            origin,
            text: Ok(text),
        })
    }

    /// A source that failed before it could provide anything: extracting from a figment
    /// that holds it reports `error` (already free of secrets).
    pub(crate) fn failed(error: SettingsError) -> Self {
        let origin = match &error {
            SettingsError::File { path, .. } => SettingSource::File(path.clone()),
            SettingsError::Syntax { origin, .. } => origin.clone(),
            SettingsError::Invalid { .. } => SettingSource::Other(STRING_NAME.into()),
        };
        Self {
            origin,
            text: Err(error),
        }
    }
}

impl Provider for TomlSource {
    fn metadata(&self) -> Metadata {
        let metadata = match &self.origin {
            SettingSource::File(path) => Metadata::from(FILE_NAME, Source::File(path.clone())),
            _ => Metadata::named(STRING_NAME),
        };
        metadata.interpolater(|_: &Profile, keys: &[&str]| keys.join("."))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        match &self.text {
            // NOTE: never figment's message: it quotes the text. The syntax was checked
            // with the same parser, so this is not expected to fail.
            Ok(text) => Toml::string(text)
                .data()
                .map_err(|_| figment::Error::from(format!("{}: not valid TOML", self.origin))),
            Err(error) => Err(figment::Error::from(error.to_string())),
        }
    }
}

/// The defaults that differ from a section type's own `Default`: `[retry]` defaults to
/// the Redis handle's retry (2 attempts, not `RetryConfig`'s 3). As a figment layer, a
/// `[retry]` section that sets one field keeps the others from here.
struct Defaults;

impl Provider for Defaults {
    fn metadata(&self) -> Metadata {
        Metadata::named(DEFAULTS_NAME)
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Serialized::default("retry", RedisConfig::default().retry).data()
    }
}

/// `STAYFAST_REDIS__URL` and `STAYFAST_REDIS__PASSWORD`, taken verbatim.
///
/// figment's `Env` parses values as numbers, booleans, arrays and tables: a password
/// `007` would become the number 7, `1.50` the float 1.5, ` pw ` would be trimmed and
/// `[x]` become an array. A secret must reach Redis exactly as written. A value wrapped
/// in double quotes is unescaped as figment does (`"\"007\""` gives `007`), so the
/// quoting workaround figment documents keeps working.
struct SecretEnv;

impl Provider for SecretEnv {
    fn metadata(&self) -> Metadata {
        env_metadata()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut redis = Dict::new();
        for key in SECRET_KEYS {
            let field = key.trim_start_matches("redis.");
            let var = env_var_name(&key.split('.').collect::<Vec<_>>());
            let Some(raw) = std::env::vars_os()
                .filter(|(name, _)| name.to_str().is_some_and(|n| n.eq_ignore_ascii_case(&var)))
                .map(|(_, value)| value)
                .last()
            else {
                continue;
            };
            let raw = raw.into_string().map_err(|_| {
                figment::Error::from(format!("environment variable {var} is not valid UTF-8")).with_path(key)
            })?;
            redis.insert(field.to_owned(), Value::from(unquote(raw)));
        }
        if redis.is_empty() {
            return Ok(Map::new());
        }
        let mut root = Dict::new();
        root.insert("redis".to_owned(), Value::from(redis));
        Ok(Profile::Default.collect(root))
    }
}

fn unquote(raw: String) -> String {
    if raw.len() >= 2
        && raw.starts_with('"')
        && raw.ends_with('"')
        && let Ok(Value::String(_, text)) = raw.parse::<Value>()
    {
        return text;
    }
    raw
}

/// `STAYFAST_` + the key's parts in upper case joined by `__`.
pub(crate) fn env_var_name<S: AsRef<str>>(path: &[S]) -> String {
    let parts: Vec<String> = path.iter().map(|p| p.as_ref().to_ascii_uppercase()).collect();
    format!("{ENV_PREFIX}{}", parts.join("__"))
}

/// The variable that set the value at `path`: `STAYFAST_REDIS__POOL_SIZE`, or a parent
/// holding a table (`STAYFAST_REDIS={pool_size=0}`).
fn env_var_setting(path: &[String]) -> String {
    let set: Vec<String> = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .map(|name| name.to_ascii_uppercase())
        .collect();
    let exact = env_var_name(path);
    (1..=path.len())
        .rev()
        .map(|len| env_var_name(&path[..len]))
        .find(|name| set.contains(name))
        // A child that made this key a table (`STAYFAST_REDIS__PASSWORD__X=…`).
        .or_else(|| {
            set.iter()
                .find(|name| name.starts_with(&format!("{exact}__")))
                .cloned()
        })
        .unwrap_or(exact)
}

/// Where the value at `path` came from, by the metadata of the provider that set it
/// (`None`: no provider did, so it is the built-in default).
pub(crate) fn origin(metadata: Option<&Metadata>, path: &[String]) -> SettingSource {
    let Some(metadata) = metadata else {
        return SettingSource::Default;
    };
    match (&*metadata.name, &metadata.source) {
        (DEFAULTS_NAME, _) => SettingSource::Default,
        (ENV_NAME, _) => SettingSource::Env(env_var_setting(path)),
        (_, Some(Source::File(path))) => SettingSource::File(path.clone()),
        (name, Some(Source::Custom(source))) => SettingSource::Other(format!("{name} {source}")),
        (name, _) => SettingSource::Other(name.to_owned()),
    }
}
