use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc::UnboundedReceiver;
use wasmtime::component::Resource;

use super::nnhost::inference::generation::{
    Chunk, Event, FinishReason, GenerateOptions, GenerationEnd, Host, HostGenerationStream,
    Logprob, OutputFormat, Prompt, PromptToken, SamplingExtras, ScoredGeneration, StopCause,
    TokenLogprobs, Usage,
};
use super::{ApiState, WitError};
use crate::error::InferenceError;
use crate::scheduler::generate::constraint::{Grammar, Pattern, Schema};
use crate::scheduler::generate::{self, GenEvent, GenerateRequest, SamplingParams, StopRules};

/// A guest's handle on a running generation. Dropping it drops the receiver, which
/// the worker notices before its next step: the generation stops.
pub struct GenerationStream {
    model: String,
    provider: String,
    events: UnboundedReceiver<GenEvent>,
    end: Option<GenerationEnd>,
    /// The prompt as the model reads it.
    prompt: Vec<u32>,
    /// Each prompt token's rank, when the prompt was scored.
    prompt_ranks: Vec<u32>,
    /// Of the prompt, the tokens the worker read from the prefix cache.
    cached_prompt_tokens: Arc<AtomicUsize>,
    /// Tokens passed to the guest so far (the usage of a generation cut at the deadline).
    completion_tokens: usize,
    /// Which of the request's stops ended it, once it has ended.
    stop_cause: Option<StopCause>,
}

impl GenerationStream {
    /// Ends the generation at the request's deadline, as `max_tokens` would: the worker
    /// sees the closed channel and drops it (counting it as cancelled); the guest gets
    /// `cancelled` with the usage so far and can still answer with the text it has.
    fn cut_at_deadline(&mut self, access: &super::ModelAccess) -> GenerationEnd {
        self.events.close();
        let end = GenerationEnd {
            finish_reason: FinishReason::Cancelled,
            usage: Usage {
                prompt_tokens: self.prompt.len() as u32,
                completion_tokens: self.completion_tokens as u32,
            },
            provider: self.provider.clone(),
            error: None,
        };
        self.count_usage(access, &end);
        self.end = Some(end.clone());
        end
    }

    /// Remembers the end and counts the usage for the tenant, once.
    fn finish(
        &mut self,
        access: &super::ModelAccess,
        end: generate::GenerationEnd,
    ) -> GenerationEnd {
        self.stop_cause = end.stop_cause.clone().map(|cause| match cause {
            generate::StopCause::Text(text) => StopCause::Text(text),
            generate::StopCause::Token(token) => StopCause::Token(token),
        });
        let end = end_to_wit(end);
        self.count_usage(access, &end);
        crate::metrics::metrics()
            .generations
            .with_label_values(&[&self.model, reason_label(end.finish_reason)])
            .inc();
        self.end = Some(end.clone());
        end
    }

    fn count_usage(&self, access: &super::ModelAccess, end: &GenerationEnd) {
        let tenant = &*access.tenant;
        crate::tenants::usage::Usage::add(
            &access.usage.prompt_tokens,
            end.usage.prompt_tokens as u64,
        );
        crate::tenants::usage::Usage::add(
            &access.usage.completion_tokens,
            end.usage.completion_tokens as u64,
        );
        let m = crate::metrics::metrics();
        m.tokens
            .with_label_values(&[tenant, &self.model, "prompt"])
            .inc_by(end.usage.prompt_tokens as u64);
        m.tokens
            .with_label_values(&[tenant, &self.model, "completion"])
            .inc_by(end.usage.completion_tokens as u64);
    }
}

fn logprob_to_wit(t: generate::TokenLogprob) -> Logprob {
    Logprob {
        token: t.token,
        text: t.text,
        logprob: t.logprob,
    }
}

fn logprobs_to_wit(logprobs: Vec<generate::TokenLogprobs>) -> Vec<TokenLogprobs> {
    logprobs
        .into_iter()
        .map(|t| TokenLogprobs {
            chosen: logprob_to_wit(t.chosen),
            top: t.top.into_iter().map(logprob_to_wit).collect(),
        })
        .collect()
}

