//! The host side of our WIT (`wit/inference.wit`): thin adapters from the generated
//! traits to the model registry and the scheduler. Every call is checked against the
//! calling tenant's model allow-list here, where a guest cannot get around it.

mod embeddings;
mod generation;
mod graph;
mod models;
mod tensors;
mod tokenizer;

use std::collections::HashSet;
use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker, ResourceTable};

use crate::error::{ErrorCode, InferenceError};
use crate::models::{LoadedModel, Registry};

wasmtime::component::bindgen!({
    path: "../wit",
    world: "router",
    imports: { default: async | trappable },
    with: {
        "nnhost:inference/tensors.tensor": crate::tensor::Tensor,
        "nnhost:inference/graph.graph": graph::GraphHandle,
        "nnhost:inference/graph.execution-context": graph::ExecutionContext,
        "nnhost:inference/generation.generation-stream": generation::GenerationStream,
    },
});

pub use nnhost::inference::types::{Error as WitError, ErrorCode as WitErrorCode};

/// Which models a tenant may use. A forbidden model looks exactly like an unknown one.
#[derive(Clone)]
pub struct ModelAccess {
    /// The tenant this access belongs to (metrics and usage are counted per tenant).
    pub tenant: Arc<str>,
    registry: Arc<Registry>,
    allowed: Option<Arc<HashSet<String>>>,
}

impl ModelAccess {
    pub fn new(registry: Arc<Registry>, allowed: &[String], tenant: &str) -> Self {
        let allowed = if allowed.iter().any(|m| m == "*") {
            None
        } else {
            Some(Arc::new(allowed.iter().cloned().collect()))
        };
        Self { tenant: tenant.into(), registry, allowed }
    }

    pub fn permits(&self, id: &str) -> bool {
        self.allowed.as_ref().is_none_or(|a| a.contains(id))
    }

    pub fn get(&self, id: &str) -> Result<&Arc<LoadedModel>, InferenceError> {
        self.registry
            .get(id)
            .filter(|_| self.permits(id))
            .ok_or_else(|| InferenceError::model_not_found(id))
    }

    pub fn visible(&self) -> impl Iterator<Item = &Arc<LoadedModel>> {
        self.registry.all().filter(|m| self.permits(&m.info.id))
    }
}

/// Per-request state behind the imports: the tenant's access and the guest's
/// handles to tensors, graphs and execution contexts.
pub struct ApiState {
    pub access: ModelAccess,
    pub table: ResourceTable,
}

impl ApiState {
    pub fn new(access: ModelAccess) -> Self {
        Self { access, table: ResourceTable::new() }
    }
}

pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut ApiState,
) -> wasmtime::Result<()> {
    Router::add_to_linker::<T, HasSelf<ApiState>>(linker, get)
}

impl From<InferenceError> for WitError {
    fn from(e: InferenceError) -> Self {
        let code = match e.code {
            ErrorCode::InvalidArgument => WitErrorCode::InvalidArgument,
            ErrorCode::NotFound => WitErrorCode::NotFound,
            ErrorCode::ContextLengthExceeded => WitErrorCode::ContextLengthExceeded,
            ErrorCode::Unsupported => WitErrorCode::Unsupported,
            ErrorCode::ResourceExhausted => WitErrorCode::ResourceExhausted,
            ErrorCode::Busy => WitErrorCode::Busy,
            ErrorCode::Backend => WitErrorCode::BackendError,
            ErrorCode::Internal => WitErrorCode::Internal,
        };
        WitError { code, message: e.message, param: e.param }
    }
}

impl nnhost::inference::types::Host for ApiState {}
