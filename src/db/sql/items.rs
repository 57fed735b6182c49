//! The SQL side: every query the service runs against `data_items`, written with sea-orm.
//! Writes use `RETURNING`, so what a write answers is exactly what the database stored.

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DatabaseConnection, DbErr, DeleteMany, EntityTrait, Insert,
    InsertMany, QueryFilter, QueryOrder, QuerySelect, Select, Statement, TransactionTrait,
    UpdateMany,
    sea_query::{Expr, ExprTrait},
};
use serde_json::Value;

use super::entity::{ActiveModel, Column, Entity, Model};

/// The fields a client supplies when creating or replacing an item.
#[derive(Debug, Clone)]
pub struct NewItem {
    pub name: String,
    pub description: Option<String>,
    pub payload: Option<Value>,
}

impl NewItem {
    /// A hash of the request, to tell a retry from a different request with the same key. Keys
    /// are shared by replicas that may run different builds (a rolling update), so the hash is
    /// SHA-256 of the canonical JSON (object keys sorted), never a hasher that may change.
    pub fn fingerprint(&self) -> u64 {
        use sha2::{Digest, Sha256};
        let canonical =
            serde_json::to_vec(&(&self.name, &self.description, &self.payload)).unwrap_or_default();
        let digest = Sha256::digest(&canonical);
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_be_bytes(first)
    }
}

/// A partial update: `None` leaves a field alone, `Some(None)` clears a nullable one.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub payload: Option<Option<Value>>,
}

/// Which current versions a conditional write accepts (from `If-Match`, `If-None-Match` and
/// `If-Unmodified-Since`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// No condition: write whatever the current version is.
    None,
    /// `If-Match: *`: the item must exist.
    Exists,
    /// The current version must be one of these (possibly none, which never matches).
    VersionIn(Vec<i64>),
    /// The current version must be none of these.
    VersionNotIn(Vec<i64>),
    /// The item must not have changed after this second (`If-Unmodified-Since`).
    UnmodifiedSince(DateTime<Utc>),
    /// Every one of these.
    All(Vec<Precondition>),
}

/// How a conditional update or delete ended.
#[derive(Debug)]
pub enum WriteOutcome<T> {
    Done(T),
    NotFound,
    /// The item exists but its version failed the precondition.
    Conflict,
}

/// Now, at the microsecond precision both databases store (PostgreSQL keeps no more), so what a
/// write returns equals what a later read returns.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

pub async fn get(db: &impl ConnectionTrait, id: i64) -> Result<Option<Model>, DbErr> {
    get_query(id).one(db).await
}

/// `get`'s statement.
pub fn get_query(id: i64) -> Select<Entity> {
    Entity::find_by_id(id)
}

pub async fn insert(db: &impl ConnectionTrait, item: NewItem) -> Result<Model, DbErr> {
    insert_query(item, now()).exec_with_returning(db).await
}

/// `insert`'s statement: `item` at version 1, created and updated `at`.
pub fn insert_query(item: NewItem, at: DateTime<Utc>) -> Insert<ActiveModel> {
    let row = ActiveModel {
        id: NotSet,
        name: Set(item.name),
        description: Set(item.description),
        payload: Set(item.payload),
        version: Set(1),
        created_at: Set(at),
        updated_at: Set(at),
    };
    Entity::insert(row)
}

/// Applies `changes` (all fields for a replace) and bumps the version, if `pre` holds.
pub async fn update(
    db: &impl ConnectionTrait,
    id: i64,
    changes: Changes,
    pre: &Precondition,
) -> Result<WriteOutcome<Model>, DbErr> {
    let q = update_query(id, changes, pre, now());
    match q.exec_with_returning(db).await?.into_iter().next() {
        Some(model) => Ok(WriteOutcome::Done(model)),
        None => why_not_written(db, id).await,
    }
}

