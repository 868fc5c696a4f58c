//! Whole promotions against the in-memory registry: ordering, idempotence, a crash after every
//! single write followed by a resume, refusals that write nothing, and the controller's
//! progress round trip. The same scenarios run against the real registry in
//! tests/integration/promote.rs.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::*;
use crate::api::promotion::StepState;
use crate::registry::fake::FakeRegistry;

const CANDIDATE: &str = "reg.test/o/candidate";
const STABLE: &str = "reg.test/o/stable";
const AKMODS_CANDIDATE: &str = "reg.test/o/akmods-candidate";
const AKMODS: &str = "reg.test/o/akmods";

struct World {
    registry: FakeRegistry,
    candidate: String,
    akmods: String,
}

/// A candidate (two layers) and candidate akmods; the stable akmods tag at an older cache.
fn world() -> World {
    let registry = FakeRegistry::new();
    let candidate = registry.add_image(CANDIDATE, Some("7-43"), &[b"base layer", b"zfs layer"]);
    let akmods = registry.add_image(AKMODS_CANDIDATE, Some("main-43"), &[b"kmod-zfs rpms"]);
    let old_akmods = registry.add_image(AKMODS, Some("main-43"), &[b"old rpms"]);
    assert_ne!(akmods, old_akmods);
    World { registry, candidate, akmods }
}

fn request(w: &World, expect: &str) -> PromotionRequest {
    PromotionRequest::parse(
        &format!("{CANDIDATE}@{}", w.candidate),
        STABLE,
        &["latest".to_string(), "43".to_string()],
        Some("stable-7-abcdef0"),
        Some((&format!("{AKMODS_CANDIDATE}:main-43"), &format!("{AKMODS}:main-43"))),
        Some(expect),
    )
    .unwrap()
}

fn expected_tags(w: &World) -> BTreeMap<String, String> {
    ["43", "latest", "stable-7-abcdef0"].iter().map(|t| (t.to_string(), w.candidate.clone())).collect()
}

#[tokio::test]
async fn first_promotion_writes_everything_in_order_and_a_repeat_writes_nothing() {
    let w = world();
    let run = promote(&w.registry, &request(&w, "absent")).await;
    assert!(run.error.is_none(), "{:?}", run.error);
    let report = run.report;
    assert_eq!(report.result, PromotionOutcome::Promoted);
    assert!(report.registry_changed);
    assert_eq!(w.registry.tags(STABLE), expected_tags(&w));
    assert_eq!(w.registry.tags(AKMODS)["main-43"], w.akmods);
    // Three image blobs (config + 2 layers) and two akmods blobs, all mounted.
    assert_eq!(report.blobs, BlobCounts { already_present: 0, mounted: 5, copied: 0, bytes_copied: 0 });
    assert_eq!(report.previous_stable_digest.as_deref(), Some("absent"));
    assert_eq!(report.akmods.as_ref().unwrap().candidate_digest.as_deref(), Some(w.akmods.as_str()));
    assert!(report.tags.iter().all(|t| t.written && t.digest.as_deref() == Some(w.candidate.as_str())));

    // The order of the writes: content by digest, audit tag, guarded tag, other tag, akmods tag.
    let puts: Vec<String> = w
        .registry
        .writes()
        .into_iter()
        .filter(|e| e.starts_with("put"))
        .map(|e| e.rsplit(':').next().unwrap().to_string())
        .collect();
    let (image, akmods) = (w.candidate.trim_start_matches("sha256:"), w.akmods.trim_start_matches("sha256:"));
    assert_eq!(puts, [image, akmods, "stable-7-abcdef0", "latest", "43", "main-43"]);

    // Again, with the expectation a script would now pass: nothing written, all confirmed.
    let writes = w.registry.writes().len();
    let again = promote(&w.registry, &request(&w, &w.candidate)).await;
    assert!(again.error.is_none(), "{:?}", again.error);
    assert_eq!(again.report.result, PromotionOutcome::AlreadyPromoted);
    assert!(!again.report.registry_changed);
    assert_eq!(w.registry.writes().len(), writes);
    assert!(again.report.steps.iter().all(|s| s.state == "Done" && !s.wrote));
}

