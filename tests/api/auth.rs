//! API keys for writes: 401 without, 403 with a wrong key, any configured key works (rotation),
//! reads stay public, and the spec declares the bearer scheme for Swagger UI's Authorize button.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, problem};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_need_a_configured_key() {
    let app = TestApp::sqlite(|s| s.auth.api_keys = Some("old-key,new-key".into())).await;
    let body = json!({"name": "guarded"});
    let resp = app.send_json(Method::POST, "/data", &body).await;
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    problem(resp, 401).await;
    let wrong = app
        .request(Method::POST, "/data")
        .bearer_auth("guess")
        .json(&body)
        .send()
        .await
        .unwrap();
    problem(wrong, 403).await;
    let basic = app
        .request(Method::POST, "/data")
        .basic_auth("u", Some("p"))
        .json(&body)
        .send()
        .await
        .unwrap();
    problem(basic, 401).await;

    let created = app
        .request(Method::POST, "/data")
        .bearer_auth("old-key")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let item: Value = created.json().await.unwrap();
    let path = format!("/data/{}", item["id"]);
    let put = app
        .request(Method::PUT, &path)
        .bearer_auth("new-key")
        .json(&json!({"name": "rotated"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200, "the second key works too");

    for method in [Method::PUT, Method::PATCH] {
        problem(
            app.request(method, &path)
                .json(&json!({"name": "no"}))
                .send()
                .await
                .unwrap(),
            401,
        )
        .await;
    }
    problem(
        app.request(Method::DELETE, &path).send().await.unwrap(),
        401,
    )
    .await;
    problem(
        app.request(Method::DELETE, &path)
            .bearer_auth("old-ke")
            .send()
            .await
            .unwrap(),
        403,
    )
    .await;
    let read: Value = app.get(&path).await.json().await.unwrap();
    assert_eq!(
        read["name"], "rotated",
        "reads are public and refused writes changed nothing"
    );
    assert_eq!(app.get("/data").await.status(), 200);
    let deleted = app
        .request(Method::DELETE, &path)
        .bearer_auth("new-key")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    app.stop().await;
}

#[tokio::test]
async fn spec_declares_the_bearer_scheme() {
    let app = TestApp::sqlite(|_| {}).await;
    let spec: Value = app.get("/openapi.json").await.json().await.unwrap();
    assert_eq!(
        spec["components"]["securitySchemes"]["ApiKey"]["scheme"],
        "bearer"
    );
    for (path, method) in [
        ("/data", "post"),
        ("/data/{id}", "put"),
        ("/data/{id}", "patch"),
        ("/data/{id}", "delete"),
    ] {
        let security = spec["paths"][path][method]["security"].to_string();
        assert!(security.contains("ApiKey"), "{method} {path}: {security}");
    }
    assert!(
        spec["paths"]["/data/{id}"]["get"].get("security").is_none(),
        "reads need no key"
    );
    // Without keys configured, writes are open.
    assert_eq!(app.create(json!({"name": "open"})).await["version"], 1);
    app.stop().await;
}

/// The real binary with `env` set: refused at start, naming `variable`; nothing listens.
async fn refused_at_start(env: &[(&str, &str)], variable: &str) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_data-api"))
        .args(["serve", "--bind", "127.0.0.1:0", "--database-url", &url])
        .envs(env.iter().copied())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(crate::helpers::STATE_WAIT, run)
        .await
        .expect("refused at once, not served")
        .expect("running data-api");
    assert!(!out.status.success(), "{env:?} must not start");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains(variable), "names {variable}: {said}");
    assert!(!said.contains("listening"), "{said}");
}

/// Secrets set but empty (a templating mistake) fail the start instead of leaving `/metrics`,
/// `/dashboard` or writes open while the operator believes they are protected.
#[tokio::test]
async fn empty_secrets_are_refused_at_start() {
    refused_at_start(&[("DATA_API_METRICS_TOKEN", "")], "--metrics-token").await;
    refused_at_start(&[("DATA_API_METRICS_TOKEN", "  ")], "--metrics-token").await;
    refused_at_start(&[("DATA_API_KEYS", "")], "--api-keys").await;
    refused_at_start(&[("DATA_API_KEYS", " , ")], "--api-keys").await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("keys");
    std::fs::write(&file, "# to be mounted\n").expect("key file");
    let path = file.display().to_string();
    refused_at_start(&[("DATA_API_KEY_FILE", path.as_str())], "holds no key").await;
    refused_at_start(&[("DATA_API_CACHE_LEASE", "0s")], "--cache-lease").await;
}

/// With no key configured the service starts, and says loudly that writes are open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_writes_are_logged_as_a_warning() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
    let bin = crate::helpers::Binary::start(&["--database-url", &url], &[]);
    let logs = bin.stop().await;
    let warned = logs.iter().any(|l| {
        let v: Value = serde_json::from_str(l).unwrap_or_default();
        v["level"] == "WARN"
            && v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("writes are OPEN"))
    });
    assert!(warned, "no warning about open writes in {logs:#?}");
}
