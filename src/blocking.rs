//! A blocking API for code that is not async yet: the same stores, driven by a
//! multi-thread tokio runtime that lives as long as the handle (fred's reconnects and
//! the background Redis updates run on it between your calls).
//!
//! Every method checks first that it is *not* called from inside an async runtime —
//! blocking there would stall the runtime's thread (or deadlock it) — and returns
//! [`StoreError::InsideRuntime`] instead of panicking as `block_on` would. That check
//! cannot tell a `spawn_blocking` thread (where blocking is allowed) from a task, so it
//! refuses both: from async code, including `spawn_blocking`, use the async API; call
//! this one from plain threads.
//!
//! # Examples
//!
//! ```
//! use stayfast::{blocking::Stayfast, settings::Settings, transcripts::Message};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut settings = Settings::default();
//! settings.redis.enabled = false; // file-only, for this example
//! settings.transcripts.dir = std::env::temp_dir().join(format!("stayfast-doc-blocking-{}", std::process::id()));
//! let app = Stayfast::from_settings(&settings)?; // no #[tokio::main] needed
//! app.transcripts().append("s", Message::new("user", "hello"))?;
//! assert_eq!(app.transcripts().history("s", 10)?.records.len(), 1);
//! app.shutdown(std::time::Duration::from_secs(1))?;
//! # std::fs::remove_dir_all(&settings.transcripts.dir)?;
//! # Ok(()) }
//! ```

use std::{fmt, future::Future, sync::Arc, time::Duration};

use serde::{Serialize, de::DeserializeOwned};
use stayfast_core::ShutdownReport;

use crate::{
    StartError, StoreError,
    cache::CoalescedError,
    knowledge::{Fact, KnowledgeHealth, LayoutMigration},
    settings::Settings,
    transcripts::{History, Message, Receipt},
};

/// Worker threads of the runtime behind a blocking handle: enough for fred's connection
/// tasks and background work; your calls block their own threads.
const WORKER_THREADS: usize = 2;

/// Owns the runtime; shuts it down without blocking when dropped (dropping a runtime the
/// normal way inside another runtime panics).
struct Runtime(Option<tokio::runtime::Runtime>);

impl Runtime {
    fn new() -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKER_THREADS)
            .thread_name("stayfast-blocking")
            .enable_all()
            .build()?;
        Ok(Self(Some(rt)))
    }

    /// Runs `future` to completion on the runtime, unless called from inside a runtime.
    fn block_on<F: Future>(&self, future: F) -> Result<F::Output, StoreError> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(StoreError::InsideRuntime);
        }
        match &self.0 {
            Some(rt) => Ok(rt.block_on(future)),
            None => Err(StoreError::InsideRuntime),
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl fmt::Debug for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Runtime")
    }
}

/// The blocking [`crate::Stayfast`]: build it with [`from_settings`](Self::from_settings)
/// from ordinary (non-async) code. See the [module docs](self).
///
/// ```no_run
/// use std::time::Duration;
/// use stayfast::{Settings, blocking::Stayfast, transcripts::Message};
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let app = Stayfast::from_settings(&Settings::load()?)?; // no async code needed
///     app.transcripts().append("session-42", Message::new("user", "Where is my order?"))?;
///     let history = app.transcripts().history("session-42", 20)?;
///     println!("{} messages", history.records.len());
///     app.shutdown(Duration::from_secs(5))?; // drains background work, closes the pool
///     Ok(())
/// }
/// ```
#[derive(Debug)]
pub struct Stayfast {
    app: crate::Stayfast,
    runtime: Arc<Runtime>,
}

