//! Where graphs actually run. A provider takes named tensors in and gives named
//! tensors back; the scheduler decides which provider runs a batch. Like TEI's
//! `Backend`, the trait is small so a remote provider can stand in for a local one.

pub mod cpu;
pub mod ort_env;
pub mod remote;
pub mod router;

use thiserror::Error;

use crate::tensor::{DType, Tensor};

pub type NamedTensors = Vec<(String, Tensor)>;

#[derive(Debug, Error)]
pub enum ProviderError {
    /// The inputs do not fit the graph (names, dtypes, shapes): the caller's fault.
    #[error("{0}")]
    InvalidInput(String),
    /// The backend failed to run a valid request.
    #[error("{0}")]
    Backend(String),
}

/// One graph input or output; `-1` marks a dynamic dimension.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<i64>,
}

#[derive(Debug, Clone, Default)]
pub struct GraphSignature {
    pub inputs: Vec<TensorInfo>,
    pub outputs: Vec<TensorInfo>,
}

pub trait Provider: Send + Sync {
    /// What responses and metrics call this provider, e.g. `cpu-x86_64`.
    fn name(&self) -> &str;
    /// Runs the graph once. Blocks: call it from a worker thread, never from an async task.
    fn run(&self, inputs: NamedTensors) -> Result<NamedTensors, ProviderError>;
}
