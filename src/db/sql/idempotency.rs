//! `Idempotency-Key`s, kept in the database beside the items: the key row is written in the same
//! transaction as the item it created, so every replica sees it, a concurrent retry waits for the
//! first transaction and then reads its answer, and a request cancelled after its commit cannot
//! leave an item without its key.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, DeleteMany,
    EntityTrait, Insert, QueryFilter, Select, TransactionTrait, UpdateMany, sea_query::OnConflict,
};

use super::items::{self, NewItem, now};

/// The `idempotency_keys` table.
pub mod entity {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "idempotency_keys")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub key: String,
        /// The request's fingerprint, to tell a retry from a different request.
        pub fingerprint: i64,
        pub item_id: Option<i64>,
        /// The first answer's body, as sent.
        #[sea_orm(column_type = "Text", nullable)]
        pub body: Option<String>,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

use entity::{ActiveModel, Column, Entity};

/// How a create with a key ended.
#[derive(Debug)]
pub enum Once {
    /// This request created the item.
    Created(crate::db::Model),
    /// An earlier request with the same key and fingerprint did: its item id and answer.
    Replayed { id: i64, body: String },
    /// The key was used for a different request.
    Reused,
}

/// Creates `item` under `key` unless a live (younger than `ttl`) key exists, in one transaction.
pub async fn create_once(
    db: &DatabaseConnection,
    key: String,
    fingerprint: u64,
    item: NewItem,
    ttl: std::time::Duration,
    answer: impl FnOnce(&crate::db::Model) -> String + Send,
) -> Result<Once, DbErr> {
    // Stored as its bit pattern: the column is a signed 64-bit integer.
    let fingerprint = i64::from_ne_bytes(fingerprint.to_ne_bytes());
    let txn = db.begin().await?;
    let claimed = claim_query(key.clone(), fingerprint, now(), ttl)
        .exec_without_returning(&txn)
        .await?;
    if claimed == 0 {
        let first = find_query(key).one(&txn).await?;
        txn.commit().await?;
        return Ok(match first {
            Some(k) if k.fingerprint == fingerprint => match (k.item_id, k.body) {
                (Some(id), Some(body)) => Once::Replayed { id, body },
                _ => return Err(DbErr::Custom("idempotency key without its answer".into())),
            },
            _ => Once::Reused,
        });
    }
    let model = items::insert(&txn, item).await?;
    answer_query(key, model.id, answer(&model))
        .exec(&txn)
        .await?;
    txn.commit().await?;
    Ok(Once::Created(model))
}

/// `create_once`'s claim of `key` at `at`: a live key (younger than `ttl`) stays (on PostgreSQL
/// this waits for a concurrent first request to finish); an expired one is taken over.
pub fn claim_query(
    key: String,
    fingerprint: i64,
    at: DateTime<Utc>,
    ttl: std::time::Duration,
) -> Insert<ActiveModel> {
    let row = ActiveModel {
        key: Set(key),
        fingerprint: Set(fingerprint),
        item_id: Set(None),
        body: Set(None),
        created_at: Set(at),
    };
    let claim = OnConflict::column(Column::Key)
        .update_columns([
            Column::Fingerprint,
            Column::ItemId,
            Column::Body,
            Column::CreatedAt,
        ])
        .action_and_where(Column::CreatedAt.lt(cutoff(at, ttl)))
        .to_owned();
    Entity::insert(row).on_conflict(claim)
}

/// `create_once`'s look-up of the first request's answer.
pub fn find_query(key: String) -> Select<Entity> {
    Entity::find_by_id(key)
}

/// `create_once`'s record of the answer under `key`.
pub fn answer_query(key: String, item_id: i64, body: String) -> UpdateMany<Entity> {
    Entity::update_many()
        .col_expr(Column::ItemId, item_id.into())
        .col_expr(Column::Body, body.into())
        .filter(Column::Key.eq(key))
}

/// Deletes keys older than `ttl`; returns how many.
pub async fn purge(db: &impl ConnectionTrait, ttl: std::time::Duration) -> Result<u64, DbErr> {
    let result = purge_query(now(), ttl).exec(db).await?;
    Ok(result.rows_affected)
}

/// `purge`'s statement: keys expired at `at`.
pub fn purge_query(at: DateTime<Utc>, ttl: std::time::Duration) -> DeleteMany<Entity> {
    Entity::delete_many().filter(Column::CreatedAt.lt(cutoff(at, ttl)))
}

/// The oldest creation time still live at `at`.
fn cutoff(at: DateTime<Utc>, ttl: std::time::Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(ttl)
        .ok()
        .and_then(|ttl| at.checked_sub_signed(ttl))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}
