//! The registry-work executor: the one place where the controller turns the planner's
//! [`RegistryWork`] into registry reads — input resolution, the akmods cache decision, the
//! confirmation of a builder's reported digests and candidate verification — and every failure
//! into a classified [`RegistryFailure`] (design §3 invariant 4: only "absent" is an answer,
//! never a reason to rebuild by itself).

use super::execute;
use super::work::{FailureClass, RegistryFailure, RegistryWork, WorkOutcome};
use std::sync::Arc;

use crate::pipeline::resolve::Resolver;
use crate::pipeline::scan_memory::ScanMemory;
use crate::registry::{self, ImageRef, RegistryClient};

/// Does registry work for the build controller. One per process: the resolver's per-digest
/// kernel scans and the per-layer scan memory are shared by every build.
#[derive(Debug, Default)]
pub struct Executor {
    resolver: Resolver,
}

impl Executor {
    /// An executor with a scan memory of its own.
    pub fn new() -> Executor {
        Executor::default()
    }

    /// An executor whose resolution, cache scans and verification remember layers in `memory`
    /// (the client pool's, in the operator).
    pub fn with_memory(memory: Arc<ScanMemory>) -> Executor {
        Executor { resolver: Resolver::with_memory(memory) }
    }

    /// The scan memory.
    pub fn memory(&self) -> &Arc<ScanMemory> {
        self.resolver.memory()
    }

    /// The outcome of one piece of work, read with `registry` (the build's client).
    pub async fn execute<R: RegistryClient + ?Sized>(&self, registry: &R, work: &RegistryWork) -> WorkOutcome {
        match work {
            RegistryWork::Resolve(request) => execute::resolve(&self.resolver, registry, request).await,
            RegistryWork::CheckCache(request) => execute::check_cache(registry, request, self.memory()).await,
            // What an akmods Job reported is confirmed by content, not by the labels it wrote.
            RegistryWork::ConfirmAkmods(request) => execute::confirm_akmods(registry, request, self.memory()).await,
            RegistryWork::ConfirmImage { image } => confirm_image(registry, image).await,
            RegistryWork::Verify(request) => execute::verify(registry, request, self.memory()).await,
        }
    }

    /// Base images scanned for kernels so far (each digest once per process).
    pub fn kernel_scans(&self) -> u64 {
        self.resolver.scans()
    }
}

/// `HEAD` of `NAME@sha256:...`: present, or absent (an answer, not a failure).
async fn confirm_image<R: RegistryClient + ?Sized>(registry: &R, image: &str) -> WorkOutcome {
    let reference = match ImageRef::parse(image) {
        Ok(reference) => reference,
        Err(e) => return failed(FailureClass::Permanent, e.to_string()),
    };
    let Some(expected) = reference.digest().map(str::to_string) else {
        return failed(FailureClass::Permanent, format!("{image} is not pinned by digest"));
    };
    match registry.resolve_digest(&reference).await {
        Ok(digest) if digest == expected => WorkOutcome::Confirmed { present: true },
        Ok(digest) => failed(
            FailureClass::Permanent,
            format!("the registry answered digest {digest} for {image}; refusing to trust either"),
        ),
        Err(e) if e.is_absent() => WorkOutcome::Confirmed { present: false },
        Err(e) => failed(class_of(&e), e.to_string()),
    }
}

fn class_of(error: &registry::Error) -> FailureClass {
    FailureClass::of(error.class())
}

/// A short label of an outcome for metrics and logs.
pub fn outcome_label(outcome: &WorkOutcome) -> &'static str {
    match outcome {
        WorkOutcome::Failed(f) => match f.class {
            FailureClass::Transient => "transient",
            FailureClass::Unauthorized => "unauthorized",
            FailureClass::Permanent => "permanent",
        },
        WorkOutcome::Confirmed { present: false } => "absent",
        _ => "ok",
    }
}

fn failed(class: FailureClass, message: String) -> WorkOutcome {
    WorkOutcome::Failed(RegistryFailure { class, message })
}
