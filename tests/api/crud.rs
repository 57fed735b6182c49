//! Create, read, replace, update and delete, with ETags and conditional requests.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, problem};

crate::on_both_backends!(
    create_answers_201_with_location_etag_and_item,
    get_answers_item_etag_and_cache_control,
    get_with_matching_if_none_match_answers_304,
    put_replaces_every_field_and_bumps_version,
    patch_changes_only_given_fields,
    if_match_guards_writes,
    every_precondition_is_evaluated,
    delete_then_get_is_404,
    writes_answer_what_reads_return,
    reads_answer_alike_by_either_lane,
);

async fn create_answers_201_with_location_etag_and_item(app: &TestApp) {
    let resp = app
        .send_json(
            Method::POST,
            "/data",
            &json!({"name": "first", "description": "d", "payload": {"k": [1, 2]}}),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let etag = resp.headers()["etag"].to_str().unwrap().to_owned();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(location, format!("/data/{}", body["id"]));
    assert_eq!(etag, "\"1\"");
    assert_eq!(body["name"], "first");
    assert_eq!(body["description"], "d");
    assert_eq!(body["payload"], json!({"k": [1, 2]}));
    assert_eq!(body["version"], 1);
    assert_eq!(body["created_at"], body["updated_at"]);
}

async fn get_answers_item_etag_and_cache_control(app: &TestApp) {
    let item = app.create(json!({"name": "x"})).await;
    let resp = app.get(&format!("/data/{}", item["id"])).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["etag"], "\"1\"");
    assert_eq!(resp.headers()["cache-control"], "no-cache");
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body, item);
    // Absent optional fields are left out, not null.
    assert!(body.get("description").is_none() && body.get("payload").is_none());

    let missing = app.get("/data/987654321").await;
    let p = problem(missing, 404).await;
    assert!(p["detail"].as_str().unwrap().contains("987654321"));
}

