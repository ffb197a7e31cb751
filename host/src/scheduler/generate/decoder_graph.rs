//! One decoder ONNX graph in the Hugging Face layout (`input_ids`, `attention_mask`,
//! optional `position_ids`, `past_key_values.N.key/value` → `logits`, `present.N.key/value`).
//! The KV cache stays inside ORT values between steps: what a step outputs as
//! `present` is fed back as `past` without a copy through Rust.

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
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

/// Where a row's cached tokens sit inside a batched `[rows, kv_heads, width, head_dim]` cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvLayout {
    /// Right-aligned: row b holds its tokens in `[width - len_b, width)`, the mask hides
    /// the rest. Graphs that concatenate past and new keys (the plain HF export) need
    /// this: every row's new token lands at the same index, and index distance equals
    /// position distance, which sliding-window layers rely on.
    LeftPadded,
    /// Left-aligned: row b holds `[0, len_b)` and its new token is written at `len_b`.
    /// GroupQueryAttention graphs, which derive per-row lengths from the mask.
    Ragged,
}

/// One graph run: `batch` rows of `seq` new tokens each.
pub struct Step {
    pub batch: usize,
    pub seq: usize,
    /// `batch × seq` token ids.
    pub ids: Vec<i64>,
    /// `batch × width` (past + new), 1 = a real token.
    pub mask: Vec<i64>,
    pub width: usize,
    /// `batch × seq` positions (used only by graphs with a `position_ids` input).
    pub positions: Vec<i64>,
}

pub struct StepOutput {
    pub logits: Logits,
    /// The new cache, one value per `past` input, in the same order.
    pub present: Vec<DynValue>,
}

/// `batch × vocab`: the logits of each row's last position (`seq × vocab` for a scored
/// prefill). A decode step's stay in ORT's output buffer (copying them out was 4 MB
/// per step for four Gemma streams).
pub struct Logits {
    buffer: LogitsBuffer,
    pub vocab: usize,
}

enum LogitsBuffer {
    Ort(DynValue),
    /// Picked out of a graph output that holds every position (a prefill).
    Owned(Vec<f32>),
}

impl Logits {
    /// One `vocab`-long slice per row (the sampler may modify them).
    pub fn rows_mut(&mut self) -> std::slice::ChunksExactMut<'_, f32> {
        let data = match &mut self.buffer {
            LogitsBuffer::Owned(data) => data.as_mut_slice(),
            // Checked to be a float tensor of `batch × vocab` when it was made.
            LogitsBuffer::Ort(value) => value
                .try_extract_tensor_mut::<f32>()
                .map(|(_, data)| data)
                .unwrap_or_default(),
        };
        data.chunks_exact_mut(self.vocab)
    }
}

/// Whether a graph can give the logits of every new position, which scoring a prompt
/// (its tokens' log probabilities) needs; generating needs only the last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PromptLogits {
    /// The `logits_to_keep` input (an overridable initializer, default 1) asks for the
    /// last N positions: the graphs nnhost prepares.
    KeepInput,
    /// Every position, always (a plain Hugging Face export).
    Always,
    /// The last position only (graphs prepared before `logits_to_keep`).
    LastOnly,
}

/// The name Hugging Face uses for the same knob.
const LOGITS_TO_KEEP: &str = "logits_to_keep";

pub struct DecoderGraph {
    session: Session,
    /// `spinning = "when-idle"`: the same graph with threads that spin within a step,
    /// used while this decoder's generations are all the host has to do.
    idle_session: Option<Session>,
    shape: DecoderShape,
    layout: KvLayout,
    has_position_ids: bool,
    prompt_logits: PromptLogits,
    past_names: Vec<String>,
    present_names: Vec<String>,
}

