//! One reconcile of a `Promotion`: observe → decide (pure, [`super::plan::decide`]) → drive the
//! promotion steps with the status written before and after each ([`super::drive`]) → final
//! status → Events → requeue.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info, warn};

use super::claims::{Claim, conflict};
use super::controller::{CONTROLLER, Context, Error};
use super::drive::{Begin, Driven, Journal, drive};
use super::plan::{Decision, Input, Outcome, decide, events, next_status};
use super::reasons;
use super::trust;
use crate::api::promotion::{PromotionProgress, PromotionStatus, StableState};
use crate::api::{Promotion, ZfsImageBuild};
use crate::controllers::decoded::{Decoded, record_unreadable};
use crate::controllers::runtime::{CACHE_RETRY, CACHE_WAIT, MAX_EVENT_NOTE, ready, secret_credentials, truncate};
use crate::controllers::signing::read_key;
use crate::jobs;
use crate::jobs::{LABEL_BUILD, LABEL_STEP, MANAGER, STEP_RUN_RECORD, build_label_value};
use crate::pipeline::provenance::{self, StableSection};
use crate::pipeline::records::{PROVENANCE_KEY, RecordedRun, parse_provenance};
use crate::pipeline::targets::CACHE_TAG_PREFIX;
use crate::registry::{ImageRef, OciRegistry};
use crate::signing::PrivateKey;

/// A short pause before looking at the channel again after a promotion completed (a newer run
/// may have arrived while it was in flight).
const AFTER_PROMOTION: Duration = Duration::from_secs(1);

pub(super) async fn reconcile(cached: Arc<Decoded<Promotion>>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    ctx.metrics.reconcile_started(CONTROLLER);
    let namespace = cached.namespace().unwrap_or_default();
    let name = cached.name_any();
    let span = tracing::info_span!(
        "reconcile",
        kind = "Promotion",
        namespace = %namespace,
        name = %name,
        generation = tracing::field::Empty
    );
    let result = tracing::Instrument::instrument(reconcile_promotion(&namespace, &name, &ctx), span).await;
    ctx.metrics.reconcile_duration(CONTROLLER, started.elapsed().as_secs_f64());
    if let (Ok(Reconciled::Settled | Reconciled::SettledAfter(_)), Some(uid)) = (&result, cached.uid()) {
        ctx.succeeded(&uid);
    }
    result.map(|r| r.action())
}

/// What a reconcile ended with.
enum Reconciled {
    /// Nothing failed: wait for a change (or the given time).
    Settled,
    /// Settled, come back after this.
    SettledAfter(Duration),
    /// A transient failure: retry after this (backoff, not reset).
    Retry(Duration),
}

impl Reconciled {
    fn action(&self) -> Action {
        match self {
            Reconciled::Settled => Action::await_change(),
            Reconciled::SettledAfter(after) | Reconciled::Retry(after) => Action::requeue(*after),
        }
    }
}

