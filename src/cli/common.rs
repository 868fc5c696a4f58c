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

/// Prints a machine-readable result on stdout (JSON pretty-printed, or YAML).
pub fn write_output<T: serde::Serialize>(format: OutputFormat, value: &T) -> Result<(), super::Error> {
    let text = match format {
        OutputFormat::Json => {
            let mut s = serde_json::to_string_pretty(value).map_err(|e| super::Error::Render(e.to_string()))?;
            s.push('\n');
            s
        }
        OutputFormat::Yaml => serde_saphyr::to_string(value).map_err(|e| super::Error::Render(e.to_string()))?,
    };
    std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes()).map_err(super::Error::Stdout)
}
