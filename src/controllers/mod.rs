//! The Kubernetes controllers (`ZfsImageBuild`, `Promotion`) and the status logic they share.

pub mod conditions;
pub mod decoded;
pub mod image_build;
pub mod metrics;
pub mod promotion;
pub mod runtime;
pub mod signing;

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;

/// Where "now" comes from. Production reads the system clock; tests move time themselves. The
/// planners never read a clock: the reconciles pass this value in.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(Timestamp::now)
}
