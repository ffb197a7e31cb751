//! A decoder (chat or completion) model in the Hugging Face onnx-community layout:
//! `onnx/model.onnx`, `config.json`, `generation_config.json`, `tokenizer.json`,
//! `tokenizer_config.json` (chat template, special tokens). `models/prepare.py`
//! writes the same layout (plus `nnhost.json`), so one loader serves both.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use serde_json::Value;
use tokenizers::Tokenizer;

use super::read_json;
use crate::config::ModelConfig;
use crate::error::{ErrorCode, InferenceError};
use crate::scheduler::generate::constraint::{Constraint, Grammar, TokenBytes};
use crate::scheduler::generate::{
    DecoderGraph, DecoderShape, GenEvent, GenerateRequest, Generator, GeneratorLimits,
};

pub struct DecoderModel {
    pub name: String,
    pub tokenizer: Arc<Tokenizer>,
    /// Token ids below this are valid. Computed once: `get_vocab_size(true)` builds the
    /// whole vocabulary map on every call (~60 ms for Gemma's 262k tokens).
    vocab_size: u32,
    pub context_length: usize,
    pub chat_template: Option<String>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub stop_tokens: Vec<String>,
    pub base_model: bool,
    add_bos: Option<u32>,
    pub onnx: PathBuf,
    pub provider: String,
    generator: Generator,
    /// The graph can give every position's logits: prompts can be scored.
    scores_prompts: bool,
    /// Each token's bytes, read from the vocabulary on the first JSON-mode request.
    token_bytes: std::sync::OnceLock<Result<Arc<TokenBytes>, String>>,
}

#[derive(Deserialize, Default)]
struct ConfigJson {
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    hidden_size: Option<usize>,
    max_position_embeddings: Option<usize>,
}

#[derive(Deserialize, Default)]
struct NnhostJson {
    kind: Option<String>,
    #[serde(default)]
    base_model: bool,
    context_length: Option<usize>,
    #[serde(default, alias = "stop")]
    stop_tokens: Vec<String>,
    /// Variant name → ONNX file inside the folder, and which one to serve by default.
    #[serde(default)]
    variants: std::collections::BTreeMap<String, String>,
    default_variant: Option<String>,
}

/// `"<s>"` or `{"content": "<s>", ...}` as tokenizer_config.json writes special tokens.
fn token_text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

fn token_ids(value: Option<&Value>) -> Vec<u32> {
    match value {
        Some(Value::Number(n)) => n.as_u64().map(|n| vec![n as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_u64)
            .map(|n| n as u32)
            .collect(),
        _ => Vec::new(),
    }
}

/// Whether a folder holds a decoder, and if so whether it is chat-capable.
pub fn detect_kind(dir: &Path) -> Option<&'static str> {
    if let Ok(Some(v)) = read_json::<Value>(&dir.join("nnhost.json")) {
        if let Some(kind) = v.get("kind").and_then(Value::as_str) {
            return match kind {
                "chat" => Some("chat"),
                "completion" => Some("completion"),
                "embedding" => Some("embedding"),
                "graph" | "raw_graph" => Some("graph"),
                _ => None,
            };
        }
    }
    if dir.join("modules.json").is_file() || dir.join("1_Pooling").is_dir() {
        return Some("embedding");
    }
    if dir.join("generation_config.json").is_file() {
        let has_template = read_json(&dir.join("tokenizer_config.json"))
            .ok()
            .flatten()
            .is_some_and(|v: Value| v.get("chat_template").is_some())
            || dir.join("chat_template.jinja").is_file();
        return Some(if has_template { "chat" } else { "completion" });
    }
    None
}

