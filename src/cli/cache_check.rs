//! `kinoite-zfs-operator cache-check`: may this akmods cache image be reused for these kernels
//! and inputs? Prints the verdict; exits 0 for any verdict (`reusable`, `stale`,
//! `missing_image`) and non-zero only when no verdict can be given (bad input, unauthorized,
//! unreachable, broken image).

use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

use super::common::{OutputFormat, RegistryArgs, ScanCacheArgs, log_scan_memory, write_output};
use crate::api::build::{CacheCheckMethod, CacheStatus};
use crate::pipeline::cache::{CacheInputs, CacheQuery, check_cache};
use crate::registry::{ImageRef, OciRegistry};

#[derive(Debug, Args)]
pub struct CacheCheckArgs {
    /// The akmods cache image, by tag or digest (fully qualified).
    #[arg(long, value_name = "REF")]
    pub image: String,

    /// A kernel release the cache must cover (`uname -r` form). Repeatable; at least one.
    #[arg(long = "kernel-release", value_name = "R", required = true)]
    pub kernel_releases: Vec<String>,

    /// ZFS minor line the cache must be built from (compared with the cache's label when it has one).
    #[arg(long, value_name = "V")]
    pub zfs_minor_version: Option<String>,

    /// akmods tooling commit (40 hex) the cache must be built from (compared with its label).
    #[arg(long, value_name = "SHA")]
    pub akmods_ref: Option<String>,

    /// Builder image digest (`sha256:...`) the cache must be built with (compared with its label).
    #[arg(long, value_name = "DIGEST")]
    pub builder_digest: Option<String>,

    #[command(flatten)]
    pub registry: RegistryArgs,

    #[command(flatten)]
    pub scan_cache: ScanCacheArgs,

    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Json)]
    pub output: OutputFormat,
}

/// The verdict as printed: the reference's cache-check outputs (R4.6) in snake_case.
#[derive(Debug, Serialize)]
struct Output {
    /// `reusable`, `stale` or `missing_image`.
    status: &'static str,
    missing_releases: Vec<String>,
    /// `NAME@sha256:...` when the image exists (the index digest for an index), else as given.
    source_image: String,
    /// `labels` or `layer_scan`; null when the image is missing.
    method: Option<&'static str>,
    /// Why it is not reusable; null when it is.
    reason: Option<String>,
    kernel_releases: Vec<String>,
    /// The `linux/amd64` image manifest that was read.
    platform_digest: Option<String>,
    /// Compressed layer bytes downloaded (0 when the labels decided).
    bytes_read: u64,
}

pub async fn run(args: &CacheCheckArgs) -> Result<ExitCode, super::Error> {
    let query = CacheQuery {
        image: ImageRef::parse(&args.image).map_err(crate::registry::Error::from)?,
        kernel_releases: args.kernel_releases.clone(),
        inputs: CacheInputs {
            zfs_minor_version: args.zfs_minor_version.clone(),
            akmods_ref: args.akmods_ref.clone(),
            builder_digest: args.builder_digest.clone(),
        },
    };
    let registry = OciRegistry::from_args(&args.registry)?;
    let memory = args.scan_cache.memory()?;
    let check = check_cache(&registry, &query, &memory).await?;
    log_scan_memory(&memory);
    let verdict = check.verdict;
    let output = Output {
        status: match verdict.status {
            CacheStatus::Reusable => "reusable",
            CacheStatus::Stale => "stale",
            CacheStatus::MissingImage => "missing_image",
        },
        missing_releases: verdict.missing_kernels,
        source_image: verdict.source_image,
        method: verdict.method.map(|m| match m {
            CacheCheckMethod::Labels => "labels",
            CacheCheckMethod::LayerScan => "layer_scan",
        }),
        reason: verdict.reason,
        kernel_releases: args.kernel_releases.clone(),
        platform_digest: check.platform_digest,
        bytes_read: check.bytes_read,
    };
    write_output(args.output, &output)?;
    Ok(ExitCode::SUCCESS)
}
