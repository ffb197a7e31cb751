use std::collections::VecDeque;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use tokenizers::Tokenizer;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

mod output;
mod prompt;
mod speculative;

use super::admission::Admission;
use super::decoder_graph::{DecoderGraph, KvLayout};
use super::draft_budget::DraftBudget;
use super::kv_batch::{KvBatch, Prefilled};
use super::prefill::group_sizes;
use super::prefix_cache::{PrefixCache, MAX_LINED_UP_PREFIX};
use super::sampler::Sampler;
use super::text::{IncrementalDecoder, StopMatcher};
use super::{FinishReason, GenEvent, GenerateRequest, GenerationEnd};
use crate::error::{ErrorCode, InferenceError};
use crate::scheduler::fair_share::{Place, Places};
use prompt::Chunking;

/// Handle to a decoder model's generation worker.
pub struct Generator {
    /// None once stopped: the worker sees its inbox close, ends the generations it
    /// holds and returns.
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    /// Joined by `stop`, so no graph step is running when ONNX Runtime is torn down at exit.
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Generations queued or running, per tenant; past `max_generations` new ones
    /// are refused (busy) instead of queueing without bound, except a tenant's
    /// within an equal share (`fair_share`).
    places: Places,
}

/// Limits of one model's generation worker.
#[derive(Debug, Clone, Copy)]
pub struct GeneratorLimits {
    pub context_length: usize,
    /// Generations queued or running before new ones are refused.
    pub max_generations: usize,
    /// Generations decoded together in one batch; the rest wait for a place.
    pub max_batch: usize,
    /// Longer prompts are prefilled in chunks of this many tokens (0 = in one piece).
    pub prefill_chunk: usize,
    /// Recent prompts' KV caches kept for later prompts that start the same (0 = none).
    pub prefix_cache_bytes: usize,
    /// Tokens drafted per step by n-gram lookup and checked in the same run (0 = none).
    pub speculative_tokens: usize,
}

struct Job {
    /// Held until the generation ends, however it ends.
    place: Place,
    request: GenerateRequest,
    events: UnboundedSender<GenEvent>,
    submitted: Instant,
}

/// A generation in the decode batch.
struct Active {
    /// Given back as the generation finishes, before its client hears of the end
    /// (a client that at once asks again must find it free), or when dropped.
    place: Option<Place>,
    tenant: Arc<str>,
    events: UnboundedSender<GenEvent>,
    sampler: Sampler,
    decoder: IncrementalDecoder,
    stops: StopMatcher,
    /// Tokens that end it besides the model's (unless `ignore_eos`).
    stop_token_ids: Vec<u32>,
    /// Which of the request's stops ended it, for the generation's end.
    stop_cause: Option<super::StopCause>,
    ignore_eos: bool,
    /// Nothing but the token limit and the context ends it before this many tokens.
    min_tokens: usize,
    prompt_tokens: usize,
    generated: usize,
    max_tokens: usize,
    /// Tokens in the KV cache; the next step adds one.
    cached: usize,
    last: u32,
    /// The prompt and the tokens generated so far: where drafts are looked up.
    history: Vec<u32>,
    /// This generation's drafted tokens confirmed, and its drafts cut short.
    drafts_confirmed: usize,
    drafts_mismatched: usize,
    started: Instant,
    /// When the request was submitted, then when its latest token was sampled.
    last_token_at: Instant,
}

impl Generator {
    pub fn start(
        model: &str,
        graph: DecoderGraph,
        tokenizer: Arc<Tokenizer>,
        stop_ids: Vec<u32>,
        provider: String,
        limits: GeneratorLimits,
    ) -> std::io::Result<Self> {
        let (jobs, inbox) = mpsc::channel();
        let worker = Worker {
            prefix_cache: PrefixCache::new(
                limits.prefix_cache_bytes,
                graph.layout(),
                graph.shape(),
            ),
            batch: KvBatch::new(graph.layout(), graph.shape(), limits.context_length),
            graph,
            tokenizer,
            stop_ids,
            context_length: limits.context_length,
            max_batch: limits.max_batch.max(1),
            chunking: VecDeque::new(),
            deferred: Vec::new(),
            prefill_chunk: match limits.prefill_chunk {
                0 => usize::MAX,
                n => n,
            },
            draft_tokens: limits.speculative_tokens,
            draft_budget: DraftBudget::default(),
            provider,
            model: model.to_string(),
            metrics: WorkerMetrics::new(model),
        };
        let worker = std::thread::Builder::new()
            .name(format!("generate-{model}"))
            .spawn(move || worker.run(inbox))?;
        Ok(Self {
            jobs: Mutex::new(Some(jobs)),
            worker: Mutex::new(Some(worker)),
            places: Places::new(limits.max_generations),
        })
    }

