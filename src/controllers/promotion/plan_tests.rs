//! The Promotion controller without Kubernetes: [`decide`], [`drive`] against the in-memory
//! registry with a journal standing in for the status writes, [`next_status`] and [`events`].
//! Whole promotions, a crash after every single registry write followed by a resume from the
//! recorded status, a newer run during a promotion in flight, refusals, expectations, suspend.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::claims::{Conflict, Target};
use super::drive::{Begin, Driven, Journal, drive};
use super::plan::*;
use super::reasons;
use crate::api::build::ZfsImageBuild;
use crate::api::promotion::{Promotion, PromotionProgress, PromotionResult, PromotionStatus, StepState};
use crate::controllers::conditions::find;
use crate::pipeline::promote::StableExpectation;
use crate::registry::fake::FakeRegistry;
use crate::test_support::{build, digest};

const CANDIDATE: &str = "ghcr.io/danathar/kinoite-zfs-candidate";
const AKMODS_CANDIDATE: &str = "ghcr.io/danathar/kinoite-zfs-bluebuild-akmods-candidate";
const STABLE: &str = "ghcr.io/danathar/kinoite-zfs";
const AKMODS: &str = "ghcr.io/danathar/kinoite-zfs-bluebuild-akmods";
const REV: &str = "02701fe0000000000000000000000000000000ab";

fn at(secs: i64) -> Time {
    Time(Timestamp::from_second(1_700_000_000 + secs).unwrap())
}

fn run(n: i64, image: &str, akmods: &str) -> serde_json::Value {
    serde_json::json!({
        "number": n, "trigger": "Schedule", "phase": "Succeeded", "mode": "Main", "sourceRevision": REV,
        "verified": true, "startedAt": "2026-01-01T00:00:00Z", "fedoraVersion": "43",
        "candidateImage": format!("{CANDIDATE}@{image}"), "candidateDigest": image,
        "akmodsImage": format!("{AKMODS_CANDIDATE}@{akmods}"), "reason": "Succeeded",
    })
}

/// The test build with these runs in history (newest first); the first is the last succeeded.
fn main_build(runs: &[serde_json::Value]) -> ZfsImageBuild {
    let mut b = build("Main", "");
    b.status =
        Some(serde_json::from_value(serde_json::json!({"lastSucceededRun": runs.first(), "history": runs})).unwrap());
    b
}

fn promotion(spec: &str, status: Option<PromotionStatus>) -> Promotion {
    let mut p: Promotion = serde_saphyr::from_str(&format!(
        "apiVersion: kinoite-zfs.io/v1alpha1
kind: Promotion
metadata: {{name: stable, namespace: builds, uid: p-1, generation: 3}}
spec:
  buildRef: {{name: zib}}
{spec}"
    ))
    .unwrap();
    p.status = status;
    p
}

fn decide_for(p: &Promotion, b: Option<&ZfsImageBuild>) -> Decision {
    decide(&Input { promotion: p, build: b, records: None, conflict: None, record_check: None })
}

fn start(decision: Decision) -> Box<Start> {
    match decision {
        Decision::Start(start) => start,
        other => panic!("expected a new promotion, got {other:?}"),
    }
}

fn settled(decision: Decision) -> Outcome {
    match decision {
        Decision::Settled(outcome) => outcome,
        other => panic!("expected a settled outcome, got {other:?}"),
    }
}

fn refusal(decision: Decision) -> &'static str {
    match settled(decision) {
        Outcome::Refused { reason, .. } => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// Records what the controller would write, and how many registry writes had happened when.
struct Recorder<'a> {
    registry: &'a FakeRegistry,
    status: PromotionStatus,
    /// (outcome, registry writes so far)
    entries: Vec<(Outcome, usize)>,
    now: Time,
}

impl<'a> Recorder<'a> {
    fn new(registry: &'a FakeRegistry, status: PromotionStatus) -> Recorder<'a> {
        Recorder { registry, status, entries: Vec::new(), now: at(100) }
    }
}

impl Journal for Recorder<'_> {
    type Error = std::convert::Infallible;

    async fn record(&mut self, outcome: &Outcome) -> Result<(), Self::Error> {
        self.status = next_status(&self.status, Some(3), outcome, &self.now);
        self.entries.push((outcome.clone(), self.registry.writes().len()));
        Ok(())
    }

    fn now(&self) -> Time {
        self.now.clone()
    }
}

/// Runs a promotion as the reconcile does: drive, then record the final outcome.
async fn reconcile(registry: &FakeRegistry, journal: &mut Recorder<'_>, begin: Begin) -> Driven {
    reconcile_signed(registry, journal, begin, None).await
}

