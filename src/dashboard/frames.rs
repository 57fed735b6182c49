//! The sampled history: each tick, the rendered exposition is folded into one `Frame` of
//! cumulative values over the columns the dashboard reads (only the families and labels it
//! shows; other labels are summed away, as `sum by (…)` would), kept in two rings: every tick
//! for the window, and one frame per coarse step for the hour.

use std::collections::{HashMap, VecDeque};

use super::exposition;
use super::promql::Monotonic;

/// One column: a family and the values of the labels kept of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub family: &'static str,
    pub labels: Vec<(&'static str, String)>,
}

impl Column {
    /// The value of kept label `key` (empty when the series had none).
    pub fn label(&self, key: &str) -> &str {
        self.labels
            .iter()
            .find(|(k, _)| *k == key)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// Cumulative values of every column at one instant; NaN where the column had no series yet.
#[derive(Debug, Clone)]
pub struct Frame {
    /// Unix time, seconds.
    pub t: f64,
    pub values: Vec<f64>,
}

impl Frame {
    /// Column `c`'s value; NaN if it did not exist then.
    pub fn get(&self, c: usize) -> f64 {
        self.values.get(c).copied().unwrap_or(f64::NAN)
    }
}

/// A bounded ring of frames, oldest first.
#[derive(Debug)]
pub struct Ring {
    frames: VecDeque<Frame>,
    capacity: usize,
}

impl Ring {
    fn new(capacity: usize) -> Self {
        Self {
            frames: VecDeque::with_capacity(capacity.min(4096)),
            capacity: capacity.max(2),
        }
    }

    fn push(&mut self, f: Frame) {
        if self.frames.len() == self.capacity {
            self.frames.pop_front();
        }
        self.frames.push_back(f);
    }

    /// Frames, oldest first.
    pub fn frames(&self) -> &VecDeque<Frame> {
        &self.frames
    }

    /// The newest frame.
    pub fn last(&self) -> Option<&Frame> {
        self.frames.back()
    }

    /// The newest frame at or before `t`, or else the oldest one.
    pub fn at_or_before(&self, t: f64) -> Option<&Frame> {
        let i = self.frames.partition_point(|f| f.t <= t);
        self.frames.get(i.saturating_sub(1))
    }
}

/// Metric families and the labels kept of each.
pub type Families = &'static [(&'static str, &'static [&'static str])];

/// Columns, counter state and the two rings.
#[derive(Debug)]
pub struct History {
    /// The families kept, and the labels kept of each (the panels' `FAMILIES`).
    families: Families,
    pub columns: Vec<Column>,
    index: HashMap<(&'static str, Vec<String>), usize>,
    counters: Vec<Option<Monotonic>>,
    pub fine: Ring,
    pub coarse: Ring,
    coarse_step: f64,
}

impl History {
    /// Rings for `fine` frames, and for `coarse` frames one per `coarse_step` seconds, of the
    /// series of `families`.
    pub fn new(families: Families, fine: usize, coarse: usize, coarse_step: f64) -> Self {
        Self {
            families,
            columns: Vec::new(),
            index: HashMap::new(),
            counters: Vec::new(),
            fine: Ring::new(fine),
            coarse: Ring::new(coarse),
            coarse_step,
        }
    }

    /// Bytes held by the frames of both rings (their values; columns are a few KiB more).
    pub fn bytes(&self) -> usize {
        self.fine
            .frames()
            .iter()
            .chain(self.coarse.frames())
            .map(|f| std::mem::size_of::<Frame>() + f.values.capacity() * 8)
            .sum()
    }

