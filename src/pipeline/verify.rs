//! Candidate verification (R10, with hazards H3, H9 and H11's spirit fixed): does the pushed
//! candidate image carry ZFS for every expected kernel?
//!
//! - The candidate is read **by digest**: a tag is resolved once, then only `NAME@sha256:...` is
//!   used (H3: the reference resolved a digest but copied by tag). An index is verified through
//!   its `linux/amd64` image; both digests are recorded.
//! - With a base image (pinned by digest), only the layers the candidate adds on top of the
//!   base's layers are downloaded: the ZFS payload can only come from them. A candidate that does
//!   not start with the base's layers is scanned whole, and the result says so.
//! - Checks on the merged view (whiteouts per H9, in [`crate::pipeline::layers`]), in R10.6's
//!   order: `zfs` and `zpool` in `usr/sbin` or `usr/bin`; a non-empty kernel list; every expected
//!   kernel has `lib/modules/<release>/extra/zfs/zfs.ko` (or `.ko.xz`, `.ko.zst`, `.ko.gz`),
//!   with or without `usr/`. Files, hard links and symlinks all count.
//!
//! A failed check is a verdict (`verified: false` with a message naming what is missing); only a
//! registry failure or bad input is an error.

use std::collections::BTreeSet;

use crate::api::build::VerificationResult;
use crate::pipeline::kernels;
use crate::pipeline::layers::{self, MergedView, scan_remembered};
use crate::pipeline::scan_memory::{Question, ScanMemory};
use crate::registry::{self, AnswerClass, ImageRef, OciDescriptor, RegistryClient, resolve_image};

/// The commands a ZFS image must ship, in the order they are checked.
pub const COMMANDS: [&str; 2] = ["zfs", "zpool"];
const COMMAND_DIRS: [&str; 2] = ["usr/sbin", "usr/bin"];
/// Module file names accepted (uncompressed and the compressions kmod loads).
const MODULE_FILES: [&str; 4] = ["zfs.ko", "zfs.ko.xz", "zfs.ko.zst", "zfs.ko.gz"];

/// Errors of verification: no verdict can be given.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kernel(#[from] kernels::Error),
    #[error(
        "--base-image {0} is not pinned by digest: pass NAME@sha256:... (a moving tag could name another base than the candidate was built on)"
    )]
    BaseNotPinned(String),
    #[error("cannot verify candidate {image}: {source}")]
    Registry {
        image: String,
        #[source]
        source: Box<registry::Error>,
    },
    #[error("cannot read base image {image}: {source}")]
    Base {
        image: String,
        #[source]
        source: Box<registry::Error>,
    },
    #[error("cannot verify candidate {image}: {source}")]
    Scan {
        image: String,
        #[source]
        source: Box<layers::Error>,
    },
}

impl Error {
    /// The class of the registry answer behind the error, when it was one.
    pub fn class(&self) -> Option<AnswerClass> {
        match self {
            Error::Registry { source, .. } | Error::Base { source, .. } => source.class(),
            Error::Scan { source, .. } => match source.as_ref() {
                layers::Error::Registry(source) => source.class(),
                _ => None,
            },
            _ => None,
        }
    }
}

/// What to verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyQuery {
    /// The candidate, by digest or by a tag that is resolved once.
    pub image: ImageRef,
    /// Expected kernel releases; empty means "every kernel that has a module" (R10.6), which
    /// then must be at least one.
    pub kernel_releases: Vec<String>,
    /// The base the candidate was built on, pinned by digest.
    pub base_image: Option<ImageRef>,
}

/// Which layers were read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Only the layers above the base's.
    Delta {
        /// `NAME@sha256:...` of the base's `linux/amd64` image.
        base: String,
        /// Layers skipped because the base has them.
        base_layers: usize,
    },
    /// Every layer; `reason` says why a given base could not be used.
    Full { reason: Option<String> },
}

/// The verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    pub verified: bool,
    /// `NAME@sha256:...` with the digest the candidate reference pins (the index digest for an
    /// index).
    pub image_ref: String,
    pub image_digest: String,
    /// Digest of the `linux/amd64` image manifest that was checked (equals `image_digest` for a
    /// plain image).
    pub platform_digest: String,
    /// Kernel releases whose module was found (the expected ones, or the discovered ones when
    /// none were expected).
    pub kernel_releases: Vec<String>,
    pub missing_kernel_releases: Vec<String>,
    /// Commands found (`zfs`, `zpool`).
    pub commands: Vec<String>,
    pub missing_commands: Vec<String>,
    /// Compressed layer bytes downloaded.
    pub bytes_read: u64,
    pub layers_scanned: usize,
    pub layers_total: usize,
    pub scope: Scope,
    /// What is missing (R10.6 wording), when not verified.
    pub message: Option<String>,
}

