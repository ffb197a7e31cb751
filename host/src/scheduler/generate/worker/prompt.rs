//! How a new generation's prompt gets into the KV cache: prompts whose rests (what
//! the prefix cache does not hold) are of similar length prefilled together; long or
//! scored ones, and cached starts that cannot be lined up, a chunk per decode step;
//! the prefix cache consulted before and filled after.

use std::sync::Arc;
use std::time::Instant;

use ort::value::DynValue;

use super::super::decoder_graph::StepOutput;
use super::super::kv_batch::Prefilled;
use super::super::prefill::{chunk_step, prefill_step};
use super::super::prefix_cache::{common_prefix, Hit, MIN_PREFIX, MIN_REST};
use super::super::prompt_scoring::{PromptScoring, SCORED_CHUNK};
use super::super::{FinishReason, GenEvent};
use super::{Active, Job, Worker};

/// A long (or scored) prompt being prefilled a chunk per decode step.
pub(super) struct Chunking {
    pub(super) seq: Active,
    prompt: Vec<u32>,
    /// Prompt tokens already in `past`.
    done: usize,
    past: Vec<DynValue>,
    /// The prompt's tokens scored so far, when the request asked for that.
    scoring: Option<PromptScoring>,
}

impl Worker {
    /// A long or scored prompt, or one whose cached start cannot be lined up with others
    /// (a ragged cache, or a start over `MAX_LINED_UP_PREFIX`), is prefilled a chunk per step. A cached prompt's short rest goes
    /// before long prompts being chunked.
    pub(super) fn start_chunking(&mut self, job: Job, hit: Option<Hit>) {
        if let Some(hit) = &hit {
            job.request
                .cached_prompt_tokens
                .store(hit.len, std::sync::atomic::Ordering::Relaxed);
        }
        let prompt = job.request.prompt.clone();
        let scoring = job
            .request
            .prompt_logprobs
            .map(|top| PromptScoring::new(top, prompt.len()));
        let Some(seq) = self.activate(job, Instant::now()) else {
            return;
        };
        let (done, past) = hit.map_or((0, Vec::new()), |hit| (hit.len, hit.past));
        let quick = |c: &Chunking| c.done > 0 && c.prompt.len() - c.done <= self.prefill_chunk;
        let chunking = Chunking {
            seq,
            prompt,
            done,
            past,
            scoring,
        };
        match quick(&chunking) {
            true => {
                let at = self.chunking.iter().take_while(|c| quick(c)).count();
                self.chunking.insert(at, chunking);
            }
            false => self.chunking.push_back(chunking),
        }
    }

    /// Whether `job` should wait for a prompt being prefilled in chunks that starts as
    /// its own does (its tenant's: one document asked about by several users at once,
    /// agents sharing their instructions). Chunked prompts are prefilled one after the
    /// other, so waiting costs nothing: once the other prompt is cached, this one
    /// prefills only what follows the shared start. Worth it when that start is a chunk
    /// longer than what the cache holds for it already.
    pub(super) fn waits_for_leader(&self, job: &Job) -> bool {
        if job.request.prompt_logprobs.is_some() {
            return false; // scored prompts never read the cache
        }
        let prompt = &job.request.prompt;
        let usable = prompt.len().saturating_sub(MIN_REST);
        let shared = self
            .chunking
            .iter()
            .filter(|c| c.seq.tenant == job.request.tenant)
            .filter(|c| self.prefix_cache.would_keep(c.prompt.len()))
            .map(|c| common_prefix(&c.prompt, prompt).min(usable))
            .max()
            .unwrap_or(0);
        let cached = self.prefix_cache.usable_len(&job.request.tenant, prompt);
        shared >= MIN_PREFIX && shared >= cached.saturating_add(self.prefill_chunk)
    }

    /// The deferred jobs, for another look; those whose client went away are dropped.
    pub(super) fn take_deferred(&mut self) -> Vec<Job> {
        let deferred = std::mem::take(&mut self.deferred);
        let (gone, live): (Vec<Job>, Vec<Job>) =
            deferred.into_iter().partition(|j| j.events.is_closed());
        for _ in gone {
            self.cancelled("before its prefill", 0);
        }
        live
    }