async fn get_with_matching_if_none_match_answers_304(app: &TestApp) {
    let item = app.create(json!({"name": "x"})).await;
    let path = format!("/data/{}", item["id"]);
    let resp = app
        .request(Method::GET, &path)
        .header("If-None-Match", "\"1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 304);
    assert_eq!(resp.headers()["etag"], "\"1\"");
    let resp = app
        .request(Method::GET, &path)
        .header("If-None-Match", "W/\"1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 304, "weak comparison for If-None-Match");
    let resp = app
        .request(Method::GET, &path)
        .header("If-None-Match", "\"7\"")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

async fn put_replaces_every_field_and_bumps_version(app: &TestApp) {
    let item = app
        .create(json!({"name": "x", "description": "old", "payload": [1]}))
        .await;
    let path = format!("/data/{}", item["id"]);
    let resp = app
        .send_json(Method::PUT, &path, &json!({"name": "y"}))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["etag"], "\"2\"");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["name"], "y");
    assert_eq!(body["version"], 2);
    assert!(
        body.get("description").is_none(),
        "omitted optional field is cleared: {body}"
    );
    assert!(body.get("payload").is_none());
    assert_eq!(body["created_at"], item["created_at"]);
    assert!(body["updated_at"].as_str() >= item["updated_at"].as_str());
    let read: Value = app.get(&path).await.json().await.unwrap();
    assert_eq!(read, body);

    let missing = app
        .send_json(Method::PUT, "/data/987654321", &json!({"name": "y"}))
        .await;
    problem(missing, 404).await;
}

async fn patch_changes_only_given_fields(app: &TestApp) {
    let item = app
        .create(json!({"name": "x", "description": "keep", "payload": {"a": 1}}))
        .await;
    let path = format!("/data/{}", item["id"]);
    let body: Value = app
        .send_json(Method::PATCH, &path, &json!({"name": "renamed"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["name"], "renamed");
    assert_eq!(body["description"], "keep");
    assert_eq!(body["payload"], json!({"a": 1}));
    assert_eq!(body["version"], 2);

    let resp = app
        .request(Method::PATCH, &path)
        .header("content-type", "application/merge-patch+json")
        .body(r#"{"payload": null}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert!(body.get("payload").is_none(), "null clears payload: {body}");
    assert_eq!(body["description"], "keep");
    assert_eq!(body["version"], 3);

    let null_name = app
        .send_json(Method::PATCH, &path, &json!({"name": null}))
        .await;
    let p = problem(null_name, 400).await;
    assert!(p["detail"].as_str().unwrap().contains("name"));
    let read: Value = app.get(&path).await.json().await.unwrap();
    assert_eq!(read["version"], 3, "a rejected patch changes nothing");

    problem(
        app.send_json(Method::PATCH, "/data/987654321", &json!({"name": "z"}))
            .await,
        404,
    )
    .await;
}

async fn if_match_guards_writes(app: &TestApp) {
    let item = app.create(json!({"name": "x"})).await;
    let path = format!("/data/{}", item["id"]);
    let put = |tag: &'static str| {
        app.request(Method::PUT, &path)
            .header("If-Match", tag)
            .json(&json!({"name": tag}))
    };

    problem(put("\"9\"").send().await.unwrap(), 412).await;
    problem(put("W/\"1\"").send().await.unwrap(), 412).await;
    // An empty list matches nothing: refused, never read as "no condition".
    let empty = app
        .request(Method::PUT, &path)
        .header("If-Match", "")
        .json(&json!({"name": "empty"}));
    problem(empty.send().await.unwrap(), 412).await;
    let ok = put("\"1\"").send().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.headers()["etag"], "\"2\"");
    problem(put("\"1\"").send().await.unwrap(), 412).await;
    assert_eq!(put("\"5\", \"2\"").send().await.unwrap().status(), 200);
    assert_eq!(put("*").send().await.unwrap().status(), 200);

    let stale_delete = app
        .request(Method::DELETE, &path)
        .header("If-Match", "\"1\"")
        .send()
        .await
        .unwrap();
    problem(stale_delete, 412).await;
    assert_eq!(
        app.get(&path).await.status(),
        200,
        "a failed conditional delete deletes nothing"
    );
    let delete = app
        .request(Method::DELETE, &path)
        .header("If-Match", "\"4\"")
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 204);

    let star_missing = app
        .request(Method::PUT, &path)
        .header("If-Match", "*")
        .json(&json!({"name": "n"}));
    problem(star_missing.send().await.unwrap(), 404).await;
}

/// RFC 9110 §13.2.1: an origin evaluates every precondition it receives (issue 25, item 10):
/// `If-None-Match` and `If-Unmodified-Since` on writes, `If-Match` on reads; a failed one
/// changes nothing and answers 412.
async fn every_precondition_is_evaluated(app: &TestApp) {
    let item = app.create(json!({"name": "x"})).await;
    let path = format!("/data/{}", item["id"]);
    let long_ago = "Sun, 06 Nov 1994 08:49:37 GMT";
    let later = "Fri, 01 Jan 2100 00:00:00 GMT";
    // In order: each write that holds raises the version by one.
    let cases = [
        (Method::PUT, "If-None-Match", "*", 412, "the item exists"),
        (
            Method::PATCH,
            "If-None-Match",
            "W/\"1\"",
            412,
            "weak comparison",
        ),
        (
            Method::DELETE,
            "If-None-Match",
            "\"1\"",
            412,
            "at version 1",
        ),
        (
            Method::PUT,
            "If-None-Match",
            "\"7\"",
            200,
            "not at version 7",
        ),
        (
            Method::PUT,
            "If-Unmodified-Since",
            long_ago,
            412,
            "changed since 1994",
        ),
        (
            Method::DELETE,
            "If-Unmodified-Since",
            long_ago,
            412,
            "changed since 1994",
        ),
        (
            Method::PATCH,
            "If-Unmodified-Since",
            later,
            200,
            "not changed since 2100",
        ),
        (
            Method::PATCH,
            "If-Unmodified-Since",
            "not a date",
            200,
            "an invalid date is ignored",
        ),
    ];
    for (method, header, value, status, why) in cases {
        let resp = app
            .request(method.clone(), &path)
            .header(header, value)
            .json(&json!({"name": "changed"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), status, "{method} {header}: {value} ({why})");
        if status == 412 {
            problem(resp, 412).await;
        }
    }
    let now: Value = app.get(&path).await.json().await.unwrap();
    assert_eq!(
        now["version"], 4,
        "only the three writes whose preconditions held"
    );

    let read = |value: &'static str| {
        app.request(Method::GET, &path)
            .header("If-Match", value)
            .send()
    };
    problem(read("\"1\"").await.unwrap(), 412).await;
    assert_eq!(read("\"4\"").await.unwrap().status(), 200);
    assert_eq!(read("*").await.unwrap().status(), 200);
    problem(
        app.request(Method::GET, "/data/999999")
            .header("If-Match", "*")
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
}

async fn delete_then_get_is_404(app: &TestApp) {
    let item = app.create(json!({"name": "x"})).await;
    let path = format!("/data/{}", item["id"]);
    assert_eq!(app.get(&path).await.status(), 200, "warm the cache");
    let resp = app.request(Method::DELETE, &path).send().await.unwrap();
    assert_eq!(resp.status(), 204);
    assert!(resp.bytes().await.unwrap().is_empty());
    problem(app.get(&path).await, 404).await;
    problem(
        app.request(Method::DELETE, &path).send().await.unwrap(),
        404,
    )
    .await;
    problem(
        app.send_json(Method::PUT, &path, &json!({"name": "back"}))
            .await,
        404,
    )
    .await;
}

/// What a write answers must equal what a later read from the database answers (cache off):
/// microsecond timestamps, the same JSON value for the payload.
async fn writes_answer_what_reads_return(app: &TestApp) {
    let uncached = TestApp::start_like(app, |s| s.cache.capacity = 0).await;
    let payload = json!({"z": 1, "a": {"nested": [1.5, -2, "ü", null, true]}, "big": 9007199254740993u64, "s": "\u{1F600}"});
    let created = uncached
        .create(json!({"name": "fidelity ✓", "description": "x\ny", "payload": payload}))
        .await;
    let path = format!("/data/{}", created["id"]);
    let read: Value = uncached.get(&path).await.json().await.unwrap();
    assert_eq!(read, created);
    assert_eq!(read["payload"], payload);
    let updated: Value = uncached
        .send_json(Method::PATCH, &path, &json!({"description": null}))
        .await
        .json()
        .await
        .unwrap();
    let read: Value = uncached.get(&path).await.json().await.unwrap();
    assert_eq!(read, updated);
    let ts = read["updated_at"].as_str().unwrap();
    let frac = ts
        .split('.')
        .nth(1)
        .map_or(0, |f| f.trim_end_matches('Z').len());
    assert!(frac <= 6, "microsecond precision at most: {ts}");
    uncached.stop_shared().await;
}

/// `GET /data/{id}` with a plain decimal id takes a direct lane (`api::dispatch::Dispatch`); any other
/// spelling of the same id (`+7`) takes the OpenAPI operation. Both must answer the same:
/// status, headers and body, for a hit, a 304, a 404 and a deleted item.
async fn reads_answer_alike_by_either_lane(app: &TestApp) {
    let item = app
        .create(json!({"name": "lanes", "payload": {"k": 1}}))
        .await;
    let gone = app.create(json!({"name": "gone"})).await;
    let resp = app
        .request(Method::DELETE, &format!("/data/{}", gone["id"]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let answer = |path: String, if_none_match: Option<&'static str>| async move {
        let mut req = app.request(Method::GET, &path);
        if let Some(tag) = if_none_match {
            req = req.header("if-none-match", tag);
        }
        let resp = req.send().await.expect("request sent");
        let head: Vec<(String, String)> =
            ["content-type", "etag", "cache-control", "content-length"]
                .iter()
                .map(|h| {
                    (
                        h.to_string(),
                        resp.headers()
                            .get(*h)
                            .map(|v| v.to_str().unwrap().to_owned())
                            .unwrap_or_default(),
                    )
                })
                .collect();
        (resp.status().as_u16(), head, resp.text().await.unwrap())
    };
    for (id, tag, status) in [
        (item["id"].clone(), None, 200),
        (item["id"].clone(), Some("\"1\""), 304),
        (gone["id"].clone(), None, 404),
        (json!(987_654_321), None, 404),
    ] {
        let direct = answer(format!("/data/{id}"), tag).await;
        let operation = answer(format!("/data/+{id}"), tag).await;
        assert_eq!(direct.0, status, "{id} {tag:?}: {direct:?}");
        assert_eq!(direct, operation, "{id} {tag:?}: the two lanes differ");
    }
}
