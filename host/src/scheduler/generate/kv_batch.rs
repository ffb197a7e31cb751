//! The KV cache of every sequence decoding together, as one batched tensor per
//! `past` input. Rust copies it only when the batch changes shape (a sequence joins,
//! finished rows leave, or the buffer needs room), never per token:
//! - graphs that concatenate (left-padded layout) get their `present` fed back as
//!   `past` untouched (ORT itself copies the cache into each `present`);
//! - GroupQueryAttention graphs (ragged layout) get one pre-allocated buffer per input,
//!   bound as both past and present, and write each new token in place.

use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use ort::memory::Allocator;
use ort::value::{DynValue, Tensor};

use super::decoder_graph::{DecoderGraph, DecoderShape, KvLayout, Logits, Step};

/// In-place buffers start with room for this many positions and double when full.
const MIN_CAPACITY: usize = 256;

/// The cache of one sequence after its prefill: row `row` of `[rows, kv_heads, width,
/// head_dim]` values (sequences prefilled together share them), holding `len` tokens
/// placed as the batch's layout places them.
pub struct Prefilled {
    pub values: Arc<Vec<DynValue>>,
    pub row: usize,
    pub len: usize,
}

pub struct KvBatch {
    layout: KvLayout,
    shape: DecoderShape,
    /// Pre-allocated buffers written in place (ragged layout only), at most this many positions.
    in_place: Option<usize>,
    /// `[rows, kv_heads, width, head_dim]` per past input; empty while there are no rows.
    values: Vec<DynValue>,
    /// Real tokens cached per row.
    lens: Vec<usize>,
    /// Positions in the buffers: exactly the longest row when concatenating, the
    /// capacity when writing in place.
    width: usize,
}

impl KvBatch {
    /// `max_positions`: the longest a sequence may grow (in-place buffers never exceed it).
    pub fn new(layout: KvLayout, shape: DecoderShape, max_positions: usize) -> Self {
        Self {
            layout,
            shape,
            in_place: (layout == KvLayout::Ragged).then_some(max_positions.max(1)),
            values: Vec::new(),
            lens: Vec::new(),
            width: 0,
        }
    }

    /// One decode step: feeds `last[row]` to every row and returns `rows × vocab` logits.
    pub fn step(&mut self, graph: &mut DecoderGraph, last: &[u32]) -> Result<Logits> {
        let Some(max_positions) = self.in_place else {
            let (step, past) = self.decode_step(last);
            let out = graph.run(step, past)?;
            self.advance(out.present)?;
            return Ok(out.logits);
        };
        let needed = self.lens.iter().copied().max().unwrap_or(0) + 1;
        if needed > self.width {
            ensure!(
                needed <= max_positions,
                "the sequence outgrew the {max_positions} positions of the graph"
            );
            let capacity = (needed * 2).max(MIN_CAPACITY).min(max_positions);
            let keep: Vec<usize> = (0..self.rows()).collect();
            self.rebuild_with(&keep, Vec::new(), capacity)?;
        }
        let step = self.step_input(last, needed);
        let logits = graph.run_in_place(step, &mut self.values)?;
        for len in &mut self.lens {
            *len += 1;
        }
        Ok(logits)
    }

    pub fn rows(&self) -> usize {
        self.lens.len()
    }

    /// A step that feeds every row its last token followed by its draft (speculative
    /// decoding; concatenating graphs only) and returns `rows × seq × vocab` logits,
    /// `seq` being one more than the longest draft. Each row's cache then ends with
    /// `seq` new positions, the draft's and the padding after a shorter draft alike:
    /// [`KvBatch::discard`] must take off those the samples did not confirm.
    pub fn step_drafted(
        &mut self,
        graph: &mut DecoderGraph,
        last: &[u32],
        drafts: &[&[u32]],
    ) -> Result<Logits> {
        ensure!(
            self.in_place.is_none(),
            "drafts are checked on concatenating graphs only"
        );
        let rows = self.rows();
        ensure!(last.len() == rows && drafts.len() == rows);
        let step = self.drafted_input(last, drafts);
        let (seq, width) = (step.seq, step.width);
        let past = std::mem::take(&mut self.values);
        let out = graph.run_every_position(step, past)?;
        for value in &out.present {
            let (shape, _) = value.try_extract_tensor::<f32>()?;
            ensure!(
                shape.len() == 4 && shape[0] as usize == rows && shape[2] as usize == width,
                "the decoder returned a cache of shape {shape:?}, expected {rows} rows of {width} positions"
            );
        }
        self.values = out.present;
        self.width = width;
        for len in &mut self.lens {
            *len += seq;
        }
        Ok(out.logits)
    }

