//! Browser clients: CORS is off by default and, when origins are configured, answers preflights
//! and marks responses for those origins only.

use reqwest::Method;

use crate::helpers::TestApp;

#[tokio::test]
async fn cors_is_off_by_default() {
    let app = TestApp::sqlite(|_| {}).await;
    let resp = app
        .request(Method::GET, "/data")
        .header("Origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    app.stop().await;
}

#[tokio::test]
async fn cors_allows_configured_origins_only() {
    let app = TestApp::sqlite(|s| {
        s.http.cors_origins = Some("https://app.example, https://admin.example".into())
    })
    .await;
    let preflight = app
        .request(Method::OPTIONS, "/data")
        .header("Origin", "https://app.example")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "content-type, authorization",
        )
        .send()
        .await
        .unwrap();
    assert!(
        preflight.status().is_success(),
        "preflight answered: {}",
        preflight.status()
    );
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let methods = preflight.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        methods.contains("POST") && methods.contains("PATCH"),
        "{methods}"
    );

    let get = app
        .request(Method::GET, "/data")
        .header("Origin", "https://admin.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        get.headers()["access-control-allow-origin"],
        "https://admin.example"
    );
    let exposed = get.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_lowercase();
    assert!(exposed.contains("etag"), "{exposed}");

    let other = app
        .request(Method::GET, "/data")
        .header("Origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(
        other.headers().get("access-control-allow-origin").is_none(),
        "unlisted origins get no CORS grant"
    );
    if !other.status().is_success() {
        let ct = other.headers()["content-type"].to_str().unwrap().to_owned();
        assert_eq!(
            ct, "application/problem+json",
            "a CORS refusal is problem+json too"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn responses_are_compressed_when_asked() {
    let app = TestApp::sqlite(|_| {}).await;
    for n in 0..20 {
        app.create(serde_json::json!({"name": format!("compressible item {n}")}))
            .await;
    }
    // A client that leaves bodies as sent (the workspace build enables reqwest's gzip support).
    let raw = reqwest::Client::builder()
        .no_gzip()
        .no_brotli()
        .no_zstd()
        .no_deflate()
        .build()
        .unwrap();
    let plain = raw.get(app.url("/data")).send().await.unwrap();
    assert!(
        plain.headers().get("content-encoding").is_none(),
        "no Accept-Encoding, no compression"
    );
    let plain_len = plain.bytes().await.unwrap().len();
    let gz = raw
        .get(app.url("/data"))
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(gz.headers()["content-encoding"], "gzip");
    let gz_len = gz.bytes().await.unwrap().len();
    assert!(
        gz_len < plain_len,
        "gzip {gz_len} bytes < plain {plain_len}"
    );
    app.stop().await;

    let off = TestApp::sqlite(|s| s.http.compression = false).await;
    let resp = raw
        .get(off.url("/data"))
        .header("Accept-Encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert!(
        resp.headers().get("content-encoding").is_none(),
        "--compression false"
    );
    off.stop().await;
}
