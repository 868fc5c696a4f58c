//! The akmods cache decision (R4, with hazards H5 and H11 fixed): may this cache image be reused
//! for these kernel releases and these inputs?
//!
//! 1. The image is resolved (an index to its `linux/amd64` image). Only a real "absent" answer
//!    for the reference itself is `MissingImage`; unauthorized, rate-limited, unreachable or a
//!    broken image is an error, never a verdict (H5).
//! 2. Coverage from the cache labels of §2.6 when they are usable (format `"1"` and a non-empty
//!    kernel list): no layer is downloaded (method `Labels`). Otherwise the layers are streamed
//!    and a kernel is covered when `rpms/kmods/zfs/kmod-zfs-<release>-<version>.rpm` exists in
//!    the merged view (method `LayerScan`; exact release match).
//! 3. Our own caches also carry labels for the inputs they were built from (ZFS minor line,
//!    akmods commit, builder digest). A label that is present and differs from the requested
//!    input makes the cache `Stale` with that reason, whatever the coverage (the reference
//!    reused such caches).
//!
//! The verdict names the method (labels trust what the pipeline wrote, a scan checks content:
//! H11 asks to record which) and the image by digest, which is what a build then uses.
//!
//! [`confirm_by_content`] is the same decision with step 2 always a layer scan: it confirms an
//! image an akmods Job just pushed, whose labels that Job wrote itself (H11: the labels are the
//! claim being checked, so they cannot be the evidence).

use std::collections::{BTreeMap, BTreeSet};

use crate::api::build::{CacheCheckMethod, CacheStatus};
use crate::pipeline::kernels;
use crate::pipeline::layers::{self, MergedView, scan_remembered};
use crate::pipeline::scan_memory::{Question, ScanMemory};
use crate::registry::{self, AnswerClass, ImageRef, RegistryClient, image_config, resolve_fetched};

/// Label keys of akmods cache images. The first two are the reference's (§2.6); the input labels
/// are ours, written by the akmods Job next to them (docs/api.md).
pub mod labels {
    /// Cache metadata format; only [`FORMAT_VERSION`] is understood.
    pub const CACHE_FORMAT: &str = "io.github.danathar.kinoite-zfs.akmods.cache-format";
    /// Space-separated, natural-sorted kernel releases the cache holds kmods for.
    pub const KERNEL_RELEASES: &str = "io.github.danathar.kinoite-zfs.akmods.kernel-releases";
    /// ZFS minor line the kmods were built from (e.g. `2.4`).
    pub const ZFS_MINOR_VERSION: &str = "io.github.danathar.kinoite-zfs.akmods.zfs-minor-version";
    /// Full 40-hex commit of the akmods tooling that built the cache.
    pub const AKMODS_REF: &str = "io.github.danathar.kinoite-zfs.akmods.akmods-ref";
    /// Digest (`sha256:...`) of the builder image the cache was built in.
    pub const BUILDER_DIGEST: &str = "io.github.danathar.kinoite-zfs.akmods.builder-digest";
    /// The value of [`CACHE_FORMAT`] this code reads.
    pub const FORMAT_VERSION: &str = "1";
}

/// Where kmod RPMs live inside a cache image.
const RPM_DIR: &str = "rpms/kmods/zfs/";

/// Errors of the cache decision: no verdict can be given.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the cache decision needs at least one kernel release")]
    NoKernels,
    #[error(transparent)]
    Kernel(#[from] kernels::Error),
    #[error("invalid --{flag} {value:?}: {expected}")]
    Input { flag: &'static str, value: String, expected: &'static str },
    /// A registry answer other than "absent" for the image itself (or any answer for its parts).
    #[error("cannot decide on akmods cache {image}: {source}")]
    Registry {
        image: String,
        #[source]
        source: Box<registry::Error>,
    },
    #[error("cannot decide on akmods cache {image}: {source}")]
    Scan {
        image: String,
        #[source]
        source: Box<layers::Error>,
    },
}

