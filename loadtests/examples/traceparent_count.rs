//! Instructions to read an incoming `traceparent`, ours against opentelemetry's propagator, for
//! instruction counting (BENCHMARKS.md, "Reading traceparent"):
//! `valgrind --tool=callgrind target/release/examples/traceparent_count ours 100000`
//! (and `propagator`, and N=0 for the fixed cost).

use opentelemetry::{
    propagation::{Extractor, TextMapPropagator},
    trace::TraceContextExt,
};
use opentelemetry_sdk::propagation::TraceContextPropagator;

use data_api::telemetry::trace_context::TraceParent;

const HEADER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// A request carrying only `traceparent`, as the propagator reads headers.
struct OneHeader<'a>(&'a str);

impl Extractor for OneHeader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == "traceparent").then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent"]
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "ours".to_owned());
    let n: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let propagator = TraceContextPropagator::new();
    let mut valid = 0u64;
    for _ in 0..n {
        let header = std::hint::black_box(HEADER);
        let ok = if mode == "propagator" {
            let cx = propagator.extract(&OneHeader(header));
            cx.span().span_context().is_valid()
        } else {
            TraceParent::parse(header).is_some()
        };
        valid += u64::from(ok);
    }
    assert_eq!(valid, n, "every header parses");
}
