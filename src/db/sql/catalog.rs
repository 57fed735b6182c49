//! Every statement the service runs on its tables, by name, each built by the very function the
//! service builds it with, from sample parameters. The plan test (`tests/api/plans.rs`) explains
//! each on a seeded PostgreSQL and SQLite and fails on a scan of a whole table or a sort no index
//! provides; `every_statement_built_in_sql_has_a_name` (below) fails when a statement is built
//! anywhere in `items.rs` or `idempotency.rs` outside the functions named here, so a new
//! statement cannot skip the plan test.
//!
//! The feed's statements (`positions.rs`: WAL positions, heartbeats, the migration lock) read no
//! table and are not listed.

use chrono::{DateTime, Duration, Utc};
use sea_orm::{DbBackend, QueryTrait, Statement};

use super::{
    idempotency,
    items::{self, Changes, NewItem, Precondition},
};

/// A statement the service runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Named {
    ItemGet,
    ItemGetMany,
    ItemExists,
    ItemInsert,
    ItemUpdate,
    /// With every precondition at once (`If-Match`, `If-None-Match`, `If-Unmodified-Since`).
    ItemUpdateIfMatch,
    /// PostgreSQL only: a batch of unconditional updates in one statement.
    ItemUpdateMany,
    ItemDelete,
    ListFirst,
    ListAfter,
    ListSince,
    ListAfterSince,
    SeedBatch,
    KeyClaim,
    KeyFind,
    KeyAnswer,
    KeyPurge,
}

/// The functions in `items.rs` and `idempotency.rs` that build statements.
pub const BUILDERS: [&str; 13] = [
    "get_query",
    "get_many_query",
    "exists_query",
    "insert_query",
    "update_query",
    "update_many_statement",
    "delete_query",
    "list_query",
    "seed_query",
    "claim_query",
    "find_query",
    "answer_query",
    "purge_query",
];

/// The id the samples read and write: the middle of a seeded million.
pub const SAMPLE_ID: i64 = 500_000;

impl Named {
    pub const ALL: [Self; 17] = [
        Self::ItemGet,
        Self::ItemGetMany,
        Self::ItemExists,
        Self::ItemInsert,
        Self::ItemUpdate,
        Self::ItemUpdateIfMatch,
        Self::ItemUpdateMany,
        Self::ItemDelete,
        Self::ListFirst,
        Self::ListAfter,
        Self::ListSince,
        Self::ListAfterSince,
        Self::SeedBatch,
        Self::KeyClaim,
        Self::KeyFind,
        Self::KeyAnswer,
        Self::KeyPurge,
    ];

