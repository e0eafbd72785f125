//! Medians, quartiles and percentiles: how every figure of the benches is summarised.

use std::time::Duration;

/// The `q`-quantile (`0.0..=1.0`) of `values`, interpolated linearly between the two
/// nearest ranks (the usual "type 7" definition: the median of `[1, 2, 3, 4]` is 2.5);
/// `None` when `values` is empty. NaNs sort last.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (sorted.len() - 1) as f64 * q.clamp(0.0, 1.0);
    let (low, high) = (rank.floor() as usize, rank.ceil() as usize);
    Some(sorted[low] + (sorted[high] - sorted[low]) * (rank - low as f64))
}

/// The median and quartiles of a set of figures (per-round ratios, rates, times).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// The first quartile.
    pub q1: f64,
    /// The median.
    pub median: f64,
    /// The third quartile.
    pub q3: f64,
    /// How many figures it summarises.
    pub n: usize,
}

impl Summary {
    /// The summary of `values`; `None` when empty.
    pub fn of(values: &[f64]) -> Option<Self> {
        Some(Self {
            q1: quantile(values, 0.25)?,
            median: quantile(values, 0.5)?,
            q3: quantile(values, 0.75)?,
            n: values.len(),
        })
    }

    /// The summary of durations, in seconds.
    pub fn of_durations(values: &[Duration]) -> Option<Self> {
        Self::of(&values.iter().map(Duration::as_secs_f64).collect::<Vec<_>>())
    }

    /// Every figure multiplied by `factor` (seconds to microseconds, say).
    pub fn scaled(self, factor: f64) -> Self {
        Self {
            q1: self.q1 * factor,
            median: self.median * factor,
            q3: self.q3 * factor,
            n: self.n,
        }
    }

    /// Whether the interquartile range holds `value`: a ratio whose quartiles straddle
    /// 1.0 is no difference within this run's noise.
    pub fn spans(&self, value: f64) -> bool {
        self.q1 <= value && value <= self.q3
    }

    /// `median (q1–q3)` with `decimals` decimals.
    pub fn display(&self, decimals: usize) -> String {
        format!(
            "{:.d$} ({:.d$}–{:.d$})",
            self.median,
            self.q1,
            self.q3,
            d = decimals
        )
    }
}

/// The `p`-percentile (`0.0..=1.0`) of already sorted durations, by nearest rank;
/// `Duration::ZERO` when there are none.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// Per-round ratios `a[i] / b[i]` of two paired series.
pub fn ratios(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter()
        .zip(b)
        .filter(|(_, b)| **b > 0.0)
        .map(|(a, b)| a / b)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_between_ranks() {
        let v = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(quantile(&v, 0.5), Some(2.5));
        assert_eq!(quantile(&v, 0.0), Some(1.0));
        assert_eq!(quantile(&v, 1.0), Some(4.0));
        assert_eq!(quantile(&v, 0.25), Some(1.75));
        assert_eq!(quantile(&[], 0.5), None);
        assert_eq!(quantile(&[7.0], 0.9), Some(7.0));
    }

    #[test]
    fn summary_of_odd_count() {
        let s = Summary::of(&[5.0, 1.0, 3.0, 2.0, 4.0]).expect("non-empty");
        assert_eq!((s.q1, s.median, s.q3, s.n), (2.0, 3.0, 4.0, 5));
        assert!(s.spans(3.5) && !s.spans(4.5));
        assert_eq!(s.display(1), "3.0 (2.0–4.0)");
        assert_eq!(s.scaled(2.0).median, 6.0);
    }

    #[test]
    fn percentiles_and_ratios() {
        let sorted: Vec<_> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(percentile(&sorted, 0.5), Duration::from_micros(51));
        assert_eq!(percentile(&sorted, 0.99), Duration::from_micros(100));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
        assert_eq!(ratios(&[2.0, 3.0, 1.0], &[1.0, 0.0, 2.0]), vec![2.0, 0.5]);
    }
}
