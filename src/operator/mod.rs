//! The operator process (`kinoite-zfs-operator run`): the build controller, the registry client
//! pool, the health and metrics endpoints, and graceful shutdown. Tests start the same thing
//! in-process with [`Operator::start`] against the Kubernetes API simulator.

pub mod http;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::controllers::build::controller::{self, Settings as BuildSettings};
use crate::controllers::metrics::Metrics;
use crate::registry::ClientPool;

/// Errors of starting the operator.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot listen on {address} for /healthz, /readyz and /metrics: {source}")]
    Listen {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Settings of the operator process.
#[derive(Clone)]
pub struct Settings {
    /// Address of `/healthz`, `/readyz` and `/metrics`.
    pub http_address: SocketAddr,
    pub build: BuildSettings,
}

/// A running operator.
pub struct Operator {
    http_address: SocketAddr,
    state: Arc<http::State>,
    shutdown: watch::Sender<bool>,
    resync: mpsc::UnboundedSender<()>,
    controller: JoinHandle<()>,
    server: JoinHandle<()>,
}

impl Operator {
    /// Starts the controller and the endpoints on the current tokio runtime.
    pub async fn start(client: kube::Client, settings: Settings, pool: Arc<ClientPool>) -> Result<Operator, Error> {
        let listener = http::bind(settings.http_address)
            .await
            .map_err(|source| Error::Listen { address: settings.http_address, source })?;
        let http_address = listener.local_addr().unwrap_or(settings.http_address);
        let metrics = Arc::new(Metrics::new(pool.counters().clone()));
        let state = Arc::new(http::State { ready: Default::default(), metrics: metrics.clone() });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (resync, resync_rx) = mpsc::unbounded_channel();

        let running = controller::start(
            client,
            settings.build,
            pool,
            metrics,
            stopped(shutdown_rx.clone()),
            futures::stream::unfold(resync_rx, |mut rx| async move { rx.recv().await.map(|()| ((), rx)) }),
        );
        let caches = running.caches.clone();
        let ready_state = state.clone();
        let mut ready_shutdown = shutdown_rx.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = caches.synced() => {
                    ready_state.ready.store(true, Ordering::Release);
                    tracing::info!("caches synced: ready");
                }
                _ = ready_shutdown.wait_for(|stop| *stop) => {}
            }
        });
        let controller = tokio::spawn(running.task);
        let server = tokio::spawn(http::serve(listener, state.clone(), stopped(shutdown_rx)));
        tracing::info!(%http_address, "operator started");
        Ok(Operator { http_address, state, shutdown, resync, controller, server })
    }

    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub fn http_address(&self) -> SocketAddr {
        self.http_address
    }

    /// Whether every watch has delivered its first complete list.
    pub fn is_ready(&self) -> bool {
        self.state.ready.load(Ordering::Acquire)
    }

    /// Reconciles every build now (tests move their clock, then resync).
    pub fn resync(&self) {
        let _ = self.resync.send(());
    }

    /// Graceful shutdown: no new reconciles start, the ones in flight finish, the endpoints stop.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        self.state.ready.store(false, Ordering::Release);
        let _ = self.controller.await;
        let _ = self.server.await;
        tracing::info!("operator stopped");
    }
}

/// Resolves once `shutdown` says stop.
fn stopped(mut shutdown: watch::Receiver<bool>) -> impl std::future::Future<Output = ()> + Send + Sync + 'static {
    async move {
        let _ = shutdown.wait_for(|stop| *stop).await;
    }
}
