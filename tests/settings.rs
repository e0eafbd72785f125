//! Settings: the example file is the defaults, defaults agree with core, the layers
//! override in order (default < file < env), invalid values and unknown keys name the
//! key and the file or variable (E1, E2), and no secret leaks through Debug, Display or
//! any error (F3, configuration part). Every test touching env or the working directory
//! runs in a `figment::Jail`.
#![allow(clippy::unwrap_used)]
// `figment::Jail`'s closures return figment's own (large) error type.
#![allow(clippy::result_large_err)]

use std::{path::PathBuf, time::Duration};

use figment::{
    Jail,
    providers::{Env, Serialized},
};
use proptest::prelude::*;
use stayfast::{
    redis::RedisConfig,
    settings::{RedisUrl, Secret, SettingSource, Settings, SettingsError},
};

const SENTINEL: &str = "s3ntinel-Pa55";

fn example() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/stayfast.example.toml")).unwrap()
}

/// The one problem of `err`, as (key, origin).
fn only_problem(err: &SettingsError) -> (String, Option<SettingSource>) {
    let problems = err.problems();
    assert_eq!(problems.len(), 1, "{err}");
    (problems[0].key.clone(), problems[0].origin.clone())
}

fn file(name: &str) -> Option<SettingSource> {
    Some(SettingSource::File(PathBuf::from(name)))
}

fn env(name: &str) -> Option<SettingSource> {
    Some(SettingSource::Env(name.to_owned()))
}

#[test]
fn example_file_is_the_defaults() {
    assert_eq!(Settings::from_toml(&example()).unwrap(), Settings::default());
    // Every key of the example is a real key (the file is not merely parsed leniently):
    // and it loads through STAYFAST_CONFIG the same way.
    Jail::expect_with(|jail| {
        jail.set_env(
            "STAYFAST_CONFIG",
            concat!(env!("CARGO_MANIFEST_DIR"), "/stayfast.example.toml"),
        );
        assert_eq!(Settings::load().unwrap(), Settings::default());
        Ok(())
    });
}

#[test]
fn defaults_agree_with_core() {
    let (ours, core) = (Settings::default().redis_config(), RedisConfig::default());
    assert_eq!(ours.url, core.url);
    assert_eq!(ours.password, core.password);
    assert_eq!(ours.username, core.username);
    assert_eq!(ours.sentinel_username, core.sentinel_username);
    assert_eq!(ours.sentinel_password, core.sentinel_password);
    assert_eq!(ours.tls, core.tls);
    assert_eq!(ours.pool_size, core.pool_size);
    assert_eq!(ours.connect_timeout, core.connect_timeout);
    assert_eq!(ours.unresponsive_timeout, core.unresponsive_timeout);
    assert_eq!(ours.health_check_interval, core.health_check_interval);
    assert_eq!(ours.command_timeout, core.command_timeout);
    assert_eq!(ours.operations, core.operations);
    assert_eq!(ours.max_command_buffer, core.max_command_buffer);
    assert_eq!(ours.reconnect_min_delay, core.reconnect_min_delay);
    assert_eq!(ours.reconnect_max_delay, core.reconnect_max_delay);
    assert_eq!(ours.deadline_margin, core.deadline_margin);
    assert_eq!(ours.tcp_nodelay, core.tcp_nodelay);
    assert_eq!(ours.open_on_disconnect, core.open_on_disconnect);
    assert_eq!(ours.retry, core.retry);
    assert_eq!(ours.breaker, core.breaker);
    assert_eq!(ours, core, "a field not compared above");
    assert!(Settings::default().validate().is_ok());
}

