//! The command line: one binary, the same code paths the controllers use.

pub mod builder;
pub mod cache_check;
pub mod common;
mod crd;
pub mod plan;
pub mod promote;
pub mod provenance;
pub mod resolve;
pub mod run;
pub mod verify;

use std::error::Error as StdError;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// Errors of the command line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Api(#[from] crate::api::Error),
    #[error(transparent)]
    Plan(#[from] plan::Error),
    #[error(transparent)]
    Run(#[from] run::Error),
    #[error(transparent)]
    Promote(#[from] promote::Error),
    #[error(transparent)]
    Resolve(#[from] resolve::Error),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write to stdout: {0}")]
    Stdout(#[source] std::io::Error),
    #[error("cannot render the output: {0}")]
    Render(String),
    #[error(transparent)]
    Registry(Box<crate::registry::Error>),
    #[error(transparent)]
    CacheCheck(#[from] crate::pipeline::cache::Error),
    #[error(transparent)]
    Verify(#[from] crate::pipeline::verify::Error),
    #[error(transparent)]
    ScanCache(#[from] crate::pipeline::scan_memory::Error),
    #[error(transparent)]
    Builder(#[from] crate::builder::Error),
}

impl From<crate::registry::Error> for Error {
    fn from(err: crate::registry::Error) -> Error {
        Error::Registry(Box::new(err))
    }
}

/// Exit code when a registry command could give no verdict (1 stays "verification failed" for
/// `verify`; clap also exits 2 on usage errors).
pub const EXIT_NO_VERDICT: u8 = 2;

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            // A --scan-cache directory that cannot be used is a usage error (2) for every command.
            Error::Registry(_) | Error::CacheCheck(_) | Error::Verify(_) | Error::ScanCache(_) => EXIT_NO_VERDICT,
            Error::Resolve(err) => err.exit_code(),
            _ => 1,
        }
    }
}

#[derive(Debug, Parser)]
#[command(name = "kinoite-zfs-operator", version, about = "Safe release pipeline for ZFS on Fedora Kinoite")]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "LOG_FORMAT")]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the operator: the ZfsImageBuild controller, /healthz, /readyz and /metrics.
    Run(run::RunArgs),
    /// Print both CRDs as YAML (the committed crds/ equal this output).
    Crd(crd::CrdArgs),
    /// Print what a run of a ZfsImageBuild would do (inputs, cache decision, Jobs, ConfigMaps,
    /// tags), offline, with the controller's own planner.
    Plan(plan::PlanArgs),
    /// Resolve a run's inputs from the registries (or replay a lock) and print the reference
    /// build-inputs JSON: base digest and immutable tag, kernels, Fedora version, builder pin.
    /// Exit 0 resolved, 1 cannot be resolved as given, 3 unauthorized, 4 registry unreachable.
    Resolve(resolve::ResolveArgs),
    /// Decide whether an akmods cache image covers given kernels (and inputs); print a JSON
    /// verdict. Exit 0 for any verdict, 2 when no verdict can be given.
    CacheCheck(cache_check::CacheCheckArgs),
    /// Verify that a candidate image (by digest) carries zfs, zpool and zfs.ko for given kernels;
    /// print a JSON verdict. Exit 0 verified, 1 not verified, 2 no verdict.
    Verify(verify::VerifyArgs),
    /// Move stable tags to a verified candidate by digest: audit tag, akmods alignment,
    /// compare-and-swap; nothing moves when a precondition fails.
    Promote(promote::PromoteArgs),
    /// What runs inside builder pods: `install DIR` (init container) and `akmods` (reads its
    /// inputs from the Job's env, writes the result to the termination-message file).
    #[command(subcommand)]
    Builder(builder::BuilderCommand),
    /// Read back and verify the signed provenance artifact pushed next to a stable digest
    /// (referrers API or the referrers tag schema); print build-provenance.json.
    Provenance(provenance::ProvenanceArgs),
}

/// Logs go to stderr so stdout stays machine-readable; `RUST_LOG` filters (default `info`).
pub fn init_logging(cli: &Cli) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match cli.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Runs a parsed command line. Subcommands that talk to registries or the cluster are async.
pub async fn run(cli: Cli) -> Result<ExitCode, Error> {
    match cli.command {
        Command::Crd(args) => crd::run(&args),
        Command::Plan(args) => Ok(plan::run(&args).await?),
        Command::Run(args) => Ok(run::run(&args).await?),
        Command::Resolve(args) => resolve::run(&args).await,
        Command::CacheCheck(args) => cache_check::run(&args).await,
        Command::Verify(args) => verify::run(&args).await,
        Command::Promote(args) => Ok(promote::run(&args).await?),
        Command::Builder(command) => Ok(builder::run(&command)?),
        Command::Provenance(args) => provenance::run(&args).await,
    }
}

/// An error and its causes on one line (`outer: cause: root cause`).
pub fn one_line(err: &dyn StdError) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line.replace('\n', " ")
}
