//! The seam between the routes and the nnhost imports: routes talk to a [`Host`],
//! the component passes [`WitHost`] (the real imports), tests pass a fake.

use crate::bindings::nnhost::inference::{embeddings, models, types};

pub use embeddings::{EmbedInput, EmbedOptions, EmbeddingBatch};
pub use models::{ModelInfo, ModelKind};
pub use types::{Error as HostError, ErrorCode};

/// What the routes need from the host.
pub trait Host {
    fn list_models(&self) -> Vec<ModelInfo>;
    fn get_model(&self, id: &str) -> Option<ModelInfo>;
    fn embed(
        &self,
        model: &str,
        input: &EmbedInput,
        options: EmbedOptions,
    ) -> Result<EmbeddingBatch, HostError>;
}

/// The real host, through the component's `nnhost:inference` imports.
pub struct WitHost;

impl Host for WitHost {
    fn list_models(&self) -> Vec<ModelInfo> {
        models::list_models()
    }

    fn get_model(&self, id: &str) -> Option<ModelInfo> {
        models::get_model(id)
    }

    fn embed(
        &self,
        model: &str,
        input: &EmbedInput,
        options: EmbedOptions,
    ) -> Result<EmbeddingBatch, HostError> {
        embeddings::embed(model, input, options)
    }
}
