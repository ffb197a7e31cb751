//! The fields `/v1/chat/completions` and `/v1/completions` share: token limit,
//! sampling, stop sequences, streaming, `n`, `user`, `logit_bias`, and vLLM's
//! extensions (`min_p`, `repetition_penalty`, `ignore_eos`, `min_tokens`,
//! `stop_token_ids`) that self-hosted clients send. Parsed once into [`Sampling`],
//! which becomes the WIT `generate-options` and `sampling-extras`.

use super::json::{bad_value, integer, wrong_type, Fields};
use super::structured::Structured;
use super::truncation::Truncation;
use crate::errors::ApiError;
use crate::host::{GenerateOptions, OutputFormat, SamplingExtras};
use serde_json::Value;

/// Which API the fields belong to (their defaults and names differ a little).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Chat,
    Completions,
}

/// OpenAI's default `max_tokens` for `/v1/completions` (chat has none: the
/// context is the limit).
pub const COMPLETIONS_DEFAULT_MAX_TOKENS: u32 = 16;

/// The most choices one request may ask for (`n`, times the prompts of a
/// completions request): each is a generation of its own, and a model runs a
/// bounded number of them at once for all tenants together.
pub const MAX_CHOICES: u32 = 16;

/// The most alternatives per token: chat's `top_logprobs`, completions' `logprobs`
/// (OpenAI's limits).
pub const MAX_TOP_LOGPROBS_CHAT: u32 = 20;
pub const MAX_LOGPROBS_COMPLETIONS: u32 = 5;

/// The most stop sequences OpenAI accepts.
pub const MAX_STOP: usize = 4;

#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    pub max_tokens: Option<u32>,
    /// The field `max_tokens` came from, for errors about it.
    pub max_tokens_param: &'static str,
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: u32,
    pub seed: Option<u64>,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    pub stop: Vec<String>,
    pub stream: bool,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
    /// vLLM's `stream_options.continuous_usage_stats` (with `include_usage`): every
    /// chunk carries the usage so far.
    pub continuous_usage: bool,
    /// Choices per prompt.
    pub n: u32,
    /// Log probabilities with this many alternatives per token (chat's
    /// `logprobs` + `top_logprobs`, completions' `logprobs`).
    pub logprobs: Option<u32>,
    /// Token id → bias added to its logit.
    pub logit_bias: Vec<(u32, f32)>,
    /// Completions' `echo`: each choice's text starts with its prompt (and, with
    /// `logprobs`, its log probabilities with the prompt's).
    pub echo: bool,
    /// Completions' `best_of`: candidates per prompt, of which the `n` most likely
    /// are returned (1: off).
    pub best_of: u32,
    /// Chat's `response_format` (or vLLM's `guided_json`): the JSON forms make the
    /// host constrain the output.
    pub format: ResponseFormat,
    /// vLLM's extensions: see the WIT `sampling-extras`.
    pub min_p: f32,
    pub repetition_penalty: f32,
    pub ignore_eos: bool,
    pub min_tokens: u32,
    pub stop_token_ids: Vec<u32>,
    /// A regular expression the whole output matches (vLLM's `guided_regex`,
    /// `guided_choice`).
    pub pattern: Option<String>,
    /// The vLLM field the output's form came from (`guided_json`,
    /// `structured_outputs.choice`...), which the host's errors about it name.
    pub structured_param: Option<&'static str>,
    /// vLLM's `truncate_prompt_tokens`: long prompts keep their last tokens.
    pub truncation: Option<Truncation>,
    /// vLLM's `request_id`: the response's id is the route's prefix and it.
    pub request_id: Option<String>,
    /// vLLM's `allowed_token_ids` was given (it is carried in `logit_bias`).
    pub allowed_token_ids: bool,
    /// vLLM's `include_stop_str_in_output`: the stop string that ended the text ends it.
    pub include_stop_str: bool,
    /// vLLM's `prompt_logprobs`: each prompt token's log probability, rank and this
    /// many alternatives.
    pub prompt_logprobs: Option<u32>,
    /// vLLM's `return_token_ids`: the prompt's and each choice's token ids.
    pub return_token_ids: bool,
    /// vLLM's `return_tokens_as_token_ids`: log probabilities name their tokens
    /// `token_id:<id>` instead of by their text.
    pub tokens_as_ids: bool,
}