impl Error {
    /// The class of the registry answer behind the error, when it was one (`None` for bad input
    /// and unusable content, which no retry fixes).
    pub fn class(&self) -> Option<AnswerClass> {
        match self {
            Error::Registry { source, .. } => source.class(),
            Error::Scan { source, .. } => match source.as_ref() {
                layers::Error::Registry(source) => source.class(),
                _ => None,
            },
            _ => None,
        }
    }
}

/// What a build needs from the cache: kernels and, when known, the inputs it must be built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheQuery {
    /// The cache image, by tag or digest.
    pub image: ImageRef,
    /// Required kernel releases (at least one).
    pub kernel_releases: Vec<String>,
    pub inputs: CacheInputs,
}

/// Requested inputs; `None` (or empty) skips that comparison.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheInputs {
    pub zfs_minor_version: Option<String>,
    pub akmods_ref: Option<String>,
    pub builder_digest: Option<String>,
}

impl CacheInputs {
    /// Checks the formats, so a typo is an error rather than a cache that is always stale.
    pub fn validate(&self) -> Result<(), Error> {
        let given = |v: &Option<String>| v.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_string);
        if let Some(v) = given(&self.zfs_minor_version) {
            let ok = v.split_once('.').is_some_and(|(a, b)| {
                !a.is_empty() && !b.is_empty() && a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit())
            });
            if !ok {
                return Err(Error::Input { flag: "zfs-minor-version", value: v, expected: "MAJOR.MINOR, e.g. 2.4" });
            }
        }
        if let Some(v) = given(&self.akmods_ref)
            && !(v.len() == 40 && v.bytes().all(|c| c.is_ascii_hexdigit()))
        {
            return Err(Error::Input { flag: "akmods-ref", value: v, expected: "a full 40-hex commit" });
        }
        if let Some(v) = given(&self.builder_digest)
            && registry::validate_digest(&v).is_err()
        {
            return Err(Error::Input {
                flag: "builder-digest",
                value: v,
                expected: "sha256: followed by 64 lowercase hex digits",
            });
        }
        Ok(())
    }
}

/// A cache verdict: what `cache-check` prints and what the planner records as the run's akmods
/// decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheVerdict {
    pub status: CacheStatus,
    /// Required kernels the cache does not cover (all of them when the image is missing).
    pub missing_kernels: Vec<String>,
    /// How coverage was decided; `None` when the image is missing.
    pub method: Option<CacheCheckMethod>,
    /// The checked image by digest (`NAME@sha256:...`, the index digest for an index) when it
    /// exists, else as requested.
    pub source_image: String,
    /// Why it is not reusable (missing kernels, other inputs, absent image).
    pub reason: Option<String>,
}

/// A verdict and what it cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheCheck {
    pub verdict: CacheVerdict,
    /// Digest of the `linux/amd64` image manifest that was read (`None` when missing).
    pub platform_digest: Option<String>,
    /// Compressed layer bytes downloaded (0 on the labels path).
    pub bytes_read: u64,
}

/// Decides whether the cache image covers the query (see the module docs); layers `memory`
/// remembers are not read again.
pub async fn check_cache<R: RegistryClient + ?Sized>(
    registry: &R,
    query: &CacheQuery,
    memory: &ScanMemory,
) -> Result<CacheCheck, Error> {
    check(registry, query, memory, Coverage::LabelsWhenUsable).await
}

/// Decides as [`check_cache`], with coverage always from the layers (method `LayerScan`), never
/// from the labels; the labels' inputs are still compared. A kernel the labels claim but the
/// layers lack is named in the reason.
pub async fn confirm_by_content<R: RegistryClient + ?Sized>(
    registry: &R,
    query: &CacheQuery,
    memory: &ScanMemory,
) -> Result<CacheCheck, Error> {
    check(registry, query, memory, Coverage::Content).await
}

/// Where coverage comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coverage {
    /// The cache labels when they are usable, else the layers (R4.4, R4.5).
    LabelsWhenUsable,
    /// The layers only.
    Content,
}

