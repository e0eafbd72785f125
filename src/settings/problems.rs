//! Turning figment's errors and failed validations into [`Problem`]s that name the key,
//! the value and its source — and never a secret.

use figment::{
    Figment,
    error::{Actual, Kind, OneOf},
    value::Value,
};

use super::{
    Problem, SettingsError,
    sources::{SECRET_KEYS, origin},
};

/// Every error figment reported (it chains one per failed provider).
pub(crate) fn from_figment_error(error: figment::Error, figment: &Figment) -> SettingsError {
    let problems = error.into_iter().map(|e| explain(e, figment)).collect();
    scrubbed(problems, figment)
}

/// A failed validation's problems, with where each value came from and what it was.
pub(crate) fn located(mut problems: Vec<Problem>, figment: &Figment) -> SettingsError {
    for problem in &mut problems {
        let path: Vec<String> = problem.key.split('.').map(str::to_owned).collect();
        problem.origin = Some(origin(figment.find_metadata(&problem.key), &path));
        if !is_secret(&problem.key) {
            problem.value = figment
                .find_value(&problem.key)
                .ok()
                .map(|v| render(&v.to_actual()));
        }
    }
    scrubbed(problems, figment)
}

fn explain(error: figment::Error, figment: &Figment) -> Problem {
    let key = error.path.join(".");
    let secret = is_secret(&key);
    let (message, value) = match &error.kind {
        Kind::InvalidType(actual, expected) if secret => {
            (format!("expected {expected}, found {}", kind(actual)), None)
        }
        Kind::InvalidType(actual, expected) => (format!("expected {expected}"), Some(render(actual))),
        Kind::InvalidValue(actual, expected) if secret => {
            (format!("invalid {}, expected {expected}", kind(actual)), None)
        }
        Kind::InvalidValue(actual, expected) => (
            format!("invalid value, expected {expected}"),
            Some(render(actual)),
        ),
        // NOTE: an unknown key's value is never shown: it may be a misspelt `password`.
        Kind::UnknownField(_, expected) => (format!("unknown key, expected {}", OneOf(expected)), None),
        Kind::UnknownVariant(_, expected) if secret => (format!("expected {}", OneOf(expected)), None),
        Kind::UnknownVariant(found, expected) => (
            format!("expected {}", OneOf(expected)),
            Some(format!("{found:?}")),
        ),
        // A provider that failed as a whole: only the first line, since a parser's
        // message may go on to quote the text (toml's does).
        _ if key.is_empty() => (first_line(&error.kind.to_string()), None),
        Kind::Message(message) => {
            let value = (!secret)
                .then(|| figment.find_value(&key).ok().map(|v| render(&v.to_actual())))
                .flatten();
            (message.clone(), value)
        }
        other => (other.to_string(), None),
    };
    Problem {
        origin: Some(origin(error.metadata.as_ref(), &error.path)),
        key,
        message,
        value,
    }
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_owned()
}

/// Whether a value at `key` may hold a secret: a secret key, anything under one, or a
/// table holding one (`redis` given as a string, say).
pub(crate) fn is_secret(key: &str) -> bool {
    key.is_empty()
        || SECRET_KEYS.iter().any(|secret| {
            key == *secret
                || secret.strip_prefix(key).is_some_and(|rest| rest.starts_with('.'))
                || key.strip_prefix(secret).is_some_and(|rest| rest.starts_with('.'))
        })
}

/// The type of a value, without the value.
fn kind(actual: &Actual) -> &'static str {
    match actual {
        Actual::Bool(_) => "a boolean",
        Actual::Unsigned(_) | Actual::Signed(_) => "an integer",
        Actual::Float(_) => "a float",
        Actual::Char(_) | Actual::Str(_) => "a string",
        Actual::Bytes(_) => "bytes",
        Actual::Unit | Actual::Option => "nothing",
        Actual::Map => "a table",
        Actual::Seq => "an array",
        _ => "another type",
    }
}

/// A value as it would be written in TOML.
fn render(actual: &Actual) -> String {
    match actual {
        Actual::Bool(b) => b.to_string(),
        Actual::Unsigned(n) => n.to_string(),
        Actual::Signed(n) => n.to_string(),
        Actual::Float(x) => x.to_string(),
        Actual::Char(c) => format!("{:?}", c.to_string()),
        Actual::Str(s) => format!("{s:?}"),
        other => kind(other).to_owned(),
    }
}

/// The last line of defence: whatever a message or value says, no text of a secret
/// key's value (nor the password inside the URL) survives in it. Short texts are left
/// alone: replacing `"1"` everywhere would garble `must be at least 1` and hide nothing.
fn scrubbed(mut problems: Vec<Problem>, figment: &Figment) -> SettingsError {
    let mut secrets: Vec<String> = Vec::new();
    for key in SECRET_KEYS {
        let Ok(value) = figment.find_value(key) else {
            continue;
        };
        let text = match value {
            Value::String(_, s) => s,
            other => match other.to_actual() {
                Actual::Unsigned(n) => n.to_string(),
                Actual::Signed(n) => n.to_string(),
                Actual::Float(x) => x.to_string(),
                _ => continue,
            },
        };
        if let Some(password) = url_password(&text) {
            secrets.push(password.to_owned());
        }
        secrets.push(text);
    }
    secrets.retain(|s| s.chars().count() >= 3);
    for problem in &mut problems {
        for secret in &secrets {
            if problem.message.contains(secret.as_str()) {
                problem.message = problem.message.replace(secret.as_str(), "***");
            }
            if problem
                .value
                .as_deref()
                .is_some_and(|v| v.contains(secret.as_str()))
            {
                problem.value = Some("***".into());
            }
        }
    }
    SettingsError::Invalid { problems }
}

/// The password of `scheme://user:password@host…` (everything between the first `:`
/// of the credentials and the last `@`).
fn url_password(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let (credentials, _) = rest.rsplit_once('@')?;
    Some(
        credentials
            .split_once(':')
            .map_or(credentials, |(_, password)| password),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use figment::{Figment, providers::Serialized};

    use super::*;

    #[test]
    fn the_backstop_scrubs_secret_texts_from_any_problem() {
        let figment = Figment::from(Serialized::default("redis.password", "hunter22"))
            .merge(Serialized::default("redis.url", "redis://app:c0rrect-h0rse@h:1"));
        let problem = |message: &str, value: &str| Problem {
            value: Some(value.into()),
            ..Problem::new("knowledge.prefix", message)
        };
        let err = scrubbed(
            vec![
                problem("no hunter22 here", "\"x hunter22\""),
                problem("nor c0rrect-h0rse", "1"),
            ],
            &figment,
        );
        let shown = format!("{err} {err:?}");
        assert!(
            !shown.contains("hunter22") && !shown.contains("c0rrect-h0rse"),
            "{shown}"
        );
        assert_eq!(
            err.problems()[1].value.as_deref(),
            Some("1"),
            "short texts untouched"
        );
    }

    #[test]
    fn secret_keys_and_their_tables() {
        for key in [
            "",
            "redis",
            "redis.url",
            "redis.password",
            "redis.password.value",
            "redis.sentinel_password",
        ] {
            assert!(is_secret(key), "{key}");
        }
        for key in ["redis.pool_size", "redis.urll", "metrics", "redis.passwords"] {
            assert!(!is_secret(key), "{key}");
        }
    }
}