impl DecoderModel {
    pub fn load(config: &ModelConfig) -> Result<Self> {
        let dir = &config.path;
        if !dir.is_dir() {
            bail!(
                "model folder {} does not exist (run `just models` to prepare it)",
                dir.display()
            );
        }
        let model_config: ConfigJson = match read_json(&dir.join("config.json"))? {
            Some(v) => serde_json::from_value(v).context("config.json")?,
            None => bail!("{}: no config.json", dir.display()),
        };
        let generation = read_json(&dir.join("generation_config.json"))?.unwrap_or(Value::Null);
        let tokenizer_config =
            read_json(&dir.join("tokenizer_config.json"))?.unwrap_or(Value::Null);
        let nnhost: NnhostJson = match read_json(&dir.join("nnhost.json"))? {
            Some(v) => serde_json::from_value(v).context("nnhost.json")?,
            None => NnhostJson::default(),
        };

        let heads = model_config
            .num_attention_heads
            .context("config.json: num_attention_heads")?;
        let shape = DecoderShape {
            layers: model_config
                .num_hidden_layers
                .context("config.json: num_hidden_layers")?,
            kv_heads: model_config.num_key_value_heads.unwrap_or(heads),
            head_dim: match model_config.head_dim {
                Some(d) => d,
                None => {
                    model_config
                        .hidden_size
                        .context("config.json: hidden_size")?
                        / heads
                }
            },
        };
        let context_length = config
            .max_tokens
            .or(nnhost.context_length)
            .or(model_config.max_position_embeddings)
            .unwrap_or(2048);

        let tokenizer = super::load_tokenizer(&dir.join("tokenizer.json"))?;

        let chat_template = match tokenizer_config.get("chat_template") {
            Some(Value::String(t)) => Some(t.clone()),
            Some(Value::Array(named)) => named
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .and_then(|t| t.get("template")?.as_str().map(str::to_string)),
            _ => std::fs::read_to_string(dir.join("chat_template.jinja")).ok(),
        };
        let bos_token = token_text(tokenizer_config.get("bos_token"));
        let eos_token = token_text(tokenizer_config.get("eos_token"));
        let add_bos = tokenizer_config
            .get("add_bos_token")
            .and_then(Value::as_bool)
            .unwrap_or(false)
            .then(|| bos_token.as_deref().and_then(|t| tokenizer.token_to_id(t)))
            .flatten();

        let mut stop_ids = token_ids(generation.get("eos_token_id"));
        let mut stop_tokens: Vec<String> = nnhost.stop_tokens.clone();
        stop_tokens.extend(eos_token.clone());
        for id in &stop_ids {
            if let Some(text) = tokenizer.id_to_token(*id) {
                stop_tokens.push(text);
            }
        }
        stop_tokens.sort();
        stop_tokens.dedup();
        for text in &stop_tokens {
            if let Some(id) = tokenizer.token_to_id(text) {
                stop_ids.push(id);
            }
        }
        stop_ids.sort_unstable();
        stop_ids.dedup();
        if stop_ids.is_empty() {
            tracing::warn!(model = %config.name, "no stop token known: generations end only at max_tokens");
        }

        let default_variant = nnhost
            .default_variant
            .as_ref()
            .and_then(|v| nnhost.variants.get(v))
            .map(std::path::PathBuf::from);
        let onnx = match config.onnx.clone().or(default_variant) {
            Some(file) => dir.join(file),
            None => ["onnx/model.onnx", "model.onnx"]
                .iter()
                .map(|f| dir.join(f))
                .find(|p| p.is_file())
                .with_context(|| format!("{}: no onnx/model.onnx", dir.display()))?,
        };
        let graph = DecoderGraph::load(&onnx, &config.cpu, shape)?;
        let scores_prompts = graph.scores_prompts();
        let tokenizer = Arc::new(tokenizer);
        let provider = crate::providers::cpu::label();
        let generator = Generator::start(
            &config.name,
            graph,
            tokenizer.clone(),
            stop_ids,
            provider.clone(),
            GeneratorLimits {
                context_length,
                max_generations: config.batching.max_generations,
                max_batch: config.batching.max_batch_sequences,
                prefill_chunk: config.batching.prefill_chunk_tokens,
                prefix_cache_bytes: config.batching.prefix_cache_mib << 20,
                speculative_tokens: config.batching.speculative_tokens,
            },
        )?;
        let base_model = nnhost.base_model
            || (chat_template.is_none() && nnhost.kind.as_deref() != Some("chat"));
        Ok(Self {
            name: config.name.clone(),
            vocab_size: tokenizer.get_vocab_size(true) as u32,
            tokenizer,
            context_length,
            chat_template,
            bos_token,
            eos_token,
            stop_tokens,
            base_model,
            add_bos,
            onnx,
            provider,
            generator,
            scores_prompts,
            token_bytes: Default::default(),
        })
    }

