//! The generated OpenAPI document is held in the repository; a change to the API must be a
//! deliberate update of `tests/snapshots/openapi.json` (run with `UPDATE_SNAPSHOTS=1`).

use serde_json::Value;

use data_api::{api::models::PageLimit, route::ApiRoute};

use crate::helpers::TestApp;

const SNAPSHOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/snapshots/openapi.json");

#[tokio::test]
async fn openapi_document_matches_snapshot() {
    let app = TestApp::sqlite(|_| {}).await;
    let resp = app.get("/openapi.json").await;
    assert_eq!(resp.status(), 200);
    let spec: Value = resp.json().await.unwrap();
    let pretty = serde_json::to_string_pretty(&spec).unwrap() + "\n";
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(SNAPSHOT, &pretty).unwrap();
    }
    let held = std::fs::read_to_string(SNAPSHOT).unwrap_or_default();
    assert!(
        held == pretty,
        "the OpenAPI document changed; if intended, rerun with UPDATE_SNAPSHOTS=1 and commit {SNAPSHOT}"
    );
    app.stop().await;
}

#[tokio::test]
async fn spec_documents_operations_and_errors() {
    let app = TestApp::sqlite(|_| {}).await;
    let spec: Value = app.get("/openapi.json").await.json().await.unwrap();
    let paths = &spec["paths"];
    for (path, method) in [
        ("/data", "post"),
        ("/data", "get"),
        ("/data/{id}", "get"),
        ("/data/{id}", "put"),
        ("/data/{id}", "patch"),
        ("/data/{id}", "delete"),
        ("/health/live", "get"),
        ("/health/ready", "get"),
    ] {
        let op = &paths[path][method];
        assert!(op["summary"].is_string(), "{method} {path} has a summary");
        if path.starts_with("/data") {
            let problem = &op["responses"]["400"]["content"]["application/problem+json"];
            assert!(
                problem.is_object(),
                "{method} {path} documents 400 problem+json"
            );
        }
    }
    let limit = paths["/data"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap();
    assert_eq!(limit["schema"]["maximum"], PageLimit::MAX as f64);
    let docs = app.get("/docs").await;
    assert_eq!(docs.status(), 200);
    let page = docs.text().await.unwrap();
    assert!(page.contains("swagger"), "Swagger UI is served");
    assert!(
        page.contains(r#""additionalProperties": false"#),
        "Swagger UI shows the served document, with its additions"
    );
    app.stop().await;
}

/// The route table (`route`) agrees with what the service serves: every operation in the
/// document, and the routes outside it, map to a route whose template and methods match.
#[tokio::test]
async fn route_table_matches_the_router() {
    let app = TestApp::sqlite(|_| {}).await;
    let spec: Value = app.get("/openapi.json").await.json().await.unwrap();
    let paths = spec["paths"].as_object().unwrap();
    for (template, ops) in paths {
        let route = ApiRoute::of(&template.replace("{id}", "1"));
        assert_eq!(route.template(), template, "route of {template}");
        let mut methods: Vec<String> = ops
            .as_object()
            .unwrap()
            .keys()
            .map(|m| m.to_uppercase())
            .collect();
        let mut allowed: Vec<String> = route.allow().split(", ").map(str::to_owned).collect();
        methods.sort();
        allowed.sort();
        assert_eq!(methods, allowed, "methods of {template}");
    }
    let documented: Vec<ApiRoute> = paths
        .keys()
        .map(|t| ApiRoute::of(&t.replace("{id}", "1")))
        .collect();
    // What `is_operation` sends straight to the OpenAPI service is exactly what it documents.
    for route in ApiRoute::ALL {
        assert_eq!(
            route.is_operation(),
            documented.contains(&route),
            "{route:?}"
        );
    }
    for route in ApiRoute::ALL {
        if route == ApiRoute::Unmatched || documented.contains(&route) {
            continue;
        }
        let resp = app.get(route.template()).await;
        assert_eq!(resp.status(), 200, "GET {}", route.template());
        let wrong = app
            .request(reqwest::Method::DELETE, route.template())
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 405, "DELETE {}", route.template());
        assert_eq!(wrong.headers()["allow"], route.allow());
    }
    app.stop().await;
}