/// Chat's `response_format`.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum ResponseFormat {
    #[default]
    Text,
    /// One JSON object.
    JsonObject,
    /// One JSON object that this JSON Schema (JSON text) accepts.
    JsonSchema(String),
}

impl Sampling {
    /// OpenAI's defaults for the fields an endpoint does not take (the Responses API).
    pub fn defaults(max_tokens: Option<u32>, max_tokens_param: &'static str) -> Self {
        Sampling {
            max_tokens,
            max_tokens_param,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            seed: None,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            stop: Vec::new(),
            stream: false,
            include_usage: false,
            continuous_usage: false,
            n: 1,
            logprobs: None,
            logit_bias: Vec::new(),
            echo: false,
            best_of: 1,
            format: ResponseFormat::Text,
            min_p: 0.0,
            repetition_penalty: 1.0,
            ignore_eos: false,
            min_tokens: 0,
            stop_token_ids: Vec::new(),
            pattern: None,
            structured_param: None,
            truncation: None,
            request_id: None,
            allowed_token_ids: false,
            include_stop_str: false,
            prompt_logprobs: None,
            return_token_ids: false,
            tokens_as_ids: false,
        }
    }

    /// Alternatives per token to score the prompt with, when it is scored: for
    /// completions' `echo` with `logprobs`, for `prompt_logprobs`, or both.
    pub fn prompt_scoring(&self) -> Option<u32> {
        let echoed = self.logprobs.filter(|_| self.echo);
        match (echoed, self.prompt_logprobs) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0).max(b.unwrap_or(0))),
        }
    }

    /// The field a host error's `param` should name: the host calls a constraint's
    /// field `response_format` or `regex`, whichever request field set it.
    pub fn error_param(&self, param: Option<String>) -> Option<String> {
        match (param.as_deref(), self.structured_param) {
            (Some("response_format" | "regex"), Some(field)) => Some(field.to_string()),
            // The allowed ids ride in the logit bias: an id beyond the vocabulary is theirs.
            (Some("logit_bias"), _) if self.allowed_token_ids => {
                Some("allowed_token_ids".to_string())
            }
            _ => param,
        }
    }

    /// The WIT `sampling-extras` (vLLM's extensions).
    pub fn extras(&self) -> SamplingExtras {
        SamplingExtras {
            min_p: self.min_p,
            repetition_penalty: self.repetition_penalty,
            ignore_eos: self.ignore_eos,
            min_tokens: self.min_tokens,
            stop_token_ids: self.stop_token_ids.clone(),
            pattern: self.pattern.clone(),
        }
    }

    /// The options of choice `choice` of a prompt: with a seed, each choice gets
    /// its own (seed + choice), so that `n` sampled choices differ but stay
    /// reproducible.
    pub fn options(&self, add_special_tokens: bool, choice: u32) -> GenerateOptions {
        GenerateOptions {
            max_tokens: self.max_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            seed: self.seed.map(|s| s.wrapping_add(u64::from(choice))),
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            stop: self.stop.clone(),
            add_special_tokens,
            logprobs: self.logprobs,
            logit_bias: self.logit_bias.clone(),
            format: match &self.format {
                ResponseFormat::Text => OutputFormat::Text,
                ResponseFormat::JsonObject => OutputFormat::JsonObject,
                ResponseFormat::JsonSchema(schema) => OutputFormat::JsonSchema(schema.clone()),
            },
        }
    }
}