impl Stayfast {
    /// Starts a runtime and, on it, everything [`crate::Stayfast::from_settings`] does.
    ///
    /// # Errors
    ///
    /// As [`crate::Stayfast::from_settings`], plus [`StoreError::InsideRuntime`] (as
    /// [`StartError::Store`]) when called from async code, and an I/O error when the
    /// runtime's threads cannot start.
    ///
    /// ```
    /// # use stayfast::{StartError, StoreError, blocking::Stayfast, settings::Settings};
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// // From inside async code: an error, not a panic.
    /// let err = Stayfast::from_settings(&Settings::default()).unwrap_err();
    /// assert!(matches!(err, StartError::Store(StoreError::InsideRuntime)));
    /// # }
    /// ```
    pub fn from_settings(settings: &Settings) -> Result<Self, StartError> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(StoreError::InsideRuntime.into());
        }
        let runtime = Arc::new(Runtime::new().map_err(StartError::Runtime)?);
        let app = runtime.block_on(crate::Stayfast::from_settings(settings))??;
        Ok(Self { app, runtime })
    }

    /// The blocking fact store, or `None` in file-only mode.
    ///
    /// ```no_run
    /// # fn f(app: &stayfast::blocking::Stayfast) -> Result<(), stayfast::StoreError> {
    /// if let Some(kb) = app.knowledge() {
    ///     let id = kb.store_fact("The shop opens at 9.", serde_json::json!({}))?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn knowledge(&self) -> Option<KnowledgeStore> {
        self.app.knowledge().map(|store| KnowledgeStore {
            store: store.clone(),
            runtime: Arc::clone(&self.runtime),
        })
    }

    /// The blocking chat-history store.
    ///
    /// ```no_run
    /// # fn f(app: &stayfast::blocking::Stayfast) -> Result<(), stayfast::StoreError> {
    /// let history = app.transcripts().history("session-1", 20)?;
    /// # Ok(()) }
    /// ```
    pub fn transcripts(&self) -> TranscriptStore {
        TranscriptStore {
            store: self.app.transcripts().clone(),
            runtime: Arc::clone(&self.runtime),
        }
    }

    /// The blocking JSON cache, or `None` in file-only mode.
    ///
    /// ```no_run
    /// # fn f(app: &stayfast::blocking::Stayfast) -> Result<(), stayfast::StoreError> {
    /// if let Some(cache) = app.cache() {
    ///     let v: Option<String> = cache.get("greeting")?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn cache(&self) -> Option<Cache> {
        self.app.cache().map(|cache| Cache {
            cache: cache.clone(),
            runtime: Arc::clone(&self.runtime),
        })
    }

    /// The async facade underneath, for what this module does not wrap (telemetry, the
    /// Redis handle).
    ///
    /// ```no_run
    /// # fn f(app: &stayfast::blocking::Stayfast) {
    /// let metrics = app.inner().telemetry().map(|t| t.render());
    /// # }
    /// ```
    pub fn inner(&self) -> &crate::Stayfast {
        &self.app
    }

    /// [`crate::Stayfast::shutdown`], then stops the runtime.
    ///
    /// # Errors
    ///
    /// [`StoreError::InsideRuntime`] when called from async code (nothing is shut down).
    ///
    /// ```no_run
    /// # fn f(app: stayfast::blocking::Stayfast) -> Result<(), stayfast::StoreError> {
    /// let report = app.shutdown(std::time::Duration::from_secs(5))?;
    /// # Ok(()) }
    /// ```
    pub fn shutdown(self, grace: Duration) -> Result<ShutdownReport, StoreError> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(StoreError::InsideRuntime);
        }
        let Self { app, runtime } = self;
        runtime.block_on(app.shutdown(grace))
    }
}

/// The blocking [`crate::transcripts::TranscriptStore`]; cheap to clone.
///
/// ```no_run
/// # fn f(app: &stayfast::blocking::Stayfast) -> Result<(), stayfast::StoreError> {
/// use stayfast::transcripts::Message;
/// let chat = app.transcripts();
/// // A retried append with the same message id returns the stored record: no duplicate.
/// chat.append("session-42", Message::new("user", "hi").with_id("msg-1"))?;
/// chat.append("session-42", Message::new("user", "hi").with_id("msg-1"))?;
/// assert_eq!(chat.history("session-42", 20)?.records.len(), 1);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct TranscriptStore {
    store: crate::transcripts::TranscriptStore,
    runtime: Arc<Runtime>,
}

