//! Runs a whole promotion in one go (the command line): observe, plan, every pending step in
//! order, stopping at the first failure. The report says what was written, so a refusal shows
//! that nothing moved and a failure shows how far it got (running it again completes it).
//! A controller drives the same steps itself to persist progress between them.

use serde::Serialize;

use super::Error;
use super::execute::{BlobCounts, StepOutcome, execute_step};
use super::observe::observe;
use super::plan::{Plan, StepKind, plan};
use super::request::{ABSENT, PromotionRequest};
use crate::registry::RegistryClient;

/// How a promotion ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PromotionOutcome {
    /// Tags were written and confirmed.
    Promoted,
    /// Everything was already in place; nothing was written, every tag confirmed.
    AlreadyPromoted,
    /// A precondition failed (see `reason`).
    Refused,
    /// A registry error stopped it (see `message`); running it again resumes.
    Failed,
}

/// A tag the promotion writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TagReport {
    /// `repository:tag`.
    pub reference: String,
    /// The digest it was confirmed at (absent until its step is done).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Whether this run wrote it (false: it already pointed there, or its step did not run).
    pub written: bool,
}

/// The akmods alignment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AkmodsReport {
    /// The candidate akmods as given.
    pub candidate: String,
    /// Its digest, resolved once before anything was written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate_digest: Option<String>,
    pub stable: TagReport,
}

/// The signature of the stable digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SignatureReport {
    /// `repository:sha256-<hex>.sig`.
    pub reference: String,
    /// Fingerprint of the signing key's public key.
    pub key: String,
    /// Digest of the `.sig` manifest holding the verified signature (absent until signed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest_digest: Option<String>,
    /// Whether this run wrote it (false: it was already there, or the step did not run).
    pub written: bool,
}

/// One step as executed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepReport {
    pub name: String,
    /// `Done`, `Pending` (not reached) or `Failed`.
    pub state: &'static str,
    /// Whether the step wrote anything in this run.
    pub wrote: bool,
}

/// The command's JSON result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PromotionReport {
    pub result: PromotionOutcome,
    /// The refusal reason (CamelCase) when refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Why it was refused or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Whether this run wrote anything to a registry.
    pub registry_changed: bool,
    /// The candidate, `repository@digest`.
    pub candidate: String,
    pub stable_repository: String,
    /// What the guarded (first) stable tag had to point at: a digest or `absent`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_stable_digest: Option<String>,
    /// What it pointed at before this run: a digest or `absent` (to roll back, promote that).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_stable_digest: Option<String>,
    pub tags: Vec<TagReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_tag: Option<TagReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub akmods: Option<AkmodsReport>,
    /// With signing: the signature of the stable digest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureReport>,
    /// The provenance artifact pushed after the promotion (`promote --provenance`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provenance: Option<crate::pipeline::provenance::Pushed>,
    /// Blobs of the image and akmods copies.
    pub blobs: BlobCounts,
    /// Manifests pushed (by digest and under tags).
    pub manifests_pushed: u32,
    pub steps: Vec<StepReport>,
}

/// A finished [`promote`]: the report, and the error that ended it early.
#[derive(Debug)]
pub struct PromotionRun {
    pub report: PromotionReport,
    pub error: Option<Error>,
}

/// Observes, plans and executes every pending step of `request`.
pub async fn promote<R: RegistryClient + ?Sized>(registry: &R, request: &PromotionRequest) -> PromotionRun {
    let mut report = PromotionReport::new(request);
    let observed = match observe(registry, request).await {
        Ok(observed) => observed,
        Err(e) => return report.end(e),
    };
    let plan = match plan(request, &observed) {
        Ok(plan) => plan,
        Err(e) => return report.end(e),
    };
    report.planned(&plan);
    for (i, step) in plan.steps.iter().enumerate().filter(|(_, s)| !s.done) {
        tracing::info!(step = %step.kind.name(), "promotion step");
        match execute_step(registry, &plan, &step.kind).await {
            Ok(outcome) => report.record(i, &plan, &step.kind, &outcome),
            Err(e) => {
                report.steps[i].state = "Failed";
                return report.end(e);
            }
        }
    }
    report.result =
        if report.registry_changed { PromotionOutcome::Promoted } else { PromotionOutcome::AlreadyPromoted };
    PromotionRun { report, error: None }
}

