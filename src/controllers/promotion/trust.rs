//! Trust in a run that is known only from its run-record ConfigMap (issue 11 item 3).
//!
//! The build's status is written by the operator through the status subresource; a run-record
//! ConfigMap can be written by anyone who may create ConfigMaps in the namespace, owner
//! reference included. So a record is a pointer, never proof: before a recorded run is
//! promoted, the operator re-checks it from the registry, with the same code the build
//! controller and `kinoite-zfs-operator verify` use.
//!
//! - [`query`] (pure): what to read. The record's candidate must be in the build's candidate
//!   repository and its akmods in the build's candidate akmods repository, both pinned by
//!   digest, and it must name the kernels it was verified for; otherwise it is refused before
//!   the registry is asked anything.
//! - [`check`] (registry reads only): the candidate digest is present in the candidate
//!   repository, [`crate::pipeline::verify::verify`] passes for the record's kernels (on the
//!   layers above the record's base when it names one by digest: a base cannot make a
//!   candidate without ZFS pass, because the payload must then be in the layers that are
//!   scanned), and the akmods digest is present.
//! - [`judge`] (pure): the verdict on a [`RecordCheck`], or what failed.

use std::time::Duration;

use crate::api::build::{VerificationResult, ZfsImageBuild};
use crate::pipeline::records::RecordedRun;
use crate::pipeline::scan_memory::ScanMemory;
use crate::pipeline::targets::repository_ref;
use crate::pipeline::verify::{self, VerifyQuery};
use crate::registry::{AnswerClass, ImageRef, RegistryClient};

use super::reasons;

/// The registry reads that decide whether a recorded run may be promoted. Part of the
/// [`RecordCheck`], so a check is only ever applied to the question it answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordQuery {
    pub run: i64,
    /// `<build's candidate repository>@sha256:...`.
    pub candidate: String,
    /// The kernels the record says the run verified (non-empty).
    pub kernel_releases: Vec<String>,
    /// The record's base, `NAME@sha256:...`, when it names one by digest.
    pub base_image: Option<String>,
    /// `<build's candidate akmods repository>@sha256:...`.
    pub akmods: String,
}

/// What the registry said about a [`RecordQuery`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordCheck {
    pub query: RecordQuery,
    pub result: Result<RecordFindings, RecordFailure>,
}

/// The answers, when the registry could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordFindings {
    pub candidate_present: bool,
    /// The verification verdict (`None` when the candidate is absent: nothing to verify).
    /// Content that cannot be verified at all (a malformed layer, an invalid kernel release in
    /// the record) is a failed verdict with the reason as its message.
    pub verification: Option<VerificationResult>,
    pub akmods_present: bool,
}

/// The registry could not be read (rate limited, unreachable, unauthorized, or another answer
/// no retry fixes); nothing is decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordFailure {
    /// `RegistryUnavailable`, `RegistryUnauthorized` or `RegistryError`.
    pub reason: &'static str,
    pub transient: bool,
    pub message: String,
    pub retry_after: Option<Duration>,
}

/// What to read to trust `record` as a run of `build`, or why it cannot be a run of it.
pub fn query(build: &ZfsImageBuild, record: &RecordedRun) -> Result<RecordQuery, String> {
    let run = record.number;
    let spec = &build.spec;
    let pinned_in = |what: &str, text: &str, repository: &str| -> Result<String, String> {
        let expected = ImageRef::parse(repository)
            .map_err(|e| format!("the build's {what} repository {repository} is not a valid reference: {e}"))?;
        let image = ImageRef::parse(text).map_err(|e| format!("its {what} {text:?} is not a valid reference: {e}"))?;
        let Some(digest) = image.digest() else {
            return Err(format!("its {what} {text} is not pinned by digest"));
        };
        if image.name() != expected.name() {
            return Err(format!("its {what} {text} is not in the build's {what} repository {}", expected.name()));
        }
        Ok(format!("{}@{digest}", expected.name()))
    };
    let refuse = |why: String| format!("run record of run {run} cannot be trusted: {why}");
    let candidate =
        pinned_in("candidate", &record.candidate_image, &repository_ref(spec, &spec.registry.candidate_image))
            .map_err(refuse)?;
    if !candidate.ends_with(&format!("@{}", record.candidate_digest)) {
        return Err(refuse(format!(
            "its candidate {} does not match its candidate digest {}",
            record.candidate_image, record.candidate_digest
        )));
    }
    let akmods = pinned_in("akmods", &record.akmods_image, &repository_ref(spec, &spec.registry.candidate_akmods))
        .map_err(refuse)?;
    if record.kernel_releases.is_empty() {
        return Err(refuse("it names no kernel releases to verify".into()));
    }
    let base_image =
        ImageRef::parse(&record.base_image).ok().filter(|base| base.digest().is_some()).map(|base| base.to_string());
    Ok(RecordQuery { run, candidate, kernel_releases: record.kernel_releases.clone(), base_image, akmods })
}

