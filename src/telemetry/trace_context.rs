//! W3C Trace Context (`traceparent`): parsed and written by hand, because this runs on every
//! request and the general-purpose propagator allocates a `Vec`, a `Context` and an `Arc` each
//! time. The header's byte layout lives here and nowhere else.

use std::cell::RefCell;

use opentelemetry::trace::{SpanId, TraceFlags, TraceId};
use rand::{Rng, SeedableRng, rngs::SmallRng};

/// Where the fields sit in `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`.
const TRACE_ID: std::ops::Range<usize> = 3..35;
const SPAN_ID: std::ops::Range<usize> = 36..52;
const FLAGS: std::ops::Range<usize> = 53..55;
/// Length of a version-00 `traceparent`.
pub const HEADER_LEN: usize = 55;

/// The fields of a `traceparent` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub flags: TraceFlags,
}

impl TraceParent {
    /// Parses `00-<32 hex>-<16 hex>-<2 hex>` (later versions: their first four fields).
    /// All-zero ids, version `ff` and upper-case hex are invalid, as the spec says.
    pub fn parse(header: &str) -> Option<Self> {
        let header = header.trim();
        let mut parts = header.split('-');
        let version = parts.next()?;
        let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
        if version.len() != 2 || version == "ff" || !lower_hex(version) {
            return None;
        }
        if version == "00" && parts.next().is_some() {
            return None;
        }
        if trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
            return None;
        }
        if !lower_hex(trace) || !lower_hex(span) || !lower_hex(flags) {
            return None;
        }
        let trace_id = TraceId::from(u128::from_str_radix(trace, 16).ok()?);
        let span_id = SpanId::from(u64::from_str_radix(span, 16).ok()?);
        let flags = TraceFlags::new(u8::from_str_radix(flags, 16).ok()?);
        (trace_id != TraceId::INVALID && span_id != SpanId::INVALID).then_some(Self {
            trace_id,
            span_id,
            flags,
        })
    }

    /// A new span of this trace, or of a new trace when there is none to continue.
    pub fn child_of(incoming: Option<Self>) -> Self {
        Self {
            trace_id: incoming.map_or_else(random_trace_id, |p| p.trace_id),
            span_id: random_span_id(),
            flags: incoming.map_or(TraceFlags::default(), |p| p.flags),
        }
    }

    /// The header value, `00-<trace id>-<span id>-<flags>`.
    pub fn header(&self) -> TraceHeader {
        let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
        hex_into(&mut out[TRACE_ID], &self.trace_id.to_bytes());
        hex_into(&mut out[SPAN_ID], &self.span_id.to_bytes());
        hex_into(&mut out[FLAGS], &[self.flags.to_u8()]);
        TraceHeader(out)
    }
}

/// A written `traceparent`, kept as bytes: it answers the request and labels its log lines
/// without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceHeader(pub [u8; HEADER_LEN]);

impl TraceHeader {
    /// The 32-hex-digit trace id.
    pub fn trace_id(&self) -> &str {
        std::str::from_utf8(&self.0[TRACE_ID]).unwrap_or_default()
    }

    /// The 16-hex-digit span id.
    pub fn span_id(&self) -> &str {
        std::str::from_utf8(&self.0[SPAN_ID]).unwrap_or_default()
    }
}

fn lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Writes `bytes` as lower-case hex into `out` (twice as long).
fn hex_into(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0xf)];
    }
}

thread_local! {
    /// Ids need uniqueness, not secrecy: a fast generator per thread, seeded from the OS.
    static RNG: RefCell<SmallRng> = RefCell::new(SmallRng::from_os_rng());
}

/// A random valid (non-zero) span id.
pub fn random_span_id() -> SpanId {
    RNG.with_borrow_mut(|rng| {
        loop {
            let id = rng.random::<u64>();
            if id != 0 {
                return SpanId::from(id);
            }
        }
    })
}

/// A random valid (non-zero) trace id.
pub fn random_trace_id() -> TraceId {
    RNG.with_borrow_mut(|rng| {
        loop {
            let id = rng.random::<u128>();
            if id != 0 {
                return TraceId::from(id);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn parses_and_writes() {
        let h = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let tp = TraceParent::parse(h).unwrap();
        assert_eq!(
            tp.trace_id,
            TraceId::from(0x4bf92f3577b34da6a3ce929d0e0e4736_u128)
        );
        assert_eq!(tp.span_id, SpanId::from(0x00f067aa0ba902b7_u64));
        assert_eq!(tp.flags, TraceFlags::SAMPLED);
        let written = tp.header();
        assert_eq!(&written.0, h.as_bytes());
        assert_eq!(written.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(written.span_id(), "00f067aa0ba902b7");
    }

    #[test]
    fn rejects_invalid() {
        for bad in [
            "",
            "00-zz-yy-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
        // A later version may carry more fields.
        assert!(
            TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more")
                .is_some()
        );
    }

    /// A generator stuck on one value, or on zero, or sharing state badly between threads,
    /// fails this: 10,000 ids from each of two threads, all valid and all different.
    #[test]
    fn random_ids_are_valid_and_distinct() {
        let draw = || {
            (0..10_000)
                .map(|_| (random_trace_id(), random_span_id()))
                .collect::<Vec<_>>()
        };
        let other = std::thread::spawn(draw);
        let mut ids = draw();
        ids.extend(other.join().unwrap());
        let traces: HashSet<_> = ids.iter().map(|(t, _)| *t).collect();
        let spans: HashSet<_> = ids.iter().map(|(_, s)| *s).collect();
        assert_eq!(traces.len(), ids.len());
        assert_eq!(spans.len(), ids.len());
        assert!(!traces.contains(&TraceId::INVALID));
        assert!(!spans.contains(&SpanId::INVALID));
    }

    #[test]
    fn a_child_continues_the_trace_with_a_new_span() {
        let parent =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let child = TraceParent::child_of(Some(parent));
        assert_eq!(child.trace_id, parent.trace_id);
        assert_eq!(child.flags, parent.flags);
        assert_ne!(child.span_id, parent.span_id);
        let root = TraceParent::child_of(None);
        assert_ne!(root.trace_id, parent.trace_id);
        assert_eq!(root.flags, TraceFlags::default());
    }
}