    /// The function that builds it.
    pub const fn builder(self) -> &'static str {
        match self {
            Self::ItemGet => "get_query",
            Self::ItemGetMany => "get_many_query",
            Self::ItemExists => "exists_query",
            Self::ItemInsert => "insert_query",
            Self::ItemUpdate | Self::ItemUpdateIfMatch => "update_query",
            Self::ItemUpdateMany => "update_many_statement",
            Self::ItemDelete => "delete_query",
            Self::ListFirst | Self::ListAfter | Self::ListSince | Self::ListAfterSince => {
                "list_query"
            }
            Self::SeedBatch => "seed_query",
            Self::KeyClaim => "claim_query",
            Self::KeyFind => "find_query",
            Self::KeyAnswer => "answer_query",
            Self::KeyPurge => "purge_query",
        }
    }

    /// Whether a sort in its plan is by design: the batch update locks its own rows in id order,
    /// and a page of the items updated since an instant sorts those (found by the `updated_at`
    /// index) by id.
    pub const fn may_sort(self) -> bool {
        matches!(
            self,
            Self::ItemUpdateMany | Self::ListSince | Self::ListAfterSince
        )
    }

    /// Whether its plan may read the table in primary-key order without a condition on the key:
    /// the first page, which stops after `limit + 1` rows.
    pub const fn reads_in_key_order(self) -> bool {
        matches!(self, Self::ListFirst)
    }

    /// The statement with sample parameters, as the service builds it for `backend`; `None`
    /// where the service never runs it on that backend.
    pub fn sample(self, backend: DbBackend, now: DateTime<Utc>) -> Option<Statement> {
        let changes = || Changes {
            name: Some("sample".into()),
            description: Some(Some("sample".into())),
            payload: Some(Some(serde_json::json!({"n": 1}))),
        };
        let since = now - Duration::minutes(1);
        let day = std::time::Duration::from_secs(86_400);
        let key = || "sample-key".to_owned();
        Some(match self {
            Self::ItemGet => items::get_query(SAMPLE_ID).build(backend),
            Self::ItemGetMany => {
                items::get_many_query((1..=32).map(|k| k * 25_000).collect()).build(backend)
            }
            Self::ItemExists => items::exists_query(SAMPLE_ID).build(backend),
            Self::ItemInsert => items::insert_query(
                NewItem {
                    name: "sample".into(),
                    description: None,
                    payload: None,
                },
                now,
            )
            .build(backend),
            Self::ItemUpdate => {
                items::update_query(SAMPLE_ID, changes(), &Precondition::None, now).build(backend)
            }
            Self::ItemUpdateIfMatch => {
                let pre = Precondition::All(vec![
                    Precondition::VersionIn(vec![1, 2]),
                    Precondition::VersionNotIn(vec![3]),
                    Precondition::UnmodifiedSince(now),
                ]);
                items::update_query(SAMPLE_ID, changes(), &pre, now).build(backend)
            }
            Self::ItemUpdateMany => {
                if backend != DbBackend::Postgres {
                    return None;
                }
                let c = changes();
                items::update_many_statement(&[(SAMPLE_ID, &c), (SAMPLE_ID + 1, &c)], now)
            }
            Self::ItemDelete => {
                items::delete_query(SAMPLE_ID, &Precondition::VersionIn(vec![1])).build(backend)
            }
            Self::ListFirst => items::list_query(None, None, 50).build(backend),
            Self::ListAfter => items::list_query(Some(SAMPLE_ID), None, 50).build(backend),
            Self::ListSince => items::list_query(None, Some(since), 50).build(backend),
            Self::ListAfterSince => {
                items::list_query(Some(SAMPLE_ID), Some(since), 50).build(backend)
            }
            Self::SeedBatch => items::seed_query(0, 100, now).build(backend),
            Self::KeyClaim => idempotency::claim_query(key(), 1, now, day).build(backend),
            Self::KeyFind => idempotency::find_query(key()).build(backend),
            Self::KeyAnswer => {
                idempotency::answer_query(key(), SAMPLE_ID, "{}".into()).build(backend)
            }
            Self::KeyPurge => idempotency::purge_query(now, day).build(backend),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where statements are built: the calls that start one.
    const STARTS: [&str; 6] = [
        "Entity::find",
        "Entity::insert",
        "Entity::update_many",
        "Entity::delete_many",
        "Statement::from_sql_and_values",
        "Statement::from_string",
    ];

    /// The name of the function around byte `at` of `source`.
    fn enclosing_fn(source: &str, at: usize) -> &str {
        let before = &source[..at];
        let start = before.rfind("fn ").map_or(0, |i| i + 3);
        let rest = &source[start..];
        let end = rest.find(['(', '<']).unwrap_or(0);
        &rest[..end]
    }

    #[test]
    fn every_statement_built_in_sql_has_a_name() {
        for (file, source) in [
            ("items.rs", include_str!("items.rs")),
            ("idempotency.rs", include_str!("idempotency.rs")),
        ] {
            // The unit tests at the end build nothing the service runs.
            let source = source.split("#[cfg(test)]").next().unwrap_or(source);
            for start in STARTS {
                for (at, _) in source.match_indices(start) {
                    // Running a statement built elsewhere, not building one.
                    if source[at..].starts_with("Entity::find().from_raw_sql") {
                        continue;
                    }
                    let f = enclosing_fn(source, at);
                    assert!(
                        BUILDERS.contains(&f),
                        "{file}: `{start}` in fn {f}, which is not in catalog::BUILDERS: build the \
                         statement in a named function and give it a place in catalog::Named"
                    );
                }
            }
        }
        for builder in BUILDERS {
            assert!(
                Named::ALL.iter().any(|n| n.builder() == builder),
                "{builder} has no sample in catalog::Named"
            );
        }
    }

    #[test]
    fn every_name_builds_on_both_backends() {
        let now = Utc::now();
        for n in Named::ALL {
            assert!(n.sample(DbBackend::Postgres, now).is_some(), "{n:?}");
            let sqlite = n.sample(DbBackend::Sqlite, now);
            assert_eq!(sqlite.is_none(), n == Named::ItemUpdateMany, "{n:?}");
        }
    }
}
