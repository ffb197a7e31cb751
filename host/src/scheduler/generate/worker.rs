use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use tokenizers::Tokenizer;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use super::decoder_graph::{DecoderGraph, KvCache};
use super::sampler::Sampler;
use super::text::{IncrementalDecoder, Matched, StopMatcher};
use super::{FinishReason, GenEvent, GenerateRequest, GenerationEnd};
use crate::error::{ErrorCode, InferenceError};

/// Handle to a decoder model's generation worker.
pub struct Generator {
    jobs: mpsc::Sender<Job>,
    /// Generations queued or running; past `max_generations` new ones are refused
    /// (busy) instead of queueing without bound.
    in_flight: Arc<AtomicUsize>,
    max_generations: usize,
}

struct Job {
    request: GenerateRequest,
    events: UnboundedSender<GenEvent>,
}

struct Active {
    events: UnboundedSender<GenEvent>,
    cache: KvCache,
    sampler: Sampler,
    decoder: IncrementalDecoder,
    stops: StopMatcher,
    prompt_tokens: usize,
    generated: usize,
    max_tokens: usize,
    last: u32,
    started: Instant,
}

impl Generator {
    pub fn start(
        model: &str,
        graph: DecoderGraph,
        tokenizer: Arc<Tokenizer>,
        stop_ids: Vec<u32>,
        context_length: usize,
        provider: String,
        max_generations: usize,
    ) -> std::io::Result<Self> {
        let (jobs, inbox) = mpsc::channel();
        let in_flight = Arc::new(AtomicUsize::new(0));
        let worker = Worker {
            in_flight: in_flight.clone(),
            graph,
            tokenizer,
            stop_ids,
            context_length,
            provider,
            model: model.to_string(),
        };
        std::thread::Builder::new()
            .name(format!("generate-{model}"))
            .spawn(move || worker.run(inbox))?;
        Ok(Self {
            jobs,
            in_flight,
            max_generations: max_generations.max(1),
        })
    }

    /// Starts a generation; its chunks and its end arrive on the returned channel.
    /// Dropping the receiver cancels it.
    pub fn submit(
        &self,
        request: GenerateRequest,
    ) -> Result<UnboundedReceiver<GenEvent>, InferenceError> {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= self.max_generations {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(InferenceError::new(
                ErrorCode::Busy,
                format!(
                    "{} generations are in progress, the most this model runs at once; retry shortly",
                    self.max_generations
                ),
            ));
        }
        let (events, receiver) = unbounded_channel();
        self.jobs
            .send(Job { request, events })
            .map_err(|_| InferenceError::internal("the generation worker stopped"))?;
        Ok(receiver)
    }
}

struct Worker {
    in_flight: Arc<AtomicUsize>,
    graph: DecoderGraph,
    tokenizer: Arc<Tokenizer>,
    stop_ids: Vec<u32>,
    context_length: usize,
    provider: String,
    model: String,
}

impl Worker {
    fn run(mut self, inbox: mpsc::Receiver<Job>) {
        let mut active: Vec<Active> = Vec::new();
        loop {
            // Wait for work when idle; otherwise admit whatever arrived since the last step.
            if active.is_empty() {
                match inbox.recv() {
                    Ok(job) => self.admit(job, &mut active),
                    Err(_) => return,
                }
            }
            while let Ok(job) = inbox.try_recv() {
                self.admit(job, &mut active);
            }
            // One decode step for every active generation, round robin.
            active.retain_mut(|seq| self.step(seq));
        }
    }

