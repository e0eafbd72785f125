//! The typed commands: one method per command the handle wraps, each run under its
//! own [`Command`]'s policy.

use fred::{
    error::Error as FredError,
    interfaces::{ClientLike, HashesInterface, KeysInterface, ListInterface, SetsInterface},
    prelude::Expiration,
    types::{ClusterHash, CustomCommand, FromValue, Key, Map, MultipleKeys, MultipleValues, Value},
};

use super::{Command, Redis, RedisError, run::convert, slots};

impl Redis {
    /// `GET key`.
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
    /// let name: Option<String> = redis.get("user:1:name").await?; // `None`: no such key
    /// let visits: Option<i64> = redis.get("visits").await?; // converted by fred's `FromValue`
    /// # Ok(()) }
    /// ```
    pub async fn get<R: FromValue>(&self, key: impl Into<Key>) -> Result<R, RedisError> {
        let key = key.into();
        self.read(Command::Get, |c| c.get(key.clone())).await
    }

    /// `SET key value [EX seconds]`.
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
    /// redis.set("session:42", "alice", Some(3600)).await?; // expires in an hour
    /// redis.set("mode", "fast", None).await?; // never expires
    /// # Ok(()) }
    /// ```
    pub async fn set(
        &self,
        key: impl Into<Key>,
        value: impl Into<Value>,
        expire_secs: Option<i64>,
    ) -> Result<(), RedisError> {
        let (key, value) = (key.into(), value.into());
        self.run(Command::Set, |c| {
            let (key, value) = (key.clone(), value.clone());
            async move {
                c.set::<(), _, _>(key, value, expire_secs.map(Expiration::EX), None, false)
                    .await
            }
        })
        .await
    }

    /// `DEL keys…`; how many were removed. On a cluster the keys must share a slot (one
    /// hash tag), or the server answers `CROSSSLOT`: delete keys of several slots one by
    /// one, or through a [`Batch`](super::Batch).
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
    /// let removed = redis.del(vec!["session:42", "session:43"]).await?;
    /// assert!(removed <= 2); // keys that did not exist are not counted
    /// # Ok(()) }
    /// ```
    pub async fn del(&self, keys: impl Into<MultipleKeys>) -> Result<i64, RedisError> {
        let keys = keys.into();
        self.run(Command::Del, |c| {
            let keys = keys.clone();
            async move { c.del(keys).await }
        })
        .await
    }

    /// `EXPIRE key seconds`; whether the key exists.
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
    /// if !redis.expire("session:42", 60).await? {
    ///     // The key was already gone: nothing to extend.
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn expire(&self, key: impl Into<Key>, seconds: i64) -> Result<bool, RedisError> {
        let key = key.into();
        self.run(Command::Expire, |c| {
            let key = key.clone();
            async move { c.expire(key, seconds, None).await }
        })
        .await
    }

    /// `HGETALL key`.
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
    /// use std::collections::HashMap;
    /// redis.hset("user:1", [("name", "alice"), ("plan", "pro")]).await?;
    /// let user: HashMap<String, String> = redis.hgetall("user:1").await?; // empty if missing
    /// assert_eq!(user["plan"], "pro");
    /// # Ok(()) }
    /// ```
    pub async fn hgetall<R: FromValue>(&self, key: impl Into<Key>) -> Result<R, RedisError> {
        let key = key.into();
        self.read(Command::Hgetall, |c| c.hgetall(key.clone())).await
    }

    /// `HSET key field value…`; how many fields were added.
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
    /// redis.hset("user:1", [("name", "alice"), ("plan", "pro")]).await?;
    /// let added = redis.hset("user:1", [("plan", "team")]).await?;
    /// assert_eq!(added, 0); // an existing field is updated, not added
    /// # Ok(()) }
    /// ```
    pub async fn hset<F>(&self, key: impl Into<Key>, fields: F) -> Result<i64, RedisError>
    where
        F: TryInto<Map>,
        F::Error: Into<FredError>,
    {
        let key = key.into();
        let fields = convert(Command::Hset, fields)?;
        self.run(Command::Hset, |c| {
            let (key, fields) = (key.clone(), fields.clone());
            async move { c.hset(key, fields).await }
        })
        .await
    }

