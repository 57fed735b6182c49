//! Waiting on the service's state, never on a sleep and a hope: a probe is asked again every
//! few milliseconds until it reports the state reached, within a bound that only guards against
//! hanging (on a loaded 2-core machine states are reached far sooner).

use std::{
    fmt::Display,
    future::Future,
    time::{Duration, Instant},
};

/// Longest a test waits for a state before it fails (a no-hang guard, not a timing assertion).
pub const STATE_WAIT: Duration = Duration::from_secs(20);

/// How often a probe is asked again.
const POLL: Duration = Duration::from_millis(10);

/// Asks `probe` until it answers `Ok`, and returns that; panics after `STATE_WAIT` naming `what`
/// and the last state the probe reported (its `Err`).
pub async fn eventually<T, E: Display, Fut>(what: &str, mut probe: impl FnMut() -> Fut) -> T
where
    Fut: Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    loop {
        match probe().await {
            Ok(reached) => return reached,
            Err(now) => assert!(
                started.elapsed() < STATE_WAIT,
                "{what}: still {now} after {STATE_WAIT:?}"
            ),
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Asks `probe` until it holds, for at most `limit`; how long that took, or `None` if it never
/// did. For tests that measure a recovery rather than wait for one.
pub async fn within<Fut: Future<Output = bool>>(
    limit: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Fut,
) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if probe().await {
            return Some(started.elapsed());
        }
        tokio::time::sleep(every).await;
    }
    None
}
