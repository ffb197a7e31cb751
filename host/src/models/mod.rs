//! The models this host serves: loaded once at start-up from the config, looked up
//! by name on every request.

pub mod embedding;
pub mod layout;
pub mod pooling;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};

use crate::config::ModelConfig;
use crate::providers::{GraphSignature, Provider};
use embedding::EmbeddingModel;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    Embedding,
    Chat,
    Completion,
    RawGraph,
}

impl ModelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Embedding => "embedding",
            ModelKind::Chat => "chat",
            ModelKind::Completion => "completion",
            ModelKind::RawGraph => "raw-graph",
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

pub enum Model {
    Embedding(EmbeddingModel),
}

pub struct LoadedModel {
    pub info: ModelInfo,
    pub model: Model,
}

impl LoadedModel {
    pub fn embedding(&self) -> Option<&EmbeddingModel> {
        match &self.model {
            Model::Embedding(m) => Some(m),
        }
    }

    /// The ONNX graph behind the model, for the WASI-NN style `graph` interface.
    pub fn graph(&self) -> (Arc<dyn Provider>, &GraphSignature) {
        match &self.model {
            Model::Embedding(m) => (m.provider.clone() as Arc<dyn Provider>, m.signature()),
        }
    }

    pub fn tokenizer(&self) -> &tokenizers::Tokenizer {
        match &self.model {
            Model::Embedding(m) => &m.tokenizer,
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
        let created = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        for config in configs {
            let started = std::time::Instant::now();
            let model = EmbeddingModel::load(config).with_context(|| format!("model {:?}", config.name))?;
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
            tracing::info!(model = %config.name, dimensions = model.dimensions, max_tokens = model.max_tokens,
                elapsed_ms = started.elapsed().as_millis() as u64, "model loaded");
            registry.insert(LoadedModel { info, model: Model::Embedding(model) });
        }
        Ok(registry)
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