async fn reconcile_signed(
    registry: &FakeRegistry,
    journal: &mut Recorder<'_>,
    begin: Begin,
    signing: Option<crate::signing::PrivateKey>,
) -> Driven {
    let driven = drive(registry, journal, begin, signing).await.unwrap();
    journal.record(&driven.outcome).await.unwrap();
    driven
}

struct World {
    registry: FakeRegistry,
    image: String,
    akmods: String,
}

fn world() -> World {
    let registry = FakeRegistry::new();
    let image = registry.add_image(CANDIDATE, Some("7-43"), &[b"base", b"zfs 7"]);
    let akmods = registry.add_image(AKMODS_CANDIDATE, Some("7-43"), &[b"kmods 7"]);
    registry.add_image(AKMODS, Some("main-43"), &[b"old kmods"]);
    World { registry, image, akmods }
}

#[tokio::test]
async fn auto_promotes_the_last_verified_run_with_progress_around_every_write() {
    let w = world();
    let b = main_build(&[run(7, &w.image, &w.akmods)]);
    let p = promotion("  policy: Auto\n  tags: [latest, '43']", None);
    let s = start(decide_for(&p, Some(&b)));
    assert_eq!(s.candidate.run, 7);
    assert_eq!(s.request.stable.name(), STABLE);
    assert_eq!(s.request.audit_tag.as_deref(), Some("stable-7-02701fe"));
    assert_eq!(s.request.expect, StableExpectation::Absent);
    let akmods = s.request.akmods.as_ref().unwrap();
    assert_eq!(akmods.stable.to_string(), format!("{AKMODS}:main-43"));
    assert_eq!(akmods.candidate.digest(), Some(w.akmods.as_str()));

    let mut journal = Recorder::new(&w.registry, PromotionStatus::default());
    let driven = reconcile(&w.registry, &mut journal, Begin::New(s)).await;
    assert!(matches!(driven.outcome, Outcome::Promoted(_)), "{:?}", driven.outcome);

    // inProgress is written before the first registry write, and every write happens while
    // exactly one step is recorded Running (written before it, Done written after it).
    let (first, writes_before) = &journal.entries[0];
    let Outcome::InFlight(progress) = first else { panic!("{first:?}") };
    assert_eq!(*writes_before, 0);
    assert!(progress.steps.iter().all(|s| s.state == StepState::Pending));
    let names: Vec<&str> = progress.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["copy-image", "copy-akmods", "audit-tag", "tag:latest", "tag:43", "akmods-tag", "confirm"]);
    let steps = &journal.entries[1..journal.entries.len() - 1];
    assert_eq!(steps.len(), 14);
    for pair in steps.chunks(2) {
        let (Outcome::InFlight(running), before) = &pair[0] else { panic!() };
        let (Outcome::InFlight(done), after) = &pair[1] else { panic!() };
        let i = running.steps.iter().position(|s| s.state == StepState::Running).expect("one step running");
        assert_eq!(done.steps[i].state, StepState::Done);
        let wrote = after - before;
        assert_eq!(wrote > 0, done.steps[i].name != "confirm", "{}: {wrote} writes", done.steps[i].name);
    }
    let last_done = steps.last().unwrap().1;
    assert_eq!(last_done, w.registry.writes().len(), "no write after the last step");

    // The registry and the status agree.
    for tag in ["latest", "43", "stable-7-02701fe"] {
        assert_eq!(w.registry.tags(STABLE)[tag], w.image, "{tag}");
    }
    assert_eq!(w.registry.tags(AKMODS)["main-43"], w.akmods);
    let status = journal.status.clone();
    assert!(status.in_progress.is_none());
    let stable = status.stable.as_ref().unwrap();
    assert_eq!((stable.run, &stable.image_digest, &stable.audit_tag), (7, &w.image, &"stable-7-02701fe".to_string()));
    assert_eq!(stable.image, format!("{STABLE}@{}", w.image));
    assert_eq!(stable.akmods_image, Some(format!("{AKMODS}@{}", w.akmods)));
    assert_eq!(status.history.len(), 1);
    assert_eq!(status.history[0].result, PromotionResult::Promoted);
    let ready = find(&status.conditions, "Ready").unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", reasons::PROMOTED));
    assert_eq!(ready.observed_generation, Some(3));
    assert!(find(&status.conditions, "Reconciling").is_none() && find(&status.conditions, "Stalled").is_none());
    assert_eq!(find(&status.conditions, "Promoted").unwrap().status, "True");

    // Reconciled again: up to date, nothing to do.
    let p = promotion("  policy: Auto\n  tags: [latest, '43']", Some(status.clone()));
    assert_eq!(settled(decide_for(&p, Some(&b))), Outcome::UpToDate);
    assert_eq!(next_status(&status, Some(3), &Outcome::UpToDate, &at(200)), status);
}