    /// `RPUSH key values…`; the list's new length. Not idempotent: an attempt that timed
    /// out is `OutcomeUnknown`, never retried.
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
    /// match redis.rpush("jobs", vec!["job-1"]).await {
    ///     Ok(len) => println!("{len} jobs queued"),
    ///     Err(e) if e.is_outcome_unknown() => { /* maybe queued: do not push it again blindly */ }
    ///     Err(e) => return Err(e.into()),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn rpush<V>(&self, key: impl Into<Key>, values: V) -> Result<i64, RedisError>
    where
        V: TryInto<MultipleValues>,
        V::Error: Into<FredError>,
    {
        let key = key.into();
        let values = convert(Command::Rpush, values)?;
        self.run(Command::Rpush, |c| {
            let (key, values) = (key.clone(), values.clone());
            async move { c.rpush(key, values).await }
        })
        .await
    }

    /// `LRANGE key start stop`.
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
    /// redis.rpush("l", vec!["x", "y", "z"]).await?;
    /// let all: Vec<String> = redis.lrange("l", 0, -1).await?; // -1: the last element
    /// let last_two: Vec<String> = redis.lrange("l", -2, -1).await?;
    /// # Ok(()) }
    /// ```
    pub async fn lrange<R: FromValue>(
        &self,
        key: impl Into<Key>,
        start: i64,
        stop: i64,
    ) -> Result<R, RedisError> {
        let key = key.into();
        self.read(Command::Lrange, |c| c.lrange(key.clone(), start, stop))
            .await
    }

    /// `SADD key members…`; how many were added.
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
    /// # redis.del("tags").await?;
    /// assert_eq!(redis.sadd("tags", vec!["a", "b"]).await?, 2);
    /// assert_eq!(redis.sadd("tags", vec!["b", "c"]).await?, 1); // "b" was already a member
    /// # Ok(()) }
    /// ```
    pub async fn sadd<V>(&self, key: impl Into<Key>, members: V) -> Result<i64, RedisError>
    where
        V: TryInto<MultipleValues>,
        V::Error: Into<FredError>,
    {
        let key = key.into();
        let members = convert(Command::Sadd, members)?;
        self.run(Command::Sadd, |c| {
            let (key, members) = (key.clone(), members.clone());
            async move { c.sadd(key, members).await }
        })
        .await
    }

    /// `SINTER keys…`. On a cluster the keys must share a slot (one hash tag), or the
    /// server answers `CROSSSLOT`.
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
    /// redis.sadd("{tags}:1", vec!["a", "b"]).await?;
    /// redis.sadd("{tags}:2", vec!["b", "c"]).await?;
    /// let both: Vec<String> = redis.sinter(vec!["{tags}:1", "{tags}:2"]).await?;
    /// assert_eq!(both, ["b"]);
    /// # Ok(()) }
    /// ```
    pub async fn sinter<R: FromValue>(&self, keys: impl Into<MultipleKeys>) -> Result<R, RedisError> {
        let keys = keys.into();
        self.read(Command::Sinter, |c| c.sinter(keys.clone())).await
    }

