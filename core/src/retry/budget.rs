//! [`RetryBudget`]: keeps retries to a share of calls, so an outage does not turn into a
//! retry storm.

use std::sync::{
    Arc,
    atomic::{AtomicI64, Ordering},
};

use crate::config::{BudgetConfig, ConfigError};

/// Thousandths of a retry: the budget's unit, so a ratio of 0.2 is an integer deposit.
const SCALE: i64 = 1000;

/// A retry budget shared by every policy it is given to.
///
/// Every call deposits `ratio` of a retry; every retry withdraws one whole retry, and is
/// refused when less than one is left. The balance starts at `min_retries` and never
/// exceeds `min_retries + 100 × ratio`, so a long healthy spell does not bank an
/// unbounded burst. Hence `N` calls make at most `N × (1 + ratio) + min_retries`
/// attempts. Lock-free; cheap to clone.
///
/// # Examples
///
/// ```
/// use stayfast_core::{RetryBudget, config::BudgetConfig};
///
/// let mut config = BudgetConfig::default();
/// config.ratio = 0.5;
/// config.min_retries = 1;
/// let budget = RetryBudget::new(&config).unwrap();
/// assert!(budget.try_withdraw());   // the one guaranteed retry
/// assert!(!budget.try_withdraw());
/// budget.deposit();
/// budget.deposit();                 // two calls earn one retry
/// assert!(budget.try_withdraw());
/// ```
#[derive(Clone, Debug)]
pub struct RetryBudget(Arc<Balance>);

#[derive(Debug)]
struct Balance {
    balance: AtomicI64,
    deposit: i64,
    cap: i64,
}

impl RetryBudget {
    /// A budget from `config`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for a ratio outside (0, 1].
    ///
    /// ```
    /// # use stayfast_core::{RetryBudget, config::BudgetConfig};
    /// let mut config = BudgetConfig::default();
    /// config.ratio = 0.0;
    /// assert_eq!(RetryBudget::new(&config).unwrap_err().field(), "ratio");
    /// ```
    pub fn new(config: &BudgetConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let deposit = (config.ratio * SCALE as f64).round() as i64;
        let reserve = i64::from(config.min_retries) * SCALE;
        Ok(Self(Arc::new(Balance {
            balance: AtomicI64::new(reserve),
            deposit,
            cap: reserve + 100 * deposit,
        })))
    }

    /// Credits one call.
    ///
    /// ```
    /// # use stayfast_core::{RetryBudget, config::BudgetConfig};
    /// let mut config = BudgetConfig::default(); // ratio 0.2
    /// config.min_retries = 0;
    /// let budget = RetryBudget::new(&config).unwrap();
    /// for _ in 0..5 {
    ///     budget.deposit();
    /// }
    /// assert_eq!(budget.available(), 1); // five calls earn one retry
    /// ```
    #[inline]
    pub fn deposit(&self) {
        let b = &*self.0;
        // Saturate at the cap; a lost race only means a slightly lower balance.
        let _ = b.balance.fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
            (v < b.cap).then(|| (v + b.deposit).min(b.cap))
        });
    }

    /// Takes one retry if the balance allows it.
    ///
    /// ```
    /// # use stayfast_core::{RetryBudget, config::BudgetConfig};
    /// let mut config = BudgetConfig::default();
    /// config.min_retries = 2;
    /// let budget = RetryBudget::new(&config).unwrap();
    /// assert!(budget.try_withdraw() && budget.try_withdraw());
    /// assert!(!budget.try_withdraw()); // spent: the retry is refused
    /// ```
    #[inline]
    pub fn try_withdraw(&self) -> bool {
        self.0
            .balance
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                (v >= SCALE).then_some(v - SCALE)
            })
            .is_ok()
    }

    /// Whole retries currently available.
    ///
    /// ```
    /// # use stayfast_core::{RetryBudget, config::BudgetConfig};
    /// let budget = RetryBudget::new(&BudgetConfig::default()).unwrap(); // 10 retries, ratio 0.2
    /// assert_eq!(budget.available(), 10);
    /// for _ in 0..1_000 {
    ///     budget.deposit();
    /// }
    /// assert_eq!(budget.available(), 30); // capped at min_retries + 100 × ratio
    /// ```
    pub fn available(&self) -> u64 {
        (self.0.balance.load(Ordering::Acquire) / SCALE).max(0) as u64
    }
}
