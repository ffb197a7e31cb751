//! The embedding queue of one model: requests put their tokenized inputs in, worker
//! threads take batches out under a padded-token budget (as TEI does: cost =
//! longest input × inputs), run them on the provider, pool, and answer each request
//! when its last input is done.
//!
//! One worker per lane of the provider (`cpu.lanes`). A lone batch runs on all of
//! the provider's cores; once enough inputs wait, or a batch is already running,
//! batches run side by side, one per lane, each on its share of the cores.
//!
//! Batches are filled round-robin across the queued requests, so one request with
//! thousands of inputs does not make a concurrent one-text request wait for all of
//! them. Inputs of a request whose caller went away are dropped before they cost
//! anything.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};
use tokio::sync::oneshot;

use crate::config::BatchingConfig;
use crate::error::{ErrorCode, InferenceError};
use crate::metrics::metrics;
use crate::models::pooling::Pooling;
use crate::providers::router::ProviderRouter;
use crate::providers::GraphSignature;
use crate::scheduler::fair_share;

mod runner;
use runner::BatchRunner;

/// One tokenized input.
#[derive(Debug, Clone)]
pub struct Sequence {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
}

#[derive(Debug)]
pub struct Embeddings {
    pub dimensions: usize,
    /// `count × dimensions` floats, in input order.
    pub data: Vec<f32>,
    pub provider: String,
}

/// How a model's outputs become vectors.
#[derive(Debug, Clone)]
pub struct PoolingPlan {
    pub pooling: Pooling,
    pub normalize: bool,
    pub dimensions: usize,
}

struct Job {
    /// Batches are filled fairly across tenants, one input per tenant in turn.
    tenant: Arc<str>,
    dimensions: usize,
    results: Mutex<Vec<f32>>,
    remaining: AtomicUsize,
    reply: Mutex<Option<oneshot::Sender<Result<Embeddings, InferenceError>>>>,
}

impl Job {
    fn cancelled(&self) -> bool {
        self.reply.lock().as_ref().is_none_or(|s| s.is_closed())
    }

    fn fail(&self, error: InferenceError) {
        if let Some(reply) = self.reply.lock().take() {
            let _ = reply.send(Err(error));
        }
    }

    fn store(&self, index: usize, vector: &[f32], provider: &str) {
        {
            let mut results = self.results.lock();
            results[index * self.dimensions..(index + 1) * self.dimensions].copy_from_slice(vector);
        }
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            if let Some(reply) = self.reply.lock().take() {
                let data = std::mem::take(&mut *self.results.lock());
                let _ = reply.send(Ok(Embeddings {
                    dimensions: self.dimensions,
                    data,
                    provider: provider.to_string(),
                }));
            }
        }
    }
}

/// A queued request: its inputs, shortest first (less padding per batch).
struct Queued {
    job: Arc<Job>,
    items: VecDeque<(usize, Sequence)>,
}

struct Item {
    job: Arc<Job>,
    index: usize,
    sequence: Sequence,
}

struct Shared {
    queue: Mutex<State>,
    wakeup: Condvar,
}

struct State {
    requests: VecDeque<Queued>,
    queued_inputs: usize,
    closed: bool,
    /// Batches running now.
    running: usize,
    /// A batch runs on all of the provider's cores: the lanes wait for it.
    whole_running: bool,
}

/// Where a batch runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// On all of the provider's cores, alone.
    Whole,
    /// On one lane, beside batches on the other lanes.
    Lane(usize),
}

/// Waiting inputs from which an idle worker starts a batch on its lane beside a
/// running one.
const BESIDE_FROM_INPUTS: usize = 4;

/// Waiting inputs from which idle workers split them across their lanes instead of
/// running them as one batch on all cores. Fewer make a batch that all cores finish
/// sooner than one core would half of it (a lone text: 3.4 ms on two threads against
/// 5.8 ms on one, docs/PROVIDERS.md).
const SPLIT_FROM_INPUTS: usize = 8;

pub struct EmbedQueue {
    model: String,
    shared: Arc<Shared>,
    limits: BatchingConfig,
    /// Joined by `stop`, so no batch is running when ONNX Runtime is torn down at exit.
    workers: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl EmbedQueue {
    pub fn start(
        model: &str,
        router: Arc<ProviderRouter>,
        signature: GraphSignature,
        plan: PoolingPlan,
        limits: BatchingConfig,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(State {
                requests: VecDeque::new(),
                queued_inputs: 0,
                closed: false,
                running: 0,
                whole_running: false,
            }),
            wakeup: Condvar::new(),
        });
        let lanes = router.local_lanes();
        let runner = Arc::new(BatchRunner {
            router,
            signature,
            plan,
            model: model.to_string(),
        });
        let workers = (0..lanes)
            .map(|lane| {
                let shared = shared.clone();
                let limits = limits.clone();
                let runner = runner.clone();
                std::thread::Builder::new()
                    .name(format!("embed-{model}-{lane}"))
                    .spawn(move || worker_loop(&shared, &limits, &runner, lane, lanes))
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Self {
            model: model.to_string(),
            shared,
            limits,
            workers: Mutex::new(workers),
        })
    }