/// `update`'s statement.
pub fn update_query(
    id: i64,
    changes: Changes,
    pre: &Precondition,
    at: DateTime<Utc>,
) -> UpdateMany<Entity> {
    let mut q = Entity::update_many()
        .col_expr(Column::Version, Expr::col(Column::Version).add(1))
        .col_expr(Column::UpdatedAt, Expr::value(at));
    if let Some(name) = changes.name {
        q = q.col_expr(Column::Name, Expr::value(name));
    }
    if let Some(description) = changes.description {
        q = q.col_expr(Column::Description, Expr::value(description));
    }
    if let Some(payload) = changes.payload {
        q = q.col_expr(Column::Payload, Expr::value(payload));
    }
    with_precondition(q.filter(Column::Id.eq(id)), pre)
}

/// Several unconditional updates as one statement (PostgreSQL): each row gets its `changes` and
/// the next version, all with one `updated_at`. The rows arrive as one JSON array. They are
/// locked first, in ascending id order (`locked`: a sort under the lock, whatever plan the join
/// gets; a hash join over a small table would otherwise lock them in heap order, and two
/// batches could deadlock), then updated.
pub const UPDATE_MANY: &str = "WITH v AS (SELECT * FROM jsonb_to_recordset($1) AS v(id int8, \
     set_name bool, name text, set_description bool, description text, set_payload bool, \
     payload jsonb)), \
     locked AS (SELECT d.id FROM data_items d WHERE d.id IN (SELECT id FROM v) \
     ORDER BY d.id FOR NO KEY UPDATE) \
     UPDATE data_items AS d SET \
     name = CASE WHEN v.set_name THEN v.name ELSE d.name END, \
     description = CASE WHEN v.set_description THEN v.description ELSE d.description END, \
     payload = CASE WHEN v.set_payload THEN v.payload ELSE d.payload END, \
     version = d.version + 1, updated_at = $2 \
     FROM v WHERE d.id = v.id AND d.id IN (SELECT id FROM locked) \
     RETURNING d.id, d.name, d.description, d.payload, d.version, d.created_at, d.updated_at";

/// Applies `updates` (distinct ids, ascending; no preconditions) in one statement on
/// PostgreSQL: the rows as stored. An id without a row in the answer has no item.
pub async fn update_many(
    db: &impl ConnectionTrait,
    updates: &[(i64, &Changes)],
) -> Result<Vec<Model>, DbErr> {
    let stmt = update_many_statement(updates, now());
    Entity::find().from_raw_sql(stmt).all(db).await
}

/// `update_many`'s statement.
pub fn update_many_statement(updates: &[(i64, &Changes)], at: DateTime<Utc>) -> Statement {
    let rows: Vec<Value> = updates
        .iter()
        .map(|(id, c)| {
            serde_json::json!({
                "id": id,
                "set_name": c.name.is_some(), "name": c.name,
                "set_description": c.description.is_some(), "description": c.description,
                "set_payload": c.payload.is_some(), "payload": c.payload,
            })
        })
        .collect();
    Statement::from_sql_and_values(
        sea_orm::DbBackend::Postgres,
        UPDATE_MANY,
        [Value::Array(rows).into(), at.into()],
    )
}

pub async fn delete(
    db: &impl ConnectionTrait,
    id: i64,
    pre: &Precondition,
) -> Result<WriteOutcome<()>, DbErr> {
    if delete_query(id, pre).exec(db).await?.rows_affected > 0 {
        Ok(WriteOutcome::Done(()))
    } else {
        why_not_written(db, id).await
    }
}

/// `delete`'s statement.
pub fn delete_query(id: i64, pre: &Precondition) -> DeleteMany<Entity> {
    with_precondition(Entity::delete_many().filter(Column::Id.eq(id)), pre)
}

/// `q` restricted to the versions `pre` accepts (`*` needs no filter: the id filter already
/// requires the row to exist).
fn with_precondition<Q: QueryFilter>(q: Q, pre: &Precondition) -> Q {
    match pre {
        Precondition::None | Precondition::Exists => q,
        Precondition::VersionIn(v) => q.filter(Column::Version.is_in(v.iter().copied())),
        Precondition::VersionNotIn(v) => q.filter(Column::Version.is_not_in(v.iter().copied())),
        // An HTTP-date names a whole second: changed within it counts as not after it.
        Precondition::UnmodifiedSince(at) => {
            q.filter(Column::UpdatedAt.lt(*at + chrono::Duration::seconds(1)))
        }
        Precondition::All(all) => all.iter().fold(q, with_precondition),
    }
}

