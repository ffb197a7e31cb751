//! A guest's CPU time, from the clock of the thread that runs it.
//!
//! Wall time between two epoch ticks is not CPU time: on a busy or shared machine a
//! guest's thread may wait several milliseconds for a core in the middle of its wasm,
//! and counted as computing, a router guest that needs well under a millisecond was
//! sent to the background (where a stream stalls and a departed client is noticed
//! late). The thread's own CPU clock does not advance while it waits.
//!
//! A guest's task moves between threads only between polls, and its epoch callback
//! runs inside a poll, on the polling thread. So each poll marks the thread clock as it
//! starts, and each callback takes the time since the mark (or the previous callback).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// The calling thread's CPU time; None where the platform has no such clock.
pub fn this_thread() -> Option<Duration> {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the struct passed.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) } != 0 {
        return None;
    }
    Some(Duration::new(now.tv_sec as u64, now.tv_nsec as u32))
}

/// The thread clock (nanoseconds) when the guest's current stretch of running began.
#[derive(Clone, Default)]
pub struct Mark(Arc<AtomicU64>);

impl Mark {
    /// CPU time the current thread spent since the mark, and marks now. None without a
    /// thread clock.
    pub fn take(&self) -> Option<Duration> {
        let now = this_thread()?;
        let since = self.0.swap(now.as_nanos() as u64, Ordering::Relaxed);
        Some(now.saturating_sub(Duration::from_nanos(since)))
    }

    fn set_now(&self) {
        if let Some(now) = this_thread() {
            self.0.store(now.as_nanos() as u64, Ordering::Relaxed);
        }
    }
}

/// Marks the thread clock each time `inner` is polled.
pub struct Marked<F> {
    inner: Pin<Box<F>>,
    mark: Mark,
}

impl<F: Future> Marked<F> {
    pub fn new(inner: F, mark: Mark) -> Self {
        Self {
            inner: Box::pin(inner),
            mark,
        }
    }
}

impl<F: Future> Future for Marked<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.mark.set_now();
        self.inner.as_mut().poll(cx)
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn spin(for_: Duration) {
        let started = std::time::Instant::now();
        while started.elapsed() < for_ {
            std::hint::black_box(0u64);
        }
    }

    #[test]
    fn counts_computing_but_not_sleeping() {
        let mark = Mark::default();
        mark.set_now();
        std::thread::sleep(Duration::from_millis(30));
        let slept = mark.take().unwrap();
        assert!(slept < Duration::from_millis(5), "{slept:?}");
        spin(Duration::from_millis(30));
        let spun = mark.take().unwrap();
        // A busy machine may take the core away for part of the spin, never add to it.
        assert!(
            spun > Duration::from_millis(2) && spun < Duration::from_millis(40),
            "{spun:?}"
        );
    }

    #[tokio::test]
    async fn each_poll_marks_the_clock() {
        let mark = Mark::default();
        let probe = mark.clone();
        let run = Marked::new(
            async move {
                spin(Duration::from_millis(20));
                tokio::task::yield_now().await;
                // Marked again as this poll began: the spin before the yield is not here.
                probe.take().unwrap()
            },
            mark,
        );
        let since_poll = run.await;
        assert!(since_poll < Duration::from_millis(5), "{since_poll:?}");
    }
}
