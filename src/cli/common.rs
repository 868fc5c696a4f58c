//! Flags shared by the subcommands that talk to registries (design §5).

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::pipeline::scan_memory::{Question, ScanMemory};

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

/// `--scan-cache DIR` of the commands that scan layers.
#[derive(Debug, Clone, Default, Args)]
pub struct ScanCacheArgs {
    /// Directory remembering what each layer scan learned, by layer digest (created if missing):
    /// a later run reads only the layers it has not seen. Safe to share between concurrent runs;
    /// a corrupt file is ignored and its layer read again.
    #[arg(long, value_name = "DIR")]
    pub scan_cache: Option<PathBuf>,
}

impl ScanCacheArgs {
    /// This invocation's scan memory: in memory only, or persisted in the directory.
    pub fn memory(&self) -> Result<ScanMemory, super::Error> {
        let memory = ScanMemory::default();
        Ok(match &self.scan_cache {
            Some(dir) => memory.with_dir(dir)?,
            None => memory,
        })
    }
}

/// One log line saying what the scan memory saved (the benchmark and scripts read it).
pub fn log_scan_memory(memory: &ScanMemory) {
    let (mut read, mut remembered) = (0, 0);
    for question in Question::ALL {
        read += memory.bytes_read(question);
        remembered += memory.bytes_remembered(question);
    }
    tracing::info!(
        layers_remembered = memory.hits(),
        layers_read = memory.misses(),
        bytes_read = read,
        bytes_remembered = remembered,
        corrupt_files_ignored = memory.rejected_files(),
        "layer scan memory"
    );
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