fn prompt_to_wit(tokens: Vec<generate::PromptToken>) -> Vec<PromptToken> {
    tokens
        .into_iter()
        .map(|t| PromptToken {
            token: t.token,
            text: t.text,
            text_offset: u32::try_from(t.text_offset).unwrap_or(u32::MAX),
            logprob: t.logprob,
            top: t.top.into_iter().map(logprob_to_wit).collect(),
        })
        .collect()
}

/// What a prompt costs of the request's host-call bytes.
fn prompt_bytes(prompt: &Prompt) -> usize {
    match prompt {
        Prompt::Text(t) => t.len(),
        Prompt::Tokens(t) => t.len() * 4,
    }
}

/// A JSON Schema as the guest passed it (JSON text).
fn parse_schema(text: &str) -> Result<Schema, InferenceError> {
    let invalid = |message: String| {
        InferenceError::invalid(format!("Invalid schema for response_format: {message}"))
            .with_param("response_format")
    };
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| invalid(format!("not JSON ({e})")))?;
    Schema::compile(&value).map_err(|e| invalid(e.to_string()))
}

/// The `finish_reason` label of `nnhost_generations_total`: OpenAI's words.
fn reason_label(reason: FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::Cancelled => "cancelled",
        FinishReason::Error => "error",
    }
}

fn end_to_wit(end: generate::GenerationEnd) -> GenerationEnd {
    GenerationEnd {
        finish_reason: match end.finish_reason {
            generate::FinishReason::Stop => FinishReason::Stop,
            generate::FinishReason::Length => FinishReason::Length,
            generate::FinishReason::Error => FinishReason::Error,
        },
        usage: Usage {
            prompt_tokens: end.prompt_tokens as u32,
            completion_tokens: end.completion_tokens as u32,
        },
        provider: end.provider,
        error: end.error.map(Into::into),
    }
}

/// The most `stop-token-ids` one generation may name.
pub const MAX_STOP_TOKEN_IDS: usize = 1024;

/// What `generate` and `generate-scored` (before 0.3.4) mean: nothing extra.
fn no_extras() -> SamplingExtras {
    SamplingExtras {
        min_p: 0.0,
        repetition_penalty: 1.0,
        ignore_eos: false,
        min_tokens: 0,
        stop_token_ids: Vec::new(),
        pattern: None,
    }
}

/// Patterns compiled lately: a classifier sends the same choices request after request,
/// and building a DFA can take milliseconds.
const PATTERNS_KEPT: usize = 32;

fn compiled_pattern(source: &str) -> Result<Arc<Pattern>, InferenceError> {
    static RECENT: std::sync::Mutex<Vec<(String, Arc<Pattern>)>> =
        std::sync::Mutex::new(Vec::new());
    let recent = || RECENT.lock().unwrap_or_else(|e| e.into_inner());
    {
        let mut recent = recent();
        if let Some(at) = recent.iter().position(|(s, _)| s == source) {
            let hit = recent.remove(at);
            let pattern = hit.1.clone();
            recent.push(hit);
            return Ok(pattern);
        }
    }
    // Built outside the lock: other requests' patterns need not wait for this one.
    let pattern = Arc::new(
        Pattern::compile(source)
            .map_err(|e| InferenceError::invalid(e.to_string()).with_param("regex"))?,
    );
    let mut recent = recent();
    if recent.len() >= PATTERNS_KEPT {
        recent.remove(0);
    }
    recent.push((source.to_string(), pattern.clone()));
    Ok(pattern)
}

