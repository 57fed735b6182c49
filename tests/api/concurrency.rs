//! No lost update: many clients racing conditional PUTs on the same items. Every 2xx write must be
//! reflected in the version history, and every write that lost the race must get 412.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::helpers::TestApp;

crate::on_both_backends!(conditional_writers_lose_no_update);

async fn conditional_writers_lose_no_update(app: &TestApp) {
    let ids = app.create_many(2, "contended").await;
    let mut tasks = Vec::new();
    for c in 0..8 {
        let (client, base, ids) = (app.client.clone(), app.base.clone(), ids.clone());
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for i in 0..25 {
                let id = ids[(c + i) % ids.len()];
                let url = format!("{base}/data/{id}");
                let current = client.get(&url).send().await.unwrap();
                let etag = current.headers()["etag"].to_str().unwrap().to_owned();
                let name = format!("client {c} write {i}");
                let resp = client
                    .put(&url)
                    .header("If-Match", &etag)
                    .json(&json!({"name": name}))
                    .send()
                    .await
                    .unwrap();
                let status = resp.status().as_u16();
                let body: Value = resp.json().await.unwrap();
                outcomes.push((id, status, body["version"].as_i64(), name, etag));
            }
            outcomes
        }));
    }
    let mut wins: BTreeMap<i64, Vec<(i64, String)>> = BTreeMap::new();
    let mut conflicts = 0;
    for t in tasks {
        for (id, status, version, name, etag) in t.await.unwrap() {
            match status {
                200 => {
                    let v = version.unwrap();
                    assert_eq!(
                        format!("\"{}\"", v - 1),
                        etag,
                        "a 200 applies to exactly the version it named"
                    );
                    wins.entry(id).or_default().push((v, name));
                }
                412 => conflicts += 1,
                other => panic!("unexpected status {other}"),
            }
        }
    }
    assert!(conflicts > 0, "the race produced conflicts");
    for id in ids {
        let mut won = wins.remove(&id).unwrap_or_default();
        won.sort();
        let versions: Vec<i64> = won.iter().map(|(v, _)| *v).collect();
        let expected: Vec<i64> = (2..2 + won.len() as i64).collect();
        assert_eq!(
            versions, expected,
            "item {id}: every acknowledged write has its own version, none lost"
        );
        let last: Value = app.get(&format!("/data/{id}")).await.json().await.unwrap();
        assert_eq!(
            last["version"].as_i64(),
            versions.last().copied().or(Some(1))
        );
        if let Some((_, name)) = won.last() {
            assert_eq!(
                last["name"],
                name.as_str(),
                "the last acknowledged write is what is stored"
            );
        }
    }
}