    /// Stops the workers once their current batches are done; requests still queued,
    /// and any that come later, fail with "the server is shutting down".
    pub fn stop(&self) {
        self.shared.queue.lock().closed = true;
        self.shared.wakeup.notify_all();
        let workers = std::mem::take(&mut *self.workers.lock());
        for worker in workers {
            let _ = worker.join();
        }
    }

    /// Queues the inputs and waits for their vectors.
    pub async fn embed(
        &self,
        sequences: Vec<Sequence>,
        dimensions: usize,
        tenant: Arc<str>,
    ) -> Result<Embeddings, InferenceError> {
        if sequences.is_empty() {
            return Err(InferenceError::invalid("no inputs").with_param("input"));
        }
        let (reply, answer) = oneshot::channel();
        let count = sequences.len();
        let job = Arc::new(Job {
            tenant,
            dimensions,
            results: Mutex::new(vec![0.0; count * dimensions]),
            remaining: AtomicUsize::new(count),
            reply: Mutex::new(Some(reply)),
        });
        let mut items: Vec<(usize, Sequence)> = sequences.into_iter().enumerate().collect();
        items.sort_by_key(|(_, s)| s.ids.len());
        {
            let mut state = self.shared.queue.lock();
            if state.closed {
                return Err(shutting_down());
            }
            if !state.admits(&job.tenant, count, self.limits.max_queued_inputs) {
                return Err(InferenceError::new(
                    ErrorCode::Busy,
                    format!(
                        "the embedding queue is full ({} inputs waiting); retry shortly",
                        state.queued_inputs
                    ),
                ));
            }
            state.queued_inputs += count;
            state.requests.push_back(Queued {
                job,
                items: items.into(),
            });
            metrics()
                .queue_depth
                .with_label_values(&[&self.model])
                .set(state.queued_inputs as i64);
        }
        self.shared.wakeup.notify_one();
        answer
            .await
            .unwrap_or_else(|_| Err(InferenceError::internal("the embedding worker stopped")))
    }
}

impl Drop for EmbedQueue {
    fn drop(&mut self) {
        self.stop();
    }
}

fn shutting_down() -> InferenceError {
    InferenceError::new(ErrorCode::Busy, "the server is shutting down")
}

impl State {
    /// Where the next batch of worker `lane` (of `lanes`) runs, and how many inputs
    /// it may take: all it can on all cores when it is alone with few inputs waiting,
    /// else its share of the waiting inputs on its own lane.
    fn placement(&self, lane: usize, lanes: usize, max_inputs: usize) -> (Placement, usize) {
        if lanes <= 1 || (self.running == 0 && self.queued_inputs < SPLIT_FROM_INPUTS) {
            return (Placement::Whole, max_inputs);
        }
        let free = lanes.saturating_sub(self.running).max(1);
        let share = self.queued_inputs.div_ceil(free).clamp(1, max_inputs);
        (Placement::Lane(lane), share)
    }

    /// Whether an idle worker may start a batch now: not beside a batch on all cores,
    /// and beside batches on lanes only with enough inputs to make a batch worth a
    /// core (fewer wait for a running lane to finish and join the next batch).
    fn may_start(&self) -> bool {
        !self.requests.is_empty()
            && !self.whole_running
            && (self.running == 0 || self.queued_inputs >= BESIDE_FROM_INPUTS)
    }

    /// Whether a tenant may queue `count` more inputs (`fair_share`: a full queue
    /// still takes a tenant holding less than an equal share of it).
    fn admits(&self, tenant: &str, count: usize, capacity: usize) -> bool {
        if self.queued_inputs + count <= capacity {
            return true;
        }
        let mut held = 0;
        let mut others: Vec<&str> = Vec::new();
        for queued in &self.requests {
            let owner = &*queued.job.tenant;
            if owner == tenant {
                held += queued.items.len();
            } else if !others.contains(&owner) {
                others.push(owner);
            }
        }
        fair_share::admits(capacity, self.queued_inputs, held, count, others.len())
    }
}