    fn admit(&mut self, job: Job, active: &mut Vec<Active>) {
        if job.events.is_closed() {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let request = job.request;
        let cache = match self.graph.empty_cache() {
            Ok(cache) => cache,
            Err(e) => {
                let end = job_fail(&self.provider, request.prompt.len(), 0, format!("{e:#}"));
                let _ = job.events.send(GenEvent::Done(end));
                self.in_flight.fetch_sub(1, Ordering::AcqRel);
                return;
            }
        };
        let mut seq = Active {
            events: job.events,
            cache,
            sampler: Sampler::new(request.sampling),
            decoder: IncrementalDecoder::default(),
            stops: StopMatcher::new(request.stop),
            prompt_tokens: request.prompt.len(),
            generated: 0,
            max_tokens: request.max_tokens,
            last: 0,
            started: Instant::now(),
        };
        if seq.max_tokens == 0 {
            self.finish(&mut seq, FinishReason::Length, None);
            return;
        }
        match self.graph.forward(&request.prompt, &mut seq.cache) {
            Ok(mut logits) => {
                tracing::debug!(model = %self.model, prompt_tokens = seq.prompt_tokens,
                    prefill_ms = seq.started.elapsed().as_secs_f64() * 1e3, "prefill");
                if self.accept(&mut seq, &mut logits) {
                    active.push(seq);
                }
            }
            Err(e) => self.finish(&mut seq, FinishReason::Error, Some(format!("{e:#}"))),
        }
    }

    /// One decode step; false when the generation is over.
    fn step(&mut self, seq: &mut Active) -> bool {
        if seq.events.is_closed() {
            tracing::info!(model = %self.model, generated = seq.generated, "generation cancelled: the client went away");
            crate::metrics::metrics()
                .generations
                .with_label_values(&[&self.model, "cancelled"])
                .inc();
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        match self.graph.forward(&[seq.last], &mut seq.cache) {
            Ok(mut logits) => self.accept(seq, &mut logits),
            Err(e) => {
                self.finish(seq, FinishReason::Error, Some(format!("{e:#}")));
                false
            }
        }
    }

    /// Samples the next token from `logits` and emits its text; false when finished.
    fn accept(&mut self, seq: &mut Active, logits: &mut [f32]) -> bool {
        let token = seq.sampler.sample(logits);
        seq.generated += 1;
        seq.last = token;
        if self.stop_ids.contains(&token) {
            self.finish(seq, FinishReason::Stop, None);
            return false;
        }
        let text = seq.decoder.push(&self.tokenizer, token);
        let (emit, stopped) = match seq.stops.push(&text) {
            Matched::Continue(t) => (t, false),
            Matched::Stop(t) => (t, true),
        };
        let _ = seq.events.send(GenEvent::Chunk {
            text: emit,
            tokens: vec![token],
        });
        if stopped {
            self.finish(seq, FinishReason::Stop, None);
            return false;
        }
        if seq.generated >= seq.max_tokens || seq.cache.len + 1 >= self.context_length {
            self.finish(seq, FinishReason::Length, None);
            return false;
        }
        true
    }

    fn finish(&self, seq: &mut Active, reason: FinishReason, error: Option<String>) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        if reason != FinishReason::Stop {
            let held = seq.stops.flush();
            if !held.is_empty() {
                let _ = seq.events.send(GenEvent::Chunk {
                    text: held,
                    tokens: Vec::new(),
                });
            }
        }
        let elapsed = seq.started.elapsed().as_secs_f64();
        tracing::info!(model = %self.model, ?reason, prompt_tokens = seq.prompt_tokens, completion_tokens = seq.generated,
            tokens_per_second = seq.generated as f64 / elapsed.max(1e-9), "generation finished");
        let _ = seq.events.send(GenEvent::Done(GenerationEnd {
            finish_reason: reason,
            prompt_tokens: seq.prompt_tokens,
            completion_tokens: seq.generated,
            provider: self.provider.clone(),
            error: error.map(InferenceError::backend),
        }));
    }
}

fn job_fail(
    provider: &str,
    prompt_tokens: usize,
    completion_tokens: usize,
    message: String,
) -> GenerationEnd {
    GenerationEnd {
        finish_reason: FinishReason::Error,
        prompt_tokens,
        completion_tokens,
        provider: provider.to_string(),
        error: Some(InferenceError::backend(message)),
    }
}
