//! Every statement the service runs (`store::statements`, each built by the service's own
//! function) explained against a table of a million items, on PostgreSQL and on SQLite: no
//! statement may scan a whole table (a sequential scan, or an index walked without a condition
//! on it, except the first page's walk in key order that stops at its limit), nor sort rows that
//! no index orders (except where `Named::may_sort` says why). Then the test drops the
//! `updated_at` index and checks that the same check catches the lists that needed it.

use chrono::Utc;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, Statement};
use serde_json::Value;

use crate::helpers::TestApp;
use data_api::store::statements::Named;

const ROWS: u64 = 1_000_000;
/// Live idempotency keys beside the items (the purge must find the expired ones by index).
const KEYS: u64 = 200_000;

/// The tables the service owns: a scan of one of them is what the test looks for.
const TABLES: [&str; 2] = ["data_items", "idempotency_keys"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_statement_scans_a_table_or_sorts_without_an_index_on_postgres() {
    // A single instance: no feed decoding the million inserts.
    let Some(app) = TestApp::postgres(|s| s.cache.single_instance = true).await else {
        return;
    };
    let db = app.outside_connection().await;
    run(
        &db,
        &format!(
            "INSERT INTO data_items (name, description, payload, version, created_at, updated_at) \
             SELECT 'item-' || g, 'seeded', jsonb_build_object('n', g), 1, \
             now() - make_interval(secs => {ROWS} - g), now() - make_interval(secs => {ROWS} - g) \
             FROM generate_series(1, {ROWS}) g"
        ),
    )
    .await;
    run(
        &db,
        &format!(
            "INSERT INTO idempotency_keys (key, fingerprint, item_id, body, created_at) \
             SELECT 'k' || g, g, g, '{{}}', now() FROM generate_series(1, {KEYS}) g"
        ),
    )
    .await;
    run(&db, "ANALYZE").await;
    plans_hold_and_a_dropped_index_is_caught(&db, DbBackend::Postgres).await;
    let _ = db.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_statement_scans_a_table_or_sorts_without_an_index_on_sqlite() {
    let app = TestApp::sqlite(|s| s.cache.single_instance = true).await;
    let db = app.outside_connection().await;
    run(
        &db,
        &format!(
            "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {ROWS}) \
             INSERT INTO data_items (name, description, payload, version, created_at, updated_at) \
             SELECT 'item-' || n, 'seeded', json_object('n', n), 1, \
             strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now', '-' || ({ROWS} - n) || ' seconds'), \
             strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now', '-' || ({ROWS} - n) || ' seconds') FROM g"
        ),
    )
    .await;
    run(
        &db,
        &format!(
            "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {KEYS}) \
             INSERT INTO idempotency_keys (key, fingerprint, item_id, body, created_at) \
             SELECT 'k' || n, n, n, '{{}}', strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now') FROM g"
        ),
    )
    .await;
    run(&db, "ANALYZE").await;
    plans_hold_and_a_dropped_index_is_caught(&db, DbBackend::Sqlite).await;
    let _ = db.close().await;
    app.stop().await;
}

/// Every plan passes the check; then, without the `updated_at` index, the lists that used it
/// fail it.
async fn plans_hold_and_a_dropped_index_is_caught(db: &DatabaseConnection, backend: DbBackend) {
    let faults = check_all(db, backend).await;
    assert!(
        faults.is_empty(),
        "plans on {backend:?}:\n{}",
        faults.join("\n")
    );
    run(db, "DROP INDEX idx_data_items_updated_at").await;
    let faults = check_all(db, backend).await;
    eprintln!(
        "plans: {backend:?} without idx_data_items_updated_at:\n{}",
        faults.join("\n")
    );
    assert!(
        faults.iter().any(|f| f.starts_with("ListSince")),
        "the check notices a list that lost its index: {faults:?}"
    );
}

async fn run(db: &DatabaseConnection, sql: &str) {
    db.execute_unprepared(sql).await.expect(sql);
}

/// Every statement's faults on `backend`, one line each (`Name: what`), its plan printed.
async fn check_all(db: &DatabaseConnection, backend: DbBackend) -> Vec<String> {
    let now = Utc::now();
    let mut faults = Vec::new();
    for named in Named::ALL {
        let Some(stmt) = named.sample(backend, now) else {
            continue;
        };
        let found = match backend {
            DbBackend::Postgres => postgres_faults(db, named, stmt).await,
            _ => sqlite_faults(db, named, stmt).await,
        };
        faults.extend(found.into_iter().map(|f| format!("{named:?}: {f}")));
    }
    faults
}

/// `EXPLAIN (FORMAT JSON)` of `stmt` (never `ANALYZE`: writes are not run), walked node by node.
async fn postgres_faults(db: &DatabaseConnection, named: Named, stmt: Statement) -> Vec<String> {
    let explain = Statement {
        sql: format!("EXPLAIN (FORMAT JSON) {}", stmt.sql),
        ..stmt
    };
    let row = db
        .query_one_raw(explain)
        .await
        .expect("explain")
        .expect("a plan");
    let plan: Value = row.try_get("", "QUERY PLAN").expect("json plan");
    eprintln!("plans: PostgreSQL {named:?}: {}", summary(&plan[0]["Plan"]));
    let mut faults = Vec::new();
    walk(&plan[0]["Plan"], &mut |node| {
        let kind = node["Node Type"].as_str().unwrap_or_default();
        let table = node["Relation Name"].as_str().unwrap_or_default();
        let ours = TABLES.contains(&table);
        let conditioned = node.get("Index Cond").is_some();
        match kind {
            "Seq Scan" if ours => faults.push(format!("sequential scan of {table}")),
            "Index Scan" | "Index Only Scan"
                if ours && !conditioned && !named.reads_in_key_order() =>
            {
                faults.push(format!(
                    "{table} walked whole by an index, without a condition"
                ))
            }
            "Sort" | "Incremental Sort" if !named.may_sort() => {
                faults.push(format!("a sort no index provides ({})", node["Sort Key"]))
            }
            _ => {}
        }
    });
    faults
}

/// The plan's node types, outermost first.
fn summary(plan: &Value) -> String {
    let mut kinds = Vec::new();
    walk(plan, &mut |n| {
        let table = n["Relation Name"].as_str().map(|t| format!(" on {t}"));
        let index = n["Index Name"].as_str().map(|i| format!(" using {i}"));
        kinds.push(format!(
            "{}{}{}",
            n["Node Type"].as_str().unwrap_or("?"),
            table.unwrap_or_default(),
            index.unwrap_or_default()
        ));
    });
    kinds.join(" > ")
}

fn walk(node: &Value, visit: &mut impl FnMut(&Value)) {
    visit(node);
    for child in node["Plans"].as_array().into_iter().flatten() {
        walk(child, visit);
    }
}

/// `EXPLAIN QUERY PLAN` of `stmt`: a `SCAN` of a table is a whole-table read (`SEARCH` uses an
/// index with a condition); `USE TEMP B-TREE` is a sort.
async fn sqlite_faults(db: &DatabaseConnection, named: Named, stmt: Statement) -> Vec<String> {
    let explain = Statement {
        sql: format!("EXPLAIN QUERY PLAN {}", stmt.sql),
        ..stmt
    };
    let rows = db.query_all_raw(explain).await.expect("explain query plan");
    let details: Vec<String> = rows
        .iter()
        .map(|r| r.try_get::<String>("", "detail").expect("detail"))
        .collect();
    eprintln!("plans: SQLite {named:?}: {}", details.join(" > "));
    let mut faults = Vec::new();
    for d in &details {
        let scans_ours = TABLES
            .iter()
            .any(|t| d == &format!("SCAN {t}") || d.starts_with(&format!("SCAN {t} ")));
        if scans_ours && !named.reads_in_key_order() {
            faults.push(format!("whole-table read: {d}"));
        }
        if d.starts_with("USE TEMP B-TREE") && !named.may_sort() {
            faults.push(format!("a sort no index provides: {d}"));
        }
    }
    faults
}
