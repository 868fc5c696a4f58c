//! `kinoite-zfs-operator verify`: does the candidate image (by digest) carry ZFS for these
//! kernels? Prints the verdict. Exit 0: verified; 1: not verified (the verdict with
//! `"verified": false` on stdout, the reason on stderr); 2: no verdict (bad input, registry
//! failure; the error on stderr).

use std::process::ExitCode;

use clap::Args;
use serde::Serialize;

use super::common::{OutputFormat, RegistryArgs, ScanCacheArgs, log_scan_memory, write_output};
use crate::pipeline::verify::{Scope, VerifyQuery, verify};
use crate::registry::{ImageRef, OciRegistry};

/// Exit code of a completed verification that failed.
pub const EXIT_NOT_VERIFIED: u8 = 1;

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The candidate image: `NAME@sha256:...`, or a tag that is resolved once (then only the
    /// digest is used).
    #[arg(long, value_name = "REF")]
    pub image: String,

    /// A kernel release that must have `zfs.ko` (`uname -r` form). Repeatable; at least one.
    #[arg(long = "kernel-release", value_name = "R", required = true)]
    pub kernel_releases: Vec<String>,

    /// The base image the candidate was built on, pinned by digest: only the layers the
    /// candidate adds on top of it are downloaded.
    #[arg(long, value_name = "REF@DIGEST")]
    pub base_image: Option<String>,

    #[command(flatten)]
    pub registry: RegistryArgs,

    #[command(flatten)]
    pub scan_cache: ScanCacheArgs,

    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Json)]
    pub output: OutputFormat,
}

/// The verdict as printed (R10.7 outputs in snake_case, plus what was read).
#[derive(Debug, Serialize)]
struct Output {
    verified: bool,
    /// `NAME@sha256:...` (the index digest for an index).
    candidate_image_ref: String,
    candidate_image_digest: String,
    /// The `linux/amd64` image manifest that was checked (equal to the candidate digest unless
    /// the candidate is an index).
    candidate_platform_digest: String,
    /// Kernels whose ZFS module was found.
    kernel_releases: Vec<String>,
    missing_kernel_releases: Vec<String>,
    /// Commands found.
    commands: Vec<String>,
    missing_commands: Vec<String>,
    /// Compressed layer bytes downloaded.
    bytes_read: u64,
    scan: ScanOutput,
    /// What is missing; null when verified.
    message: Option<String>,
}

#[derive(Debug, Serialize)]
struct ScanOutput {
    /// `delta` (only the layers above the base) or `full`.
    mode: &'static str,
    base_image: Option<String>,
    base_layers: usize,
    layers_scanned: usize,
    layers_total: usize,
    /// Why a given base could not be used.
    note: Option<String>,
}

pub async fn run(args: &VerifyArgs) -> Result<ExitCode, super::Error> {
    let parse = |r: &str| ImageRef::parse(r).map_err(crate::registry::Error::from);
    let query = VerifyQuery {
        image: parse(&args.image)?,
        kernel_releases: args.kernel_releases.clone(),
        base_image: args.base_image.as_deref().map(parse).transpose()?,
    };
    let registry = OciRegistry::from_args(&args.registry)?;
    let memory = args.scan_cache.memory()?;
    let v = verify(&registry, &query, &memory).await?;
    log_scan_memory(&memory);
    let (mode, base_image, base_layers, note) = match v.scope {
        Scope::Delta { base, base_layers } => ("delta", Some(base), base_layers, None),
        Scope::Full { reason } => ("full", None, 0, reason),
    };
    let output = Output {
        verified: v.verified,
        candidate_image_ref: v.image_ref,
        candidate_image_digest: v.image_digest,
        candidate_platform_digest: v.platform_digest,
        kernel_releases: v.kernel_releases,
        missing_kernel_releases: v.missing_kernel_releases,
        commands: v.commands,
        missing_commands: v.missing_commands,
        bytes_read: v.bytes_read,
        scan: ScanOutput {
            mode,
            base_image,
            base_layers,
            layers_scanned: v.layers_scanned,
            layers_total: v.layers_total,
            note,
        },
        message: v.message,
    };
    write_output(args.output, &output)?;
    match &output.message {
        None => Ok(ExitCode::SUCCESS),
        Some(message) => {
            eprintln!("verification failed: {message}");
            Ok(ExitCode::from(EXIT_NOT_VERIFIED))
        }
    }
}
