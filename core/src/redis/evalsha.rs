//! [`Redis::eval_script`] and [`Redis::eval_script_then_wait`]: a [`Script`] run by its
//! SHA1 (`EVALSHA`), its body sent only when the node lacks it (`NOSCRIPT`) or the ACL
//! user may not run `EVALSHA` (`NOPERM`).
//!
//! Both fallbacks happen within the attempt, not as a retry: each refusal means the
//! script did not run, so sending `EVAL` next cannot run it twice, and a script that is
//! not idempotent (never retried) still gets its one run.

use std::sync::atomic::Ordering;

use fred::{
    error::Error as FredError,
    interfaces::ClientLike,
    types::{ClusterHash, CustomCommand, FromValue, Value},
};

use super::{
    Command, Redis, RedisError, Script,
    commands::{eval_argv, wait_args},
    lanes::Lane,
    run::{options, options_within},
};
use crate::Attempt;

/// Why `EVALSHA` did not run the script, when sending the body may.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refused {
    /// `NOSCRIPT`: the node does not have the script (a fresh or flushed cache).
    NoScript,
    /// `NOPERM … 'evalsha'`: the ACL user lacks `+evalsha`.
    NoEvalsha,
}

/// What an `EVALSHA` error says; `None` for any other error (the script's own, a
/// timeout, a key the user may not touch…), which is the call's.
fn refused(e: &FredError) -> Option<Refused> {
    let details = e.details();
    if details.starts_with("NOSCRIPT") {
        Some(Refused::NoScript)
    } else if details.starts_with("NOPERM") && details.contains("'evalsha'") {
        Some(Refused::NoEvalsha)
    } else {
        None
    }
}

fn evalsha(hash: ClusterHash) -> CustomCommand {
    CustomCommand::new_static("EVALSHA", hash, false)
}

fn eval(hash: ClusterHash) -> CustomCommand {
    CustomCommand::new_static("EVAL", hash, false)
}

/// `argv` with `script`'s body in place of its SHA1 (the first argument).
fn with_source(script: &Script, mut argv: Vec<Value>) -> Vec<Value> {
    if let Some(first) = argv.first_mut() {
        *first = script.source_value();
    }
    argv
}

/// The fred options for the `EVAL` sent after a refused `EVALSHA`: the time left of
/// the attempt, read now (a clock read on the refusal path only), so a body sent late
/// is dropped rather than run after the caller gave up.
fn options_for_the_body(attempt: &Attempt, margin: std::time::Duration) -> fred::types::config::Options {
    options_within(attempt.remaining(), margin)
}

impl Redis {
    /// Whether this handle's ACL user was found to lack `+evalsha`: scripts then go as
    /// `EVAL` from the start.
    fn evalsha_refused(&self) -> bool {
        self.inner.evalsha_refused.load(Ordering::Relaxed)
    }