/// `temperature` (0..2, default 1) and `top_p` (0..1, default 1). OpenAI accepts a
/// `top_p` of 0, which clients send for deterministic answers: it keeps only the most
/// likely token.
pub fn temperature_and_top_p(f: &mut Fields) -> Result<(f32, f32), ApiError> {
    let temperature = f.number("temperature", 0.0, 2.0)?.unwrap_or(1.0) as f32;
    let top_p = f.number("top_p", 0.0, 1.0)?.unwrap_or(1.0) as f32;
    Ok((temperature, top_p))
}

const U32_MAX: i128 = u32::MAX as i128;

/// Takes the shared fields out of `f` (the route reads its own fields and then
/// calls [`Fields::finish`]).
pub fn parse(f: &mut Fields, endpoint: Endpoint) -> Result<Sampling, ApiError> {
    // Completions accept 0 (with `echo`: score the prompt, generate nothing).
    let least = match endpoint {
        Endpoint::Chat => 1,
        Endpoint::Completions => 0,
    };
    let max_tokens = f.integer("max_tokens", least, U32_MAX)?;
    let (max_tokens, max_tokens_param) = match endpoint {
        Endpoint::Chat => match (max_tokens, f.integer("max_completion_tokens", 1, U32_MAX)?) {
            (Some(a), Some(b)) if a != b => {
                return Err(ApiError::invalid(
                    "max_completion_tokens",
                    format!(
                        "'max_tokens' ({a}) and 'max_completion_tokens' ({b}) disagree; send only \
                         'max_completion_tokens'."
                    ),
                ))
            }
            (_, Some(b)) => (Some(b), "max_completion_tokens"),
            (a, None) => (a, "max_tokens"),
        },
        Endpoint::Completions => (
            Some(max_tokens.unwrap_or(i128::from(COMPLETIONS_DEFAULT_MAX_TOKENS))),
            "max_tokens",
        ),
    };
    // In range by the checks above.
    let max_tokens = max_tokens.map(|n| n as u32);

    let (temperature, top_p) = temperature_and_top_p(f)?;
    // vLLM's clients send -1 for "off".
    let top_k = f.integer("top_k", -1, U32_MAX)?.unwrap_or(0).max(0) as u32;
    // OpenAI's seed is a signed 64-bit integer; negative seeds map to their
    // two's-complement u64 (still reproducible).
    let seed = f
        .integer("seed", i128::from(i64::MIN), i128::from(u64::MAX))?
        .map(|s| if s < 0 { s as i64 as u64 } else { s as u64 });
    let presence_penalty = f.number("presence_penalty", -2.0, 2.0)?.unwrap_or(0.0) as f32;
    let frequency_penalty = f.number("frequency_penalty", -2.0, 2.0)?.unwrap_or(0.0) as f32;
    let stop = parse_stop(f.take("stop"))?;

    let stream = f.bool("stream")?.unwrap_or(false);
    let (include_usage, continuous_usage) = match stream_options(f, stream)? {
        None => (false, false),
        Some(mut o) => {
            let include = o.bool("include_usage")?.unwrap_or(false);
            // As at vLLM, only with `include_usage`.
            let continuous = o.bool("continuous_usage_stats")?.unwrap_or(false);
            o.finish()?;
            (include, include && continuous)
        }
    };

    let n = f.integer("n", 1, i128::from(MAX_CHOICES))?.unwrap_or(1) as u32;
    let logprobs = match endpoint {
        Endpoint::Chat => {
            let wanted = f.bool("logprobs")?.unwrap_or(false);
            let top = f.integer("top_logprobs", 0, i128::from(MAX_TOP_LOGPROBS_CHAT))?;
            match (wanted, top) {
                // Clients that fill every field send 0 for "no alternatives".
                (false, Some(0)) | (false, None) => None,
                (false, Some(_)) => {
                    return Err(ApiError::invalid(
                        "top_logprobs",
                        "'top_logprobs' needs 'logprobs' to be true.",
                    ))
                }
                (true, top) => Some(top.unwrap_or(0) as u32),
            }
        }
        Endpoint::Completions => f
            .integer("logprobs", 0, i128::from(MAX_LOGPROBS_COMPLETIONS))?
            .map(|k| k as u32),
    };
    // `user` identifies the end user to OpenAI for abuse monitoring; nothing to do here.
    f.string("user")?;
    let logit_bias = parse_logit_bias(f.take("logit_bias"))?;

    let min_p = f.number("min_p", 0.0, 1.0)?.unwrap_or(0.0) as f32;
    let repetition_penalty = f.number("repetition_penalty", 0.0, 10.0)?.unwrap_or(1.0) as f32;
    if repetition_penalty == 0.0 {
        return Err(bad_value(
            "repetition_penalty",
            "it must be above 0 (1 is off).",
        ));
    }
    let ignore_eos = f.bool("ignore_eos")?.unwrap_or(false);
    let min_tokens = f.integer("min_tokens", 0, U32_MAX)?.unwrap_or(0) as u32;
    if let Some(max) = max_tokens.filter(|max| min_tokens > *max) {
        return Err(bad_value(
            "min_tokens",
            format!("{min_tokens} is more than '{max_tokens_param}' ({max})."),
        ));
    }
    let stop_token_ids = parse_stop_token_ids(f.take("stop_token_ids"))?;
    let allowed = f.take("allowed_token_ids");
    let allowed_given = allowed.is_some();
    let allowed_token_ids = parse_token_ids(allowed, "allowed_token_ids")?;
    if allowed_token_ids.len() > MAX_ALLOWED_TOKEN_IDS
        || (allowed_token_ids.is_empty() && allowed_given)
    {
        return Err(bad_value(
            "allowed_token_ids",
            format!("it must hold 1 to {MAX_ALLOWED_TOKEN_IDS} token ids."),
        ));
    }
    let logit_bias = allow_only(logit_bias, &allowed_token_ids);
    let request_id = parse_request_id(f.string("request_id")?)?;
    let include_stop_str = f.bool("include_stop_str_in_output")?.unwrap_or(false);
    let prompt_logprobs = parse_prompt_logprobs(f.take("prompt_logprobs"), stream)?;
    let return_token_ids = f.bool("return_token_ids")?.unwrap_or(false);
    let tokens_as_ids = f.bool("return_tokens_as_token_ids")?.unwrap_or(false);
    accept_vllm_defaults(f)?;
    let truncation = super::truncation::parse(f)?;
    let structured = super::structured::parse(f)?;
    let structured_param = structured.as_ref().map(Structured::param);
    let (format, pattern) = match structured {
        None => (ResponseFormat::Text, None),
        Some(Structured::Json(schema, _)) => (ResponseFormat::JsonSchema(schema), None),
        Some(Structured::Pattern(pattern, _)) => (ResponseFormat::Text, Some(pattern)),
    };

    Ok(Sampling {
        max_tokens,
        max_tokens_param,
        temperature,
        top_p,
        top_k,
        seed,
        presence_penalty,
        frequency_penalty,
        stop,
        stream,
        include_usage,
        continuous_usage,
        n,
        logprobs,
        logit_bias,
        format,
        echo: false,
        best_of: 1,
        min_p,
        repetition_penalty,
        ignore_eos,
        min_tokens,
        stop_token_ids,
        pattern,
        structured_param,
        truncation,
        request_id,
        allowed_token_ids: !allowed_token_ids.is_empty(),
        include_stop_str,
        prompt_logprobs,
        return_token_ids,
        tokens_as_ids,
    })
}