async fn reconcile_promotion(namespace: &str, name: &str, ctx: &Context) -> Result<Reconciled, Error> {
    let api = Api::<Promotion>::namespaced(ctx.client.clone(), namespace);
    // status.inProgress is the journal of a promotion in flight; the cache can be behind this
    // controller's last write of it, and planning from a stale journal could start a second
    // promotion beside the first. A read from the API server is current.
    let decoded = Api::<Decoded<Promotion>>::namespaced(ctx.client.clone(), namespace);
    let promotion = match decoded.get_opt(name).await? {
        None => return Ok(Reconciled::Settled),
        Some(Decoded::Typed(promotion)) => promotion,
        Some(Decoded::Unreadable(unreadable)) => {
            record_unreadable(&decoded, &ctx.recorder, &unreadable, &Time(ctx.now())).await?;
            return Ok(Reconciled::Settled);
        }
    };
    if promotion.meta().deletion_timestamp.is_some() {
        return Ok(Reconciled::Settled);
    }
    let uid = promotion.uid().ok_or_else(|| Error::Metadata(format!("{namespace}/{name}")))?;
    tracing::Span::current().record("generation", promotion.meta().generation);

    // Observe. Claims are computed from the build cache: it must hold a complete list first, or
    // an older Promotion whose build is not cached yet would claim nothing. The wait is bounded
    // so that a cache that cannot list never holds a reconcile, and with it shutdown, forever.
    if tokio::time::timeout(CACHE_WAIT, ready(&ctx.caches.builds)).await.is_err() {
        debug!("build cache not synced yet");
        return Ok(Reconciled::SettledAfter(CACHE_RETRY));
    }
    let build_name = &promotion.spec.build_ref.name;
    let cached_build = match ctx.caches.builds.get(&ObjectRef::new(build_name).within(namespace)) {
        Some(build) => Some(build),
        // A build created just before its Promotion may not be in the cache yet: ask the API
        // server before calling it missing.
        None => Api::<Decoded<ZfsImageBuild>>::namespaced(ctx.client.clone(), namespace)
            .get_opt(build_name)
            .await?
            .map(Arc::new),
    };
    let build = match cached_build.as_deref() {
        None => None,
        Some(Decoded::Typed(build)) => Some(build),
        Some(Decoded::Unreadable(unreadable)) => {
            let message = format!(
                "ZfsImageBuild {build_name} cannot be read by the operator ({}); nothing is promoted from it until it is fixed",
                unreadable.problem
            );
            StatusJournal::new(&api, &promotion, ctx)
                .record(&Outcome::refused(reasons::BUILD_UNREADABLE, message))
                .await?;
            return Ok(Reconciled::SettledAfter(ctx.timing.recheck));
        }
    };
    let claims: Vec<Claim> = ctx
        .caches
        .promotions
        .state()
        .iter()
        .filter_map(|p| p.typed())
        .map(|p| {
            let build_ref = ObjectRef::new(&p.spec.build_ref.name).within(&p.namespace().unwrap_or_default());
            Claim::of(p, ctx.caches.builds.get(&build_ref).as_deref().and_then(Decoded::typed))
        })
        .collect();
    let conflict = conflict(&Claim::of(&promotion, build), &claims);
    let mut input =
        Input { promotion: &promotion, build, records: None, conflict: conflict.as_ref(), record_check: None };
    let mut decision = decide(&input);
    let records;
    if matches!(decision, Decision::NeedRecords)
        && let Some(build) = build
    {
        records = read_records(build, ctx).await?;
        input.records = Some(&records);
        decision = decide(&input);
    }

    let mut journal = StatusJournal::new(&api, &promotion, ctx);
    // A run known only from its record: the registry re-checks it before anything moves.
    let mut checked_with = None;
    let check;
    if let Decision::CheckRecord(query) = &decision {
        let registry = match registry_for(build, namespace, ctx).await? {
            Ok(registry) => registry,
            Err(message) => return unusable_credentials(&mut journal, message, None, ctx).await,
        };
        info!(run = query.run, candidate = %query.candidate, "re-verifying a run known only from its run record");
        check = trust::check(registry.as_ref(), query, ctx.pool.scan_memory()).await;
        input.record_check = Some(&check);
        decision = decide(&input);
        checked_with = Some(registry);
    }
    let retry_after = input.record_check.and_then(|c| c.result.as_ref().err()).and_then(|f| f.retry_after);
    let begin = match decision {
        Decision::Settled(outcome) => {
            journal.record(&outcome).await?;
            return Ok(match outcome {
                Outcome::RegistryFailed { transient: true, .. } => {
                    let delay = ctx.timing.backoff(ctx.failed(&uid)).max(retry_after.unwrap_or_default());
                    Reconciled::Retry(delay)
                }
                Outcome::Refused { .. } | Outcome::RegistryFailed { .. } => {
                    Reconciled::SettledAfter(ctx.timing.recheck)
                }
                _ => Reconciled::Settled,
            });
        }
        // Only without a build (decide asks for records only when it has one), or a record
        // check that did not answer the question asked (decide is pure: never).
        Decision::NeedRecords | Decision::CheckRecord(_) => {
            journal.record(&Outcome::refused(reasons::BUILD_NOT_FOUND, "the build disappeared")).await?;
            return Ok(Reconciled::SettledAfter(ctx.timing.recheck));
        }
        Decision::Start(start) => {
            info!(run = start.candidate.run, digest = %start.candidate.digest, "starting a promotion");
            Begin::New(start)
        }
        Decision::Resume(progress) => {
            info!(run = progress.run, digest = %progress.candidate_digest, "resuming the promotion in flight");
            Begin::Resume(progress)
        }
    };
    let in_progress = match &begin {
        Begin::Resume(progress) => Some(progress.clone()),
        Begin::New(_) => None,
    };

    // The signing key before anything is written (R12.1): missing or unreadable stalls the
    // promotion with nothing moved; a promotion in flight stays recorded for when it is fixed.
    let signing = match &promotion.spec.signing {
        None => None,
        Some(spec) => {
            let secret = &spec.key_secret_ref.name;
            match read_key(&ctx.client, namespace, secret, "spec.signing.keySecretRef").await? {
                Ok(key) => Some(key),
                Err(problem) => {
                    warn!(reason = problem.reason, "signing key unusable");
                    let outcome = Outcome::RegistryFailed {
                        reason: problem.reason,
                        message: problem.message,
                        transient: false,
                        in_progress: in_progress.clone(),
                    };
                    journal.record(&outcome).await?;
                    return Ok(Reconciled::SettledAfter(ctx.timing.recheck));
                }
            }
        }
    };

    // Registry: the build's credentials (a promotion in flight whose build was deleted goes on
    // with the operator's own credentials).
    let registry = match checked_with {
        Some(registry) => registry,
        None => match registry_for(build, namespace, ctx).await? {
            Ok(registry) => registry,
            Err(message) => return unusable_credentials(&mut journal, message, in_progress, ctx).await,
        },
    };
    let Driven { outcome, retry_after } = drive(registry.as_ref(), &mut journal, begin, signing.clone()).await?;
    let outcome = match outcome {
        Outcome::Promoted(mut stable) => {
            stable.provenance = match build {
                Some(build) => publish_provenance(build, &stable, signing.as_ref(), registry.as_ref(), ctx).await?,
                None => None,
            };
            Outcome::Promoted(stable)
        }
        other => other,
    };
    journal.record(&outcome).await?;
    Ok(match &outcome {
        Outcome::Promoted(stable) => {
            info!(run = stable.run, digest = %stable.image_digest, "promoted");
            Reconciled::SettledAfter(AFTER_PROMOTION)
        }
        Outcome::RegistryFailed { transient: true, message, .. } => {
            let attempts = ctx.failed(&uid);
            let delay = ctx.timing.backoff(attempts).max(retry_after.unwrap_or_default());
            info!(attempts, retry_in_ms = delay.as_millis() as u64, %message, "registry unavailable");
            Reconciled::Retry(delay)
        }
        Outcome::RegistryFailed { .. } | Outcome::Refused { .. } => Reconciled::SettledAfter(ctx.timing.recheck),
        _ => Reconciled::Settled,
    })
}