/// Reads what `query` asks from the registry. Read-only; never fails: a failure is data.
pub async fn check<R: RegistryClient + ?Sized>(registry: &R, query: &RecordQuery, memory: &ScanMemory) -> RecordCheck {
    let result = findings(registry, query, memory).await;
    RecordCheck { query: query.clone(), result }
}

async fn findings<R: RegistryClient + ?Sized>(
    registry: &R,
    query: &RecordQuery,
    memory: &ScanMemory,
) -> Result<RecordFindings, RecordFailure> {
    let candidate_present = present(registry, &query.candidate).await?;
    let verification = if candidate_present { Some(verification(registry, query, memory).await?) } else { None };
    let akmods_present = present(registry, &query.akmods).await?;
    Ok(RecordFindings { candidate_present, verification, akmods_present })
}

/// Whether `NAME@sha256:...` is in the registry (an absent answer is `false`, never an error).
async fn present<R: RegistryClient + ?Sized>(registry: &R, image: &str) -> Result<bool, RecordFailure> {
    let reference = ImageRef::parse(image).map_err(|e| failure(None, None, e.to_string()))?;
    let expected = reference.digest().unwrap_or_default().to_string();
    match registry.resolve_digest(&reference).await {
        Ok(digest) if digest == expected => Ok(true),
        Ok(digest) => Err(failure(
            None,
            None,
            format!("the registry answered digest {digest} for {image}; refusing to trust either"),
        )),
        Err(e) if e.is_absent() => Ok(false),
        Err(e) => Err(failure(e.class(), e.retry_after(), e.to_string())),
    }
}

async fn verification<R: RegistryClient + ?Sized>(
    registry: &R,
    query: &RecordQuery,
    memory: &ScanMemory,
) -> Result<VerificationResult, RecordFailure> {
    let not_verified = |message: String| VerificationResult {
        verified: false,
        kernel_releases: Vec::new(),
        bytes_read: 0,
        message: Some(message),
        platform_digest: None,
    };
    let parse = |text: &str| ImageRef::parse(text).map_err(|e| e.to_string());
    let request = parse(&query.candidate).and_then(|image| {
        Ok(VerifyQuery {
            image,
            kernel_releases: query.kernel_releases.clone(),
            base_image: query.base_image.as_deref().map(parse).transpose()?,
        })
    });
    let request = match request {
        Ok(request) => request,
        Err(message) => return Ok(not_verified(message)),
    };
    match verify::verify(registry, &request, memory).await {
        Ok(verification) => Ok(verification.result()),
        // Unreadable for now (or not allowed): no verdict.
        Err(e) if matches!(e.class(), Some(c) if c.is_transient() || c == AnswerClass::Unauthorized) => {
            let retry_after = match &e {
                verify::Error::Registry { source, .. } | verify::Error::Base { source, .. } => source.retry_after(),
                _ => None,
            };
            Err(failure(e.class(), retry_after, e.to_string()))
        }
        // Content that cannot be verified (a layer gone, malformed, a bad kernel release):
        // not verified.
        Err(e) => Ok(not_verified(e.to_string())),
    }
}

fn failure(class: Option<AnswerClass>, retry_after: Option<Duration>, message: String) -> RecordFailure {
    let (reason, transient) = match class {
        Some(c) if c.is_transient() => (reasons::REGISTRY_UNAVAILABLE, true),
        Some(AnswerClass::Unauthorized) => (reasons::REGISTRY_UNAUTHORIZED, false),
        _ => (reasons::REGISTRY_ERROR, false),
    };
    RecordFailure { reason, transient, message, retry_after }
}

