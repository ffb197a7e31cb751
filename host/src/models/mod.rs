//! The models this host serves: loaded once at start-up from the config, looked up
//! by name on every request.

pub mod decoder;
pub mod embedding;
pub mod layout;
pub mod pooling;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use crate::config::ModelConfig;
use crate::error::{ErrorCode, InferenceError};
use crate::providers::{GraphSignature, Provider};
use decoder::DecoderModel;
use embedding::EmbeddingModel;

/// A model's `tokenizer.json` with its fixed padding and truncation turned off: the
/// queues pad per batch (MiniLM's file pads every input to 128 tokens), and cutting
/// long inputs is an explicit choice of the caller.
pub fn load_tokenizer(path: &std::path::Path) -> Result<tokenizers::Tokenizer> {
    let mut tokenizer = tokenizers::Tokenizer::from_file(path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(None)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(tokenizer)
}

/// A JSON file of a model folder; `None` when the folder does not have it.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(
    path: &std::path::Path,
) -> Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(
            serde_json::from_slice(&bytes)
                .with_context(|| format!("parsing {}", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    Embedding,
    Chat,
    Completion,
}

impl ModelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Embedding => "embedding",
            ModelKind::Chat => "chat",
            ModelKind::Completion => "completion",
        }
    }
}

/// What the `models` interface and `/v1/models` say about a model.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub id: String,
    pub kind: ModelKind,
    pub owned_by: String,
    pub created: u64,
    pub context_length: u32,
    pub dimensions: Option<u32>,
    pub max_batch_size: u32,
    pub chat_template: Option<String>,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub stop_tokens: Vec<String>,
    pub metadata: Vec<(String, String)>,
}

// One value per configured model, built once and never moved on a hot path.
#[allow(clippy::large_enum_variant)]
pub enum Model {
    Embedding(EmbeddingModel),
    Decoder(DecoderModel),
}

pub struct LoadedModel {
    pub info: ModelInfo,
    pub model: Model,
}

impl LoadedModel {
    pub fn embedding(&self) -> Option<&EmbeddingModel> {
        match &self.model {
            Model::Embedding(m) => Some(m),
            _ => None,
        }
    }

    pub fn decoder(&self) -> Option<&DecoderModel> {
        match &self.model {
            Model::Decoder(m) => Some(m),
            _ => None,
        }
    }

    /// The ONNX graph behind the model, for the WASI-NN style `graph` interface.
    /// Decoders keep their session on their generation worker and are not exposed.
    pub fn graph(&self) -> Result<(Arc<dyn Provider>, &GraphSignature), InferenceError> {
        match &self.model {
            Model::Embedding(m) => Ok((m.provider.clone() as Arc<dyn Provider>, m.signature())),
            Model::Decoder(_) => Err(InferenceError::new(
                ErrorCode::Unsupported,
                format!(
                    "model {} is a decoder; use the generation interface",
                    self.info.id
                ),
            )),
        }
    }

    pub fn tokenizer(&self) -> &tokenizers::Tokenizer {
        match &self.model {
            Model::Embedding(m) => &m.tokenizer,
            Model::Decoder(m) => &m.tokenizer,
        }
    }
}

#[derive(Default)]
pub struct Registry {
    models: Vec<Arc<LoadedModel>>,
    by_id: HashMap<String, Arc<LoadedModel>>,
}

impl Registry {
    pub fn load(configs: &[ModelConfig]) -> Result<Self> {
        let mut registry = Registry::default();
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        for config in configs {
            let started = std::time::Instant::now();
            let kind = config
                .kind
                .as_deref()
                .or_else(|| decoder::detect_kind(&config.path))
                .unwrap_or("embedding");
            let loaded = match kind {
                "embedding" => Self::embedding_model(config, created),
                "chat" | "completion" => Self::decoder_model(config, created),
                other => anyhow::bail!("kind {other:?} (expected embedding, chat or completion)"),
            }
            .with_context(|| format!("model {:?}", config.name))?;
            tracing::info!(model = %config.name, kind = loaded.info.kind.as_str(), context_length = loaded.info.context_length,
                elapsed_ms = started.elapsed().as_millis() as u64, "model loaded");
            registry.insert(loaded);
        }
        Ok(registry)
    }

    fn decoder_model(config: &ModelConfig, created: u64) -> Result<LoadedModel> {
        let model = DecoderModel::load(config)?;
        let kind = if model.chat_template.is_some()
            && !model.base_model
            && config.kind.as_deref() != Some("completion")
        {
            ModelKind::Chat
        } else {
            ModelKind::Completion
        };
        let onnx = model
            .onnx
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let info = ModelInfo {
            id: config.name.clone(),
            kind,
            owned_by: "nnhost".into(),
            created,
            context_length: model.context_length as u32,
            dimensions: None,
            max_batch_size: 1,
            chat_template: model.chat_template.clone(),
            bos_token: model.bos_token.clone(),
            eos_token: model.eos_token.clone(),
            stop_tokens: model.stop_tokens.clone(),
            metadata: vec![
                ("base_model".into(), model.base_model.to_string()),
                ("onnx".into(), onnx),
                ("provider".into(), crate::providers::cpu::label()),
            ],
        };
        Ok(LoadedModel {
            info,
            model: Model::Decoder(model),
        })
    }

    fn embedding_model(config: &ModelConfig, created: u64) -> Result<LoadedModel> {
        {
            let model = EmbeddingModel::load(config)?;
            let info = ModelInfo {
                id: config.name.clone(),
                kind: ModelKind::Embedding,
                owned_by: "nnhost".into(),
                created,
                context_length: model.max_tokens as u32,
                dimensions: Some(model.dimensions as u32),
                max_batch_size: model.max_inputs as u32,
                chat_template: None,
                bos_token: None,
                eos_token: None,
                stop_tokens: Vec::new(),
                metadata: vec![
                    ("pooling".into(), model.pooling.as_str().into()),
                    ("normalize".into(), model.normalize.to_string()),
                    ("provider".into(), crate::providers::cpu::label()),
                ],
            };
            Ok(LoadedModel {
                info,
                model: Model::Embedding(model),
            })
        }
    }

    fn insert(&mut self, model: LoadedModel) {
        let model = Arc::new(model);
        self.by_id.insert(model.info.id.clone(), model.clone());
        self.models.push(model);
    }

    pub fn get(&self, id: &str) -> Option<&Arc<LoadedModel>> {
        self.by_id.get(id)
    }

    pub fn all(&self) -> impl Iterator<Item = &Arc<LoadedModel>> {
        self.models.iter()
    }
}
