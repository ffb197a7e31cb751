//! The host side of our WIT (`wit/inference.wit`): thin adapters from the generated
//! traits to the model registry and the scheduler. Every call is checked against the
//! calling tenant's model allow-list here, where a guest cannot get around it.

mod embeddings;
mod generation;
mod graph;
mod models;
mod store;
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
    pub usage: Arc<crate::tenants::usage::Usage>,
    registry: Arc<Registry>,
    allowed: Option<Arc<HashSet<String>>>,
    /// The tenant's key-value store and its size limit in bytes.
    store: Arc<crate::tenants::store::KvStore>,
    store_bytes: usize,
}

impl ModelAccess {
    pub fn new(
        registry: Arc<Registry>,
        allowed: &[String],
        tenant: &str,
        usage: Arc<crate::tenants::usage::Usage>,
    ) -> Self {
        let allowed = if allowed.iter().any(|m| m == "*") {
            None
        } else {
            Some(Arc::new(allowed.iter().cloned().collect()))
        };
        Self {
            tenant: tenant.into(),
            usage,
            registry,
            allowed,
            store: Default::default(),
            store_bytes: 0,
        }
    }

    /// Gives the access a key-value store holding up to `bytes`.
    pub fn with_store(mut self, store: Arc<crate::tenants::store::KvStore>, bytes: usize) -> Self {
        self.store = store;
        self.store_bytes = bytes;
        self
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
    /// Bytes this request may still move through host calls.
    host_bytes_left: usize,
    host_bytes_limit: usize,
    /// Live handles and the most the guest may hold.
    resources: usize,
    max_resources: usize,
    /// Time spent in inference host calls since the sandbox last looked: waiting for
    /// the host is not the guest's CPU time.
    pub waited: std::time::Duration,
    /// When a generation the guest waits on is ended as if by `max_tokens`: shortly
    /// before the request's time limit, so the guest can still answer with the text
    /// so far instead of being cut off (see `generation::next_event`).
    pub generation_deadline: Option<tokio::time::Instant>,
}

impl ApiState {
    pub fn new(access: ModelAccess, max_host_bytes: usize, max_resources: usize) -> Self {
        Self {
            access,
            table: ResourceTable::new(),
            host_bytes_left: max_host_bytes,
            host_bytes_limit: max_host_bytes,
            resources: 0,
            max_resources,
            waited: std::time::Duration::ZERO,
            generation_deadline: None,
        }
    }

    /// Counts bytes crossing the boundary; past the tenant's budget the call fails
    /// with `resource-exhausted` (the guest can still answer its client).
    pub fn charge(&mut self, bytes: usize) -> Result<(), InferenceError> {
        if bytes > self.host_bytes_left {
            self.host_bytes_left = 0;
            crate::tenants::usage::Usage::add(&self.access.usage.limit_hits, 1);
            return Err(InferenceError::new(
                ErrorCode::ResourceExhausted,
                format!(
                    "this request moved more than {} bytes through host calls",
                    self.host_bytes_limit
                ),
            ));
        }
        self.host_bytes_left -= bytes;
        Ok(())
    }

    /// Stores a new handle; a guest holding too many is stopped (a trap ends only
    /// this request).
    pub fn push<T: Send + 'static>(
        &mut self,
        value: T,
    ) -> wasmtime::Result<wasmtime::component::Resource<T>> {
        if self.resources >= self.max_resources {
            crate::tenants::usage::Usage::add(&self.access.usage.limit_hits, 1);
            return Err(wasmtime::Error::msg(format!(
                "the guest holds more than {} live resources (tensors, graphs, streams)",
                self.max_resources
            )));
        }
        self.resources += 1;
        Ok(self.table.push(value)?)
    }

    pub fn delete<T: 'static>(
        &mut self,
        handle: wasmtime::component::Resource<T>,
    ) -> wasmtime::Result<T> {
        self.resources = self.resources.saturating_sub(1);
        Ok(self.table.delete(handle)?)
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
        WitError {
            code,
            message: e.message,
            param: e.param,
        }
    }
}

impl nnhost::inference::types::Host for ApiState {}