#[test]
fn layering_default_file_env() {
    Jail::expect_with(|jail| {
        assert_eq!(Settings::load().unwrap(), Settings::default(), "no file, no env");

        jail.create_file(
            "stayfast.toml",
            "[redis]\npool_size = 8\n[timeouts.redis.operations]\nget = \"1s\"\nset = 3",
        )?;
        let from_file = Settings::load().unwrap();
        assert_eq!(from_file.redis.pool_size, 8);
        assert_eq!(
            from_file.timeouts.redis.operations.get,
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            from_file.timeouts.redis.operations.set,
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            from_file.redis.max_command_buffer, 10_000,
            "untouched keys keep defaults"
        );

        jail.set_env("STAYFAST_TIMEOUTS__REDIS__OPERATIONS__GET", "1.5s");
        jail.set_env("STAYFAST_REDIS__TCP_NODELAY", "true");
        jail.set_env("STAYFAST_REDIS__OPEN_ON_DISCONNECT", "true");
        let from_env = Settings::load().unwrap();
        assert_eq!(
            from_env.timeouts.redis.operations.get,
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            from_env.timeouts.redis.operations.set,
            Some(Duration::from_secs(3)),
            "file"
        );
        assert_eq!(from_env.redis.pool_size, 8, "file");
        assert!(from_env.redis.tcp_nodelay, "env");
        assert!(from_env.redis_config().open_on_disconnect, "env");
        assert_eq!(
            from_env.redis_config().operations.get,
            Some(Duration::from_millis(1500))
        );

        // A number of seconds through env, too.
        jail.set_env("STAYFAST_TIMEOUTS__REDIS__OPERATIONS__GET", "0.25");
        assert_eq!(
            Settings::load().unwrap().timeouts.redis.operations.get,
            Some(Duration::from_millis(250))
        );
        Ok(())
    });
}

#[test]
fn config_env_names_the_file_which_must_exist() {
    Jail::expect_with(|jail| {
        jail.create_file("stayfast.toml", "[redis]\npool_size = 8")?;
        jail.create_dir("conf")?;
        jail.create_file("conf/custom.toml", "[redis]\npool_size = 3")?;

        // STAYFAST_CONFIG wins over ./stayfast.toml, and is not itself read as a key
        // (with deny_unknown_fields it would be an unknown `config`).
        jail.set_env("STAYFAST_CONFIG", "conf/custom.toml");
        assert_eq!(Settings::load().unwrap().redis.pool_size, 3);
        assert_eq!(
            Settings::from_figment(&Settings::figment())
                .unwrap()
                .redis
                .pool_size,
            3
        );

        jail.set_env("STAYFAST_CONFIG", "conf/missing.toml");
        let err = Settings::load().unwrap_err();
        let SettingsError::File { path, problem } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(path, &PathBuf::from("conf/missing.toml"));
        assert!(
            problem.contains("does not exist") && problem.contains("STAYFAST_CONFIG"),
            "{err}"
        );
        assert!(err.to_string().contains("conf/missing.toml"), "{err}");
        // Through the figment too, reported when extracted.
        let err = Settings::from_figment(&Settings::figment()).unwrap_err();
        assert!(err.to_string().contains("conf/missing.toml"), "{err}");

        jail.set_env("STAYFAST_CONFIG", "conf");
        let err = Settings::load().unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");

        jail.set_env("STAYFAST_CONFIG", "");
        assert!(matches!(Settings::load(), Err(SettingsError::File { .. })));
        Ok(())
    });
}

#[test]
fn oversized_and_binary_files_are_refused() {
    Jail::expect_with(|jail| {
        jail.create_file("stayfast.toml", &"# padding\n".repeat(110_000))?;
        let err = Settings::load().unwrap_err();
        assert!(err.to_string().contains("larger than 1048576 bytes"), "{err}");

        jail.create_binary("stayfast.toml", b"[redis]\npool_size = \xff")?;
        let err = Settings::load().unwrap_err();
        assert!(err.to_string().contains("not valid UTF-8"), "{err}");
        Ok(())
    });
}

#[test]
fn a_partial_retry_section_keeps_the_redis_defaults() {
    let settings = Settings::from_toml("[retry]\nmin_delay = \"10ms\"").unwrap();
    assert_eq!(settings.retry.max_attempts, 2, "not RetryConfig's own 3");
    assert_eq!(settings.retry.min_delay, Duration::from_millis(10));
    Jail::expect_with(|jail| {
        jail.set_env("STAYFAST_RETRY__MAX_DELAY", "1s");
        let settings = Settings::load().unwrap();
        assert_eq!(
            (settings.retry.max_attempts, settings.retry.max_delay),
            (2, Duration::from_secs(1))
        );
        Ok(())
    });
}

/// One bad value: its key, how to write it in TOML (under the key's table) and in env.
struct Bad {
    key: &'static str,
    toml: &'static str,
    env: &'static str,
}