fn absent_or(digest: Option<&str>) -> String {
    digest.unwrap_or(ABSENT).to_string()
}

impl PromotionReport {
    fn new(request: &PromotionRequest) -> PromotionReport {
        let tag =
            |t: &str| TagReport { reference: format!("{}:{t}", request.stable.name()), digest: None, written: false };
        PromotionReport {
            result: PromotionOutcome::Failed,
            reason: None,
            message: None,
            registry_changed: false,
            candidate: request.candidate.to_string(),
            stable_repository: request.stable.name(),
            expected_stable_digest: None,
            previous_stable_digest: None,
            tags: request.tags.iter().map(|t| tag(t)).collect(),
            audit_tag: request.audit_tag.as_deref().map(tag),
            akmods: request.akmods.as_ref().map(|a| AkmodsReport {
                candidate: a.candidate.to_string(),
                candidate_digest: None,
                stable: TagReport { reference: a.stable.to_string(), digest: None, written: false },
            }),
            signature: match (&request.signing, request.candidate.digest()) {
                (Some(key), Some(digest)) => Some(SignatureReport {
                    reference: crate::signing::signature_tag(digest)
                        .map(|tag| format!("{}:{tag}", request.stable.name()))
                        .unwrap_or_default(),
                    key: key.public().fingerprint(),
                    manifest_digest: None,
                    written: false,
                }),
                _ => None,
            },
            provenance: None,
            blobs: BlobCounts::default(),
            manifests_pushed: 0,
            steps: Vec::new(),
        }
    }

    fn planned(&mut self, plan: &Plan) {
        self.expected_stable_digest = Some(absent_or(plan.expected_stable.as_deref()));
        self.previous_stable_digest = Some(absent_or(plan.previous_stable.as_deref()));
        if let Some(akmods) = &mut self.akmods {
            akmods.candidate_digest = plan.akmods_digest().map(str::to_string);
        }
        for step in &plan.steps {
            if step.done {
                let digest = plan.step_digest(&step.kind);
                if let Some(tag) = self.tag_mut(&step.kind) {
                    tag.digest = digest;
                }
            }
        }
        self.steps = plan
            .steps
            .iter()
            .map(|s| StepReport { name: s.kind.name(), state: if s.done { "Done" } else { "Pending" }, wrote: false })
            .collect();
    }

    fn record(&mut self, index: usize, plan: &Plan, kind: &StepKind, outcome: &StepOutcome) {
        self.steps[index].state = "Done";
        self.steps[index].wrote = outcome.wrote;
        self.registry_changed |= outcome.wrote;
        self.blobs.merge(outcome.blobs);
        self.manifests_pushed += outcome.manifests_pushed;
        let digest = outcome.digest.clone().or_else(|| plan.step_digest(kind));
        if let (StepKind::Sign, Some(signature)) = (kind, &mut self.signature) {
            signature.manifest_digest = outcome.digest.clone();
            signature.written |= outcome.wrote;
        }
        if let Some(tag) = self.tag_mut(kind) {
            tag.digest = digest;
            tag.written |= outcome.wrote;
        }
    }

    fn tag_mut(&mut self, kind: &StepKind) -> Option<&mut TagReport> {
        match kind {
            StepKind::AuditTag => self.audit_tag.as_mut(),
            StepKind::StableTag { tag, .. } => {
                let suffix = format!(":{tag}");
                self.tags.iter_mut().find(|t| t.reference.ends_with(&suffix))
            }
            StepKind::AkmodsTag => self.akmods.as_mut().map(|a| &mut a.stable),
            StepKind::CopyImage | StepKind::CopyAkmods | StepKind::Sign | StepKind::Confirm => None,
        }
    }

    fn end(mut self, error: Error) -> PromotionRun {
        match &error {
            Error::Refused { reason, message } => {
                self.result = PromotionOutcome::Refused;
                self.reason = Some(reason.to_string());
                self.message = Some(message.clone());
            }
            Error::Signing { .. } => {
                self.result = PromotionOutcome::Refused;
                self.reason = error.refusal().map(|r| r.to_string());
                self.message = Some(error.to_string());
            }
            other => {
                self.result = PromotionOutcome::Failed;
                self.message = Some(other.to_string());
            }
        }
        PromotionRun { report: self, error: Some(error) }
    }
}