/// `stream_options` (only with `stream: true`), its `include_obfuscation` read
/// (OpenAI pads events against length side channels; there is none to pad here);
/// the caller reads its own fields and finishes it.
pub fn stream_options(f: &mut Fields, stream: bool) -> Result<Option<Fields>, ApiError> {
    match f.take("stream_options") {
        None => Ok(None),
        Some(_) if !stream => Err(ApiError::invalid(
            "stream_options",
            "'stream_options' is only allowed when 'stream' is true.",
        )),
        Some(Value::Object(m)) => {
            let mut o = Fields::nested(m, "stream_options");
            o.bool("include_obfuscation")?;
            Ok(Some(o))
        }
        Some(other) => Err(wrong_type("stream_options", "an object", &other)),
    }
}

/// Identifiers and cache hints for OpenAI's side (`safety_identifier`,
/// `prompt_cache_key`, `prompt_cache_retention`): checked, nothing to do here (the
/// host's prefix cache keeps what fits, per tenant).
pub fn openai_hints(f: &mut Fields) -> Result<(), ApiError> {
    f.string("safety_identifier")?;
    f.string("prompt_cache_key")?;
    match f.string("prompt_cache_retention")?.as_deref() {
        None | Some("in_memory" | "in-memory" | "24h") => Ok(()),
        Some(other) => Err(bad_value(
            "prompt_cache_retention",
            format!("'{other}'. Supported values are: 'in_memory' and '24h'."),
        )),
    }
}

