//! Changes made outside the service reach every cache (PostgreSQL only):
//! - an `UPDATE` that does not raise `version` (a hand-written fix in psql) gets the next version
//!   and a new `updated_at`, so its notice is newer than what caches hold, its ETag changes and a
//!   client syncing by `updated_since` sees it;
//! - `TRUNCATE` announces itself on the `data_items` channel (payload `T:<unix seconds>`), and
//!   every replica's listener flushes its cache.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const VERSION_FUNCTION: &str = r#"
CREATE OR REPLACE FUNCTION data_items_next_version() RETURNS trigger AS $$
BEGIN
    NEW.version := OLD.version + 1;
    NEW.updated_at := clock_timestamp();
    RETURN NEW;
END
$$ LANGUAGE plpgsql"#;

/// The condition is checked without calling the function, so the service's own updates (which
/// raise the version themselves) pay almost nothing for it.
const VERSION_TRIGGER: &str = "CREATE TRIGGER data_items_next_version \
     BEFORE UPDATE ON data_items \
     FOR EACH ROW WHEN (NEW.version <= OLD.version) \
     EXECUTE FUNCTION data_items_next_version()";

const TRUNCATE_FUNCTION: &str = r#"
CREATE OR REPLACE FUNCTION data_items_notify_truncate() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('data_items', 'T:' || extract(epoch from clock_timestamp()));
    RETURN NULL;
END
$$ LANGUAGE plpgsql"#;

const TRUNCATE_TRIGGER: &str = "CREATE TRIGGER data_items_notify_truncate \
     AFTER TRUNCATE ON data_items \
     FOR EACH STATEMENT EXECUTE FUNCTION data_items_notify_truncate()";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let all = [
            VERSION_FUNCTION,
            VERSION_TRIGGER,
            TRUNCATE_FUNCTION,
            TRUNCATE_TRIGGER,
        ];
        crate::on_postgres(manager, all).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let all = [
            "DROP TRIGGER IF EXISTS data_items_notify_truncate ON data_items",
            "DROP FUNCTION IF EXISTS data_items_notify_truncate()",
            "DROP TRIGGER IF EXISTS data_items_next_version ON data_items",
            "DROP FUNCTION IF EXISTS data_items_next_version()",
        ];
        crate::on_postgres(manager, all).await
    }
}
