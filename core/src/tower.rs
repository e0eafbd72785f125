//! A tower [`Layer`] that runs any [`Service`] through a [`Policy`]: deadline, retry,
//! breaker, bulkhead and metrics, in axum, tonic, hyper or reqwest-middleware stacks.
//!
//! The service's errors come back typed, as [`Error<S::Error>`], so a caller can tell a
//! timeout from an open circuit from the service's own failure without downcasting a
//! `BoxError`.
//!
//! # Examples
//!
//! ```
//! use std::time::Duration;
//! use stayfast_core::{Policy, config::RetryConfig, tower::PolicyLayer};
//! use tower_layer::Layer;
//! use tower_service::Service;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
//! let policy = Policy::builder("upstream.get")
//!     .timeout(Duration::from_millis(250))
//!     .retry(&RetryConfig::default())
//!     .idempotent(true)
//!     .build()
//!     .unwrap();
//! // Any `tower::Service`; here a function turned into one.
//! let upstream = ServiceFn(|name: String| async move { Ok::<_, std::io::Error>(format!("hello {name}")) });
//! let mut service = PolicyLayer::new(policy).layer(upstream);
//! std::future::poll_fn(|cx| service.poll_ready(cx)).await.unwrap();
//! assert_eq!(service.call("ferris".to_owned()).await.unwrap(), "hello ferris");
//! # }
//! # #[derive(Clone)] struct ServiceFn<F>(F);
//! # impl<F, Fut, R> Service<String> for ServiceFn<F>
//! # where F: FnMut(String) -> Fut, Fut: std::future::Future<Output = Result<R, std::io::Error>> {
//! #     type Response = R; type Error = std::io::Error; type Future = Fut;
//! #     fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), std::io::Error>> { std::task::Poll::Ready(Ok(())) }
//! #     fn call(&mut self, r: String) -> Fut { (self.0)(r) }
//! # }
//! ```
//!
//! # The readiness contract
//!
//! `poll_ready` drives the inner service's readiness, and `call` hands exactly the
//! service that reported ready to the first attempt (a fresh clone stays behind for the
//! next `poll_ready`, as tower's own middleware does). A retry never reuses it: it
//! clones the service again and waits for that clone's `poll_ready` inside the attempt,
//! under the attempt's timeout and the call's deadline. An error from the inner
//! `poll_ready` comes back as [`Error::Inner`] with `attempts == 0`.
//!
//! # Retries need the request again
//!
//! Each attempt sends its own copy of the request, made by a [`Replay`]: [`Cloned`]
//! (the default, for `Clone` requests) or a closure that rebuilds the request from the
//! original (for bodies that are not `Clone`: keep the bytes, build a new request).
//!
//! # Cancellation
//!
//! Dropping the response future drops the attempt in progress (and with it the inner
//! service's future), as [`Policy::call`] documents: nothing is retried, and `cancelled`
//! is counted once.

use std::{
    fmt,
    future::{Future, poll_fn},
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
};

use futures_util::future::Either;
use tower_layer::Layer;
use tower_service::Service;

use tokio::sync::{AcquireError, OwnedSemaphorePermit};

use crate::{Bulkhead, ByTrait, Classifier, Error, Policy};

/// Makes each attempt's copy of a request.
///
/// ```
/// use stayfast_core::tower::{Cloned, Replay};
/// assert_eq!(Cloned.replay(&"GET /".to_owned()), "GET /");
/// let rebuild = |r: &Vec<u8>| r.clone(); // or build a fresh request from kept parts
/// assert_eq!(rebuild.replay(&vec![1, 2]), [1, 2]);
/// ```
pub trait Replay<Req> {
    /// A request equal to `original`, for one attempt.
    fn replay(&self, original: &Req) -> Req;
}

/// Replays a request by cloning it.
///
/// ```
/// use stayfast_core::tower::{Cloned, Replay};
/// assert_eq!(Cloned.replay(&3), 3);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct Cloned;

impl<Req: Clone> Replay<Req> for Cloned {
    fn replay(&self, original: &Req) -> Req {
        original.clone()
    }
}

impl<Req, F: Fn(&Req) -> Req> Replay<Req> for F {
    fn replay(&self, original: &Req) -> Req {
        self(original)
    }
}

/// Wraps services in a [`PolicyService`].
///
/// ```
/// use stayfast_core::{Policy, tower::PolicyLayer};
/// let layer = PolicyLayer::new(Policy::builder("upstream.get").build().unwrap());
/// # let _ = layer;
/// ```
pub struct PolicyLayer<C = ByTrait, R = Cloned> {
    policy: Policy<C>,
    replay: R,
    bulkhead: Option<Bulkhead>,
}

