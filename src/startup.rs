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
    config::Settings,
    store::{self, Db, Store},
};

/// A bound, ready-to-run server.
pub struct App {
    acceptor: TcpAcceptor,
    addr: SocketAddr,
    db: Db,
    settings: Settings,
    shutting_down: Arc<AtomicBool>,
}

impl App {
    /// Connects to the database, applies migrations (unless turned off) and binds the listener.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let db = store::db::connect(&settings.database_url, &settings.db).await?;
        if settings.db.migrate_on_start {
            Migrator::up(&db.write, None)
                .await
                .context("applying migrations")?;
        }
        let acceptor = TcpListener::bind(settings.bind)
            .into_acceptor()
            .await
            .with_context(|| format!("binding {}", settings.bind))?;
        let addr = acceptor
            .local_addr()
            .into_iter()
            .find_map(|a| a.as_socket_addr().copied())
            .context("the listener has no socket address")?;
        Ok(Self {
            acceptor,
            addr,
            db,
            settings,
            shutting_down: Arc::default(),
        })
    }

    /// The port actually bound (useful with port 0).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The address actually bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` resolves; then readiness fails at once, the listener closes,
    /// in-flight requests get up to the drain timeout, and the pool is closed.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        let store = Store::new(self.db.clone(), &self.settings.cache);
        let routes = api::routes(store, &self.settings, self.shutting_down.clone());
        let flag = self.shutting_down.clone();
        let signal = async move {
            shutdown.await;
            flag.store(true, Ordering::SeqCst);
            tracing::info!("shutting down: draining in-flight requests");
        };
        tracing::info!(addr = %self.addr, "listening");
        Server::new_with_acceptor(self.acceptor)
            .run_with_graceful_shutdown(routes, signal, Some(self.settings.http.drain_timeout))
            .await
            .context("serving HTTP")?;
        self.db.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

/// `data-api migrate`: applies pending migrations unless `status_only`, then reports each one.
pub async fn migrate(settings: &Settings, status_only: bool) -> anyhow::Result<()> {
    let db = store::db::connect(&settings.database_url, &settings.db).await?;
    if !status_only {
        Migrator::up(&db.write, None)
            .await
            .context("applying migrations")?;
    }
    for m in Migrator::get_migration_with_status(&db.write).await? {
        println!("{:?}\t{}", m.status(), m.name());
    }
    db.close().await;
    Ok(())
}
