//! Speculative decoding in the decode loop: each row's draft by n-gram lookup, and
//! the step that checks the drafts and keeps what the samples confirm.

use std::time::Instant;

use super::super::decoder_graph::KvLayout;
use super::super::draft_budget::Draft;
use super::super::lookup_draft;
use super::{Active, Worker};

impl Worker {
    /// The rows' drafts cut to the positions the budget expects to pay this step, or
    /// `None` when a plain one-token step is the better bet.
    pub(super) fn drafts_worth_checking(
        &mut self,
        rows: &[Option<Active>],
    ) -> Option<Vec<Vec<u32>>> {
        let mut drafts = self.drafts(rows);
        let found: Vec<Draft> = rows
            .iter()
            .zip(&drafts)
            .map(|(row, draft)| Draft {
                len: draft.len(),
                rate: row.as_ref().map_or(0.0, |seq| {
                    self.draft_budget
                        .row_rate(seq.drafts_confirmed, seq.drafts_mismatched)
                }),
            })
            .collect();
        let positions = self.draft_budget.positions(&found);
        if positions <= 1 {
            return None;
        }
        for draft in &mut drafts {
            draft.truncate(positions - 1);
        }
        Some(drafts)
    }

    /// Each row's draft for this step (speculative decoding, on concatenating graphs
    /// that give every position's logits), empty where none is found; drafts stop
    /// short of the row's token limit and, since every row runs as many positions as
    /// the longest draft, of the context of the row nearest its end.
    fn drafts(&self, rows: &[Option<Active>]) -> Vec<Vec<u32>> {
        let drafting = self.draft_tokens > 0
            && self.graph.layout() == KvLayout::LeftPadded
            && self.graph.scores_prompts();
        let context_room = rows
            .iter()
            .flatten()
            .map(|seq| self.context_length.saturating_sub(seq.cached + 2))
            .min()
            .unwrap_or(0);
        rows.iter()
            .map(|row| match row {
                Some(seq) if drafting => {
                    let room = seq
                        .max_tokens
                        .saturating_sub(seq.generated + 1)
                        .min(context_room)
                        .min(self.draft_tokens);
                    lookup_draft::draft(&seq.history, room).to_vec()
                }
                _ => Vec::new(),
            })
            .collect()
    }

    /// A step that checks drafts: row by row, each position's logits are sampled as
    /// usual, and the next position counts only while the sample equals the draft's
    /// token there. What is generated is thus what one token per step would give (up
    /// to the rounding of a batch of positions, as in a prefill), sampling and the
    /// seeded generator included; unconfirmed positions leave the cache.
    pub(super) fn decode_drafted(
        &mut self,
        rows: &mut Vec<Option<Active>>,
        last: &[u32],
        drafts: &[Vec<u32>],
    ) {
        let refs: Vec<&[u32]> = drafts.iter().map(Vec::as_slice).collect();
        let seq_len = 1 + refs.iter().map(|d| d.len()).max().unwrap_or(0);
        let started = Instant::now();
        let mut logits = match self.batch.step_drafted(&mut self.graph, last, &refs) {
            Ok(logits) => logits,
            Err(e) => return self.fail_all(rows, &e),
        };
        let mut elapsed = started.elapsed().as_secs_f64();
        let (mut confirmed, mut mismatched) = (0, 0);
        let mut positions = logits.rows_mut();
        let mut discard = Vec::with_capacity(rows.len());
        for (row, draft) in rows.iter_mut().zip(drafts) {
            let mut this_row = positions.by_ref().take(seq_len);
            let mut kept = seq_len;
            if let Some(seq) = row {
                kept = 0;
                let mut alive = true;
                for logits in this_row.by_ref() {
                    kept += 1;
                    seq.cached += 1;
                    alive = self.accept(seq, logits);
                    // Position `kept` was fed draft[kept - 1]: it counts if that is what was sampled.
                    if !alive || kept > draft.len() || seq.last != draft[kept - 1] {
                        break;
                    }
                }
                let missed = usize::from(kept - 1 < draft.len());
                seq.drafts_confirmed += kept - 1;
                seq.drafts_mismatched += missed;
                confirmed += kept - 1;
                mismatched += missed;
                if !alive {
                    *row = None;
                }
            }
            this_row.for_each(drop);
            discard.push(seq_len - kept);
        }
        let drafted: usize = drafts.iter().map(Vec::len).sum();
        self.metrics.drafted.inc_by(drafted as u64);
        self.metrics.draft_accepted.inc_by(confirmed as u64);
        let discarding = Instant::now();
        if let Err(e) = self.batch.discard(&discard) {
            return self.fail_all(rows, &e);
        }
        elapsed += discarding.elapsed().as_secs_f64();
        self.draft_budget
            .drafted_step(rows.len(), seq_len, elapsed, confirmed, mismatched);
    }
}
