//! Configuration: the duration format, unknown keys, and invalid values rejected with
//! errors naming the field — never a panic (E1, E2 of `docs/testing.md`, for the
//! wrappers).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use stayfast_core::{
    CircuitBreaker, Policy,
    config::{BreakerConfig, BulkheadConfig, PolicyConfig, RetryConfig, duration},
};

#[test]
fn durations_accept_units_and_seconds() {
    for (text, expected) in [
        ("150ms", Duration::from_millis(150)),
        ("2s", Duration::from_secs(2)),
        ("1.5s", Duration::from_millis(1500)),
        ("1m30s", Duration::from_secs(90)),
        ("1m 30s", Duration::from_secs(90)),
        ("2h", Duration::from_secs(7200)),
        ("250us", Duration::from_micros(250)),
        ("10ns", Duration::from_nanos(10)),
        ("1.5", Duration::from_millis(1500)),
        ("0", Duration::ZERO),
    ] {
        assert_eq!(duration::parse(text), Ok(expected), "{text}");
    }
}

#[test]
fn durations_reject_bad_values_with_a_reason() {
    for (text, reason) in [
        ("-1s", "negative"),
        ("-1", "negative"),
        ("NaN", "NaN"),
        ("inf", "too large"),
        ("1e20", "too large"),
        ("10 parsecs", "unknown unit \"parsecs\""),
        ("ms", "expected a number"),
        ("5", ""),
        ("", "empty"),
    ] {
        let result = duration::parse(text);
        if text == "5" {
            assert!(result.is_ok());
            continue;
        }
        let err = result.unwrap_err();
        assert!(err.contains(reason), "{text:?}: {err}");
    }
}

/// TOML numbers and strings both deserialize; NaN, inf and negatives are errors that
/// name the key, never a panic of `Duration::from_secs_f64`.
#[test]
fn toml_durations_are_checked_at_deserialization() {
    let ok: BreakerConfig = toml::from_str("open_for = 1.5\nmax_open_for = \"2m\"").unwrap();
    assert_eq!(ok.open_for, Duration::from_millis(1500));
    for bad in [
        "open_for = nan",
        "open_for = inf",
        "open_for = -1.0",
        "open_for = -1",
        "open_for = 1e20",
    ] {
        let err = toml::from_str::<BreakerConfig>(bad).unwrap_err().to_string();
        assert!(err.contains("open_for"), "{bad}: {err}");
    }
}

#[test]
fn unknown_keys_are_rejected_naming_the_key() {
    let err = toml::from_str::<RetryConfig>("max_atempts = 3")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("max_atempts") && err.contains("max_attempts"),
        "{err}"
    );
    let err = toml::from_str::<PolicyConfig>("[retry]\njiter = false")
        .unwrap_err()
        .to_string();
    assert!(err.contains("jiter"), "{err}");
    let err = serde_json::from_str::<BulkheadConfig>(r#"{"max_concurrency": 3}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("max_concurrency"), "{err}");
}

/// Every out-of-range value is a `ConfigError` naming its field.
#[test]
fn invalid_values_name_their_field() {
    let breaker_cases: [(&str, &str); 12] = [
        ("consecutive_failures = 0", "consecutive_failures"),
        ("failure_rate = 0.0", "failure_rate"),
        ("failure_rate = 1.01", "failure_rate"),
        ("failure_rate = nan", "failure_rate"),
        ("slow_call_rate = -0.5", "slow_call_rate"),
        ("window = 0", "window"),
        ("minimum_calls = 0", "minimum_calls"),
        ("window = 10\nminimum_calls = 11", "minimum_calls"),
        ("open_for = 0", "open_for"),
        ("open_growth = 0.5", "open_growth"),
        ("open_growth = inf", "open_growth"),
        ("half_open_probes = 0", "half_open_probes"),
    ];
    for (text, field) in breaker_cases {
        let config: BreakerConfig = toml::from_str(text).unwrap();
        assert_eq!(config.validate().unwrap_err().field(), field, "{text}");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let _guard = rt.enter();
        assert_eq!(CircuitBreaker::new("t", &config).unwrap_err().field(), field);
    }
    let breaker: BreakerConfig = toml::from_str("open_for = \"10s\"\nmax_open_for = \"1s\"").unwrap();
    assert_eq!(breaker.validate().unwrap_err().field(), "max_open_for");

    for (text, field) in [
        ("max_attempts = 0", "retry.max_attempts"),
        ("multiplier = nan", "retry.multiplier"),
        ("min_delay = \"2s\"\nmax_delay = \"1s\"", "retry.max_delay"),
        ("max_elapsed = 0", "retry.max_elapsed"),
        ("[budget]\nratio = 0", "retry.budget.ratio"),
        ("[budget]\nratio = 2", "retry.budget.ratio"),
    ] {
        let retry: RetryConfig = toml::from_str(text).unwrap();
        let err = Policy::builder("op").retry(&retry).build().unwrap_err();
        assert_eq!(err.field(), field, "{text}");
        assert!(
            err.to_string().starts_with(&format!("invalid config `{field}`")),
            "{err}"
        );
    }

    for (text, field) in [("timeout = 0", "timeout"), ("deadline = \"0ms\"", "deadline")] {
        let config: PolicyConfig = toml::from_str(text).unwrap();
        assert_eq!(
            Policy::builder("op").config(&config).build().unwrap_err().field(),
            field
        );
    }

    let bulkhead: BulkheadConfig = toml::from_str("max_concurrent = 0").unwrap();
    assert_eq!(bulkhead.validate().unwrap_err().field(), "max_concurrent");
}

