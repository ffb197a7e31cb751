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

/// The largest run a caller may ask of a graph through `/v2` or a guest's
/// `compute`: what one batch of the model's queue may hold. A run's memory grows
/// with its rows and, through attention, with the square of its sequence: one
/// 1.5 MB `/v2` request of 128 × 512 tokens made ONNX Runtime take 5.7 GB more,
/// which its arena then kept.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunLimits {
    /// Rows of an input whose leading dimension is dynamic (`batching.max_batch_inputs`).
    pub max_rows: usize,
    /// Elements of an integer input with two dynamic dimensions, i.e. a batch of
    /// token sequences (`batching.max_batch_tokens`).
    pub max_tokens: usize,
}

impl GraphSignature {
    /// Whether the inputs stay within `limits`; only the dimensions the graph
    /// leaves dynamic are the caller's choice, so only those are limited.
    pub fn check_run_size(
        &self,
        inputs: &NamedTensors,
        limits: RunLimits,
    ) -> Result<(), ProviderError> {
        for (name, tensor) in inputs {
            let Some(expected) = self.inputs.iter().find(|e| &e.name == name) else {
                continue;
            };
            let rows = tensor.shape.first().copied().unwrap_or(1);
            if expected.shape.first().is_some_and(|&d| d < 0) && rows > limits.max_rows {
                return Err(ProviderError::InvalidInput(format!(
                    "input {name:?} has {rows} rows; one run of this model takes at most {} \
                     (batching.max_batch_inputs): split the batch",
                    limits.max_rows
                )));
            }
            let token_batch = expected.shape.len() == 2
                && expected.shape.iter().all(|&d| d < 0)
                && matches!(expected.dtype, DType::I64 | DType::I32);
            let elements: usize = tensor.shape.iter().product();
            if token_batch && elements > limits.max_tokens {
                return Err(ProviderError::InvalidInput(format!(
                    "input {name:?} holds {elements} tokens ({rows} × {}); one run of this model \
                     takes at most {} (batching.max_batch_tokens): split the batch",
                    tensor.shape[1], limits.max_tokens
                )));
            }
        }
        Ok(())
    }

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
    /// Sessions that run batches side by side, each on its share of the cores; 1 = none.
    fn lanes(&self) -> usize {
        1
    }
    /// Runs the graph once on lane `lane` (below [`Provider::lanes`]), beside runs on
    /// the other lanes.
    fn run_on_lane(
        &self,
        lane: usize,
        inputs: NamedTensors,
    ) -> Result<NamedTensors, ProviderError> {
        let _ = lane;
        self.run(inputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::TensorData;

    fn info(name: &str, dtype: DType, shape: &[i64]) -> TensorInfo {
        TensorInfo {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
        }
    }

    fn ids(rows: usize, len: usize) -> NamedTensors {
        let t = Tensor::new(vec![rows, len], TensorData::I64(vec![1; rows * len])).unwrap();
        vec![("input_ids".into(), t)]
    }

    const LIMITS: RunLimits = RunLimits {
        max_rows: 4,
        max_tokens: 64,
    };

    #[test]
    fn a_run_is_limited_in_rows_and_in_tokens() {
        let sig = GraphSignature {
            inputs: vec![info("input_ids", DType::I64, &[-1, -1])],
            outputs: vec![],
        };
        assert!(sig.check_run_size(&ids(4, 16), LIMITS).is_ok());
        let rows = sig.check_run_size(&ids(5, 2), LIMITS).unwrap_err();
        assert!(rows.to_string().contains("max_batch_inputs"), "{rows}");
        let tokens = sig.check_run_size(&ids(4, 17), LIMITS).unwrap_err();
        assert!(tokens.to_string().contains("max_batch_tokens"), "{tokens}");
    }

    #[test]
    fn only_the_dimensions_the_graph_leaves_open_are_limited() {
        // A static batch larger than the limit is the graph's own choice.
        let fixed_rows = GraphSignature {
            inputs: vec![info("input_ids", DType::I64, &[8, -1])],
            outputs: vec![],
        };
        assert!(fixed_rows.check_run_size(&ids(8, 8), LIMITS).is_ok());
        // Floats with two open dimensions are not token batches.
        let floats = GraphSignature {
            inputs: vec![info("x", DType::F32, &[-1, -1])],
            outputs: vec![],
        };
        let x = Tensor::new(vec![2, 100], TensorData::F32(vec![0.0; 200])).unwrap();
        assert!(floats
            .check_run_size(&vec![("x".into(), x)], LIMITS)
            .is_ok());
    }
}
