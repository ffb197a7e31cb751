//! Requests in flight and graph runs come before guests that compute for long.
//!
//! ONNX Runtime's intra-op threads span every core, so any CPU a guest takes while a
//! graph runs stalls that run (one late thread holds up each parallel operator), and
//! a busy core delays the wake-ups along a request's path. Operating-system
//! priorities do not fix this: measured on the 2-core machine, a competing thread at
//! `SCHED_IDLE` raised a neighbour's embedding p99 as much as one at normal priority,
//! and a guest that sleeps between slices keeps its scheduler credit. So the host
//! orders the work itself: a guest that computes past a short burst becomes
//! *background* and runs only while the host is otherwise idle — no graph running
//! and no foreground request in flight. Work that starts while background guests
//! exist preempts them at once (the sandbox bumps its epoch, so their next deadline
//! check fires within microseconds).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

struct Activity {
    /// Graph runs plus foreground requests.
    busy: AtomicUsize,
    /// Graph runs.
    graphs: AtomicUsize,
    /// Foreground requests in flight.
    requests: AtomicUsize,
    /// When a request last started while another foreground one was in flight.
    last_overlap_ms: AtomicU64,
    background_guests: AtomicUsize,
    /// Foreground work started so far: tells a gap in the work from idleness.
    starts: AtomicU64,
    idle: Notify,
    preempt: OnceLock<Box<dyn Fn() + Send + Sync>>,
}

static ACTIVITY: Activity = Activity::new();

/// Foreground work in progress (a graph run, or a request whose guest has not turned
/// background); background guests wait while any exists.
#[must_use]
pub struct Foreground {
    activity: &'static Activity,
    request: bool,
    graph: bool,
}

/// Held by a guest request from the moment it turns background until it ends.
#[must_use]
pub struct BackgroundGuest(&'static Activity);

/// How long after two requests overlapped the host counts as contended: a flood of
/// requests, or a second client, keeps threads from spinning.
const QUIET_AFTER_MS: u64 = 20;

/// How long the host must have been idle before background guests run again.
const IDLE_GRACE: Duration = Duration::from_millis(2);

fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    // +QUIET_AFTER_MS: a host that has just started has seen no overlap.
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + QUIET_AFTER_MS
}

impl Activity {
    const fn new() -> Self {
        Self {
            busy: AtomicUsize::new(0),
            graphs: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            last_overlap_ms: AtomicU64::new(0),
            background_guests: AtomicUsize::new(0),
            starts: AtomicU64::new(0),
            idle: Notify::const_new(),
            preempt: OnceLock::new(),
        }
    }

    fn graph_run(&'static self) -> Foreground {
        self.graphs.fetch_add(1, Ordering::SeqCst);
        let mut run = self.foreground();
        run.graph = true;
        run
    }

    fn foreground(&'static self) -> Foreground {
        self.starts.fetch_add(1, Ordering::SeqCst);
        self.busy.fetch_add(1, Ordering::SeqCst);
        if self.background_guests.load(Ordering::SeqCst) > 0 {
            if let Some(preempt) = self.preempt.get() {
                preempt();
            }
        }
        Foreground {
            activity: self,
            request: false,
            graph: false,
        }
    }

    fn foreground_request(&'static self) -> Foreground {
        if self.requests.fetch_add(1, Ordering::SeqCst) > 0 {
            self.last_overlap_ms.store(now_ms(), Ordering::Relaxed);
        }
        let mut foreground = self.foreground();
        foreground.request = true;
        foreground
    }

    fn quiet(&self, own: usize) -> bool {
        self.busy.load(Ordering::SeqCst) <= own
            && now_ms().saturating_sub(self.last_overlap_ms.load(Ordering::Relaxed))
                >= QUIET_AFTER_MS
    }

    fn busy(&self) -> bool {
        self.busy.load(Ordering::SeqCst) > 0
    }

    fn background_guest(&'static self) -> BackgroundGuest {
        self.background_guests.fetch_add(1, Ordering::SeqCst);
        BackgroundGuest(self)
    }

