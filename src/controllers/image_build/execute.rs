//! Doing the resolution, cache and verification work items the planner asks for (step 3 of the
//! reconcile): the pipeline's resolver, cache decision and candidate verification, with their
//! errors turned into classified [`RegistryFailure`]s. Image confirmation is done elsewhere.

use super::work::{CacheRequest, FailureClass, RegistryFailure, ResolveRequest, VerifyRequest, WorkOutcome};
use crate::pipeline::scan_memory::ScanMemory;
use crate::pipeline::{cache, resolve, verify};
use crate::registry::RegistryClient;

/// [`super::work::RegistryWork::Resolve`]: `Resolved(inputs)` (before `spec.kernels`, which the
/// planner applies), or `Failed`. `resolver` is the process's one resolver, shared by every build
/// and reconcile, so a base digest's layers are scanned once per process.
pub async fn resolve<R: RegistryClient + ?Sized>(
    resolver: &resolve::Resolver,
    registry: &R,
    request: &ResolveRequest,
) -> WorkOutcome {
    let request = match request.query() {
        Ok(request) => request,
        Err(err) => return failed(FailureClass::Permanent, err.to_string()),
    };
    match resolver.resolve(registry, &request).await {
        Ok(inputs) => WorkOutcome::Resolved(Box::new(inputs)),
        Err(err) => failed(FailureClass::of(err.class()), err.to_string()),
    }
}

/// [`super::work::RegistryWork::CheckCache`]: `Cache(verdict)`, or `Failed` when no verdict can be given (never "missing" for an
/// unauthorized or unreachable registry).
pub async fn check_cache<R: RegistryClient + ?Sized>(
    registry: &R,
    request: &CacheRequest,
    memory: &ScanMemory,
) -> WorkOutcome {
    let query = match request.query() {
        Ok(query) => query,
        Err(err) => return failed(FailureClass::Permanent, err.to_string()),
    };
    cache_outcome(cache::check_cache(registry, &query, memory).await)
}

/// [`super::work::RegistryWork::ConfirmAkmods`]: the cache decision on the reported digest with
/// coverage from the image's layers only, never from the labels the Job wrote (H11).
pub async fn confirm_akmods<R: RegistryClient + ?Sized>(
    registry: &R,
    request: &CacheRequest,
    memory: &ScanMemory,
) -> WorkOutcome {
    let query = match request.query() {
        Ok(query) => query,
        Err(err) => return failed(FailureClass::Permanent, err.to_string()),
    };
    cache_outcome(cache::confirm_by_content(registry, &query, memory).await)
}

/// A cache decision as a work outcome: the verdict, or `Failed` with the registry's class.
fn cache_outcome(decision: Result<cache::CacheCheck, cache::Error>) -> WorkOutcome {
    match decision {
        Ok(check) => WorkOutcome::Cache(check.verdict),
        Err(err) => failed(FailureClass::of(err.class()), err.to_string()),
    }
}

/// [`super::work::RegistryWork::Verify`]: `Verified(result)` for a verdict either way, `Failed`
/// when the registry could not be read.
pub async fn verify<R: RegistryClient + ?Sized>(
    registry: &R,
    request: &VerifyRequest,
    memory: &ScanMemory,
) -> WorkOutcome {
    let query = match request.query() {
        Ok(query) => query,
        Err(err) => return failed(FailureClass::Permanent, err.to_string()),
    };
    match verify::verify(registry, &query, memory).await {
        Ok(verification) => WorkOutcome::Verified(verification.result()),
        Err(err) => failed(FailureClass::of(err.class()), err.to_string()),
    }
}

fn failed(class: FailureClass, message: String) -> WorkOutcome {
    WorkOutcome::Failed(RegistryFailure { class, message })
}
