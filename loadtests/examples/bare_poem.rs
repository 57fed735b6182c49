//! The yardsticks of `loadtests/wrk/reference.sh`, with nothing of data-api in them: no
//! middleware, metrics, tracing, cache or ORM.
//! - `bare_poem <address> <body file>`: a bare poem handler answering `GET /data/:id` with fixed
//!   bytes and the headers a data-api hit carries (`content-type`, `etag`, `cache-control`): the
//!   yardstick for a cache hit (the body of a real hit, e.g. from curl).
//! - `bare_poem <address> --items <file>`: the same, but each id answers its own item's bytes and
//!   ETag (the file holds one body per line, as data-api answers them: `curl -w '\n'
//!   '…/data/[1-1000]'`), from a `Vec` indexed by id: the yardstick for a hit on many items, which
//!   also pays for each item's bytes not being in the CPU's caches, as data-api does.
//! - `bare_poem <address> --postgres <url> <connections>`: the same route answered by one
//!   prepared `SELECT` by primary key through a plain sqlx pool (no pre-ping) and the row written
//!   as JSON: what an HTTP service doing one query per request can reach on this machine, the
//!   yardstick between a cache-off miss and pgbench, which has no HTTP hop at all.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use poem::{
    EndpointExt, Response, Route, Server, get, handler,
    http::{HeaderValue, StatusCode, header},
    listener::TcpListener,
    web::{Data, Path},
};
use sea_orm::sqlx::{self, PgPool, Row, postgres::PgPoolOptions};

/// Headers made as cheaply as poem allows (names and values are constants), as data-api's
/// direct lane makes them: the yardstick is the fastest bare handler, not a naive one.
#[handler]
fn item(body: Data<&Bytes>) -> Response {
    hit(body.0.clone(), HeaderValue::from_static("\"1\""))
}

/// A hit's answer: the body, its ETag and the constant headers.
fn hit(body: Bytes, etag: HeaderValue) -> Response {
    Response::builder()
        .header(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        )
        .header(header::ETAG, etag)
        .header(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"))
        .body(body)
}

/// Each item's body and ETag, at its id.
struct Items(Vec<Option<(Bytes, HeaderValue)>>);

impl Items {
    /// One JSON body per line, each with its `id` and `version`.
    fn load(path: &str) -> anyhow::Result<Self> {
        let mut items = Vec::new();
        for line in std::fs::read_to_string(path)?
            .lines()
            .filter(|l| !l.is_empty())
        {
            let value: serde_json::Value = serde_json::from_str(line)?;
            let field = |name| {
                value[name]
                    .as_u64()
                    .ok_or_else(|| anyhow::anyhow!("no {name}"))
            };
            let (id, version) = (usize::try_from(field("id")?)?, field("version")?);
            if items.len() <= id {
                items.resize(id + 1, None);
            }
            let etag = HeaderValue::from_str(&format!("\"{version}\""))?;
            items[id] = Some((Bytes::from(line.to_owned()), etag));
        }
        Ok(Self(items))
    }
}

#[handler]
fn each_item(Path(id): Path<usize>, items: Data<&Arc<Items>>) -> Response {
    match items.0.0.get(id) {
        Some(Some((body, etag))) => hit(body.clone(), etag.clone()),
        _ => StatusCode::NOT_FOUND.into(),
    }
}

#[handler]
async fn pg_item(Path(id): Path<i64>, pool: Data<&PgPool>) -> Response {
    let row = sqlx::query(
        "SELECT id, name, description, payload, version, created_at, updated_at \
         FROM data_items WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool.0)
    .await;
    let row = match row {
        Ok(Some(row)) => row,
        Ok(None) => return StatusCode::NOT_FOUND.into(),
        Err(_) => return StatusCode::SERVICE_UNAVAILABLE.into(),
    };
    let version: i64 = row.get("version");
    let body = serde_json::json!({
        "id": row.get::<i64, _>("id"),
        "name": row.get::<String, _>("name"),
        "description": row.get::<Option<String>, _>("description"),
        "payload": row.get::<Option<serde_json::Value>, _>("payload"),
        "version": version,
        "created_at": row.get::<DateTime<Utc>, _>("created_at"),
        "updated_at": row.get::<DateTime<Utc>, _>("updated_at"),
    });
    Response::builder()
        .content_type("application/json; charset=utf-8")
        .header("etag", format!("\"{version}\""))
        .header("cache-control", "no-cache")
        .body(serde_json::to_vec(&body).unwrap_or_default())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8001".to_owned());
    let listener = TcpListener::bind(addr);
    match args.next().as_deref() {
        Some("--postgres") => {
            let url = args.next().unwrap_or_default();
            let connections = args.next().and_then(|n| n.parse().ok()).unwrap_or(32);
            let pool = PgPoolOptions::new()
                .max_connections(connections)
                .min_connections(connections)
                .test_before_acquire(false)
                .connect(&url)
                .await?;
            let app = Route::new().at("/data/:id", get(pg_item)).data(pool);
            Server::new(listener).run(app).await?;
        }
        Some("--items") => {
            let items = Arc::new(Items::load(&args.next().unwrap_or_default())?);
            let app = Route::new().at("/data/:id", get(each_item)).data(items);
            Server::new(listener).run(app).await?;
        }
        path => {
            let body = match path {
                Some(path) => Bytes::from(std::fs::read(path)?),
                None => Bytes::from_static(br#"{"id":1,"name":"item 1","version":1}"#),
            };
            let app = Route::new().at("/data/:id", get(item)).data(body);
            Server::new(listener).run(app).await?;
        }
    }
    Ok(())
}