    /// The input of [`KvBatch::step_drafted`]: row by row, the last token, the draft
    /// and padding; the mask covers the row's cache, its last token and its draft.
    fn drafted_input(&self, last: &[u32], drafts: &[&[u32]]) -> Step {
        let rows = self.rows();
        let seq = 1 + drafts.iter().map(|d| d.len()).max().unwrap_or(0);
        let width = self.width + seq;
        let mut ids = Vec::with_capacity(rows * seq);
        let mut positions = Vec::with_capacity(rows * seq);
        let mut mask = vec![0i64; rows * width];
        for (row, (&len, draft)) in self.lens.iter().zip(drafts).enumerate() {
            ids.push(last[row] as i64);
            ids.extend(draft.iter().map(|&t| t as i64));
            // Padding repeats the last token; it is masked and discarded afterwards.
            ids.extend(std::iter::repeat_n(last[row] as i64, seq - 1 - draft.len()));
            positions.extend((len..len + seq).map(|p| p as i64));
            let line = &mut mask[row * width..(row + 1) * width];
            line[self.width - len..self.width + 1 + draft.len()].fill(1);
        }
        Step {
            batch: rows,
            seq,
            ids,
            mask,
            width,
            positions,
        }
    }

    /// Takes `counts[row]` positions off the end of each row: drafted tokens that
    /// were not confirmed, and the padding after shorter drafts. Rows are copied
    /// into a narrower cache only when something is taken off.
    pub fn discard(&mut self, counts: &[usize]) -> Result<()> {
        ensure!(counts.len() == self.rows());
        if counts.iter().all(|&n| n == 0) {
            return Ok(());
        }
        ensure!(
            counts.iter().zip(&self.lens).all(|(&n, &len)| n <= len),
            "cannot discard more positions than a row holds"
        );
        let lens: Vec<usize> = self.lens.iter().zip(counts).map(|(&l, &n)| l - n).collect();
        if self.in_place.is_some() {
            // The positions past a row's length are overwritten by its next tokens.
            self.lens = lens;
            return Ok(());
        }
        let DecoderShape {
            kv_heads, head_dim, ..
        } = self.shape;
        let (old_width, rows) = (self.width, self.rows());
        let width = lens.iter().copied().max().unwrap_or(0);
        let mut values = Vec::with_capacity(self.values.len());
        for value in &self.values {
            let (_, src) = value.try_extract_tensor::<f32>()?;
            // Written once, in order (no zeroing pass first: a SmolLM2 row at 170 tokens
            // is 7.8 MB, and this runs after most drafted steps).
            let mut data = Vec::with_capacity(rows * kv_heads * width * head_dim);
            for (row, (&old_len, &len)) in self.lens.iter().zip(&lens).enumerate() {
                // Right-aligned before and after: the row's first token moves from
                // `old_width - old_len` to `width - len`.
                for head in 0..kv_heads {
                    let from =
                        ((row * kv_heads + head) * old_width + old_width - old_len) * head_dim;
                    data.resize(data.len() + (width - len) * head_dim, 0.0);
                    data.extend_from_slice(&src[from..from + len * head_dim]);
                }
            }
            values.push(Tensor::from_array(([rows, kv_heads, width, head_dim], data))?.into_dyn());
        }
        self.values = values;
        self.lens = lens;
        self.width = width;
        Ok(())
    }

    /// The input for one decode step that feeds `last[row]` to every row, and the
    /// cache it runs on (taken out of the batch until [`KvBatch::advance`]).
    pub fn decode_step(&mut self, last: &[u32]) -> (Step, Vec<DynValue>) {
        let step = self.step_input(last, self.width + 1);
        (step, std::mem::take(&mut self.values))
    }

