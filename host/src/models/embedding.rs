//! An embedding model: its tokenizer, its limits and the queue that batches its
//! inputs onto a provider.

use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use tokenizers::{Encoding, Token, Tokenizer, TruncationParams};

use super::graph_gate::GraphGate;
use super::layout::SentenceTransformerFolder;
use super::pooling::Pooling;
use crate::config::ModelConfig;
use crate::error::{ErrorCode, InferenceError};
use crate::providers::cpu::CpuProvider;
use crate::providers::remote::RemoteProvider;
use crate::providers::router::ProviderRouter;
use crate::providers::GraphSignature;
use crate::scheduler::embed_queue::{EmbedQueue, Embeddings, PoolingPlan, Sequence};

pub struct EmbeddingModel {
    pub name: String,
    pub dimensions: usize,
    pub max_tokens: usize,
    pub max_inputs: usize,
    /// Cut long inputs instead of rejecting them (the model's config allows it).
    truncate: bool,
    pub pooling: Pooling,
    pub normalize: bool,
    pub tokenizer: Tokenizer,
    /// The same tokenizer, cutting at `max_tokens` (for requests that ask to truncate).
    truncating: Tokenizer,
    /// Token ids below this are valid. Computed once: `get_vocab_size(true)` builds the
    /// whole vocabulary map on every call.
    vocab_size: u32,
    pub provider: Arc<CpuProvider>,
    pub router: Arc<ProviderRouter>,
    /// The door to runs `/v2` and guests' `compute` ask of the graph.
    pub gate: GraphGate,
    queue: EmbedQueue,
}

/// What the caller wants embedded.
pub enum EmbedInput {
    Texts(Vec<String>),
    Tokens(Vec<Vec<u32>>),
}

impl EmbeddingModel {
    pub fn load(config: &ModelConfig) -> Result<Self> {
        let mut folder = SentenceTransformerFolder::read(&config.path)?;
        if let Some(file) = &config.onnx {
            folder.onnx = config.path.join(file);
        }
        let tokenizer = super::load_tokenizer(&folder.tokenizer)?;
        let max_tokens = config.max_tokens.unwrap_or(folder.max_seq_length);
        let mut truncating = tokenizer.clone();
        truncating
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                ..Default::default()
            }))
            .map_err(|e| anyhow!("{e}"))?;

        let provider = Arc::new(CpuProvider::load_with_lanes(&folder.onnx, &config.cpu)?);
        let signature = provider.signature().clone();
        let dimensions = folder
            .dimensions
            .or_else(|| output_width(&signature))
            .context("cannot tell the embedding size: no 1_Pooling/config.json, config.json or static output shape")?;
        let pooling = match &config.pooling {
            Some(p) => p.parse().map_err(|e: String| anyhow!(e))?,
            None => folder.pooling,
        };
        let normalize = config.normalize.unwrap_or(folder.normalize);
        let plan = PoolingPlan {
            pooling,
            normalize,
            dimensions,
        };
        let remote = match &config.remote {
            Some(remote) => Some(Arc::new(RemoteProvider::new(remote, &config.name)?)),
            None => None,
        };
        let router = ProviderRouter::new(
            &config.name,
            provider.clone(),
            remote,
            config.routing.clone(),
            signature.clone(),
        );
        let queue = EmbedQueue::start(
            &config.name,
            router.clone(),
            signature,
            plan,
            config.batching.clone(),
        )?;
        Ok(Self {
            name: config.name.clone(),
            vocab_size: tokenizer.get_vocab_size(true) as u32,
            dimensions,
            max_tokens,
            max_inputs: config.max_inputs,
            truncate: config.truncate,
            pooling,
            normalize,
            tokenizer,
            truncating,
            provider,
            router,
            gate: GraphGate::new(&config.batching),
            queue,
        })
    }

    /// Tokenizes, checks limits and waits for the batched vectors.
    pub async fn embed(
        &self,
        input: EmbedInput,
        truncate: bool,
        tenant: Arc<str>,
    ) -> Result<(Embeddings, usize), InferenceError> {
        let count = match &input {
            EmbedInput::Texts(t) => t.len(),
            EmbedInput::Tokens(t) => t.len(),
        };
        if count == 0 {
            return Err(InferenceError::invalid("input must not be empty").with_param("input"));
        }
        if count > self.max_inputs {
            return Err(InferenceError::invalid(format!(
                "input has {count} items; the maximum for model {} is {}",
                self.name, self.max_inputs
            ))
            .with_param("input"));
        }
        let tokenizer = if truncate || self.truncate {
            &self.truncating
        } else {
            &self.tokenizer
        };
        let encodings: Vec<Encoding> = match input {
            EmbedInput::Texts(texts) => texts
                .into_iter()
                .map(|t| tokenizer.encode_fast(t, true))
                .collect::<tokenizers::Result<_>>()
                .map_err(|e| {
                    InferenceError::invalid(format!("tokenizing input: {e}")).with_param("input")
                })?,
            EmbedInput::Tokens(arrays) => arrays
                .into_iter()
                .map(|ids| self.wrap_token_ids(tokenizer, ids))
                .collect::<Result<_, _>>()?,
        };
        let mut prompt_tokens = 0;
        let mut sequences = Vec::with_capacity(encodings.len());
        for (index, encoding) in encodings.into_iter().enumerate() {
            let len = encoding.len();
            if len > self.max_tokens {
                return Err(InferenceError::new(
                    ErrorCode::ContextLengthExceeded,
                    format!(
                        "input[{index}] has {len} tokens; the maximum for model {} is {}",
                        self.name, self.max_tokens
                    ),
                )
                .with_param("input"));
            }
            prompt_tokens += len;
            sequences.push(Sequence {
                ids: encoding.get_ids().to_vec(),
                type_ids: encoding.get_type_ids().to_vec(),
            });
        }
        let embeddings = self.queue.embed(sequences, self.dimensions, tenant).await?;
        Ok((embeddings, prompt_tokens))
    }

    /// See `Registry::stop_workers`.
    pub fn stop(&self) {
        self.queue.stop();
    }

    /// Token-id inputs get the same special tokens a text input would ([CLS] … [SEP]
    /// for BERT), so `encode(text)` and `text` embed identically.
    fn wrap_token_ids(
        &self,
        tokenizer: &Tokenizer,
        ids: Vec<u32>,
    ) -> Result<Encoding, InferenceError> {
        if ids.is_empty() {
            return Err(
                InferenceError::invalid("a token array must not be empty").with_param("input")
            );
        }
        let vocab = self.vocab_size;
        let tokens = ids
            .into_iter()
            .map(|id| {
                if id >= vocab {
                    return Err(InferenceError::invalid(format!(
                        "token id {id} is out of the vocabulary of model {} (size {vocab})",
                        self.name
                    ))
                    .with_param("input"));
                }
                Ok(Token::new(
                    id,
                    tokenizer.id_to_token(id).unwrap_or_default(),
                    (0, 0),
                ))
            })
            .collect::<Result<Vec<_>, _>>()?;
        tokenizer
            .post_process(Encoding::from_tokens(tokens, 0), None, true)
            .map_err(|e| InferenceError::invalid(format!("token input: {e}")).with_param("input"))
    }

    pub fn signature(&self) -> &GraphSignature {
        self.provider.signature()
    }
}

fn output_width(signature: &GraphSignature) -> Option<usize> {
    signature
        .outputs
        .first()
        .and_then(|o| o.shape.last())
        .filter(|&&d| d > 0)
        .map(|&d| d as usize)
}
