//! Building the application (database, migrations, cache, routes) and running it until a
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
    metrics::Metrics,
    store::{self, Store, coherence::Coherence, listener},
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
    /// The invalidation listener, with several replicas.
    listener: Option<tokio::task::JoinHandle<()>>,
    /// The standbys' lag watch, with `--database-read-url`.
    standby_watch: Option<tokio::task::JoinHandle<()>>,
}

impl App {
    /// Connects to the database, applies migrations (unless turned off) and binds the listener.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let db = store::db::connect(&settings.db).await?;
        tracing::info!(database = %store::db::describe(&settings.db.url), "connected");
        if settings.server.migrate_on_start {
            store::db::migrate(&db, &settings.db.url).await?;
        }
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
        listener::register(&metrics);
        let c = &settings.cache;
        let replicated = db.backend() == sea_orm::DbBackend::Postgres && !c.single_instance;
        let coherence = Arc::new(if replicated {
            Coherence::replicated(&metrics, c.lease)
        } else {
            Coherence::single_instance(&metrics)
        });
        let listening = replicated && c.capacity > 0;
        let standbys =
            store::standby::Standbys::connect(&settings.db, &metrics, coherence.clone(), listening)
                .await?;
        let standby_watch = standbys
            .clone()
            .map(|s| tokio::spawn(s.watch(db.write.clone())));
        let store = Store::new(db, standbys.clone(), &settings, &metrics, coherence.clone());
        let dashboard = Arc::new(Dashboard::new(
            metrics.clone(),
            &settings.metrics,
            dashboard::OptionalRows {
                replicas: replicated,
                standbys: standbys.is_some(),
            },
        ));
        let listener = match store.cache() {
            Some(cache) if replicated => {
                let url = c
                    .listen_url
                    .clone()
                    .unwrap_or_else(|| settings.db.url.clone());
                let task =
                    tokio::spawn(listener::run(url, cache.clone(), metrics.clone(), standbys));
                wait_for_lease(&coherence).await;
                Some(task)
            }
            _ => None,
        };
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
            listener,
            standby_watch,
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
        let db = self.store.db();
        let checkpoint = db
            .is_sqlite_file()
            .then(|| tokio::spawn(store::db::checkpoint_wal(db.write.clone())));
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
        if let Some(task) = checkpoint {
            task.abort();
        }
        for task in [&self.listener, &self.standby_watch].into_iter().flatten() {
            task.abort();
        }
        if let Some(server) = metrics_server {
            let _ = server.await;
        }
        self.store.db().close().await;
        if let Some(standbys) = self.store.standbys() {
            standbys.close().await;
        }
        served.context("serving HTTP")?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Most connections open at once on `--metrics-bind` (scrapers and dashboard tabs).
const METRICS_MAX_CONNECTIONS: usize = 64;

/// Waits (a few lease bounds at most) for the first heartbeat, so a replica starts serving with
/// its cache on; without it the service still answers, from the database.
async fn wait_for_lease(coherence: &Coherence) {
    let deadline = std::time::Instant::now() + coherence.bound() * 5;
    while !coherence.now().serving() {
        if std::time::Instant::now() > deadline {
            tracing::warn!("no cache lease yet: serving from the database until heartbeats return");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    tracing::info!("cache coherent across replicas (lease held)");
}

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
    let db = store::db::connect(settings).await?;
    if !status_only {
        store::db::migrate(&db, &settings.url).await?;
    }
    for m in Migrator::get_migration_with_status(&db.write).await? {
        println!("{:?}\t{}", m.status(), m.name());
    }
    db.close().await;
    Ok(())
}