    /// `EVAL script numkeys keys… args…`, sent as a custom command so the attempt's
    /// deadline applies (fred's `WithOptions` drops it for its Lua interface). Not
    /// idempotent.
    ///
    /// On a cluster the script goes to the primary serving its keys' slot; every key
    /// must therefore hash to one slot (one hash tag: `{user:1}:a`, `{user:1}:b`),
    /// checked before anything is sent, on a single server too.
    ///
    /// # Errors
    ///
    /// [`Error::Inner`](crate::Error::Inner) with fred's `InvalidArgument` and no attempt
    /// when the keys span several slots; otherwise as [`run`](Self::run).
    ///
    /// ```no_run
    /// # use stayfast_core::redis::{Redis, RedisConfig};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let mut config = RedisConfig::default();
    /// # config.url = "redis://127.0.0.1:6379".into();
    /// # let redis = Redis::connect(&config).await?;
    /// let script = "return redis.call('INCRBY', KEYS[1], ARGV[1])";
    /// let visits: i64 = redis.eval(script, vec!["visits".into()], vec!["5".into()]).await?;
    /// let two_slots = vec!["visits".into(), "visitors".into()];
    /// assert!(redis.eval::<i64>(script, two_slots, vec![]).await.is_err()); // refused, unsent
    /// # Ok(()) }
    /// ```
    pub async fn eval<R: FromValue>(
        &self,
        script: &str,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<R, RedisError> {
        let (hash, argv) = eval_argv(script.into(), keys, args)?;
        self.run(Command::Eval, |c| {
            let (argv, hash) = (argv.clone(), hash.clone());
            async move {
                let cmd = CustomCommand::new_static("EVAL", hash, false);
                c.custom(cmd, argv).await
            }
        })
        .await
    }

    /// [`eval`](Self::eval), then `WAIT replicas timeout` on the same connection, in one
    /// pipeline: the script's reply and how many replicas acknowledged its writes (and
    /// every earlier write of that connection) within `timeout`. Not idempotent.
    ///
    /// Redis counts the acknowledgements of the writes of the connection `WAIT` is sent
    /// on, so the two must share one: sent as two calls they might not. The pipeline's
    /// bound (`timeouts.redis.operations.pipeline`) must leave room for `timeout`.
    ///
    /// # Errors
    ///
    /// As [`eval`](Self::eval) (keys of several slots are refused, unsent); a `WAIT`
    /// that Redis refuses fails the call.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use stayfast_core::redis::{Redis, RedisConfig};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let redis = Redis::connect(&RedisConfig::default()).await?;
    /// let script = "return redis.call('INCR', KEYS[1])";
    /// let (orders, replicas): (i64, u32) = redis
    ///     .eval_then_wait(script, vec!["orders".into()], vec![], 1, Duration::from_millis(100))
    ///     .await?;
    /// if replicas == 0 { /* the write is on the primary only, for now */ }
    /// # Ok(()) }
    /// ```
    pub async fn eval_then_wait<R: FromValue>(
        &self,
        script: &str,
        keys: Vec<String>,
        args: Vec<String>,
        replicas: u32,
        timeout: std::time::Duration,
    ) -> Result<(R, u32), RedisError> {
        let (hash, argv) = eval_argv(script.into(), keys, args)?;
        let wait = wait_args(replicas, timeout);
        let (reply, acknowledged): (R, i64) = self
            .pipeline(|p| {
                let (argv, wait, hash) = (argv.clone(), wait.clone(), hash.clone());
                async move {
                    let () = p
                        .custom(CustomCommand::new_static("EVAL", hash.clone(), false), argv)
                        .await?;
                    let () = p
                        .custom(CustomCommand::new_static("WAIT", hash, false), wait)
                        .await?;
                    Ok(p)
                }
            })
            .await?;
        Ok((reply, u32::try_from(acknowledged).unwrap_or(0)))
    }

    /// `INCR key`; the new value. Not idempotent: an attempt that timed out is
    /// `OutcomeUnknown`, never retried.
    ///
    /// # Errors
    ///
    /// As [`run`](Self::run).
    ///
    /// ```no_run
    /// # use stayfast_core::redis::{Redis, RedisConfig};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let redis = Redis::connect(&RedisConfig::default()).await?;
    /// let next: u64 = redis.incr("orders:seq").await?; // 1 for a key that did not exist
    /// assert!(next >= 1);
    /// # Ok(()) }
    /// ```
    pub async fn incr<R: FromValue>(&self, key: impl Into<Key>) -> Result<R, RedisError> {
        let key = key.into();
        self.run(Command::Incr, |c| {
            let key = key.clone();
            async move { c.incr(key).await }
        })
        .await
    }

    /// `HGET key field`; nil (`None`) when the key or the field is missing.
    ///
    /// # Errors
    ///
    /// As [`run`](Self::run); a key holding another type is a `WRONGTYPE` reply
    /// ([`RedisError::is_wrong_type`](super::RedisError)).
    ///
    /// ```no_run
    /// # use stayfast_core::redis::{Redis, RedisConfig};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let redis = Redis::connect(&RedisConfig::default()).await?;
    /// redis.hset("user:1", [("plan", "pro")]).await?;
    /// let plan: Option<String> = redis.hget("user:1", "plan").await?;
    /// assert_eq!(plan.as_deref(), Some("pro"));
    /// # Ok(()) }
    /// ```
    pub async fn hget<R: FromValue>(
        &self,
        key: impl Into<Key>,
        field: impl Into<Key>,
    ) -> Result<R, RedisError> {
        let (key, field) = (key.into(), field.into());
        self.read(Command::Hget, |c| c.hget(key.clone(), field.clone()))
            .await
    }

    /// `SCARD key`: how many members the set has (0 for a missing key).
    ///
    /// # Errors
    ///
    /// As [`run`](Self::run).
    ///
    /// ```no_run
    /// # use stayfast_core::redis::{Redis, RedisConfig};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let redis = Redis::connect(&RedisConfig::default()).await?;
    /// # redis.del("tags").await?;
    /// redis.sadd("tags", vec!["a", "b"]).await?;
    /// assert_eq!(redis.scard("tags").await?, 2);
    /// # Ok(()) }
    /// ```
    pub async fn scard(&self, key: impl Into<Key>) -> Result<u64, RedisError> {
        let key = key.into();
        self.read(Command::Scard, |c| c.scard(key.clone())).await
    }

    /// `PING`, under [`Command::Other`]'s policy: never retried, so a health check
    /// sees the first answer or failure. `Ok` means Redis answered.
    ///
    /// # Errors
    ///
    /// As [`run`](Self::run).
    ///
    /// ```no_run
    /// # use stayfast_core::redis::{Redis, RedisConfig};
    /// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let redis = Redis::connect(&RedisConfig::default()).await?;
    /// let answered = tokio::time::timeout(std::time::Duration::from_millis(200), redis.ping()).await;
    /// let healthy = matches!(answered, Ok(Ok(())));
    /// # Ok(()) }
    /// ```
    pub async fn ping(&self) -> Result<(), RedisError> {
        self.run(Command::Other, |c| async move { c.ping::<String>(None).await })
            .await
            .map(drop)
    }
}

/// `EVAL`'s (or `EVALSHA`'s) routing and arguments: the primary serving the keys'
/// slot, and `script numkeys keys… args…` (`script`: the body, or its SHA1).
pub(super) fn eval_argv(
    script: Value,
    keys: Vec<String>,
    args: Vec<String>,
) -> Result<(ClusterHash, Vec<Value>), RedisError> {
    // Routed to the primary serving the keys' slot: `ClusterHash::Random` drew a MOVED
    // redirection (and a resync of fred's routing table) on most calls of a cluster.
    let hash = match slots::common_slot(Command::Eval, &keys)? {
        Some(slot) => ClusterHash::Custom(slot),
        None => ClusterHash::Random, // no key: any node may run it
    };
    let mut argv: Vec<Value> = Vec::with_capacity(2 + keys.len() + args.len());
    argv.push(script);
    argv.push((keys.len() as i64).into());
    argv.extend(keys.into_iter().map(Value::from));
    argv.extend(args.into_iter().map(Value::from));
    Ok((hash, argv))
}

/// `WAIT`'s arguments: `replicas` and `timeout` in milliseconds (saturated).
pub(super) fn wait_args(replicas: u32, timeout: std::time::Duration) -> Vec<Value> {
    vec![
        i64::from(replicas).into(),
        i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX).into(),
    ]
}
