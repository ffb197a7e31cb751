//! The models this host serves: loaded once at start-up from the config, looked up
//! by name on every request.

pub mod decoder;
pub mod embedding;
pub mod graph;
pub mod graph_gate;
pub mod layout;
pub mod pooling;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use crate::config::ModelConfig;
use crate::error::{ErrorCode, InferenceError};
use crate::providers::{GraphSignature, NamedTensors, Provider, ProviderError};
use decoder::DecoderModel;
use embedding::EmbeddingModel;
use graph::GraphModel;

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

/// What `/v1/models` metadata calls a model's ONNX file.
fn file_name(path: &std::path::Path) -> String {
    path.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    Embedding,
    Chat,
    Completion,
    /// A bare graph, reachable through the `graph` interface and `/v2` only.
    RawGraph,
}

impl ModelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Embedding => "embedding",
            ModelKind::Chat => "chat",
            ModelKind::Completion => "completion",
            ModelKind::RawGraph => "raw_graph",
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
    Graph(GraphModel),
}

/// Runs a model's graph for the `graph` interface and `/v2`.
pub enum GraphRunner<'a> {
    /// An embedding model's CPU session (its remote takes the embedding queue's batches).
    Local(&'a EmbeddingModel),
    /// A graph model: local or remote, as its router decides per batch.
    Routed(&'a GraphModel),
}

impl GraphRunner<'_> {
    /// Blocks: call it from a worker thread. Returns the outputs and the provider that ran them.
    pub fn run(&self, inputs: NamedTensors) -> Result<(NamedTensors, String), ProviderError> {
        match self {
            GraphRunner::Local(model) => {
                model.signature().check_inputs(&inputs)?;
                model.gate.check_size(model.signature(), &inputs)?;
                Ok((model.provider.run(inputs)?, model.provider.name().into()))
            }
            GraphRunner::Routed(model) => model.run(inputs),
        }
    }
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

    /// The router of a model with a local and maybe a remote provider.
    pub fn router(&self) -> Option<&Arc<crate::providers::router::ProviderRouter>> {
        match &self.model {
            Model::Embedding(m) => Some(&m.router),
            Model::Graph(m) => Some(&m.router),
            Model::Decoder(_) => None,
        }
    }

    /// The ONNX graph behind the model, for the WASI-NN style `graph` interface.
    /// Decoders keep their session on their generation worker and are not exposed.
    pub fn graph(&self) -> Result<(GraphRunner<'_>, &GraphSignature), InferenceError> {
        match &self.model {
            Model::Embedding(m) => Ok((GraphRunner::Local(m), m.signature())),
            Model::Graph(m) => Ok((GraphRunner::Routed(m), m.signature())),
            Model::Decoder(_) => Err(self.no_graph()),
        }
    }

    /// Waits for a turn to run the graph directly (`/v2`, `compute`), tenants in
    /// turn: see `graph_gate`.
    pub async fn graph_turn(&self, tenant: &Arc<str>) -> Result<graph_gate::Turn, InferenceError> {
        match &self.model {
            Model::Embedding(m) => m.gate.turn(tenant).await,
            Model::Graph(m) => m.gate.turn(tenant).await,
            Model::Decoder(_) => Err(self.no_graph()),
        }
    }

    fn no_graph(&self) -> InferenceError {
        InferenceError::new(
            ErrorCode::Unsupported,
            format!(
                "model {} is a decoder; use the generation interface",
                self.info.id
            ),
        )
    }

    /// The model's tokenizer; a graph model has one only when its folder does.
    pub fn tokenizer(&self) -> Result<&tokenizers::Tokenizer, InferenceError> {
        match &self.model {
            Model::Embedding(m) => Ok(&m.tokenizer),
            Model::Decoder(m) => Ok(&m.tokenizer),
            Model::Graph(m) => m.tokenizer.as_ref().ok_or_else(|| {
                InferenceError::new(
                    ErrorCode::Unsupported,
                    format!(
                        "model {} is a bare graph without a tokenizer.json",
                        self.info.id
                    ),
                )
            }),
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
                .or_else(|| config.path.is_file().then_some("graph"))
                .or_else(|| decoder::detect_kind(&config.path))
                .unwrap_or("embedding");
            let loaded = match kind {
                "embedding" => Self::embedding_model(config, created),
                "chat" | "completion" => Self::decoder_model(config, created),
                "graph" | "raw_graph" => Self::graph_model(config, created),
                other => {
                    anyhow::bail!("kind {other:?} (expected embedding, chat, completion or graph)")
                }
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
        let onnx = file_name(&model.onnx);
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

    fn graph_model(config: &ModelConfig, created: u64) -> Result<LoadedModel> {
        let model = GraphModel::load(config)?;
        let describe = |list: &[crate::providers::TensorInfo]| {
            list.iter()
                .map(|t| format!("{}:{}{:?}", t.name, t.dtype.v2_name(), t.shape))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let signature = model.signature();
        // A static leading dimension is the graph's batch size; a dynamic one takes
        // what one run may hold (`RunLimits`).
        let max_batch_size = match signature.inputs.first().and_then(|i| i.shape.first()) {
            Some(&rows) if rows > 0 => rows as u32,
            _ => config.batching.max_batch_inputs as u32,
        };
        let onnx = file_name(&model.onnx);
        let info = ModelInfo {
            id: config.name.clone(),
            kind: ModelKind::RawGraph,
            owned_by: "nnhost".into(),
            created,
            context_length: config.max_tokens.unwrap_or(0) as u32,
            dimensions: None,
            max_batch_size,
            chat_template: None,
            bos_token: None,
            eos_token: None,
            stop_tokens: Vec::new(),
            metadata: vec![
                ("onnx".into(), onnx),
                ("inputs".into(), describe(&signature.inputs)),
                ("outputs".into(), describe(&signature.outputs)),
                ("tokenizer".into(), model.tokenizer.is_some().to_string()),
                ("provider".into(), crate::providers::cpu::label()),
            ],
        };
        Ok(LoadedModel {
            info,
            model: Model::Graph(model),
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

    /// Stops every model's worker threads after the batch or step they are running.
    /// Called at exit: guests still holding the registry (and so keeping it alive)
    /// must not leave a graph run going while ONNX Runtime is torn down.
    pub fn stop_workers(&self) {
        for model in &self.models {
            match &model.model {
                Model::Embedding(m) => m.stop(),
                Model::Decoder(m) => m.stop(),
                Model::Graph(_) => {}
            }
        }
    }
}
