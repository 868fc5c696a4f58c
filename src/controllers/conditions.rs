//! kstatus conditions as pure functions: a controller computes the whole status each reconcile,
//! and `lastTransitionTime` only moves when a condition's status actually changes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition status values.
pub const TRUE: &str = "True";
pub const FALSE: &str = "False";
pub const UNKNOWN: &str = "Unknown";

/// The desired state of one condition, without timestamps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredCondition {
    pub type_: String,
    pub status: &'static str,
    pub reason: String,
    pub message: String,
}

impl DesiredCondition {
    pub fn new(type_: &str, status: &'static str, reason: &str, message: impl Into<String>) -> Self {
        Self { type_: type_.into(), status, reason: reason.into(), message: message.into() }
    }
}

/// Sets `desired` in `conditions`, keeping the previous `lastTransitionTime` when the status is
/// unchanged (kstatus tools use it to tell how long a state has lasted).
pub fn set_condition(conditions: &mut Vec<Condition>, desired: DesiredCondition, generation: Option<i64>, now: &Time) {
    let previous = conditions.iter().position(|c| c.type_ == desired.type_);
    let last_transition_time = match previous.map(|i| &conditions[i]) {
        Some(old) if old.status == desired.status => old.last_transition_time.clone(),
        _ => now.clone(),
    };
    let condition = Condition {
        type_: desired.type_,
        status: desired.status.into(),
        reason: desired.reason,
        message: desired.message,
        observed_generation: generation,
        last_transition_time,
    };
    match previous {
        Some(i) => conditions[i] = condition,
        None => conditions.push(condition),
    }
}

/// Removes a condition (kstatus wants `Reconciling`/`Stalled` absent when false).
pub fn remove_condition(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

/// Looks up a condition by type.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let mut conditions = Vec::new();
        set_condition(&mut conditions, DesiredCondition::new("Ready", FALSE, "Building", "run 1"), Some(1), &at(10));
        set_condition(&mut conditions, DesiredCondition::new("Ready", FALSE, "Verifying", "run 1"), Some(1), &at(20));
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, at(10));
        assert_eq!(conditions[0].reason, "Verifying");
        set_condition(&mut conditions, DesiredCondition::new("Ready", TRUE, "Succeeded", "run 1"), Some(2), &at(30));
        assert_eq!(conditions[0].last_transition_time, at(30));
        assert_eq!(conditions[0].observed_generation, Some(2));
        remove_condition(&mut conditions, "Ready");
        assert!(find(&conditions, "Ready").is_none());
    }
}
