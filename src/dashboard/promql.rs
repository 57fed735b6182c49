//! The two PromQL computations the dashboard needs, done the way Prometheus does them, so the
//! page and a Grafana panel over the same buckets agree: `histogram_quantile` over bucket
//! increases, and a counter's increase that treats a drop as a reset.

/// One histogram bucket: its upper bound (`le`) and the cumulative count up to it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub le: f64,
    pub count: f64,
}

/// Prometheus' `histogram_quantile(q, buckets)`: sorted by bound, equal bounds merged, counts
/// made monotonic; NaN without a `+Inf` bucket, with fewer than two buckets or with no
/// observations; the largest finite bound when the rank falls in the `+Inf` bucket; otherwise
/// linear interpolation inside the bucket the rank falls in (from 0 for the first bucket).
pub fn histogram_quantile(q: f64, buckets: &[Bucket]) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    let mut b: Vec<Bucket> = buckets.to_vec();
    b.sort_by(|x, y| x.le.total_cmp(&y.le));
    b.dedup_by(|next, kept| {
        let same = next.le == kept.le;
        if same {
            kept.count += next.count;
        }
        same
    });
    if b.last().is_none_or(|l| l.le != f64::INFINITY) || b.len() < 2 {
        return f64::NAN;
    }
    let mut max = f64::NEG_INFINITY;
    for x in &mut b {
        max = max.max(x.count);
        x.count = max;
    }
    let observations = b[b.len() - 1].count;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let i = b[..b.len() - 1].partition_point(|x| x.count < rank);
    if i == b.len() - 1 {
        return b[b.len() - 2].le;
    }
    if i == 0 && b[0].le <= 0.0 {
        return b[0].le;
    }
    let (mut start, end, mut count) = (0.0, b[i].le, b[i].count);
    if i > 0 {
        start = b[i - 1].le;
        count -= b[i - 1].count;
        rank -= b[i - 1].count;
    }
    start + (end - start) * (rank / count)
}

/// Follows a counter through its raw readings: a reading below the previous one is a reset (the
/// counter restarted from zero), so the running total adds the new reading rather than going
/// down. Totals are what the dashboard stores; an increase is then one subtraction.
#[derive(Debug, Clone, Copy, Default)]
pub struct Monotonic {
    last_raw: f64,
    total: f64,
}

impl Monotonic {
    /// The running total after reading `raw`.
    pub fn read(&mut self, raw: f64) -> f64 {
        self.total += if raw >= self.last_raw {
            raw - self.last_raw
        } else {
            raw
        };
        self.last_raw = raw;
        self.total
    }
}

/// Per-second rate between two readings `(seconds, total)`, by their actual timestamps (ticks
/// need not be evenly spaced); `None` without two distinct readings.
pub fn rate(from: (f64, f64), to: (f64, f64)) -> Option<f64> {
    let dt = to.0 - from.0;
    (dt > 0.0).then(|| (to.1 - from.1) / dt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buckets(pairs: &[(f64, f64)]) -> Vec<Bucket> {
        pairs
            .iter()
            .map(|&(le, count)| Bucket { le, count })
            .collect()
    }

    #[test]
    fn interpolates_inside_the_bucket_like_prometheus() {
        // 10 below 0.1, 10 more below 0.2, none above.
        let b = buckets(&[(0.1, 10.0), (0.2, 20.0), (f64::INFINITY, 20.0)]);
        assert!((histogram_quantile(0.5, &b) - 0.1).abs() < 1e-12);
        assert!((histogram_quantile(0.25, &b) - 0.05).abs() < 1e-12);
        assert!((histogram_quantile(0.75, &b) - 0.15).abs() < 1e-12);
        assert!((histogram_quantile(0.99, &b) - 0.198).abs() < 1e-12);
        assert_eq!(histogram_quantile(0.0, &b), 0.0);
    }

    #[test]
    fn the_inf_bucket_answers_the_largest_finite_bound() {
        let b = buckets(&[(0.1, 1.0), (0.25, 2.0), (f64::INFINITY, 10.0)]);
        assert_eq!(histogram_quantile(0.99, &b), 0.25);
        // Without a +Inf bucket there is no answer.
        assert!(histogram_quantile(0.5, &buckets(&[(0.1, 1.0), (0.2, 2.0)])).is_nan());
    }

    #[test]
    fn an_empty_window_has_no_quantile() {
        let b = buckets(&[(0.1, 0.0), (f64::INFINITY, 0.0)]);
        assert!(histogram_quantile(0.5, &b).is_nan());
        assert!(histogram_quantile(0.5, &[]).is_nan());
        assert!(histogram_quantile(0.5, &buckets(&[(f64::INFINITY, 3.0)])).is_nan());
    }

    #[test]
    fn unsorted_duplicate_and_non_monotonic_buckets_are_repaired() {
        let b = buckets(&[
            (f64::INFINITY, 20.0),
            (0.2, 9.0), // below the 0.1 bucket's count: raised to 10
            (0.1, 6.0),
            (0.1, 4.0), // the same bound twice: summed
        ]);
        // Ranks up to 10 fall in the first bucket, the rest is above 0.2.
        assert!((histogram_quantile(0.25, &b) - 0.05).abs() < 1e-12);
        assert_eq!(histogram_quantile(0.9, &b), 0.2);
    }

    #[test]
    fn out_of_range_quantiles() {
        let b = buckets(&[(0.1, 1.0), (f64::INFINITY, 1.0)]);
        assert_eq!(histogram_quantile(-0.1, &b), f64::NEG_INFINITY);
        assert_eq!(histogram_quantile(1.1, &b), f64::INFINITY);
        assert!(histogram_quantile(f64::NAN, &b).is_nan());
    }

    #[test]
    fn a_counter_reset_does_not_go_negative() {
        let mut m = Monotonic::default();
        let totals: Vec<f64> = [5.0, 8.0, 2.0, 4.0]
            .into_iter()
            .map(|r| m.read(r))
            .collect();
        // 5, +3, restart at 2 (the 2 counts), +2.
        assert_eq!(totals, [5.0, 8.0, 10.0, 12.0]);
        assert_eq!(rate((0.0, 5.0), (3.0, 12.0)), Some(7.0 / 3.0));
    }

    #[test]
    fn rates_use_actual_timestamps_and_need_two_readings() {
        // Ticks at 0, 0.5 and 2.5 s: the rate over the uneven span is by time, not tick count.
        assert_eq!(rate((0.0, 0.0), (2.5, 10.0)), Some(4.0));
        assert_eq!(rate((0.5, 2.0), (2.5, 10.0)), Some(4.0));
        assert_eq!(rate((1.0, 1.0), (1.0, 1.0)), None);
    }
}