    /// The longest cached start of `prompt`, if any is worth using; counts the
    /// prompt's tokens as reused or to prefill.
    pub(super) fn cached_prefix(&mut self, tenant: &str, prompt: &[u32]) -> Option<Hit> {
        let hit = self.prefix_cache.lookup(tenant, prompt).unwrap_or_else(|e| {
            tracing::warn!(model = %self.model, error = %format!("{e:#}"), "prefix cache lookup failed");
            None
        });
        let reused = hit.as_ref().map_or(0, |h| h.len);
        self.count_prompt_tokens(reused, prompt.len() - reused);
        hit
    }

    pub(super) fn count_prompt_tokens(&self, reused: usize, prefilled: usize) {
        let counter = &crate::metrics::metrics().prefix_cache_tokens;
        counter
            .with_label_values(&[&self.model, "reused"])
            .inc_by(reused as u64);
        counter
            .with_label_values(&[&self.model, "prefilled"])
            .inc_by(prefilled as u64);
    }

    /// Keeps a prefilled prompt's cache for later prompts that start the same.
    pub(super) fn remember(&mut self, tenant: &Arc<str>, prompt: &[u32], cache: Prefilled) {
        if let Err(e) = self.prefix_cache.insert(tenant, prompt, &cache) {
            tracing::warn!(model = %self.model, error = %format!("{e:#}"), "prefix cache insert failed");
        }
    }

    /// Runs the prompts of new generations together (padded as the cache layout
    /// wants) and samples each one's first token. Returns those still going.
    ///
    /// Each job comes with its rest: its prompt after what the prefix cache holds (the
    /// whole prompt on ragged caches). Rows line up on the longest rest, so a row whose
    /// rest is shorter takes fewer cached tokens and runs the others again: several
    /// prompts sharing a system prompt are prefilled in one run instead of one per step.
    pub(super) fn prefill(&mut self, group: Vec<(Job, usize)>) -> Vec<(Active, Prefilled)> {
        let started = Instant::now();
        let rest = group.iter().map(|&(_, rest)| rest).max().unwrap_or(0);
        let mut seqs = Vec::with_capacity(group.len());
        let mut prompts = Vec::with_capacity(group.len());
        let mut cached = Vec::with_capacity(group.len());
        for (job, _) in group {
            let prompt = job.request.prompt.clone();
            let take = prompt.len().saturating_sub(rest);
            if take > self.prefix_cache.usable_len(&job.request.tenant, &prompt) {
                // The cache lost part of that prefix to an insert since it was asked.
                let hit = self.cached_prefix(&job.request.tenant, &prompt);
                self.start_chunking(job, hit);
                continue;
            }
            self.count_prompt_tokens(take, prompt.len() - take);
            job.request
                .cached_prompt_tokens
                .store(take, std::sync::atomic::Ordering::Relaxed);
            if let Some(seq) = self.activate(job, started) {
                seqs.push(seq);
                prompts.push(prompt);
                cached.push(take);
            }
        }
        if seqs.is_empty() {
            return Vec::new();
        }
        self.metrics.prefill_prompts.observe(seqs.len() as f64);
        let refs: Vec<&[u32]> = prompts.iter().map(Vec::as_slice).collect();
        let step = prefill_step(&refs, &cached, self.graph.layout());
        let past = match cached.iter().all(|&c| c == 0) {
            true => self.graph.empty_past(seqs.len()),
            false => {
                let rows: Vec<(&str, &[u32], usize)> = seqs
                    .iter()
                    .zip(&refs)
                    .zip(&cached)
                    .map(|((seq, prompt), &take)| (&*seq.tenant, *prompt, take))
                    .collect();
                self.prefix_cache.stacked(&rows)
            }
        };
        let result = past.and_then(|past| self.graph.run(step, past));
        let out = match result {
            Ok(out) => out,
            Err(e) => {
                for mut seq in seqs {
                    self.finish(&mut seq, FinishReason::Error, Some(format!("{e:#}")));
                }
                return Vec::new();
            }
        };
        tracing::debug!(model = %self.model, sequences = seqs.len(),
            prompt_tokens = prompts.iter().map(Vec::len).sum::<usize>(),
            cached_tokens = cached.iter().sum::<usize>(),
            prefill_ms = started.elapsed().as_secs_f64() * 1e3, "prefill");
        let StepOutput {
            mut logits,
            present,
        } = out;
        let present = Arc::new(present);
        for (row, (prompt, seq)) in prompts.iter().zip(&seqs).enumerate() {
            let cache = Prefilled {
                values: present.clone(),
                row,
                len: prompt.len(),
            };
            let tenant = seq.tenant.clone();
            self.remember(&tenant, prompt, cache);
        }
        let mut joined = Vec::new();
        for (row, (mut seq, logits)) in seqs.into_iter().zip(logits.rows_mut()).enumerate() {
            if self.accept(&mut seq, logits) {
                let len = seq.cached;
                joined.push((
                    seq,
                    Prefilled {
                        values: present.clone(),
                        row,
                        len,
                    },
                ));
            }
        }
        joined
    }