const E1_CASES: &[Bad] = &[
    Bad {
        key: "timeouts.redis.operations.get",
        toml: "0",
        env: "0",
    },
    Bad {
        key: "timeouts.redis.operations.get",
        toml: "\"0ms\"",
        env: "0ms",
    },
    Bad {
        key: "timeouts.redis.operations.get",
        toml: "-1",
        env: "-1",
    },
    Bad {
        key: "timeouts.redis.operations.get",
        toml: "-1.5",
        env: "-1s",
    },
    Bad {
        key: "timeouts.redis.operations.get",
        toml: "nan",
        env: "nan",
    },
    Bad {
        key: "timeouts.redis.operations.get",
        toml: "\"NaN\"",
        env: "NaN",
    },
    Bad {
        key: "timeouts.redis.operations.get",
        toml: "inf",
        env: "inf",
    },
    Bad {
        key: "timeouts.redis.operations.get",
        toml: "-inf",
        env: "-inf",
    },
    Bad {
        key: "timeouts.redis.operations.get",
        toml: "1e20",
        env: "1e20",
    },
    Bad {
        key: "timeouts.redis.operations.get",
        toml: "\"1e20s\"",
        env: "100000000000000000000",
    },
    Bad {
        key: "timeouts.redis.operations.default",
        toml: "0",
        env: "0",
    },
    Bad {
        key: "timeouts.redis.connection.socket",
        toml: "0",
        env: "0",
    },
    Bad {
        key: "timeouts.redis.connection.connect",
        toml: "\"2 parsecs\"",
        env: "2 parsecs",
    },
    Bad {
        key: "timeouts.files.read",
        toml: "0",
        env: "0",
    },
    Bad {
        key: "timeouts.files.write",
        toml: "1e20",
        env: "1e20",
    },
    Bad {
        key: "breaker.failure_rate",
        toml: "0",
        env: "0",
    },
    Bad {
        key: "breaker.failure_rate",
        toml: "1.5",
        env: "1.5",
    },
    Bad {
        key: "breaker.failure_rate",
        toml: "nan",
        env: "nan",
    },
    Bad {
        key: "retry.max_attempts",
        toml: "0",
        env: "0",
    },
    Bad {
        key: "retry.max_attempts",
        toml: "-1",
        env: "-1",
    },
    Bad {
        key: "redis.pool_size",
        toml: "0",
        env: "0",
    },
    Bad {
        key: "redis.pool_size",
        toml: "4294967296",
        env: "4294967296",
    },
    Bad {
        key: "timeouts.redis.operations.get",
        toml: "\"25ms\"",
        env: "0.025",
    },
    Bad {
        key: "transcripts.cache_messages",
        toml: "0",
        env: "0",
    },
    Bad {
        key: "transcripts.key_prefix",
        toml: "\"a{b\"",
        env: "a{b",
    },
    Bad {
        key: "metrics.prefix",
        toml: "\"my-app\"",
        env: "my-app",
    },
];

fn toml_for(key: &str, value: &str) -> String {
    let (table, field) = key.rsplit_once('.').unwrap();
    format!("[{table}]\n{field} = {value}\n")
}

fn env_var_for(key: &str) -> String {
    format!("STAYFAST_{}", key.to_ascii_uppercase().replace('.', "__"))
}

#[test]
fn config_invalid_values() {
    Jail::expect_with(|jail| {
        for bad in E1_CASES {
            // Through the file.
            jail.create_file("stayfast.toml", &toml_for(bad.key, bad.toml))?;
            let err = Settings::load().expect_err(bad.toml);
            assert_eq!(
                only_problem(&err),
                (bad.key.to_owned(), file("stayfast.toml")),
                "{err}"
            );
            let shown = err.to_string();
            assert!(
                shown.contains(&format!("`{}`", bad.key)) && shown.contains("stayfast.toml"),
                "{shown}"
            );
            std::fs::remove_file("stayfast.toml").unwrap();

            // Through the environment.
            let var = env_var_for(bad.key);
            jail.set_env(&var, bad.env);
            let err = Settings::load().expect_err(bad.env);
            assert_eq!(only_problem(&err), (bad.key.to_owned(), env(&var)), "{err}");
            assert!(err.to_string().contains(&var), "{err}");
            eprintln!("{var}={:<22} -> {err}", bad.env);
            jail.clear_env();
        }
        eprintln!(
            "{} invalid values, each through a file and through env",
            E1_CASES.len()
        );
        Ok(())
    });
}