/// Checks the extras a guest sent (the router checks them too; other guests may not).
fn check_extras(extras: &SamplingExtras, vocab: u32, model: &str) -> Result<(), InferenceError> {
    let invalid = |param: &str, message: String| InferenceError::invalid(message).with_param(param);
    if !(0.0..=1.0).contains(&extras.min_p) {
        return Err(invalid(
            "min_p",
            format!("min_p {} is outside 0..1", extras.min_p),
        ));
    }
    if !(extras.repetition_penalty > 0.0 && extras.repetition_penalty.is_finite()) {
        return Err(invalid(
            "repetition_penalty",
            format!(
                "repetition_penalty {} must be above 0",
                extras.repetition_penalty
            ),
        ));
    }
    if extras.stop_token_ids.len() > MAX_STOP_TOKEN_IDS {
        return Err(invalid(
            "stop_token_ids",
            format!(
                "{} stop token ids; at most {MAX_STOP_TOKEN_IDS} are allowed",
                extras.stop_token_ids.len()
            ),
        ));
    }
    if let Some(bad) = extras.stop_token_ids.iter().find(|t| **t >= vocab) {
        return Err(invalid(
            "stop_token_ids",
            format!("stop_token_ids names token id {bad}, out of the vocabulary of model {model} (size {vocab})"),
        ));
    }
    Ok(())
}

impl ApiState {
    fn start_generation(
        &self,
        model: &str,
        prompt: Prompt,
        options: GenerateOptions,
        extras: SamplingExtras,
        prompt_logprobs: Option<u32>,
    ) -> Result<GenerationStream, InferenceError> {
        let loaded = self.access.get(model)?;
        let decoder = loaded.decoder().ok_or_else(|| {
            InferenceError::invalid(format!("model {model} is not a generative model"))
                .with_param("model")
        })?;
        if prompt_logprobs.is_some() {
            decoder.check_prompt_scoring()?;
        }
        let prompt = match prompt {
            Prompt::Text(text) => decoder.encode_prompt(&text, options.add_special_tokens)?,
            Prompt::Tokens(tokens) => tokens,
        };
        let vocab = decoder.vocab_size();
        if let Some((bad, _)) = options.logit_bias.iter().find(|(t, _)| *t >= vocab) {
            return Err(InferenceError::invalid(format!(
                "logit_bias names token id {bad}, out of the vocabulary of model {model} (size {vocab})"
            ))
            .with_param("logit_bias"));
        }
        check_extras(&extras, vocab, model)?;
        let sampling = SamplingParams {
            // A nucleus of 0 holds only the most likely token: greedy decoding, which also
            // picks the most likely token a JSON constraint allows.
            temperature: if options.top_p == 0.0 {
                0.0
            } else {
                options.temperature.max(0.0)
            },
            top_p: if options.top_p > 0.0 && options.top_p <= 1.0 {
                options.top_p
            } else {
                1.0
            },
            top_k: options.top_k,
            presence_penalty: options.presence_penalty,
            frequency_penalty: options.frequency_penalty,
            seed: options.seed,
            logprobs: options
                .logprobs
                .map(|k| k.min(generate::sampler::MAX_TOP_LOGPROBS)),
            logit_bias: options
                .logit_bias
                .into_iter()
                .filter(|(_, b)| b.is_finite())
                .map(|(t, b)| (t, b.clamp(-100.0, 100.0)))
                .collect(),
            min_p: extras.min_p,
            repetition_penalty: extras.repetition_penalty,
        };
        let grammar = match (options.format, &extras.pattern) {
            (OutputFormat::Text, None) => None,
            (OutputFormat::Text, Some(source)) => Some(Grammar::Pattern(compiled_pattern(source)?)),
            (_, Some(_)) => {
                return Err(InferenceError::invalid(
                    "a pattern cannot be combined with a JSON output format",
                )
                .with_param("regex"))
            }
            (OutputFormat::JsonObject, None) => Some(Grammar::Json(Arc::new(Schema::any_object()))),
            (OutputFormat::JsonSchema(text), None) => {
                Some(Grammar::Json(Arc::new(parse_schema(&text)?)))
            }
        };
        let constraint = match grammar {
            Some(grammar) => Some(decoder.constraint(grammar)?),
            None => None,
        };
        let stop = StopRules {
            strings: options.stop,
            token_ids: extras.stop_token_ids,
            ignore_eos: extras.ignore_eos,
            min_tokens: extras.min_tokens as usize,
        };
        let tenant = self.access.tenant.clone();
        let prompt_ids = prompt.clone();
        let cached_prompt_tokens = Arc::new(AtomicUsize::new(0));
        let cached = cached_prompt_tokens.clone();
        let events = decoder.generate(
            prompt,
            options.max_tokens.map(|n| n as usize),
            move |prompt, max_tokens| GenerateRequest {
                tenant,
                prompt,
                max_tokens,
                sampling,
                stop,
                constraint,
                prompt_logprobs: prompt_logprobs
                    .map(|k| k.min(generate::sampler::MAX_TOP_LOGPROBS) as usize),
                cached_prompt_tokens: cached,
            },
        )?;
        Ok(GenerationStream {
            model: model.to_string(),
            provider: decoder.provider.clone(),
            events,
            end: None,
            prompt: prompt_ids,
            prompt_ranks: Vec::new(),
            cached_prompt_tokens,
            completion_tokens: 0,
            stop_cause: None,
        })
    }
}