    /// Tokenizes a text prompt; with special tokens, BOS is added when the model
    /// wants one and its tokenizer does not add it by itself (Gemma's GGUF tokenizer).
    pub fn encode_prompt(
        &self,
        text: &str,
        add_special_tokens: bool,
    ) -> Result<Vec<u32>, InferenceError> {
        let encoding = self
            .tokenizer
            .encode_fast(text, add_special_tokens)
            .map_err(|e| InferenceError::invalid(format!("tokenizing the prompt: {e}")))?;
        let mut ids = encoding.get_ids().to_vec();
        if add_special_tokens {
            if let Some(bos) = self.add_bos {
                if ids.first() != Some(&bos) {
                    ids.insert(0, bos);
                }
            }
        }
        Ok(ids)
    }

    /// A fresh output constraint (JSON mode or a pattern). The vocabulary's bytes are
    /// read on the first constrained request, on the caller's thread: once per model,
    /// ~10 ms for SmolLM2's 49,152 tokens, ~90 ms for Gemma's 262,144 (and ~1 MB per
    /// 100,000 tokens).
    pub fn constraint(&self, grammar: Grammar) -> Result<Constraint, InferenceError> {
        let bytes = self
            .token_bytes
            .get_or_init(|| TokenBytes::from_tokenizer(&self.tokenizer).map(Arc::new));
        let param = match grammar {
            Grammar::Json(_) => "response_format",
            Grammar::Pattern(_) => "regex",
        };
        match bytes {
            Ok(bytes) => Ok(Constraint::new(bytes.clone(), grammar)),
            Err(why) => Err(InferenceError::invalid(format!(
                "constrained output (JSON mode, patterns) is not available for model {}: {why}",
                self.name
            ))
            .with_param(param)),
        }
    }

    /// Whether prompt log probabilities can be asked for: graphs prepared before
    /// `logits_to_keep` give the last position's logits only.
    pub fn check_prompt_scoring(&self) -> Result<(), InferenceError> {
        if self.scores_prompts {
            return Ok(());
        }
        Err(InferenceError::new(
            ErrorCode::Unsupported,
            format!(
                "model {} cannot score its prompt: its graph returns the last position's logits only \
                 (prepare it again with models/prepare.py to get the logits_to_keep input)",
                self.name
            ),
        ))
    }

    /// Token ids below this are valid.
    pub fn vocab_size(&self) -> u32 {
        self.vocab_size
    }

    /// Checks limits and starts generating. `max_tokens` None means "up to the context".
    pub fn generate(
        &self,
        prompt: Vec<u32>,
        max_tokens: Option<usize>,
        request: impl FnOnce(Vec<u32>, usize) -> GenerateRequest,
    ) -> Result<tokio::sync::mpsc::UnboundedReceiver<GenEvent>, InferenceError> {
        if prompt.is_empty() {
            return Err(InferenceError::invalid("the prompt is empty").with_param("prompt"));
        }
        let vocab = self.vocab_size;
        if let Some(bad) = prompt.iter().find(|&&t| t >= vocab) {
            return Err(InferenceError::invalid(format!(
                "token id {bad} is out of the vocabulary of model {} (size {vocab})",
                self.name
            ))
            .with_param("prompt"));
        }
        let available = self.context_length.saturating_sub(prompt.len());
        let wanted = max_tokens.unwrap_or(available);
        // A prompt may fill the context when nothing is to follow it (scoring it).
        if prompt.len() + wanted > self.context_length || (available == 0 && max_tokens != Some(0))
        {
            return Err(InferenceError::new(
                ErrorCode::ContextLengthExceeded,
                format!(
                    "This model's maximum context length is {} tokens. However, you requested {} tokens ({} in the prompt, {} for the completion). Please reduce the prompt or max_tokens.",
                    self.context_length,
                    prompt.len() + wanted,
                    prompt.len(),
                    wanted
                ),
            )
            // The prompt alone filling the context is the prompt's fault, not max_tokens'.
            .with_param(if available == 0 { "prompt" } else { "max_tokens" }));
        }
        self.generator.submit(request(prompt, wanted))
    }

    /// See `Registry::stop_workers`.
    pub fn stop(&self) {
        self.generator.stop();
    }
}