    /// A decode step's inputs with a mask `width` positions wide.
    fn step_input(&self, last: &[u32], width: usize) -> Step {
        let rows = self.rows();
        debug_assert_eq!(last.len(), rows);
        let mut mask = vec![0i64; rows * width];
        for (row, &len) in self.lens.iter().enumerate() {
            let line = &mut mask[row * width..(row + 1) * width];
            match self.layout {
                KvLayout::LeftPadded => line[width - len - 1..].fill(1),
                KvLayout::Ragged => line[..len + 1].fill(1),
            }
        }
        Step {
            batch: rows,
            seq: 1,
            ids: last.iter().map(|&t| t as i64).collect(),
            mask,
            width,
            positions: self.lens.iter().map(|&len| len as i64).collect(),
        }
    }

    /// Takes the `present` values of the step [`KvBatch::decode_step`] prepared.
    pub fn advance(&mut self, present: Vec<DynValue>) -> Result<()> {
        let width = self.width + 1;
        for value in &present {
            let (shape, _) = value.try_extract_tensor::<f32>()?;
            ensure!(
                shape.len() == 4 && shape[0] as usize == self.rows() && shape[2] as usize == width,
                "the decoder returned a cache of shape {shape:?}, expected {} rows of {width} positions",
                self.rows()
            );
        }
        self.values = present;
        self.width = width;
        for len in &mut self.lens {
            *len += 1;
        }
        Ok(())
    }

    /// Rebuilds the batch from the rows in `keep` (in that order) followed by `add`.
    /// Concatenating, the width shrinks to the longest remaining row; in place, the
    /// buffers get room for the longest row to grow.
    pub fn rebuild(&mut self, keep: &[usize], add: Vec<Prefilled>) -> Result<()> {
        let longest = keep
            .iter()
            .map(|&r| self.lens[r])
            .chain(add.iter().map(|p| p.len))
            .max()
            .unwrap_or(0);
        let width = match self.in_place {
            None => longest,
            // Keep the capacity while it has room and is not far too big.
            Some(_) if longest < self.width && self.width <= MIN_CAPACITY.max(4 * longest) => {
                self.width
            }
            Some(max_positions) => (2 * longest)
                .max(MIN_CAPACITY)
                .min(max_positions)
                .max(longest),
        };
        self.rebuild_with(keep, add, width)
    }