    async fn until_idle(&self, at_most: Duration) -> Duration {
        let started = tokio::time::Instant::now();
        let deadline = started + at_most;
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.busy() {
                // Idle, or only a gap between one client's requests: a guest that ran
                // in every such gap would be preempted again a few hundred
                // microseconds later, and each switch delays that next request.
                let starts = self.starts.load(Ordering::SeqCst);
                tokio::time::sleep(IDLE_GRACE.min(deadline - tokio::time::Instant::now())).await;
                if (!self.busy() && self.starts.load(Ordering::SeqCst) == starts)
                    || tokio::time::Instant::now() >= deadline
                {
                    break;
                }
                continue;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
        started.elapsed()
    }
}

impl Drop for Foreground {
    fn drop(&mut self) {
        if self.request {
            self.activity.requests.fetch_sub(1, Ordering::SeqCst);
        }
        if self.graph {
            self.activity.graphs.fetch_sub(1, Ordering::SeqCst);
        }
        if self.activity.busy.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.activity.idle.notify_waiters();
        }
    }
}

impl Drop for BackgroundGuest {
    fn drop(&mut self) {
        self.0.background_guests.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Installs how background guests are interrupted (the sandbox bumps its epoch).
pub fn set_preempt_hook(hook: impl Fn() + Send + Sync + 'static) {
    let _ = ACTIVITY.preempt.set(Box::new(hook));
}

/// Marks a graph run as started and preempts background guests.
pub fn graph_run() -> Foreground {
    ACTIVITY.graph_run()
}

/// Whether any graph is running now.
pub fn graph_running() -> bool {
    ACTIVITY.graphs.load(Ordering::SeqCst) > 0
}

pub fn busy() -> bool {
    ACTIVITY.busy()
}

/// A guest request that has not (yet) computed past its burst.
pub fn foreground_request() -> Foreground {
    ACTIVITY.foreground_request()
}

/// Whether spinning threads would take CPU from nobody: no foreground work but `own`
/// units (the requests a graph run serves) and no two requests overlapping lately.
/// A run that spins while anything else wants the cores slows both (docs/PROVIDERS.md).
pub fn quiet(own: usize) -> bool {
    ACTIVITY.quiet(own)
}

pub fn background_guest() -> BackgroundGuest {
    ACTIVITY.background_guest()
}

/// Waits until no foreground work remains, or `at_most` (so a background guest still
/// creeps towards its own limits on a host that is never idle). Returns the time waited.
pub async fn until_idle(at_most: Duration) -> Duration {
    ACTIVITY.until_idle(at_most).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    #[tokio::test]
    async fn foreground_work_preempts_background_guests_which_wake_when_idle() {
        // A private instance: other tests run graphs through the process-wide one.
        let activity: &'static Activity = Box::leak(Box::new(Activity::new()));
        let preempted = Arc::new(AtomicBool::new(false));
        let flag = preempted.clone();
        let _ = activity
            .preempt
            .set(Box::new(move || flag.store(true, Ordering::SeqCst)));

        drop(activity.foreground());
        assert!(
            !preempted.load(Ordering::SeqCst),
            "no background guest, no preemption"
        );

        let guest = activity.background_guest();
        let run = activity.foreground();
        assert!(preempted.load(Ordering::SeqCst));
        let waiter = tokio::spawn(activity.until_idle(Duration::from_secs(10)));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "waits while foreground work runs");
        drop(run);
        let waited = tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("woken when the work ends")
            .unwrap();
        assert!(waited >= Duration::from_millis(15));

        let run = activity.foreground();
        let waited = activity.until_idle(Duration::from_millis(30)).await;
        assert!(waited >= Duration::from_millis(30) && waited < Duration::from_secs(1));
        drop(run);
        drop(guest);
        // Idle at once: it returns after its 2 ms of quiet, not at the 10 s cap (a bound of
        // 5 ms failed about once in six runs on the loaded 2-core machine).
        assert!(activity.until_idle(Duration::from_secs(10)).await < Duration::from_secs(1));
    }

    #[test]
    fn overlapping_requests_make_the_host_contended_for_a_while() {
        let activity: &'static Activity = Box::leak(Box::new(Activity::new()));
        let first = activity.foreground_request();
        assert!(activity.quiet(1), "one request alone is quiet");
        assert!(!activity.quiet(0));
        drop(first);
        let a = activity.foreground_request();
        let b = activity.foreground_request();
        assert!(!activity.quiet(2), "two requests overlapped just now");
        drop((a, b));
    }
}
