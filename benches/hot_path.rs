//! The cache-hit path without the network: `GET /data/{id}` through every middleware, called
//! in-process, with telemetry on and off. `cargo bench --bench hot_path`.

use std::sync::{Arc, atomic::AtomicBool};

use criterion::{Criterion, criterion_group, criterion_main};
use data_api::{
    api, config::Settings, dashboard::Dashboard, metrics::Metrics, store, store::Store,
};
use migration::{Migrator, MigratorTrait};
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
    let db = rt.block_on(async {
        let mut settings = Settings::defaults_for(&url);
        settings.db.min_connections = Some(1);
        let db = store::db::connect(&settings.db).await.unwrap();
        Migrator::up(&db.write, None).await.unwrap();
        data_api::seed::insert(&db, 10, 10, &indicatif::ProgressBar::hidden())
            .await
            .unwrap();
        db
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
        let metrics = Arc::new(Metrics::new(metrics_on));
        let single = Arc::new(store::coherence::Coherence::single_instance(&metrics));
        let store = Store::new(db.clone(), None, &settings, &metrics, single);
        let dashboard = Arc::new(Dashboard::new(
            metrics.clone(),
            &settings.metrics,
            Default::default(),
        ));
        let ep = api::routes(
            store,
            &settings,
            Arc::new(AtomicBool::new(false)),
            metrics,
            Default::default(),
            dashboard,
        )
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
