//! Which run a Promotion wants on its stable channel, and whether that run may be promoted at
//! all. Pure: reads the Promotion's spec, the build's status and, for a pinned run that is no
//! longer in the build's bounded history, the run records.
//!
//! A run is promotable when it is a `Main` run that `Succeeded` with a verified candidate
//! (design §3 invariants 1 and 8). Where a run is looked up:
//! - `status.lastSucceededRun`, `status.history` and a finished `status.currentRun`;
//! - otherwise the run-record ConfigMaps `<build>-run-<n>` (their `build-provenance.json` is
//!   written only when a run pushed and verified its candidate; the build controller keeps the
//!   records of runs a Promotion points at past `historyLimit`). Anyone who may write
//!   ConfigMaps can write one, so a recorded run is [`Selection::Recorded`]: it is promoted
//!   only after the registry confirmed it ([`super::trust`]).

use crate::api::build::{BuildMode, RunPhase, RunSummary, ZfsImageBuild};
use crate::api::promotion::{PromotionPolicy, PromotionSpec};
use crate::pipeline::records::{RecordedRun, summary_of};

use super::reasons;

/// A verified run of a Main build, with what a promotion of it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub run: i64,
    pub source_revision: String,
    /// `name@sha256:...` of the candidate image.
    pub image: String,
    pub digest: String,
    /// `name@sha256:...` of the akmods image the run built with.
    pub akmods_image: Option<String>,
    pub fedora_version: Option<String>,
}

/// What the spec asks for, given the build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// This verified run.
    Found(Candidate),
    /// Nothing to promote yet: `Auto` before the first verified run, or a pinned run still in
    /// progress. Not an error: the build's next status change brings it.
    Waiting(String),
    /// A run known only from its run record: promotable only once the registry confirmed the
    /// record ([`super::trust`]); the record is what to re-check.
    Recorded(Candidate, Box<RecordedRun>),
    /// Never promotable as asked (a `Stalled` reason and message).
    Refused { reason: &'static str, message: String },
    /// The pinned run is not in the build's status: read the run records and select again.
    NeedRecords,
}

