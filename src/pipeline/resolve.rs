//! Input resolution (R2.1–R2.11, replay R14): a run's floating references become immutable
//! inputs — base digest and `Name@Digest` pin, its kernel releases, the Fedora version, an
//! immutable date-stamped base tag proven equal to the digest, the builder pin, the ZFS minor
//! line and the akmods commit. The controller and `kinoite-zfs-operator resolve` both call
//! [`Resolver::resolve`].
//!
//! Differences from the reference, on purpose:
//! - kernel discovery streams the pinned base image's layers through the layer walker (merged
//!   `usr/lib/modules/<release>/` and `lib/modules/<release>/`, whiteouts and opaque directories
//!   honoured) instead of running the image; nothing is extracted and memory stays bounded;
//! - a scan's result is kept per image digest (immutable), so one process never scans the same
//!   base twice (the controller shares one [`Resolver`] across reconciles);
//! - registry answers stay classified (H5): a candidate tag counts as "no match" only when the
//!   registry says it is absent; unauthorized or unreachable answers fail the resolution.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use super::kernels;
use super::layers::{self, MergedView, scan_layers, scan_remembered};
use super::lock::{self, Lock};
use super::scan_memory::{Question, ScanMemory};
use super::tags::{self, TagPlan};
use crate::api::build::{KernelPolicy, ResolvedInputs};
use crate::registry::{self, ImageRef, RegistryClient, ResolvedImage, image_config, reference, resolve_image};

/// Label the reference requires on the base image (the booted kernel as the image builder saw it).
pub const KERNEL_LABEL: &str = "ostree.linux";
/// Label carrying the base image's stream version (`43.20260227.1`).
pub const VERSION_LABEL: &str = "org.opencontainers.image.version";

/// Distinct base images whose kernel lists are kept (one per nightly is a few KiB a year; the
/// bound only guards against a process that resolves unbounded distinct digests).
const SCAN_CACHE_CAPACITY: usize = 256;

/// Errors of input resolution. Messages of R2 and R14 are the reference's; registry failures
/// keep their class (see [`Error::registry_error`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Lock(#[from] lock::Error),
    #[error("ZFS minor version {0:?} is not MAJOR.MINOR (e.g. 2.4)")]
    ZfsMinorVersion(String),
    #[error("akmods ref {0:?} is not a full 40-hex commit (the akmods clone is verified against it exactly)")]
    AkmodsRef(String),
    #[error("{what}: {source}")]
    Reference {
        what: &'static str,
        #[source]
        source: reference::Error,
    },
    #[error("Failed to resolve base image digest for {reference}: {source}")]
    BaseImage {
        reference: String,
        #[source]
        source: Box<registry::Error>,
    },
    #[error("Failed to read ostree.linux label from {0}")]
    KernelLabel(String),
    #[error("kernel discovery in {image} failed: {source}")]
    Scan {
        image: String,
        #[source]
        source: Box<layers::Error>,
    },
    #[error("No installed kernel directories found in {0}")]
    NoKernels(String),
    #[error(transparent)]
    Kernels(#[from] kernels::Error),
    #[error(transparent)]
    Tags(#[from] tags::Error),
    #[error("Failed to look up candidate base tag {reference}: {source}")]
    TagLookup {
        reference: String,
        #[source]
        source: Box<registry::Error>,
    },
    #[error("Failed to resolve build container digest for {reference}: {source}")]
    Builder {
        reference: String,
        #[source]
        source: Box<registry::Error>,
    },
}

impl Error {
    /// The class of the registry answer behind this error, if any: it decides between waiting
    /// (transient), asking for credentials (unauthorized) and a permanent failure.
    pub fn class(&self) -> Option<registry::AnswerClass> {
        self.registry_error().and_then(registry::Error::class)
    }

    /// The registry failure behind this error, if any.
    pub fn registry_error(&self) -> Option<&registry::Error> {
        match self {
            Error::BaseImage { source, .. } | Error::TagLookup { source, .. } | Error::Builder { source, .. } => {
                Some(source)
            }
            Error::Scan { source, .. } => match &**source {
                layers::Error::Registry(source) => Some(source),
                _ => None,
            },
            _ => None,
        }
    }
}

/// What to resolve: the build's (or the command's) references, and an optional replay lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The base image to follow (ignored with a lock: the lock's `base_image` is replayed).
    pub base_image: String,
    /// The builder image; with a lock that names one, it must be exactly that (R14.3).
    pub builder_image: String,
    /// ZFS minor line (the fallback for a lock that leaves it empty, R14.4).
    pub zfs_minor_version: String,
    /// akmods commit (the fallback for a lock that leaves it empty).
    pub akmods_ref: String,
    pub lock: Option<Lock>,
}