/// Invariant 7: a crash after any number of writes, then a resumed run, ends in the state of an
/// uninterrupted run with every write done exactly once; and at every crash point the stable
/// tags and akmods tag are in an order-consistent state.
#[tokio::test]
async fn a_crash_after_any_write_resumes_to_the_same_state_without_duplicates() {
    let clean = world();
    assert!(promote(&clean.registry, &request(&clean, "absent")).await.error.is_none());
    let mut reference = clean.registry.writes();
    reference.sort();
    let total = reference.len();
    assert!(total >= 10, "{reference:?}");

    for crash_after in 0..total {
        let w = world();
        w.registry.outage_after(Some(crash_after));
        let first = promote(&w.registry, &request(&w, "absent")).await;
        let error = first.error.expect("the outage stops the promotion");
        assert!(error.is_transient(), "{error}");
        assert_eq!(first.report.result, PromotionOutcome::Failed);

        let tags = w.registry.tags(STABLE);
        let stable_moved = tags.get("latest") == Some(&w.candidate);
        let audit_written = tags.get("stable-7-abcdef0") == Some(&w.candidate);
        let akmods_moved = w.registry.tags(AKMODS)["main-43"] == w.akmods;
        assert!(!stable_moved || audit_written, "crash after {crash_after}: channel moved without its audit tag");
        assert!(!akmods_moved || stable_moved, "crash after {crash_after}: akmods moved without the image");
        if crash_after == 0 {
            assert!(tags.is_empty() && !akmods_moved, "nothing moved");
        }

        // Resume: the expectation recorded when it started (absent) still holds.
        w.registry.outage_after(None);
        let resumed = promote(&w.registry, &request(&w, "absent")).await;
        assert!(resumed.error.is_none(), "crash after {crash_after}: {:?}", resumed.error);
        assert_eq!(w.registry.tags(STABLE), expected_tags(&w), "crash after {crash_after}");
        assert_eq!(w.registry.tags(AKMODS)["main-43"], w.akmods);
        let mut writes = w.registry.writes();
        writes.sort();
        assert_eq!(writes, reference, "crash after {crash_after}: every write exactly once");
    }
}

/// H6 with signing: a crash after any write, then a resume. At every crash point a stable or
/// audit tag exists only on a digest whose signature verifies; the resume signs exactly once.
#[tokio::test]
async fn with_signing_no_crash_point_shows_a_tag_on_an_unsigned_digest() {
    let key = crate::signing::PrivateKey::for_tests(8);
    let stable = crate::registry::ImageRef::parse(STABLE).unwrap();
    let signed_request = |w: &World| request(w, "absent").with_signing(Some(key.clone()));
    let clean = world();
    assert!(promote(&clean.registry, &signed_request(&clean)).await.error.is_none());
    let total = clean.registry.writes().len();
    for crash_after in 0..total {
        let w = world();
        w.registry.outage_after(Some(crash_after));
        assert!(promote(&w.registry, &signed_request(&w)).await.error.expect("stopped").is_transient());
        let tagged = w.registry.tags(STABLE).keys().any(|t| !t.ends_with(".sig"));
        let signed = crate::signing::verify(&w.registry, &stable, &w.candidate, &key.public()).await.unwrap().is_some();
        assert!(!tagged || signed, "crash after {crash_after}: a stable tag on an unsigned digest");
        w.registry.outage_after(None);
        let resumed = promote(&w.registry, &signed_request(&w)).await;
        assert!(resumed.error.is_none(), "crash after {crash_after}: {:?}", resumed.error);
        let attachment = crate::signing::read(&w.registry, &stable, &w.candidate).await.unwrap();
        assert_eq!(attachment.layers.len(), 1, "crash after {crash_after}: signed exactly once");
        assert_eq!(w.registry.tags(STABLE)["latest"], w.candidate);
    }
}

