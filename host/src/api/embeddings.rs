use super::nnhost::inference::embeddings::{EmbedInput, EmbedOptions, EmbeddingBatch, Host};
use super::{ApiState, WitError};
use crate::error::InferenceError;
use crate::models::embedding;

impl Host for ApiState {
    async fn embed(
        &mut self,
        model: String,
        input: EmbedInput,
        options: EmbedOptions,
    ) -> wasmtime::Result<Result<EmbeddingBatch, WitError>> {
        let input_bytes = match &input {
            EmbedInput::Texts(t) => t.iter().map(|s| s.len() + 8).sum(),
            EmbedInput::Tokens(t) => t.iter().map(|a| a.len() * 4 + 8).sum(),
        };
        if let Err(e) = self.charge(input_bytes) {
            return Ok(Err(e.into()));
        }
        let waiting = crate::sandbox::WaitingForInference::start();
        let result = async {
            let loaded = self.access.get(&model)?;
            let model = loaded.embedding().ok_or_else(|| {
                InferenceError::invalid(format!("model {model} is not an embedding model"))
                    .with_param("model")
            })?;
            let input = match input {
                EmbedInput::Texts(t) => embedding::EmbedInput::Texts(t),
                EmbedInput::Tokens(t) => embedding::EmbedInput::Tokens(t),
            };
            let (embeddings, prompt_tokens) = model
                .embed(input, options.truncate, self.access.tenant.clone())
                .await?;
            crate::metrics::metrics()
                .tokens
                .with_label_values(&[&*self.access.tenant, &model.name, "prompt"])
                .inc_by(prompt_tokens as u64);
            crate::tenants::usage::Usage::add(
                &self.access.usage.prompt_tokens,
                prompt_tokens as u64,
            );
            Ok::<_, InferenceError>(EmbeddingBatch {
                dimensions: embeddings.dimensions as u32,
                data: embeddings.data,
                prompt_tokens: prompt_tokens as u32,
                provider: embeddings.provider,
            })
        }
        .await;
        // Waiting for the embedding queue is not the guest's CPU time.
        self.waited += waiting.end();
        let result = result.and_then(|batch| self.charge(batch.data.len() * 4).map(|_| batch));
        Ok(result.map_err(Into::into))
    }
}
