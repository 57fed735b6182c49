//! `GET /data`: keyset pagination, filters and limits.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, problem};

crate::on_both_backends!(
    pages_walk_all_items_in_id_order,
    updated_since_filters,
    limit_is_bounded
);

async fn pages_walk_all_items_in_id_order(app: &TestApp) {
    let ids = app.create_many(7, "item").await;
    let mut seen = Vec::new();
    let mut path = "/data?limit=3".to_owned();
    let mut pages = 0;
    loop {
        let page: Value = app.get(&path).await.json().await.unwrap();
        pages += 1;
        let items = page["items"].as_array().unwrap();
        assert!(items.len() <= 3);
        seen.extend(items.iter().map(|i| i["id"].as_i64().unwrap()));
        match page.get("next") {
            Some(next) => {
                assert_eq!(
                    next.as_i64(),
                    seen.last().copied(),
                    "next is the last id of the page"
                );
                path = format!("/data?limit=3&after={next}");
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ids, "every item once, ascending");

    let all: Value = app.get("/data").await.json().await.unwrap();
    assert_eq!(
        all["items"].as_array().unwrap().len(),
        7,
        "default limit covers 7"
    );
    assert!(all.get("next").is_none());
    let exact: Value = app.get("/data?limit=7").await.json().await.unwrap();
    assert!(
        exact.get("next").is_none(),
        "no next when the page ends exactly at the last item"
    );
}

async fn updated_since_filters(app: &TestApp) {
    let a = app.create(json!({"name": "a"})).await;
    let b = app.create(json!({"name": "b"})).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let updated: Value = app
        .send_json(
            Method::PATCH,
            &format!("/data/{}", a["id"]),
            &json!({"name": "a2"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let since = updated["updated_at"].as_str().unwrap();
    let page: Value = app
        .request(Method::GET, "/data")
        .query(&[("updated_since", since)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<_> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].clone())
        .collect();
    assert_eq!(
        ids,
        vec![a["id"].clone()],
        "only the item updated since; b ({}) is older",
        b["id"]
    );
    let bad = app.get("/data?updated_since=yesterday").await;
    let p = problem(bad, 400).await;
    assert!(
        p["detail"].as_str().unwrap().contains("updated_since"),
        "{p}"
    );
}

async fn limit_is_bounded(app: &TestApp) {
    for bad in [
        "/data?limit=501",
        "/data?limit=0",
        "/data?limit=-1",
        "/data?limit=ten",
        "/data?after=x",
    ] {
        let p = problem(app.get(bad).await, 400).await;
        let param = if bad.contains("after") {
            "after"
        } else {
            "limit"
        };
        assert!(p["detail"].as_str().unwrap().contains(param), "{bad}: {p}");
    }
    assert_eq!(app.get("/data?limit=500").await.status(), 200);
}