impl TranscriptStore {
    /// [`append`](crate::transcripts::TranscriptStore::append), blocking.
    ///
    /// # Errors
    ///
    /// As the async method, plus [`StoreError::InsideRuntime`].
    ///
    /// ```no_run
    /// # use stayfast::transcripts::Message;
    /// # fn f(store: &stayfast::blocking::TranscriptStore) -> Result<(), stayfast::StoreError> {
    /// let receipt = store.append("s", Message::new("user", "hi").with_id("m1"))?;
    /// println!("stored as #{} ({:?})", receipt.record.seq, receipt.durability);
    /// # Ok(()) }
    /// ```
    pub fn append(&self, session: &str, message: Message) -> Result<Receipt, StoreError> {
        self.runtime.block_on(self.store.append(session, message))?
    }

    /// [`history`](crate::transcripts::TranscriptStore::history), blocking.
    ///
    /// # Errors
    ///
    /// As the async method, plus [`StoreError::InsideRuntime`].
    ///
    /// ```no_run
    /// # fn f(store: &stayfast::blocking::TranscriptStore) -> Result<(), stayfast::StoreError> {
    /// let history = store.history("s", 20)?;
    /// # Ok(()) }
    /// ```
    pub fn history(&self, session: &str, limit: usize) -> Result<History, StoreError> {
        self.runtime.block_on(self.store.history(session, limit))?
    }

    /// [`delete_session`](crate::transcripts::TranscriptStore::delete_session), blocking.
    ///
    /// # Errors
    ///
    /// As the async method, plus [`StoreError::InsideRuntime`].
    ///
    /// ```no_run
    /// # fn f(store: &stayfast::blocking::TranscriptStore) -> Result<(), stayfast::StoreError> {
    /// let existed = store.delete_session("s")?;
    /// # Ok(()) }
    /// ```
    pub fn delete_session(&self, session: &str) -> Result<bool, StoreError> {
        self.runtime.block_on(self.store.delete_session(session))?
    }

    /// [`flush`](crate::transcripts::TranscriptStore::flush), blocking.
    ///
    /// # Errors
    ///
    /// As the async method, plus [`StoreError::InsideRuntime`].
    ///
    /// ```no_run
    /// # fn f(store: &stayfast::blocking::TranscriptStore) -> Result<(), stayfast::StoreError> {
    /// store.flush()?;
    /// # Ok(()) }
    /// ```
    pub fn flush(&self) -> Result<(), StoreError> {
        self.runtime.block_on(self.store.flush())?
    }
}

/// The blocking [`crate::knowledge::KnowledgeStore`]; cheap to clone.
///
/// ```no_run
/// # fn f(app: &stayfast::blocking::Stayfast) -> Result<(), stayfast::StoreError> {
/// if let Some(kb) = app.knowledge() {
///     kb.store_fact("Parcels ship within two days.", serde_json::json!({"source": "faq"}))?;
///     let hits = kb.search("parcels ship", 5)?; // every word must match
///     println!("{} facts match", hits.len());
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct KnowledgeStore {
    store: crate::knowledge::KnowledgeStore,
    runtime: Arc<Runtime>,
}

impl KnowledgeStore {
    /// [`store_fact`](crate::knowledge::KnowledgeStore::store_fact), blocking.
    ///
    /// # Errors
    ///
    /// As the async method, plus [`StoreError::InsideRuntime`].
    ///
    /// ```no_run
    /// # fn f(kb: &stayfast::blocking::KnowledgeStore) -> Result<(), stayfast::StoreError> {
    /// let id = kb.store_fact("Parcels ship within two days.", serde_json::json!({"source": "faq"}))?;
    /// # Ok(()) }
    /// ```
    pub fn store_fact(
        &self,
        content: impl Into<String>,
        metadata: serde_json::Value,
    ) -> Result<String, StoreError> {
        self.runtime.block_on(self.store.store_fact(content, metadata))?
    }

    /// [`get_fact`](crate::knowledge::KnowledgeStore::get_fact), blocking.
    ///
    /// # Errors
    ///
    /// As the async method, plus [`StoreError::InsideRuntime`].
    ///
    /// ```no_run
    /// # fn f(kb: &stayfast::blocking::KnowledgeStore, id: &str) -> Result<(), stayfast::StoreError> {
    /// let fact = kb.get_fact(id)?;
    /// # Ok(()) }
    /// ```
    pub fn get_fact(&self, id: &str) -> Result<Option<Fact>, StoreError> {
        self.runtime.block_on(self.store.get_fact(id))?
    }

