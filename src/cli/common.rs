//! Flags shared by the subcommands that talk to registries (design §5).

use std::path::PathBuf;

use clap::{Args, ValueEnum};

/// Registry access flags.
#[derive(Debug, Clone, Default, Args)]
pub struct RegistryArgs {
    /// Docker `config.json` with registry credentials (`auths.<host>.auth` or username/password).
    /// Credential helpers are not supported.
    #[arg(long, value_name = "FILE", env = "KZO_REGISTRY_CONFIG")]
    pub registry_config: Option<PathBuf>,

    /// Registry (HOST:PORT) to talk to over plain HTTP, e.g. a local test registry. Repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    pub insecure_registries: Vec<String>,
}

/// Output format of machine-readable results.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    #[default]
    Json,
    Yaml,
}