impl Verification {
    /// The run status' view of the verdict.
    pub fn result(&self) -> VerificationResult {
        VerificationResult {
            verified: self.verified,
            kernel_releases: self.kernel_releases.clone(),
            bytes_read: i64::try_from(self.bytes_read).unwrap_or(i64::MAX),
            message: self.message.clone(),
            platform_digest: (self.platform_digest != self.image_digest).then(|| self.platform_digest.clone()),
        }
    }
}

/// Verifies the candidate (see the module docs); layers `memory` remembers are not read again.
pub async fn verify<R: RegistryClient + ?Sized>(
    registry: &R,
    query: &VerifyQuery,
    memory: &ScanMemory,
) -> Result<Verification, Error> {
    for release in &query.kernel_releases {
        kernels::check_release(release)?;
    }
    let base_ref = match &query.base_image {
        Some(base) if base.digest().is_none() => return Err(Error::BaseNotPinned(base.to_string())),
        other => other.clone(),
    };
    let candidate_error =
        |source: registry::Error| Error::Registry { image: query.image.to_string(), source: Box::new(source) };

    // H3: the one and only tag lookup; everything after it addresses the digest.
    let pinned = match query.image.digest() {
        Some(digest) => query.image.with_digest(digest),
        None => {
            let digest = registry.resolve_digest(&query.image).await.map_err(candidate_error)?;
            query.image.with_digest(&digest)
        }
    }
    .map_err(|e| candidate_error(e.into()))?;
    let candidate = resolve_image(registry, &pinned).await.map_err(candidate_error)?;
    let image_ref = candidate.pinned();

    let (start, scope) = match &base_ref {
        None => (0, Scope::Full { reason: None }),
        Some(base_ref) => match resolve_image(registry, base_ref).await {
            Ok(base) => match delta_start(candidate.layers(), base.layers()) {
                Ok(start) => (start, Scope::Delta { base: base.platform_pinned(), base_layers: start }),
                Err(reason) => (0, Scope::Full { reason: Some(reason) }),
            },
            // The base is only an optimisation: a base that is gone costs a full scan, not a
            // verdict. Any other failure (unauthorized, unreachable) is reported.
            Err(err) if err.is_absent() => {
                (0, Scope::Full { reason: Some(format!("base image {base_ref} was not found; scanned every layer")) })
            }
            Err(source) => return Err(Error::Base { image: base_ref.to_string(), source: Box::new(source) }),
        },
    };
    if let Scope::Full { reason: Some(reason) } = &scope {
        tracing::warn!(candidate = %image_ref, "{reason}");
    }

    let layers = &candidate.layers()[start..];
    let view = scan_remembered(registry, &candidate.reference, layers, Question::Verify, memory)
        .await
        .map_err(|source| Error::Scan { image: image_ref.clone(), source: Box::new(source) })?;
    let findings = Findings::of(&view, &query.kernel_releases);
    let message = findings.message(&image_ref, &scope, layers.len());
    let verification = Verification {
        verified: message.is_none(),
        image_ref,
        image_digest: candidate.top_digest().to_string(),
        platform_digest: candidate.digest.clone(),
        kernel_releases: findings.kernels_found,
        missing_kernel_releases: findings.kernels_missing,
        commands: findings.commands_found,
        missing_commands: findings.commands_missing,
        bytes_read: view.bytes_read(),
        layers_scanned: view.layers_scanned(),
        layers_total: candidate.layers().len(),
        scope,
        message,
    };
    tracing::info!(
        candidate = %verification.image_ref, verified = verification.verified,
        bytes_read = verification.bytes_read, layers = verification.layers_scanned, "candidate verification"
    );
    Ok(verification)
}

/// Index of the first layer the candidate adds on top of the base, or why there is none: the
/// candidate must start with exactly the base's layers (by digest).
pub fn delta_start(candidate: &[OciDescriptor], base: &[OciDescriptor]) -> Result<usize, String> {
    let first_difference = base.iter().zip(candidate).position(|(b, c)| b.digest != c.digest);
    match first_difference {
        Some(i) => Err(format!(
            "the candidate does not start with the base image's layers (layer {} is {}, the base has {}); scanned every layer",
            i + 1,
            candidate[i].digest,
            base[i].digest
        )),
        None if base.len() > candidate.len() => Err(format!(
            "the candidate has fewer layers ({}) than the base image ({}); scanned every layer",
            candidate.len(),
            base.len()
        )),
        None => Ok(base.len()),
    }
}