/// Selects the run to promote. `records` is `None` when the run records were not read (they
/// are only needed for a pinned run outside the build's status).
pub fn select(spec: &PromotionSpec, build: &ZfsImageBuild, records: Option<&[RecordedRun]>) -> Selection {
    let name = build_name(build);
    if build.spec.mode != BuildMode::Main {
        return Selection::Refused {
            reason: reasons::BUILD_NOT_PROMOTABLE,
            message: format!(
                "ZfsImageBuild {name} is a {:?} build: only Main builds are promotable (Branch and Validate runs never are); point spec.buildRef at a Main build",
                build.spec.mode
            ),
        };
    }
    let status = build.status.as_ref();
    let known: Vec<RunSummary> = status
        .map(|s| {
            let current = s.current_run.as_ref().filter(|r| r.phase.is_terminal()).map(summary_of);
            s.last_succeeded_run.iter().cloned().chain(s.history.iter().cloned()).chain(current).collect()
        })
        .unwrap_or_default();
    let running = status.and_then(|s| s.current_run.as_ref()).filter(|r| !r.phase.is_terminal());

    match spec.policy {
        PromotionPolicy::Auto => match status.and_then(|s| s.last_succeeded_run.as_ref()) {
            Some(run) => check(&name, run),
            None => Selection::Waiting(format!("waiting for the first verified run of ZfsImageBuild {name}")),
        },
        PromotionPolicy::Pinned => {
            let Some(pinned) = &spec.candidate else {
                return Selection::Refused {
                    reason: reasons::INVALID_SPEC,
                    message: "policy Pinned needs spec.candidate.run or spec.candidate.digest".into(),
                };
            };
            let pin = match (pinned.run, pinned.digest.as_deref()) {
                (Some(run), None) => Pin::Run(run),
                (None, Some(digest)) => Pin::Digest(digest),
                _ => {
                    return Selection::Refused {
                        reason: reasons::INVALID_SPEC,
                        message: "set exactly one of spec.candidate.run and spec.candidate.digest".into(),
                    };
                }
            };
            let matches = |n: i64, digest: Option<&str>| pin.matches(n, digest);
            // Several entries can name one run (lastSucceededRun and history) or one digest (a
            // rebuild with identical content): a verified one wins, then the newest.
            let mut found: Vec<&RunSummary> =
                known.iter().filter(|r| matches(r.number, r.candidate_digest.as_deref())).collect();
            found.sort_by_key(|r| (promotable(r), r.number));
            if let Some(run) = found.last() {
                return check(&name, run);
            }
            let candidate_digest = running.and_then(|r| r.candidate.as_ref()).map(|c| c.digest.as_str());
            if let Some(run) = running.filter(|r| matches(r.number, candidate_digest)) {
                return Selection::Waiting(format!(
                    "run {} of ZfsImageBuild {name} is still in progress ({:?}); it is promoted once it verified",
                    run.number, run.phase
                ));
            }
            let Some(records) = records else { return Selection::NeedRecords };
            let mut recorded: Vec<&RecordedRun> =
                records.iter().filter(|r| matches(r.number, Some(&r.candidate_digest))).collect();
            recorded.sort_by_key(|r| r.number);
            match recorded.last() {
                Some(run) if run.mode != BuildMode::Main => Selection::Refused {
                    reason: reasons::BUILD_NOT_PROMOTABLE,
                    message: format!(
                        "run {} of ZfsImageBuild {name} was a {:?} run: only Main runs are promotable",
                        run.number, run.mode
                    ),
                },
                Some(run) => Selection::Recorded(
                    Candidate {
                        run: run.number,
                        source_revision: run.source_revision.clone(),
                        image: run.candidate_image.clone(),
                        digest: run.candidate_digest.clone(),
                        akmods_image: Some(run.akmods_image.clone()),
                        fedora_version: Some(run.fedora_version.clone()),
                    },
                    Box::new((*run).clone()),
                ),
                None => Selection::Refused {
                    reason: reasons::RUN_NOT_FOUND,
                    message: format!(
                        "no run of ZfsImageBuild {name} has {pin}: not in its status nor in its run records; pin a verified run (kubectl get zib {} -o yaml: status.history)",
                        build.metadata.name.as_deref().unwrap_or_default()
                    ),
                },
            }
        }
    }
}

/// What `spec.candidate` pins.
#[derive(Debug, Clone, Copy)]
enum Pin<'a> {
    Run(i64),
    Digest(&'a str),
}

impl Pin<'_> {
    fn matches(self, run: i64, digest: Option<&str>) -> bool {
        match self {
            Pin::Run(n) => n == run,
            Pin::Digest(d) => digest == Some(d),
        }
    }
}

impl std::fmt::Display for Pin<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pin::Run(n) => write!(f, "run {n}"),
            Pin::Digest(d) => write!(f, "candidate digest {d}"),
        }
    }
}

fn promotable(run: &RunSummary) -> bool {
    run.mode == BuildMode::Main && run.phase == RunPhase::Succeeded && run.verified && run.candidate_digest.is_some()
}

/// A known run as a candidate, or why it is not one.
fn check(build: &str, run: &RunSummary) -> Selection {
    let n = run.number;
    let why = run.message.as_deref().or(run.reason.as_deref()).unwrap_or("no reason recorded");
    if run.mode != BuildMode::Main {
        return Selection::Refused {
            reason: reasons::BUILD_NOT_PROMOTABLE,
            message: format!(
                "run {n} of ZfsImageBuild {build} was a {:?} run: only Main runs are promotable",
                run.mode
            ),
        };
    }
    let refused = |message: String| Selection::Refused { reason: reasons::RUN_NOT_VERIFIED, message };
    match run.phase {
        RunPhase::Succeeded => {}
        RunPhase::Failed => {
            return refused(format!(
                "run {n} of ZfsImageBuild {build} failed ({why}): it is never promoted; pin a verified run"
            ));
        }
        RunPhase::Superseded => {
            return refused(format!(
                "run {n} of ZfsImageBuild {build} was superseded by a newer run and never verified: it is never promoted; pin a verified run"
            ));
        }
        phase => {
            return Selection::Waiting(format!("run {n} of ZfsImageBuild {build} is still in progress ({phase:?})"));
        }
    }
    let (Some(image), Some(digest), true) = (&run.candidate_image, &run.candidate_digest, run.verified) else {
        return refused(format!(
            "run {n} of ZfsImageBuild {build} has no verified candidate ({why}): it is never promoted"
        ));
    };
    Selection::Found(Candidate {
        run: n,
        source_revision: run.source_revision.clone(),
        image: image.clone(),
        digest: digest.clone(),
        akmods_image: run.akmods_image.clone(),
        fedora_version: run.fedora_version.clone(),
    })
}