/// The verdict on findings: `Ok` when the recorded run may be promoted, else what failed (the
/// message of a `RunRecordNotVerified` refusal).
pub fn judge(query: &RecordQuery, findings: &RecordFindings) -> Result<(), String> {
    let run = query.run;
    let mut failed = Vec::new();
    if !findings.candidate_present {
        failed.push(format!("candidate {} is not in the candidate repository", query.candidate));
    }
    match &findings.verification {
        Some(v) if !v.verified => failed.push(format!(
            "candidate {} does not verify for kernels {}: {}",
            query.candidate,
            query.kernel_releases.join(" "),
            v.message.as_deref().unwrap_or("no reason given")
        )),
        _ => {}
    }
    if !findings.akmods_present {
        failed.push(format!("akmods image {} is not in the candidate akmods repository", query.akmods));
    }
    if failed.is_empty() {
        return Ok(());
    }
    Err(format!(
        "run {run} is known only from its run record, and the registry does not confirm it: {}; nothing is promoted (a run record is re-verified before it is trusted); pin a run that verified",
        failed.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::build::BuildMode;
    use crate::registry::fake::FakeRegistry;
    use crate::test_support::{build, digest};

    const K: &str = "6.18.13-200.fc43.x86_64";

    fn record(candidate: &str, akmods: &str) -> RecordedRun {
        RecordedRun {
            number: 3,
            mode: BuildMode::Main,
            source_revision: "02701fe0000000000000000000000000000000ab".into(),
            fedora_version: "43".into(),
            candidate_image: candidate.into(),
            candidate_digest: candidate.rsplit_once('@').map(|(_, d)| d.to_string()).unwrap_or_default(),
            akmods_image: akmods.into(),
            kernel_releases: vec![K.into()],
            base_image: String::new(),
        }
    }

    fn repositories() -> (String, String) {
        let b = build("Main", "");
        (
            repository_ref(&b.spec, &b.spec.registry.candidate_image),
            repository_ref(&b.spec, &b.spec.registry.candidate_akmods),
        )
    }

    #[test]
    fn a_record_must_point_into_the_builds_repositories_by_digest() {
        let b = build("Main", "");
        let (candidates, akmods) = repositories();
        let good = record(&format!("{candidates}@{}", digest('c')), &format!("{akmods}@{}", digest('a')));
        let q = query(&b, &good).unwrap();
        assert_eq!(q.candidate, format!("{candidates}@{}", digest('c')));
        assert_eq!((q.akmods.as_str(), q.base_image.as_deref()), (format!("{akmods}@{}", digest('a')).as_str(), None));
        let with_base =
            RecordedRun { base_image: format!("ghcr.io/ublue-os/kinoite-main@{}", digest('b')), ..good.clone() };
        assert!(query(&b, &with_base).unwrap().base_image.is_some());
        let tagged_base = RecordedRun { base_image: "ghcr.io/ublue-os/kinoite-main:latest".into(), ..good.clone() };
        assert_eq!(query(&b, &tagged_base).unwrap().base_image, None, "a moving base is not used");

        let refused = |r: RecordedRun| query(&b, &r).unwrap_err();
        let elsewhere = record(&format!("evil.example/x/y@{}", digest('c')), &good.akmods_image);
        assert!(refused(elsewhere).contains("is not in the build's candidate repository"));
        let tagged = RecordedRun { candidate_image: format!("{candidates}:3-43"), ..good.clone() };
        assert!(refused(tagged).contains("not pinned by digest"));
        let mismatch = RecordedRun { candidate_digest: digest('d'), ..good.clone() };
        assert!(refused(mismatch).contains("does not match its candidate digest"));
        let foreign_akmods = RecordedRun { akmods_image: format!("{candidates}@{}", digest('a')), ..good.clone() };
        assert!(refused(foreign_akmods).contains("not in the build's akmods repository"));
        let no_kernels = RecordedRun { kernel_releases: vec![], ..good.clone() };
        assert!(refused(no_kernels).contains("names no kernel releases"));
        let garbage = RecordedRun { candidate_image: "not a reference".into(), ..good };
        assert!(refused(garbage).starts_with("run record of run 3 cannot be trusted"));
    }

    fn verified(ok: bool) -> Option<VerificationResult> {
        Some(VerificationResult {
            verified: ok,
            kernel_releases: vec![],
            bytes_read: 0,
            message: (!ok).then(|| format!("missing a ZFS module payload for kernels {K}")),
            platform_digest: None,
        })
    }

    #[test]
    fn the_verdict_names_every_check_that_failed() {
        let (candidates, akmods) = repositories();
        let q = query(
            &build("Main", ""),
            &record(&format!("{candidates}@{}", digest('c')), &format!("{akmods}@{}", digest('a'))),
        )
        .unwrap();
        let all = RecordFindings { candidate_present: true, verification: verified(true), akmods_present: true };
        assert_eq!(judge(&q, &all), Ok(()));
        let absent = RecordFindings { candidate_present: false, verification: None, ..all.clone() };
        assert!(judge(&q, &absent).unwrap_err().contains("is not in the candidate repository"));
        let unverified = RecordFindings { verification: verified(false), ..all.clone() };
        let message = judge(&q, &unverified).unwrap_err();
        assert!(
            message.contains(&format!("does not verify for kernels {K}")) && message.contains("missing a ZFS"),
            "{message}"
        );
        let no_akmods = RecordFindings { akmods_present: false, ..all };
        let message = judge(&q, &no_akmods).unwrap_err();
        assert!(
            message.contains("akmods image") && message.starts_with("run 3 is known only from its run record"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn the_checks_read_the_registry() {
        let (candidates, akmods) = repositories();
        let registry = FakeRegistry::new();
        // Nothing in the registry: both absent, no verification attempted.
        let q = query(
            &build("Main", ""),
            &record(&format!("{candidates}@{}", digest('c')), &format!("{akmods}@{}", digest('a'))),
        )
        .unwrap();
        let c = check(&registry, &q, &ScanMemory::default()).await;
        assert_eq!(c.query, q);
        assert_eq!(
            c.result,
            Ok(RecordFindings { candidate_present: false, verification: None, akmods_present: false })
        );
    }
}
