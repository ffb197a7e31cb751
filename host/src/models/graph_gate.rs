//! The door to runs that callers ask of a model's graph directly (`/v2`, guests'
//! `compute`). A run may be at most one batch of the model's queue (`RunLimits`).
//! Runs take turns here, one at a time, before they reach the model's session:
//! tenants in turn (round-robin), each tenant's own runs in order of arrival, and no
//! tenant gets two runs in a row while another waits. So one tenant's burst delays
//! another's run by about one run per tenant in line, as the embedding queue fills
//! its batches fairly across tenants. A caller that goes away while in line leaves
//! it without costing a run (a blocking task waiting for the session would have run
//! the graph for nobody). Beyond `max_waiting` runs in line, callers are told to
//! retry (busy), as the embedding queue does beyond its waiting inputs, except a
//! tenant holding less than an equal share of the line (`fair_share`).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::config::BatchingConfig;
use crate::error::{ErrorCode, InferenceError};
use crate::providers::{GraphSignature, NamedTensors, ProviderError, RunLimits};
use crate::scheduler::fair_share;

pub struct GraphGate {
    limits: RunLimits,
    line: Arc<Mutex<Line>>,
    max_waiting: usize,
}

#[derive(Default)]
struct Line {
    /// The tenant whose run holds the turn (or to whom it is on its way); none
    /// while the graph is free.
    holder: Option<Arc<str>>,
    /// Tenants with callers in line, in the order they are served next.
    tenants: VecDeque<Arc<str>>,
    callers: HashMap<Arc<str>, VecDeque<Caller>>,
    next_id: u64,
}

struct Caller {
    id: u64,
    handover: oneshot::Sender<Turn>,
}

/// A run's turn: held until the run ends (move it into the blocking task, so a
/// caller that goes away does not let the next run start beside its own). Dropping
/// it hands the turn to the next caller in line.
#[must_use]
pub struct Turn {
    line: Option<Arc<Mutex<Line>>>,
}

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
            line: Arc::default(),
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

    /// Waits for this caller's turn: tenants take turns, a tenant's callers go in
    /// order of arrival. A caller that goes away while waiting leaves the line.
    pub async fn turn(&self, tenant: &Arc<str>) -> Result<Turn, InferenceError> {
        let (id, handover) = {
            let mut line = self.line.lock();
            if line.holder.is_none() {
                line.holder = Some(tenant.clone());
                return Ok(Turn {
                    line: Some(self.line.clone()),
                });
            }
            if !line.admits(tenant, self.max_waiting) {
                return Err(InferenceError::new(
                    ErrorCode::Busy,
                    format!(
                        "{} graph runs are waiting for this model already; retry later",
                        self.max_waiting
                    ),
                ));
            }
            line.join(tenant)
        };
        // If this future is dropped after a turn was sent to it, the turn drops with
        // the receiver and passes on; `_in_line` then finds nothing to remove.
        let _in_line = InLine {
            line: &self.line,
            tenant,
            id,
        };
        handover
            .await
            .map_err(|_| InferenceError::internal("the graph's line was dropped"))
    }
}

impl Line {
    /// `fair_share`: a full line still takes a tenant holding less than an equal
    /// share of it.
    fn admits(&self, tenant: &Arc<str>, capacity: usize) -> bool {
        let held = self.callers.get(tenant).map_or(0, VecDeque::len);
        let others = self.callers.len() - usize::from(held > 0);
        fair_share::admits(capacity, self.waiting(), held, 1, others)
    }

    fn waiting(&self) -> usize {
        self.callers.values().map(VecDeque::len).sum()
    }

    fn join(&mut self, tenant: &Arc<str>) -> (u64, oneshot::Receiver<Turn>) {
        let (tx, rx) = oneshot::channel();
        let id = self.next_id;
        self.next_id += 1;
        let callers = self.callers.entry(tenant.clone()).or_default();
        if callers.is_empty() {
            self.tenants.push_back(tenant.clone());
        }
        callers.push_back(Caller { id, handover: tx });
        (id, rx)
    }

    /// The next caller still waiting, tenants in turn; the tenant that just ran
    /// goes behind the others even when its line formed first (it got the turn
    /// without waiting, then queued more while running).
    fn next(&mut self, ran: Option<&Arc<str>>) -> Option<Caller> {
        if self.tenants.len() > 1 && self.tenants.front() == ran {
            self.tenants.rotate_left(1);
        }
        let tenant = self.tenants.pop_front()?;
        let callers = self.callers.get_mut(&tenant)?;
        let caller = callers.pop_front();
        if callers.is_empty() {
            self.callers.remove(&tenant);
        } else {
            self.tenants.push_back(tenant.clone());
        }
        self.holder = Some(tenant);
        caller
    }