#[tokio::test]
async fn a_second_run_is_promoted_expecting_the_first() {
    let w = world();
    let image8 = w.registry.add_image(CANDIDATE, Some("8-43"), &[b"base", b"zfs 8"]);
    let spec = "  policy: Auto";
    let mut journal = Recorder::new(&w.registry, PromotionStatus::default());
    let b7 = main_build(&[run(7, &w.image, &w.akmods)]);
    let s = start(decide_for(&promotion(spec, None), Some(&b7)));
    reconcile(&w.registry, &mut journal, Begin::New(s)).await;

    let b8 = main_build(&[run(8, &image8, &w.akmods), run(7, &w.image, &w.akmods)]);
    let p = promotion(spec, Some(journal.status.clone()));
    let s = start(decide_for(&p, Some(&b8)));
    assert_eq!(s.request.expect, StableExpectation::Digest(w.image.clone()));
    assert_eq!(s.request.audit_tag.as_deref(), Some("stable-8-02701fe"));
    reconcile(&w.registry, &mut journal, Begin::New(s)).await;
    let tags = w.registry.tags(STABLE);
    assert_eq!((&tags["latest"], &tags["stable-8-02701fe"], &tags["stable-7-02701fe"]), (&image8, &image8, &w.image));
    let history: Vec<i64> = journal.status.history.iter().map(|h| h.run).collect();
    assert_eq!(history, [8, 7]);

    // Rollback: pin run 7. Its audit tag already names it, so no new audit tag is written.
    let pinned = "  policy: Pinned\n  candidate: {run: 7}";
    let p = promotion(pinned, Some(journal.status.clone()));
    let s = start(decide_for(&p, Some(&b8)));
    assert_eq!(s.request.expect, StableExpectation::Digest(image8.clone()));
    let before = w.registry.writes().len();
    reconcile(&w.registry, &mut journal, Begin::New(s)).await;
    let new_writes: Vec<String> = w.registry.writes()[before..].to_vec();
    assert!(new_writes.iter().all(|e| !e.contains("stable-7")), "{new_writes:?}");
    assert_eq!(w.registry.tags(STABLE)["latest"], w.image);
    assert_eq!(journal.status.stable.as_ref().unwrap().run, 7);
}

#[tokio::test]
async fn a_crash_after_any_write_resumes_from_status_without_writing_twice() {
    let clean = world();
    let b = main_build(&[run(7, &clean.image, &clean.akmods)]);
    let spec = "  policy: Auto\n  tags: [latest, '43']";
    let mut journal = Recorder::new(&clean.registry, PromotionStatus::default());
    reconcile(&clean.registry, &mut journal, Begin::New(start(decide_for(&promotion(spec, None), Some(&b))))).await;
    let mut reference = clean.registry.writes();
    reference.sort();
    let total = reference.len();
    assert!(total >= 10, "{reference:?}");

    for crash_after in 0..total {
        let w = world();
        w.registry.outage_after(Some(crash_after));
        let mut journal = Recorder::new(&w.registry, PromotionStatus::default());
        let s = start(decide_for(&promotion(spec, None), Some(&b)));
        let driven = reconcile(&w.registry, &mut journal, Begin::New(s)).await;
        let Outcome::RegistryFailed { transient: true, in_progress: Some(_), .. } = &driven.outcome else {
            panic!("crash after {crash_after}: {:?}", driven.outcome)
        };
        // At the crash: the journal still holds the promotion, Reconciling, not Stalled.
        let status = journal.status.clone();
        let progress = status.in_progress.as_ref().expect("in flight");
        assert_eq!(find(&status.conditions, "Reconciling").unwrap().reason, reasons::REGISTRY_UNAVAILABLE);
        assert!(find(&status.conditions, "Stalled").is_none());
        // No stable tag without its audit tag; the akmods tag never before the image.
        let tags = w.registry.tags(STABLE);
        if tags.get("latest") == Some(&w.image) {
            assert_eq!(tags.get("stable-7-02701fe"), Some(&w.image), "crash after {crash_after}");
        }
        if w.registry.tags(AKMODS)["main-43"] == w.akmods {
            assert_eq!(tags.get("43"), Some(&w.image), "crash after {crash_after}");
        }

        // A new controller: the build moved on meanwhile, the spec changed; it resumes anyway.
        w.registry.outage_after(None);
        let newer = main_build(&[run(8, &digest('8'), &w.akmods), run(7, &w.image, &w.akmods)]);
        let p = promotion("  policy: Auto\n  tags: [other]\n  suspend: true", Some(status.clone()));
        let Decision::Resume(resumed) = decide_for(&p, Some(&newer)) else { panic!("not resumed") };
        assert_eq!(resumed.as_ref(), progress);
        let mut journal = Recorder::new(&w.registry, status);
        let driven = reconcile(&w.registry, &mut journal, Begin::Resume(resumed)).await;
        assert!(matches!(driven.outcome, Outcome::Promoted(_)), "crash after {crash_after}: {:?}", driven.outcome);
        let mut writes = w.registry.writes();
        writes.sort();
        assert_eq!(writes, reference, "crash after {crash_after}: every write exactly once");
        assert_eq!(journal.status.stable.as_ref().unwrap().run, 7);
    }
}