impl Host for ApiState {
    async fn generate(
        &mut self,
        model: String,
        prompt: Prompt,
        options: GenerateOptions,
    ) -> wasmtime::Result<Result<Resource<GenerationStream>, WitError>> {
        self.generate_with_extras(model, prompt, options, no_extras())
            .await
    }

    async fn generate_with_extras(
        &mut self,
        model: String,
        prompt: Prompt,
        options: GenerateOptions,
        extras: SamplingExtras,
    ) -> wasmtime::Result<Result<Resource<GenerationStream>, WitError>> {
        if let Err(e) = self.charge(prompt_bytes(&prompt)) {
            return Ok(Err(e.into()));
        }
        match self.start_generation(&model, prompt, options, extras, None) {
            Ok(stream) => Ok(Ok(self.push(stream)?)),
            Err(e) => Ok(Err(e.into())),
        }
    }

    async fn generate_scored(
        &mut self,
        model: String,
        prompt: Prompt,
        options: GenerateOptions,
        top_logprobs: u32,
    ) -> wasmtime::Result<Result<ScoredGeneration, WitError>> {
        self.generate_scored_with_extras(model, prompt, options, no_extras(), top_logprobs)
            .await
    }

    async fn generate_scored_with_extras(
        &mut self,
        model: String,
        prompt: Prompt,
        options: GenerateOptions,
        extras: SamplingExtras,
        top_logprobs: u32,
    ) -> wasmtime::Result<Result<ScoredGeneration, WitError>> {
        if let Err(e) = self.charge(prompt_bytes(&prompt)) {
            return Ok(Err(e.into()));
        }
        let started = self.start_generation(&model, prompt, options, extras, Some(top_logprobs));
        let mut stream = match started {
            Ok(stream) => stream,
            Err(e) => return Ok(Err(e.into())),
        };
        // The worker sends the scored prompt first, once its prefill is done.
        let waiting = crate::sandbox::WaitingForInference::start();
        let first = match self.generation_deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, stream.events.recv())
                .await
                .ok()
                .flatten(),
            None => stream.events.recv().await,
        };
        self.waited += waiting.end();
        let prompt = match first {
            Some(GenEvent::Prompt(tokens)) => {
                stream.prompt_ranks = tokens.iter().map(|t| t.rank).collect();
                prompt_to_wit(tokens)
            }
            Some(GenEvent::Done(end)) => {
                let access = self.access.clone();
                let end = stream.finish(&access, end);
                return Ok(Err(end.error.unwrap_or_else(|| {
                    InferenceError::internal("the generation ended before its prompt was scored")
                        .into()
                })));
            }
            Some(GenEvent::Chunk { .. }) | None => {
                return Ok(Err(InferenceError::new(
                    crate::error::ErrorCode::Busy,
                    "the prompt was not scored before the request's deadline",
                )
                .into()))
            }
        };
        Ok(Ok(ScoredGeneration {
            prompt,
            generation: self.push(stream)?,
        }))
    }
}

impl HostGenerationStream for ApiState {
    async fn next(&mut self, stream: Resource<GenerationStream>) -> wasmtime::Result<Event> {
        let waiting = crate::sandbox::WaitingForInference::start();
        let event = self.next_event(stream).await;
        // Waiting for the next token is not the guest's CPU time.
        self.waited += waiting.end();
        event
    }

