//! Retried creates: `POST /data` with an `Idempotency-Key` creates one item however often, and
//! however concurrently, it is retried; the same key with a different body is refused.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, problem};

crate::on_both_backends!(retried_create_makes_one_item);

async fn retried_create_makes_one_item(app: &TestApp) {
    let body = json!({"name": "once", "payload": {"order": 42}});
    let post = |key: &'static str, body: Value| {
        let req = app
            .request(Method::POST, "/data")
            .header("Idempotency-Key", key)
            .json(&body);
        async move { req.send().await.unwrap() }
    };
    let first = post("order-42", body.clone()).await;
    assert_eq!(first.status(), 201);
    let location = first.headers()["location"].to_str().unwrap().to_owned();
    let first: Value = first.json().await.unwrap();
    let again = post("order-42", body.clone()).await;
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["location"].to_str().unwrap(), location);
    assert_eq!(
        again.json::<Value>().await.unwrap(),
        first,
        "the retry answers the first result"
    );

    let tasks: Vec<_> = (0..10)
        .map(|_| tokio::spawn(post("burst", json!({"name": "burst"}))))
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        let resp = t.await.unwrap();
        assert_eq!(resp.status(), 201);
        ids.push(resp.json::<Value>().await.unwrap()["id"].clone());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "ten concurrent retries created one item");

    let p = problem(post("order-42", json!({"name": "different"})).await, 422).await;
    assert_eq!(p["type"], "urn:problem:data-api:idempotency-key-reused");
    let all: Value = app.get("/data").await.json().await.unwrap();
    assert_eq!(
        all["items"].as_array().unwrap().len(),
        2,
        "two keys, two items"
    );
    let other = app.send_json(Method::POST, "/data", &body).await;
    assert_eq!(other.status(), 201, "without a key, every POST creates");
    let bad = app
        .request(Method::POST, "/data")
        .header("Idempotency-Key", "")
        .json(&body)
        .send()
        .await
        .unwrap();
    problem(bad, 400).await;
}