/// The walker's interest: the command paths and `zfs.ko*` module paths.
pub fn is_zfs_payload_path(path: &str) -> bool {
    command_of(path).is_some() || module_release(path).is_some()
}

fn command_of(path: &str) -> Option<&str> {
    let (dir, name) = path.rsplit_once('/')?;
    (COMMAND_DIRS.contains(&dir) && COMMANDS.contains(&name)).then_some(name)
}

/// `(usr/)?lib/modules/<release>/extra/zfs/<zfs.ko*>` → `<release>`.
pub fn module_release(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("usr/").unwrap_or(path).strip_prefix("lib/modules/")?;
    let (release, file) = rest.split_once("/extra/zfs/")?;
    (!release.is_empty() && !release.contains('/') && MODULE_FILES.contains(&file)).then_some(release)
}

/// What the merged view holds, against what is expected (pure).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Findings {
    pub commands_found: Vec<String>,
    pub commands_missing: Vec<String>,
    pub kernels_found: Vec<String>,
    pub kernels_missing: Vec<String>,
}

impl Findings {
    pub fn of(view: &MergedView, expected: &[String]) -> Findings {
        let present: BTreeSet<&str> = view.payload_paths().filter_map(command_of).collect();
        let (commands_found, commands_missing) =
            COMMANDS.iter().map(|c| c.to_string()).partition(|c| present.contains(c.as_str()));
        let with_module: BTreeSet<&str> = view.payload_paths().filter_map(module_release).collect();
        let (kernels_found, kernels_missing) = if expected.is_empty() {
            (kernels::sort_releases(with_module.iter().copied()), Vec::new())
        } else {
            kernels::sort_releases(expected.iter().cloned()).into_iter().partition(|k| with_module.contains(k.as_str()))
        };
        Findings { commands_found, commands_missing, kernels_found, kernels_missing }
    }