async fn check<R: RegistryClient + ?Sized>(
    registry: &R,
    query: &CacheQuery,
    memory: &ScanMemory,
    coverage: Coverage,
) -> Result<CacheCheck, Error> {
    if query.kernel_releases.is_empty() {
        return Err(Error::NoKernels);
    }
    for release in &query.kernel_releases {
        kernels::check_release(release)?;
    }
    query.inputs.validate()?;
    let image = &query.image;
    let registry_error =
        |source: registry::Error| Error::Registry { image: image.to_string(), source: Box::new(source) };

    let top = match registry.manifest(image).await {
        Ok(top) => top,
        Err(err) if err.is_absent() => {
            return Ok(CacheCheck {
                verdict: missing_image(query, &err.to_string()),
                platform_digest: None,
                bytes_read: 0,
            });
        }
        Err(err) => return Err(registry_error(err)),
    };
    // From here on "absent" is a broken image (an index entry or config blob that is gone), not
    // a missing cache: an error like any other.
    let resolved = resolve_fetched(registry, image, top).await.map_err(registry_error)?;
    let config = image_config(registry, &resolved).await.map_err(registry_error)?;
    let source_image = resolved.pinned();

    let claimed = label_coverage(&config.labels);
    let trusted = claimed.clone().filter(|_| coverage == Coverage::LabelsWhenUsable);
    let (covered, method, bytes_read) = match trusted {
        Some(covered) => (covered, CacheCheckMethod::Labels, 0),
        None => {
            let view = scan_remembered(registry, &resolved.reference, resolved.layers(), Question::CacheScan, memory)
                .await
                .map_err(|source| Error::Scan { image: image.to_string(), source: Box::new(source) })?;
            let covered = scan_coverage(&view, &query.kernel_releases);
            (covered, CacheCheckMethod::LayerScan, view.bytes_read())
        }
    };
    let mut mismatches = input_mismatches(&config.labels, &query.inputs);
    if coverage == Coverage::Content {
        mismatches.extend(false_claims(claimed.as_ref(), &covered, &query.kernel_releases));
    }
    let verdict = decide(&query.kernel_releases, &covered, method, &mismatches, source_image);
    tracing::info!(
        image = %image, status = ?verdict.status, method = ?method, bytes_read,
        missing = %verdict.missing_kernels.join(" "), "akmods cache decision"
    );
    Ok(CacheCheck { verdict, platform_digest: Some(resolved.digest.clone()), bytes_read })
}

fn missing_image(query: &CacheQuery, detail: &str) -> CacheVerdict {
    CacheVerdict {
        status: CacheStatus::MissingImage,
        missing_kernels: dedup(&query.kernel_releases),
        method: None,
        source_image: query.image.to_string(),
        reason: Some(format!("the cache image does not exist ({detail})")),
    }
}

/// The labels an akmods cache built for `kernel_releases` from `inputs` carries: the akmods Job
/// is told them (`KZO_IMAGE_LABELS`) and must write them on the image it pushes; a later cache
/// decision reads them back with [`label_coverage`] and [`input_mismatches`].
pub fn cache_labels(kernel_releases: &[String], inputs: &CacheInputs) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([
        (labels::CACHE_FORMAT.to_string(), labels::FORMAT_VERSION.to_string()),
        (labels::KERNEL_RELEASES.to_string(), kernels::sort_releases(kernel_releases).join(" ")),
    ]);
    let given = [
        (labels::ZFS_MINOR_VERSION, &inputs.zfs_minor_version),
        (labels::AKMODS_REF, &inputs.akmods_ref),
        (labels::BUILDER_DIGEST, &inputs.builder_digest),
    ];
    for (key, value) in given {
        if let Some(value) = value.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
            labels.insert(key.to_string(), value.to_string());
        }
    }
    labels
}

