//! Start-up's wait for PostgreSQL: a service started beside its database (a compose file, a
//! node reboot) or while the server is briefly full or slow keeps trying for `--db-start-wait`,
//! with growing pauses, instead of exiting on the first refused connection. Failures that
//! waiting cannot mend (a wrong password, a missing database) end the start at once.

use std::time::Duration;

use anyhow::anyhow;
use sea_orm::DatabaseConnection;
use tokio::time::Instant;

use super::failure;

/// The pause after the first failed try; each later pause doubles, up to `LONGEST_PAUSE`.
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const LONGEST_PAUSE: Duration = Duration::from_secs(2);

/// Pings `pool` until it answers, for at most `wait` after the first try.
pub async fn ping_within(pool: &DatabaseConnection, wait: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + wait;
    let mut pause = FIRST_PAUSE;
    let mut tries = 0u32;
    loop {
        tries += 1;
        let Err(err) = pool.ping().await else {
            return Ok(());
        };
        if !failure::may_mend_by_waiting(&err) {
            return Err(anyhow!(err));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let plural = if tries == 1 { "try" } else { "tries" };
            return Err(anyhow!(err).context(format!(
                "no answer within --db-start-wait ({}, {tries} {plural})",
                humantime::format_duration(wait)
            )));
        }
        tracing::warn!(error = %err, tries, "the database does not answer yet; trying again");
        tokio::time::sleep(pause.min(left)).await;
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}
