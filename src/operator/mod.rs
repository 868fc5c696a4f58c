//! The operator process (`kinoite-zfs-operator run`): the build and promotion controllers, the
//! registry client pool, the health and metrics endpoints, and graceful shutdown. Tests start the same thing
//! in-process with [`Operator::start`] against the Kubernetes API simulator.

pub mod http;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::controllers::image_build::controller::{self as build, Settings as BuildSettings};
use crate::controllers::metrics::Metrics;
use crate::controllers::promotion::controller::{self as promotion, Settings as PromotionSettings};
use crate::registry::ClientPool;

/// How long shutdown waits for reconciles in flight: within Kubernetes' default
/// `terminationGracePeriodSeconds` (30 s), so the process exits on its own before the kill.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

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
    pub promotion: PromotionSettings,
}

/// A running operator.
pub struct Operator {
    http_address: SocketAddr,
    state: Arc<http::State>,
    shutdown: watch::Sender<bool>,
    /// One resync channel per controller.
    resync: [mpsc::UnboundedSender<()>; 2],
    controllers: [JoinHandle<()>; 2],
    server: JoinHandle<()>,
}

impl Operator {
    /// Starts the controllers and the endpoints on the current tokio runtime.
    pub async fn start(client: kube::Client, settings: Settings, pool: Arc<ClientPool>) -> Result<Operator, Error> {
        let listener = http::bind(settings.http_address)
            .await
            .map_err(|source| Error::Listen { address: settings.http_address, source })?;
        let http_address = listener.local_addr().unwrap_or(settings.http_address);
        let metrics = Arc::new(Metrics::new(pool.counters().clone()));
        metrics.count_layer_bytes_from(pool.scan_memory().clone());
        let state = Arc::new(http::State { ready: Default::default(), metrics: metrics.clone() });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (build_resync, build_resync_rx) = mpsc::unbounded_channel();
        let (promotion_resync, promotion_resync_rx) = mpsc::unbounded_channel();

        let builds = build::start(
            client.clone(),
            settings.build,
            pool.clone(),
            metrics.clone(),
            stopped(shutdown_rx.clone()),
            receiver_stream(build_resync_rx),
        );
        let promotions = promotion::start(
            client,
            settings.promotion,
            pool,
            metrics,
            stopped(shutdown_rx.clone()),
            receiver_stream(promotion_resync_rx),
        );
        let (build_caches, promotion_caches) = (builds.caches.clone(), promotions.caches.clone());
        let ready_state = state.clone();
        let mut ready_shutdown = shutdown_rx.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = futures::future::join(build_caches.synced(), promotion_caches.synced()) => {
                    ready_state.ready.store(true, Ordering::Release);
                    tracing::info!("caches synced: ready");
                }
                _ = ready_shutdown.wait_for(|stop| *stop) => {}
            }
        });
        let controllers = [tokio::spawn(builds.task), tokio::spawn(promotions.task)];
        let server = tokio::spawn(http::serve(listener, state.clone(), stopped(shutdown_rx)));
        tracing::info!(%http_address, "operator started");
        Ok(Operator { http_address, state, shutdown, resync: [build_resync, promotion_resync], controllers, server })
    }

    /// Where `/healthz`, `/readyz` and `/metrics` are served.
    pub fn http_address(&self) -> SocketAddr {
        self.http_address
    }

    /// Whether every watch has delivered its first complete list.
    pub fn is_ready(&self) -> bool {
        self.state.ready.load(Ordering::Acquire)
    }

    /// Reconciles every build and Promotion now (tests move their clock, then resync).
    pub fn resync(&self) {
        for resync in &self.resync {
            let _ = resync.send(());
        }
    }

    /// Graceful shutdown: no new reconciles start, the ones in flight finish, the endpoints stop.
    /// Bounded by [`SHUTDOWN_GRACE`] whatever state the caches and reconciles are in: what is
    /// still running then is stopped (every step is idempotent, the next operator resumes it).
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        self.state.ready.store(false, Ordering::Release);
        let finished = async {
            for controller in &mut self.controllers {
                let _ = controller.await;
            }
            let _ = (&mut self.server).await;
        };
        if tokio::time::timeout(SHUTDOWN_GRACE, finished).await.is_err() {
            tracing::warn!(
                grace_s = SHUTDOWN_GRACE.as_secs(),
                "reconciles still running after the grace period: stopped"
            );
            for task in self.controllers.iter().chain([&self.server]) {
                task.abort();
            }
        }
        tracing::info!("operator stopped");
    }
}

/// The resync requests of one controller as a stream.
fn receiver_stream(rx: mpsc::UnboundedReceiver<()>) -> impl futures::Stream<Item = ()> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|()| ((), rx)) })
}

/// Resolves once `shutdown` says stop.
async fn stopped(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
