//! The edge cache in front (`--edge-max-age`, `cache::edge`): a real varnishd running the
//! repository's VCL in front of two replicas on PostgreSQL. Writers go to either replica,
//! readers through Varnish; the checker of `replicas.rs` finds any read that started after an
//! acknowledgement and answered an older version. Phases: steady (0 such reads; Varnish's hit
//! ratio and the origin's share of the reads reported and bounded), purges refused by Varnish
//! (the window is bounded by `--edge-max-age`), both replicas' feeds cut (the lease bound), a
//! write from psql (purged from the feed). Plus the headers on their own, and the hosted-CDN
//! purge API against a stand-in that records what it receives.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU16, Ordering},
    },
    time::{Duration, Instant},
};

use sea_orm::ConnectionTrait;
use serde_json::{Value, json};

use crate::checker::{Log, analyse, longest_window, phase_paced};
use crate::helpers::{TestApp, as_configured, metric, skip};
use data_api::config::{PurgeApi, Settings};
use testkit::{proxy::silent_proxy, varnish::Varnish};

const MAX_AGE: Duration = Duration::from_secs(10);
/// Between a writer's writes: a read-mostly mix (about one write per twenty reads).
const WRITE_PAUSE: Duration = Duration::from_millis(20);
const LEASE: Duration = Duration::from_secs(1);
const ITEMS: usize = 200;
const ITEM_ROUTE: &str = "http_route=\"/data/{id}\"";

fn vcl_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("varnish")
}

fn with_edge(purge_url: String, listen_url: Option<String>) -> impl FnOnce(&mut Settings) {
    move |s| {
        s.cache.edge.edge_max_age = Some(MAX_AGE);
        s.cache.edge.edge_purge_url = Some(purge_url);
        s.cache.lease = LEASE;
        s.cache.listen_url = listen_url;
    }
}

