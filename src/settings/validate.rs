//! [`Settings::validate`](super::Settings::validate): every section's own validator,
//! with core's field names mapped back to the keys a user writes.

use std::time::Duration;

use stayfast_core::{config::ConfigError, redis::RedisConfig};

use super::{Problem, Settings};

impl Settings {
    /// Every problem found, at most one per section (each validator stops at its first).
    pub(super) fn problems(&self) -> Vec<Problem> {
        let mut problems = Vec::new();
        let mut check = |section: &str, result: Result<(), ConfigError>| {
            if let Err(e) = result {
                let key = match section {
                    "" => e.field().to_owned(),
                    _ => format!("{section}.{}", e.field()),
                };
                problems.push(Problem::new(key, e.problem()));
            }
        };
        let files = &self.timeouts.files;
        check(
            "timeouts.files",
            positive("read", files.read).and(positive("write", files.write)),
        );
        check("breaker", self.breaker.validate());
        check("retry", self.retry.validate());
        check("background", self.background.validate());
        check("", self.redis_problems());
        check("knowledge", self.knowledge.validate());
        check("transcripts", self.transcripts.validate());
        check("cache", self.cache.validate());
        check("metrics", self.metrics_problems());
        problems
    }

    /// The Redis handle's own validation (the URL, every field, the margin each bound
    /// must exceed), with its fields mapped to the settings' keys.
    fn redis_problems(&self) -> Result<(), ConfigError> {
        match self.redis_config().validate() {
            // `[breaker]` and `[retry]` are the handle's too: already reported above.
            Err(e) if e.field().starts_with("retry.") || e.field().starts_with("breaker.") => Ok(()),
            // Core names the margin by its field; the file has it under `[redis]`.
            result => result.map_err(|e| {
                let problem = e
                    .problem()
                    .replace("`deadline_margin`", "`redis.deadline_margin`");
                ConfigError::new(schema_key(e.field()), problem)
            }),
        }
    }

    /// What [`Telemetry::install`](crate::telemetry::Telemetry::install) would refuse,
    /// found at load time rather than at start-up.
    fn metrics_problems(&self) -> Result<(), ConfigError> {
        positive("upkeep_interval", self.metrics.upkeep_interval)?;
        let prefix = &self.metrics.prefix;
        if prefix.is_empty() || !prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(ConfigError::new(
                "prefix",
                "must be non-empty letters, digits and underscores",
            ));
        }
        Ok(())
    }
}

fn positive(field: &str, value: Duration) -> Result<(), ConfigError> {
    if value.is_zero() {
        return Err(ConfigError::new(field, "must be greater than zero"));
    }
    Ok(())
}

/// A [`RedisConfig`] field's key in the settings schema.
fn schema_key(field: &str) -> String {
    let mapped = match field {
        "connect_timeout" => "timeouts.redis.connection.connect",
        "unresponsive_timeout" => "timeouts.redis.connection.socket",
        "health_check_interval" => "timeouts.redis.connection.health_check",
        "command_timeout" => "timeouts.redis.operations.default",
        _ if field.starts_with("operations.") => return format!("timeouts.redis.{field}"),
        _ if field.starts_with("retry.") || field.starts_with("breaker.") => return field.to_owned(),
        _ => return format!("redis.{field}"),
    };
    mapped.to_owned()
}

impl Settings {
    /// The Redis handle's configuration: `[redis]`, `[timeouts.redis]`, `[breaker]` and
    /// `[retry]`, with the URL and password exposed for the client.
    ///
    /// ```
    /// use stayfast::{redis::RedisConfig, settings::Settings};
    /// let settings = Settings::from_toml("[timeouts.redis.operations]\nget = \"150ms\"").unwrap();
    /// let config: RedisConfig = settings.redis_config();
    /// assert_eq!(config.operations.get, Some(std::time::Duration::from_millis(150)));
    /// assert_eq!(Settings::default().redis_config(), RedisConfig::default());
    /// ```
    pub fn redis_config(&self) -> RedisConfig {
        let timeouts = &self.timeouts.redis;
        let mut config = RedisConfig::default();
        self.redis.apply(&mut config);
        config.connect_timeout = timeouts.connection.connect;
        config.unresponsive_timeout = timeouts.connection.socket;
        config.health_check_interval = timeouts.connection.health_check;
        config.command_timeout = timeouts.operations.default;
        config.operations.get = timeouts.operations.get;
        config.operations.set = timeouts.operations.set;
        config.operations.hgetall = timeouts.operations.hgetall;
        config.operations.pipeline = timeouts.operations.pipeline;
        config.operations.scan = timeouts.operations.scan;
        config.retry = self.retry.clone();
        config.breaker = self.breaker.clone();
        config
    }
}

#[cfg(test)]
mod tests {
    use super::schema_key;

    #[test]
    fn core_fields_map_to_schema_keys() {
        for (field, key) in [
            ("url", "redis.url"),
            ("pool_size", "redis.pool_size"),
            ("connect_timeout", "timeouts.redis.connection.connect"),
            ("unresponsive_timeout", "timeouts.redis.connection.socket"),
            ("health_check_interval", "timeouts.redis.connection.health_check"),
            ("command_timeout", "timeouts.redis.operations.default"),
            ("operations.get", "timeouts.redis.operations.get"),
            ("retry.max_attempts", "retry.max_attempts"),
            ("breaker.failure_rate", "breaker.failure_rate"),
            ("reconnect_max_delay", "redis.reconnect_max_delay"),
        ] {
            assert_eq!(schema_key(field), key);
        }
    }
}
