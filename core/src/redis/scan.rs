//! [`Redis::scan_keys`]: a bounded SCAN, one page at a time.

use fred::{
    interfaces::{ClientLike, KeysInterface},
    types::Key,
};

use super::{Command, Redis, RedisError, run::options_within};

impl Redis {
    /// Every key matching `pattern` (a SCAN glob: escape user input), `count` per page,
    /// at most `limit` keys. The whole scan is bounded by `operations.scan` (stayfast's
    /// timer), and each page is one SCAN command carrying the time left as its fred
    /// deadline. Pages are requested one at a time, cursor by cursor, only while the
    /// call runs: a scan that reaches `limit`, runs out of time or is dropped sends no
    /// further page (fred's `scan_buffered` kept paging after its receiver was gone).
    /// Keys that are not UTF-8 are skipped.
    ///
    /// # Cancellation
    ///
    /// Dropping the future stops the scan: at most the page in flight is still run by
    /// the server, and only if fred had not dropped it at its deadline.
    ///
    /// # Errors
    ///
    /// As [`run`](Self::run).
    ///
    /// ```no_run
    /// # use stayfast_core::redis::{Redis, RedisConfig};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut config = RedisConfig::default();
    /// # config.url = "redis://127.0.0.1:6379".into();
    /// # let redis = Redis::connect(&config).await?;
    /// let sessions = redis.scan_keys("session:*", 100, 10_000).await?;
    /// assert!(sessions.len() <= 10_000); // stops at `limit`
    /// # Ok(()) }
    /// ```
    pub async fn scan_keys(
        &self,
        pattern: &str,
        count: u32,
        limit: usize,
    ) -> Result<Vec<String>, RedisError> {
        let (pool, margin) = (&self.inner.pool, self.inner.margin);
        self.hold_probe_while_unconnected(Command::Scan)?;
        // One page outstanding at a time: the whole scan counts as one command.
        let _counted = self.inner.in_flight.enter();
        self.policy(Command::Scan)
            .call_borrowed(|attempt| async move {
                let mut keys = Vec::new();
                let mut cursor = String::from("0");
                loop {
                    // Each page gets the time left, so fred drops a page it could not
                    // write in time rather than run it after the caller gave up.
                    let client = pool.with_options(&options_within(attempt.remaining(), margin));
                    let (next, page): (String, Vec<Key>) =
                        client.scan_page(cursor, pattern, Some(count), None).await?;
                    keys.extend(page.into_iter().filter_map(Key::into_string));
                    if keys.len() >= limit {
                        keys.truncate(limit);
                        break;
                    }
                    if next == "0" {
                        break; // the server's cursor came back to its start: done
                    }
                    cursor = next;
                }
                Ok(keys)
            })
            .await
    }
}