/// The raw inputs of a run before any registry access (R2.1): from the request, or from the
/// lock in replay mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawInputs {
    pub base_image: String,
    pub builder_image: String,
    pub zfs_minor_version: String,
    pub akmods_ref: String,
    /// Where the replayed lock came from; `None` without a lock.
    pub lock_source: Option<String>,
}

/// R2.1 and R14.2–R14.4 (pure): picks the raw inputs and checks them before anything is asked
/// of a registry, so a bad lock fails before any work (F16).
pub fn select_inputs(request: &Request) -> Result<RawInputs, Error> {
    let raw = match &request.lock {
        None => RawInputs {
            base_image: request.base_image.clone(),
            builder_image: request.builder_image.clone(),
            zfs_minor_version: request.zfs_minor_version.clone(),
            akmods_ref: request.akmods_ref.clone(),
            lock_source: None,
        },
        Some(lock) => {
            lock.check_builder(&request.builder_image)?;
            RawInputs {
                base_image: lock.base_image.clone(),
                builder_image: request.builder_image.clone(),
                zfs_minor_version: lock.zfs_minor_version.clone().unwrap_or_else(|| request.zfs_minor_version.clone()),
                akmods_ref: lock.akmods_upstream_ref.clone().unwrap_or_else(|| request.akmods_ref.clone()),
                lock_source: Some(lock.source.clone()),
            }
        }
    };
    if !is_minor_version(&raw.zfs_minor_version) {
        return Err(Error::ZfsMinorVersion(raw.zfs_minor_version));
    }
    if !is_full_commit(&raw.akmods_ref) {
        return Err(Error::AkmodsRef(raw.akmods_ref));
    }
    Ok(raw)
}

fn is_minor_version(v: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    v.split_once('.').is_some_and(|(major, minor)| digits(major) && digits(minor))
}

fn is_full_commit(v: &str) -> bool {
    v.len() == 40 && v.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The kernel release a path names when it is a `(usr/)lib/modules/<release>` entry.
pub fn kernel_release_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("usr/").unwrap_or(path).strip_prefix("lib/modules/")?;
    (!rest.is_empty() && !rest.contains('/')).then_some(rest)
}

/// The kernel releases of a merged view: directories directly below `usr/lib/modules` or
/// `lib/modules` (`find -mindepth 1 -maxdepth 1 -type d`; a symlink is not a directory),
/// de-duplicated and natural-sorted (R2.5).
pub fn kernel_releases(view: &MergedView) -> Vec<String> {
    kernels::sort_releases(view.directories().filter_map(kernel_release_of))
}

/// Kernel discovery (R2.4) without a cache: streams every layer of `image` and returns its
/// sorted kernel releases (possibly none).
pub async fn discover_kernels<R: RegistryClient + ?Sized>(
    registry: &R,
    image: &ResolvedImage,
) -> Result<Vec<String>, layers::Error> {
    let view = scan_layers(registry, &image.reference, image.layers(), |p| kernel_release_of(p).is_some()).await?;
    log_kernel_scan(image, &view);
    Ok(kernel_releases(&view))
}

fn log_kernel_scan(image: &ResolvedImage, view: &MergedView) {
    tracing::debug!(
        image = %image.platform_pinned(),
        layers = view.layers_scanned(),
        remembered = view.layers_remembered(),
        bytes = view.bytes_read(),
        entries = view.entries_seen(),
        "kernel directories scanned"
    );
}

/// `Newest` keeps only the primary kernel in `kernel_releases` (the newer reference repo's
/// policy, N4): the set the cache decision, the akmods Job and verification then use.
pub fn apply_kernel_policy(mut inputs: ResolvedInputs, policy: KernelPolicy) -> ResolvedInputs {
    if policy == KernelPolicy::Newest && !inputs.kernel_release.is_empty() {
        inputs.kernel_releases = vec![inputs.kernel_release.clone()];
    }
    inputs
}

type ScanCell = Arc<OnceCell<Arc<[String]>>>;

#[derive(Default)]
struct ScanCache {
    cells: HashMap<String, ScanCell>,
    order: VecDeque<String>,
}

/// Resolves run inputs and remembers kernel scans per image digest, and per layer in its scan
/// memory (a new base that shares layers with an earlier one reads only the new layers). One per
/// process: share it (`Arc<Resolver>`) between reconciles and registry clients.
#[derive(Default)]
pub struct Resolver {
    cache: Mutex<ScanCache>,
    scans: AtomicU64,
    memory: Arc<ScanMemory>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let cached = self.cache.lock().map(|c| c.cells.len()).unwrap_or_default();
        f.debug_struct("Resolver").field("cached_scans", &cached).field("scans", &self.scans()).finish()
    }
}

