//! `kinoite-zfs-operator run`: the operator. Connects with the in-cluster config or the
//! kubeconfig (`KUBECONFIG`, `~/.kube/config`), runs the `ZfsImageBuild` and `Promotion`
//! controllers, serves
//! `/healthz`, `/readyz` and `/metrics`, and shuts down gracefully on SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;

use super::common::RegistryArgs;
use crate::controllers::image_build::controller::Settings as BuildSettings;
use crate::controllers::image_build::work::RetryPolicy;
use crate::controllers::promotion::controller::{Settings as PromotionSettings, Timing};
use crate::controllers::system_clock;
use crate::operator::{self, Operator, Settings};
use crate::registry::{self, ClientPool, CredentialSet};

/// Image of the `install-builder` init container when neither `--tools-image` nor
/// `KZO_TOOLS_IMAGE` is given. Deployments should pin the operator image by digest.
pub const DEFAULT_TOOLS_IMAGE: &str = "ghcr.io/kinoite-zfs/kinoite-zfs-operator:latest";

/// Errors of `run`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to Kubernetes (in-cluster config or KUBECONFIG): {0}")]
    Connect(#[source] kube::Error),
    #[error(transparent)]
    Registry(#[from] registry::Error),
    #[error(transparent)]
    Operator(#[from] operator::Error),
    #[error("cannot install the signal handler: {0}")]
    Signal(#[source] std::io::Error),
    #[error(
        "refusing to start: --tools-image {image} cannot be resolved to a digest (builder Jobs run it only by digest): {source}"
    )]
    ToolsImage {
        image: String,
        #[source]
        source: Box<registry::Error>,
    },
}

/// The tools image by digest (H8): a reference already pinned (`NAME@sha256:...`) is kept; a tag
/// is resolved once, here, and every Job carries that digest for the life of the process.
pub async fn resolve_tools_image<R: registry::RegistryClient + ?Sized>(
    registry: &R,
    image: &str,
) -> Result<String, Error> {
    if crate::jobs::render::is_pinned(image) {
        return Ok(image.to_string());
    }
    let fail = |source: registry::Error| Error::ToolsImage { image: image.to_string(), source: Box::new(source) };
    let reference = registry::ImageRef::parse(image).map_err(|e| fail(e.into()))?;
    let digest = registry.resolve_digest(&reference).await.map_err(fail)?;
    let pinned = format!("{}@{digest}", reference.name());
    tracing::info!(tools_image = %pinned, "resolved --tools-image {image}");
    Ok(pinned)
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub registry: RegistryArgs,

    /// Address of `/healthz`, `/readyz` and `/metrics`.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8080", env = "KZO_HTTP_ADDRESS")]
    pub http_address: SocketAddr,

    /// Operator image that provides the builder entrypoint in builder Jobs. A tag is resolved to
    /// its digest once at startup (the process refuses to start when it cannot be resolved).
    #[arg(long, value_name = "IMAGE", default_value = DEFAULT_TOOLS_IMAGE, env = "KZO_TOOLS_IMAGE")]
    pub tools_image: String,

    /// Watch only this namespace (default: every namespace).
    #[arg(long, value_name = "NAMESPACE", env = "KZO_NAMESPACE")]
    pub namespace: Option<String>,

    /// Builds reconciled at the same time (and, separately, Promotions reconciled at the same time).
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
}

pub async fn run(args: &RunArgs) -> Result<ExitCode, Error> {
    // Install the handlers first: a SIGTERM during startup must not kill the process mid-write.
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(Error::Signal)?;
    let pool = Arc::new(ClientPool::from_args(&args.registry)?);
    let default_credentials = match &args.registry.registry_config {
        Some(path) => CredentialSet::from_file(path).map_err(registry::Error::from)?,
        None => CredentialSet::anonymous(),
    };
    let tools_image = resolve_tools_image(pool.client(&default_credentials)?.as_ref(), &args.tools_image).await?;
    let client = kube::Client::try_default().await.map_err(Error::Connect)?;
    let settings = Settings {
        http_address: args.http_address,
        build: BuildSettings {
            tools_image,
            retry: RetryPolicy::default(),
            concurrency: args.concurrency,
            namespace: args.namespace.clone(),
            default_credentials: default_credentials.clone(),
            clock: system_clock(),
        },
        promotion: PromotionSettings {
            concurrency: args.concurrency,
            namespace: args.namespace.clone(),
            default_credentials,
            clock: system_clock(),
            timing: Timing::default(),
        },
    };
    let operator = Operator::start(client, settings, pool).await?;
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt: shutting down"),
    }
    operator.shutdown().await;
    Ok(ExitCode::SUCCESS)
}