    /// Folds the exposition `text`, read at unix time `t`, into a new frame.
    pub fn ingest(&mut self, t: f64, text: &str) {
        let mut values = vec![f64::NAN; self.columns.len()];
        for s in exposition::parse(text) {
            let Some((family, kept)) = self.families.iter().find(|(f, _)| *f == s.name) else {
                continue;
            };
            let key: Vec<String> = kept
                .iter()
                .map(|k| s.label(k).unwrap_or_default().to_owned())
                .collect();
            let c = match self.index.get(&(*family, key.clone())) {
                Some(&c) => c,
                None => {
                    let labels = kept.iter().copied().zip(key.iter().cloned()).collect();
                    self.columns.push(Column { family, labels });
                    self.counters
                        .push(is_counter(family).then(Monotonic::default));
                    self.index.insert((family, key), self.columns.len() - 1);
                    values.push(f64::NAN);
                    self.columns.len() - 1
                }
            };
            let v = &mut values[c];
            *v = if v.is_nan() { s.value } else { *v + s.value };
        }
        for (v, counter) in values.iter_mut().zip(&mut self.counters) {
            if let (Some(m), false) = (counter, v.is_nan()) {
                *v = m.read(*v);
            }
        }
        values.shrink_to_fit();
        let frame = Frame { t, values };
        if self
            .coarse
            .last()
            .is_none_or(|last| t - last.t >= self.coarse_step)
        {
            self.coarse.push(frame.clone());
        }
        self.fine.push(frame);
    }
}

/// Counters and histogram parts only go up (a drop is a reset); gauges are read as they are.
fn is_counter(family: &str) -> bool {
    ["_total", "_bucket", "_count", "_sum"]
        .iter()
        .any(|s| family.ends_with(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboard::panels::FAMILIES;

    const REQS: &str = "http_server_request_duration_seconds_count";

    fn text(n200: u32, n500: u32, active: u32) -> String {
        format!(
            "{REQS}{{http_request_method=\"GET\",http_route=\"/data\",http_response_status_code=\"200\"}} {n200}\n\
             {REQS}{{http_request_method=\"POST\",http_route=\"/data\",http_response_status_code=\"200\"}} 1\n\
             {REQS}{{http_request_method=\"GET\",http_route=\"/data\",http_response_status_code=\"500\"}} {n500}\n\
             http_server_active_requests {active}\nunknown_family 9\n"
        )
    }

    #[test]
    fn sums_away_unkept_labels_and_keeps_gauges_as_read() {
        let mut h = History::new(FAMILIES, 10, 10, 15.0);
        h.ingest(0.0, &text(4, 1, 3));
        // Columns: /data 200 (methods summed), /data 500, active requests; the unknown family is
        // not read.
        assert_eq!(h.columns.len(), 3);
        let f = h.fine.last().unwrap();
        assert_eq!(f.values, vec![5.0, 1.0, 3.0]);
        assert_eq!(h.columns[0].label("http_response_status_code"), "200");
        h.ingest(1.0, &text(2, 1, 1));
        // The 200 column dropped from 5 to 3: a reset; the gauge just went down.
        assert_eq!(h.fine.last().unwrap().values, vec![8.0, 1.0, 1.0]);
    }

    #[test]
    fn rings_are_bounded_and_the_coarse_one_keeps_a_frame_per_step() {
        let mut h = History::new(FAMILIES, 3, 10, 15.0);
        for t in 0..40 {
            h.ingest(f64::from(t), &text(t as u32, 0, 0));
        }
        assert_eq!(h.fine.frames().len(), 3);
        let coarse: Vec<f64> = h.coarse.frames().iter().map(|f| f.t).collect();
        assert_eq!(coarse, [0.0, 15.0, 30.0]);
        assert_eq!(h.fine.at_or_before(38.5).unwrap().t, 38.0);
        assert_eq!(h.fine.at_or_before(1.0).unwrap().t, 37.0, "the oldest kept");
    }

    #[test]
    fn a_column_that_appears_later_is_absent_before() {
        let mut h = History::new(FAMILIES, 10, 10, 15.0);
        h.ingest(0.0, "http_server_active_requests 1\n");
        h.ingest(1.0, &text(1, 0, 1));
        let first = &h.fine.frames()[0];
        assert!(first.get(1).is_nan());
        assert_eq!(h.fine.frames()[1].get(1), 2.0);
    }
}
