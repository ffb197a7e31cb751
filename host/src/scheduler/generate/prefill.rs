//! A prefill's graph inputs: which prompts run together (their padding is the cost),
//! how they are padded for the cache layout, and the chunks of a long prompt.

use super::decoder_graph::{KvLayout, Step};

/// Padded tokens one prefill may hold: the plain graphs' attention scores grow with
/// rows × new tokens × (cached + new), so long prompts go alone.
const MAX_PREFILL_TOKENS: usize = 2048;

/// Prompts prefilled together cost their padding. `rows` holds each prompt's rest
/// (what it runs: the prompt after its cached start) and its whole length, sorted by
/// rest. A group grows while its padded rests stay within 1.5× the real ones (+64) and
/// under `MAX_PREFILL_TOKENS`, and its attention scores (padded rests × the longest
/// prompt) under what one prompt of `MAX_PREFILL_TOKENS` has: rows over a long cached
/// conversation would otherwise multiply that. Returns the group sizes, in order.
pub fn group_sizes(rows: &[(usize, usize)]) -> Vec<usize> {
    let mut groups = Vec::new();
    let (mut size, mut real, mut longest) = (0usize, 0usize, 0usize);
    for &(rest, len) in rows {
        let padded = rest * (size + 1);
        let scores = padded.saturating_mul(longest.max(len));
        if size > 0
            && (padded > MAX_PREFILL_TOKENS
                || 2 * padded > 3 * (real + rest) + 128
                || scores > MAX_PREFILL_TOKENS * MAX_PREFILL_TOKENS)
        {
            groups.push(size);
            (size, real, longest) = (0, 0, 0);
        }
        size += 1;
        real += rest;
        longest = longest.max(len);
    }
    if size > 0 {
        groups.push(size);
    }
    groups
}

/// The inputs of one prefill: every prompt padded to the longest, on the side the
/// cache layout wants (left for concatenating graphs, right for ragged ones).
///
/// Left-padded, row r may start from a cached prefix: its first `cached[r]` tokens
/// come from the past (right-aligned in `max(cached)` positions) and only the rest
/// is new. Every row's new tokens then end at the last column, and its cached and
/// new tokens must meet there: all rows with a cached prefix have rests of the same
/// length, the longest. A row with a shorter rest runs some of its cached tokens again,
/// which costs what padding costs; [`group_sizes`] over the rests keeps that cheap.
pub fn prefill_step(prompts: &[&[u32]], cached: &[usize], layout: KvLayout) -> Step {
    debug_assert_eq!(prompts.len(), cached.len());
    debug_assert!(layout == KvLayout::LeftPadded || cached.iter().all(|&c| c == 0));
    let past = cached.iter().copied().max().unwrap_or(0);
    let seq = prompts
        .iter()
        .zip(cached)
        .map(|(p, &c)| p.len() - c)
        .max()
        .unwrap_or(0);
    let width = past + seq;
    let batch = prompts.len();
    let mut ids = vec![0i64; batch * seq];
    let mut mask = vec![0i64; batch * width];
    let mut positions = vec![0i64; batch * seq];
    for (row, (prompt, &cached)) in prompts.iter().zip(cached).enumerate() {
        let rest = &prompt[cached..];
        debug_assert!(
            cached == 0 || rest.len() == seq,
            "a gap between past and rest"
        );
        let start = match layout {
            KvLayout::LeftPadded => seq - rest.len(),
            KvLayout::Ragged => 0,
        };
        let line = row * seq + start;
        for (i, &token) in rest.iter().enumerate() {
            ids[line + i] = token as i64;
            positions[line + i] = (cached + i) as i64;
        }
        let mask_start = row * width
            + match layout {
                KvLayout::LeftPadded => width - prompt.len(),
                KvLayout::Ragged => 0,
            };
        mask[mask_start..mask_start + prompt.len()].fill(1);
    }
    Step {
        batch,
        seq,
        ids,
        mask,
        width,
        positions,
    }
}

/// The inputs of one chunk of a prompt prefilled alone: tokens `from..to`, attending
/// to the `from` already cached (one row, so no padding in either layout).
pub fn chunk_step(prompt: &[u32], from: usize, to: usize) -> Step {
    Step {
        batch: 1,
        seq: to - from,
        ids: prompt[from..to].iter().map(|&t| t as i64).collect(),
        mask: vec![1; to],
        width: to,
        positions: (from as i64..to as i64).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_attends_to_the_cached_prefix() {
        let prompt: Vec<u32> = (10..20).collect();
        let step = chunk_step(&prompt, 4, 7);
        assert_eq!((step.batch, step.seq, step.width), (1, 3, 7));
        assert_eq!(step.ids, [14, 15, 16]);
        assert_eq!(step.mask, [1; 7]);
        assert_eq!(step.positions, [4, 5, 6]);
    }

    #[test]
    fn similar_prompts_are_prefilled_together_and_long_ones_alone() {
        let uncached = |lens: &[usize]| lens.iter().map(|&l| (l, l)).collect::<Vec<_>>();
        assert_eq!(group_sizes(&uncached(&[10, 12, 14, 15])), [4]);
        assert_eq!(group_sizes(&uncached(&[5, 6, 400, 2000])), [2, 1, 1]);
        assert!(group_sizes(&uncached(&[300; 10]))
            .iter()
            .all(|&n| n * 300 <= MAX_PREFILL_TOKENS));
        // Short rests after a shared system prompt run together...
        assert_eq!(group_sizes(&[(12, 40), (14, 42), (15, 43)]), [3]);
        // ...but rests over a long cached conversation share a run only while their
        // attention scores stay within one long prompt's.
        assert_eq!(group_sizes(&[(100, 8000); 8]), [5, 3]);
    }

    #[test]
    fn prefill_padding_follows_the_layout() {
        let prompts: [&[u32]; 2] = [&[7, 8], &[1, 2, 3]];
        let left = prefill_step(&prompts, &[0, 0], KvLayout::LeftPadded);
        assert_eq!(left.ids, [0, 7, 8, 1, 2, 3]);
        assert_eq!(left.mask, [0, 1, 1, 1, 1, 1]);
        assert_eq!(left.positions, [0, 0, 1, 0, 1, 2]);
        let right = prefill_step(&prompts, &[0, 0], KvLayout::Ragged);
        assert_eq!(right.ids, [7, 8, 0, 1, 2, 3]);
        assert_eq!(right.mask, [1, 1, 0, 1, 1, 1]);
    }

    #[test]
    fn rows_starting_from_cached_prefixes_run_only_their_rests() {
        // Two prompts with 4 and 6 tokens cached and rests of 3 (the common rest); a
        // short uncached prompt, left-padded across past and rest.
        let a: Vec<u32> = (10..17).collect();
        let b: Vec<u32> = (20..29).collect();
        let prompts: [&[u32]; 3] = [&a, &b, &[5, 6]];
        let step = prefill_step(&prompts, &[4, 6, 0], KvLayout::LeftPadded);
        assert_eq!((step.batch, step.seq, step.width), (3, 3, 9));
        assert_eq!(step.ids, [14, 15, 16, 26, 27, 28, 0, 5, 6]);
        assert_eq!(step.positions, [4, 5, 6, 6, 7, 8, 0, 0, 1]);
        #[rustfmt::skip]
        assert_eq!(step.mask, [
            0, 0, 1, 1, 1, 1, 1, 1, 1,
            1, 1, 1, 1, 1, 1, 1, 1, 1,
            0, 0, 0, 0, 0, 0, 0, 1, 1,
        ]);
    }
}
