//! [`Redis::pipeline`]: several commands in one round trip, under one policy.

use std::future::Future;

use fred::{error::Error as FredError, interfaces::ClientLike, types::FromValue};

use super::{Command, PipelineWithDeadline, Redis, RedisError, lanes::Lane, run::options};

impl Redis {
    /// Sends the commands `build` queues on the pipeline in one round trip and returns
    /// every reply. The deadline is set on the pipeline itself (`pipeline()
    /// .with_options`), the form fred honours. Not idempotent.
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
    /// use fred::interfaces::KeysInterface;
    /// let (a, b): (Option<String>, Option<String>) = redis
    ///     .pipeline(|p| async move {
    ///         let () = p.get("a").await?; // queued, not sent yet
    ///         let () = p.get("b").await?;
    ///         Ok(p)
    ///     })
    ///     .await?; // one round trip, every reply
    /// # Ok(()) }
    /// ```
    pub async fn pipeline<R, F, Fut>(&self, build: F) -> Result<R, RedisError>
    where
        R: FromValue,
        F: FnMut(PipelineWithDeadline) -> Fut,
        Fut: Future<Output = Result<PipelineWithDeadline, FredError>>,
    {
        self.pipeline_in(Lane::Write, build).await
    }

    /// [`pipeline`](Self::pipeline) on `lane`'s connection: [`Lane::Read`] only for
    /// pipelines of reads ([`batch`](Self::batch) knows its commands).
    pub(super) async fn pipeline_in<R, F, Fut>(&self, lane: Lane, mut build: F) -> Result<R, RedisError>
    where
        R: FromValue,
        F: FnMut(PipelineWithDeadline) -> Fut,
        Fut: Future<Output = Result<PipelineWithDeadline, FredError>>,
    {
        let (pool, lanes, margin) = (&self.inner.pool, self.inner.lanes, self.inner.margin);
        // One round trip: counted as one command in flight, however many it holds.
        self.guarded(Command::Pipeline, |attempt| {
            // NOTE: `pipeline().with_options(..)`, not `with_options(..).pipeline()`:
            // the latter derefs to the bare client and loses the deadline.
            let pipeline = lanes
                .choose(pool, lane)
                .pipeline()
                .with_options(&options(&attempt, margin));
            let queued = build(pipeline);
            async move { queued.await?.all().await }
        })
        .await
    }
}