#[tokio::test]
async fn refusals_stall_once_and_write_nothing() {
    let w = world();
    let other = w.registry.add_image(STABLE, Some("latest"), &[b"someone else"]);
    let b = main_build(&[run(7, &w.image, &w.akmods)]);
    let p = promotion("  policy: Auto", None);
    let writes = w.registry.writes().len();
    let mut journal = Recorder::new(&w.registry, PromotionStatus::default());
    let s = start(decide_for(&p, Some(&b)));
    let driven = reconcile(&w.registry, &mut journal, Begin::New(s.clone())).await;
    let Outcome::Refused { reason, message, .. } = &driven.outcome else { panic!("{:?}", driven.outcome) };
    assert_eq!(*reason, "StableTagMoved");
    assert!(message.contains(&other), "{message}");
    assert_eq!(w.registry.writes().len(), writes);
    assert_eq!(w.registry.tags(STABLE)["latest"], other, "not overwritten");
    let first = journal.status.clone();
    assert_eq!(find(&first.conditions, "Stalled").unwrap().reason, "StableTagMoved");
    assert_eq!(find(&first.conditions, "Promoted").unwrap().reason, reasons::NOT_PROMOTED);
    assert_eq!(first.history.len(), 1);
    assert_eq!(first.history[0].result, PromotionResult::Refused);
    let warnings = events(&PromotionStatus::default(), &first);
    assert_eq!(warnings.iter().map(|e| e.reason).collect::<Vec<_>>(), ["PromotionStalled"]);

    // The same refusal again: same status, no Event, no second history entry.
    let mut again = Recorder::new(&w.registry, first.clone());
    again.now = at(5000);
    reconcile(&w.registry, &mut again, Begin::New(s)).await;
    assert_eq!(again.status, first);
    assert!(events(&first, &again.status).is_empty());

    // Adopting the tag: the spec's expectation names its digest; then it promotes.
    let p = promotion(&format!("  policy: Auto\n  expectedStableDigest: '{other}'"), Some(first));
    let s = start(decide_for(&p, Some(&b)));
    assert_eq!(s.request.expect, StableExpectation::Digest(other.clone()));
    let driven = reconcile(&w.registry, &mut again, Begin::New(s)).await;
    assert!(matches!(driven.outcome, Outcome::Promoted(_)));
    assert!(find(&again.status.conditions, "Stalled").is_none());
}

#[test]
fn refusals_without_the_registry() {
    let b = main_build(&[run(7, &digest('7'), &digest('a'))]);
    let auto = promotion("  policy: Auto", None);
    assert_eq!(refusal(decide_for(&auto, None)), reasons::BUILD_NOT_FOUND);
    let conflict = Conflict {
        namespace: "builds".into(),
        name: "older".into(),
        target: Target::Tag { repository: STABLE.into(), tag: "latest".into() },
    };
    let decision = decide(&Input {
        promotion: &auto,
        build: Some(&b),
        records: None,
        conflict: Some(&conflict),
        record_check: None,
    });
    let Outcome::Refused { reason, message, .. } = settled(decision) else { panic!() };
    assert_eq!(reason, reasons::CONFLICTING_PROMOTION);
    assert!(message.contains("builds/older") && message.contains(&format!("{STABLE}:latest")), "{message}");
    let mut branch = build("Branch", "  branch: feature\n");
    branch.status = b.status.clone();
    assert_eq!(refusal(decide_for(&auto, Some(&branch))), reasons::BUILD_NOT_PROMOTABLE);
    let invalid = promotion("  policy: Auto\n  auditTagTemplate: 'x{run}{other}'", None);
    assert_eq!(refusal(decide_for(&invalid, Some(&b))), reasons::INVALID_SPEC);
    // A run without akmods cannot align them: fail closed, unless alignment is off.
    let mut no_akmods = b.clone();
    no_akmods.status.as_mut().unwrap().last_succeeded_run.as_mut().unwrap().akmods_image = None;
    assert_eq!(refusal(decide_for(&auto, Some(&no_akmods))), "CandidateAkmodsMissing");
    let unaligned = promotion("  policy: Auto\n  alignAkmods: false", None);
    assert!(start(decide_for(&unaligned, Some(&no_akmods))).request.akmods.is_none());
    // Waiting is not a refusal.
    assert!(matches!(settled(decide_for(&auto, Some(&build("Main", "")))), Outcome::Waiting(_)));
}

