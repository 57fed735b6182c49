use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum DataItems {
    Table,
    Id,
    Name,
    Description,
    Payload,
    Version,
    CreatedAt,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(DataItems::Table)
                    .if_not_exists()
                    .col(big_pk_auto(DataItems::Id))
                    .col(string_len(DataItems::Name, 255))
                    .col(text_null(DataItems::Description))
                    // JSONB on PostgreSQL, JSON text on SQLite.
                    .col(json_binary_null(DataItems::Payload))
                    .col(big_integer(DataItems::Version).default(1))
                    .col(timestamp_with_time_zone(DataItems::CreatedAt))
                    .col(timestamp_with_time_zone(DataItems::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        for (name, col) in [
            ("idx_data_items_created_at", DataItems::CreatedAt),
            ("idx_data_items_updated_at", DataItems::UpdatedAt),
        ] {
            manager
                .create_index(
                    Index::create()
                        .if_not_exists()
                        .name(name)
                        .table(DataItems::Table)
                        .col(col)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(DataItems::Table).to_owned())
            .await
    }
}