    /// R10.6's messages, one per failed check in its order; `None` when everything passed.
    pub fn message(&self, image_ref: &str, scope: &Scope, layers_scanned: usize) -> Option<String> {
        let mut failures = Vec::new();
        if !self.commands_missing.is_empty() {
            let s = if self.commands_missing.len() > 1 { "s" } else { "" };
            failures.push(format!(
                "Candidate image is missing expected command{s} {} (looked in usr/sbin and usr/bin): {image_ref}",
                self.commands_missing.join(", ")
            ));
        }
        if self.kernels_found.is_empty() && self.kernels_missing.is_empty() {
            failures.push(format!("No ZFS kernel payloads found in candidate image: {image_ref}"));
        }
        if !self.kernels_missing.is_empty() {
            failures.push(format!(
                "Candidate image is missing a ZFS module payload for kernels {}: {image_ref}",
                self.kernels_missing.join(" ")
            ));
        }
        if failures.is_empty() {
            return None;
        }
        let mut message = failures.join("; ");
        if let Scope::Delta { base, .. } = scope {
            let s = if layers_scanned == 1 { "" } else { "s" };
            message.push_str(&format!(" (checked the {layers_scanned} layer{s} the candidate adds on top of {base})"));
        }
        Some(message)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::pipeline::layers::LayerMerger;

    const K1: &str = "6.18.1-200.fc43.x86_64";
    const K2: &str = "6.18.2-200.fc43.x86_64";

    fn view(paths: &[&str]) -> MergedView {
        let mut builder = tar::Builder::new(Vec::new());
        for path in paths {
            let mut header = tar::Header::new_gnu();
            header.set_size(0);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            builder.append_data(&mut header, path, &[][..]).unwrap();
        }
        let tar = builder.into_inner().unwrap();
        let mut merger = LayerMerger::new(Arc::new(is_zfs_payload_path));
        merger.apply_tar(&tar[..]).unwrap();
        merger.finish(0)
    }

    fn descriptors(digests: &[char]) -> Vec<OciDescriptor> {
        digests
            .iter()
            .map(|c| OciDescriptor { digest: format!("sha256:{}", c.to_string().repeat(64)), ..Default::default() })
            .collect()
    }

    #[test]
    fn payload_paths() {
        for ok in [
            "usr/sbin/zfs",
            "usr/bin/zpool",
            "lib/modules/6.1/extra/zfs/zfs.ko",
            "usr/lib/modules/6.1/extra/zfs/zfs.ko.xz",
            "usr/lib/modules/6.1/extra/zfs/zfs.ko.zst",
        ] {
            assert!(is_zfs_payload_path(ok), "{ok}");
        }
        for no in [
            "sbin/zfs",
            "usr/local/bin/zfs",
            "usr/sbin/zfs-helper",
            "usr/lib/modules/6.1/extra/zfs/zfs.ko.bak",
            "usr/lib/modules/6.1/extra/zfs/spl.ko",
            "usr/lib/modules/6.1/kernel/extra/zfs/zfs.ko",
            "usr/lib/modules//extra/zfs/zfs.ko",
        ] {
            assert!(!is_zfs_payload_path(no), "{no}");
        }
        assert_eq!(module_release("lib/modules/6.1-x/extra/zfs/zfs.ko.gz"), Some("6.1-x"));
    }

    #[test]
    fn everything_present_verifies() {
        let v = view(&[
            "usr/sbin/zfs",
            "usr/bin/zpool",
            &format!("usr/lib/modules/{K1}/extra/zfs/zfs.ko"),
            &format!("lib/modules/{K2}/extra/zfs/zfs.ko.xz"),
        ]);
        let f = Findings::of(&v, &[K2.into(), K1.into()]);
        assert_eq!(f.commands_found, ["zfs", "zpool"]);
        assert_eq!(f.kernels_found, [K1, K2], "natural-sorted");
        assert_eq!(f.message("r@sha256:x", &Scope::Full { reason: None }, 3), None);
    }

    #[test]
    fn messages_name_what_is_missing_in_r10_6_order() {
        let v = view(&["usr/bin/zfs", &format!("usr/lib/modules/{K1}/extra/zfs/zfs.ko")]);
        let f = Findings::of(&v, &[K1.into(), K2.into()]);
        assert_eq!(f.commands_missing, ["zpool"]);
        assert_eq!(f.kernels_missing, [K2]);
        let scope = Scope::Delta { base: "b@sha256:y".into(), base_layers: 40 };
        assert_eq!(
            f.message("r@sha256:x", &scope, 1).unwrap(),
            format!(
                "Candidate image is missing expected command zpool (looked in usr/sbin and usr/bin): r@sha256:x; \
                 Candidate image is missing a ZFS module payload for kernels {K2}: r@sha256:x \
                 (checked the 1 layer the candidate adds on top of b@sha256:y)"
            )
        );
        // Nothing expected and nothing found.
        let f = Findings::of(&view(&["usr/sbin/zfs", "usr/sbin/zpool"]), &[]);
        assert_eq!(
            f.message("r@sha256:x", &Scope::Full { reason: None }, 2).unwrap(),
            "No ZFS kernel payloads found in candidate image: r@sha256:x"
        );
        // Nothing expected: the discovered kernels are the list.
        let f = Findings::of(
            &view(&["usr/sbin/zfs", "usr/sbin/zpool", &format!("lib/modules/{K2}/extra/zfs/zfs.ko")]),
            &[],
        );
        assert_eq!((f.kernels_found, f.kernels_missing.len()), (vec![K2.to_string()], 0));
        let f = Findings::of(&view(&[]), &[K1.into()]);
        assert!(
            f.message("r", &Scope::Full { reason: None }, 0)
                .unwrap()
                .starts_with("Candidate image is missing expected commands zfs, zpool")
        );
    }

    #[test]
    fn delta_needs_the_base_layers_as_a_prefix() {
        assert_eq!(delta_start(&descriptors(&['a', 'b', 'c']), &descriptors(&['a', 'b'])), Ok(2));
        assert_eq!(delta_start(&descriptors(&['a', 'b']), &descriptors(&['a', 'b'])), Ok(2));
        assert_eq!(delta_start(&descriptors(&['a']), &[]), Ok(0));
        let err = delta_start(&descriptors(&['a', 'x', 'c']), &descriptors(&['a', 'b'])).unwrap_err();
        assert!(
            err.starts_with("the candidate does not start with the base image's layers (layer 2 is sha256:xxx"),
            "{err}"
        );
        let err = delta_start(&descriptors(&['a']), &descriptors(&['a', 'b'])).unwrap_err();
        assert!(err.contains("fewer layers (1) than the base image (2)"), "{err}");
    }

    #[test]
    fn the_status_view() {
        let v = Verification {
            verified: true,
            image_ref: "r@sha256:i".into(),
            image_digest: "sha256:i".into(),
            platform_digest: "sha256:p".into(),
            kernel_releases: vec![K1.into()],
            missing_kernel_releases: vec![],
            commands: vec!["zfs".into(), "zpool".into()],
            missing_commands: vec![],
            bytes_read: 42,
            layers_scanned: 1,
            layers_total: 3,
            scope: Scope::Full { reason: None },
            message: None,
        };
        let r = v.result();
        assert_eq!((r.verified, r.bytes_read, r.platform_digest.as_deref()), (true, 42, Some("sha256:p")));
        let plain = Verification { platform_digest: "sha256:i".into(), ..v };
        assert_eq!(plain.result().platform_digest, None, "only recorded when it differs");
    }
}
