//! The cache-hit path without the network: `GET /data/{id}` through every middleware, called
//! in-process, with telemetry on and off. `cargo bench -p loadtests --bench hot_path`.

use criterion::{Criterion, criterion_group, criterion_main};
use data_api::config::Settings;
use poem::{Endpoint, Request};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("bench.db").display()
    );
    rt.block_on(async {
        let settings = Settings::defaults_for(&url);
        data_api::seed::into(&settings.db, 10, 10, &indicatif::ProgressBar::hidden())
            .await
            .unwrap();
    });
    // A subscriber like production's: INFO to a sink.
    let _ = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(std::io::sink)
        .try_init();
    let mut group = c.benchmark_group("get_hit");
    for (name, metrics_on, spans) in [
        ("all_off", false, false),
        ("metrics", true, false),
        ("spans", false, true),
        ("all_on", true, true),
    ] {
        let mut settings = Settings::defaults_for(&url);
        settings.metrics.enabled = metrics_on;
        settings.trace.enabled = spans;
        settings.trace.access_log = false;
        settings.db.min_connections = Some(1);
        let (ep, _) = rt
            .block_on(data_api::startup::in_process(&settings))
            .unwrap();
        rt.block_on(async {
            ep.call(Request::builder().uri_str("/data/3").finish())
                .await
                .unwrap()
        });
        group.bench_function(name, |b| {
            b.to_async(&rt).iter(|| async {
                ep.call(Request::builder().uri_str("/data/3").finish())
                    .await
                    .unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
