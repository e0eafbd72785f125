//! B4, the breaker against a reference model: a proptest state machine drives a pure model
//! and the real breaker through the same successes, failures, acquires, cancellations
//! and clock ticks; their state and admission agree after every step.

use super::*;

#[derive(Clone, Copy, Debug)]
enum Op {
    /// Record a success on held permit `i % len` (`Some(i)` while permits are held), or
    /// make one whole successful call.
    Success(Option<usize>),
    /// The same with a failure.
    Failure(Option<usize>),
    /// The same with an ignored outcome.
    Ignore(Option<usize>),
    /// Acquire a permit and hold it.
    Acquire,
    /// Drop a held permit (a probe if one is held) without recording.
    CancelProbe(usize),
    /// Let time pass.
    Tick(u64),
    /// Let time pass until 1 ms before (-1), at (0) or 1 ms after (1) the model's next
    /// deadline: the end of the open duration, or of the half-open probes' time.
    ToDeadline(i8),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MState {
    Closed,
    Open,
    HalfOpen,
}

/// The breaker as documented, with time in whole milliseconds: consecutive failures
/// only, K probes, open duration growing by an integer factor up to a cap.
#[derive(Debug)]
struct Model {
    limit: u32,
    probes: u32,
    base: u64,
    growth: u64,
    max: u64,
    now: u64,
    state: MState,
    generation: u64,
    failures: u32,
    open_for: u64,
    open_until: u64,
    half_open_since: u64,
    admitted: u32,
    succeeded: u32,
}

/// What the model says about one acquisition.
#[derive(Debug, PartialEq, Eq)]
enum Admission {
    Admitted { generation: u64, probe: bool },
    Rejected { retry_after_ms: u64 },
}

impl Model {
    fn enter(&mut self, to: MState, probe_failed: bool) {
        self.state = to;
        self.generation += 1;
        self.admitted = 0;
        self.succeeded = 0;
        match to {
            MState::Open => {
                self.open_for = if probe_failed {
                    (self.open_for * self.growth).clamp(self.base, self.max)
                } else {
                    self.base
                };
                self.open_until = self.now + self.open_for;
            }
            MState::HalfOpen => self.half_open_since = self.now,
            MState::Closed => {
                self.open_for = self.base;
                self.failures = 0;
            }
        }
    }

    fn acquire(&mut self) -> Admission {
        if self.state == MState::Open && self.now >= self.open_until {
            self.enter(MState::HalfOpen, false);
        }
        if self.state == MState::HalfOpen
            && self.admitted >= self.probes
            && self.now - self.half_open_since >= self.open_for
        {
            // Every probe outlived the open duration: they failed.
            self.enter(MState::Open, true);
        }
        match self.state {
            MState::Closed => Admission::Admitted {
                generation: self.generation,
                probe: false,
            },
            MState::HalfOpen if self.admitted < self.probes => {
                self.admitted += 1;
                Admission::Admitted {
                    generation: self.generation,
                    probe: true,
                }
            }
            // Every probe is out: the time until they count as failed.
            MState::HalfOpen => Admission::Rejected {
                retry_after_ms: self.half_open_since + self.open_for - self.now,
            },
            MState::Open => Admission::Rejected {
                retry_after_ms: self.open_until - self.now,
            },
        }
    }

    fn record(&mut self, generation: u64, probe: bool, health: Health) {
        if generation != self.generation {
            return;
        }
        match (self.state, probe, health) {
            (_, _, Health::Ignore) => self.cancel(generation, probe),
            (MState::Closed, false, Health::Success) => self.failures = 0,
            (MState::Closed, false, _) => {
                self.failures += 1;
                if self.failures >= self.limit {
                    self.enter(MState::Open, false);
                }
            }
            (MState::HalfOpen, true, Health::Success) => {
                self.succeeded += 1;
                if self.succeeded >= self.probes {
                    self.enter(MState::Closed, false);
                }
            }
            (MState::HalfOpen, true, _) => self.enter(MState::Open, true),
            _ => {}
        }
    }

    /// Milliseconds until the next time-driven change, if any.
    fn until_deadline(&self) -> u64 {
        match self.state {
            MState::Open => self.open_until.saturating_sub(self.now),
            MState::HalfOpen => (self.half_open_since + self.open_for).saturating_sub(self.now),
            MState::Closed => 0,
        }
    }

