//! The door to runs that callers ask of a model's graph directly (`/v2`, guests'
//! `compute`). A run may be at most one batch of the model's queue (`RunLimits`).
//! Runs take turns here, one at a time in order of arrival, before they reach the
//! model's session: a caller that goes away while in line leaves it without costing
//! a run (a blocking task waiting for the session would have run the graph for
//! nobody), and beyond `max_waiting` runs in line callers are told to retry (busy),
//! as the embedding queue does beyond its waiting inputs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::BatchingConfig;
use crate::error::{ErrorCode, InferenceError};
use crate::providers::{GraphSignature, NamedTensors, ProviderError, RunLimits};

pub struct GraphGate {
    limits: RunLimits,
    turn: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
}

/// A run's turn: held until the run ends (move it into the blocking task, so a
/// caller that goes away does not let the next run start beside its own).
pub type Turn = OwnedSemaphorePermit;

impl GraphGate {
    /// One run holds at most a batch of the queue; as many runs may wait as would
    /// hold the queue's waiting inputs in full batches.
    pub fn new(batching: &BatchingConfig) -> Self {
        let limits = RunLimits {
            max_rows: batching.max_batch_inputs,
            max_tokens: batching.max_batch_tokens,
        };
        let max_waiting = batching.max_queued_inputs / batching.max_batch_inputs.max(1);
        Self::with(limits, max_waiting)
    }

    fn with(limits: RunLimits, max_waiting: usize) -> Self {
        Self {
            limits,
            turn: Arc::new(Semaphore::new(1)),
            waiting: AtomicUsize::new(0),
            max_waiting: max_waiting.max(1),
        }
    }

    /// Whether the inputs are a run this model may take (`RunLimits`).
    pub fn check_size(
        &self,
        signature: &GraphSignature,
        inputs: &NamedTensors,
    ) -> Result<(), ProviderError> {
        signature.check_run_size(inputs, self.limits)
    }

    /// Waits for this caller's turn (first come, first served). A caller that goes
    /// away while waiting leaves the line.
    pub async fn turn(&self) -> Result<Turn, InferenceError> {
        if self.waiting.fetch_add(1, Ordering::Relaxed) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
            return Err(InferenceError::new(
                ErrorCode::Busy,
                format!(
                    "{} graph runs are waiting for this model already; retry later",
                    self.max_waiting
                ),
            ));
        }
        let _in_line = InLine(&self.waiting);
        Ok(self
            .turn
            .clone()
            .acquire_owned()
            .await
            .expect("the gate's semaphore is never closed"))
    }
}

/// Leaves the line when the wait ends, also when the waiting future is dropped.
struct InLine<'a>(&'a AtomicUsize);

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_take_turns_and_a_full_line_is_busy() {
        let limits = RunLimits {
            max_rows: 4,
            max_tokens: 64,
        };
        let gate = GraphGate::with(limits, 2);
        let first = gate.turn().await.unwrap();
        // Two wait behind the first; a third finds the line full.
        let mut second = Box::pin(gate.turn());
        let mut third = Box::pin(gate.turn());
        assert!(futures_poll(&mut second).is_none());
        assert!(futures_poll(&mut third).is_none());
        let err = gate.turn().await.unwrap_err();
        assert_eq!(err.code, ErrorCode::Busy);
        // One leaves the line (its caller went away): there is room again.
        drop(third);
        let mut fourth = Box::pin(gate.turn());
        assert!(futures_poll(&mut fourth).is_none());
        drop(first);
        let second_turn = futures_poll(&mut second);
        assert!(matches!(second_turn, Some(Ok(_))));
        assert!(futures_poll(&mut fourth).is_none());
    }

    fn futures_poll<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        match std::pin::Pin::new(f).poll(&mut cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        }
    }
}