    fn rebuild_with(&mut self, keep: &[usize], add: Vec<Prefilled>, width: usize) -> Result<()> {
        let DecoderShape {
            kv_heads, head_dim, ..
        } = self.shape;
        let lens: Vec<usize> = keep
            .iter()
            .map(|&r| self.lens[r])
            .chain(add.iter().map(|p| p.len))
            .collect();
        let rows = lens.len();
        if rows == 0 {
            self.values.clear();
            self.lens.clear();
            self.width = 0;
            return Ok(());
        }
        let inputs = self
            .values
            .len()
            .max(add.first().map_or(0, |p| p.values.len()));
        let mut values = Vec::with_capacity(inputs);
        let allocator = self.in_place.map(|_| Allocator::default());
        for input in 0..inputs {
            let mut data = vec![0f32; rows * kv_heads * width * head_dim];
            let mut place =
                |row: usize, len: usize, src: &[f32], src_width: usize, src_row: usize| {
                    let src_start = match self.layout {
                        KvLayout::LeftPadded => src_width - len,
                        KvLayout::Ragged => 0,
                    };
                    let dst_start = match self.layout {
                        KvLayout::LeftPadded => width - len,
                        KvLayout::Ragged => 0,
                    };
                    for head in 0..kv_heads {
                        let from = ((src_row * kv_heads + head) * src_width + src_start) * head_dim;
                        let to = ((row * kv_heads + head) * width + dst_start) * head_dim;
                        data[to..to + len * head_dim]
                            .copy_from_slice(&src[from..from + len * head_dim]);
                    }
                };
            if !keep.is_empty() {
                let (_, src) = self.values[input].try_extract_tensor::<f32>()?;
                for (row, &src_row) in keep.iter().enumerate() {
                    place(row, self.lens[src_row], src, self.width, src_row);
                }
            }
            for (i, prefilled) in add.iter().enumerate() {
                let value = prefilled
                    .values
                    .get(input)
                    .context("a prefilled cache has fewer layers than the batch")?;
                let (shape, src) = value.try_extract_tensor::<f32>()?;
                ensure!(
                    shape.len() == 4
                        && (prefilled.row as i64) < shape[0]
                        && shape[2] as usize >= prefilled.len,
                    "a prefilled cache of shape {shape:?} for row {} of {} tokens",
                    prefilled.row,
                    prefilled.len
                );
                place(
                    keep.len() + i,
                    prefilled.len,
                    src,
                    shape[2] as usize,
                    prefilled.row,
                );
            }
            let dims = [rows, kv_heads, width, head_dim];
            values.push(match &allocator {
                // Output-bindable: ORT may only write into memory it allocated.
                Some(allocator) => {
                    let mut tensor = Tensor::<f32>::new(allocator, dims)?;
                    tensor.extract_tensor_mut().1.copy_from_slice(&data);
                    tensor.into_dyn()
                }
                None => Tensor::from_array((dims, data))?.into_dyn(),
            });
        }
        self.values = values;
        self.lens = lens;
        self.width = width;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHAPE: DecoderShape = DecoderShape {
        layers: 1,
        kv_heads: 2,
        head_dim: 1,
    };

    /// A one-sequence cache whose entry for head h, position p is `tag + 10h + p`.
    fn prefilled(tag: f32, len: usize) -> Prefilled {
        crate::providers::ort_env::init("").expect("ONNX Runtime from the project's .venv");
        let values = (0..2)
            .map(|_| {
                let data = (0..2)
                    .flat_map(|h| (0..len).map(move |p| tag + (10 * h + p) as f32))
                    .collect::<Vec<_>>();
                Tensor::from_array(([1usize, 2, len, 1], data))
                    .unwrap()
                    .into_dyn()
            })
            .collect();
        Prefilled {
            values: Arc::new(values),
            row: 0,
            len,
        }
    }

    fn data(batch: &KvBatch) -> Vec<f32> {
        batch.values[0]
            .try_extract_tensor::<f32>()
            .unwrap()
            .1
            .to_vec()
    }

    #[test]
    fn left_padded_rows_are_right_aligned() {
        let mut batch = KvBatch::new(KvLayout::LeftPadded, SHAPE, 100);
        batch
            .rebuild(&[], vec![prefilled(100.0, 2), prefilled(200.0, 3)])
            .unwrap();
        assert_eq!(
            data(&batch),
            [0., 100., 101., 0., 110., 111., 200., 201., 202., 210., 211., 212.]
        );
        let (step, _) = batch.decode_step(&[7, 8]);
        assert_eq!(step.mask, [0, 1, 1, 1, 1, 1, 1, 1]);
        assert_eq!(step.positions, [2, 3]);
    }

    #[test]
    fn a_drafted_step_masks_each_rows_padding() {
        let mut batch = KvBatch::new(KvLayout::LeftPadded, SHAPE, 100);
        batch
            .rebuild(&[], vec![prefilled(100.0, 2), prefilled(200.0, 3)])
            .unwrap();
        let step = batch.drafted_input(&[7, 8], &[&[70, 71], &[]]);
        assert_eq!((step.seq, step.width), (3, 6));
        assert_eq!(step.ids, [7, 70, 71, 8, 8, 8]);
        assert_eq!(step.positions, [2, 3, 4, 3, 4, 5]);
        // Row 0: one padding slot, two cached, last and two drafts; row 1: three cached
        // and its last token, the two padding positions after it masked.
        assert_eq!(step.mask, [0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0]);
    }

    #[test]
    fn discarding_keeps_rows_right_aligned() {
        let mut batch = KvBatch::new(KvLayout::LeftPadded, SHAPE, 100);
        batch
            .rebuild(&[], vec![prefilled(100.0, 2), prefilled(200.0, 3)])
            .unwrap();
        // As after a drafted step of width 3 + 2 (the prefilled rows pretend to hold
        // two more positions each).
        batch
            .rebuild(&[], vec![prefilled(100.0, 4), prefilled(200.0, 5)])
            .unwrap();
        batch.discard(&[0, 0]).unwrap();
        assert_eq!(batch.lens, [4, 5], "nothing to take off: no copy");
        batch.discard(&[1, 3]).unwrap();
        assert_eq!((batch.lens.clone(), batch.width), (vec![3, 2], 3));
        assert_eq!(
            data(&batch),
            [100., 101., 102., 110., 111., 112., 0., 200., 201., 0., 210., 211.]
        );
        let (step, _) = batch.decode_step(&[7, 8]);
        assert_eq!(step.mask, [1, 1, 1, 1, 0, 1, 1, 1]);
        assert_eq!(step.positions, [3, 2]);
        assert!(batch.discard(&[0]).is_err(), "one count per row");
    }

    #[test]
    fn discarding_from_an_in_place_cache_only_shortens_the_rows() {
        let mut batch = KvBatch::new(KvLayout::Ragged, SHAPE, 6);
        batch
            .rebuild(&[], vec![prefilled(100.0, 2), prefilled(200.0, 3)])
            .unwrap();
        let before = data(&batch);
        batch.discard(&[1, 2]).unwrap();
        assert_eq!(batch.lens, [1, 1]);
        assert_eq!(data(&batch), before);
        assert!(batch.discard(&[2, 0]).is_err());
    }

    #[test]
    fn ragged_rows_are_left_aligned_in_a_buffer_with_room() {
        let mut batch = KvBatch::new(KvLayout::Ragged, SHAPE, 6);
        batch
            .rebuild(&[], vec![prefilled(100.0, 2), prefilled(200.0, 3)])
            .unwrap();
        assert_eq!(batch.width, 6, "room to grow, up to max_positions");
        assert_eq!(
            data(&batch),
            [
                100., 101., 0., 0., 0., 0., 110., 111., 0., 0., 0., 0., //
                200., 201., 202., 0., 0., 0., 210., 211., 212., 0., 0., 0.
            ]
        );
        let step = batch.step_input(&[7, 8], 4);
        assert_eq!(step.mask, [1, 1, 1, 0, 1, 1, 1, 1]);
    }

    #[test]
    fn rows_of_a_batched_prefill_are_taken_apart() {
        crate::providers::ort_env::init("").expect("ONNX Runtime from the project's .venv");
        // Two prompts prefilled together, left-padded to 3: [_, a0, a1] and [b0, b1, b2].
        let values: Vec<DynValue> = (0..2)
            .map(|_| {
                let data: Vec<f32> = vec![0., 1., 2., 10., 11., 12., 5., 6., 7., 15., 16., 17.];
                Tensor::from_array(([2usize, 2, 3, 1], data))
                    .unwrap()
                    .into_dyn()
            })
            .collect();
        let values = Arc::new(values);
        let rows = [(1, 3), (0, 2)].map(|(row, len)| Prefilled {
            values: values.clone(),
            row,
            len,
        });
        let mut batch = KvBatch::new(KvLayout::LeftPadded, SHAPE, 100);
        batch.rebuild(&[], rows.into()).unwrap();
        assert_eq!(
            data(&batch),
            [5., 6., 7., 15., 16., 17., 0., 1., 2., 0., 11., 12.]
        );
    }

    #[test]
    fn dropping_a_row_keeps_the_others_and_shrinks_the_width() {
        let mut batch = KvBatch::new(KvLayout::LeftPadded, SHAPE, 100);
        batch
            .rebuild(&[], vec![prefilled(100.0, 2), prefilled(200.0, 3)])
            .unwrap();
        batch.rebuild(&[0], vec![prefilled(300.0, 1)]).unwrap();
        assert_eq!(batch.rows(), 2);
        assert_eq!(data(&batch), [100., 101., 110., 111., 0., 300., 0., 310.]);
        let mut batch = KvBatch::new(KvLayout::Ragged, SHAPE, 2);
        batch
            .rebuild(&[], vec![prefilled(100.0, 2), prefilled(200.0, 2)])
            .unwrap();
        batch.rebuild(&[1], vec![prefilled(300.0, 1)]).unwrap();
        assert_eq!(data(&batch), [200., 201., 210., 211., 300., 0., 310., 0.]);
    }
}
