//! What a `Policy` call tells `tracing`: a `call` span (operation, target, then outcome,
//! attempts, elapsed), an `attempt` span per attempt around the operation, and events
//! for retries, fallbacks and shed calls — and nothing at all when no subscriber wants
//! `stayfast::call` at `DEBUG`.
#![allow(clippy::unwrap_used)]

use std::{
    fmt::Write as _,
    io,
    sync::{Arc, Mutex},
    time::Duration,
};

use stayfast_core::{
    Bulkhead, Error, Policy,
    config::{BulkheadConfig, RetryConfig},
};
use tracing::{
    Event, Subscriber,
    field::{Field, Visit},
    span::{Attributes, Id, Record},
};
use tracing_subscriber::{
    Layer, filter::LevelFilter, layer::Context, layer::SubscriberExt, registry::LookupSpan,
};

/// Every span opened, field recorded and event emitted, one line each.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    fn push(&self, line: String) {
        self.0.lock().unwrap().push(line);
    }
}

/// `name=value` pairs, in the order recorded.
#[derive(Default)]
struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={:?}", field.name(), value);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        let _ = write!(self.0, " {}={}", field.name(), value);
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Lines {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        let span = ctx.span(id).unwrap();
        let parent = span.parent().map_or("none", |p| p.name());
        self.push(format!("new {} parent={parent}{}", span.name(), fields.0));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        values.record(&mut fields);
        let name = ctx.span(id).unwrap().name();
        self.push(format!("record {name}{}", fields.0));
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let parent = ctx.event_span(event).map_or("none", |s| s.name());
        self.push(format!("event parent={parent}{}", fields.0));
    }
}

/// Captures what the calls on this thread tell tracing at `level`, until dropped.
fn capture(level: LevelFilter) -> (Lines, tracing::subscriber::DefaultGuard) {
    let lines = Lines::default();
    let subscriber = tracing_subscriber::registry().with(lines.clone().with_filter(level));
    (lines, tracing::subscriber::set_default(subscriber))
}

/// The lines that contain every one of `parts`.
fn matching<'a>(lines: &'a [String], parts: &[&str]) -> Vec<&'a String> {
    lines
        .iter()
        .filter(|line| parts.iter().all(|part| line.contains(part)))
        .collect()
}

fn retrying_policy() -> Policy {
    let mut retry = RetryConfig::default();
    retry.max_attempts = 3;
    retry.min_delay = Duration::from_millis(10);
    retry.max_delay = Duration::from_millis(10);
    Policy::builder("store.get")
        .target("store.main")
        .timeout(Duration::from_secs(1))
        .retry(&retry)
        .idempotent(true)
        .build()
        .unwrap()
}

/// A call through [`retrying_policy`] whose first attempt is refused and whose second
/// answers 7; each attempt emits an `INFO` event of its own.
async fn fails_once_then_answers() -> Result<u8, Error<io::Error>> {
    let mut attempts = 0;
    retrying_policy()
        .call(|| {
            attempts += 1;
            let first = attempts == 1;
            async move {
                tracing::info!(first, "the operation's own event");
                if first {
                    Err(io::Error::from(io::ErrorKind::ConnectionRefused))
                } else {
                    Ok(7)
                }
            }
        })
        .await
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_retried_call_has_a_span_per_attempt_and_a_retry_event_in_its_call_span() {
    let (lines, _guard) = capture(LevelFilter::DEBUG);
    assert_eq!(fails_once_then_answers().await.unwrap(), 7);
    let lines = lines.all();
    println!("{lines:#?}");

    assert_eq!(
        matching(
            &lines,
            &["new call parent=none", "operation=store.get", "target=store.main"]
        )
        .len(),
        1,
        "one call span, named by operation and target"
    );
    assert_eq!(matching(&lines, &["new attempt parent=call attempt=1"]).len(), 1);
    assert_eq!(matching(&lines, &["new attempt parent=call attempt=2"]).len(), 1);
    assert_eq!(matching(&lines, &["record attempt outcome=failure"]).len(), 1);
    assert_eq!(matching(&lines, &["record attempt outcome=success"]).len(), 1);
    assert_eq!(
        matching(
            &lines,
            &[
                "event parent=call",
                "retrying",
                "attempt=1",
                "cause=failure",
                "delay_ms="
            ]
        )
        .len(),
        1,
        "the retry is an event of the call"
    );
    assert_eq!(
        matching(&lines, &["event parent=attempt", "the operation's own event"]).len(),
        2,
        "the operation runs inside its attempt's span"
    );
    assert_eq!(matching(&lines, &["record call attempts=2"]).len(), 1);
    assert_eq!(matching(&lines, &["record call outcome=success"]).len(), 1);
    assert_eq!(
        matching(&lines, &["record call elapsed_ms=10.0"]).len(),
        1,
        "the call's time, the backoff included"
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_served_fallback_and_a_shed_call_are_events_of_their_call() {
    let (lines, _guard) = capture(LevelFilter::DEBUG);
    let one = Bulkhead::new("store.slots", &{
        let mut c = BulkheadConfig::default();
        c.max_concurrent = 1;
        c.max_wait = Duration::ZERO;
        c
    })
    .unwrap();
    let policy = Policy::builder("store.put").bulkhead(one).build().unwrap();
    let release = Arc::new(tokio::sync::Notify::new());
    let holding = tokio::spawn({
        let (policy, release) = (policy.clone(), release.clone());
        async move {
            policy
                .call(|| {
                    let release = release.clone();
                    async move {
                        release.notified().await;
                        Ok::<_, io::Error>(())
                    }
                })
                .await
        }
    });
    tokio::task::yield_now().await;
    let shed = policy.call(|| async { Ok::<_, io::Error>(()) }).await;
    assert!(matches!(shed, Err(Error::Shed { .. })), "{shed:?}");
    release.notify_one();
    holding.await.unwrap().unwrap();

    let served = retrying_policy()
        .call_with_fallback(
            |_| async { Err::<u8, _>(io::Error::from(io::ErrorKind::NotFound)) },
            |_| async { Ok(0) },
        )
        .await
        .unwrap();
    assert_eq!(served.value, 0);
    let lines = lines.all();
    println!("{lines:#?}");

    assert_eq!(
        matching(
            &lines,
            &[
                "event parent=call",
                "shed",
                "operation=store.put",
                "bulkhead=store.slots"
            ]
        )
        .len(),
        1
    );
    assert_eq!(matching(&lines, &["record call outcome=shed"]).len(), 1);
    assert_eq!(
        matching(
            &lines,
            &["event parent=call", "serving the fallback", "operation=store.get"]
        )
        .len(),
        1
    );
    assert_eq!(matching(&lines, &["record call outcome=fallback"]).len(), 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_dropped_call_ends_its_span_as_cancelled() {
    let (lines, _guard) = capture(LevelFilter::DEBUG);
    let policy = retrying_policy();
    let call = policy.call(std::future::pending::<Result<u8, io::Error>>);
    assert!(
        tokio::time::timeout(Duration::from_millis(50), call)
            .await
            .is_err()
    );
    let lines = lines.all();
    println!("{lines:#?}");
    assert_eq!(matching(&lines, &["record call outcome=cancelled"]).len(), 1);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_subscriber_at_info_sees_nothing_of_a_call() {
    let (lines, _guard) = capture(LevelFilter::INFO);
    assert_eq!(fails_once_then_answers().await.unwrap(), 7);
    // Only the operation's own INFO events, in no span of stayfast's.
    assert_eq!(
        lines.all(),
        [
            "event parent=none message=the operation's own event first=true",
            "event parent=none message=the operation's own event first=false"
        ]
    );
}
