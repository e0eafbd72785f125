//! Auto traits of the facade, checked where one file shows them all: the stores and
//! their values are `Send + Sync` (one handle shared by every task), every call's future
//! is `Send` (spawnable), and the errors are `Send + Sync`. All of it is decided at
//! compile time.

use std::time::Duration;

use serde_json::json;
use stayfast::{
    cache::{Cache, CoalescedError},
    knowledge::{Fact, KnowledgeStore},
};

fn send<T: Send>(_: &T) {}
fn send_sync<T: Send + Sync + 'static>() {}

/// Never called: it compiles only if the store, its values and every call's future can
/// cross threads (`tokio::spawn`).
fn futures_are_send(store: KnowledgeStore) {
    send_sync::<KnowledgeStore>();
    send_sync::<Fact>();
    send_sync::<stayfast::knowledge::KnowledgeHealth>();
    send(&store.store_fact("x", json!({})));
    send(&store.get_fact("x"));
    send(&store.delete_fact("x"));
    send(&store.list_facts());
    send(&store.list_facts_limited(1));
    send(&store.check_health(Duration::from_secs(1)));
    send(&store.search("x", 1));
    send(&store.count());
}

/// The knowledge store, its values and every call's future (see `futures_are_send`).
#[test]
fn store_and_futures_are_send_and_sync() {
    let _ = futures_are_send as fn(KnowledgeStore);
}

/// `get_or_insert_with`'s future is `Send` (spawnable) for any `Send` loader, and the
/// error type is `Send + Sync`.
#[test]
fn futures_and_errors_are_send() {
    send_sync::<CoalescedError>();
    let call = |cache: Cache| async move {
        cache
            .get_or_insert_with("k", None, || async { Ok::<u8, String>(1) })
            .await
    };
    let _ = |cache: Cache| send(&call(cache));
}
