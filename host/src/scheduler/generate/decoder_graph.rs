//! One decoder ONNX graph in the Hugging Face layout (`input_ids`, `attention_mask`,
//! `position_ids`, `past_key_values.N.key/value` → `logits`, `present.N.key/value`).
//! The KV cache stays inside ORT values between steps: what a step outputs as
//! `present` is fed back as `past` without a copy through Rust.

use std::path::Path;

use anyhow::{bail, Context, Result};
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor};

use crate::config::CpuOptions;
use crate::providers::cpu;

#[derive(Debug, Clone, Copy)]
pub struct DecoderShape {
    pub layers: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

pub struct DecoderGraph {
    session: Session,
    shape: DecoderShape,
    has_position_ids: bool,
    past_names: Vec<String>,
    present_names: Vec<String>,
}

/// The KV cache of one sequence: `present` values of the last step, in layer order.
pub struct KvCache {
    values: Vec<DynValue>,
    pub len: usize,
}

impl DecoderGraph {
    pub fn load(path: &Path, options: &CpuOptions, shape: DecoderShape) -> Result<Self> {
        let session = cpu::build_session(path, options)
            .with_context(|| format!("loading {}", path.display()))?;
        let inputs: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
        for required in ["input_ids", "attention_mask"] {
            if !inputs.contains(&required) {
                bail!(
                    "{}: the decoder graph has no {required} input",
                    path.display()
                );
            }
        }
        let has_position_ids = inputs.contains(&"position_ids");
        let mut past_names = Vec::new();
        let mut present_names = Vec::new();
        for layer in 0..shape.layers {
            for kind in ["key", "value"] {
                let past = format!("past_key_values.{layer}.{kind}");
                let present = format!("present.{layer}.{kind}");
                if !inputs.contains(&past.as_str()) {
                    bail!(
                        "{}: missing input {past} (config says {} layers)",
                        path.display(),
                        shape.layers
                    );
                }
                if !session.outputs().iter().any(|o| o.name() == present) {
                    bail!("{}: missing output {present}", path.display());
                }
                past_names.push(past);
                present_names.push(present);
            }
        }
        Ok(Self {
            session,
            shape,
            has_position_ids,
            past_names,
            present_names,
        })
    }

    pub fn empty_cache(&self) -> Result<KvCache> {
        let DecoderShape {
            kv_heads, head_dim, ..
        } = self.shape;
        let values =
            (0..self.past_names.len())
                .map(|_| {
                    Ok(Tensor::<f32>::from_array((
                        [1usize, kv_heads, 0, head_dim],
                        Vec::<f32>::new(),
                    ))?
                    .into_dyn())
                })
                .collect::<ort::Result<_>>()?;
        Ok(KvCache { values, len: 0 })
    }

    /// Runs `ids` after what `cache` holds; returns the logits of the last position.
    pub fn forward(&mut self, ids: &[u32], cache: &mut KvCache) -> Result<Vec<f32>> {
        let n = ids.len();
        let total = cache.len + n;
        let mut inputs: Vec<(String, SessionInputValue<'_>)> =
            Vec::with_capacity(3 + self.past_names.len());
        let input_ids: Vec<i64> = ids.iter().map(|&t| t as i64).collect();
        inputs.push((
            "input_ids".into(),
            Tensor::from_array(([1usize, n], input_ids))?
                .into_dyn()
                .into(),
        ));
        inputs.push((
            "attention_mask".into(),
            Tensor::from_array(([1usize, total], vec![1i64; total]))?
                .into_dyn()
                .into(),
        ));
        if self.has_position_ids {
            let positions: Vec<i64> = (cache.len as i64..total as i64).collect();
            inputs.push((
                "position_ids".into(),
                Tensor::from_array(([1usize, n], positions))?
                    .into_dyn()
                    .into(),
            ));
        }
        for (name, value) in self.past_names.iter().zip(cache.values.drain(..)) {
            inputs.push((name.clone(), value.into()));
        }
        let mut outputs = self.session.run(inputs)?;
        let logits = outputs
            .remove("logits")
            .context("the decoder graph has no logits output")?;
        let (shape, data) = logits.try_extract_tensor::<f32>()?;
        let vocab = *shape.last().context("logits without dimensions")? as usize;
        let last = data.len().checked_sub(vocab).context("empty logits")?;
        let last_logits = data[last..].to_vec();
        for name in &self.present_names {
            cache.values.push(
                outputs
                    .remove(name.as_str())
                    .with_context(|| format!("missing output {name}"))?,
            );
        }
        cache.len = total;
        Ok(last_logits)
    }
}