    /// [`delete_fact`](crate::knowledge::KnowledgeStore::delete_fact), blocking.
    ///
    /// # Errors
    ///
    /// As the async method, plus [`StoreError::InsideRuntime`].
    ///
    /// ```no_run
    /// # fn f(kb: &stayfast::blocking::KnowledgeStore, id: &str) -> Result<(), stayfast::StoreError> {
    /// let existed = kb.delete_fact(id)?;
    /// # Ok(()) }
    /// ```
    pub fn delete_fact(&self, id: &str) -> Result<bool, StoreError> {
        self.runtime.block_on(self.store.delete_fact(id))?
    }

    /// [`list_facts`](crate::knowledge::KnowledgeStore::list_facts), blocking.
    ///
    /// # Errors
    ///
    /// As the async method, plus [`StoreError::InsideRuntime`].
    ///
    /// ```no_run
    /// # fn f(kb: &stayfast::blocking::KnowledgeStore) -> Result<(), stayfast::StoreError> {
    /// let all = kb.list_facts()?;
    /// # Ok(()) }
    /// ```
    pub fn list_facts(&self) -> Result<Vec<Fact>, StoreError> {
        self.runtime.block_on(self.store.list_facts())?
    }

    /// [`search`](crate::knowledge::KnowledgeStore::search), blocking.
    ///
    /// # Errors
    ///
    /// As the async method, plus [`StoreError::InsideRuntime`].
    ///
    /// ```no_run
    /// # fn f(kb: &stayfast::blocking::KnowledgeStore) -> Result<(), stayfast::StoreError> {
    /// let hits = kb.search("opening hours", 5)?;
    /// # Ok(()) }
    /// ```
    pub fn search(&self, query: &str, limit: usize) -> Result<Vec<Fact>, StoreError> {
        self.runtime.block_on(self.store.search(query, limit))?
    }

    /// [`count`](crate::knowledge::KnowledgeStore::count), blocking.
    ///
    /// # Errors
    ///
    /// As the async method, plus [`StoreError::InsideRuntime`].
    ///
    /// ```no_run
    /// # fn f(kb: &stayfast::blocking::KnowledgeStore) -> Result<(), stayfast::StoreError> {
    /// let n = kb.count()?;
    /// # Ok(()) }
    /// ```
    pub fn count(&self) -> Result<u64, StoreError> {
        self.runtime.block_on(self.store.count())?
    }

    /// [`migrate_layout`](crate::knowledge::KnowledgeStore::migrate_layout), blocking.
    ///
    /// # Errors
    ///
    /// As the async method, plus [`StoreError::InsideRuntime`].
    ///
    /// ```no_run
    /// # fn f(kb: &stayfast::blocking::KnowledgeStore) -> Result<(), stayfast::StoreError> {
    /// let done = kb.migrate_layout()?; // once, after upgrading or changing `shards`
    /// println!("{} facts moved into their shards", done.moved);
    /// # Ok(()) }
    /// ```
    pub fn migrate_layout(&self) -> Result<LayoutMigration, StoreError> {
        self.runtime.block_on(self.store.migrate_layout())?
    }

    /// [`health`](crate::knowledge::KnowledgeStore::health) (no I/O, never blocks).
    ///
    /// ```no_run
    /// # fn f(kb: &stayfast::blocking::KnowledgeStore) {
    /// if !kb.health().ok { eprintln!("Redis is down: facts are unavailable"); }
    /// # }
    /// ```
    pub fn health(&self) -> KnowledgeHealth {
        self.store.health()
    }
}

/// The blocking [`crate::cache::Cache`]; cheap to clone.
///
/// ```no_run
/// # fn f(app: &stayfast::blocking::Stayfast) -> Result<(), stayfast::StoreError> {
/// if let Some(cache) = app.cache() {
///     // A Redis failure never fails this call: it just runs the loader.
///     let rate: f64 = cache.get_or_insert_with(&("fx", "EUR", "USD"), None, || {
///         Ok::<_, stayfast::StoreError>(1.08) // the slow remote call
///     })?;
///     println!("{rate}");
/// }
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Cache {
    cache: crate::cache::Cache,
    runtime: Arc<Runtime>,
}