fn worker_loop(
    shared: &Shared,
    limits: &BatchingConfig,
    runner: &BatchRunner,
    lane: usize,
    lanes: usize,
) {
    let mut state = shared.queue.lock();
    loop {
        while !state.closed && !state.may_start() {
            shared.wakeup.wait(&mut state);
        }
        if state.closed {
            for queued in state.requests.drain(..) {
                queued.job.fail(shutting_down());
            }
            return;
        }
        let (placement, max_inputs) = state.placement(lane, lanes, limits.max_batch_inputs);
        let batch = {
            let (batch, dropped) = take_batch(&mut state, limits, max_inputs);
            if dropped > 0 {
                tracing::debug!(dropped, "dropped the queued inputs of departed clients");
                metrics()
                    .inputs_dropped
                    .with_label_values(&[&runner.model])
                    .inc_by(dropped as u64);
            }
            metrics()
                .queue_depth
                .with_label_values(&[&runner.model])
                .set(state.queued_inputs as i64);
            batch
        };
        if batch.is_empty() {
            continue;
        }
        state.running += 1;
        state.whole_running = placement == Placement::Whole;
        if !state.requests.is_empty() && !state.whole_running {
            // The rest is another lane's share.
            shared.wakeup.notify_one();
        }
        parking_lot::MutexGuard::unlocked(&mut state, || runner.run(batch, placement));
        state.running -= 1;
        if placement == Placement::Whole {
            state.whole_running = false;
        }
        // Workers held back by a whole batch, or left a share, may start now.
        shared.wakeup.notify_all();
    }
}