    /// Notes a `NOPERM` for `EVALSHA`, telling it once per handle.
    #[cold]
    fn refuse_evalsha(&self, e: &FredError) {
        if !self.inner.evalsha_refused.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                target: "stayfast::redis",
                redis = %self.inner.breaker.target(),
                url = %self.inner.url,
                error = %e.details(),
                "the Redis ACL user lacks +evalsha: scripts are sent whole (EVAL) from now on; \
                 add +evalsha to the user to spare Redis hashing each script on every call"
            );
        }
    }

    /// Whether to send the body after `e`, an `EVALSHA` error.
    fn send_the_body_after(&self, e: &FredError) -> bool {
        match refused(e) {
            Some(Refused::NoScript) => true,
            Some(Refused::NoEvalsha) => {
                self.refuse_evalsha(e);
                true
            }
            None => false,
        }
    }

    /// Runs `script` as [`eval`](Self::eval) does — same policy (`redis.eval`, not
    /// idempotent), same deadline, same one-slot rule — but sends
    /// `EVALSHA sha1 numkeys keys… args…`, and the body (`EVAL`) only when the node
    /// answers `NOSCRIPT` (which loads it there: on a cluster, each primary learns it on
    /// its first call) or the ACL user lacks `+evalsha` (`NOPERM`: the handle then sends
    /// `EVAL` for every later script, and logs one warning).
    ///
    /// Either refusal means the script did not run, so the `EVAL` is sent within the
    /// same attempt, not as a retry: a script that is not idempotent runs once per call.
    ///
    /// # Errors
    ///
    /// As [`eval`](Self::eval): keys of several slots are refused, unsent.
    ///
    /// # Cancellation
    ///
    /// As every call of the handle: dropping the future abandons the call; a script
    /// already sent may still run.
    ///
    /// ```no_run
    /// # use std::sync::LazyLock;
    /// # use stayfast_core::redis::{Redis, RedisConfig, Script};
    /// static ADD: LazyLock<Script> =
    ///     LazyLock::new(|| Script::new("return redis.call('INCRBY', KEYS[1], ARGV[1])"));
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let redis = Redis::connect(&RedisConfig::default()).await?;
    /// let visits: i64 = redis.eval_script(&ADD, vec!["visits".into()], vec!["5".into()]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn eval_script<R: FromValue>(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<R, RedisError> {
        let (hash, argv) = eval_argv(script.sha1_value(), keys, args)?;
        let (pool, lanes, margin) = (&self.inner.pool, self.inner.lanes, self.inner.margin);
        self.guarded(Command::Eval, |attempt| {
            let (argv, hash) = (argv.clone(), hash.clone());
            let client = lanes.choose(pool, Lane::Write);
            async move {
                if !self.evalsha_refused() {
                    let by_sha = client
                        .with_options(&options(&attempt, margin))
                        .custom(evalsha(hash.clone()), argv.clone())
                        .await;
                    match by_sha {
                        Err(e) if self.send_the_body_after(&e) => {}
                        done => return done,
                    }
                }
                client
                    .with_options(&options_for_the_body(&attempt, margin))
                    .custom(eval(hash), with_source(script, argv))
                    .await
            }
        })
        .await
    }

    /// [`eval_script`](Self::eval_script), then `WAIT replicas timeout` on the same
    /// connection, in one pipeline, as [`eval_then_wait`](Self::eval_then_wait): the
    /// script's reply and how many replicas acknowledged its writes within `timeout`.
    /// On `NOSCRIPT` (or `NOPERM` for `EVALSHA`) the pipeline is sent again with `EVAL`
    /// and `WAIT`, within the same attempt (the script did not run). Not idempotent.
    ///
    /// # Errors
    ///
    /// As [`eval_then_wait`](Self::eval_then_wait).
    ///
    /// # Cancellation
    ///
    /// As [`eval_script`](Self::eval_script).
    ///
    /// ```no_run
    /// # use std::{sync::LazyLock, time::Duration};
    /// # use stayfast_core::redis::{Redis, RedisConfig, Script};
    /// static NEXT: LazyLock<Script> = LazyLock::new(|| Script::new("return redis.call('INCR', KEYS[1])"));
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let redis = Redis::connect(&RedisConfig::default()).await?;
    /// let (order, replicas): (i64, u32) = redis
    ///     .eval_script_then_wait(&NEXT, vec!["orders".into()], vec![], 1, Duration::from_millis(100))
    ///     .await?;
    /// if replicas == 0 { /* the write is on the primary only, for now */ }
    /// # Ok(()) }
    /// ```
    pub async fn eval_script_then_wait<R: FromValue>(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<String>,
        replicas: u32,
        timeout: std::time::Duration,
    ) -> Result<(R, u32), RedisError> {
        let (hash, argv) = eval_argv(script.sha1_value(), keys, args)?;
        let wait = wait_args(replicas, timeout);
        let (pool, lanes, margin) = (&self.inner.pool, self.inner.lanes, self.inner.margin);
        // One round trip (two on a refusal): counted as one command in flight.
        let (reply, acknowledged): (R, i64) = self
            .guarded(Command::Pipeline, |attempt| {
                let (argv, wait, hash) = (argv.clone(), wait.clone(), hash.clone());
                let client = lanes.choose(pool, Lane::Write);
                async move {
                    if !self.evalsha_refused() {
                        // NOTE: `pipeline().with_options`, the form fred honours (pipeline.rs).
                        let p = client.pipeline().with_options(&options(&attempt, margin));
                        let () = p.custom(evalsha(hash.clone()), argv.clone()).await?;
                        let () = p
                            .custom(
                                CustomCommand::new_static("WAIT", hash.clone(), false),
                                wait.clone(),
                            )
                            .await?;
                        match p.all().await {
                            Err(e) if self.send_the_body_after(&e) => {}
                            done => return done,
                        }
                    }
                    let p = client
                        .pipeline()
                        .with_options(&options_for_the_body(&attempt, margin));
                    let () = p.custom(eval(hash.clone()), with_source(script, argv)).await?;
                    let () = p
                        .custom(CustomCommand::new_static("WAIT", hash, false), wait)
                        .await?;
                    p.all().await
                }
            })
            .await?;
        Ok((reply, u32::try_from(acknowledged).unwrap_or(0)))
    }
}

#[cfg(test)]
mod tests {
    use fred::error::{Error as FredError, ErrorKind};

    use super::{Refused, refused};

    #[test]
    fn refusals_that_mean_the_script_did_not_run() {
        let e = |details: &'static str| FredError::new(ErrorKind::Unknown, details);
        assert_eq!(
            refused(&e("NOSCRIPT No matching script. Please use EVAL.")),
            Some(Refused::NoScript)
        );
        assert_eq!(
            refused(&e(
                "NOPERM this user has no permissions to run the 'evalsha' command"
            )),
            Some(Refused::NoEvalsha)
        );
        // A key the user may not touch: EVAL would be refused alike; the call's error.
        assert_eq!(
            refused(&e(
                "NOPERM this user has no permissions to access one of the keys used as arguments"
            )),
            None
        );
        assert_eq!(refused(&e("ERR Error running script")), None);
    }
}
