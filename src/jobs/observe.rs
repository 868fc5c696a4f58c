//! The plain-data view of builder Jobs and their Pods that the planner reads, made from the
//! Kubernetes objects by the controller's observe step, and the binding of a builder result to
//! the Job that produced it.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::result::{self, BuilderResult};
use super::{BUILDER_CONTAINER, JobKind, LABEL_RUN, LABEL_STEP};

/// Where a Job is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    /// Not finished (pending, running or retrying within `backoffLimit`).
    Active,
    /// Condition `Complete=True`.
    Succeeded,
    /// Condition `Failed=True` (backoff limit or deadline exceeded, ...).
    Failed { reason: String, message: String },
}

/// A builder Job owned by the build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedJob {
    pub name: String,
    pub uid: String,
    /// Run number from the `kinoite-zfs.io/run` label.
    pub run: Option<i64>,
    /// Step from the `kinoite-zfs.io/step` label.
    pub kind: Option<JobKind>,
    pub state: JobState,
}

/// How the builder container of a pod ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Termination {
    pub exit_code: i32,
    pub reason: Option<String>,
    /// The termination message (the result document on success).
    pub message: Option<String>,
    pub finished_at: Option<Time>,
}

/// A pod of a builder Job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedPod {
    pub name: String,
    /// UID of the Job that controls the pod (from its controller owner reference).
    pub job_uid: Option<String>,
    /// The builder container's termination, once it terminated.
    pub builder: Option<Termination>,
}

/// The plain view of a Job; `None` for an object without name or UID (never persisted ones).
pub fn observe_job(job: &Job) -> Option<ObservedJob> {
    let name = job.metadata.name.clone()?;
    let uid = job.metadata.uid.clone()?;
    let labels = job.metadata.labels.as_ref();
    let run = labels.and_then(|l| l.get(LABEL_RUN)).and_then(|v| v.parse().ok());
    let kind = labels.and_then(|l| l.get(LABEL_STEP)).and_then(|v| JobKind::parse(v));
    let conditions = job.status.as_ref().and_then(|s| s.conditions.as_ref());
    let is_true = |type_: &str| conditions.into_iter().flatten().find(|c| c.type_ == type_ && c.status == "True");
    let state = if is_true("Complete").is_some() {
        JobState::Succeeded
    } else if let Some(failed) = is_true("Failed") {
        JobState::Failed {
            reason: failed.reason.clone().unwrap_or_else(|| "Failed".into()),
            message: failed.message.clone().unwrap_or_default(),
        }
    } else {
        JobState::Active
    };
    Some(ObservedJob { name, uid, run, kind, state })
}

/// The plain view of a builder pod.
pub fn observe_pod(pod: &Pod) -> ObservedPod {
    let job_uid = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.kind == "Job" && o.controller == Some(true))
        .map(|o| o.uid.clone());
    let builder = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|statuses| statuses.iter().find(|c| c.name == BUILDER_CONTAINER))
        .and_then(|c| c.state.as_ref())
        .and_then(|state| state.terminated.as_ref())
        .map(|t| Termination {
            exit_code: t.exit_code,
            reason: t.reason.clone(),
            message: t.message.clone(),
            finished_at: t.finished_at.clone(),
        });
    ObservedPod { name: pod.metadata.name.clone().unwrap_or_default(), job_uid, builder }
}