    /// Starts a generation; its chunks and its end arrive on the returned channel.
    /// Dropping the receiver cancels it.
    pub fn submit(
        &self,
        request: GenerateRequest,
    ) -> Result<UnboundedReceiver<GenEvent>, InferenceError> {
        let Some(place) = self.places.take(&request.tenant) else {
            return Err(InferenceError::new(
                ErrorCode::Busy,
                format!(
                    "{} generations are in progress, the most this model runs at once; retry shortly",
                    self.places.capacity()
                ),
            ));
        };
        let (events, receiver) = unbounded_channel();
        let jobs = self.jobs.lock();
        let Some(jobs) = jobs.as_ref() else {
            return Err(InferenceError::new(
                ErrorCode::Busy,
                "the server is shutting down",
            ));
        };
        jobs.send(Job {
            place,
            request,
            events,
            submitted: Instant::now(),
        })
        .map_err(|_| InferenceError::internal("the generation worker stopped"))?;
        Ok(receiver)
    }
}

impl Generator {
    /// Ends the generations in progress ("the server is shutting down") after the
    /// current graph step and stops the worker; later submissions fail the same way.
    pub fn stop(&self) {
        self.jobs.lock().take();
        let worker = self.worker.lock().take();
        if let Some(worker) = worker {
            let _ = worker.join();
        }
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Continuous batching: every generation in the batch advances one token per graph
/// run; between runs finished ones leave and waiting ones join (after their own
/// prefill), so a new request never waits for the others to end.
struct Worker {
    graph: DecoderGraph,
    batch: KvBatch,
    tokenizer: Arc<Tokenizer>,
    stop_ids: Vec<u32>,
    context_length: usize,
    max_batch: usize,
    /// Prompts longer than this are prefilled in chunks of this many tokens, each
    /// followed by a decode step of the running generations: in one piece, a
    /// 1500-token prompt joining a SmolLM2 stream stalled it for 2 s, in chunks of
    /// 128 for at most 170 ms (docs/BENCHMARKS.md). `usize::MAX`: never.
    prefill_chunk: usize,
    /// Tokens drafted per row and step (speculative decoding, `lookup_draft`); 0 = never.
    draft_tokens: usize,
    draft_budget: DraftBudget,
    /// Long prompts being prefilled, oldest first; one chunk of the first per step.
    chunking: VecDeque<Chunking>,
    /// Admitted generations waiting for a prompt in `chunking` that starts as theirs
    /// do: once it is cached, they prefill only what follows (see `waits_for_leader`).
    deferred: Vec<Job>,
    prefix_cache: PrefixCache,
    provider: String,
    model: String,
    metrics: WorkerMetrics,
}

/// This model's series, looked up once rather than per token.
struct WorkerMetrics {
    running: prometheus::IntGauge,
    waiting: prometheus::IntGauge,
    first_token: prometheus::Histogram,
    per_token: prometheus::Histogram,
    prefill_prompts: prometheus::Histogram,
    drafted: prometheus::IntCounter,
    draft_accepted: prometheus::IntCounter,
}

impl WorkerMetrics {
    fn new(model: &str) -> Self {
        let m = crate::metrics::metrics();
        Self {
            running: m.generations_running.with_label_values(&[model]),
            waiting: m.generations_waiting.with_label_values(&[model]),
            first_token: m.time_to_first_token.with_label_values(&[model]),
            per_token: m.time_per_output_token.with_label_values(&[model]),
            prefill_prompts: m.prefill_prompts.with_label_values(&[model]),
            drafted: m.speculative_tokens.with_label_values(&[model, "drafted"]),
            draft_accepted: m.speculative_tokens.with_label_values(&[model, "accepted"]),
        }
    }
}

impl Worker {
    fn run(mut self, inbox: mpsc::Receiver<Job>) {
        let mut waiting: Admission<Job> = Admission::default();
        // Row r of the KV batch; None once that generation is over (dropped at the next rebuild).
        let mut rows: Vec<Option<Active>> = Vec::new();
        loop {
            let idle = rows.iter().all(Option::is_none)
                && waiting.is_empty()
                && self.chunking.is_empty()
                && self.deferred.is_empty();
            if idle {
                self.metrics.running.set(0);
                self.metrics.waiting.set(0);
                if !rows.is_empty() {
                    rows.clear();
                    let _ = self.batch.rebuild(&[], Vec::new());
                }
                match inbox.recv() {
                    Ok(job) => waiting.push(job.request.tenant.clone(), job),
                    Err(_) => return,
                }
            }
            loop {
                match inbox.try_recv() {
                    Ok(job) => waiting.push(job.request.tenant.clone(), job),
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        self.shut_down(rows, waiting);
                        return;
                    }
                }
            }
            let before = waiting.len();
            waiting.retain(|job| !job.events.is_closed());
            for _ in waiting.len()..before {
                self.cancelled("before its prefill", 0);
            }
            self.cancel_abandoned(&mut rows);
            let mut joined = self.admit(&mut waiting, &rows);
            joined.extend(self.prefill_chunk());
            if !joined.is_empty() || rows.iter().any(Option::is_none) {
                self.regroup(&mut rows, joined);
            }
            self.metrics
                .running
                .set((rows.iter().flatten().count() + self.chunking.len()) as i64);
            self.metrics
                .waiting
                .set((waiting.len() + self.deferred.len()) as i64);
            if !rows.is_empty() {
                self.decode(&mut rows);
            }
        }
    }

    /// The server is stopping (its requests in flight have had their grace period):
    /// whatever is left ends with an error instead of a step cut short at exit.
    fn shut_down(&mut self, rows: Vec<Option<Active>>, waiting: Admission<Job>) {
        let error = Some("the server is shutting down".to_string());
        let chunking: Vec<Active> = self.chunking.drain(..).map(|c| c.seq).collect();
        for mut seq in rows.into_iter().flatten().chain(chunking) {
            self.finish(&mut seq, FinishReason::Error, error.clone());
        }
        let deferred: Vec<Job> = self.deferred.drain(..).collect();
        for job in deferred.into_iter().chain(waiting.into_items()) {
            let _ = job.events.send(GenEvent::Done(GenerationEnd {
                finish_reason: FinishReason::Error,
                prompt_tokens: job.request.prompt.len(),
                completion_tokens: 0,
                provider: self.provider.clone(),
                error: error.clone().map(InferenceError::backend),
                stop_cause: None,
            }));
        }
    }

    /// Prefills waiting generations while the batch has room, fairly across tenants.
    fn admit(
        &mut self,
        waiting: &mut Admission<Job>,
        rows: &[Option<Active>],
    ) -> Vec<(Active, Prefilled)> {
        let running_now = rows.iter().flatten().count() + self.chunking.len();
        // Deferred prompts keep their places in the batch.
        let live = running_now + self.deferred.len();
        let mut chosen: Vec<(Arc<str>, Job)> = Vec::new();
        while live + chosen.len() < self.max_batch {
            let running = |tenant: &str| {
                rows.iter()
                    .flatten()
                    .chain(self.chunking.iter().map(|c| &c.seq))
                    .filter(|a| &*a.tenant == tenant)
                    .count()
                    + self
                        .deferred
                        .iter()
                        .filter(|j| &*j.request.tenant == tenant)
                        .count()
                    + chosen.iter().filter(|(t, _)| &**t == tenant).count()
            };
            let Some(next) = waiting.next(running) else {
                break;
            };
            chosen.push(next);
        }
        // Counted before their prefill, which may take seconds.
        self.metrics
            .running
            .set((running_now + chosen.len()) as i64);
        self.metrics
            .waiting
            .set((waiting.len() + self.deferred.len()) as i64);
        // Deferred jobs first: they were admitted earlier.
        let deferred = self.take_deferred();
        // Jobs to prefill together now, with each one's rest: its prompt after the cached start.
        let mut ready: Vec<(Job, usize)> = Vec::new();
        for job in deferred
            .into_iter()
            .chain(chosen.into_iter().map(|(_, job)| job))
        {
            if self.waits_for_leader(&job) {
                self.deferred.push(job);
                continue;
            }
            let prompt = &job.request.prompt;
            if job.request.prompt_logprobs.is_some() {
                // A scored prompt needs the logits of every position: none may come from a cache.
                self.count_prompt_tokens(0, prompt.len());
                self.start_chunking(job, None);
                continue;
            }
            let usable = self.prefix_cache.usable_len(&job.request.tenant, prompt);
            // In-place (ragged) caches cannot line rows with different pasts up.
            let lines_up = usable == 0
                || (self.graph.layout() == KvLayout::LeftPadded && usable <= MAX_LINED_UP_PREFIX);
            let rest = prompt.len() - usable;
            if lines_up && rest <= self.prefill_chunk {
                ready.push((job, rest));
            } else {
                let hit = self.cached_prefix(&job.request.tenant, prompt);
                self.start_chunking(job, hit);
            }
        }
        // Grouped by what each runs: its rest.
        ready.sort_by_key(|&(_, rest)| rest);
        let rows: Vec<(usize, usize)> = ready
            .iter()
            .map(|(job, rest)| (*rest, job.request.prompt.len()))
            .collect();
        let mut joined = Vec::new();
        for size in group_sizes(&rows) {
            let group: Vec<(Job, usize)> = ready.drain(..size).collect();
            joined.extend(self.prefill(group));
        }
        joined
    }

    /// Drops finished rows from the KV batch and appends the new ones.
    fn regroup(&mut self, rows: &mut Vec<Option<Active>>, joined: Vec<(Active, Prefilled)>) {
        let keep: Vec<usize> = (0..rows.len()).filter(|&r| rows[r].is_some()).collect();
        let (actives, caches): (Vec<Active>, Vec<Prefilled>) = joined.into_iter().unzip();
        let mut next: Vec<Option<Active>> = rows.drain(..).flatten().map(Some).collect();
        next.extend(actives.into_iter().map(Some));
        *rows = next;
        if let Err(e) = self.batch.rebuild(&keep, caches) {
            self.fail_all(rows, &e);
        }
    }

    fn cancel_abandoned(&mut self, rows: &mut [Option<Active>]) {
        let before = self.chunking.len();
        self.chunking.retain(|c| !c.seq.events.is_closed());
        for _ in self.chunking.len()..before {
            self.cancelled("during its prefill", 0);
        }
        for row in rows.iter_mut() {
            if row.as_ref().is_some_and(|seq| seq.events.is_closed()) {
                let seq = row.take().expect("checked");
                self.cancelled("while decoding", seq.generated);
            }
        }
    }

    /// A generation whose client went away (its events receiver is gone), at any stage.
    fn cancelled(&self, stage: &str, generated: usize) {
        tracing::info!(model = %self.model, generated, "generation cancelled {stage}: its stream was dropped (the client went away, or the request's time ran out)");
        crate::metrics::metrics()
            .generations
            .with_label_values(&[&self.model, "cancelled"])
            .inc();
    }

    /// A job's generation, or None when it needs no graph run (its client went away,
    /// or it asked for no tokens and no scoring).
    fn activate(&mut self, job: Job, started: Instant) -> Option<Active> {
        let request = job.request;
        let scored = request.prompt_logprobs.is_some();
        let stop = request.stop;
        let mut stoppers = stop.token_ids.clone();
        stoppers.extend(&self.stop_ids);
        let ending = if stop.ignore_eos {
            stop.token_ids.clone()
        } else {
            stoppers.clone()
        };
        let mut seq = Active {
            place: Some(job.place),
            tenant: request.tenant,
            events: job.events,
            sampler: Sampler::new(request.sampling)
                .with_constraint(request.constraint)
                .with_prompt(&request.prompt, &stoppers)
                .banning_until(ending, stop.min_tokens),
            decoder: IncrementalDecoder::default(),
            stops: StopMatcher::new(stop.strings),
            stop_token_ids: stop.token_ids,
            stop_cause: None,
            ignore_eos: stop.ignore_eos,
            min_tokens: stop.min_tokens,
            prompt_tokens: request.prompt.len(),
            generated: 0,
            max_tokens: request.max_tokens,
            cached: request.prompt.len(),
            last: 0,
            history: request.prompt,
            drafts_confirmed: 0,
            drafts_mismatched: 0,
            started,
            last_token_at: job.submitted,
        };
        if seq.events.is_closed() {
            self.cancelled("before its prefill", 0);
            None
        } else if seq.max_tokens == 0 && !scored {
            self.finish(&mut seq, FinishReason::Length, None);
            None
        } else {
            Some(seq)
        }
    }

    /// One token for every row of the batch, or more where a draft is confirmed.
    fn decode(&mut self, rows: &mut Vec<Option<Active>>) {
        let last: Vec<u32> = rows
            .iter()
            .map(|r| r.as_ref().map_or(0, |a| a.last))
            .collect();
        crate::metrics::metrics()
            .batch_size
            .with_label_values(&[&self.model, &self.provider])
            .observe(rows.len() as f64);
        if let Some(drafts) = self.drafts_worth_checking(rows) {
            return self.decode_drafted(rows, &last, &drafts);
        }
        let started = Instant::now();
        match self.batch.step(&mut self.graph, &last) {
            Ok(mut logits) => {
                self.draft_budget
                    .plain_step(rows.len(), started.elapsed().as_secs_f64());
                for (row, logits) in rows.iter_mut().zip(logits.rows_mut()) {
                    if let Some(seq) = row {
                        seq.cached += 1;
                        if !self.accept(seq, logits) {
                            *row = None;
                        }
                    }
                }
            }
            Err(e) => self.fail_all(rows, &e),
        }
    }

    fn fail_all(&mut self, rows: &mut Vec<Option<Active>>, error: &anyhow::Error) {
        tracing::error!(model = %self.model, error = %format!("{error:#}"), "decode batch failed");
        for mut seq in rows.drain(..).flatten() {
            self.finish(&mut seq, FinishReason::Error, Some(format!("{error:#}")));
        }
        let _ = self.batch.rebuild(&[], Vec::new());
    }
}
