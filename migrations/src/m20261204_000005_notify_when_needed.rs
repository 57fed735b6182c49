//! The NOTIFY only where a replica needs it (PostgreSQL only).
//!
//! `m20261204_000004_commit_log_feed` made the notifying triggers switchable by a setting, but a
//! trigger that does not notify still runs for every row: its condition is evaluated and the
//! old row fetched for it, which cost writes about a tenth of their rate (pgbench, 32 clients).
//! Now the switch is the triggers' own state:
//! - the triggers are recreated without a condition, and left **disabled** unless a replica is
//!   listening on the `data_items` channel as this runs (a rolling upgrade of a fleet on the
//!   trigger feed keeps them on); a disabled trigger costs a write nothing;
//! - a replica that uses the trigger feed (`--invalidation trigger`, or `auto` where the commit
//!   log cannot be streamed) enables them each time it connects its listener, before it listens;
//! - its heartbeat is only sent while they are enabled, so a replica on the trigger feed holds
//!   no lease, and serves no hits, while changes would not reach it.
//!
//! A deployment whose replicas all stream pays no trigger; once the last replica on the trigger
//! feed is gone, `ALTER TABLE data_items DISABLE TRIGGER data_items_notify, DISABLE TRIGGER
//! data_items_notify_truncate` (docs/OPERATIONS.md) takes the cost away again.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The triggers of `m20261127_000002_replicas` and `m20261204_000003_psql_changes`, as they
/// were made (no condition).
const TRIGGERS: [&str; 4] = [
    "DROP TRIGGER IF EXISTS data_items_notify ON data_items",
    "CREATE TRIGGER data_items_notify AFTER INSERT OR UPDATE OR DELETE ON data_items \
     FOR EACH ROW EXECUTE FUNCTION data_items_notify()",
    "DROP TRIGGER IF EXISTS data_items_notify_truncate ON data_items",
    "CREATE TRIGGER data_items_notify_truncate AFTER TRUNCATE ON data_items \
     FOR EACH STATEMENT EXECUTE FUNCTION data_items_notify_truncate()",
];

/// Disables both unless a session of this database is listening on the channel (a listener's
/// last statement is its `LISTEN`; its heartbeats go through another connection).
const DISABLE_UNLESS_LISTENED: &str = r#"DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_stat_activity
                   WHERE datname = current_database() AND pid <> pg_backend_pid()
                     AND query ~* '^\s*LISTEN\s+"?data_items"?\s*;?\s*$') THEN
        ALTER TABLE data_items DISABLE TRIGGER data_items_notify,
                               DISABLE TRIGGER data_items_notify_truncate;
    END IF;
END $$"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let all: Vec<&'static str> = TRIGGERS
            .into_iter()
            .chain([DISABLE_UNLESS_LISTENED])
            .collect();
        crate::on_postgres(manager, all).await
    }

    /// Back to the switchable triggers of `m20261204_000004_commit_log_feed`, enabled.
    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let when = "WHEN (current_setting('data_api.notify', true) IS DISTINCT FROM 'off')";
        let all = TRIGGERS.map(|sql| sql.replace("EXECUTE", &format!("{when} EXECUTE")));
        crate::on_postgres(manager, all).await
    }
}
