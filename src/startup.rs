//! Building the application (the store, keys, metrics, the dashboard, the listeners) and running it until a
//! shutdown signal, then draining in-flight requests and closing the pool.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use anyhow::Context;
use migration::{Migrator, MigratorTrait};
use poem::{
    Server,
    listener::{Acceptor, Listener, TcpAcceptor, TcpListener},
};

use crate::{
    api,
    config::{DbSettings, Settings},
    connections::{Capped, IdleTimeout},
    dashboard::{self, Dashboard},
    db,
    metrics::Metrics,
    store::{self, Store},
};

/// A bound, ready-to-run server.
pub struct App {
    acceptor: TcpAcceptor,
    addr: SocketAddr,
    metrics_acceptor: Option<(TcpAcceptor, SocketAddr)>,
    store: Store,
    metrics: Arc<Metrics>,
    dashboard: Arc<Dashboard>,
    keys: api::auth::ApiKeys,
    settings: Settings,
    shutting_down: Arc<AtomicBool>,
}

impl App {
    /// Connects to the database, applies migrations (unless turned off) and binds the listener.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let auth = &settings.auth;
        let keys =
            api::auth::ApiKeys::load(auth.api_keys.as_deref(), auth.api_key_file.as_deref())?;
        if keys.enabled() {
            tracing::info!("writes need an API key");
        } else {
            tracing::warn!(
                "writes are OPEN: anyone who reaches this service can create, change and delete \
                 items (set --api-keys or --api-key-file to require a key)"
            );
        }
        let metrics = Arc::new(Metrics::new(settings.metrics.enabled));
        let migrate = settings.server.migrate_on_start;
        let store = Store::open(&settings.db, &settings.cache, migrate, &metrics).await?;
        let dashboard = Arc::new(Dashboard::new(
            metrics.clone(),
            &settings.metrics,
            dashboard::OptionalRows {
                replicas: store.sharing() == store::Sharing::Replicated,
                standbys: store.has_standbys(),
                redis: store.has_redis(),
                edge: store.edge().is_some(),
            },
        ));
        let (acceptor, addr) = bind(settings.server.bind).await?;
        let metrics_acceptor = match settings.metrics.bind {
            Some(at) if settings.metrics.enabled => Some(bind(at).await?),
            _ => None,
        };
        Ok(Self {
            acceptor,
            addr,
            metrics_acceptor,
            store,
            metrics,
            dashboard,
            keys,
            settings,
            shutting_down: Arc::default(),
        })
    }

    /// The port `/metrics` is served on when it has an address of its own.
    pub fn metrics_port(&self) -> Option<u16> {
        self.metrics_acceptor.as_ref().map(|(_, a)| a.port())
    }

    /// The port actually bound (useful with port 0).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Serves until `shutdown` resolves; then readiness fails at once, the listener closes,
    /// in-flight requests get up to the drain timeout, and the pool is closed.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        let routes = api::routes(
            self.store.clone(),
            &self.settings,
            self.shutting_down.clone(),
            self.metrics.clone(),
            self.keys.clone(),
            self.dashboard.clone(),
        )?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let flag = self.shutting_down.clone();
        let signal = async move {
            shutdown.await;
            flag.store(true, Ordering::SeqCst);
            let _ = stop_tx.send(true);
            tracing::info!("shutting down: draining in-flight requests");
        };
        let every = self.settings.metrics.interval;
        let sampler = tokio::spawn(sample_metrics(
            self.store.clone(),
            self.metrics.clone(),
            self.dashboard.clone(),
            every,
        ));
        let purge = tokio::spawn(purge_idempotency_keys(self.store.clone()));
        let s = &self.settings.server;
        let request_timeout = self.settings.limits.request_timeout;
        let idle = (!s.idle_timeout.is_zero()).then(|| IdleTimeout {
            between: s.idle_timeout,
            mid_request: (!request_timeout.is_zero()).then(|| s.idle_timeout + request_timeout),
        });
        let metrics_server = self.metrics_acceptor.map(|(acceptor, addr)| {
            // Scrapers and dashboard tabs: a few connections, closed when idle like any other.
            let acceptor = Capped::unmetered(acceptor, METRICS_MAX_CONNECTIONS, idle);
            tracing::info!(%addr, "serving /metrics and /dashboard");
            let mut stop = stop_rx.clone();
            let token = self.settings.metrics.token.clone();
            let ep = poem::Route::new()
                .at(
                    "/metrics",
                    api::metrics_endpoint(self.metrics.clone(), token.clone()),
                )
                .nest(
                    "/dashboard",
                    api::dashboard::routes(self.dashboard.clone(), token),
                );
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            tokio::spawn(
                Server::new_with_acceptor(acceptor).run_with_graceful_shutdown(ep, stopped, None),
            )
        });
        tracing::info!(addr = %self.addr, "listening");
        let capped = Capped::new(self.acceptor, s.max_connections, idle, &self.metrics);
        let server = Server::new_with_acceptor(capped);
        let served = server
            .run_with_graceful_shutdown(routes, signal, Some(s.drain_timeout))
            .await;
        sampler.abort();
        purge.abort();
        if let Some(server) = metrics_server {
            let _ = server.await;
        }
        self.store.close().await;
        served.context("serving HTTP")?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The app's endpoint without a listener or background tasks, and its dashboard: for