    fn cancel(&mut self, generation: u64, probe: bool) {
        if probe && generation == self.generation && self.state == MState::HalfOpen {
            self.admitted -= 1;
        }
    }
}

fn real_state(state: State) -> MState {
    match state {
        Closed => MState::Closed,
        Open => MState::Open,
        HalfOpen => MState::HalfOpen,
        other => panic!("the model never reaches {other:?}"),
    }
}

#[derive(Clone, Copy, Debug)]
struct Params {
    limit: u32,
    probes: u32,
    base_ms: u64,
    growth: u64,
    max_factor: u64,
}

/// Which permit to record on: a held one (`Some`) or a fresh call (`None`).
fn held() -> impl Strategy<Value = Option<usize>> {
    proptest::option::of(any::<u8>().prop_map(usize::from))
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => held().prop_map(Op::Success),
        3 => held().prop_map(Op::Failure),
        1 => held().prop_map(Op::Ignore),
        3 => Just(Op::Acquire),
        1 => any::<u8>().prop_map(|i| Op::CancelProbe(i.into())),
        1 => (0_u64..=120).prop_map(Op::Tick),
        2 => (-1_i8..=1).prop_map(Op::ToDeadline),
    ]
}

fn params() -> impl Strategy<Value = Params> {
    (1_u32..=3, 1_u32..=3, 1_u64..=50, 1_u64..=3, 1_u64..=8).prop_map(
        |(limit, probes, base_ms, growth, max_factor)| Params {
            limit,
            probes,
            base_ms,
            growth,
            max_factor,
        },
    )
}

/// Compares one acquisition with the model; keeps the permit when admitted.
fn check_acquire<'a>(b: &'a CircuitBreaker, model: &mut Model) -> Result<Option<Permit<'a>>, TestCaseError> {
    let expected = model.acquire();
    let (actual, permit) = match b.try_acquire() {
        Ok(p) => (
            Admission::Admitted {
                generation: p.generation(),
                probe: p.is_probe(),
            },
            Some(p),
        ),
        Err(r) => {
            let retry_after = r.retry_after();
            prop_assert_eq!(retry_after.subsec_nanos() % 1_000_000, 0, "{:?}", retry_after);
            (
                Admission::Rejected {
                    retry_after_ms: u64::try_from(retry_after.as_millis()).unwrap(),
                },
                None,
            )
        }
    };
    prop_assert_eq!(actual, expected);
    Ok(permit)
}

async fn run_model(p: Params, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut c = config(p.limit, p.probes, p.base_ms);
    c.open_growth = p.growth as f64;
    c.max_open_for = ms(p.base_ms * p.max_factor);
    let (b, log) = logged("model", &c);
    let mut model = Model {
        limit: p.limit,
        probes: p.probes,
        base: p.base_ms,
        growth: p.growth,
        max: p.base_ms * p.max_factor,
        now: 0,
        state: MState::Closed,
        generation: 0,
        failures: 0,
        open_for: p.base_ms,
        open_until: 0,
        half_open_since: 0,
        admitted: 0,
        succeeded: 0,
    };
    let mut held: Vec<Permit<'_>> = Vec::new();
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Success(i) | Op::Failure(i) | Op::Ignore(i) => {
                let health = match op {
                    Op::Success(_) => Health::Success,
                    Op::Failure(_) => Health::Failure,
                    _ => Health::Ignore,
                };
                let permit = match i {
                    Some(i) if !held.is_empty() => Some(held.remove(i % held.len())),
                    _ => check_acquire(&b, &mut model)?,
                };
                if let Some(permit) = permit {
                    model.record(permit.generation(), permit.is_probe(), health);
                    permit.record(health);
                }
            }
            Op::Acquire => {
                if let Some(permit) = check_acquire(&b, &mut model)? {
                    held.push(permit);
                }
            }
            Op::CancelProbe(i) => {
                let probes: Vec<usize> = (0..held.len()).filter(|&j| held[j].is_probe()).collect();
                let index = match (probes.is_empty(), held.is_empty()) {
                    (false, _) => Some(probes[i % probes.len()]),
                    (true, false) => Some(i % held.len()),
                    (true, true) => None,
                };
                if let Some(index) = index {
                    let permit = held.remove(index);
                    model.cancel(permit.generation(), permit.is_probe());
                    drop(permit);
                }
            }
            Op::Tick(n) => {
                advance(ms(n)).await;
                model.now += n;
            }
            Op::ToDeadline(offset) => {
                let n = model.until_deadline().saturating_add_signed(offset.into());
                advance(ms(n)).await;
                model.now += n;
            }
        }
        prop_assert_eq!(real_state(b.state()), model.state, "step {}: {:?}", step, op);
        prop_assert_eq!(
            steps(&log).len() as u64,
            model.generation,
            "step {}: {:?}",
            step,
            op
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn breaker_model_proptest(p in params(), ops in proptest::collection::vec(op(), 0..=60)) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(run_model(p, ops))?;
    }
}
