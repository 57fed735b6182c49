//! The yardstick for a cache hit (`loadtests/wrk/reference.sh`): a bare poem server answering
//! `GET /data/:id` with fixed bytes and the headers a data-api hit carries (`content-type`,
//! `etag`, `cache-control`), and nothing else: no middleware, metrics, tracing, cache or database.
//! What data-api does beyond this is the cost of being a real, observable service.
//! Usage: `bare_poem <address> <body file>` (the body of a real hit, e.g. from curl).

use bytes::Bytes;
use poem::{EndpointExt, Response, Route, Server, get, handler, listener::TcpListener, web::Data};

#[handler]
fn item(body: Data<&Bytes>) -> Response {
    Response::builder()
        .content_type("application/json; charset=utf-8")
        .header("etag", "\"1\"")
        .header("cache-control", "no-cache")
        .body(body.0.clone())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8001".to_owned());
    let body = match args.next() {
        Some(path) => Bytes::from(std::fs::read(path)?),
        None => Bytes::from_static(br#"{"id":1,"name":"item 1","version":1}"#),
    };
    let app = Route::new().at("/data/:id", get(item)).data(body);
    Server::new(TcpListener::bind(addr)).run(app).await?;
    Ok(())
}