#[test]
fn defaults_are_valid_and_round_trip_through_toml() {
    assert!(BreakerConfig::default().validate().is_ok());
    assert!(RetryConfig::default().validate().is_ok());
    assert!(BulkheadConfig::default().validate().is_ok());
    let policy = PolicyConfig::default();
    assert!(policy.validate().is_ok());
    assert_eq!(
        policy.timeout,
        Some(Duration::from_secs(2)),
        "every call bounded by default"
    );
    let breaker = BreakerConfig::default();
    let text = toml::to_string(&breaker).unwrap();
    assert_eq!(toml::from_str::<BreakerConfig>(&text).unwrap(), breaker);
    let retry = RetryConfig::default();
    let text = toml::to_string(&retry).unwrap();
    assert_eq!(toml::from_str::<RetryConfig>(&text).unwrap(), retry);
}

/// Issue #12 item 12: one redaction for core and facade. For arbitrary URL shapes
/// (userinfo `user:pass@`, `:pass@`, a lone `pass@`, none; one or several hosts; a path;
/// `@` in an ordinary parameter; the password in `password=` / `sentinel_password=`)
/// the password never appears in the output. Only the password holds upper-case
/// letters, so no letter of it may appear either, which catches a partial leak.
mod redaction {
    use proptest::prelude::*;
    use stayfast_core::redact_url;

    /// Where the password goes.
    #[derive(Clone, Debug)]
    enum Shape {
        UserPass(String),
        ColonPass,
        LonePass,
        Query { key: &'static str, user: Option<String> },
    }

    fn shape() -> impl Strategy<Value = Shape> {
        let user = "[a-z][a-z0-9_]{0,7}";
        prop_oneof![
            user.prop_map(Shape::UserPass),
            Just(Shape::ColonPass),
            Just(Shape::LonePass),
            (
                prop_oneof![Just("password"), Just("sentinel_password")],
                proptest::option::of(user)
            )
                .prop_map(|(key, user)| Shape::Query { key, user }),
        ]
    }

    fn hosts() -> impl Strategy<Value = String> {
        proptest::collection::vec("[a-z][a-z0-9.-]{0,10}(:[0-9]{1,5})?", 1..4).prop_map(|h| h.join(","))
    }

    proptest! {
        #[test]
        fn the_password_never_shows(
            scheme in prop_oneof![Just("redis"), Just("rediss"), Just("redis-cluster"), Just("redis-sentinel")],
            shape in shape(),
            // Raw `/`, `?`, `#`, `@` included: a password pasted unescaped must not end
            // the hidden part early.
            password in "[A-Z][A-Z0-9/?#@!$%*.~+-]{0,15}",
            hosts in hosts(),
            path in prop_oneof![Just(""), Just("/0"), Just("/mymaster"), Just("/mymaster/2")],
            before in prop_oneof![Just(""), Just("protocol=resp3&"), Just("client_name=me@x&")],
            after in prop_oneof![Just(""), Just("&db=1"), Just("&client_name=a@b")],
        ) {
            let url = match &shape {
                Shape::UserPass(user) => format!("{scheme}://{user}:{password}@{hosts}{path}?{before}x=1{after}"),
                Shape::ColonPass => format!("{scheme}://:{password}@{hosts}{path}"),
                Shape::LonePass => format!("{scheme}://{password}@{hosts}{path}"),
                Shape::Query { key, user: Some(user) } => {
                    format!("{scheme}://{user}@{hosts}{path}?{before}{key}={password}{after}")
                }
                Shape::Query { key, user: None } => format!("{scheme}://{hosts}{path}?{before}{key}={password}{after}"),
            };
            let shown = redact_url(&url);
            prop_assert!(!shown.contains(&password), "{url} → {shown}");
            prop_assert!(!shown.chars().any(|c| c.is_ascii_uppercase()), "{url} → {shown}");
            prop_assert!(shown.contains("***"), "{url} → {shown}");
            // Nothing but the password is hidden when no `@` stands in an ordinary
            // parameter: the hosts are still there to read.
            if !before.contains('@') && !after.contains('@') {
                prop_assert!(shown.contains(&hosts), "{url} → {shown}");
            }
        }
    }
}
