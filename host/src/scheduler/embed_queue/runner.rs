//! Runs one embedding batch: pads its inputs into the graph's tensors, runs them
//! on the provider (all of it, or one lane), pools and normalises each row, and
//! hands every vector to the request it belongs to.

use std::sync::Arc;
use std::time::Instant;

use super::{Item, Placement, PoolingPlan};
use crate::error::InferenceError;
use crate::metrics::metrics;
use crate::models::pooling::normalize;
use crate::providers::router::ProviderRouter;
use crate::providers::GraphSignature;
use crate::tensor::{Tensor, TensorData};

pub(super) struct BatchRunner {
    pub(super) model: String,
    pub(super) router: Arc<ProviderRouter>,
    pub(super) signature: GraphSignature,
    pub(super) plan: PoolingPlan,
}

impl BatchRunner {
    pub(super) fn run(&self, batch: Vec<Item>, placement: Placement) {
        let started = Instant::now();
        match self.forward(&batch, placement) {
            Ok((vectors, provider)) => {
                metrics()
                    .batch_size
                    .with_label_values(&[&self.model, &provider])
                    .observe(batch.len() as f64);
                let dim = self.plan.dimensions;
                for (item, vector) in batch.iter().zip(vectors.chunks_exact(dim)) {
                    item.job.store(item.index, vector, &provider);
                }
            }
            Err(error) => {
                tracing::warn!(%error, size = batch.len(), "embedding batch failed");
                for item in &batch {
                    item.job.fail(error.clone());
                }
            }
        }
        tracing::debug!(
            size = batch.len(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            ?placement,
            "embedding batch"
        );
    }

    /// Pads the batch to its longest input, runs the graph and pools each row.
    fn forward(
        &self,
        batch: &[Item],
        placement: Placement,
    ) -> Result<(Vec<f32>, String), InferenceError> {
        let rows = batch.len();
        let width = batch
            .iter()
            .map(|i| i.sequence.ids.len())
            .max()
            .unwrap_or(0);
        let mut ids = vec![0i64; rows * width];
        let mut mask = vec![0i64; rows * width];
        let mut types = vec![0i64; rows * width];
        for (r, item) in batch.iter().enumerate() {
            let row = r * width;
            for (c, (&id, &ty)) in item
                .sequence
                .ids
                .iter()
                .zip(&item.sequence.type_ids)
                .enumerate()
            {
                ids[row + c] = id as i64;
                mask[row + c] = 1;
                types[row + c] = ty as i64;
            }
        }
        let shape = vec![rows, width];
        let mut inputs = Vec::with_capacity(3);
        for input in &self.signature.inputs {
            let data = match input.name.as_str() {
                "input_ids" => std::mem::take(&mut ids),
                "attention_mask" => std::mem::take(&mut mask),
                "token_type_ids" => std::mem::take(&mut types),
                other => {
                    return Err(InferenceError::internal(format!(
                        "embedding graph input {other:?} is not supported"
                    )))
                }
            };
            inputs.push((
                input.name.clone(),
                Tensor {
                    shape: shape.clone(),
                    data: TensorData::I64(data),
                },
            ));
        }
        let lane = match placement {
            Placement::Whole => None,
            Placement::Lane(lane) => Some(lane),
        };
        let (outputs, provider) = self.router.run_on(rows, inputs, lane)?;
        let dim = self.plan.dimensions;
        let hidden = outputs
            .iter()
            .find(|(name, _)| name == "last_hidden_state")
            .or_else(|| outputs.iter().find(|(_, t)| t.shape.len() == 3))
            .or_else(|| outputs.iter().find(|(_, t)| t.shape.len() == 2));
        let Some((
            name,
            Tensor {
                shape,
                data: TensorData::F32(values),
            },
        )) = hidden
        else {
            return Err(InferenceError::backend(
                "the embedding graph returned no float hidden states",
            ));
        };
        let mut vectors = vec![0.0f32; rows * dim];
        match shape.as_slice() {
            // Already pooled, e.g. a `sentence_embedding` output.
            [r, d] if *r == rows && *d >= dim => {
                for (out, row) in vectors.chunks_exact_mut(dim).zip(values.chunks_exact(*d)) {
                    out.copy_from_slice(&row[..dim]);
                }
            }
            [r, s, d] if *r == rows && *s == width && *d == dim => {
                for (r, (out, item)) in vectors.chunks_exact_mut(dim).zip(batch).enumerate() {
                    let len = item.sequence.ids.len().max(1);
                    self.plan.pooling.pool(
                        &values[r * width * dim..(r + 1) * width * dim],
                        dim,
                        len,
                        out,
                    );
                }
            }
            other => {
                return Err(InferenceError::backend(format!(
                    "output {name} has shape {other:?}; expected [{rows}, {width}, {dim}]"
                )))
            }
        }
        if self.plan.normalize {
            vectors.chunks_exact_mut(dim).for_each(normalize);
        }
        Ok((vectors, provider))
    }
}
