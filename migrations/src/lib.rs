//! Schema migrations for data-api. They run on SQLite and PostgreSQL alike; the service applies
//! pending ones at start-up (unless turned off) and `data-api migrate` runs them on their own.

pub use sea_orm_migration::prelude::*;

mod m20261127_000001_create_data_items;
mod m20261127_000002_replicas;
mod m20261204_000003_psql_changes;
mod m20261204_000004_commit_log_feed;
mod m20261204_000005_notify_when_needed;

/// Runs `statements` in order on PostgreSQL; nothing on other backends (the PostgreSQL-only
/// migrations: triggers, the publication).
pub(crate) async fn on_postgres<S: AsRef<str>>(
    manager: &SchemaManager<'_>,
    statements: impl IntoIterator<Item = S>,
) -> Result<(), DbErr> {
    if manager.get_database_backend() != sea_orm_migration::sea_orm::DbBackend::Postgres {
        return Ok(());
    }
    let db = manager.get_connection();
    for sql in statements {
        db.execute_unprepared(sql.as_ref()).await?;
    }
    Ok(())
}

/// The ordered list of every migration the service knows.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261127_000001_create_data_items::Migration),
            Box::new(m20261127_000002_replicas::Migration),
            Box::new(m20261204_000003_psql_changes::Migration),
            Box::new(m20261204_000004_commit_log_feed::Migration),
            Box::new(m20261204_000005_notify_when_needed::Migration),
        ]
    }
}
