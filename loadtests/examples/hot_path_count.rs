//! Runs N in-process cache-hit GETs with one telemetry configuration, for instruction counting:
//! `valgrind --tool=callgrind target/release/examples/hot_path_count all_on 20000`.
//! Configurations: all_off, metrics, spans, all_on; and `bare`, the yardstick: a bare poem route
//! answering the same shape of response with fixed bytes (as `examples/bare_poem` does over TCP),
//! so the difference is what data-api's request path costs beyond poem itself.
//!
//! Optional: `… all_on 20000 <ticks> [data]` then takes that many `/dashboard` samples (what the
//! sampler does each tick, after the requests registered their series) and, with `data`, builds
//! one `/dashboard/data` answer over all of them: the dashboard's cost off the request path.

use data_api::config::Settings;
use poem::{Endpoint, Request};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let config = args.next().unwrap_or_else(|| "all_on".to_owned());
    let n: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let ticks: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let build_data = args.next().as_deref() == Some("data");
    let (metrics_on, spans) = match config.as_str() {
        "all_off" => (false, false),
        "metrics" => (true, false),
        "spans" => (false, true),
        _ => (true, true),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if config == "bare" {
        return rt.block_on(bare(n));
    }
    let dir = tempfile::tempdir()?;
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("count.db").display()
    );
    let log = Settings::defaults_for(&url);
    rt.block_on(async {
        let _guard = data_api::telemetry::init(&log.log, &log.trace)?;
        let mut settings = Settings::defaults_for(&url);
        settings.metrics.enabled = metrics_on;
        settings.trace.enabled = spans;
        settings.trace.access_log = false;
        data_api::seed::into(&settings.db, 10, 10, &indicatif::ProgressBar::hidden()).await?;
        let (ep, dashboard) = data_api::startup::in_process(&settings).await?;
        for _ in 0..n {
            let resp = ep
                .call(Request::builder().uri_str("/data/3").finish())
                .await?;
            std::hint::black_box(resp);
        }
        for _ in 0..ticks {
            dashboard.sample();
        }
        if build_data {
            let started = std::time::Instant::now();
            let data = dashboard.data(data_api::dashboard::DataQuery {
                since_ms: None,
                range: std::time::Duration::from_secs(3600),
            });
            let took = started.elapsed();
            let json = serde_json::to_vec(&data)?;
            eprintln!(
                "dashboard data over {ticks} frames: {took:?}, {} bytes of JSON",
                json.len()
            );
        }
        anyhow::Ok(())
    })
}

/// N calls of a bare poem route answering fixed bytes with a hit's headers.
async fn bare(n: u64) -> anyhow::Result<()> {
    let body = bytes::Bytes::from_static(br#"{"id":3,"name":"item 3","version":1}"#);
    let ep = poem::Route::new().at(
        "/data/:id",
        poem::get(poem::endpoint::make_sync(move |_| {
            // As examples/bare_poem: header names and values are constants.
            use poem::http::{HeaderValue, header};
            poem::Response::builder()
                .header(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json; charset=utf-8"),
                )
                .header(header::ETAG, HeaderValue::from_static("\"1\""))
                .header(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"))
                .body(body.clone())
        })),
    );
    for _ in 0..n {
        let resp = ep
            .call(Request::builder().uri_str("/data/3").finish())
            .await?;
        std::hint::black_box(resp);
    }
    Ok(())
}
