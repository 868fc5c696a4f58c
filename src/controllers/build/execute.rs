//! Doing the cache and verification work items the planner asks for (step 3 of the reconcile):
//! the pipeline's cache decision and candidate verification, with their errors turned into
//! classified [`RegistryFailure`]s. Resolution and image confirmation are done elsewhere.

use super::work::{CacheRequest, FailureClass, RegistryFailure, VerifyRequest, WorkOutcome};
use crate::pipeline::{cache, verify};
use crate::registry::RegistryClient;

/// [`super::work::RegistryWork::CheckCache`] and [`super::work::RegistryWork::ConfirmAkmods`]:
/// `Cache(verdict)`, or `Failed` when no verdict can be given (never "missing" for an
/// unauthorized or unreachable registry).
pub async fn check_cache<R: RegistryClient + ?Sized>(registry: &R, request: &CacheRequest) -> WorkOutcome {
    let query = match request.query() {
        Ok(query) => query,
        Err(err) => return failed(FailureClass::Permanent, err.to_string()),
    };
    match cache::check_cache(registry, &query).await {
        Ok(check) => WorkOutcome::Cache(check.verdict),
        Err(err) => failed(FailureClass::of(err.class()), err.to_string()),
    }
}

/// [`super::work::RegistryWork::Verify`]: `Verified(result)` for a verdict either way, `Failed`
/// when the registry could not be read.
pub async fn verify<R: RegistryClient + ?Sized>(registry: &R, request: &VerifyRequest) -> WorkOutcome {
    let query = match request.query() {
        Ok(query) => query,
        Err(err) => return failed(FailureClass::Permanent, err.to_string()),
    };
    match verify::verify(registry, &query).await {
        Ok(verification) => WorkOutcome::Verified(verification.result()),
        Err(err) => failed(FailureClass::of(err.class()), err.to_string()),
    }
}

fn failed(class: FailureClass, message: String) -> WorkOutcome {
    WorkOutcome::Failed(RegistryFailure { class, message })
}