async fn version_through(client: &reqwest::Client, base: &str, id: i64) -> Option<i64> {
    let resp = client.get(format!("{base}/data/{id}")).send().await.ok()?;
    resp.json::<Value>().await.ok()?["version"].as_i64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn varnish_in_front_never_answers_older_after_an_ack() {
    if testkit::varnish::varnishd().is_none() {
        return skip(
            "varnishd with the xkey vmod is not installed (Debian varnish, varnish-modules)",
        );
    }
    let Some(base) = TestApp::postgres(as_configured).await else {
        return;
    };
    let db_url = base.database_url().to_owned();
    let pg: SocketAddr = db_url
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|hp| hp.parse().ok())
        .expect("the test database's address");
    // Both replicas' feeds go through a proxy that can go silent.
    let forwarding = Arc::new(AtomicBool::new(true));
    let proxy = silent_proxy(pg, forwarding.clone()).await;
    let listen = db_url.replace(&pg.to_string(), &proxy.to_string());
    let edge_addr = Varnish::reserve().expect("a port for Varnish");
    let purge_url = format!("http://{edge_addr}/");
    let a = TestApp::on_url(&db_url, with_edge(purge_url.clone(), Some(listen.clone()))).await;
    let b = TestApp::on_url(&db_url, with_edge(purge_url, Some(listen))).await;
    let replicas = [&a, &b];
    let addrs: Vec<SocketAddr> = replicas
        .iter()
        .map(|r| {
            r.url("")
                .trim_start_matches("http://")
                .parse()
                .expect("addr")
        })
        .collect();
    let varnish = Varnish::start(edge_addr, &vcl_dir(), &addrs).expect("varnishd starts");
    let edge = format!("http://{edge_addr}");
    for r in replicas {
        r.wait_for_metric("cache_lease_held", &[], |v| v == 1.0)
            .await;
        r.wait_for_metric("edge_cacheable", &[], |v| v == 1.0).await;
    }
    let ids = base.create_many(ITEMS, "edge").await;
    let writers = vec![a.url(""), b.url("")];
    let readers = vec![edge.clone(); 4];
    let log = Arc::new(Mutex::new(Log::default()));
    let origin_reads = || async {
        let mut n = 0.0;
        for r in replicas {
            let text = r.scrape().await;
            n += metric(
                &text,
                "http_server_request_duration_seconds_count",
                &[ITEM_ROUTE, "http_request_method=\"GET\""],
            );
        }
        n
    };

    // 1. Steady: a read-mostly mix.
    let (hits0, misses0) = (
        stat(&varnish, "MAIN.cache_hit"),
        stat(&varnish, "MAIN.cache_miss"),
    );
    let origin0 = origin_reads().await;
    phase_paced(
        "steady",
        writers.clone(),
        &readers,
        &ids,
        &log,
        WRITE_PAUSE,
        tokio::time::sleep(Duration::from_secs(4)),
    )
    .await;
    let hits = stat(&varnish, "MAIN.cache_hit") - hits0;
    let misses = stat(&varnish, "MAIN.cache_miss") - misses0;
    let origin = origin_reads().await - origin0;
    let reads = log.lock().expect("log").reads.len() as f64;
    let ratio = hits as f64 / (hits + misses).max(1) as f64;
    eprintln!(
        "edge: steady: {reads} reads through Varnish, hit ratio {ratio:.3} ({hits} hits, \
         {misses} misses); the origin answered {origin} item reads ({:.1} % of them)",
        origin / reads * 100.0
    );
    assert!(ratio >= 0.9, "Varnish's hit ratio {ratio:.3}");
    let steady = analyse(&log.lock().expect("log"));
    longest_window("edge", &steady, &["steady"]);
    assert!(
        steady.windows.get(&1).is_none_or(Vec::is_empty),
        "steady: a read after an ack answered the older version"
    );
    assert!(
        origin <= reads * 0.15,
        "the origin took {origin} of {reads} reads"
    );

    // 2. Varnish refuses purges for a while: answers say no-store, writes are acknowledged
    // after the purge timeout, and what Varnish kept ages out within --edge-max-age.
    varnish.load_refusing_vcl("refusing").expect("vcl loads");
    let refused = async {
        varnish.admin(&["vcl.use", "refusing"]).expect("vcl.use");
        a.wait_for_metric("edge_cacheable", &[], |v| v == 0.0).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        varnish.admin(&["vcl.use", "boot"]).expect("vcl.use");
        for r in replicas {
            r.wait_for_metric("edge_cacheable", &[], |v| v == 1.0).await;
        }
    };
    phase_paced(
        "purges refused",
        writers.clone(),
        &readers,
        &ids,
        &log,
        WRITE_PAUSE,
        refused,
    )
    .await;
    let text = a.scrape().await;
    assert!(metric(&text, "edge_purges_total", &["result=\"failed\""]) >= 1.0);
    assert!(metric(&text, "edge_purge_waits_total", &["result=\"gave_up\""]) >= 1.0);

    // 3. Both replicas' feeds cut: their leases lapse, they purge everything and answer
    // no-store until the feeds are back.
    let cut = async {
        forwarding.store(false, Ordering::Relaxed);
        for r in replicas {
            r.wait_for_metric("cache_lease_held", &[], |v| v == 0.0)
                .await;
            r.wait_for_metric("edge_cacheable", &[], |v| v == 0.0).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        forwarding.store(true, Ordering::Relaxed);
        for r in replicas {
            r.wait_for_metric("cache_lease_held", &[], |v| v == 1.0)
                .await;
            r.wait_for_metric("edge_cacheable", &[], |v| v == 1.0).await;
        }
    };
    phase_paced(
        "feeds cut",
        writers.clone(),
        &readers,
        &ids,
        &log,
        WRITE_PAUSE,
        cut,
    )
    .await;

    // 4. Steady again.
    phase_paced(
        "after",
        writers.clone(),
        &readers,
        &ids,
        &log,
        WRITE_PAUSE,
        tokio::time::sleep(Duration::from_secs(2)),
    )
    .await;

    let f = analyse(&log.lock().expect("log"));
    eprintln!("edge: {} reads through Varnish", f.reads);
    let phases = ["steady", "purges refused", "feeds cut", "after"];
    longest_window("edge", &f, &phases);
    let stale = |p: usize| f.windows.get(&p).map_or(0, Vec::len);
    let longest = |p: usize| f.windows.get(&p).and_then(|w| w.iter().max().copied());
    assert_eq!(
        stale(1),
        0,
        "steady: a read after an ack answered the older version"
    );
    assert_eq!(
        stale(4),
        0,
        "after: a read after an ack answered the older version"
    );
    assert!(
        longest(2).is_none_or(|w| w <= MAX_AGE + Duration::from_secs(1)),
        "purges refused: staleness past --edge-max-age: {:?}",
        longest(2)
    );
    assert!(
        longest(3).is_none_or(|w| w < LEASE * 2),
        "feeds cut: staleness past the lease: {:?}",
        longest(3)
    );
    assert_eq!(f.backwards, 0, "a reader's answers went backwards");

    // 5. A write from psql reaches Varnish through the feed.
    let client = reqwest::Client::new();
    let id = ids[0];
    let cached = version_through(&client, &edge, id).await.expect("read");
    let _ = version_through(&client, &edge, id).await;
    let outside = base.outside_connection().await;
    let wrote = Instant::now();
    outside
        .execute_unprepared(&format!(
            "UPDATE data_items SET name = 'from psql', version = version + 1 WHERE id = {id}"
        ))
        .await
        .expect("update");
    testkit::eventually("psql's write purged from Varnish", || async {
        match version_through(&client, &edge, id).await {
            Some(v) if v > cached => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    eprintln!(
        "edge: psql's write visible through Varnish after {:?}",
        wrote.elapsed()
    );

    drop(varnish);
    a.stop_shared().await;
    b.stop_shared().await;
    base.stop().await;
}

fn stat(varnish: &Varnish, field: &str) -> u64 {
    varnish.stat(field).expect("varnishstat")
}

/// The headers the edge reads, on each kind of answer, and their absence without edge mode.
#[tokio::test]
async fn answers_name_their_keys_and_how_long_the_edge_may_keep_them() {
    let (stand_in, received, _) = purge_stand_in(200).await;
    let app = TestApp::sqlite(|s| {
        s.cache.edge.edge_max_age = Some(Duration::from_secs(30));
        s.cache.edge.edge_purge_url = Some(format!("http://{stand_in}/purge"));
        s.cache.edge.edge_purge_api = PurgeApi::Tags;
        s.cache.edge.edge_purge_token = Some("sekrit".into());
    })
    .await;
    let item = app.create(json!({"name": "edge"})).await;
    let id = item["id"].as_i64().expect("id");
    let resp = app.get(&format!("/data/{id}")).await;
    assert_eq!(resp.status(), 200);
    let h = resp.headers();
    assert_eq!(h["surrogate-control"], "max-age=30");
    assert_eq!(h["cdn-cache-control"], "max-age=30");
    assert_eq!(
        h["surrogate-key"],
        format!("data-api data-api/item/{id}").as_str()
    );
    assert_eq!(
        h["cache-tag"],
        format!("data-api,data-api/item/{id}").as_str()
    );
    assert_eq!(
        h["cache-control"], "no-cache",
        "browsers' Cache-Control unchanged"
    );
    let missing = app.get("/data/999999").await;
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.headers()["surrogate-key"],
        "data-api data-api/item/999999"
    );
    let list = app.get("/data?limit=5").await;
    assert_eq!(list.headers()["surrogate-key"], "data-api data-api/items");
    let text = app.scrape().await;
    for family in crate::metrics::EDGE_FAMILIES {
        assert!(text.contains(family), "{family} is exported in edge mode");
    }
    let health = app.get("/health/live").await;
    assert!(health.headers().get("surrogate-key").is_none());

    // The create was purged (its 404 may be at the edge) before it was acknowledged, with
    // the token, as the hosted API's shape says.
    let got = received.lock().expect("log").clone();
    assert!(
        got.iter().any(|(auth, tags)| auth == "Bearer sekrit"
            && tags.contains(&format!("data-api/item/{id}"))
            && tags.contains(&"data-api/items".to_owned())),
        "purges received: {got:?}"
    );
    // A single instance has no feed to bring its write back: it purges it a second time.
    let key = format!("data-api/item/{id}");
    testkit::eventually("the create purged twice", || async {
        let log = received.lock().expect("log");
        match log.iter().filter(|(_, tags)| tags.contains(&key)).count() {
            n if n >= 2 => Ok(()),
            n => Err(n),
        }
    })
    .await;
    app.stop().await;

    let plain = TestApp::sqlite(as_configured).await;
    let resp = plain.get(&format!("/data/{id}")).await;
    assert!(resp.headers().get("surrogate-control").is_none());
    plain.stop().await;
}

/// A hosted CDN's purge API refusing (500): writes are still acknowledged (after the purge
/// timeout, counted), answers tell the edge `no-store`, and once it accepts again the keys
/// refused are purged and answers are cacheable again.
#[tokio::test]
async fn a_refusing_purge_api_stops_cacheability_until_it_accepts() {
    let (stand_in, received, answer) = purge_stand_in(500).await;
    let app = TestApp::sqlite(|s| {
        s.cache.edge.edge_max_age = Some(Duration::from_secs(30));
        s.cache.edge.edge_purge_url = Some(format!("http://{stand_in}/purge"));
        s.cache.edge.edge_purge_api = PurgeApi::Tags;
        s.cache.edge.edge_purge_token = Some("sekrit".into());
        s.cache.edge.edge_purge_timeout = Duration::from_millis(100);
    })
    .await;
    let item = app.create(json!({"name": "refused"})).await;
    let id = item["id"].as_i64().expect("id");
    app.wait_for_metric("edge_cacheable", &[], |v| v == 0.0)
        .await;
    let resp = app.get(&format!("/data/{id}")).await;
    assert_eq!(resp.headers()["surrogate-control"], "no-store");
    let text = app.scrape().await;
    assert!(metric(&text, "edge_purge_waits_total", &["result=\"gave_up\""]) >= 1.0);
    assert!(metric(&text, "edge_purges_total", &["result=\"failed\""]) >= 1.0);
    answer.store(200, Ordering::Relaxed);
    app.wait_for_metric("edge_cacheable", &[], |v| v == 1.0)
        .await;
    let resp = app.get(&format!("/data/{id}")).await;
    assert_eq!(resp.headers()["surrogate-control"], "max-age=30");
    assert!(
        received
            .lock()
            .expect("log")
            .iter()
            .any(|(_, tags)| tags.contains(&format!("data-api/item/{id}"))),
        "the refused keys were purged once the API accepted"
    );
    app.stop().await;
}

type Received = Arc<Mutex<Vec<(String, Vec<String>)>>>;

/// A stand-in for a hosted CDN's purge-by-tag API: records each call's `Authorization` and
/// tags, and answers the status it holds (`status` at first; the test may change it).
async fn purge_stand_in(status: u16) -> (SocketAddr, Received, Arc<AtomicU16>) {
    use poem::{EndpointExt, Route, handler, http::StatusCode, post, web::Data};
    let received: Received = Arc::default();
    let answer = Arc::new(AtomicU16::new(status));
    #[handler]
    async fn purge(
        req: &poem::Request,
        body: String,
        Data(state): Data<&(Received, Arc<AtomicU16>)>,
    ) -> StatusCode {
        let auth = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let tags: Vec<String> = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| serde_json::from_value(v["tags"].clone()).ok())
            .unwrap_or_default();
        state.0.lock().expect("log").push((auth, tags));
        StatusCode::from_u16(state.1.load(Ordering::Relaxed)).unwrap_or(StatusCode::OK)
    }
    let app = Route::new()
        .at("/purge", post(purge))
        .data((received.clone(), answer.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    tokio::spawn(poem::Server::new(poem::listener::TcpListener::bind(addr)).run(app));
    testkit::eventually("the stand-in listens", || async {
        tokio::net::TcpStream::connect(addr)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
    (addr, received, answer)
}
