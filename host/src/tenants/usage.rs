//! What each tenant used, for operators and billing (also in `/metrics`).

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Value};

#[derive(Default)]
pub struct Usage {
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub limit_hits: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub completion_tokens: AtomicU64,
    /// Recent guest requests and misbehaviour (traps, timeouts, exhausted limits).
    pub conduct: super::conduct::Conduct,
}

impl Usage {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
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
