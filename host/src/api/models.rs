use super::nnhost::inference::models::{Host, ModelInfo, ModelKind};
use super::ApiState;
use crate::models::{self, LoadedModel};

impl From<&LoadedModel> for ModelInfo {
    fn from(model: &LoadedModel) -> Self {
        let info = &model.info;
        ModelInfo {
            id: info.id.clone(),
            kind: match info.kind {
                models::ModelKind::Embedding => ModelKind::Embedding,
                models::ModelKind::Chat => ModelKind::Chat,
                models::ModelKind::Completion => ModelKind::Completion,
                models::ModelKind::RawGraph => ModelKind::RawGraph,
            },
            owned_by: info.owned_by.clone(),
            created: info.created,
            context_length: info.context_length,
            dimensions: info.dimensions,
            max_batch_size: info.max_batch_size,
            chat_template: info.chat_template.clone(),
            bos_token: info.bos_token.clone(),
            eos_token: info.eos_token.clone(),
            stop_tokens: info.stop_tokens.clone(),
            metadata: info.metadata.clone(),
        }
    }
}

impl Host for ApiState {
    async fn list_models(&mut self) -> wasmtime::Result<Vec<ModelInfo>> {
        Ok(self
            .access
            .visible()
            .map(|m| ModelInfo::from(&**m))
            .collect())
    }

    async fn get_model(&mut self, id: String) -> wasmtime::Result<Option<ModelInfo>> {
        Ok(self.access.get(&id).ok().map(|m| ModelInfo::from(&**m)))
    }
}