/// Records that the build's credentials cannot be used (the promotion in flight, if any, stays
/// recorded) and waits for a change.
async fn unusable_credentials(
    journal: &mut StatusJournal<'_>,
    message: String,
    in_progress: Option<Box<PromotionProgress>>,
    ctx: &Context,
) -> Result<Reconciled, Error> {
    let outcome =
        Outcome::RegistryFailed { reason: reasons::REGISTRY_UNAUTHORIZED, message, transient: false, in_progress };
    journal.record(&outcome).await?;
    Ok(Reconciled::SettledAfter(ctx.timing.recheck))
}

/// The run records of `build` that hold a provenance document (runs that pushed and verified),
/// from ConfigMaps the build owns. Read only for a pinned run outside the build's status.
async fn read_records(build: &ZfsImageBuild, ctx: &Context) -> Result<Vec<RecordedRun>, Error> {
    let namespace = build.namespace().unwrap_or_default();
    let name = build.name_any();
    let uid = build.uid().unwrap_or_default();
    let selector = format!("{LABEL_BUILD}={},{LABEL_STEP}={STEP_RUN_RECORD}", build_label_value(&name));
    let config_maps = Api::<ConfigMap>::namespaced(ctx.client.clone(), &namespace);
    let mut records = Vec::new();
    for cm in config_maps.list(&ListParams::default().labels(&selector)).await? {
        // Only the build's own records count: a ConfigMap anyone could create must not make a
        // digest promotable.
        let owned = cm.owner_references().iter().any(|o| o.controller == Some(true) && o.uid == uid);
        let Some(text) = cm.data.as_ref().and_then(|d| d.get(PROVENANCE_KEY)) else { continue };
        if !owned {
            continue;
        }
        match parse_provenance(text) {
            Ok(record) => records.push(record),
            Err(e) => warn!(config_map = %cm.name_any(), error = %e, "unreadable run record"),
        }
    }
    debug!(records = records.len(), "run records read");
    Ok(records)
}

