//! Where guests run. Every guest starts on the host's async threads; one that
//! computes past a short burst (see `cpu_priority`) is moved to threads at Linux's
//! `SCHED_IDLE` policy for the rest of its request.
//!
//! Why an OS policy on top of `cpu_priority`'s own ordering: that ordering acts only
//! once our code runs, and measured (`perf sched timehist`, 2-core machine) a thread
//! woken behind a guest at normal or nice-10 priority waited up to 4 ms for its core —
//! the epoch thread that should interrupt the guest included — while the other core
//! sat idle. Any normal thread's wake-up preempts a `SCHED_IDLE` one at once. Moving
//! the guest (its future is `Send`; wasmtime resumes it on any thread) is needed
//! because an unprivileged thread cannot return from `SCHED_IDLE`.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::Poll;

fn background_runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .thread_name("guest-background")
            .enable_all()
            .on_thread_start(idle_policy_for_this_thread)
            .build()
            .expect("building the background guest runtime")
    })
}

/// Polls `future` on the current runtime until `demoted` is set, then finishes it on
/// the background runtime.
pub async fn run_demotable<T: Send + 'static>(
    future: impl Future<Output = T> + Send + 'static,
    demoted: Arc<AtomicBool>,
) -> T {
    let mut future = Box::pin(future);
    let finished = std::future::poll_fn(|cx| {
        if demoted.load(Ordering::Relaxed) {
            return Poll::Ready(None);
        }
        future.as_mut().poll(cx).map(Some)
    })
    .await;
    match finished {
        Some(output) => output,
        None => match background_runtime().spawn(future).await {
            Ok(output) => output,
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        },
    }
}

fn idle_policy_for_this_thread() {
    #[cfg(target_os = "linux")]
    unsafe {
        let param = libc::sched_param { sched_priority: 0 };
        if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) != 0 {
            tracing::debug!("could not put a background guest thread at SCHED_IDLE");
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn policy_of_this_thread() -> i32 {
        unsafe { libc::sched_getscheduler(0) }
    }

    #[tokio::test]
    async fn a_demoted_future_finishes_on_an_idle_policy_thread() {
        let demoted = Arc::new(AtomicBool::new(false));
        let flag = demoted.clone();
        let output = run_demotable(
            async move {
                let before = policy_of_this_thread();
                flag.store(true, Ordering::Relaxed);
                tokio::task::yield_now().await;
                (before, policy_of_this_thread())
            },
            demoted,
        )
        .await;
        assert_eq!(output, (libc::SCHED_OTHER, libc::SCHED_IDLE));
    }
}
