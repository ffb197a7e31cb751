//! What each tenant used, for operators and billing (also in `/metrics`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[derive(Default)]
pub struct Usage {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub limit_hits: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub completion_tokens: AtomicU64,
    /// When the tenant's guest last trapped, timed out or sent no response
    /// (milliseconds since the process started, plus one; 0 = never).
    last_guest_failure_ms: AtomicU64,
}

fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

impl Usage {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn guest_failed(&self) {
        self.last_guest_failure_ms.store(now_ms(), Ordering::Relaxed);
    }

    pub fn guest_failed_within(&self, window: Duration) -> bool {
        let last = self.last_guest_failure_ms.load(Ordering::Relaxed);
        last != 0 && now_ms().saturating_sub(last) < window.as_millis() as u64
    }

    pub fn to_json(&self) -> Value {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        json!({
            "requests": get(&self.requests),
            "errors": get(&self.errors),
            "limit_hits": get(&self.limit_hits),
            "prompt_tokens": get(&self.prompt_tokens),
            "completion_tokens": get(&self.completion_tokens),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guest_failure_is_recent_for_its_window_only() {
        let usage = Usage::default();
        assert!(!usage.guest_failed_within(Duration::from_secs(3600)), "never failed");
        usage.guest_failed();
        assert!(usage.guest_failed_within(Duration::from_millis(500)));
        std::thread::sleep(Duration::from_millis(30));
        assert!(!usage.guest_failed_within(Duration::from_millis(10)));
    }
}
