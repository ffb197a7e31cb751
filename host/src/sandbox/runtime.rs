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
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::runtime::{Handle, Runtime};

/// Built at the first demotion; taken down by `shut_down_background` at exit.
static BACKGROUND: Mutex<Option<Runtime>> = Mutex::new(None);
static BACKGROUND_CLOSED: AtomicBool = AtomicBool::new(false);

fn background_runtime() -> Option<Handle> {
    let mut runtime = BACKGROUND.lock();
    if runtime.is_none() && !BACKGROUND_CLOSED.load(Ordering::Acquire) {
        *runtime = Some(
            tokio::runtime::Builder::new_multi_thread()
                .thread_name("guest-background")
                .enable_all()
                .on_thread_start(idle_policy_for_this_thread)
                .build()
                .expect("building the background guest runtime"),
        );
    }
    runtime.as_ref().map(|r| r.handle().clone())
}

/// At exit, after the host's own runtime (whose tasks own the background ones) is
/// gone: drops the background guests and waits up to `timeout` for their blocking
/// work (a graph run), which must not outlive ONNX Runtime.
pub fn shut_down_background(timeout: Duration) {
    BACKGROUND_CLOSED.store(true, Ordering::Release);
    let runtime = BACKGROUND.lock().take();
    if let Some(runtime) = runtime {
        runtime.shutdown_timeout(timeout);
    }
}

/// Aborts a guest's task when dropped, unless disarmed first.
pub struct AbortOnDrop(Option<tokio::task::AbortHandle>);

impl AbortOnDrop {
    pub fn new(task: tokio::task::AbortHandle) -> Self {
        Self(Some(task))
    }

    pub fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// Polls `future` on the current runtime until `demoted` is set, then finishes it on
/// the background runtime. Dropping the returned future drops `future` wherever it
/// runs: a guest whose client has gone stops even after it was demoted.
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
        None => {
            let Some(background) = background_runtime() else {
                return future.await; // exiting
            };
            let task = background.spawn(future);
            let _stops_with_us = AbortOnDrop::new(task.abort_handle());
            match task.await {
                Ok(output) => output,
                Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
                // Cancelled by `shut_down_background`: this task is being dropped too.
                Err(_) => std::future::pending().await,
            }
        }
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

    #[tokio::test]
    async fn dropping_a_demoted_future_drops_it_on_the_background_threads() {
        // The guest's store (here: the sender) must go with its request; a detached
        // background task kept departed clients' generations running.
        let (store, gone) = tokio::sync::oneshot::channel::<()>();
        let request = tokio::spawn(run_demotable(
            async move {
                let _store = store;
                std::future::pending::<()>().await
            },
            Arc::new(AtomicBool::new(true)),
        ));
        tokio::time::sleep(Duration::from_millis(20)).await;
        request.abort();
        let dropped = tokio::time::timeout(Duration::from_secs(5), gone).await;
        assert!(
            matches!(dropped, Ok(Err(_))),
            "the demoted future still runs"
        );
    }
}