    fn leave(&mut self, tenant: &Arc<str>, id: u64) {
        let Some(callers) = self.callers.get_mut(tenant) else {
            return;
        };
        callers.retain(|c| c.id != id);
        if callers.is_empty() {
            self.callers.remove(tenant);
            self.tenants.retain(|t| t != tenant);
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let Some(line) = self.line.take() else {
            return;
        };
        let mut guard = line.lock();
        let ran = guard.holder.take();
        while let Some(caller) = guard.next(ran.as_ref()) {
            let turn = Turn {
                line: Some(line.clone()),
            };
            match caller.handover.send(turn) {
                Ok(()) => return,
                // That caller went away just now: disarm its turn, try the next.
                Err(mut unsent) => unsent.line = None,
            }
        }
        guard.holder = None;
    }
}

/// Leaves the line when the wait ends, also when the waiting future is dropped.
struct InLine<'a> {
    line: &'a Mutex<Line>,
    tenant: &'a Arc<str>,
    id: u64,
}

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        self.line.lock().leave(self.tenant, self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(max_waiting: usize) -> GraphGate {
        let limits = RunLimits {
            max_rows: 4,
            max_tokens: 64,
        };
        GraphGate::with(limits, max_waiting)
    }

    #[tokio::test]
    async fn runs_take_turns_and_a_full_line_is_busy() {
        let gate = gate(2);
        let a: Arc<str> = "a".into();
        let first = gate.turn(&a).await.unwrap();
        // Two wait behind the first; a third finds the line full.
        let mut second = Box::pin(gate.turn(&a));
        let mut third = Box::pin(gate.turn(&a));
        assert!(poll(&mut second).is_none());
        assert!(poll(&mut third).is_none());
        let Err(err) = gate.turn(&a).await else {
            panic!("a full line gave a turn");
        };
        assert_eq!(err.code, ErrorCode::Busy);
        // Another tenant may still hold an equal share of it (one of two places).
        let b: Arc<str> = "b".into();
        let mut other = Box::pin(gate.turn(&b));
        assert!(poll(&mut other).is_none());
        assert!(gate.turn(&b).await.is_err());
        drop(other);
        // One leaves the line (its caller went away): there is room again.
        drop(third);
        let mut fourth = Box::pin(gate.turn(&a));
        assert!(poll(&mut fourth).is_none());
        drop(first);
        let second_turn = poll(&mut second);
        assert!(matches!(second_turn, Some(Ok(_))));
        assert!(poll(&mut fourth).is_none());
        drop(second_turn);
        assert!(matches!(poll(&mut fourth), Some(Ok(_))));
    }

    #[tokio::test]
    async fn tenants_take_turns() {
        let gate = gate(8);
        let (a, b, c): (Arc<str>, Arc<str>, Arc<str>) = ("a".into(), "b".into(), "c".into());
        // c runs; a queues two runs, then b one: a, b, a (not a, a, b).
        let running = gate.turn(&c).await.unwrap();
        let mut a1 = Box::pin(gate.turn(&a));
        let mut a2 = Box::pin(gate.turn(&a));
        let mut b1 = Box::pin(gate.turn(&b));
        for f in [&mut a1, &mut a2, &mut b1] {
            assert!(poll(f).is_none());
        }
        drop(running);
        let turn = poll(&mut a1).expect("a1 is next").unwrap();
        assert!(poll(&mut a2).is_none() && poll(&mut b1).is_none());
        drop(turn);
        let turn = poll(&mut b1).expect("b1 is next").unwrap();
        assert!(poll(&mut a2).is_none());
        drop(turn);
        assert!(matches!(poll(&mut a2), Some(Ok(_))));
    }

    #[tokio::test]
    async fn a_tenant_running_does_not_run_again_while_another_waits() {
        let gate = gate(8);
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        // a runs at once and queues two more before b's one arrives: b goes next.
        let running = gate.turn(&a).await.unwrap();
        let mut a2 = Box::pin(gate.turn(&a));
        let mut a3 = Box::pin(gate.turn(&a));
        let mut b1 = Box::pin(gate.turn(&b));
        for f in [&mut a2, &mut a3, &mut b1] {
            assert!(poll(f).is_none());
        }
        drop(running);
        let turn = poll(&mut b1).expect("b1 is next").unwrap();
        assert!(poll(&mut a2).is_none());
        drop(turn);
        let turn = poll(&mut a2).expect("a2 is next").unwrap();
        assert!(poll(&mut a3).is_none());
        drop(turn);
        assert!(matches!(poll(&mut a3), Some(Ok(_))));
    }

    #[tokio::test]
    async fn a_turn_sent_to_a_caller_that_went_away_passes_on() {
        let gate = gate(8);
        let a: Arc<str> = "a".into();
        let running = gate.turn(&a).await.unwrap();
        let mut gone = Box::pin(gate.turn(&a));
        let mut next = Box::pin(gate.turn(&a));
        assert!(poll(&mut gone).is_none() && poll(&mut next).is_none());
        // The turn is sent to `gone`, whose caller drops it before looking.
        drop(running);
        drop(gone);
        let turn = poll(&mut next).expect("the turn passed on").unwrap();
        drop(turn);
        // Nobody waits: the next caller gets the turn at once.
        assert!(matches!(poll(&mut Box::pin(gate.turn(&a))), Some(Ok(_))));
        assert_eq!(gate.line.lock().waiting(), 0);
    }

    fn poll<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        match std::pin::Pin::new(f).poll(&mut cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        }
    }
}