/// The validated result of a succeeded Job: from a pod whose controller is exactly this Job (by
/// UID; pods of an older Job with the same name are ignored) and whose builder container exited
/// 0. When several such pods exist, the last one to finish counts.
pub fn result_for_job(kind: JobKind, job: &ObservedJob, pods: &[ObservedPod]) -> Result<BuilderResult, result::Error> {
    let succeeded = pods
        .iter()
        .filter(|p| p.job_uid.as_deref() == Some(job.uid.as_str()))
        .filter_map(|p| p.builder.as_ref())
        .filter(|t| t.exit_code == 0)
        .max_by(|a, b| a.finished_at.cmp(&b.finished_at));
    match succeeded {
        None => Err(result::Error::Missing(format!(
            "no pod of Job {} (uid {}) has a builder container that exited 0",
            job.name, job.uid
        ))),
        Some(t) => result::parse(kind, t.message.as_deref().unwrap_or_default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::result::render;
    use k8s_openapi::jiff::Timestamp;

    fn job(yaml: &str) -> Job {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn job_state_from_conditions() {
        let j = job(
            "metadata: {name: b-1-akmods, uid: u1, labels: {kinoite-zfs.io/run: '1', kinoite-zfs.io/step: akmods}}\nstatus: {active: 1}\n",
        );
        let o = observe_job(&j).unwrap();
        assert_eq!((o.run, o.kind, o.state), (Some(1), Some(JobKind::Akmods), JobState::Active));

        let j = job(
            "metadata: {name: b-1-image, uid: u2}\nstatus:\n  conditions:\n  - {type: SuccessCriteriaMet, status: 'True'}\n",
        );
        assert_eq!(observe_job(&j).unwrap().state, JobState::Active, "only Complete counts as done");
        let j =
            job("metadata: {name: b-1-image, uid: u2}\nstatus:\n  conditions:\n  - {type: Complete, status: 'True'}\n");
        assert_eq!(observe_job(&j).unwrap().state, JobState::Succeeded);
        let j = job(
            "metadata: {name: b-1-image, uid: u2}\nstatus:\n  conditions:\n  - {type: Failed, status: 'True', reason: BackoffLimitExceeded, message: Job has reached the specified backoff limit}\n",
        );
        assert_eq!(
            observe_job(&j).unwrap().state,
            JobState::Failed {
                reason: "BackoffLimitExceeded".into(),
                message: "Job has reached the specified backoff limit".into()
            }
        );
        assert!(observe_job(&job("metadata: {name: x}\n")).is_none());
    }

    fn pod(job_uid: &str, exit: i32, message: &str, finished: i64) -> ObservedPod {
        let p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("p-{finished}"), "ownerReferences": [
                {"apiVersion": "batch/v1", "kind": "Job", "name": "j", "uid": job_uid, "controller": true}
            ]},
            "status": {"containerStatuses": [
                {"name": "install-builder", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                 "state": {"terminated": {"exitCode": 0, "message": "not me"}}},
                {"name": BUILDER_CONTAINER, "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                 "state": {"terminated": {"exitCode": exit, "message": message,
                   "finishedAt": Timestamp::from_second(finished).unwrap().to_string()}}}
            ]}
        }))
        .unwrap();
        observe_pod(&p)
    }

    #[test]
    fn results_bind_to_the_job_uid() {
        let j = ObservedJob {
            name: "b-1-image".into(),
            uid: "u-new".into(),
            run: Some(1),
            kind: Some(JobKind::Image),
            state: JobState::Succeeded,
        };
        let ours = render(&BuilderResult::Image { digest: format!("sha256:{}", "1".repeat(64)) });
        let stale = render(&BuilderResult::Image { digest: format!("sha256:{}", "2".repeat(64)) });
        // A pod of an older Job with the same name finished later: it must not count.
        let pods = vec![pod("u-new", 0, &ours, 100), pod("u-old", 0, &stale, 200)];
        assert_eq!(result_for_job(JobKind::Image, &j, &pods).unwrap().digest(), format!("sha256:{}", "1".repeat(64)));
        // Only the old Job's pod: no result.
        let err = result_for_job(JobKind::Image, &j, &pods[1..]).unwrap_err();
        assert!(err.to_string().contains("uid u-new"), "{err}");
        // A failed attempt followed by a successful retry: the successful one counts.
        let pods = vec![pod("u-new", 1, "boom", 100), pod("u-new", 0, &ours, 150)];
        assert!(result_for_job(JobKind::Image, &j, &pods).is_ok());
        // Only failed attempts: no result.
        assert!(matches!(result_for_job(JobKind::Image, &j, &pods[..1]), Err(result::Error::Missing(_))));
        // Malformed message: a parse error, not a missing result.
        let pods = vec![pod("u-new", 0, "done!", 100)];
        assert!(matches!(result_for_job(JobKind::Image, &j, &pods), Err(result::Error::Malformed(_))));
    }
}
