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

impl TensorInfo {
    /// Whether `shape` is one this tensor may have.
    pub fn shape_fits(&self, shape: &[usize]) -> bool {
        self.shape.len() == shape.len()
            && self
                .shape
                .iter()
                .zip(shape)
                .all(|(&e, &a)| e < 0 || e as usize == a)
    }
}

#[derive(Debug, Clone, Default)]
pub struct GraphSignature {
    pub inputs: Vec<TensorInfo>,
    pub outputs: Vec<TensorInfo>,
}

impl GraphSignature {
    /// Every input named once, known to the graph, of its dtype and shape (`-1` = any).
    pub fn check_inputs(&self, inputs: &NamedTensors) -> Result<(), ProviderError> {
        for (i, (name, tensor)) in inputs.iter().enumerate() {
            let Some(expected) = self.inputs.iter().find(|e| &e.name == name) else {
                return Err(ProviderError::InvalidInput(format!(
                    "the graph has no input named {name:?}"
                )));
            };
            if inputs[..i].iter().any(|(n, _)| n == name) {
                return Err(ProviderError::InvalidInput(format!(
                    "input {name:?} is given twice"
                )));
            }
            check_input(expected, tensor)?;
        }
        if let Some(missing) = self
            .inputs
            .iter()
            .find(|e| !inputs.iter().any(|(n, _)| n == &e.name))
        {
            return Err(ProviderError::InvalidInput(format!(
                "missing input {:?}",
                missing.name
            )));
        }
        Ok(())
    }
}

fn check_input(expected: &TensorInfo, tensor: &Tensor) -> Result<(), ProviderError> {
    if expected.dtype != tensor.dtype() {
        return Err(ProviderError::InvalidInput(format!(
            "input {:?} must be {:?}, got {:?}",
            expected.name,
            expected.dtype,
            tensor.dtype()
        )));
    }
    if !expected.shape_fits(&tensor.shape) {
        return Err(ProviderError::InvalidInput(format!(
            "input {:?} must have shape {:?} (-1 = any), got {:?}",
            expected.name, expected.shape, tensor.shape
        )));
    }
    Ok(())
}

pub trait Provider: Send + Sync {
    /// What responses and metrics call this provider, e.g. `cpu-x86_64`.
    fn name(&self) -> &str;
    /// Runs the graph once. Blocks: call it from a worker thread, never from an async task.
    fn run(&self, inputs: NamedTensors) -> Result<NamedTensors, ProviderError>;
}
