//! Whether a tenant's guest has been misbehaving lately: at least half of its recent
//! requests ended in a trap, a timeout or an exhausted limit. A hostile guest fails
//! nearly every request; a working guest with a rare bug does not, and one bad request
//! must not slow all of a busy tenant's others.

use std::sync::OnceLock;
use std::time::Instant;

use parking_lot::Mutex;

/// Requests and failures are counted in windows of this length; "lately" is the
/// current window and the one before it (1–2 s).
const WINDOW_MS: u64 = 1000;

#[derive(Default)]
pub struct Conduct {
    windows: Mutex<Windows>,
}

#[derive(Default)]
struct Windows {
    start_ms: u64,
    current: Counts,
    previous: Counts,
}

#[derive(Default, Clone, Copy)]
struct Counts {
    requests: u64,
    failures: u64,
}

fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

impl Conduct {
    pub fn request(&self) {
        self.at(now_ms(), |w| w.current.requests += 1);
    }

    pub fn failure(&self) {
        self.at(now_ms(), |w| w.current.failures += 1);
    }

    pub fn misbehaving(&self) -> bool {
        self.at(now_ms(), Windows::misbehaving)
    }

    fn at<T>(&self, now: u64, f: impl FnOnce(&mut Windows) -> T) -> T {
        let mut w = self.windows.lock();
        let elapsed = now.saturating_sub(w.start_ms);
        if elapsed >= 2 * WINDOW_MS {
            *w = Windows {
                start_ms: now,
                ..Windows::default()
            };
        } else if elapsed >= WINDOW_MS {
            w.previous = w.current;
            w.current = Counts::default();
            w.start_ms += WINDOW_MS;
        }
        f(&mut w)
    }
}

impl Windows {
    fn misbehaving(&mut self) -> bool {
        let failures = self.current.failures + self.previous.failures;
        let requests = (self.current.requests + self.previous.requests).max(failures);
        failures > 0 && 2 * failures >= requests
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(conduct: &Conduct, now: u64, requests: u64, failures: u64) {
        for _ in 0..requests {
            conduct.at(now, |w| w.current.requests += 1);
        }
        for _ in 0..failures {
            conduct.at(now, |w| w.current.failures += 1);
        }
    }

    #[test]
    fn a_guest_failing_most_requests_misbehaves_one_with_a_rare_failure_does_not() {
        let hostile = Conduct::default();
        assert!(!hostile.at(0, Windows::misbehaving), "no requests yet");
        run(&hostile, 10, 1, 1);
        assert!(
            hostile.at(10, Windows::misbehaving),
            "its only request failed"
        );

        let busy = Conduct::default();
        run(&busy, 10, 100, 1);
        assert!(
            !busy.at(10, Windows::misbehaving),
            "1 failure in 100 requests"
        );
        run(&busy, 20, 0, 60);
        assert!(busy.at(20, Windows::misbehaving), "now most of them fail");
    }

    #[test]
    fn failures_are_forgotten_after_two_windows() {
        let conduct = Conduct::default();
        run(&conduct, 100, 3, 3);
        assert!(
            conduct.at(1500, Windows::misbehaving),
            "still in the previous window"
        );
        assert!(!conduct.at(2200, Windows::misbehaving), "two windows later");
        run(&conduct, 2300, 1, 0);
        assert!(!conduct.at(2300, Windows::misbehaving));
    }
}