/// After a write touched no row: was the item missing, or did its version fail the precondition?
async fn why_not_written<T>(db: &impl ConnectionTrait, id: i64) -> Result<WriteOutcome<T>, DbErr> {
    let exists = exists_query(id)
        .into_tuple::<i64>()
        .one(db)
        .await?
        .is_some();
    Ok(if exists {
        WriteOutcome::Conflict
    } else {
        WriteOutcome::NotFound
    })
}

/// `why_not_written`'s statement: the id, if the row exists.
pub fn exists_query(id: i64) -> Select<Entity> {
    Entity::find_by_id(id).select_only().column(Column::Id)
}

/// One page in ascending id order: ids greater than `after`, optionally only items updated at or
/// after `since`. Fetches one row more than `limit` to know whether another page follows.
pub async fn list_page(
    db: &impl ConnectionTrait,
    after: Option<i64>,
    since: Option<DateTime<Utc>>,
    limit: u64,
) -> Result<(Vec<Model>, Option<i64>), DbErr> {
    let mut rows = list_query(after, since, limit).all(db).await?;
    let next = if rows.len() as u64 > limit {
        rows.truncate(limit as usize);
        rows.last().map(|m| m.id)
    } else {
        None
    };
    Ok((rows, next))
}

/// `list_page`'s statement: `limit + 1` rows.
pub fn list_query(after: Option<i64>, since: Option<DateTime<Utc>>, limit: u64) -> Select<Entity> {
    let mut q = Entity::find().order_by_asc(Column::Id).limit(limit + 1);
    if let Some(after) = after {
        q = q.filter(Column::Id.gt(after));
    }
    if let Some(since) = since {
        q = q.filter(Column::UpdatedAt.gte(since));
    }
    q
}

/// Inserts `count` synthetic items in one transaction; returns their ids.
pub async fn seed_batch(
    db: &DatabaseConnection,
    start: u64,
    count: u64,
) -> Result<Vec<i64>, DbErr> {
    let txn = db.begin().await?;
    let ids = seed_query(start, count, now())
        .exec_with_returning_keys(&txn)
        .await?;
    txn.commit().await?;
    Ok(ids)
}

/// `seed_batch`'s statement.
pub fn seed_query(start: u64, count: u64, at: DateTime<Utc>) -> InsertMany<ActiveModel> {
    let rows = (start..start + count).map(|n| ActiveModel {
        id: NotSet,
        name: Set(format!("item-{n}")),
        description: Set(Some(format!(
            "Synthetic item number {n}, seeded for load tests."
        ))),
        payload: Set(Some(
            serde_json::json!({ "n": n, "tags": ["seed", "load"] }),
        )),
        version: Set(1),
        created_at: Set(at),
        updated_at: Set(at),
    });
    Entity::insert_many(rows)
}

/// The items with these ids (ascending, distinct), in id order.
pub async fn get_many(db: &DatabaseConnection, ids: Vec<i64>) -> Result<Vec<Model>, DbErr> {
    let mut rows = get_many_query(ids).all(db).await?;
    rows.sort_unstable_by_key(|r| r.id);
    Ok(rows)
}

/// `get_many`'s statement: one id is a primary-key look-up, several an `IN` list.
pub fn get_many_query(ids: Vec<i64>) -> Select<Entity> {
    match ids.as_slice() {
        [id] => Entity::find_by_id(*id),
        _ => Entity::find().filter(Column::Id.is_in(ids)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_stable_and_ignore_key_order() {
        let item = |payload: &str| NewItem {
            name: "n".into(),
            description: None,
            payload: Some(serde_json::from_str(payload).unwrap()),
        };
        assert_eq!(
            item(r#"{"a": 1, "b": [2]}"#).fingerprint(),
            item(r#"{"b": [2], "a": 1}"#).fingerprint()
        );
        assert_ne!(
            item(r#"{"a": 1}"#).fingerprint(),
            item(r#"{"a": 2}"#).fingerprint()
        );
        // Pinned: a change here would turn retries across a rolling update into 422s.
        assert_eq!(item(r#"{"a": 1}"#).fingerprint(), PINNED);
    }

    const PINNED: u64 = 12_621_834_009_774_936_072;
}