/// measuring the request path in process (the hot-path benchmark and instruction counter). The
/// store is opened as `settings` say, without migrating; writes need no key.
pub async fn in_process(
    settings: &Settings,
) -> anyhow::Result<(impl poem::Endpoint + use<>, Arc<Dashboard>)> {
    let metrics = Arc::new(Metrics::new(settings.metrics.enabled));
    let store = Store::open(&settings.db, &settings.cache, false, &metrics).await?;
    let rows = dashboard::OptionalRows::default();
    let dashboard = Arc::new(Dashboard::new(metrics.clone(), &settings.metrics, rows));
    let keys = api::auth::ApiKeys::default();
    let ep = api::routes(
        store,
        settings,
        Arc::default(),
        metrics,
        keys,
        dashboard.clone(),
    )?;
    Ok((ep, dashboard))
}

/// Most connections open at once on `--metrics-bind` (scrapers and dashboard tabs).
const METRICS_MAX_CONNECTIONS: usize = 64;

async fn bind(at: SocketAddr) -> anyhow::Result<(TcpAcceptor, SocketAddr)> {
    let acceptor = TcpListener::bind(at)
        .into_acceptor()
        .await
        .with_context(|| format!("binding {at}"))?;
    let addr = acceptor
        .local_addr()
        .into_iter()
        .find_map(|a| a.as_socket_addr().copied())
        .context("the listener has no socket address")?;
    Ok((acceptor, addr))
}

/// Prunes version marks and, with metrics on, samples pool and cache gauges, runs registry
/// upkeep and takes the dashboard's frame, on `every`, until aborted.
async fn sample_metrics(
    store: Store,
    metrics: Arc<Metrics>,
    dashboard: Arc<Dashboard>,
    every: std::time::Duration,
) {
    let mut tick = tokio::time::interval(every.max(std::time::Duration::from_millis(10)));
    loop {
        tick.tick().await;
        // With or without metrics: version marks no read needs any more are dropped.
        store.prune_marks();
        if metrics.enabled() {
            store.sample_metrics().await;
            metrics.upkeep();
            dashboard.sample();
        }
    }
}

/// Deletes expired `Idempotency-Key`s every minute, until aborted.
async fn purge_idempotency_keys(store: Store) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        tick.tick().await;
        match store.purge_idempotency_keys().await {
            Ok(0) => {}
            Ok(purged) => tracing::debug!(purged, "expired idempotency keys deleted"),
            Err(e) => tracing::warn!(error = %e, "deleting expired idempotency keys failed"),
        }
    }
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is called, not when
/// the future is first polled: call it before start-up, so a signal that arrives while the
/// service starts (after it says "listening", say) is not met by the default action, which ends
/// the process without draining.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{Signal, SignalKind, signal};
        let term = signal(SignalKind::terminate()).ok();
        let int = signal(SignalKind::interrupt()).ok();
        let wait = |s: Option<Signal>| async move {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        async move {
            tokio::select! {
                () = wait(term) => {},
                () = wait(int) => {},
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `data-api migrate`: applies pending migrations unless `status_only`, then reports each one.
pub async fn migrate(settings: &DbSettings, status_only: bool) -> anyhow::Result<()> {
    let db = db::connect(settings).await?;
    if !status_only {
        db::migrate(&db, &settings.url).await?;
    }
    for m in Migrator::get_migration_with_status(&db.write).await? {
        println!("{:?}\t{}", m.status(), m.name());
    }
    db.close().await;
    Ok(())
}