#[tokio::test]
async fn refusals_write_nothing() {
    // Compare-and-swap mismatch.
    let w = world();
    let other = w.registry.add_image(STABLE, Some("latest"), &[b"someone else's image"]);
    let writes = w.registry.writes().len();
    let run = promote(&w.registry, &request(&w, "absent")).await;
    assert_eq!(run.error.as_ref().and_then(Error::refusal), Some(RefusalReason::StableTagMoved));
    assert_eq!(run.report.result, PromotionOutcome::Refused);
    assert_eq!(run.report.reason.as_deref(), Some("StableTagMoved"));
    assert!(!run.report.registry_changed);
    assert_eq!(w.registry.writes().len(), writes);
    assert_eq!(w.registry.tags(STABLE)["latest"], other);

    // Audit tag at another digest.
    let w = world();
    let other = w.registry.add_image(STABLE, Some("stable-7-abcdef0"), &[b"older promotion"]);
    let run = promote(&w.registry, &request(&w, "absent")).await;
    assert_eq!(run.error.as_ref().and_then(Error::refusal), Some(RefusalReason::AuditTagConflict));
    assert!(w.registry.writes().is_empty());
    assert_eq!(w.registry.tags(STABLE).len(), 1, "{other}");

    // Candidate akmods missing: fail closed.
    let w = world();
    let mut req = request(&w, "absent");
    req.akmods.as_mut().unwrap().candidate =
        crate::registry::ImageRef::parse(&format!("{AKMODS_CANDIDATE}:main-44")).unwrap();
    let run = promote(&w.registry, &req).await;
    assert_eq!(run.error.as_ref().and_then(Error::refusal), Some(RefusalReason::CandidateAkmodsMissing));
    assert!(w.registry.writes().is_empty());
    assert!(w.registry.tags(STABLE).is_empty());

    // Candidate digest that does not exist.
    let w = world();
    let mut req = request(&w, "absent");
    req.candidate = req.candidate.with_digest(&crate::test_support::digest('e')).unwrap();
    let run = promote(&w.registry, &req).await;
    assert_eq!(run.error.as_ref().and_then(Error::refusal), Some(RefusalReason::CandidateMissing));
    assert!(w.registry.writes().is_empty());
}

#[tokio::test]
async fn a_tag_moved_by_someone_else_mid_promotion_is_not_overwritten() {
    let w = world();
    let req = request(&w, "absent");
    let planned = plan(&req, &observe(&w.registry, &req).await.unwrap()).unwrap();
    // Someone moves `latest` after the plan was made.
    let other = w.registry.add_image(STABLE, Some("latest"), &[b"hotfix"]);
    let mut error = None;
    for step in planned.pending() {
        if let Err(e) = execute_step(&w.registry, &planned, &step.kind).await {
            error = Some(e);
            break;
        }
    }
    let error = error.expect("the swap fails");
    assert_eq!(error.refusal(), Some(RefusalReason::StableTagMoved));
    assert!(error.to_string().contains("was not overwritten"), "{error}");
    assert_eq!(w.registry.tags(STABLE)["latest"], other);
    assert_ne!(w.registry.tags(AKMODS)["main-43"], w.akmods, "akmods do not move without the image");
}

#[tokio::test]
async fn an_index_is_copied_children_first_and_same_repository_promotion_copies_nothing() {
    let registry = FakeRegistry::new();
    let amd64 = registry.add_image(CANDIDATE, None, &[b"amd64 layer"]);
    let arm64 = registry.add_image(CANDIDATE, None, &[b"arm64 layer"]);
    let index = registry.add_index(CANDIDATE, Some("7-43"), &[(&amd64, "amd64"), (&arm64, "arm64")]);
    let cross = PromotionRequest::parse(
        &format!("{CANDIDATE}@{index}"),
        STABLE,
        &["latest".to_string()],
        None,
        None,
        Some("absent"),
    )
    .unwrap();
    let run = promote(&registry, &cross).await;
    assert!(run.error.is_none(), "{:?}", run.error);
    // The fake rejects an index whose manifests are not there yet, as distribution does.
    assert_eq!(run.report.manifests_pushed, 4, "two children, the index by digest, the tag");
    assert!(registry.has_manifest(STABLE, &amd64) && registry.has_manifest(STABLE, &arm64));
    assert_eq!(registry.tags(STABLE)["latest"], index);

    let before = registry.writes().len();
    let same = PromotionRequest::parse(
        &format!("{CANDIDATE}@{index}"),
        CANDIDATE,
        &["stable".to_string()],
        Some("stable-7"),
        None,
        Some("absent"),
    )
    .unwrap();
    let run = promote(&registry, &same).await;
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(run.report.blobs, BlobCounts::default());
    assert_eq!(run.report.manifests_pushed, 2, "only the two tags");
    assert_eq!(registry.writes().len(), before + 2);
}