impl Cache {
    /// [`get`](crate::cache::Cache::get), blocking.
    ///
    /// # Errors
    ///
    /// As the async method, plus [`StoreError::InsideRuntime`].
    ///
    /// ```no_run
    /// # fn f(cache: &stayfast::blocking::Cache) -> Result<(), stayfast::StoreError> {
    /// let v: Option<String> = cache.get(&("weather", "Lisbon"))?;
    /// # Ok(()) }
    /// ```
    pub fn get<T: DeserializeOwned>(
        &self,
        context: &(impl Serialize + ?Sized),
    ) -> Result<Option<T>, StoreError> {
        self.runtime.block_on(self.cache.get(context))?
    }

    /// [`set`](crate::cache::Cache::set), blocking.
    ///
    /// # Errors
    ///
    /// As the async method, plus [`StoreError::InsideRuntime`].
    ///
    /// ```no_run
    /// # fn f(cache: &stayfast::blocking::Cache) -> Result<(), stayfast::StoreError> {
    /// cache.set(&("weather", "Lisbon"), "sunny", None)?;
    /// # Ok(()) }
    /// ```
    pub fn set<T: Serialize + ?Sized>(
        &self,
        context: &(impl Serialize + ?Sized),
        value: &T,
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        self.runtime.block_on(self.cache.set(context, value, ttl))?
    }

    /// [`delete`](crate::cache::Cache::delete), blocking.
    ///
    /// # Errors
    ///
    /// As the async method, plus [`StoreError::InsideRuntime`].
    ///
    /// ```no_run
    /// # fn f(cache: &stayfast::blocking::Cache) -> Result<(), stayfast::StoreError> {
    /// let existed = cache.delete(&("weather", "Lisbon"))?;
    /// # Ok(()) }
    /// ```
    pub fn delete(&self, context: &(impl Serialize + ?Sized)) -> Result<bool, StoreError> {
        self.runtime.block_on(self.cache.delete(context))?
    }

    /// [`get_or_insert_with`](crate::cache::Cache::get_or_insert_with) with a blocking
    /// loader, which runs on the calling thread; the cache never makes the call fail,
    /// only the loader can. Concurrent calls (from other threads) that miss the same
    /// entry run one loader, as with the async method.
    ///
    /// # Errors
    ///
    /// The loader's error; [`StoreError::InsideRuntime`] (converted into `E`) when called
    /// from async code; [`StoreError::Coalesced`] (converted into `E`) when this call
    /// waited on another thread's load of the same entry and that load failed, panicked
    /// or outlasted `load_timeout`.
    ///
    /// ```no_run
    /// # fn f(cache: &stayfast::blocking::Cache) -> Result<(), stayfast::StoreError> {
    /// let forecast: String = cache.get_or_insert_with(&("weather", "Lisbon"), None, || {
    ///     Ok::<_, stayfast::StoreError>("sunny".to_owned()) // the slow API call
    /// })?;
    /// # Ok(()) }
    /// ```
    pub fn get_or_insert_with<T, E, F>(
        &self,
        context: &(impl Serialize + ?Sized),
        ttl: Option<Duration>,
        load: F,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned,
        E: From<StoreError> + fmt::Display,
        F: FnOnce() -> Result<T, E>,
    {
        // `block_on` polls on this thread: the loader blocks only its own caller.
        let loaded =
            self.cache
                .get_or_insert_with(context, ttl, || async move { load().map_err(Loaded::Own) });
        match self.runtime.block_on(loaded)? {
            Ok(value) => Ok(value),
            Err(Loaded::Own(e)) => Err(e),
            Err(Loaded::Coalesced(e)) => Err(E::from(StoreError::from(e))),
        }
    }
}

/// The error of a blocking loader, or of the load this call waited on: so `E` needs
/// `From<StoreError>` only, as every blocking method's error does.
enum Loaded<E> {
    Own(E),
    Coalesced(CoalescedError),
}

impl<E> From<CoalescedError> for Loaded<E> {
    fn from(e: CoalescedError) -> Self {
        Self::Coalesced(e)
    }
}

impl<E: fmt::Display> fmt::Display for Loaded<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Own(e) => e.fmt(f),
            Self::Coalesced(e) => e.fmt(f),
        }
    }
}