impl DecoderGraph {
    pub fn load(path: &Path, options: &CpuOptions, shape: DecoderShape) -> Result<Self> {
        let (session, idle_session) =
            cpu::build_sessions(path, options, cpu::SessionLog::ErrorsOnly)
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
        // Graphs we prepare say how they expect the cache; an HF export without the
        // key concatenates past and new, which is the left-padded layout.
        let declared = session
            .metadata()
            .ok()
            .and_then(|m| m.custom("nnhost.kv_layout"));
        let layout = match declared.as_deref() {
            Some("ragged") => KvLayout::Ragged,
            None | Some("left_padded") => KvLayout::LeftPadded,
            Some(other) => bail!(
                "{}: unknown nnhost.kv_layout {other:?} (expected ragged or left_padded)",
                path.display()
            ),
        };
        let prompt_logits = if session
            .overridable_initializers()
            .iter()
            .any(|i| i.name() == LOGITS_TO_KEEP)
        {
            PromptLogits::KeepInput
        } else {
            let positions = session
                .outputs()
                .iter()
                .find(|o| o.name() == "logits")
                .and_then(|o| match o.dtype() {
                    ort::value::ValueType::Tensor { shape, .. } => shape.get(1).copied(),
                    _ => None,
                });
            match positions {
                Some(1) => PromptLogits::LastOnly,
                _ => PromptLogits::Always,
            }
        };
        Ok(Self {
            session,
            idle_session,
            shape,
            layout,
            has_position_ids,
            prompt_logits,
            past_names,
            present_names,
        })
    }

    pub fn shape(&self) -> DecoderShape {
        self.shape
    }

    pub fn layout(&self) -> KvLayout {
        self.layout
    }

    /// Whether [`Self::run_every_position`] can give every position's logits.
    pub fn scores_prompts(&self) -> bool {
        self.prompt_logits != PromptLogits::LastOnly
    }

    /// A cache holding nothing for `rows` rows.
    pub fn empty_past(&self, rows: usize) -> Result<Vec<DynValue>> {
        let DecoderShape {
            kv_heads, head_dim, ..
        } = self.shape;
        (0..self.past_names.len())
            .map(|_| {
                Ok(
                    Tensor::<f32>::from_array(([rows, kv_heads, 0, head_dim], Vec::<f32>::new()))?
                        .into_dyn(),
                )
            })
            .collect()
    }

    /// The step's token inputs: ids, mask and (when the graph has them) positions.
    fn token_inputs(&self, step: Step) -> Result<Vec<(&'static str, DynValue)>> {
        let Step {
            batch,
            seq,
            ids,
            mask,
            width,
            positions,
        } = step;
        ensure!(ids.len() == batch * seq && mask.len() == batch * width);
        let mut inputs = vec![
            (
                "input_ids",
                Tensor::from_array(([batch, seq], ids))?.into_dyn(),
            ),
            (
                "attention_mask",
                Tensor::from_array(([batch, width], mask))?.into_dyn(),
            ),
        ];
        if self.has_position_ids {
            ensure!(positions.len() == batch * seq);
            inputs.push((
                "position_ids",
                Tensor::from_array(([batch, seq], positions))?.into_dyn(),
            ));
        }
        Ok(inputs)
    }

    /// Runs a step whose past and present share `cache` (tensors from an ORT allocator):
    /// GroupQueryAttention sees the same buffer on both sides and writes the new keys
    /// and values in place, so nothing is copied per step. Returns `batch × vocab` logits.
    pub fn run_in_place(&mut self, step: Step, cache: &mut [DynValue]) -> Result<Logits> {
        ensure!(cache.len() == self.past_names.len());
        let batch = step.batch;
        let inputs = self.token_inputs(step)?;
        let (past_names, present_names) = (&self.past_names, &self.present_names);
        let session = session_for(&mut self.session, &mut self.idle_session, batch);
        let mut binding = session.create_binding()?;
        for (name, tensor) in inputs {
            binding.bind_input(name, &tensor)?;
        }
        for ((past, present), value) in past_names.iter().zip(present_names).zip(cache.iter_mut()) {
            binding.bind_input(past.as_str(), &*value)?;
            binding.bind_output(present.as_str(), &mut *value)?;
        }
        binding.bind_output_to_device("logits", session.allocator().memory_info())?;
        let mut outputs = {
            let _run = crate::cpu_priority::graph_run();
            session.run_binding(&binding)?
        };
        let logits = outputs
            .remove("logits")
            .context("the decoder graph has no logits output")?;
        let (shape, data) = logits.try_extract_tensor::<f32>()?;
        let vocab = *shape.last().context("logits without dimensions")? as usize;
        ensure!(
            vocab > 0 && data.len() == batch * vocab,
            "logits of shape {shape:?}"
        );
        Ok(Logits {
            buffer: LogitsBuffer::Ort(logits),
            vocab,
        })
    }