#[test]
fn the_expectation_is_the_spec_else_what_this_promotion_put_on_the_first_tag() {
    let b = main_build(&[run(8, &digest('8'), &digest('a')), run(7, &digest('7'), &digest('a'))]);
    let promoted_7 = |tags: &[&str], image: &str| PromotionStatus {
        stable: Some(crate::api::promotion::StableState {
            run: 7,
            source_revision: Some(REV.into()),
            image: format!("{image}@{}", digest('7')),
            image_digest: digest('7'),
            short_digest: "777777777777".into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            audit_tag: "stable-7-02701fe".into(),
            akmods_image: None,
            akmods_digest: None,
            signature: None,
            signature_key: None,
            provenance: None,
            promoted_at: at(0),
        }),
        ..PromotionStatus::default()
    };
    let expect = |spec: &str, status: PromotionStatus| {
        start(decide_for(&promotion(spec, Some(status)), Some(&b))).request.expect
    };
    assert_eq!(expect("  policy: Auto", promoted_7(&["latest"], STABLE)), StableExpectation::Digest(digest('7')));
    // The first tag is new to this Promotion, or the repository changed: it must be absent.
    assert_eq!(
        expect("  policy: Auto\n  tags: [next, latest]", promoted_7(&["latest"], STABLE)),
        StableExpectation::Absent
    );
    assert_eq!(expect("  policy: Auto", promoted_7(&["latest"], "ghcr.io/else/where")), StableExpectation::Absent);
    let spec = format!("  policy: Auto\n  expectedStableDigest: '{}'", digest('5'));
    assert_eq!(expect(&spec, promoted_7(&["latest"], STABLE)), StableExpectation::Digest(digest('5')));
}

#[test]
fn suspend_holds_back_only_a_new_promotion() {
    let b = main_build(&[run(7, &digest('7'), &digest('a'))]);
    let suspended = promotion("  policy: Auto\n  suspend: true", None);
    let Outcome::Suspended(message) = settled(decide_for(&suspended, Some(&b))) else { panic!() };
    assert!(message.contains("run 7"), "{message}");
    let status = next_status(&PromotionStatus::default(), Some(3), &Outcome::Suspended(message), &at(0));
    assert_eq!(find(&status.conditions, "Ready").unwrap().reason, reasons::SUSPENDED);
    assert!(find(&status.conditions, "Reconciling").is_none());
}

#[test]
fn audit_tags_follow_the_template() {
    assert_eq!(audit_tag("stable-{run}-{rev7}", 41, REV), "stable-41-02701fe");
    assert_eq!(audit_tag("{run}", 41, REV), "41");
    assert_eq!(audit_tag("r{run}-{rev7}-{rev7}", 2, "abc"), "r2-abc-abc");
}

#[test]
fn conditions_keep_their_transition_time_and_events_fire_on_transitions_only() {
    let progress = || {
        let mut p: crate::api::promotion::PromotionProgress = serde_json::from_value(serde_json::json!({
            "run": 7, "sourceRevision": REV, "candidateImage": format!("{CANDIDATE}@{}", digest('7')),
            "candidateDigest": digest('7'), "stableRepository": STABLE, "tags": ["latest"],
            "auditTag": "stable-7-02701fe", "expectedStableDigest": "absent", "startedAt": "2026-01-01T00:00:00Z",
            "steps": [{"name": "copy-image", "state": "Pending"}, {"name": "confirm", "state": "Pending"}],
        }))
        .unwrap();
        p.started_at = at(10);
        p
    };
    let empty = PromotionStatus::default();
    let started = next_status(&empty, Some(3), &Outcome::InFlight(Box::new(progress())), &at(10));
    let ready = find(&started.conditions, "Ready").unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", reasons::PROMOTING));
    assert!(ready.message.contains("0 of 2 steps done, next copy-image"), "{}", ready.message);
    assert_eq!(find(&started.conditions, "Reconciling").unwrap().status, "True");
    assert_eq!(events(&empty, &started).iter().map(|e| e.reason).collect::<Vec<_>>(), ["PromotionStarted"]);

    let mut step = progress();
    step.steps[0].state = StepState::Done;
    let later = next_status(&started, Some(3), &Outcome::InFlight(Box::new(step.clone())), &at(20));
    assert_eq!(find(&later.conditions, "Ready").unwrap().last_transition_time, at(10));
    assert!(events(&started, &later).is_empty());

    let outage = Outcome::RegistryFailed {
        reason: reasons::REGISTRY_UNAVAILABLE,
        message: "unreachable".into(),
        transient: true,
        in_progress: Some(Box::new(step.clone())),
    };
    let failed = next_status(&later, Some(3), &outage, &at(30));
    assert_eq!(failed.in_progress.as_ref(), Some(&step));
    assert_eq!(events(&later, &failed).iter().map(|e| e.reason).collect::<Vec<_>>(), ["RegistryUnavailable"]);
    assert!(events(&failed, &next_status(&failed, Some(3), &outage, &at(40))).is_empty());
    // Retried: still RegistryUnavailable (no flapping, no second Event) until a step completes.
    let mut retry = step.clone();
    retry.steps[1].state = StepState::Running;
    let retried = next_status(&failed, Some(3), &Outcome::InFlight(Box::new(retry.clone())), &at(45));
    assert_eq!(find(&retried.conditions, "Ready").unwrap().reason, reasons::REGISTRY_UNAVAILABLE);
    assert!(events(&failed, &retried).is_empty());
    assert!(events(&retried, &next_status(&retried, Some(3), &outage, &at(46))).is_empty());
    retry.steps[1].state = StepState::Done;
    let progressed = next_status(&retried, Some(3), &Outcome::InFlight(Box::new(retry)), &at(47));
    assert_eq!(find(&progressed.conditions, "Ready").unwrap().reason, reasons::PROMOTING);

    let done = next_status(&failed, Some(4), &Outcome::Promoted(Box::new(stable_after(&step, at(50)))), &at(50));
    assert!(done.in_progress.is_none());
    assert_eq!(done.observed_generation, Some(4));
    assert!(done.conditions.iter().all(|c| c.observed_generation == Some(4)));
    assert_eq!(events(&failed, &done).iter().map(|e| e.reason).collect::<Vec<_>>(), ["Promoted"]);
    assert!(find(&done.conditions, "Reconciling").is_none());
}