/// Kernels the labels claim, when the labels are usable: format [`labels::FORMAT_VERSION`] and a
/// non-empty list (R4.4). Anything else falls back to the layer scan (R4.5, F21).
pub fn label_coverage(labels: &BTreeMap<String, String>) -> Option<BTreeSet<String>> {
    if labels.get(labels::CACHE_FORMAT).map(|v| v.trim()) != Some(labels::FORMAT_VERSION) {
        return None;
    }
    let kernels: BTreeSet<String> =
        labels.get(labels::KERNEL_RELEASES)?.split_whitespace().map(str::to_string).collect();
    (!kernels.is_empty()).then_some(kernels)
}

/// The scan's interest: files directly in `rpms/kmods/zfs/` named `kmod-zfs-*.rpm`.
pub fn is_kmod_rpm_path(path: &str) -> bool {
    path.strip_prefix(RPM_DIR)
        .is_some_and(|name| !name.contains('/') && name.starts_with("kmod-zfs-") && name.ends_with(".rpm"))
}

/// The kernel release a kmod RPM file name is for. RPM file names are
/// `<name>-<version>-<release>.<arch>.rpm` and neither version nor release contains `-`, so
/// splitting from the right gives the package name `kmod-zfs-<kernel release>` exactly:
/// `kmod-zfs-6.18.13-200.fc43.x86_64-2.4.1-1.fc43.x86_64.rpm` → `6.18.13-200.fc43.x86_64`. A
/// prefix match would let `6.18.1` claim the RPM of `6.18.13-…`, or a kernel the RPM of its
/// `+debug` variant. Source RPMs are not kmods.
pub fn rpm_kernel(file_name: &str) -> Option<&str> {
    let stem = file_name.strip_suffix(".rpm").filter(|s| !s.ends_with(".src"))?;
    let (rest, _release_arch) = stem.rsplit_once('-')?;
    let (name, version) = rest.rsplit_once('-')?;
    let kernel = name.strip_prefix("kmod-zfs-")?;
    (version.starts_with(|c: char| c.is_ascii_digit()) && !kernel.is_empty()).then_some(kernel)
}

/// The required kernels that have a kmod RPM in the merged view.
pub fn scan_coverage(view: &MergedView, required: &[String]) -> BTreeSet<String> {
    let rpms = view.payload_paths().filter_map(|p| p.strip_prefix(RPM_DIR));
    let kernels: BTreeSet<&str> = rpms.into_iter().filter_map(rpm_kernel).collect();
    required.iter().filter(|release| kernels.contains(release.as_str())).cloned().collect()
}

/// The required kernels the labels claim but the layers do not cover, as a reason (content
/// wins; the reason says the labels claimed them, so a lying or broken push is visible).
fn false_claims(claimed: Option<&BTreeSet<String>>, covered: &BTreeSet<String>, required: &[String]) -> Option<String> {
    let claimed = claimed?;
    let false_claims: Vec<String> =
        dedup(required).into_iter().filter(|k| claimed.contains(k) && !covered.contains(k)).collect();
    (!false_claims.is_empty()).then(|| {
        format!(
            "its labels claim kernel releases {} ({}), but its layers hold no kmod RPM for them",
            false_claims.join(" "),
            labels::KERNEL_RELEASES
        )
    })
}

/// Reasons why a cache built from other inputs must not be reused. Only labels that are present
/// and non-empty are compared (caches without them, e.g. the reference's, are judged by
/// coverage alone); values are compared trimmed and case-insensitively (hex digests).
pub fn input_mismatches(labels: &BTreeMap<String, String>, inputs: &CacheInputs) -> Vec<String> {
    let checks = [
        (labels::ZFS_MINOR_VERSION, &inputs.zfs_minor_version, "ZFS minor version"),
        (labels::AKMODS_REF, &inputs.akmods_ref, "akmods commit"),
        (labels::BUILDER_DIGEST, &inputs.builder_digest, "builder image"),
    ];
    let norm = |v: &str| v.trim().to_ascii_lowercase();
    checks
        .into_iter()
        .filter_map(|(key, requested, what)| {
            let built = labels.get(key).map(|v| norm(v)).filter(|v| !v.is_empty())?;
            let requested = requested.as_deref().map(norm).filter(|v| !v.is_empty())?;
            (built != requested).then(|| format!("built from {what} {built} ({key}), requested {requested}"))
        })
        .collect()
}