#[test]
fn several_problems_are_reported_together() {
    let err = Settings::from_toml(
        "[timeouts.files]\nread = 0\n[retry]\nmax_attempts = 0\n[redis]\npool_size = 0\n[cache]\nttl = \"10ms\"",
    )
    .unwrap_err();
    let keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "timeouts.files.read",
            "retry.max_attempts",
            "redis.pool_size",
            "cache.ttl"
        ]
    );
    assert!(err.to_string().starts_with("4 invalid settings:"), "{err}");
    // A value that came from a default is traced to it.
    let err = Settings::from_toml("[breaker]\nwindow = 10").unwrap_err();
    let problem = &err.problems()[0];
    assert_eq!(
        (problem.key.as_str(), &problem.origin),
        ("breaker.minimum_calls", &Some(SettingSource::Default))
    );
    // A margin that leaves fred no time is reported at the timeout it swallows.
    let err = Settings::from_toml("[redis]\ndeadline_margin = \"2s\"").unwrap_err();
    assert_eq!(
        err.problems()[0].key,
        "timeouts.redis.operations.default",
        "{err}"
    );
    assert!(err.to_string().contains("redis.deadline_margin"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_toml_number_as_a_duration_never_panics(x in proptest::num::f64::ANY, n in any::<i64>(), float in any::<bool>()) {
        let literal = if !float {
            n.to_string()
        } else if x.is_nan() {
            "nan".to_owned()
        } else if x.is_infinite() {
            if x > 0.0 { "inf".to_owned() } else { "-inf".to_owned() }
        } else {
            format!("{x:?}")
        };
        let result = std::panic::catch_unwind(|| {
            Settings::from_toml(&format!("[timeouts.redis.operations]\nget = {literal}"))
        });
        let result = result.map_err(|_| TestCaseError::fail(format!("panicked on {literal}")))?;
        match result {
            Ok(settings) => {
                let get = settings.timeouts.redis.operations.get.unwrap();
                prop_assert!(get > settings.redis.deadline_margin, "{literal} accepted as {get:?}");
            }
            Err(err) => {
                prop_assert_eq!(&err.problems()[0].key, "timeouts.redis.operations.get", "{}", err);
            }
        }
    }

    #[test]
    fn any_text_as_a_duration_never_panics(text in "\\PC{0,24}") {
        let literal = toml::Value::String(text.clone()).to_string();
        let result = std::panic::catch_unwind(|| {
            Settings::from_toml(&format!("[timeouts.files]\nread = {literal}"))
        });
        prop_assert!(result.is_ok(), "panicked on {:?}", text);
    }
}

#[test]
fn config_unknown_and_types() {
    Jail::expect_with(|jail| {
        jail.create_file("stayfast.toml", "[redis]\nurll = \"redis://cache:6379\"\n")?;
        let err = Settings::load().unwrap_err();
        assert_eq!(
            only_problem(&err),
            ("redis.urll".to_owned(), file("stayfast.toml"))
        );
        let shown = err.to_string();
        for expected in [
            "`redis.urll`",
            "stayfast.toml",
            "unknown key",
            "`url`",
            "`password`",
            "`pool_size`",
        ] {
            assert!(shown.contains(expected), "{expected} missing from: {shown}");
        }
        assert!(
            !shown.contains("redis://cache"),
            "an unknown key's value is not shown: {shown}"
        );
        eprintln!("{shown}");

        jail.create_file("stayfast.toml", "[redis2]\nurl = \"redis://cache:6379\"\n")?;
        let err = Settings::load().unwrap_err();
        assert_eq!(only_problem(&err).0, "redis2");
        assert!(err.to_string().contains("`timeouts`"), "{err}");

        jail.create_file("stayfast.toml", "[redis]\npool_size = \"many\"\n")?;
        let err = Settings::load().unwrap_err();
        assert_eq!(
            only_problem(&err),
            ("redis.pool_size".to_owned(), file("stayfast.toml"))
        );
        assert_eq!(err.problems()[0].value.as_deref(), Some("\"many\""));
        std::fs::remove_file("stayfast.toml").unwrap();

        jail.set_env("STAYFAST_REDIS__POOL_SIZE", "many");
        let err = Settings::load().unwrap_err();
        assert_eq!(
            only_problem(&err),
            ("redis.pool_size".to_owned(), env("STAYFAST_REDIS__POOL_SIZE"))
        );
        assert!(err.to_string().contains("STAYFAST_REDIS__POOL_SIZE"), "{err}");
        assert!(err.to_string().contains("\"many\""), "{err}");
        eprintln!("{err}");
        jail.clear_env();

        jail.set_env("STAYFAST_REDIS__POOLSIZE", "8");
        let err = Settings::load().unwrap_err();
        assert_eq!(
            only_problem(&err),
            ("redis.poolsize".to_owned(), env("STAYFAST_REDIS__POOLSIZE"))
        );
        jail.clear_env();

        jail.set_env("STAYFAST_TRANSCRIPTS__FSYNC", "sometimes");
        let err = Settings::load().unwrap_err();
        assert_eq!(only_problem(&err).0, "transcripts.fsync");
        assert!(err.to_string().contains("`always`"), "{err}");
        Ok(())
    });
}

/// Asserts the sentinel is in neither the Display nor the Debug of `err`.
fn assert_no_leak(case: &str, err: &SettingsError) {
    let (shown, debug) = (err.to_string(), format!("{err:?}"));
    assert!(
        !shown.contains(SENTINEL) && !debug.contains(SENTINEL),
        "{case} leaks: {shown} / {debug}"
    );
    assert!(
        !shown.contains("Pa55") && !debug.contains("Pa55"),
        "{case} leaks part: {shown} / {debug}"
    );
    eprintln!("{case}: {shown}");
}

fn assert_loaded_without_leak(case: &str, settings: &Settings) {
    for text in [
        format!("{settings:?}"),
        format!("{:?}", settings.redis_config()),
        format!("{:?}", settings.redis),
    ] {
        assert!(!text.contains(SENTINEL), "{case}: {text}");
    }
}

#[test]
fn no_secret_leak_when_loaded() {
    Jail::expect_with(|jail| {
        // The password in the file.
        jail.create_file("stayfast.toml", &format!("[redis]\npassword = \"{SENTINEL}\"\n"))?;
        let settings = Settings::load().unwrap();
        assert_eq!(settings.redis.password.as_ref().unwrap().expose(), SENTINEL);
        assert_eq!(settings.redis_config().password.as_deref(), Some(SENTINEL));
        assert_loaded_without_leak("file password", &settings);
        let secret = settings.redis.password.clone().unwrap();
        assert_eq!(format!("{secret} {secret:?}"), "*** ***");

        // In the URL, in the file.
        let url = format!("redis://app:{SENTINEL}@127.0.0.1:6390/0");
        jail.create_file("stayfast.toml", &format!("[redis]\nurl = \"{url}\"\n"))?;
        let settings = Settings::load().unwrap();
        assert_eq!(settings.redis.url.expose(), url);
        assert_eq!(
            format!("{:?}", settings.redis.url),
            "redis://app:***@127.0.0.1:6390/0"
        );
        assert_loaded_without_leak("file url", &settings);
        std::fs::remove_file("stayfast.toml").unwrap();

        // Through env: the password, and the URL.
        jail.set_env("STAYFAST_REDIS__PASSWORD", SENTINEL);
        jail.set_env("STAYFAST_REDIS__URL", &url);
        let settings = Settings::load().unwrap();
        assert_eq!(settings.redis.password.as_ref().unwrap().expose(), SENTINEL);
        assert_eq!(settings.redis.url.expose(), url);
        assert_loaded_without_leak("env password and url", &settings);
        Ok(())
    });
}

#[test]
fn secrets_from_env_are_taken_verbatim() {
    Jail::expect_with(|jail| {
        // figment's Env would type these: 12345 an integer, 007 the integer 7, 1.50 the
        // float 1.5, ` pw ` trimmed, [x] an array.
        for raw in [
            "12345", "007", "1.50", "-0", "true", " pw ", "[x]", "{a=b}", "'c'", "p,w",
        ] {
            jail.set_env("STAYFAST_REDIS__PASSWORD", raw);
            let settings = Settings::load().unwrap();
            assert_eq!(settings.redis.password.unwrap().expose(), raw);
        }
        // figment's documented quoting still works.
        jail.set_env("STAYFAST_REDIS__PASSWORD", "\"007\"");
        assert_eq!(Settings::load().unwrap().redis.password.unwrap().expose(), "007");
        // Lower-case names are matched as figment matches them.
        jail.clear_env();
        jail.set_env("stayfast_redis__password", "0042");
        assert_eq!(Settings::load().unwrap().redis.password.unwrap().expose(), "0042");
        jail.clear_env();

        // A provider that types the password as a number still loads it as its text:
        // figment's own Env provider, added by a user, makes `12345` an integer.
        jail.set_env("APP_REDIS_PASSWORD", "12345");
        let figment = Settings::figment().merge(
            Env::raw()
                .only(&["APP_REDIS_PASSWORD"])
                .map(|_| "redis.password".into()),
        );
        assert_eq!(
            Settings::from_figment(&figment)
                .unwrap()
                .redis
                .password
                .unwrap()
                .expose(),
            "12345"
        );
        let figment = Settings::figment().merge(Serialized::default("redis.password", 1.5));
        assert_eq!(
            Settings::from_figment(&figment)
                .unwrap()
                .redis
                .password
                .unwrap()
                .expose(),
            "1.5"
        );
        Ok(())
    });
}

#[test]
fn no_secret_leak_in_errors() {
    let url = format!("redis://app:{SENTINEL}@cache:6379/0");
    let file_cases = [
        (
            "password as an array",
            format!("[redis]\npassword = [\"{SENTINEL}\"]"),
        ),
        (
            "password as a table",
            format!("[redis]\npassword = {{ value = \"{SENTINEL}\" }}"),
        ),
        (
            "password as a section",
            format!("[redis.password]\nvalue = \"{SENTINEL}\""),
        ),
        ("empty password", "[redis]\npassword = \"\"".to_owned()),
        ("http scheme", format!("[redis]\nurl = \"http://u:{SENTINEL}@h\"")),
        (
            "url that fred cannot parse",
            format!("[redis]\nurl = \"redis://:{SENTINEL}@h:port\""),
        ),
        ("url as an array", format!("[redis]\nurl = [\"{url}\"]")),
        (
            "misspelt password key",
            format!("[redis]\npasword = \"{SENTINEL}\""),
        ),
        ("password at the top", format!("password = \"{SENTINEL}\"")),
        ("redis as a string", format!("redis = \"{url}\"")),
        (
            "syntax: unterminated url",
            format!("[redis]\nurl = \"redis://:{SENTINEL}@h\npool_size = 2"),
        ),
        (
            "syntax: unquoted url",
            format!("[redis]\nurl = redis://:{SENTINEL}@h"),
        ),
        (
            "syntax: unterminated literal",
            format!("[redis]\npassword = '{SENTINEL}"),
        ),
        (
            "syntax: bad escape",
            format!("[redis]\npassword = \"{SENTINEL}\\q\""),
        ),
        (
            "syntax: duplicate key",
            format!("[redis]\npassword = \"{SENTINEL}\"\npassword = \"{SENTINEL}\""),
        ),
        (
            "syntax: trailing text",
            format!("[redis]\npassword = \"x\" {SENTINEL}"),
        ),
    ];
    #[cfg(not(feature = "tls"))]
    let file_cases = {
        let mut cases = file_cases.to_vec();
        cases.push((
            "rediss without tls",
            format!("[redis]\nurl = \"rediss://:{SENTINEL}@h:6380\""),
        ));
        cases
    };
    for (case, text) in &file_cases {
        let err = Settings::from_toml(text).expect_err(case);
        assert_no_leak(case, &err);
        if case.starts_with("syntax") {
            let SettingsError::Syntax { line, column, .. } = &err else {
                panic!("{case}: {err:?}")
            };
            assert!(*line >= 2 && *column >= 1, "{case}: {err}");
        }
    }
    #[cfg(feature = "tls")]
    {
        let settings =
            Settings::from_toml(&format!("[redis]\nurl = \"rediss://:{SENTINEL}@h:6380\"")).unwrap();
        assert_loaded_without_leak("rediss with tls", &settings);
    }

    Jail::expect_with(|jail| {
        // The same syntax error in the settings file, through load and through figment.
        jail.create_file(
            "stayfast.toml",
            &format!("[redis]\nurl = \"redis://:{SENTINEL}@h\n"),
        )?;
        let err = Settings::load().unwrap_err();
        assert_no_leak("file syntax", &err);
        assert!(err.to_string().starts_with("stayfast.toml:2:"), "{err}");
        assert_no_leak(
            "figment syntax",
            &Settings::from_figment(&Settings::figment()).unwrap_err(),
        );
        std::fs::remove_file("stayfast.toml").unwrap();

        let env_cases = [
            ("STAYFAST_REDIS__URL", format!("http://u:{SENTINEL}@h")),
            ("STAYFAST_REDIS__URL", format!("redis://:{SENTINEL}@h:port")),
            ("STAYFAST_REDIS__URL", SENTINEL.to_owned()),
            ("STAYFAST_REDIS", format!("{{password=[\"{SENTINEL}\"]}}")),
            ("STAYFAST_REDIS", format!("{{url={SENTINEL}}}")),
            ("STAYFAST_REDIS", SENTINEL.to_owned()),
            ("STAYFAST_REDIS__PASSWORD__VALUE", SENTINEL.to_owned()),
            ("STAYFAST_REDIS__PASWORD", SENTINEL.to_owned()),
        ];
        for (var, value) in &env_cases {
            jail.set_env(var, value);
            let err = Settings::load().expect_err(var);
            assert_no_leak(&format!("{var}={value}"), &err);
            jail.clear_env();
        }
        Ok(())
    });

    // The types themselves.
    let url = RedisUrl::new(&url);
    assert!(!format!("{url} {url:?} {}", url.redacted()).contains(SENTINEL));
    let secret = Secret::new(SENTINEL);
    assert!(!format!("{secret} {secret:?}").contains(SENTINEL));
}

/// Issue #14: the ACL user, the sentinels' credentials and `[redis.tls]` reach the
/// client's config; the sentinel password is a secret like the others (Debug, errors,
/// verbatim from env); a refused TLS table names its key.
#[test]
fn deployment_acl_and_tls_settings() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "stayfast.toml",
            &format!(
                "[redis]\nurl = \"redis-sentinel://127.0.0.1:26379,127.0.0.1:26380/0?sentinelServiceName=main\"\n\
                 username = \"app\"\nsentinel_username = \"watcher\"\nsentinel_password = \"{SENTINEL}\"\n\
                 [redis.tls]\nca_file = \"/etc/redis/ca.pem\"\nserver_name = \"redis.internal\"\n"
            ),
        )?;
        let settings = Settings::load().unwrap();
        let config = settings.redis_config();
        assert_eq!(config.username.as_deref(), Some("app"));
        assert_eq!(config.sentinel_username.as_deref(), Some("watcher"));
        assert_eq!(config.sentinel_password.as_deref(), Some(SENTINEL));
        let tls = config.tls.as_ref().unwrap();
        assert_eq!(tls.ca_file, Some(PathBuf::from("/etc/redis/ca.pem")));
        assert_eq!(tls.server_name.as_deref(), Some("redis.internal"));
        assert_loaded_without_leak("file sentinel password", &settings);

        // From env, verbatim, and never shown.
        jail.set_env("STAYFAST_REDIS__SENTINEL_PASSWORD", "007");
        let settings = Settings::load().unwrap();
        assert_eq!(settings.redis_config().sentinel_password.as_deref(), Some("007"));

        // A client certificate without its key: the key named, the secret not shown.
        jail.set_env("STAYFAST_REDIS__SENTINEL_PASSWORD", SENTINEL);
        jail.create_file(
            "stayfast.toml",
            &format!("[redis]\nurl = \"redis://127.0.0.1:6390\"\nsentinel_password = \"{SENTINEL}\"\n"),
        )?;
        let err = Settings::load().unwrap_err();
        assert_eq!(err.problems()[0].key, "redis.sentinel_password", "{err}");
        assert_no_leak("sentinel password on a plain URL", &err);
        jail.clear_env();
        jail.create_file(
            "stayfast.toml",
            "[redis]\nurl = \"rediss://127.0.0.1:6390\"\n[redis.tls]\nclient_cert = \"/etc/redis/c.pem\"\n",
        )?;
        let err = Settings::load().unwrap_err();
        assert_eq!(err.problems()[0].key, "redis.tls.client_key", "{err}");
        Ok(())
    });
}
