//! The Kubernetes controllers (`ZfsImageBuild`, `Promotion`) and the status logic they share.

pub mod build;
pub mod conditions;
pub mod metrics;
pub mod promotion;