impl Resolver {
    /// A resolver with a scan memory of its own.
    pub fn new() -> Resolver {
        Resolver::default()
    }

    /// A resolver that remembers layer scans in `memory` (the process's one, shared with
    /// verification and the cache scan).
    pub fn with_memory(memory: Arc<ScanMemory>) -> Resolver {
        Resolver { memory, ..Resolver::default() }
    }

    /// The scan memory this resolver uses.
    pub fn memory(&self) -> &Arc<ScanMemory> {
        &self.memory
    }

    /// Layer scans this resolver has run (a cached digest never adds one).
    pub fn scans(&self) -> u64 {
        self.scans.load(Ordering::Relaxed)
    }

    /// The kernel releases of `image`, scanned at most once per platform image digest. The
    /// digest names the exact layers, so the answer holds whichever repository or credentials
    /// ask; concurrent callers for the same digest wait for one scan, and a failed scan is not
    /// remembered (the next caller scans again).
    pub async fn kernels<R: RegistryClient + ?Sized>(
        &self,
        registry: &R,
        image: &ResolvedImage,
    ) -> Result<Arc<[String]>, layers::Error> {
        let cell = self.cell(&image.digest);
        let kernels = cell
            .get_or_try_init(|| async {
                self.scans.fetch_add(1, Ordering::Relaxed);
                let view = scan_remembered(registry, &image.reference, image.layers(), Question::Kernels, &self.memory)
                    .await?;
                log_kernel_scan(image, &view);
                Ok::<_, layers::Error>(Arc::from(kernel_releases(&view)))
            })
            .await?;
        Ok(kernels.clone())
    }

    fn cell(&self, digest: &str) -> ScanCell {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(cell) = cache.cells.get(digest) {
            return cell.clone();
        }
        if cache.cells.len() >= SCAN_CACHE_CAPACITY
            && let Some(oldest) = cache.order.pop_front()
        {
            cache.cells.remove(&oldest);
        }
        let cell = ScanCell::default();
        cache.cells.insert(digest.to_string(), cell.clone());
        cache.order.push_back(digest.to_string());
        cell
    }

    /// Resolves a run's inputs (R2.2–R2.10, R14). Cheap registry reads come first (base
    /// manifest and labels, builder pin), then the kernel scan, then tag selection.
    pub async fn resolve<R: RegistryClient + ?Sized>(
        &self,
        registry: &R,
        request: &Request,
    ) -> Result<ResolvedInputs, Error> {
        let raw = select_inputs(request)?;
        let base_ref =
            ImageRef::parse(&raw.base_image).map_err(|source| Error::Reference { what: "base image", source })?;
        let builder_ref =
            ImageRef::parse(&raw.builder_image).map_err(|source| Error::Reference { what: "builder image", source })?;

        // R2.2, R2.3: the base by digest and its labels.
        let base_error = |source| Error::BaseImage { reference: raw.base_image.clone(), source: Box::new(source) };
        let base = resolve_image(registry, &base_ref).await.map_err(base_error)?;
        let config = image_config(registry, &base).await.map_err(base_error)?;
        let label_kernel = config.labels.get(KERNEL_LABEL).filter(|v| !v.is_empty()).cloned();
        let label_kernel = label_kernel.ok_or_else(|| Error::KernelLabel(raw.base_image.clone()))?;
        let version_label = config.labels.get(VERSION_LABEL).cloned().unwrap_or_default();
        let base_name = base_ref.name();
        let base_digest = base.top_digest().to_string();
        let base_pinned = base.pinned();

        // R2.9: the builder pin (an index pins by its own digest, like the base).
        let builder_error = |source| Error::Builder { reference: raw.builder_image.clone(), source: Box::new(source) };
        let builder = resolve_image(registry, &builder_ref).await.map_err(builder_error)?;

        // R2.4, R2.5, R2.7.
        let kernels = self
            .kernels(registry, &base)
            .await
            .map_err(|source| Error::Scan { image: base_pinned.clone(), source: Box::new(source) })?;
        let kernel_release = kernels::newest(&kernels).map_err(|_| Error::NoKernels(base_pinned.clone()))?.to_string();
        let fedora_version = kernels::fedora_version(&kernel_release)?;

        // R2.8: an immutable tag proven to point at the base digest.
        let plan = tags::plan(tags::source_tag(&raw.base_image), &version_label, &fedora_version)?;
        let mut chosen = None;
        for tag in plan.tags() {
            if self.tag_digest(registry, &base_ref, tag).await?.as_deref() == Some(base_digest.as_str()) {
                chosen = Some(tag.clone());
                break;
            }
        }
        let base_tag = match (&plan, chosen) {
            (_, Some(tag)) => tag,
            // A date-stamped source tag is used as it is; the re-check below proves it.
            (TagPlan::Fixed(tag), None) => tag.clone(),
            (TagPlan::Candidates(tried), None) => {
                return Err(tags::Error::NoMatch { digest: base_digest, tried: tried.clone() }.into());
            }
        };
        if self.tag_digest(registry, &base_ref, &base_tag).await?.as_deref() != Some(base_digest.as_str()) {
            return Err(tags::Error::Recheck { name: base_name, tag: base_tag, digest: base_digest }.into());
        }

        let inputs = ResolvedInputs {
            use_input_lock: raw.lock_source.is_some(),
            lock_file_path: raw.lock_source.clone().unwrap_or_default(),
            fedora_version,
            kernel_release,
            kernel_releases: kernels.to_vec(),
            base_image_ref: raw.base_image.clone(),
            base_image_name: base_name,
            base_image_tag: base_tag,
            base_image_pinned: base_pinned,
            base_image_digest: base_digest,
            build_container_ref: raw.builder_image.clone(),
            build_container_pinned: builder.pinned(),
            build_container_digest: builder.top_digest().to_string(),
            zfs_minor_version: raw.zfs_minor_version,
            akmods_upstream_ref: raw.akmods_ref,
        };
        log_resolved(&inputs, &label_kernel, plan.tags());
        Ok(inputs)
    }

