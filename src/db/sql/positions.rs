//! The statements replication and migrations run besides the item queries: WAL positions on the
//! primary and the standbys, the heartbeat sent through the invalidation channel, and the
//! advisory lock that serializes migrations.

use std::time::Duration;

use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};

/// A WAL position to ask a server for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// Where the primary writes now.
    PrimaryWrite,
    /// How far a standby has replayed (NULL on a primary).
    StandbyReplay,
}

impl Position {
    fn sql(self) -> &'static str {
        match self {
            Self::PrimaryWrite => "SELECT pg_current_wal_lsn()::text AS lsn",
            Self::StandbyReplay => "SELECT pg_last_wal_replay_lsn()::text AS lsn",
        }
    }
}

/// Asks `db` for `position` within `within`; `Ok(None)` for SQL NULL, `Err` when it does not
/// answer in time or answers something that is not a position.
pub async fn ask(
    db: &DatabaseConnection,
    position: Position,
    within: Duration,
) -> Result<Option<u64>, ()> {
    let stmt = Statement::from_string(db.get_database_backend(), position.sql());
    let row = match tokio::time::timeout(within, db.query_one_raw(stmt)).await {
        Ok(Ok(Some(row))) => row,
        _ => return Err(()),
    };
    let text: Option<String> = row.try_get("", "lsn").map_err(|_| ())?;
    text.map(|t| parse_lsn(&t).ok_or(())).transpose()
}

/// `X/Y` (hex halves) as one number.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    (hi <= u64::from(u32::MAX) && lo <= u64::from(u32::MAX)).then_some(hi << 32 | lo)
}

/// A heartbeat through the trigger's channel: notifies `$1` with `$2` followed by the primary's
/// WAL position as it leaves; but only while the notifying trigger is enabled (a deployment
/// whose replicas all stream disables it), so a replica that listens to the channel loses its
/// lease, and serves no hits, when changes no longer reach it.
pub const HEARTBEAT: &str = "SELECT pg_notify($1, $2 || pg_current_wal_lsn()::text) \
     WHERE EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'data_items'::regclass \
     AND tgname = 'data_items_notify' AND tgenabled IN ('O', 'A'))";

/// Enables the notifying triggers if they are disabled (the migrations leave them so where no
/// replica listened): a replica on the trigger feed runs it before it listens. It waits at most
/// 2 s for the table's lock (which writes hold), so it cannot stall the writes behind it for
/// long; a failure is logged, and the heartbeat above keeps the lease away meanwhile.
pub const ENABLE_NOTIFY: &str = r#"DO $$ BEGIN
    IF EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'data_items'::regclass
               AND tgname IN ('data_items_notify', 'data_items_notify_truncate')
               AND tgenabled NOT IN ('O', 'A')) THEN
        PERFORM set_config('lock_timeout', '2s', true);
        ALTER TABLE data_items ENABLE TRIGGER data_items_notify,
                               ENABLE TRIGGER data_items_notify_truncate;
    END IF;
END $$"#;

/// A heartbeat through the commit-log feed: a logical decoding message with prefix `$1` and
/// content `$2` followed by the primary's WAL position as it leaves. It writes WAL, no table;
/// transactional, so its commit flushes the WAL and the feed delivers it at once (a
/// non-transactional one waits for the next flush, up to `wal_writer_delay`), after every
/// transaction that committed before it.
pub const HEARTBEAT_MESSAGE: &str =
    "SELECT pg_logical_emit_message(true, $1, $2 || pg_current_wal_lsn()::text)";

/// Creates this session's temporary logical replication slot `{}` (dropped by the server when
/// the session ends, so a dead replica retains no WAL); a replication command.
pub fn create_temporary_slot(name: &str) -> String {
    format!("CREATE_REPLICATION_SLOT {name} TEMPORARY LOGICAL pgoutput")
}

/// The publication the feed reads (migration `m20261204_000004_commit_log_feed`).
pub const PUBLICATION: &str = "data_api_items";

/// Takes the session-level advisory lock `$1`, waiting for it.
pub const TAKE_LOCK: &str = "SELECT pg_advisory_lock($1)";
/// Releases the advisory lock `$1`.
pub const RELEASE_LOCK: &str = "SELECT pg_advisory_unlock($1)";

/// A passive WAL checkpoint on SQLite: copies what it can without waiting for readers.
pub const SQLITE_CHECKPOINT: &str = "PRAGMA wal_checkpoint(PASSIVE)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lsns() {
        assert_eq!(parse_lsn("0/16B3748"), Some(0x16B_3748));
        assert_eq!(parse_lsn("1/0"), Some(1 << 32));
        for bad in ["", "16B3748", "x/1", "1/2/3", "100000000/0"] {
            assert_eq!(parse_lsn(bad), None, "{bad}");
        }
    }
}
