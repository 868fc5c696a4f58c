//! `kinoite-zfs-operator resolve`: resolves a run's inputs from the registries (or replays a
//! lock) with the controller's resolver, and prints the reference build-inputs JSON
//! (`schema_version`, `generated_at`, `inputs`) on stdout.
//!
//! Exit codes: 0 resolved; 1 the inputs cannot be resolved as given (bad lock, image or tag not
//! found, missing label, no kernels, ...); 2 usage; 3 a registry refused the credentials
//! (unauthorized); 4 a registry was unreachable or rate limited (try again later). The reason is
//! one line on stderr.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use k8s_openapi::jiff::Timestamp;

use super::common::{OutputFormat, RegistryArgs, ScanCacheArgs, log_scan_memory, write_output};
use crate::api::build::{
    DEFAULT_AKMODS_REVISION, DEFAULT_BASE_IMAGE, DEFAULT_BUILDER_IMAGE, DEFAULT_ZFS_MINOR_VERSION, KernelPolicy,
};
use crate::pipeline::lock;
use crate::pipeline::records::ResolvedDocument;
use crate::pipeline::resolve::{self, Request, Resolver, apply_kernel_policy};
use crate::registry::{self, AnswerClass, OciRegistry};

/// Errors of `resolve`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Lock(#[from] lock::Error),
    #[error(
        "--base-image {flag} differs from the lock's base_image {lock}: with --lock the lock's base image is replayed (drop --base-image)"
    )]
    BaseConflict { flag: String, lock: String },
    #[error(transparent)]
    Registry(#[from] registry::Error),
    #[error(transparent)]
    Resolve(#[from] resolve::Error),
}

impl Error {
    /// The process exit code (see the module documentation).
    pub fn exit_code(&self) -> u8 {
        let answer = match self {
            Error::Resolve(err) => err.class(),
            Error::Registry(err) => err.class(),
            _ => None,
        };
        match answer {
            Some(AnswerClass::Unauthorized) => 3,
            Some(class) if class.is_transient() => 4,
            _ => 1,
        }
    }
}

/// Which kernels need ZFS (`spec.kernels`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Kernels {
    /// Every kernel directory of the base image.
    #[default]
    All,
    /// Only the newest kernel (`kernel_releases` then holds just `kernel_release`).
    Newest,
}

#[derive(Debug, Args)]
pub struct ResolveArgs {
    /// Base image to follow, fully qualified (`host/path:tag` or `host/path@sha256:...`).
    /// Default: ghcr.io/ublue-os/kinoite-main:latest. With --lock the lock's base_image is used.
    #[arg(long, value_name = "REF")]
    pub base_image: Option<String>,

    /// Builder image, fully qualified. Default: the lock's build_container with --lock, else
    /// ghcr.io/ublue-os/devcontainer:latest. With a lock that names one, it must be exactly that.
    #[arg(long, value_name = "REF")]
    pub builder_image: Option<String>,

    /// ZFS minor line (MAJOR.MINOR). With --lock, used only when the lock leaves it empty.
    #[arg(long, value_name = "V", default_value = DEFAULT_ZFS_MINOR_VERSION)]
    pub zfs_minor_version: String,

    /// akmods tooling commit (full 40-hex). With --lock, used only when the lock leaves it empty.
    #[arg(long, value_name = "SHA", default_value = DEFAULT_AKMODS_REVISION)]
    pub akmods_ref: String,

    /// Replay lock file in the reference format (base_image, build_container,
    /// zfs_minor_version, akmods_upstream_ref): resolve exactly these inputs.
    #[arg(long, value_name = "FILE")]
    pub lock: Option<PathBuf>,

    /// Which kernels need ZFS, as `spec.kernels` of a ZfsImageBuild.
    #[arg(long, value_enum, default_value_t = Kernels::All)]
    pub kernels: Kernels,

    #[command(flatten)]
    pub registry: RegistryArgs,