/// R13: the run record's `build-provenance.json` gets the stable section and is pushed next to
/// the stable digest as a signed OCI artifact. The promotion is complete already, so a failure
/// here is logged and reported in status (no `provenance`), never undone.
async fn publish_provenance(
    build: &ZfsImageBuild,
    stable: &StableState,
    key: Option<&PrivateKey>,
    registry: &OciRegistry,
    ctx: &Context,
) -> Result<Option<String>, Error> {
    let namespace = build.namespace().unwrap_or_default();
    let name = jobs::run_record_name(&build.name_any(), stable.run);
    let config_maps = Api::<ConfigMap>::namespaced(ctx.client.clone(), &namespace);
    let Some(cm) = config_maps.get_opt(&name).await? else {
        warn!(config_map = %name, "no run record: provenance not published");
        return Ok(None);
    };
    let owned =
        cm.owner_references().iter().any(|o| o.controller == Some(true) && Some(&o.uid) == build.uid().as_ref());
    let Some(document) = cm.data.as_ref().and_then(|d| d.get(PROVENANCE_KEY)).filter(|_| owned) else {
        warn!(config_map = %name, "the run record has no provenance of the build: not published");
        return Ok(None);
    };
    let fedora = parse_provenance(document).map(|r| r.fedora_version).unwrap_or_default();
    let repository = stable.image.split_once('@').map_or(stable.image.as_str(), |(r, _)| r).to_string();
    let akmods = stable.akmods_image.as_deref().and_then(|a| a.split_once('@')).zip(stable.akmods_digest.as_deref());
    let akmods_tag = format!("{CACHE_TAG_PREFIX}-{fedora}");
    let section = StableSection::promoted(
        &repository,
        stable.tags.first().map(String::as_str).unwrap_or("latest"),
        &stable.image_digest,
        &stable.audit_tag,
        akmods.map(|((repo, _), digest)| (repo, akmods_tag.as_str(), digest)),
        stable.signature.clone(),
    );
    let text = match provenance::with_stable(document, &section) {
        Ok(text) => text,
        Err(e) => {
            warn!(config_map = %name, error = %e, "provenance not published");
            return Ok(None);
        }
    };
    let patch = json!({"data": {PROVENANCE_KEY: text}});
    config_maps.patch(&name, &PatchParams::apply(PROVENANCE_MANAGER), &Patch::Merge(patch)).await?;
    let Ok(repo) = ImageRef::parse(&repository) else { return Ok(None) };
    match provenance::push(registry, &repo, &stable.image_digest, &text, key).await {
        Ok(pushed) => {
            info!(artifact = %pushed.artifact, referrers_api = pushed.referrers_api, "provenance pushed");
            Ok(Some(pushed.artifact))
        }
        Err(e) => {
            warn!(error = %e, "provenance not pushed");
            Ok(None)
        }
    }
}

/// Field manager of the run record's stable section (the build owns the rest of the ConfigMap).
const PROVENANCE_MANAGER: &str = "kinoite-zfs-operator-promotion";

/// The registry client for the build: its credentials Secret when it names one, else the
/// operator's `--registry-config`. `Err(message)` when the Secret is missing or unusable (the
/// message names the Secret, never its content).
async fn registry_for(
    build: Option<&ZfsImageBuild>,
    namespace: &str,
    ctx: &Context,
) -> Result<Result<Arc<OciRegistry>, String>, Error> {
    let reference = build.and_then(|b| b.spec.registry.credentials_secret_ref.as_ref());
    let credentials = match reference {
        None => ctx.default_credentials.clone(),
        Some(reference) => {
            let what = format!(
                "credentials Secret {namespace}/{} (the build's spec.registry.credentialsSecretRef)",
                reference.name
            );
            match secret_credentials(&ctx.client, namespace, &reference.name, &what).await? {
                Ok(set) => set,
                Err(message) => return Ok(Err(message)),
            }
        }
    };
    Ok(ctx.pool.client(&credentials).map_err(|e| e.to_string()))
}

/// Persists each outcome as the Promotion's status (server-side apply of the whole status, only
/// when it changed) and emits the Events of the transition.
struct StatusJournal<'a> {
    api: &'a Api<Promotion>,
    promotion: &'a Promotion,
    status: PromotionStatus,
    ctx: &'a Context,
}

impl<'a> StatusJournal<'a> {
    fn new(api: &'a Api<Promotion>, promotion: &'a Promotion, ctx: &'a Context) -> StatusJournal<'a> {
        StatusJournal { api, promotion, status: promotion.status.clone().unwrap_or_default(), ctx }
    }
}

impl Journal for StatusJournal<'_> {
    type Error = Error;

    async fn record(&mut self, outcome: &Outcome) -> Result<(), Error> {
        let next = next_status(&self.status, self.promotion.meta().generation, outcome, &self.now());
        if next == self.status {
            return Ok(());
        }
        let patch = json!({
            "apiVersion": Promotion::api_version(&()),
            "kind": Promotion::kind(&()),
            "status": serde_json::to_value(&next).map_err(Error::Serialize)?,
        });
        self.api
            .patch_status(&self.promotion.name_any(), &PatchParams::apply(MANAGER).force(), &Patch::Apply(patch))
            .await?;
        let reference = self.promotion.object_ref(&());
        for event in events(&self.status, &next) {
            info!(reason = event.reason, note = %event.note, "event");
            self.ctx.metrics.promotion_event(event.reason);
            let published = Event {
                type_: if event.warning { EventType::Warning } else { EventType::Normal },
                reason: event.reason.to_string(),
                note: Some(truncate(&event.note, MAX_EVENT_NOTE)),
                action: event.reason.to_string(),
                secondary: None,
            };
            // Events are notification, not audit: a failed publish is logged, never retried.
            if let Err(e) = self.ctx.recorder.publish(&published, &reference).await {
                warn!(reason = event.reason, error = %e, "cannot publish event");
            }
        }
        self.status = next;
        Ok(())
    }

    fn now(&self) -> Time {
        Time(self.ctx.now())
    }
}
