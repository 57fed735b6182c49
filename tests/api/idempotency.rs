//! Retried creates: `POST /data` with an `Idempotency-Key` creates one item however often, and
//! however concurrently, it is retried; the same key with a different body is refused.

use std::time::Duration;

use reqwest::Method;
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};

use crate::helpers::{STATE_WAIT, TestApp, problem};

fn post_with_key(app: &TestApp, key: &str, body: &Value) -> reqwest::RequestBuilder {
    app.request(Method::POST, "/data")
        .header("Idempotency-Key", key)
        .json(body)
}

/// Two replicas on one database: concurrent retries through both make one item, and every
/// answer is the first one.
async fn retries_through_another_replica_make_one_item(a: &TestApp) {
    let b = TestApp::start_like(a, |_| {}).await;
    let body = json!({"name": "shared key"});
    let tasks: Vec<_> = (0..10)
        .map(|n| {
            let req = post_with_key(if n % 2 == 0 { a } else { &b }, "across", &body);
            tokio::spawn(async move { req.send().await.unwrap() })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        let resp = t.await.unwrap();
        assert_eq!(resp.status(), 201);
        answers.push(resp.json::<Value>().await.unwrap());
    }
    assert!(
        answers.iter().all(|a| *a == answers[0]),
        "every retry answers the first result: {answers:?}"
    );
    let all: Value = b.get("/data").await.json().await.unwrap();
    assert_eq!(all["items"].as_array().unwrap().len(), 1, "one item");
    b.stop_shared().await;
}

crate::on_both_backends!(with cancellable: retry_after_a_cancelled_create_gets_its_item);

fn cancellable(s: &mut data_api::config::Settings) {
    s.limits.request_timeout = Duration::from_millis(300);
    s.db.acquire_timeout = Duration::from_secs(5);
}

/// The request is cancelled (here by `--request-timeout`) after its write started: the item and
/// its key commit together, so a retry gets that item instead of creating a second one.
async fn retry_after_a_cancelled_create_gets_its_item(app: &TestApp) {
    // Writes to the items wait behind a lock held from outside.
    let locker = app.outside_connection().await;
    if app.database_url().starts_with("postgres") {
        locker.execute_unprepared("BEGIN").await.unwrap();
        locker
            .execute_unprepared("LOCK TABLE data_items IN EXCLUSIVE MODE")
            .await
            .unwrap();
    } else {
        locker.execute_unprepared("BEGIN IMMEDIATE").await.unwrap();
    }
    let body = json!({"name": "cancelled"});
    let first = post_with_key(app, "cancel-me", &body).send().await.unwrap();
    let p = problem(first, 503).await;
    assert_eq!(p["type"], "urn:problem:data-api:timeout", "{p}");
    locker.execute_unprepared("COMMIT").await.unwrap();
    // The retry waits for the cancelled create's transaction to end, which a busy machine can
    // take longer than this app's 300 ms request timeout for: it goes to a second replica on the
    // same database whose timeout only guards against a hang.
    let other = TestApp::start_like(app, |s| s.limits.request_timeout = STATE_WAIT).await;
    let retry = post_with_key(&other, "cancel-me", &body)
        .send()
        .await
        .unwrap();
    assert_eq!(retry.status(), 201);
    let retried: Value = retry.json().await.unwrap();
    let all: Value = app.get("/data").await.json().await.unwrap();
    let items = all["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "one item, not two: {items:?}");
    assert_eq!(items[0]["id"], retried["id"]);
    let _ = locker.close().await;
    other.stop_shared().await;
}

crate::on_both_backends!(
    retried_create_makes_one_item,
    retries_through_another_replica_make_one_item
);

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

/// With API keys on, an `Idempotency-Key` belongs to the API key that sent it (issue 25, item
/// 10): two clients picking the same key neither share an item nor get each other's 422; a
/// retry by the same client still answers its first create.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_are_scoped_to_the_api_key() {
    let app = TestApp::sqlite(|s| s.auth.api_keys = Some("client-a,client-b".into())).await;
    let send = |api_key: &'static str, name: &'static str| {
        post_with_key(&app, "order-1", &json!({"name": name}))
            .bearer_auth(api_key)
            .send()
    };
    let a = send("client-a", "from a").await.unwrap();
    assert_eq!(a.status(), 201);
    let a: Value = a.json().await.unwrap();
    let b = send("client-b", "from b").await.unwrap();
    assert_eq!(b.status(), 201, "another client's key is not a reuse");
    let b: Value = b.json().await.unwrap();
    assert_ne!(a["id"], b["id"], "two clients, two items");
    let again: Value = send("client-a", "from a")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again, a, "a retry answers the first create");
    problem(send("client-a", "changed").await.unwrap(), 422).await;
    app.stop().await;
}
