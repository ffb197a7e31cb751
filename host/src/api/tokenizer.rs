use super::nnhost::inference::tokenizer::Host;
use super::{ApiState, WitError};
use crate::error::InferenceError;

impl Host for ApiState {
    async fn encode(
        &mut self,
        model: String,
        text: String,
        add_special_tokens: bool,
    ) -> wasmtime::Result<Result<Vec<u32>, WitError>> {
        if let Err(e) = self.charge(text.len()) {
            return Ok(Err(e.into()));
        }
        Ok(self
            .encode_ids(&model, text, add_special_tokens)
            .map_err(Into::into))
    }

    async fn decode(
        &mut self,
        model: String,
        tokens: Vec<u32>,
        skip_special_tokens: bool,
    ) -> wasmtime::Result<Result<String, WitError>> {
        let result = self.access.get(&model).and_then(|m| {
            let tokenizer = m.tokenizer()?;
            // The tokenizer would skip unknown ids silently: a client sending them is told.
            if let Some(bad) = tokens.iter().find(|&&t| tokenizer.id_to_token(t).is_none()) {
                return Err(InferenceError::invalid(format!(
                    "token id {bad} is not in the vocabulary of model {model}"
                ))
                .with_param("tokens"));
            }
            tokenizer
                .decode(&tokens, skip_special_tokens)
                .map_err(|e| InferenceError::invalid(format!("decoding tokens: {e}")))
        });
        Ok(result.map_err(Into::into))
    }

    async fn count(
        &mut self,
        model: String,
        text: String,
    ) -> wasmtime::Result<Result<u32, WitError>> {
        if let Err(e) = self.charge(text.len()) {
            return Ok(Err(e.into()));
        }
        Ok(self
            .encode_ids(&model, text, true)
            .map(|ids| ids.len() as u32)
            .map_err(Into::into))
    }
}

impl ApiState {
    fn encode_ids(
        &self,
        model: &str,
        text: String,
        add_special_tokens: bool,
    ) -> Result<Vec<u32>, InferenceError> {
        let model = self.access.get(model)?;
        // A decoder's prompts get BOS the way generation adds it (Gemma's GGUF
        // tokenizer does not add it by itself), so counts match what is generated from.
        if let Some(decoder) = model.decoder() {
            return decoder.encode_prompt(&text, add_special_tokens);
        }
        let encoding = model
            .tokenizer()?
            .encode_fast(text, add_special_tokens)
            .map_err(|e| InferenceError::invalid(format!("tokenizing: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }
}