    async fn provider(&mut self, stream: Resource<GenerationStream>) -> wasmtime::Result<String> {
        Ok(self.table.get(&stream)?.provider.clone())
    }

    async fn cached_prompt_tokens(
        &mut self,
        stream: Resource<GenerationStream>,
    ) -> wasmtime::Result<u32> {
        let cached = self
            .table
            .get(&stream)?
            .cached_prompt_tokens
            .load(Ordering::Relaxed);
        Ok(u32::try_from(cached).unwrap_or(u32::MAX))
    }

    async fn stop_cause(
        &mut self,
        stream: Resource<GenerationStream>,
    ) -> wasmtime::Result<Option<StopCause>> {
        Ok(self.table.get(&stream)?.stop_cause.clone())
    }

    async fn prompt_token_ids(
        &mut self,
        stream: Resource<GenerationStream>,
    ) -> wasmtime::Result<Vec<u32>> {
        Ok(self.table.get(&stream)?.prompt.clone())
    }

    async fn prompt_token_ranks(
        &mut self,
        stream: Resource<GenerationStream>,
    ) -> wasmtime::Result<Vec<u32>> {
        Ok(self.table.get(&stream)?.prompt_ranks.clone())
    }

    async fn drop(&mut self, stream: Resource<GenerationStream>) -> wasmtime::Result<()> {
        self.delete(stream)?;
        Ok(())
    }
}

impl ApiState {
    /// The next chunk of a generation, or its end (waits for the worker).
    async fn next_event(&mut self, stream: Resource<GenerationStream>) -> wasmtime::Result<Event> {
        let access = self.access.clone();
        let deadline = self.generation_deadline;
        let stream = self.table.get_mut(&stream)?;
        if let Some(end) = &stream.end {
            return Ok(Event::Done(end.clone()));
        }
        // Checked before the channel too: a guest slower than the generation (a busy
        // host, a slow client) always finds a token waiting and would never time out
        // the receive below, and its stream was cut at the hard limit instead.
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            return Ok(Event::Done(stream.cut_at_deadline(&access)));
        }
        let first = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, stream.events.recv()).await {
                Ok(event) => event,
                Err(_) => return Ok(Event::Done(stream.cut_at_deadline(&access))),
            },
            None => stream.events.recv().await,
        };
        let mut chunk = match first {
            // Taken by `generate_scored`; never reaches a stream.
            Some(GenEvent::Prompt(_)) => Chunk {
                text: String::new(),
                tokens: Vec::new(),
                logprobs: Vec::new(),
            },
            Some(GenEvent::Chunk {
                text,
                tokens,
                logprobs,
            }) => Chunk {
                text,
                tokens,
                logprobs: logprobs_to_wit(logprobs),
            },
            Some(GenEvent::Done(end)) => return Ok(Event::Done(stream.finish(&access, end))),
            None => {
                let end = GenerationEnd {
                    finish_reason: FinishReason::Error,
                    usage: Usage {
                        prompt_tokens: 0,
                        completion_tokens: 0,
                    },
                    provider: String::new(),
                    error: Some(InferenceError::internal("the generation worker stopped").into()),
                };
                stream.end = Some(end.clone());
                return Ok(Event::Done(end));
            }
        };
        stream.completion_tokens += chunk.tokens.len();
        // Coalesce what is already waiting: fewer host calls and SSE events under load.
        while let Ok(event) = stream.events.try_recv() {
            match event {
                GenEvent::Chunk {
                    text,
                    tokens,
                    logprobs,
                } => {
                    chunk.text.push_str(&text);
                    stream.completion_tokens += tokens.len();
                    chunk.tokens.extend(tokens);
                    chunk.logprobs.extend(logprobs_to_wit(logprobs));
                }
                GenEvent::Done(end) => {
                    stream.finish(&access, end);
                    break;
                }
                GenEvent::Prompt(_) => {}
            }
        }
        Ok(Event::Chunk(chunk))
    }
}