    /// Runs the next chunk of the oldest long prompt; after its last chunk, samples
    /// the first token and returns the generation ready to join the batch.
    pub(super) fn prefill_chunk(&mut self) -> Option<(Active, Prefilled)> {
        let mut chunking = self.chunking.pop_front()?;
        let started = Instant::now();
        let chunk = match chunking.scoring {
            Some(_) => self.prefill_chunk.min(SCORED_CHUNK),
            None => self.prefill_chunk,
        };
        let end = chunking
            .done
            .saturating_add(chunk)
            .min(chunking.prompt.len());
        self.metrics.prefill_prompts.observe(1.0);
        let step = chunk_step(&chunking.prompt, chunking.done, end);
        let past = if chunking.done == 0 {
            self.graph.empty_past(1)
        } else {
            Ok(std::mem::take(&mut chunking.past))
        };
        let scored = chunking.scoring.is_some();
        let out = past.and_then(|past| match scored {
            true => self.graph.run_scoring(step, past),
            false => self.graph.run(step, past),
        });
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                self.finish(
                    &mut chunking.seq,
                    FinishReason::Error,
                    Some(format!("{e:#}")),
                );
                return None;
            }
        };
        tracing::debug!(model = %self.model, from = chunking.done, to = end,
            prompt_tokens = chunking.prompt.len(),
            chunk_ms = started.elapsed().as_secs_f64() * 1e3, "prefill chunk");
        let StepOutput {
            mut logits,
            present,
        } = out;
        let from = chunking.done;
        chunking.done = end;
        let mut rows = logits.rows_mut();
        if let Some(scoring) = &mut chunking.scoring {
            scoring.add_chunk(&chunking.prompt, from, end, &mut rows, &self.tokenizer);
        }
        if end < chunking.prompt.len() {
            chunking.past = present;
            self.chunking.push_front(chunking);
            return None;
        }
        let present = Arc::new(present);
        let cache = Prefilled {
            values: present.clone(),
            row: 0,
            len: end,
        };
        let tenant = chunking.seq.tenant.clone();
        self.remember(&tenant, &chunking.prompt, cache);
        let mut seq = chunking.seq;
        if let Some(scoring) = chunking.scoring {
            let _ = seq.events.send(GenEvent::Prompt(scoring.into_tokens()));
            if seq.max_tokens == 0 {
                self.finish(&mut seq, FinishReason::Length, None);
                return None;
            }
        }
        let first = rows.next()?;
        self.accept(&mut seq, first).then(|| {
            let len = seq.cached;
            (
                seq,
                Prefilled {
                    values: present,
                    row: 0,
                    len,
                },
            )
        })
    }
}
