//! What the commit-log feed needs (PostgreSQL only):
//! - the publication `data_api_items` on `data_items`, which a replica's temporary logical
//!   replication slot decodes with the built-in `pgoutput` plugin (every committed insert,
//!   update, delete and truncate, in commit order). Creating it does not need `wal_level =
//!   logical`; reading it does;
//! - the notifying triggers become switchable: they notify unless the setting
//!   `data_api.notify` is `off` in the writing session, so a deployment whose replicas all read
//!   the feed turns the NOTIFY (and the commit lock it takes) off for every writer with
//!   `ALTER DATABASE … SET data_api.notify = off`. Unset, they notify as before.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const PUBLICATION: &str = "DO $$ BEGIN \
     IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'data_api_items') THEN \
       CREATE PUBLICATION data_api_items FOR TABLE data_items; \
     END IF; END $$";

/// The row trigger of `m20261127_000002_replicas`, and the truncate trigger of
/// `m20261204_000003_psql_changes`, each with `when` as its condition.
fn triggers(when: &str) -> [String; 4] {
    [
        "DROP TRIGGER IF EXISTS data_items_notify ON data_items".into(),
        format!(
            "CREATE TRIGGER data_items_notify AFTER INSERT OR UPDATE OR DELETE ON data_items \
             FOR EACH ROW {when} EXECUTE FUNCTION data_items_notify()"
        ),
        "DROP TRIGGER IF EXISTS data_items_notify_truncate ON data_items".into(),
        format!(
            "CREATE TRIGGER data_items_notify_truncate AFTER TRUNCATE ON data_items \
             FOR EACH STATEMENT {when} EXECUTE FUNCTION data_items_notify_truncate()"
        ),
    ]
}

const SWITCHABLE: &str = "WHEN (current_setting('data_api.notify', true) IS DISTINCT FROM 'off')";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let all = triggers(SWITCHABLE).into_iter().chain([PUBLICATION.into()]);
        crate::on_postgres(manager, all).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let all = ["DROP PUBLICATION IF EXISTS data_api_items".to_owned()]
            .into_iter()
            .chain(triggers(""));
        crate::on_postgres(manager, all).await
    }
}
