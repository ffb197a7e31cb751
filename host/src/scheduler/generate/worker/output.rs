//! A row's sampled token becoming output: the stop rules (stop tokens, stop
//! strings, `min_tokens`, a finished constraint, the token limit) and the events the
//! request reads, up to the generation's end.

use std::time::Instant;

use super::super::prompt_scoring::token_logprob;
use super::super::text::Matched;
use super::super::{FinishReason, GenEvent, GenerationEnd, StopCause, TokenLogprobs};
use super::{Active, Worker};
use crate::error::InferenceError;

impl Worker {
    /// Samples the next token from `logits` and emits its text; false when finished.
    pub(super) fn accept(&mut self, seq: &mut Active, logits: &mut [f32]) -> bool {
        let (token, logprobs) = seq.sampler.sample(logits);
        let now = Instant::now();
        let since = now.duration_since(seq.last_token_at).as_secs_f64();
        if seq.generated == 0 {
            self.metrics.first_token.observe(since);
        } else {
            self.metrics.per_token.observe(since);
        }
        seq.last_token_at = now;
        seq.generated += 1;
        seq.last = token;
        seq.history.push(token);
        let may_stop = seq.generated > seq.min_tokens;
        let models_own = !seq.ignore_eos && self.stop_ids.contains(&token);
        let requested = seq.stop_token_ids.contains(&token);
        if (models_own || requested) && may_stop {
            if !models_own {
                seq.stop_cause = Some(StopCause::Token(token));
            }
            self.finish(seq, FinishReason::Stop, None);
            return false;
        }
        let text = seq.decoder.push(&self.tokenizer, token);
        let (emit, stopped) = if !may_stop {
            // Too early for stop strings: the text passes as it is.
            (seq.stops.flush() + &text, false)
        } else {
            match seq.stops.push(&text) {
                Matched::Continue(t) => (t, false),
                Matched::Stop { before, stop } => {
                    seq.stop_cause = Some(StopCause::Text(stop));
                    (before, true)
                }
            }
        };
        let logprobs = logprobs
            .map(|lp| {
                vec![TokenLogprobs {
                    chosen: token_logprob(&self.tokenizer, lp.chosen),
                    top: lp
                        .top
                        .into_iter()
                        .map(|t| token_logprob(&self.tokenizer, t))
                        .collect(),
                }]
            })
            .unwrap_or_default();
        let _ = seq.events.send(GenEvent::Chunk {
            text: emit,
            tokens: vec![token],
            logprobs,
        });
        if stopped {
            self.finish(seq, FinishReason::Stop, None);
            return false;
        }
        if seq.sampler.output_complete() {
            // Text held back for a stop sequence is output after all: it was no stop.
            send_held_text(seq);
            self.finish(seq, FinishReason::Stop, None);
            return false;
        }
        if seq.generated >= seq.max_tokens || seq.cached + 1 >= self.context_length {
            self.finish(seq, FinishReason::Length, None);
            return false;
        }
        true
    }

    pub(super) fn finish(&self, seq: &mut Active, reason: FinishReason, error: Option<String>) {
        seq.place = None;
        if reason != FinishReason::Stop {
            send_held_text(seq);
        }
        let elapsed = seq.started.elapsed().as_secs_f64();
        tracing::info!(model = %self.model, tenant = %seq.tenant, ?reason, prompt_tokens = seq.prompt_tokens, completion_tokens = seq.generated,
            tokens_per_second = seq.generated as f64 / elapsed.max(1e-9), "generation finished");
        let _ = seq.events.send(GenEvent::Done(GenerationEnd {
            finish_reason: reason,
            prompt_tokens: seq.prompt_tokens,
            completion_tokens: seq.generated,
            provider: self.provider.clone(),
            error: error.map(InferenceError::backend),
            stop_cause: seq.stop_cause.take(),
        }));
    }
}

/// Sends the text a possible stop sequence held back.
fn send_held_text(seq: &mut Active) {
    let held = seq.stops.flush();
    if !held.is_empty() {
        let _ = seq.events.send(GenEvent::Chunk {
            text: held,
            tokens: Vec::new(),
            logprobs: Vec::new(),
        });
    }
}
