//! kinoite-zfs-operator: a Kubernetes operator running a safe release pipeline for ZFS on
//! Fedora Kinoite.
//!
//! Layout (see `docs/architecture.md`):
//! - [`api`]: the custom resources, source of truth for the CRDs;
//! - [`registry`]: all OCI registry I/O;
//! - [`pipeline`]: the pipeline logic (resolution, cache decision, verification, promotion);
//! - [`jobs`]: rendering of builder Jobs and the contract with the builder;
//! - [`builder`]: what runs inside builder pods (`builder install`, `builder akmods`);
//! - [`controllers`]: the Kubernetes controllers;
//! - [`operator`]: the operator process (`run`): controllers, health and metrics endpoints;
//! - [`cli`]: the command line, the same code paths for scripts and runbooks.

pub mod api;
pub mod builder;
pub mod cli;
pub mod controllers;
pub mod jobs;
pub mod operator;
pub mod pipeline;
pub mod registry;
pub mod signing;
pub mod tls;

#[cfg(test)]
pub(crate) mod test_support;