impl<C> PolicyLayer<C, Cloned> {
    /// A layer running every call through `policy`, cloning requests for retries.
    ///
    /// ```
    /// use stayfast_core::{Policy, tower::PolicyLayer};
    /// let layer = PolicyLayer::new(Policy::builder("upstream.get").build().unwrap());
    /// # let _ = layer;
    /// ```
    pub fn new(policy: Policy<C>) -> Self {
        Self {
            policy,
            replay: Cloned,
            bulkhead: None,
        }
    }
}

impl<C, R> PolicyLayer<C, R> {
    /// Limits the calls in flight with `bulkhead`, as back-pressure: `poll_ready` is
    /// pending until a slot is free, and the slot is held until the response future
    /// ends (or is dropped). Unlike a [`Policy`]'s own bulkhead, which waits up to
    /// `max_wait` inside the call and then sheds it, this one never sheds by itself:
    /// put a load-shedding layer (tower's `LoadShed`) in front to refuse instead of
    /// wait. Clones of the service share the bulkhead's slots.
    ///
    /// ```
    /// use stayfast_core::{Bulkhead, Policy, config::BulkheadConfig, tower::PolicyLayer};
    /// let mut config = BulkheadConfig::default();
    /// config.max_concurrent = 32;
    /// let layer = PolicyLayer::new(Policy::builder("upstream.get").build().unwrap())
    ///     .bulkhead(Bulkhead::new("upstream", &config).unwrap());
    /// # let _ = layer;
    /// ```
    pub fn bulkhead(mut self, bulkhead: Bulkhead) -> Self {
        self.bulkhead = Some(bulkhead);
        self
    }

    /// Makes each attempt's request with `replay` instead of cloning it: for requests
    /// that are not `Clone`.
    ///
    /// ```
    /// use stayfast_core::{Policy, tower::PolicyLayer};
    /// struct Upload { name: String, bytes: Vec<u8> } // not Clone
    /// let layer = PolicyLayer::new(Policy::builder("upload").build().unwrap())
    ///     .replay_with(|u: &Upload| Upload { name: u.name.clone(), bytes: u.bytes.clone() });
    /// # let _ = layer;
    /// ```
    pub fn replay_with<F>(self, replay: F) -> PolicyLayer<C, F> {
        PolicyLayer {
            policy: self.policy,
            replay,
            bulkhead: self.bulkhead,
        }
    }
}

impl<S, C, R: Clone> Layer<S> for PolicyLayer<C, R> {
    type Service = PolicyService<S, C, R>;

    fn layer(&self, inner: S) -> Self::Service {
        PolicyService {
            inner,
            policy: self.policy.clone(),
            replay: self.replay.clone(),
            slot: self.bulkhead.clone().map(Slot::new),
        }
    }
}

impl<C, R: Clone> Clone for PolicyLayer<C, R> {
    fn clone(&self) -> Self {
        Self {
            policy: self.policy.clone(),
            replay: self.replay.clone(),
            bulkhead: self.bulkhead.clone(),
        }
    }
}

impl<C, R> fmt::Debug for PolicyLayer<C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyLayer")
            .field("operation", self.policy.operation())
            .finish_non_exhaustive()
    }
}

/// A [`Service`] whose calls run through a [`Policy`]; made by [`PolicyLayer`].
///
/// ```
/// use stayfast_core::{Policy, tower::PolicyService};
/// # #[derive(Clone)] struct Upstream;
/// let service = PolicyService::new(Upstream, Policy::builder("upstream.get").build().unwrap());
/// # let _ = service;
/// ```
pub struct PolicyService<S, C = ByTrait, R = Cloned> {
    inner: S,
    policy: Policy<C>,
    replay: R,
    /// The layer's bulkhead, if any, and the slot `poll_ready` won for the next call.
    slot: Option<Slot>,
}

impl<S, C> PolicyService<S, C, Cloned> {
    /// Runs `inner`'s calls through `policy`, cloning requests for retries.
    ///
    /// ```
    /// use stayfast_core::{Policy, tower::PolicyService};
    /// # #[derive(Clone)] struct Upstream;
    /// let service = PolicyService::new(Upstream, Policy::builder("upstream.get").build().unwrap());
    /// assert_eq!(service.policy().operation().as_str(), "upstream.get");
    /// ```
    pub fn new(inner: S, policy: Policy<C>) -> Self {
        Self {
            inner,
            policy,
            replay: Cloned,
            slot: None,
        }
    }
}

impl<S, C, R> PolicyService<S, C, R> {
    /// The policy every call runs through.
    ///
    /// ```
    /// use stayfast_core::{Policy, tower::PolicyService};
    /// # #[derive(Clone)] struct Upstream;
    /// let service = PolicyService::new(Upstream, Policy::builder("upstream.get").build().unwrap());
    /// assert!(service.policy().breaker().is_none());
    /// ```
    pub fn policy(&self) -> &Policy<C> {
        &self.policy
    }