/// The verdict from coverage and input mismatches (pure).
pub fn decide(
    required: &[String],
    covered: &BTreeSet<String>,
    method: CacheCheckMethod,
    mismatches: &[String],
    source_image: String,
) -> CacheVerdict {
    let missing: Vec<String> = dedup(required).into_iter().filter(|k| !covered.contains(k)).collect();
    let mut reasons = Vec::new();
    if !missing.is_empty() {
        let how = match method {
            CacheCheckMethod::Labels => format!("its {} label", labels::KERNEL_RELEASES),
            CacheCheckMethod::LayerScan => format!("no {RPM_DIR}kmod-zfs-<release>-*.rpm in its layers"),
        };
        reasons.push(format!("the cache does not cover kernel releases {} ({how})", missing.join(" ")));
    }
    reasons.extend(mismatches.iter().cloned());
    CacheVerdict {
        status: if reasons.is_empty() { CacheStatus::Reusable } else { CacheStatus::Stale },
        missing_kernels: missing,
        method: Some(method),
        source_image,
        reason: (!reasons.is_empty()).then(|| reasons.join("; ")),
    }
}

fn dedup(releases: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in releases {
        if !out.contains(r) {
            out.push(r.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "6.18.1-200.fc43.x86_64";
    const K13: &str = "6.18.13-200.fc43.x86_64";

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn labels_are_used_only_in_format_1_with_kernels() {
        let good = labels(&[(labels::CACHE_FORMAT, "1"), (labels::KERNEL_RELEASES, &format!("{K1}  {K13}\n"))]);
        assert_eq!(label_coverage(&good), Some([K1.to_string(), K13.to_string()].into()));
        for bad in [
            labels(&[(labels::KERNEL_RELEASES, K1)]),
            labels(&[(labels::CACHE_FORMAT, "2"), (labels::KERNEL_RELEASES, K1)]),
            labels(&[(labels::CACHE_FORMAT, "1"), (labels::KERNEL_RELEASES, "  ")]),
            labels(&[(labels::CACHE_FORMAT, "1")]),
        ] {
            assert_eq!(label_coverage(&bad), None, "{bad:?}");
        }
    }

    #[test]
    fn rpm_names_match_the_exact_release() {
        let rpm13 = "kmod-zfs-6.18.13-200.fc43.x86_64-2.4.1-1.fc43.x86_64.rpm";
        assert_eq!(rpm_kernel(rpm13), Some(K13));
        assert_ne!(rpm_kernel(rpm13), Some("6.18.1"), "6.18.1 must not match 6.18.13");
        assert_eq!(
            rpm_kernel("kmod-zfs-6.18.1-200.fc43.x86_64+debug-2.4.1-1.fc43.x86_64.rpm"),
            Some("6.18.1-200.fc43.x86_64+debug")
        );
        assert_eq!(rpm_kernel("kmod-zfs-6.18.1-200.fc43.x86_64-rt-2.4.1-1.rpm"), Some("6.18.1-200.fc43.x86_64-rt"));
        for not_a_kmod in [
            "kmod-zfs-6.18.1-200.fc43.x86_64-2.4.1-1.src.rpm",
            "kmod-zfs-6.18.1-200.fc43.x86_64-2.4.1-1.txt",
            "kmod-zfs-2.4.1-1.fc43.x86_64.rpm",
            "zfs-2.4.1-1.fc43.x86_64.rpm",
            "kmod-zfs-6.18.1-x-1.rpm",
        ] {
            assert_eq!(rpm_kernel(not_a_kmod), None, "{not_a_kmod}");
        }
        assert!(is_kmod_rpm_path(&format!("rpms/kmods/zfs/{rpm13}")));
        assert!(!is_kmod_rpm_path(&format!("rpms/kmods/zfs/sub/{rpm13}")));
        assert!(!is_kmod_rpm_path("rpms/kmods/zfs/zfs-2.4.1-1.fc43.x86_64.rpm"));
    }

    #[test]
    fn verdicts() {
        let required = vec![K1.to_string(), K13.to_string(), K1.to_string()];
        let all: BTreeSet<String> = [K1.to_string(), K13.to_string()].into();
        let v = decide(&required, &all, CacheCheckMethod::Labels, &[], "r@sha256:x".into());
        assert_eq!((v.status, v.missing_kernels.len(), v.reason), (CacheStatus::Reusable, 0, None));

        let one: BTreeSet<String> = [K13.to_string()].into();
        let v = decide(&required, &one, CacheCheckMethod::LayerScan, &[], "r@sha256:x".into());
        assert_eq!(v.status, CacheStatus::Stale);
        assert_eq!(v.missing_kernels, [K1]);
        assert_eq!(v.method, Some(CacheCheckMethod::LayerScan));
        assert!(v.reason.unwrap().contains(&format!("does not cover kernel releases {K1} (no rpms/kmods/zfs/")));

        let v = decide(&required, &all, CacheCheckMethod::Labels, &["built from x".into()], "r@sha256:x".into());
        assert_eq!((v.status, v.missing_kernels.len()), (CacheStatus::Stale, 0));
        assert_eq!(v.reason.as_deref(), Some("built from x"));
    }

    #[test]
    fn the_labels_an_akmods_job_writes_read_back_as_a_reusable_cache_for_the_same_inputs() {
        let inputs = CacheInputs {
            zfs_minor_version: Some("2.4".into()),
            akmods_ref: Some("a".repeat(40)),
            builder_digest: Some(format!("sha256:{}", "b".repeat(64))),
        };
        let kernels = vec![K13.to_string(), K1.to_string()];
        let written = cache_labels(&kernels, &inputs);
        assert_eq!(written[labels::KERNEL_RELEASES], format!("{K1} {K13}"), "natural order");
        assert_eq!(label_coverage(&written), Some(BTreeSet::from([K1.to_string(), K13.to_string()])));
        assert!(input_mismatches(&written, &inputs).is_empty());
        let other = CacheInputs { zfs_minor_version: Some("2.3".into()), ..inputs.clone() };
        assert_eq!(input_mismatches(&written, &other).len(), 1);
        // Inputs that are not known are not written (a reader then judges by coverage alone).
        let bare = cache_labels(&kernels, &CacheInputs::default());
        assert_eq!(bare.len(), 2);
    }

    #[test]
    fn input_labels_make_a_cache_stale_only_when_present_and_different() {
        let built = labels(&[
            (labels::ZFS_MINOR_VERSION, "2.3"),
            (labels::AKMODS_REF, &"A".repeat(40)),
            (labels::BUILDER_DIGEST, ""),
        ]);
        let same = CacheInputs {
            zfs_minor_version: Some("2.3".into()),
            akmods_ref: Some("a".repeat(40)),
            builder_digest: Some(format!("sha256:{}", "b".repeat(64))),
        };
        assert!(input_mismatches(&built, &same).is_empty(), "an empty label is not compared");
        let other = CacheInputs { zfs_minor_version: Some("2.4".into()), ..same.clone() };
        assert_eq!(
            input_mismatches(&built, &other),
            [format!("built from ZFS minor version 2.3 ({}), requested 2.4", labels::ZFS_MINOR_VERSION)]
        );
        assert!(input_mismatches(&built, &CacheInputs::default()).is_empty(), "nothing requested");
        assert!(input_mismatches(&BTreeMap::new(), &other).is_empty(), "no labels (reference caches)");
    }

    /// An akmods image in the fake registry: one gzip layer with kmod RPMs for `rpms`, and
    /// labels claiming `claimed`.
    fn lying_image(registry: &crate::registry::fake::FakeRegistry, rpms: &[&str], claimed: &[&str]) -> String {
        use crate::registry::media_types;
        let mut tar = tar::Builder::new(Vec::new());
        for k in rpms {
            let mut header = tar::Header::new_gnu();
            header.set_size(0);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut header, format!("{RPM_DIR}kmod-zfs-{k}-2.4.1-1.fc43.x86_64.rpm"), &[][..]).unwrap();
        }
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &tar.into_inner().unwrap()).unwrap();
        let layer = gz.finish().unwrap();
        let repo = "r.example/o/akmods";
        let config = serde_json::to_vec(&serde_json::json!({"config": {"Labels": {
            labels::CACHE_FORMAT: labels::FORMAT_VERSION, labels::KERNEL_RELEASES: claimed.join(" ")}}}))
        .unwrap();
        let manifest = serde_json::json!({
            "schemaVersion": 2, "mediaType": media_types::OCI_MANIFEST,
            "config": {"mediaType": media_types::OCI_CONFIG, "digest": registry.add_blob(repo, &config), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": registry.add_blob(repo, &layer), "size": layer.len()}],
        });
        let digest =
            registry.add_manifest(repo, None, media_types::OCI_MANIFEST, &serde_json::to_vec(&manifest).unwrap());
        format!("{repo}@{digest}")
    }

    #[tokio::test]
    async fn confirmation_by_content_ignores_what_the_labels_claim() {
        let registry = crate::registry::fake::FakeRegistry::new();
        let image = lying_image(&registry, &[K1], &[K1, K13]);
        let query = CacheQuery {
            image: ImageRef::parse(&image).unwrap(),
            kernel_releases: vec![K1.into(), K13.into()],
            inputs: CacheInputs::default(),
        };
        // The fast path believes the labels (H11: fine for a cache lookup, not as proof).
        let by_labels = check_cache(&registry, &query, &ScanMemory::default()).await.unwrap();
        assert_eq!(
            (by_labels.verdict.status, by_labels.verdict.method, by_labels.bytes_read),
            (CacheStatus::Reusable, Some(CacheCheckMethod::Labels), 0)
        );
        // The confirmation reads the layers: K13 is not there, whatever the labels say.
        let confirmed = confirm_by_content(&registry, &query, &ScanMemory::default()).await.unwrap();
        let verdict = confirmed.verdict;
        assert_eq!((verdict.status, verdict.method), (CacheStatus::Stale, Some(CacheCheckMethod::LayerScan)));
        assert_eq!(verdict.missing_kernels, [K13]);
        assert!(confirmed.bytes_read > 0);
        let reason = verdict.reason.unwrap();
        assert!(reason.contains(&format!("its labels claim kernel releases {K13}")), "{reason}");
        // Content that covers every kernel confirms, with the method recorded.
        let honest = lying_image(&registry, &[K1, K13], &[K1, K13]);
        let query = CacheQuery { image: ImageRef::parse(&honest).unwrap(), ..query };
        let verdict = confirm_by_content(&registry, &query, &ScanMemory::default()).await.unwrap().verdict;
        assert_eq!(
            (verdict.status, verdict.method, verdict.reason),
            (CacheStatus::Reusable, Some(CacheCheckMethod::LayerScan), None)
        );
    }

    #[test]
    fn inputs_are_validated() {
        assert!(CacheInputs::default().validate().is_ok());
        let bad = [
            CacheInputs { zfs_minor_version: Some("2".into()), ..Default::default() },
            CacheInputs { zfs_minor_version: Some("2.x".into()), ..Default::default() },
            CacheInputs { akmods_ref: Some("9d13b69".into()), ..Default::default() },
            CacheInputs { builder_digest: Some("latest".into()), ..Default::default() },
        ];
        for inputs in bad {
            let err = inputs.validate().unwrap_err().to_string();
            assert!(err.starts_with("invalid --"), "{err}");
        }
    }
}