    pub fn run(&mut self, step: Step, past: Vec<DynValue>) -> Result<StepOutput> {
        self.run_keeping(step, past, false)
    }

    /// A prefill of one row whose logits are wanted at every new position (to score
    /// the prompt): `seq × vocab` logits, position by position.
    pub fn run_scoring(&mut self, step: Step, past: Vec<DynValue>) -> Result<StepOutput> {
        ensure!(step.batch == 1, "a scored prefill runs one prompt");
        self.run_every_position(step, past)
    }

    /// A run whose logits are wanted at every new position of every row (a scored
    /// prompt, or a step checking drafted tokens): `batch × seq × vocab` logits.
    pub fn run_every_position(&mut self, step: Step, past: Vec<DynValue>) -> Result<StepOutput> {
        ensure!(
            self.scores_prompts(),
            "the decoder graph returns the last position's logits only"
        );
        self.run_keeping(step, past, true)
    }

    fn run_keeping(
        &mut self,
        step: Step,
        past: Vec<DynValue>,
        every_position: bool,
    ) -> Result<StepOutput> {
        ensure!(past.len() == self.past_names.len());
        let (batch, seq) = (step.batch, step.seq);
        let mut inputs: Vec<(String, SessionInputValue<'_>)> =
            Vec::with_capacity(4 + self.past_names.len());
        for (name, tensor) in self.token_inputs(step)? {
            inputs.push((name.into(), tensor.into()));
        }
        if every_position && self.prompt_logits == PromptLogits::KeepInput {
            let keep = Tensor::from_array(([1usize], vec![seq as i64]))?.into_dyn();
            inputs.push((LOGITS_TO_KEEP.into(), keep.into()));
        }
        for (name, value) in self.past_names.iter().zip(past) {
            inputs.push((name.clone(), value.into()));
        }
        let session = session_for(&mut self.session, &mut self.idle_session, batch);
        let mut outputs = {
            let _run = crate::cpu_priority::graph_run();
            session.run(inputs)?
        };
        let logits = outputs
            .remove("logits")
            .context("the decoder graph has no logits output")?;
        let (shape, data) = logits.try_extract_tensor::<f32>()?;
        let vocab = *shape.last().context("logits without dimensions")? as usize;
        ensure!(vocab > 0 && data.len() % vocab == 0, "malformed logits");
        let per_row = data.len() / vocab / batch.max(1);
        ensure!(
            per_row * vocab * batch == data.len(),
            "logits of shape {shape:?}"
        );
        let buffer = if per_row == 1 || every_position {
            ensure!(
                !every_position || per_row == seq,
                "asked for {seq} positions' logits, the graph gave {per_row}"
            );
            LogitsBuffer::Ort(logits)
        } else {
            // Graphs that return every position: keep each row's last one.
            let mut last = Vec::with_capacity(batch * vocab);
            for row in 0..batch {
                let start = (row * per_row + per_row - 1) * vocab;
                last.extend_from_slice(&data[start..start + vocab]);
            }
            LogitsBuffer::Owned(last)
        };
        let present = self
            .present_names
            .iter()
            .map(|name| {
                outputs
                    .remove(name.as_str())
                    .with_context(|| format!("missing output {name}"))
            })
            .collect::<Result<_>>()?;
        Ok(StepOutput {
            logits: Logits { buffer, vocab },
            present,
        })
    }
}

/// The session for a step of `rows` generations: the spinning one while every request
/// in flight is one of them, no other graph runs and no other requests came lately.
fn session_for<'a>(
    session: &'a mut Session,
    idle_session: &'a mut Option<Session>,
    rows: usize,
) -> &'a mut Session {
    match idle_session {
        Some(idle) if crate::cpu_priority::quiet(rows) => idle,
        _ => session,
    }
}