/// Takes inputs round-robin across queued requests until the next one would break
/// the input or padded-token budget. Always takes at least one input. Also returns
/// how many queued inputs it dropped because their request's caller went away.
fn take_batch(state: &mut State, limits: &BatchingConfig, max_inputs: usize) -> (Vec<Item>, usize) {
    let max_inputs = max_inputs.min(limits.max_batch_inputs);
    let mut batch = Vec::new();
    let mut longest = 0usize;
    let before: usize = state.requests.iter().map(|q| q.items.len()).sum();
    state.requests.retain(|q| !q.job.cancelled());
    let dropped = before - state.requests.iter().map(|q| q.items.len()).sum::<usize>();
    'fill: loop {
        let mut took = false;
        // One input per tenant per pass, from that tenant's oldest request: a tenant's
        // flood of requests cannot push another tenant's single text out of the batch.
        let mut served: Vec<&str> = Vec::new();
        for queued in state.requests.iter_mut() {
            let Some((_, next)) = queued.items.front() else {
                continue;
            };
            if served.contains(&&*queued.job.tenant) {
                continue;
            }
            let len = next.ids.len();
            let padded = longest.max(len) * (batch.len() + 1);
            if !batch.is_empty() && (batch.len() >= max_inputs || padded > limits.max_batch_tokens)
            {
                break 'fill;
            }
            let (index, sequence) = queued.items.pop_front().unwrap();
            served.push(&queued.job.tenant);
            longest = longest.max(len);
            batch.push(Item {
                job: queued.job.clone(),
                index,
                sequence,
            });
            took = true;
        }
        if !took {
            break;
        }
    }
    state.requests.retain(|q| !q.items.is_empty());
    let after: usize = state.requests.iter().map(|q| q.items.len()).sum();
    state.queued_inputs -= before - after;
    (batch, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(len: usize) -> Sequence {
        Sequence {
            ids: vec![1; len],
            type_ids: vec![0; len],
        }
    }

    fn job() -> (
        Arc<Job>,
        oneshot::Receiver<Result<Embeddings, InferenceError>>,
    ) {
        job_of("t")
    }

    fn job_of(
        tenant: &str,
    ) -> (
        Arc<Job>,
        oneshot::Receiver<Result<Embeddings, InferenceError>>,
    ) {
        let (tx, rx) = oneshot::channel();
        let job = Arc::new(Job {
            tenant: tenant.into(),
            dimensions: 1,
            results: Mutex::new(vec![]),
            remaining: AtomicUsize::new(0),
            reply: Mutex::new(Some(tx)),
        });
        (job, rx)
    }

    fn state(requests: Vec<(Arc<Job>, Vec<usize>)>) -> State {
        let mut queued_inputs = 0;
        let requests = requests
            .into_iter()
            .map(|(job, lens)| {
                queued_inputs += lens.len();
                Queued {
                    job,
                    items: lens.into_iter().map(seq).enumerate().collect(),
                }
            })
            .collect();
        State {
            requests,
            queued_inputs,
            closed: false,
            running: 0,
            whole_running: false,
        }
    }

    #[test]
    fn a_few_inputs_run_on_all_cores_and_many_split_across_lanes() {
        let (j, _rx) = job();
        let mut s = state(vec![(j.clone(), vec![5; 3])]);
        assert_eq!(s.placement(1, 2, 32), (Placement::Whole, 32));
        // One lane only: always the whole provider.
        s.queued_inputs = 20;
        assert_eq!(s.placement(0, 1, 32), (Placement::Whole, 32));
        // Enough waiting: the first idle worker takes half, the other the rest.
        assert_eq!(s.placement(1, 2, 32), (Placement::Lane(1), 10));
        s.running = 1;
        s.queued_inputs = 10;
        assert_eq!(s.placement(0, 2, 32), (Placement::Lane(0), 10));
        // Beside a running lane even one input takes the free lane.
        s.queued_inputs = 1;
        assert_eq!(s.placement(0, 2, 32), (Placement::Lane(0), 1));
        // A share never exceeds the batch limit.
        s.running = 0;
        s.queued_inputs = 100;
        assert_eq!(s.placement(0, 2, 32), (Placement::Lane(0), 32));
    }

    /// Batches of at most 8 inputs, with room to spare in tokens and in the queue.
    fn eight_per_batch() -> BatchingConfig {
        BatchingConfig {
            max_batch_tokens: 1000,
            max_batch_inputs: 8,
            max_queued_inputs: 1000,
            ..Default::default()
        }
    }

    #[test]
    fn one_tenants_flood_does_not_starve_another_tenants_text() {
        let flood: Vec<_> = (0..100).map(|_| job_of("a")).collect();
        let (single, _rx) = job_of("b");
        let mut requests: Vec<_> = flood.iter().map(|(j, _)| (j.clone(), vec![5])).collect();
        requests.push((single.clone(), vec![5]));
        let mut s = state(requests);
        let limits = eight_per_batch();
        let (batch, _) = take_batch(&mut s, &limits, usize::MAX);
        assert_eq!(batch.len(), 8);
        assert!(batch.iter().any(|i| Arc::ptr_eq(&i.job, &single)));
        // Within one tenant, requests are served in arrival order.
        assert!(Arc::ptr_eq(&batch[0].job, &flood[0].0));
    }

    #[test]
    fn a_full_queue_still_takes_another_tenants_share() {
        let (flood, _rx1) = job_of("a");
        let (other, _rx2) = job_of("b");
        let s = state(vec![(flood, vec![5; 100])]);
        // a holds every place: more of a is refused, b may queue up to half.
        assert!(!s.admits("a", 1, 100));
        assert!(s.admits("b", 50, 100));
        assert!(!s.admits("b", 51, 100));
        let s = state(vec![
            (s.requests[0].job.clone(), vec![5; 100]),
            (other, vec![5; 40]),
        ]);
        assert!(s.admits("b", 10, 100) && !s.admits("b", 11, 100));
    }

    #[test]
    fn batches_interleave_requests_fairly() {
        let (big, _rx1) = job_of("a");
        let (small, _rx2) = job_of("b");
        let mut s = state(vec![(big.clone(), vec![5; 100]), (small.clone(), vec![5])]);
        let limits = eight_per_batch();
        let (batch, _) = take_batch(&mut s, &limits, usize::MAX);
        assert_eq!(batch.len(), 8);
        assert!(
            batch.iter().any(|i| Arc::ptr_eq(&i.job, &small)),
            "the one-text request rides in the first batch"
        );
        assert_eq!(s.queued_inputs, 101 - 8);
    }

    #[test]
    fn the_padded_token_budget_bounds_a_batch() {
        let (a, _rx) = job();
        let mut s = state(vec![(a, vec![10, 10, 10, 100])]);
        let limits = BatchingConfig {
            max_batch_tokens: 100,
            max_batch_inputs: 64,
            max_queued_inputs: 1000,
            ..Default::default()
        };
        assert_eq!(take_batch(&mut s, &limits, usize::MAX).0.len(), 3); // 4 × 100 padded would exceed 100... 3 × 10 fits
        assert_eq!(take_batch(&mut s, &limits, usize::MAX).0.len(), 1); // an input alone may exceed the budget
        assert_eq!(s.queued_inputs, 0);
    }

    #[test]
    fn cancelled_requests_are_dropped_before_they_run() {
        let (a, rx) = job();
        drop(rx);
        let (b, _rx) = job();
        let mut s = state(vec![(a, vec![3, 3]), (b.clone(), vec![3])]);
        let limits = BatchingConfig::default();
        let (batch, dropped) = take_batch(&mut s, &limits, usize::MAX);
        assert_eq!(batch.len(), 1);
        assert_eq!(dropped, 2);
        assert!(Arc::ptr_eq(&batch[0].job, &b));
        assert_eq!(s.queued_inputs, 0);
    }
}