    /// The digest `name:tag` points at; `None` only when the registry says it is absent (H5:
    /// every other failure is an error, never "no match").
    async fn tag_digest<R: RegistryClient + ?Sized>(
        &self,
        registry: &R,
        base: &ImageRef,
        tag: &str,
    ) -> Result<Option<String>, Error> {
        let reference = base.with_tag(tag).map_err(|source| Error::Reference { what: "candidate base tag", source })?;
        match registry.resolve_digest(&reference).await {
            Ok(digest) => Ok(Some(digest)),
            Err(err) if err.is_absent() => Ok(None),
            Err(source) => Err(Error::TagLookup { reference: reference.to_string(), source: Box::new(source) }),
        }
    }
}

/// The reference's summary lines, including the R2.6 label/directory mismatch (a warning, not a
/// failure: the directories are the source of truth).
fn log_resolved(inputs: &ResolvedInputs, label_kernel: &str, candidate_tags: &[String]) {
    tracing::info!("Resolved base image: {}", inputs.base_image_pinned);
    tracing::info!("Resolved base image tag: {}:{}", inputs.base_image_name, inputs.base_image_tag);
    tracing::info!("Resolved build container: {}", inputs.build_container_pinned);
    if label_kernel != inputs.kernel_release {
        tracing::warn!(
            "Base image label/kernel directory mismatch: label={label_kernel} newest_dir={}",
            inputs.kernel_release
        );
    }
    tracing::info!("Kernel release: {}", inputs.kernel_release);
    tracing::info!("Kernel releases in base image: {}", inputs.kernel_releases.join(" "));
    tracing::info!("Fedora version: {}", inputs.fedora_version);
    tracing::info!("ZFS minor version: {}", inputs.zfs_minor_version);
    tracing::info!("Base-tag candidates checked: {}", candidate_tags.join(" "));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::build::{DEFAULT_AKMODS_REVISION, DEFAULT_BASE_IMAGE, DEFAULT_BUILDER_IMAGE};
    use crate::pipeline::layers::{Compression, LayerMerger};
    use crate::test_support::resolved_inputs;

    fn request(lock: Option<Lock>) -> Request {
        Request {
            base_image: DEFAULT_BASE_IMAGE.into(),
            builder_image: DEFAULT_BUILDER_IMAGE.into(),
            zfs_minor_version: "2.4".into(),
            akmods_ref: DEFAULT_AKMODS_REVISION.into(),
            lock,
        }
    }

    fn lock(json: &str) -> Lock {
        lock::parse(json, "ci/inputs.lock.json").unwrap()
    }

    #[test]
    fn without_a_lock_the_request_is_used() {
        let raw = select_inputs(&request(None)).unwrap();
        assert_eq!(raw.base_image, DEFAULT_BASE_IMAGE);
        assert_eq!(raw.lock_source, None);
    }

    #[test]
    fn a_lock_replays_its_values_with_fallbacks() {
        let l = lock(
            r#"{"base_image": "ghcr.io/a/b@sha256:1111111111111111111111111111111111111111111111111111111111111111", "zfs_minor_version": "2.3"}"#,
        );
        let raw = select_inputs(&request(Some(l))).unwrap();
        assert!(raw.base_image.starts_with("ghcr.io/a/b@sha256:1111"));
        assert_eq!(raw.zfs_minor_version, "2.3");
        assert_eq!(raw.akmods_ref, DEFAULT_AKMODS_REVISION, "empty lock fields fall back (R14.4)");
        assert_eq!(raw.builder_image, DEFAULT_BUILDER_IMAGE);
        assert_eq!(raw.lock_source.as_deref(), Some("ci/inputs.lock.json"));

        let l = lock(r#"{"base_image": "ghcr.io/a/b:1", "build_container": "ghcr.io/x/y:2"}"#);
        let err = select_inputs(&request(Some(l))).unwrap_err();
        assert!(err.to_string().starts_with("Replay mismatch: build container input (ghcr.io/ublue-os/devcontainer:latest) does not match lock file (ghcr.io/x/y:2)."), "{err}");
    }

    #[test]
    fn zfs_line_and_akmods_commit_are_checked() {
        let mut r = request(None);
        r.zfs_minor_version = "2".into();
        assert_eq!(select_inputs(&r).unwrap_err().to_string(), "ZFS minor version \"2\" is not MAJOR.MINOR (e.g. 2.4)");
        let mut r = request(None);
        r.akmods_ref = "main".into();
        assert!(matches!(select_inputs(&r), Err(Error::AkmodsRef(_))));
        let l = lock(r#"{"base_image": "ghcr.io/a/b:1", "akmods_upstream_ref": "9D13B69"}"#);
        assert!(matches!(select_inputs(&request(Some(l))), Err(Error::AkmodsRef(_))));
    }

    fn tar(entries: &[(&str, tar::EntryType)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, kind) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(*kind);
            header.set_size(0);
            header.set_mode(0o755);
            if *kind == tar::EntryType::Symlink {
                header.set_link_name("usr/lib").unwrap();
            }
            builder.append_data(&mut header, path, std::io::empty()).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn kernel_directories_from_both_module_trees() {
        use tar::EntryType::{Directory, Regular, Symlink};
        let mut merger = LayerMerger::new(Arc::new(|p: &str| kernel_release_of(p).is_some()));
        let layers = [
            tar(&[
                ("usr/lib/modules/6.18.10-200.fc43.x86_64", Directory),
                ("usr/lib/modules/6.18.9-200.fc43.x86_64/vmlinuz", Regular),
                ("lib/modules/6.17.1-100.fc42.x86_64", Directory),
                ("usr/lib/modules/not-a-dir", Regular),
                ("usr/lib/modules/a-link", Symlink),
                ("usr/lib/modules/6.18.10-200.fc43.x86_64/extra/zfs/zfs.ko", Regular),
            ]),
            tar(&[
                ("usr/lib/modules/.wh.6.18.9-200.fc43.x86_64", Regular),
                ("lib/modules/6.18.10-200.fc43.x86_64", Directory),
            ]),
        ];
        for layer in layers {
            merger.apply_layer(Compression::None, layer.as_slice()).unwrap();
        }
        let view = merger.finish(0);
        assert_eq!(kernel_releases(&view), ["6.17.1-100.fc42.x86_64", "6.18.10-200.fc43.x86_64"]);
        assert_eq!(kernel_release_of("usr/lib/modules"), None);
        assert_eq!(kernel_release_of("usr/lib/modules/x/y"), None);
        assert_eq!(kernel_release_of("lib/modules/x"), Some("x"));
        assert_eq!(kernel_release_of("opt/lib/modules/x"), None);
    }

    #[test]
    fn newest_policy_keeps_only_the_primary_kernel() {
        let all = resolved_inputs();
        assert_eq!(apply_kernel_policy(all.clone(), KernelPolicy::All), all);
        let newest = apply_kernel_policy(all.clone(), KernelPolicy::Newest);
        assert_eq!(newest.kernel_releases, std::slice::from_ref(&all.kernel_release));
        assert_eq!(newest.kernel_release, all.kernel_release);
    }

    #[test]
    fn scan_cache_is_bounded() {
        let resolver = Resolver::new();
        for i in 0..SCAN_CACHE_CAPACITY + 10 {
            resolver.cell(&format!("sha256:{i}"));
        }
        let cache = resolver.cache.lock().unwrap();
        assert_eq!(cache.cells.len(), SCAN_CACHE_CAPACITY);
        assert!(!cache.cells.contains_key("sha256:0"), "the oldest entry goes first");
    }
}
