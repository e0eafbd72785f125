//! [`Redis::scan_keys`]: a bounded SCAN, one page at a time, over every primary of a
//! cluster.

use fred::{
    clients::Client,
    error::{Error as FredError, ErrorKind},
    interfaces::{ClientLike, ClusterInterface, KeysInterface},
    types::{ClusterHash, Key, config::Server},
};

use super::{Command, Redis, RedisError, run::options_within, slots};

/// Where one SCAN cursor runs.
#[derive(Clone, Debug)]
enum Target {
    /// A single server (or Sentinel's primary): fred's default routing.
    Server,
    /// The cluster primary serving this slot: every key the pattern can match is there.
    Slot(u16),
    /// This cluster primary.
    Node(Server),
}

/// The cursors a scan of `pattern` needs: one on a single server; on a cluster, one on
/// the primary serving the pattern's slot if it fixes one, else one per primary of
/// fred's routing table.
fn targets(client: &Client, pattern: &str) -> Result<Vec<Target>, FredError> {
    if !client.is_clustered() {
        return Ok(vec![Target::Server]);
    }
    if let Some(slot) = slots::pattern_slot(pattern) {
        return Ok(vec![Target::Slot(slot)]);
    }
    // NOTE: the primaries of the routing table, not fred's live connections: a primary
    // whose connection is down then fails its page (an error), where leaving it out
    // would return a silent subset.
    let primaries = client
        .cached_cluster_state()
        .map(|state| state.unique_primary_nodes())
        .unwrap_or_default();
    if primaries.is_empty() {
        return Err(FredError::new(
            ErrorKind::Cluster,
            "the cluster's routing table is not known yet: cannot scan every primary",
        ));
    }
    Ok(primaries.into_iter().map(Target::Node).collect())
}

impl Redis {
    /// Every key matching `pattern` (a SCAN glob: escape user input), `count` per page,
    /// at most `limit` keys. The whole scan is bounded by `operations.scan` (stayfast's
    /// timer), and each page is one SCAN command carrying the time left as its fred
    /// deadline. Pages are requested one at a time, cursor by cursor, only while the
    /// call runs: a scan that reaches `limit`, runs out of time or is dropped sends no
    /// further page (fred's `scan_buffered` kept paging after its receiver was gone).
    /// Keys that are not UTF-8 are skipped.
    ///
    /// On a cluster, SCAN sees one node's keys: the scan then pages through every
    /// primary of fred's routing table in turn (still one page outstanding), unless the
    /// pattern fixes the keys' slot — its text up to the end of its first hash tag holds
    /// no wildcard, as in `{tenant\*}:fact:*` — when only the primary serving that slot
    /// is scanned (escapes are undone first, so the escaped tag finds its keys). Keys
    /// of slots that move between primaries during the scan may be missed or repeated.
    ///
    /// # Cancellation
    ///
    /// Dropping the future stops the scan: at most the page in flight is still run by
    /// the server, and only if fred had not dropped it at its deadline.
    ///
    /// # Errors
    ///
    /// As [`run`](Self::run); on a cluster whose routing table fred has not loaded yet,
    /// fred's `Cluster` error.
    ///
    /// ```no_run
    /// # use stayfast_core::redis::{Redis, RedisConfig};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut config = RedisConfig::default();
    /// # config.url = "redis://127.0.0.1:6379".into();
    /// # let redis = Redis::connect(&config).await?;
    /// let sessions = redis.scan_keys("session:*", 100, 10_000).await?; // every primary
    /// assert!(sessions.len() <= 10_000); // stops at `limit`
    /// let facts = redis.scan_keys("{kb}:fact:*", 100, 10_000).await?; // one slot's primary
    /// # Ok(()) }
    /// ```
    pub async fn scan_keys(
        &self,
        pattern: &str,
        count: u32,
        limit: usize,
    ) -> Result<Vec<String>, RedisError> {
        let (pool, lanes, margin) = (&self.inner.pool, self.inner.lanes, self.inner.margin);
        // One page outstanding at a time: the whole scan counts as one command.
        self.guarded(Command::Scan, |attempt| async move {
            let mut keys = Vec::new();
            if limit == 0 {
                return Ok(keys);
            }
            let connection = lanes.choose(pool, Command::Scan.lane());
            for target in targets(connection, pattern)? {
                let mut cursor = String::from("0");
                loop {
                    // Each page gets the time left, so fred drops a page it could not
                    // write in time rather than run it after the caller gave up.
                    let mut options = options_within(attempt.remaining(), margin);
                    match &target {
                        Target::Server => {}
                        Target::Slot(slot) => options.cluster_hash = Some(ClusterHash::Custom(*slot)),
                        Target::Node(server) => options.cluster_node = Some(server.clone()),
                    }
                    let client = connection.with_options(&options);
                    let (next, page): (String, Vec<Key>) =
                        client.scan_page(cursor, pattern, Some(count), None).await?;
                    keys.extend(page.into_iter().filter_map(Key::into_string));
                    if keys.len() >= limit {
                        keys.truncate(limit);
                        return Ok(keys);
                    }
                    if next == "0" {
                        break; // this node's cursor came back to its start: done
                    }
                    cursor = next;
                }
            }
            Ok(keys)
        })
        .await
    }
}