    #[command(flatten)]
    pub scan_cache: ScanCacheArgs,

    /// Output format (JSON is the reference's build-inputs layout).
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Json)]
    pub output: OutputFormat,
}

/// The resolver's request for these arguments (pure; reads the lock file).
pub fn request(args: &ResolveArgs) -> Result<Request, Error> {
    let lock = args.lock.as_deref().map(lock::read_file).transpose()?;
    if let (Some(lock), Some(flag)) = (&lock, &args.base_image)
        && *flag != lock.base_image
    {
        return Err(Error::BaseConflict { flag: flag.clone(), lock: lock.base_image.clone() });
    }
    let builder_image = args
        .builder_image
        .clone()
        .or_else(|| lock.as_ref().and_then(|l| l.build_container.clone()))
        .unwrap_or_else(|| DEFAULT_BUILDER_IMAGE.to_string());
    Ok(Request {
        base_image: args.base_image.clone().unwrap_or_else(|| DEFAULT_BASE_IMAGE.to_string()),
        builder_image,
        zfs_minor_version: args.zfs_minor_version.clone(),
        akmods_ref: args.akmods_ref.clone(),
        lock,
    })
}

pub async fn run(args: &ResolveArgs) -> Result<ExitCode, super::Error> {
    let request = request(args)?;
    let registry = OciRegistry::from_args(&args.registry).map_err(Error::from)?;
    let resolver = Resolver::with_memory(std::sync::Arc::new(args.scan_cache.memory()?));
    let inputs = resolver.resolve(&registry, &request).await.map_err(Error::from)?;
    log_scan_memory(resolver.memory());
    let policy = match args.kernels {
        Kernels::All => KernelPolicy::All,
        Kernels::Newest => KernelPolicy::Newest,
    };
    let inputs = apply_kernel_policy(inputs, policy);
    write_output(args.output, &ResolvedDocument::new(&inputs, Timestamp::now()))?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(lock: Option<PathBuf>) -> ResolveArgs {
        ResolveArgs {
            base_image: None,
            builder_image: None,
            zfs_minor_version: DEFAULT_ZFS_MINOR_VERSION.into(),
            akmods_ref: DEFAULT_AKMODS_REVISION.into(),
            lock,
            kernels: Kernels::All,
            registry: RegistryArgs::default(),
            scan_cache: ScanCacheArgs::default(),
            output: OutputFormat::Json,
        }
    }

    #[test]
    fn defaults_are_the_crd_defaults() {
        let r = request(&args(None)).unwrap();
        assert_eq!((r.base_image.as_str(), r.builder_image.as_str()), (DEFAULT_BASE_IMAGE, DEFAULT_BUILDER_IMAGE));
        assert!(r.lock.is_none());
    }

    #[test]
    fn with_a_lock_its_builder_is_the_default_and_the_base_may_not_differ() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inputs.lock.json");
        std::fs::write(&path, r#"{"base_image": "ghcr.io/a/b:43-20260227", "build_container": "ghcr.io/a/c:1"}"#)
            .unwrap();
        let r = request(&args(Some(path.clone()))).unwrap();
        assert_eq!(r.builder_image, "ghcr.io/a/c:1");
        assert_eq!(r.lock.as_ref().unwrap().source, path.display().to_string());

        let mut same = args(Some(path.clone()));
        same.base_image = Some("ghcr.io/a/b:43-20260227".into());
        assert!(request(&same).is_ok());
        let mut other = args(Some(path));
        other.base_image = Some("ghcr.io/a/b:latest".into());
        let err = request(&other).unwrap_err();
        assert!(matches!(err, Error::BaseConflict { .. }));
        assert_eq!(err.exit_code(), 1);
    }

    #[test]
    fn missing_lock_file() {
        let err = request(&args(Some("/nonexistent/lock.json".into()))).unwrap_err();
        assert_eq!(err.to_string(), "Replay lock file not found: /nonexistent/lock.json");
    }
}