fn build_name(build: &ZfsImageBuild) -> String {
    format!(
        "{}/{}",
        build.metadata.namespace.as_deref().unwrap_or_default(),
        build.metadata.name.as_deref().unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{build, digest};

    fn spec(yaml: &str) -> PromotionSpec {
        serde_saphyr::from_str(&format!("buildRef: {{name: zib}}\n{yaml}")).unwrap()
    }

    fn summary(n: i64, phase: &str, verified: bool, d: char) -> serde_json::Value {
        serde_json::json!({
            "number": n, "trigger": "Schedule", "phase": phase, "mode": "Main",
            "sourceRevision": "02701fe0000000000000000000000000000000ab", "verified": verified,
            "startedAt": "2026-01-01T00:00:00Z", "fedoraVersion": "43",
            "candidateImage": format!("ghcr.io/danathar/kinoite-zfs-candidate@{}", digest(d)),
            "candidateDigest": digest(d),
            "akmodsImage": format!("ghcr.io/danathar/akmods-candidate@{}", digest('a')),
            "reason": if verified { "Succeeded" } else { "VerificationFailed" },
        })
    }

    /// Runs 1 (succeeded), 2 (failed), 3 (superseded), 4 (succeeded, last), 5 in progress.
    fn with_runs(mode: &str) -> ZfsImageBuild {
        let mut b = build(mode, "");
        b.status = Some(
            serde_json::from_value(serde_json::json!({
                "lastSucceededRun": summary(4, "Succeeded", true, '4'),
                "history": [summary(4, "Succeeded", true, '4'), summary(3, "Superseded", false, '3'),
                            summary(2, "Failed", false, '2'), summary(1, "Succeeded", true, '1')],
                "currentRun": {"number": 5, "trigger": "Schedule", "phase": "Verifying", "generation": 1, "mode": "Main",
                               "sourceRevision": "x", "startedAt": "2026-01-02T00:00:00Z",
                               "candidate": {"image": format!("ghcr.io/danathar/kinoite-zfs-candidate@{}", digest('5')), "digest": digest('5')}},
            }))
            .unwrap(),
        );
        b
    }

    fn run_of(selection: Selection) -> i64 {
        match selection {
            Selection::Found(c) => c.run,
            other => panic!("expected a candidate, got {other:?}"),
        }
    }

    fn refused(selection: Selection) -> &'static str {
        match selection {
            Selection::Refused { reason, .. } => reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn auto_takes_the_last_succeeded_run() {
        let c = match select(&spec("policy: Auto"), &with_runs("Main"), None) {
            Selection::Found(c) => c,
            other => panic!("{other:?}"),
        };
        assert_eq!((c.run, c.digest.as_str(), c.fedora_version.as_deref()), (4, digest('4').as_str(), Some("43")));
        assert!(c.akmods_image.unwrap().ends_with(&digest('a')));
        assert!(matches!(select(&spec("policy: Auto"), &build("Main", ""), None), Selection::Waiting(_)));
    }

    #[test]
    fn pinned_by_run_or_digest() {
        let b = with_runs("Main");
        assert_eq!(run_of(select(&spec("policy: Pinned\ncandidate: {run: 1}"), &b, None)), 1);
        let by_digest = format!("policy: Pinned\ncandidate: {{digest: '{}'}}", digest('1'));
        assert_eq!(run_of(select(&spec(&by_digest), &b, None)), 1);
        // Still in progress: waiting, not refused.
        assert!(matches!(select(&spec("policy: Pinned\ncandidate: {run: 5}"), &b, None), Selection::Waiting(_)));
        let running_digest = format!("policy: Pinned\ncandidate: {{digest: '{}'}}", digest('5'));
        assert!(matches!(select(&spec(&running_digest), &b, None), Selection::Waiting(_)));
    }

    #[test]
    fn failed_superseded_and_unknown_runs_are_refused() {
        let b = with_runs("Main");
        assert_eq!(refused(select(&spec("policy: Pinned\ncandidate: {run: 2}"), &b, None)), reasons::RUN_NOT_VERIFIED);
        assert_eq!(refused(select(&spec("policy: Pinned\ncandidate: {run: 3}"), &b, None)), reasons::RUN_NOT_VERIFIED);
        let failed_digest = format!("policy: Pinned\ncandidate: {{digest: '{}'}}", digest('2'));
        assert_eq!(refused(select(&spec(&failed_digest), &b, None)), reasons::RUN_NOT_VERIFIED);
        // Unknown: the records are needed first, then it is refused.
        let unknown = format!("policy: Pinned\ncandidate: {{digest: '{}'}}", digest('9'));
        assert_eq!(select(&spec(&unknown), &b, None), Selection::NeedRecords);
        assert_eq!(refused(select(&spec(&unknown), &b, Some(&[]))), reasons::RUN_NOT_FOUND);
        assert_eq!(
            refused(select(&spec("policy: Pinned\ncandidate: {run: 9}"), &b, Some(&[]))),
            reasons::RUN_NOT_FOUND
        );
    }

    #[test]
    fn branch_and_validate_builds_are_never_promotable() {
        for mode in ["Branch", "Validate"] {
            let extra = if mode == "Branch" { "  branch: feature\n" } else { "" };
            let mut b = build(mode, extra);
            b.status = with_runs("Main").status;
            assert_eq!(refused(select(&spec("policy: Auto"), &b, None)), reasons::BUILD_NOT_PROMOTABLE, "{mode}");
            assert_eq!(
                refused(select(&spec("policy: Pinned\ncandidate: {run: 1}"), &b, None)),
                reasons::BUILD_NOT_PROMOTABLE
            );
        }
    }

    #[test]
    fn runs_outside_the_history_come_from_their_records() {
        let b = with_runs("Main");
        let record = RecordedRun {
            number: 0,
            mode: BuildMode::Main,
            source_revision: "abcdef0123".into(),
            fedora_version: "42".into(),
            candidate_image: format!("ghcr.io/danathar/kinoite-zfs-candidate@{}", digest('0')),
            candidate_digest: digest('0'),
            akmods_image: format!("ghcr.io/danathar/akmods-candidate@{}", digest('e')),
            kernel_releases: vec!["6.18.13-200.fc43.x86_64".into()],
            base_image: String::new(),
        };
        let pinned = spec("policy: Pinned\ncandidate: {run: 0}");
        // Run 0 fails the schema (minimum 1) but the selection does not depend on it.
        assert_eq!(select(&pinned, &b, None), Selection::NeedRecords);
        let c = match select(&pinned, &b, Some(std::slice::from_ref(&record))) {
            Selection::Recorded(c, r) if *r == record => c,
            other => panic!("{other:?}"),
        };
        assert_eq!((c.fedora_version.as_deref(), c.source_revision.as_str()), (Some("42"), "abcdef0123"));
        let branch = RecordedRun { mode: BuildMode::Branch, ..record };
        assert_eq!(refused(select(&pinned, &b, Some(&[branch]))), reasons::BUILD_NOT_PROMOTABLE);
    }

    #[test]
    fn a_run_in_history_that_did_not_verify_is_refused_even_if_it_succeeded() {
        let mut b = with_runs("Main");
        let status = b.status.as_mut().unwrap();
        status.history[3].verified = false;
        status.history[3].message = Some("verification skipped".into());
        assert_eq!(refused(select(&spec("policy: Pinned\ncandidate: {run: 1}"), &b, None)), reasons::RUN_NOT_VERIFIED);
    }
}
