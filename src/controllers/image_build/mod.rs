//! The `ZfsImageBuild` controller.
//!
//! The pure core: the run planner ([`plan`]), its inputs ([`observed`], [`work`]), spec checks
//! ([`spec`]) and condition reasons ([`reasons`]). Around it, with I/O: the kube-runtime wiring
//! ([`controller`]: watches, caches, context, error policy), the reconcile (`reconcile`), the
//! registry-work executor ([`executor`]) and the pipeline adapters it calls ([`execute`]:
//! resolution, cache decision, verification as classified work outcomes).
//!
//! A reconcile:
//!
//! 1. observe: read the build (from the API server), its Jobs/Pods/ConfigMaps and the Promotions
//!    (from the caches) and the lock ConfigMap into an [`observed::ObservedCluster`]; take the
//!    build's [`work::RegistryResults`];
//! 2. [`plan::plan`]; do its `registry_work` with the [`executor`], record each outcome, and plan
//!    again until no work is left;
//! 3. write `status` when it changed, apply `apply` in order, delete `delete`, emit `events`;
//! 4. requeue after `requeue_after`.

pub mod controller;
pub mod execute;
pub mod executor;
pub mod observed;
pub mod plan;
pub mod reasons;
mod reconcile;
pub mod spec;
pub mod work;