/// vLLM's `prompt_logprobs`: alternatives per prompt token, 0 to 20 (0: the prompt
/// token's own only). `true` is 1 and `false` off, as clients that send a flag mean.
/// Not with streaming, as at vLLM: the scores would come before any text.
fn parse_prompt_logprobs(v: Option<Value>, stream: bool) -> Result<Option<u32>, ApiError> {
    let k = match v {
        None | Some(Value::Null) | Some(Value::Bool(false)) => return Ok(None),
        Some(Value::Bool(true)) => 1,
        Some(v) => match integer(&v, "prompt_logprobs")? {
            k if (0..=i128::from(MAX_TOP_LOGPROBS_CHAT)).contains(&k) => k as u32,
            _ => {
                return Err(bad_value(
                    "prompt_logprobs",
                    format!(
                        "it must be 0 to {MAX_TOP_LOGPROBS_CHAT} (alternatives per prompt \
                         token; -1, the whole vocabulary, is not served)."
                    ),
                ))
            }
        },
    };
    if stream {
        return Err(ApiError::invalid(
            "prompt_logprobs",
            "'prompt_logprobs' is not available when 'stream' is true.",
        ));
    }
    Ok(Some(k))
}

/// The bias that makes only `allowed` tokens possible (vLLM's `allowed_token_ids`):
/// +100 on each, beside the request's own bias, puts every other token at least
/// e^-50 behind at temperature 2, so none is ever sampled; the reported log
/// probabilities stay the model's own.
fn allow_only(mut bias: Vec<(u32, f32)>, allowed: &[u32]) -> Vec<(u32, f32)> {
    for &id in allowed {
        match bias.iter_mut().find(|(t, _)| *t == id) {
            Some((_, b)) => *b += ALLOWED_BIAS,
            None => bias.push((id, ALLOWED_BIAS)),
        }
    }
    bias
}

const ALLOWED_BIAS: f32 = 100.0;

/// The most tokens `allowed_token_ids` may name.
pub const MAX_ALLOWED_TOKEN_IDS: usize = 1024;

/// vLLM's `request_id`: 1-128 printable ASCII characters.
fn parse_request_id(id: Option<String>) -> Result<Option<String>, ApiError> {
    match id {
        Some(id)
            if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Err(bad_value(
                "request_id",
                "it must be 1 to 128 printable ASCII characters without spaces.",
            ))
        }
        id => Ok(id),
    }
}

