//! A cache on its own redis-server whose request counters are read back exactly: the
//! fixture of `tests/cache.rs` and `tests/cache_flight.rs`.

use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use stayfast::{
    cache::{Cache, CacheConfig},
    redis::Redis,
};

use super::deployment::TestRedis;

/// The bound of one Redis command in the cache tests (and of a whole call: retries
/// included).
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_millis(500);

/// `stayfast_cache_requests_total` by `result`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Counts {
    pub(crate) hit: u64,
    pub(crate) miss: u64,
    pub(crate) error: u64,
    /// Concurrent calls coalesced on one load: tests/cache_flight.rs.
    pub(crate) coalesced: u64,
    pub(crate) loader_error: u64,
}

/// One server, one handle, one cache whose counters live in its own recorder.
pub(crate) struct Fixture {
    pub(crate) server: TestRedis,
    pub(crate) redis: Redis,
    pub(crate) cache: Cache,
    /// The cache's name: the `cache` label of every counter.
    pub(crate) name: &'static str,
    pub(crate) config: CacheConfig,
    pub(crate) snapshotter: Snapshotter,
    /// Snapshots reset counters to 0: the running totals.
    pub(crate) counted: Counts,
}

/// A cache called `name` over `config`, on a fresh server, commands bounded by
/// [`COMMAND_TIMEOUT`].
pub(crate) async fn fixture(name: &'static str, config: CacheConfig) -> Fixture {
    let server = TestRedis::start().await.expect("start a redis-server");
    let redis = super::connect(&server, |c| c.command_timeout = COMMAND_TIMEOUT).await;
    let recorder = DebuggingRecorder::new();
    // The counters are resolved in `new`: it must run while the recorder is active.
    let cache = metrics::with_local_recorder(&recorder, || Cache::new(redis.clone(), name, &config))
        .expect("a valid cache config");
    Fixture {
        server,
        redis,
        cache,
        name,
        config,
        snapshotter: recorder.snapshotter(),
        counted: Counts::default(),
    }
}

impl Fixture {
    /// The running totals, after adding what was counted since the last call.
    pub(crate) fn counts(&mut self) -> Counts {
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let key = key.key();
            assert_eq!(key.name(), "stayfast_cache_requests_total");
            let label = |k: &str| {
                key.labels()
                    .find(|l| l.key() == k)
                    .map(|l| l.value().to_owned())
                    .unwrap_or_else(|| panic!("no {k} label"))
            };
            assert_eq!(label("cache"), self.name);
            let DebugValue::Counter(n) = value else {
                panic!("not a counter")
            };
            let c = &mut self.counted;
            *match label("result").as_str() {
                "hit" => &mut c.hit,
                "miss" => &mut c.miss,
                "error" => &mut c.error,
                "coalesced" => &mut c.coalesced,
                "loader_error" => &mut c.loader_error,
                other => panic!("unexpected result {other}"),
            } += n;
        }
        self.counted
    }
}
