//! The command line: one binary, the same code paths the controllers use.

pub mod common;
mod crd;
pub mod plan;
pub mod run;

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
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write to stdout: {0}")]
    Stdout(#[source] std::io::Error),
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
        Command::Plan(args) => Ok(plan::run(&args)?),
        Command::Run(args) => Ok(run::run(&args).await?),
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
