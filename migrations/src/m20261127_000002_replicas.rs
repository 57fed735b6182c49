//! What several replicas share through the database:
//! - `idempotency_keys`: a POST's `Idempotency-Key`, written in the same transaction as the item
//!   it created, so a retry reaching any replica (or arriving after the request was cancelled)
//!   finds the first answer;
//! - on PostgreSQL, a trigger that announces every committed change to `data_items` on the
//!   `data_items` channel (`pg_notify`, delivered only on commit, in commit order), so every
//!   replica's cache hears of changes however they were made (another replica, `seed`, psql).
//!   Payload: `<op>:<id>:<version>:<unix seconds of the change>`, op `I`, `U` or `D`.

use sea_orm_migration::{prelude::*, schema::*, sea_orm::DbBackend};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum IdempotencyKeys {
    Table,
    Key,
    Fingerprint,
    ItemId,
    Body,
    CreatedAt,
}

const NOTIFY_FUNCTION: &str = r#"
CREATE OR REPLACE FUNCTION data_items_notify() RETURNS trigger AS $$
DECLARE
    changed data_items;
BEGIN
    IF TG_OP = 'DELETE' THEN changed := OLD; ELSE changed := NEW; END IF;
    PERFORM pg_notify('data_items', left(TG_OP, 1) || ':' || changed.id || ':' || changed.version
        || ':' || extract(epoch from clock_timestamp()));
    RETURN NULL;
END
$$ LANGUAGE plpgsql"#;

const NOTIFY_TRIGGER: &str = "CREATE TRIGGER data_items_notify \
     AFTER INSERT OR UPDATE OR DELETE ON data_items \
     FOR EACH ROW EXECUTE FUNCTION data_items_notify()";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(IdempotencyKeys::Table)
                    .if_not_exists()
                    .col(string_len(IdempotencyKeys::Key, 255).primary_key())
                    .col(big_integer(IdempotencyKeys::Fingerprint))
                    .col(big_integer_null(IdempotencyKeys::ItemId))
                    .col(text_null(IdempotencyKeys::Body))
                    .col(timestamp_with_time_zone(IdempotencyKeys::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("idx_idempotency_keys_created_at")
                    .table(IdempotencyKeys::Table)
                    .col(IdempotencyKeys::CreatedAt)
                    .to_owned(),
            )
            .await?;
        if manager.get_database_backend() == DbBackend::Postgres {
            let db = manager.get_connection();
            db.execute_unprepared(NOTIFY_FUNCTION).await?;
            db.execute_unprepared(NOTIFY_TRIGGER).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DbBackend::Postgres {
            let db = manager.get_connection();
            db.execute_unprepared("DROP TRIGGER IF EXISTS data_items_notify ON data_items")
                .await?;
            db.execute_unprepared("DROP FUNCTION IF EXISTS data_items_notify()")
                .await?;
        }
        manager
            .drop_table(Table::drop().table(IdempotencyKeys::Table).to_owned())
            .await
    }
}