/// vLLM's fields that clients send with their default values: accepted at those
/// values (what this server does anyway), refused as unsupported at any other.
fn accept_vllm_defaults(f: &mut Fields) -> Result<(), ApiError> {
    let rules = [
        ("skip_special_tokens", Value::Bool(true), "is only supported as true: special tokens are never part of the text."),
        ("spaces_between_special_tokens", Value::Bool(true), "is only supported as true."),
        ("use_beam_search", Value::Bool(false), "is only supported as false: there is no beam search here."),
        ("length_penalty", Value::from(1), "is only supported as 1 (it applies to beam search)."),
        ("early_stopping", Value::Bool(false), "is only supported as false (it applies to beam search)."),
        ("detokenize", Value::Bool(true), "is only supported as true."),
        ("priority", Value::from(0), "is only supported as 0: requests are scheduled fairly across tenants, not by priority."),
    ];
    for (name, default, why) in rules {
        // 1 and 1.0 are the same default.
        let same = |v: &Value| *v == default || (v.is_number() && v.as_f64() == default.as_f64());
        f.reject_unless(name, same, why)?;
    }
    Ok(())
}

/// `stop_token_ids`: an array of token ids (the host checks them against the
/// model's vocabulary).
fn parse_stop_token_ids(v: Option<Value>) -> Result<Vec<u32>, ApiError> {
    parse_token_ids(v, "stop_token_ids")
}

fn parse_token_ids(v: Option<Value>, field: &str) -> Result<Vec<u32>, ApiError> {
    match v {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let path = format!("{field}[{i}]");
                let id = integer(item, &path)?;
                u32::try_from(id).map_err(|_| bad_value(&path, format!("{id} is not a token id.")))
            })
            .collect(),
        Some(other) => Err(wrong_type(field, "an array of token ids", &other)),
    }
}

/// The most entries `logit_bias` may hold (OpenAI's limit).
pub const MAX_LOGIT_BIAS: usize = 300;

/// `logit_bias`: `{"token id": bias}`, ids as decimal strings, biases -100..100.
/// Ids beyond the vocabulary are the host's to refuse.
fn parse_logit_bias(v: Option<Value>) -> Result<Vec<(u32, f32)>, ApiError> {
    let map = match v {
        None => return Ok(Vec::new()),
        Some(Value::Object(m)) => m,
        Some(other) => return Err(wrong_type("logit_bias", "an object", &other)),
    };
    if map.len() > MAX_LOGIT_BIAS {
        return Err(bad_value(
            "logit_bias",
            format!(
                "it has {} entries; at most {MAX_LOGIT_BIAS} are allowed.",
                map.len()
            ),
        ));
    }
    map.into_iter()
        .map(|(key, value)| {
            let path = format!("logit_bias.{key}");
            let id: u32 = key.parse().map_err(|_| {
                bad_value("logit_bias", format!("the key {key:?} is not a token id."))
            })?;
            let bias = match &value {
                Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
                other => return Err(wrong_type(&path, "a number", other)),
            };
            if !(-100.0..=100.0).contains(&bias) {
                return Err(bad_value(&path, format!("{bias} is outside -100..100.")));
            }
            Ok((id, bias as f32))
        })
        .collect()
}

/// `stop`: a string or an array of at most [`MAX_STOP`] strings, none empty.
fn parse_stop(v: Option<Value>) -> Result<Vec<String>, ApiError> {
    let empty = |path: &str| bad_value(path, "stop sequences cannot be empty strings.");
    match v {
        None => Ok(Vec::new()),
        Some(Value::String(s)) if s.is_empty() => Err(empty("stop")),
        Some(Value::String(s)) => Ok(vec![s]),
        Some(Value::Array(items)) => {
            if items.len() > MAX_STOP {
                return Err(bad_value(
                    "stop",
                    format!(
                        "{} stop sequences; at most {MAX_STOP} are allowed.",
                        items.len()
                    ),
                ));
            }
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(s) if s.is_empty() => Err(empty(&format!("stop[{i}]"))),
                    Value::String(s) => Ok(s),
                    other => Err(wrong_type(&format!("stop[{i}]"), "a string", &other)),
                })
                .collect()
        }
        Some(other) => Err(wrong_type(
            "stop",
            "a string or an array of strings",
            &other,
        )),
    }
}
