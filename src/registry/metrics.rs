//! Request counters by answer class: the source of `registry_requests_total{result=...}`. One
//! set is shared by every client of a pool; the controller's metrics endpoint reads it.

use std::sync::atomic::{AtomicU64, Ordering};

use super::AnswerClass;

/// Counts registry answers (one per HTTP request, token requests included) by class.
#[derive(Debug, Default)]
pub struct RequestCounters {
    counts: [AtomicU64; AnswerClass::ALL.len()],
}

impl RequestCounters {
    pub fn new() -> RequestCounters {
        RequestCounters::default()
    }

    pub fn record(&self, class: AnswerClass) {
        self.counts[index(class)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, class: AnswerClass) -> u64 {
        self.counts[index(class)].load(Ordering::Relaxed)
    }

    /// `(result label, count)` for every class, in [`AnswerClass::ALL`] order.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        AnswerClass::ALL.iter().map(|&c| (c.as_str(), self.get(c))).collect()
    }

    pub fn total(&self) -> u64 {
        AnswerClass::ALL.iter().map(|&c| self.get(c)).sum()
    }
}

fn index(class: AnswerClass) -> usize {
    AnswerClass::ALL.iter().position(|&c| c == class).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_class() {
        let counters = RequestCounters::new();
        counters.record(AnswerClass::Present);
        counters.record(AnswerClass::Present);
        counters.record(AnswerClass::RateLimited);
        assert_eq!(counters.get(AnswerClass::Present), 2);
        assert_eq!(counters.get(AnswerClass::Absent), 0);
        assert_eq!(counters.total(), 3);
        assert_eq!(counters.snapshot()[3], ("rate_limited", 1));
        assert_eq!(counters.snapshot().len(), AnswerClass::ALL.len());
    }
}