#[test]
fn history_is_bounded() {
    let mut status = PromotionStatus::default();
    for n in 1..=(HISTORY_LIMIT as i64 + 5) {
        let progress: crate::api::promotion::PromotionProgress = serde_json::from_value(serde_json::json!({
            "run": n, "sourceRevision": REV, "candidateImage": format!("{CANDIDATE}@{}", digest('7')),
            "candidateDigest": digest('7'), "stableRepository": STABLE, "tags": ["latest"],
            "auditTag": format!("stable-{n}"), "expectedStableDigest": "absent", "startedAt": "2026-01-01T00:00:00Z",
        }))
        .unwrap();
        status = next_status(&status, Some(1), &Outcome::Promoted(Box::new(stable_after(&progress, at(n)))), &at(n));
    }
    assert_eq!(status.history.len(), HISTORY_LIMIT);
    assert_eq!(status.history[0].run, HISTORY_LIMIT as i64 + 5);
}

/// A run known only from its run record (a forged one looks exactly like this).
fn recorded(n: i64, image: &str, akmods: &str) -> crate::pipeline::records::RecordedRun {
    crate::pipeline::records::RecordedRun {
        number: n,
        mode: crate::api::build::BuildMode::Main,
        source_revision: REV.into(),
        fedora_version: "43".into(),
        candidate_image: format!("{CANDIDATE}@{image}"),
        candidate_digest: image.into(),
        akmods_image: format!("{AKMODS_CANDIDATE}@{akmods}"),
        kernel_releases: vec!["6.18.13-200.fc43.x86_64".into()],
        base_image: String::new(),
    }
}

fn findings(candidate: bool, verified: Option<bool>, akmods: bool) -> super::trust::RecordFindings {
    super::trust::RecordFindings {
        candidate_present: candidate,
        verification: verified.map(|ok| crate::api::build::VerificationResult {
            verified: ok,
            kernel_releases: vec![],
            bytes_read: 0,
            message: (!ok).then(|| "Candidate image is missing a ZFS module payload for kernels 6.18.13".into()),
            platform_digest: None,
        }),
        akmods_present: akmods,
    }
}