    /// The wrapped service.
    ///
    /// ```
    /// use stayfast_core::{Policy, tower::PolicyService};
    /// # #[derive(Clone, Debug, PartialEq)] struct Upstream;
    /// let service = PolicyService::new(Upstream, Policy::builder("upstream.get").build().unwrap());
    /// assert_eq!(service.get_ref(), &Upstream);
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

/// The response future of a [`PolicyService`]: boxed, because the policy's call future
/// has no name to put in `Service::Future`.
pub type ResponseFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, Error<E>>> + Send>>;

impl<S, Req, C, R> Service<Req> for PolicyService<S, C, R>
where
    S: Service<Req> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send,
    S::Error: Send,
    Req: Send + 'static,
    C: Classifier<S::Error>,
    R: Replay<Req> + Clone + Send + 'static,
{
    type Response = S::Response;
    type Error = Error<S::Error>;
    type Future = ResponseFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // NOTE: the slot first, as tower's `ConcurrencyLimit` does: a service is not
        // asked to reserve capacity for a call that could not start.
        if let Some(slot) = &mut self.slot {
            std::task::ready!(slot.poll_acquire(cx));
        }
        self.inner.poll_ready(cx).map_err(|source| Error::Inner {
            operation: self.policy.operation().clone(),
            source,
            attempts: 0,
        })
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let held = match &mut self.slot {
            Some(slot) => match slot.take() {
                Some(held) => Some(held),
                // `call` without a successful `poll_ready` breaks tower's contract; the
                // call is refused as shed rather than let past the limit (or a panic).
                None => {
                    let shed = Error::Shed {
                        target: slot.bulkhead.target().clone(),
                    };
                    return Box::pin(std::future::ready(Err(shed)));
                }
            },
            None => None,
        };
        // NOTE: the service that reported ready goes to the first attempt; the clone stays
        // for the next `poll_ready` (tower's own middleware does the same). Retries use
        // clones of their own, each driven ready inside its attempt.
        let fresh = self.inner.clone();
        let mut ready = Some(std::mem::replace(&mut self.inner, fresh));
        let template = self.inner.clone();
        let replay = self.replay.clone();
        let policy = self.policy.clone();
        Box::pin(async move {
            let _held = held; // the bulkhead slot, freed when the call ends or is dropped
            policy
                .call(move || {
                    let request = replay.replay(&request);
                    match ready.take() {
                        Some(mut service) => Either::Left(service.call(request)),
                        None => {
                            let mut service = template.clone();
                            Either::Right(async move {
                                poll_fn(|cx| service.poll_ready(cx)).await?;
                                service.call(request).await
                            })
                        }
                    }
                })
                .await
        })
    }
}

impl<S: Clone, C, R: Clone> Clone for PolicyService<S, C, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            policy: self.policy.clone(),
            replay: self.replay.clone(),
            // A clone shares the limit, not the slot this one may hold.
            slot: self.slot.as_ref().map(|s| Slot::new(s.bulkhead.clone())),
        }
    }
}

impl<S: fmt::Debug, C, R> fmt::Debug for PolicyService<S, C, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PolicyService")
            .field("inner", &self.inner)
            .field("operation", self.policy.operation())
            .finish_non_exhaustive()
    }
}

/// Waiting for a bulkhead slot by polling, and the slot once won.
struct Slot {
    bulkhead: Bulkhead,
    held: Option<OwnedSemaphorePermit>,
    /// The wait in progress: boxed, because tokio's acquire future has no name; only a
    /// full bulkhead pays for it (a free slot is taken without waiting).
    ///
    /// NOTE: in a mutex that is never locked (`get_mut` through `&mut self`), only so
    /// that the service is `Sync` — axum's state must be — while the boxed future is
    /// only `Send`.
    waiting: Option<Mutex<Waiting>>,
}

/// tokio's wait for an owned semaphore permit, boxed.
type Waiting = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

impl Slot {
    fn new(bulkhead: Bulkhead) -> Self {
        Self {
            bulkhead,
            held: None,
            waiting: None,
        }
    }

    fn poll_acquire(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.held.is_some() {
            return Poll::Ready(());
        }
        if self.waiting.is_none() {
            if let Ok(permit) = Arc::clone(self.bulkhead.slots()).try_acquire_owned() {
                self.held = Some(permit);
                return Poll::Ready(());
            }
            self.waiting = Some(Mutex::new(Box::pin(
                Arc::clone(self.bulkhead.slots()).acquire_owned(),
            )));
        }
        if let Some(waiting) = &mut self.waiting {
            let waiting = waiting.get_mut().unwrap_or_else(PoisonError::into_inner);
            // The bulkhead never closes its semaphore, so the wait cannot fail.
            if let Ok(permit) = std::task::ready!(waiting.as_mut().poll(cx)) {
                self.held = Some(permit);
            }
            self.waiting = None;
        }
        Poll::Ready(())
    }

    fn take(&mut self) -> Option<OwnedSemaphorePermit> {
        self.held.take()
    }
}