#[tokio::test]
async fn a_refused_mount_falls_back_to_a_streamed_copy() {
    let w = world();
    let req = request(&w, "absent");
    let planned = plan(&req, &observe(&w.registry, &req).await.unwrap()).unwrap();
    let blobs = planned.image.blobs.iter().chain(planned.akmods.as_ref().unwrap().blobs.iter());
    let blob_bytes: u64 = blobs.map(|(digest, _)| w.registry.blob_len(digest)).sum();
    assert!(blob_bytes > 0);

    w.registry.refuse_mounts(true);
    let run = promote(&w.registry, &req).await;
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(run.report.blobs, BlobCounts { already_present: 0, mounted: 0, copied: 5, bytes_copied: blob_bytes });
}

#[tokio::test]
async fn rollback_to_a_digest_only_the_stable_repository_still_has() {
    let w = world();
    assert!(promote(&w.registry, &request(&w, "absent")).await.error.is_none());
    let old = w.candidate.clone();
    // A newer run is promoted...
    let newer = w.registry.add_image(CANDIDATE, Some("8-43"), &[b"base layer", b"zfs layer v2"]);
    let mut req = request(&w, &old);
    req.candidate = req.candidate.with_digest(&newer).unwrap();
    req.audit_tag = Some("stable-8-abcdef0".into());
    assert!(promote(&w.registry, &req).await.error.is_none());
    assert_eq!(w.registry.tags(STABLE)["latest"], newer);
    // ...then the candidate repository loses the old run; rolling back still works, from the
    // copy the stable repository keeps under its audit tag.
    let mut back = request(&w, &newer);
    back.audit_tag = Some("stable-9-abcdef0".into());
    back.candidate = crate::registry::ImageRef::parse(&format!("reg.test/o/pruned-candidate@{old}")).unwrap();
    let run = promote(&w.registry, &back).await;
    assert!(run.error.is_none(), "{:?}", run.error);
    assert_eq!(w.registry.tags(STABLE)["latest"], old);
    assert_eq!(run.report.previous_stable_digest.as_deref(), Some(newer.as_str()));
    assert_eq!(run.report.blobs, BlobCounts::default(), "nothing to copy");
}

#[tokio::test]
async fn a_controller_persists_progress_and_resumes_from_it() {
    let w = world();
    let req = request(&w, "absent");
    let planned = plan(&req, &observe(&w.registry, &req).await.unwrap()).unwrap();
    let started = Time(k8s_openapi::jiff::Timestamp::from_second(1_776_000_000).unwrap());
    let mut progress = planned.progress(7, "abcdef0123", started).unwrap();
    assert_eq!(progress.candidate_akmods, Some(format!("{AKMODS_CANDIDATE}@{}", w.akmods)), "pinned by digest");
    assert_eq!(progress.expected_stable_digest, "absent");
    assert!(progress.steps.iter().all(|s| s.state == StepState::Pending));

    // Execute the first three steps, persisting Running before and Done after each.
    for (i, step) in planned.steps.iter().enumerate().take(3) {
        progress.steps[i].state = StepState::Running;
        let outcome = execute_step(&w.registry, &planned, &step.kind).await.unwrap();
        progress.steps[i].state = StepState::Done;
        progress.steps[i].digest = outcome.digest;
    }
    // The controller restarts; meanwhile a newer cache moves the candidate akmods tag. The
    // request rebuilt from status still aligns the digest the promotion started with.
    w.registry.add_image(AKMODS_CANDIDATE, Some("main-43"), &[b"newer rpms"]);
    let resumed_request = PromotionRequest::from_progress(&progress).unwrap();
    assert_eq!(resumed_request.expect, StableExpectation::Absent);
    let resumed = plan(&resumed_request, &observe(&w.registry, &resumed_request).await.unwrap()).unwrap();
    let done: Vec<String> = resumed.steps.iter().filter(|s| s.done).map(|s| s.kind.name()).collect();
    assert_eq!(done, ["copy-image", "copy-akmods", "audit-tag"]);
    for step in resumed.pending() {
        execute_step(&w.registry, &resumed, &step.kind).await.unwrap();
    }
    assert_eq!(w.registry.tags(STABLE), expected_tags(&w));
    assert_eq!(w.registry.tags(AKMODS)["main-43"], w.akmods);
}
