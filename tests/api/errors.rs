//! Bad input of every kind answers a 4xx `application/problem+json`, never a 500.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{TestApp, problem};

crate::on_both_backends!(
    invalid_bodies_are_400,
    invalid_ids_are_400,
    routing_errors_are_problems,
    body_limit_is_413,
    nul_characters_are_400,
    extreme_numbers_round_trip
);

async fn invalid_bodies_are_400(app: &TestApp) {
    let raw = |body: &'static str| {
        app.request(Method::POST, "/data")
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let p = problem(raw("{\"name\": ").await.unwrap(), 400).await;
    assert_eq!(p["type"], "urn:problem:data-api:invalid-body");
    problem(raw("[]").await.unwrap(), 400).await;
    problem(raw("{\"name\": 5}").await.unwrap(), 400).await;
    problem(raw("{}").await.unwrap(), 400).await;
    let cases = [
        json!({"name": ""}),
        json!({"name": "x".repeat(256)}),
        json!({"name": "x", "description": "d".repeat(10_001)}),
        json!({"name": "x", "unknown": 1}),
        json!({"name": "x", "payload": {"blob": "p".repeat(70_000)}}),
    ];
    for body in cases {
        let p = problem(app.send_json(Method::POST, "/data", &body).await, 400).await;
        assert!(p["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    // Unicode is counted in characters, not bytes.
    assert_eq!(
        app.send_json(Method::POST, "/data", &json!({"name": "é".repeat(255)}))
            .await
            .status(),
        201
    );
    let item = app.create(json!({"name": "x"})).await;
    let path = format!("/data/{}", item["id"]);
    problem(
        app.send_json(Method::PUT, &path, &json!({"name": 1})).await,
        400,
    )
    .await;
    problem(
        app.send_json(
            Method::PATCH,
            &path,
            &json!({"payload": {"blob": "p".repeat(70_000)}}),
        )
        .await,
        400,
    )
    .await;
    let wrong_type = app
        .request(Method::POST, "/data")
        .header("content-type", "text/plain")
        .body("name=x");
    let p = problem(wrong_type.send().await.unwrap(), 415).await;
    assert!(p["detail"].as_str().unwrap().contains("text/plain"));
    let none = app.request(Method::POST, "/data").body("{\"name\":\"x\"}");
    problem(none.send().await.unwrap(), 415).await;
}

async fn invalid_ids_are_400(app: &TestApp) {
    for path in [
        "/data/abc",
        "/data/0",
        "/data/-3",
        "/data/99999999999999999999",
        "/data/1.5",
    ] {
        let p = problem(app.get(path).await, 400).await;
        let detail = p["detail"].as_str().unwrap();
        assert!(
            detail.contains("`id`"),
            "{path}: detail names the parameter: {detail}"
        );
        assert!(!detail.contains("param0"), "{detail}");
    }
    problem(
        app.request(Method::DELETE, "/data/x").send().await.unwrap(),
        400,
    )
    .await;
}

async fn routing_errors_are_problems(app: &TestApp) {
    problem(app.get("/nope").await, 404).await;
    problem(app.get("/data/1/extra").await, 404).await;
    let resp = app.request(Method::POST, "/data/1").send().await.unwrap();
    assert_eq!(resp.headers()["allow"], "GET, PUT, PATCH, DELETE");
    problem(resp, 405).await;
    let resp = app.request(Method::DELETE, "/data").send().await.unwrap();
    assert_eq!(resp.headers()["allow"], "GET, POST");
    problem(resp, 405).await;
}

async fn body_limit_is_413(app: &TestApp) {
    let small = TestApp::start_like(app, |s| s.limits.body_limit = 1024).await;
    let big = json!({"name": "x", "description": "d".repeat(2000)});
    let p = problem(small.send_json(Method::POST, "/data", &big).await, 413).await;
    assert!(p["detail"].as_str().unwrap().contains("1024"));
    // Chunked: no Content-Length, so the limit must be enforced while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..10).map(|_| Ok(vec![b' '; 500])).collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let resp = small
        .request(Method::POST, "/data")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("content-length").is_none() || resp.status() == 413);
    problem(resp, 413).await;
    // A small chunked body still works.
    let ok = reqwest::Body::wrap_stream(futures_util::stream::iter(vec![
        Ok::<_, std::io::Error>(b"{\"name\":".to_vec()),
        Ok(b"\"chunked\"}".to_vec()),
    ]));
    let resp = small
        .request(Method::POST, "/data")
        .header("content-type", "application/json")
        .body(ok);
    assert_eq!(resp.send().await.unwrap().status(), 201);
    small.stop_shared().await;
}

/// PostgreSQL cannot store U+0000 in text or jsonb; it is refused up front on both backends,
/// with nothing stored, instead of failing in the database with a 500.
async fn nul_characters_are_400(app: &TestApp) {
    let before = app
        .get("/data")
        .await
        .json::<serde_json::Value>()
        .await
        .unwrap();
    for body in [
        json!({"name": "a\u{0}b"}),
        json!({"name": "x", "description": "\u{0}"}),
        json!({"name": "x", "payload": {"k": ["ok", "x\u{0}"]}}),
        json!({"name": "x", "payload": {"k\u{0}": 1}}),
    ] {
        let p = problem(app.send_json(Method::POST, "/data", &body).await, 400).await;
        assert!(p["detail"].as_str().is_some_and(|d| !d.is_empty()));
    }
    let item = app.create(json!({"name": "x"})).await;
    let path = format!("/data/{}", item["id"]);
    let patch = json!({"payload": "\u{0}"});
    problem(app.send_json(Method::PATCH, &path, &patch).await, 400).await;
    let after = app
        .get("/data")
        .await
        .json::<serde_json::Value>()
        .await
        .unwrap();
    let count = |page: &serde_json::Value| page["items"].as_array().map_or(0, Vec::len);
    assert_eq!(
        count(&after),
        count(&before) + 1,
        "only the valid item was stored"
    );
}

/// Numbers at the edges of f64 and i64/u64 are stored and read back as sent. (PostgreSQL's
/// jsonb prints f64::MAX as a 309-digit integer, which serde_json's default parser rounded
/// out of range: the item could be created but never read.)
async fn extreme_numbers_round_trip(app: &TestApp) {
    let payload = json!({
        "max": f64::MAX,
        "min": f64::MIN,
        "tiny": 5e-324,
        "u": u64::MAX,
        "i": i64::MIN,
        "frac": 0.1,
    });
    let item = app
        .create(json!({"name": "edges", "payload": payload}))
        .await;
    // A second app has nothing cached, so its GET reads the database.
    let fresh = TestApp::start_like(app, |_| {}).await;
    let resp = fresh.get(&format!("/data/{}", item["id"])).await;
    assert_eq!(resp.status(), 200);
    let got: serde_json::Value = resp.json().await.unwrap();
    for key in ["max", "min", "tiny", "frac"] {
        assert_eq!(got["payload"][key].as_f64(), payload[key].as_f64(), "{key}");
    }
    assert_eq!(got["payload"]["u"].as_u64(), Some(u64::MAX));
    assert_eq!(got["payload"]["i"].as_i64(), Some(i64::MIN));
    fresh.stop_shared().await;
}

/// A handler that panics gets the client a 500 problem on a connection that stays usable, and
/// the panic is counted. (No route of the service panics on purpose, so the test wraps a
/// panicking endpoint in the same middleware `api::routes` uses, and serves it for real.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_are_answered_500_and_counted() {
    use data_api::{api::middleware::catch_panics, metrics::Metrics};
    use poem::{
        Route,
        endpoint::make_sync,
        listener::{Acceptor, Listener, TcpListener},
    };

    let metrics = std::sync::Arc::new(Metrics::new(true));
    let routes = Route::new()
        .at(
            "/boom",
            make_sync(|_| -> &'static str { panic!("deliberate test panic") }),
        )
        .at("/fine", make_sync(|_| "fine"));
    let acceptor = TcpListener::bind("127.0.0.1:0")
        .into_acceptor()
        .await
        .unwrap();
    let port = acceptor.local_addr()[0].as_socket_addr().unwrap().port();
    let server =
        tokio::spawn(poem::Server::new_with_acceptor(acceptor).run(catch_panics(routes, &metrics)));
    let client = reqwest::Client::new();
    let resp = client
        .get(format!("http://127.0.0.1:{port}/boom"))
        .send()
        .await
        .expect("an answer, not a dropped connection");
    let p = problem(resp, 500).await;
    assert_eq!(p["type"], "urn:problem:data-api:internal");
    assert!(
        !p.to_string().contains("deliberate"),
        "the panic message stays in the log: {p}"
    );
    let fine = client
        .get(format!("http://127.0.0.1:{port}/fine"))
        .send()
        .await
        .unwrap();
    assert_eq!(fine.status(), 200, "the server keeps serving");
    let text = metrics.render();
    assert_eq!(
        crate::helpers::metric(&text, "http_server_panics_total", &[]),
        1.0
    );
    server.abort();
}