#[test]
fn a_run_known_only_from_its_record_is_checked_in_the_registry_before_it_starts() {
    use super::trust::{RecordCheck, RecordFailure};
    let b = main_build(&[run(2, &digest('2'), &digest('a'))]);
    let p = promotion("  policy: Pinned\n  candidate: {run: 1}", None);
    let records = [recorded(1, &digest('1'), &digest('b'))];
    let with = |check: Option<&RecordCheck>| {
        decide(&Input { promotion: &p, build: Some(&b), records: Some(&records), conflict: None, record_check: check })
    };
    // Found in the records: not started, checked first.
    let query = match with(None) {
        Decision::CheckRecord(query) => *query,
        other => panic!("expected a record check, got {other:?}"),
    };
    assert_eq!(query.candidate, format!("{CANDIDATE}@{}", digest('1')));
    assert_eq!(query.akmods, format!("{AKMODS_CANDIDATE}@{}", digest('b')));
    assert_eq!(query.kernel_releases, ["6.18.13-200.fc43.x86_64"]);

    // Confirmed: started, exactly as a run from the status would be.
    let confirmed = RecordCheck { query: query.clone(), result: Ok(findings(true, Some(true), true)) };
    let s = start(with(Some(&confirmed)));
    assert_eq!((s.candidate.run, s.candidate.digest.as_str()), (1, digest('1').as_str()));

    // Each failed check refuses the run, saying what failed.
    for (f, what) in [
        (findings(false, None, true), "is not in the candidate repository"),
        (findings(true, Some(false), true), "does not verify for kernels 6.18.13-200.fc43.x86_64"),
        (findings(true, Some(true), false), "akmods image"),
    ] {
        let check = RecordCheck { query: query.clone(), result: Ok(f) };
        match settled(with(Some(&check))) {
            Outcome::Refused { reason, message, .. } => {
                assert_eq!(reason, reasons::RUN_RECORD_NOT_VERIFIED);
                assert!(message.contains(what) && message.contains("nothing is promoted"), "{message}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    // A check of another question never counts: asked again.
    let other_query =
        super::trust::RecordQuery { akmods: format!("{AKMODS_CANDIDATE}@{}", digest('c')), ..query.clone() };
    let stale = RecordCheck { query: other_query, result: Ok(findings(true, Some(true), true)) };
    assert!(matches!(with(Some(&stale)), Decision::CheckRecord(_)));

    // The registry could not answer: no verdict, retried (transient) or Stalled (credentials).
    let unavailable = RecordCheck {
        query: query.clone(),
        result: Err(RecordFailure {
            reason: reasons::REGISTRY_UNAVAILABLE,
            transient: true,
            message: "registry unreachable".into(),
            retry_after: None,
        }),
    };
    match settled(with(Some(&unavailable))) {
        Outcome::RegistryFailed { reason, transient: true, in_progress: None, .. } => {
            assert_eq!(reason, reasons::REGISTRY_UNAVAILABLE)
        }
        other => panic!("expected a transient registry failure, got {other:?}"),
    }
}

#[test]
fn a_record_pointing_outside_the_builds_repositories_is_refused_without_the_registry() {
    let b = main_build(&[run(2, &digest('2'), &digest('a'))]);
    let p = promotion("  policy: Pinned\n  candidate: {run: 1}", None);
    let mut forged = recorded(1, &digest('1'), &digest('b'));
    forged.candidate_image = format!("ghcr.io/mallory/kinoite-zfs@{}", digest('1'));
    let records = [forged];
    let decision =
        decide(&Input { promotion: &p, build: Some(&b), records: Some(&records), conflict: None, record_check: None });
    assert_eq!(refusal(decision), reasons::RUN_RECORD_NOT_VERIFIED);
}

#[test]
fn a_recorded_run_already_on_the_channel_is_not_checked_again() {
    // Promoted once (after its check): a later reconcile finds it in place, with no registry read.
    let b = main_build(&[run(2, &digest('2'), &digest('a'))]);
    let records = [recorded(1, &digest('1'), &digest('b'))];
    let p = promotion("  policy: Pinned\n  candidate: {run: 1}", None);
    let query = match decide(&Input {
        promotion: &p,
        build: Some(&b),
        records: Some(&records),
        conflict: None,
        record_check: None,
    }) {
        Decision::CheckRecord(query) => *query,
        other => panic!("{other:?}"),
    };
    let _ = query;
    let stable = crate::api::promotion::StableState {
        run: 1,
        source_revision: Some(REV.into()),
        image: format!("{STABLE}@{}", digest('1')),
        image_digest: digest('1'),
        short_digest: "111111111111".into(),
        tags: vec!["latest".into()],
        audit_tag: "stable-1-02701fe".into(),
        akmods_image: Some(format!("{AKMODS}@{}", digest('b'))),
        akmods_digest: Some(digest('b')),
        promoted_at: at(1),
        signature: None,
        signature_key: None,
        provenance: None,
    };
    let status = PromotionStatus { stable: Some(stable), ..Default::default() };
    let p = promotion("  policy: Pinned\n  candidate: {run: 1}", Some(status));
    let decision =
        decide(&Input { promotion: &p, build: Some(&b), records: Some(&records), conflict: None, record_check: None });
    assert_eq!(settled(decision), Outcome::UpToDate);
}

#[tokio::test]
async fn a_signing_promotion_signs_before_any_tag_and_resumes_with_the_same_key_only() {
    use crate::signing::PrivateKey;
    let key = PrivateKey::for_tests(5);
    let w = world();
    let b = main_build(&[run(7, &w.image, &w.akmods)]);
    let p = promotion("  policy: Auto", None);
    let stable_repo = crate::registry::ImageRef::parse(STABLE).unwrap();

    // Stopped right after the signature was pushed (the outage starts with the next write).
    let mut journal = Recorder::new(&w.registry, PromotionStatus::default());
    let s = start(decide_for(&p, Some(&b)));
    // A probe world, promoted in one go, shows where the signature falls among the writes.
    let probe = world();
    let mut probe_journal = Recorder::new(&probe.registry, PromotionStatus::default());
    reconcile_signed(
        &probe.registry,
        &mut probe_journal,
        Begin::New(start(decide_for(&p, Some(&b)))),
        Some(key.clone()),
    )
    .await;
    let writes = probe.registry.writes();
    let sig_put = writes.iter().position(|w| w.contains(".sig")).expect("the .sig manifest was pushed");
    let first_tag = writes
        .iter()
        .position(|w| {
            w.starts_with("put ") && w.contains(&format!("{STABLE}:")) && !w.contains(&format!("{STABLE}:sha256"))
        })
        .expect("tags were written");
    assert!(sig_put < first_tag, "signature before any stable tag: {writes:#?}");
    let status = probe_journal.status.clone();
    let stable = status.stable.as_ref().unwrap();
    assert_eq!(stable.signature, Some(format!("{STABLE}:{}.sig", w.image.replace(':', "-"))));
    assert_eq!(stable.signature_key, Some(key.public().fingerprint()));
    assert_eq!(status.history[0].signature, stable.signature);
    let signed = find(&status.conditions, "Signed").unwrap();
    assert_eq!((signed.status.as_str(), signed.reason.as_str()), ("True", reasons::SIGNED));

    w.registry.outage_after(Some(sig_put + 1));
    let driven = reconcile_signed(&w.registry, &mut journal, Begin::New(s), Some(key.clone())).await;
    let Outcome::RegistryFailed { transient: true, in_progress: Some(progress), .. } = &driven.outcome else {
        panic!("{:?}", driven.outcome)
    };
    assert!(w.registry.tags(STABLE).keys().all(|t| t.ends_with(".sig")), "no stable tag yet");
    let sign = progress.steps.iter().find(|s| s.name == "sign").unwrap();
    assert_eq!(sign.state, StepState::Done);
    assert_eq!(progress.signing_key, Some(key.public().fingerprint()));

    // Resumed without the key (or with another one): stalled, nothing written.
    w.registry.outage_after(None);
    let before = w.registry.writes().len();
    for other in [None, Some(PrivateKey::for_tests(6))] {
        let driven = reconcile_signed(&w.registry, &mut journal, Begin::Resume(progress.clone()), other).await;
        assert!(
            matches!(
                &driven.outcome,
                Outcome::RegistryFailed {
                    reason: reasons::SIGNING_KEY_CHANGED,
                    transient: false,
                    in_progress: Some(_),
                    ..
                }
            ),
            "{:?}",
            driven.outcome
        );
    }
    assert_eq!(w.registry.writes().len(), before);

    // Resumed with the key: the signature is not made again, the tags move.
    let driven = reconcile_signed(&w.registry, &mut journal, Begin::Resume(progress.clone()), Some(key.clone())).await;
    assert!(matches!(driven.outcome, Outcome::Promoted(_)), "{:?}", driven.outcome);
    let attachment = crate::signing::read(&w.registry, &stable_repo, &w.image).await.unwrap();
    assert_eq!(attachment.layers.len(), 1, "one signature");
    assert!(attachment.verified_by(&key.public(), STABLE, &w.image).is_some());
    assert_eq!(w.registry.tags(STABLE)["latest"], w.image);
}

#[test]
fn promoted_without_signing_is_a_distinct_unsigned_condition() {
    let progress = PromotionProgress {
        run: 7,
        source_revision: REV.into(),
        candidate_image: format!("{CANDIDATE}@{}", digest('7')),
        candidate_digest: digest('7'),
        candidate_akmods: None,
        stable_akmods: None,
        stable_repository: STABLE.into(),
        tags: vec!["latest".into()],
        audit_tag: "stable-7-02701fe".into(),
        expected_stable_digest: "absent".into(),
        started_at: at(0),
        signing_key: None,
        steps: vec![],
    };
    let stable = stable_after(&progress, at(1));
    let status = next_status(&PromotionStatus::default(), Some(1), &Outcome::Promoted(Box::new(stable)), &at(1));
    let signed = find(&status.conditions, "Signed").unwrap();
    assert_eq!((signed.status.as_str(), signed.reason.as_str()), ("False", reasons::UNSIGNED));
    assert!(signed.message.contains("promoted but unsigned"), "{}", signed.message);
}
