//! The `ZfsImageBuild` controller's pure core: the run planner ([`plan`]), its inputs
//! ([`observed`], [`work`]), spec checks ([`spec`]) and condition reasons ([`reasons`]); and
//! [`execute`], which does the resolution, cache and verification work items.
//!
//! The reconcile that wraps it (kube-runtime `Controller`, a later step) is:
//!
//! 1. observe: read the build, its Jobs/Pods/ConfigMaps, the lock ConfigMap and the Promotions
//!    into an [`observed::ObservedCluster`]; take the build's [`work::RegistryResults`];
//! 2. [`plan::plan`];
//! 3. do `registry_work` (record each outcome, then plan again right away), apply `apply`
//!    in order, delete `delete`, write `status` when it changed, emit `events`;
//! 4. requeue after `requeue_after`.

pub mod execute;
pub mod observed;
pub mod plan;
pub mod reasons;
pub mod spec;
pub mod work;
