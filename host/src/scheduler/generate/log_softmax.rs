//! Log probabilities from a row of logits: the normalizer `log Σ exp(logits)` and the
//! `k` most likely tokens. A generated token with `logprobs` needs one row per step; a
//! scored prompt one row per prompt token, over the whole vocabulary (Gemma: 262,144
//! entries), so the passes are written to vectorize: with a scalar `exp` and branchy
//! loops a Gemma row took 1.5 ms, as long as a decode step.

use super::sampler::{Logprobs, MAX_TOP_LOGPROBS};

/// How likely the model found `token` given these logits, and its `k` most likely
/// tokens (scoring a prompt): the same arithmetic as a generated token's log
/// probabilities, so a token the model would have picked greedily equals the top one.
pub fn score(logits: &[f32], token: u32, k: usize) -> Logprobs {
    let (normalizer, top) = log_normalizer_and_top(logits, k.min(MAX_TOP_LOGPROBS as usize));
    let raw = logits
        .get(token as usize)
        .copied()
        .unwrap_or(f32::NEG_INFINITY);
    Logprobs {
        chosen: (token, raw - normalizer),
        top,
    }
}

/// The token's rank among these logits: 1 plus how many finite logits are above its
/// own (vLLM's `rank`; ties share the better rank). A token beyond the row, or whose
/// logit is not finite, ranks after all of them.
pub fn rank(logits: &[f32], token: u32) -> u32 {
    let Some(&own) = logits.get(token as usize).filter(|l| l.is_finite()) else {
        return u32::try_from(logits.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1);
    };
    // Counted in lanes so that it vectorizes: one pass over Gemma's 262,144 logits.
    let mut lanes = [0u32; LANES];
    let chunks = logits.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (n, &x) in lanes.iter_mut().zip(chunk) {
            *n += u32::from(x > own && x < f32::INFINITY);
        }
    }
    let above = lanes.iter().sum::<u32>()
        + rest
            .iter()
            .map(|&x| u32::from(x > own && x < f32::INFINITY))
            .sum::<u32>();
    above + 1
}

/// `log Σ exp(logits)` and the `k` largest logits as log probabilities (most likely
/// first). NaN and infinite logits are left out.
pub fn log_normalizer_and_top(logits: &[f32], k: usize) -> (f32, Vec<(u32, f32)>) {
    let max = max_finite(logits);
    if max == f32::NEG_INFINITY {
        return (0.0, Vec::new());
    }
    let normalizer = max + sum_exp_below(logits, max).ln() as f32;
    let mut top = largest(logits, k);
    for entry in &mut top {
        entry.1 -= normalizer;
    }
    (normalizer, top)
}

const LANES: usize = 16;

/// The largest finite value (-inf when there is none).
fn max_finite(logits: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = logits.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (m, &x) in lanes.iter_mut().zip(chunk) {
            // NaN and +inf never win.
            *m = if x > *m && x < f32::INFINITY { x } else { *m };
        }
    }
    lanes
        .iter()
        .chain(rest)
        .copied()
        .filter(|x| x.is_finite())
        .fold(f32::NEG_INFINITY, f32::max)
}

/// The `k` largest finite values with their indices, largest first (ties: lower
/// index first). Chunks of 16 are skipped with one vectorized comparison unless
/// they hold something above the current k-th value, which is rare after the start.
fn largest(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut top: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
    if k == 0 {
        return top;
    }
    let mut worst = f32::NEG_INFINITY;
    let consider = |top: &mut Vec<(u32, f32)>, worst: &mut f32, i: usize, l: f32| {
        if !l.is_finite() || (top.len() == k && l <= *worst) {
            return;
        }
        let at = top.partition_point(|&(_, t)| t >= l);
        top.insert(at, (i as u32, l));
        top.truncate(k);
        if top.len() == k {
            *worst = top[k - 1].1;
        }
    };
    let chunks = logits.chunks_exact(LANES);
    let rest_start = logits.len() - chunks.remainder().len();
    for (c, chunk) in chunks.enumerate() {
        let above = chunk.iter().fold(false, |any, &x| any | (x > worst));
        if above || top.len() < k {
            for (j, &l) in chunk.iter().enumerate() {
                consider(&mut top, &mut worst, c * LANES + j, l);
            }
        }
    }
    for (j, &l) in logits[rest_start..].iter().enumerate() {
        consider(&mut top, &mut worst, rest_start + j, l);
    }
    top
}

/// `Σ exp(l - max)` over the logits (`max` their largest finite value; NaN and -inf
/// count as 0), with AVX2 and FMA where the CPU has them.
fn sum_exp_below(logits: &[f32], max: f32) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features the function is compiled for.
        return unsafe { sum_exp_below_avx2(logits, max) };
    }
    sum_exp_below_portable(logits, max)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn sum_exp_below_avx2(logits: &[f32], max: f32) -> f64 {
    sum_exp_below_portable(logits, max)
}

#[inline(always)]
fn sum_exp_below_portable(logits: &[f32], max: f32) -> f64 {
    let mut total = 0f64;
    // Lane sums are folded into f64 every block, so f32 rounding stays small.
    for block in logits.chunks(4096) {
        let mut lanes = [0f32; LANES];
        let chunks = block.chunks_exact(LANES);
        let rest = chunks.remainder();
        for chunk in chunks {
            for (acc, &l) in lanes.iter_mut().zip(chunk) {
                *acc += exp_nonpositive(l - max);
            }
        }
        total += lanes.iter().map(|&x| f64::from(x)).sum::<f64>();
        total += rest
            .iter()
            .map(|&l| f64::from(exp_nonpositive(l - max)))
            .sum::<f64>();
    }
    total
}

/// `e^x` for `x ≤ 0` to ~2 ulp (Cephes' `expf`: `x = n ln 2 + r`, a degree-5
/// polynomial for `e^r`, `2^n` from the exponent bits), written so that it
/// vectorizes. Below -87, above 0 and for NaN it returns about 0.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5 · 2^23 rounds to the nearest integer without a call.
    const ROUND: f32 = 12_582_912.0;
    // NaN and +inf (a logit `max` left out) count as nothing, like -inf.
    let x = if x <= 0.0 { x.max(-87.0) } else { -87.0 };
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 0.166_666_65;
    let p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    e_r * f32::from_bits(((n as i32 + 127) << 23) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Straightforward f64 versions of the passes, to compare against.
    fn reference(logits: &[f32], k: usize) -> (f64, Vec<(u32, f32)>) {
        let finite = || logits.iter().copied().filter(|l| l.is_finite());
        let max = finite().fold(f32::NEG_INFINITY, f32::max);
        let sum: f64 = finite()
            .map(|l| (f64::from(l) - f64::from(max)).exp())
            .sum();
        let mut order: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .filter(|(_, l)| l.is_finite())
            .map(|(i, &l)| (i as u32, l))
            .collect();
        order.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        order.truncate(k);
        (f64::from(max) + sum.ln(), order)
    }

    #[test]
    fn exp_is_accurate_where_it_is_used() {
        for x in [0.0f32, -1e-6, -0.3466, -0.5, -1.0, -10.5, -40.0, -86.9] {
            let want = f64::from(x).exp();
            let got = f64::from(exp_nonpositive(x));
            assert!((got - want).abs() <= 3e-7 * want, "e^{x}: {got} vs {want}");
        }
        assert!(exp_nonpositive(f32::NEG_INFINITY) < 1e-37);
        assert!(exp_nonpositive(f32::NAN) < 1e-37);
        assert!(exp_nonpositive(f32::INFINITY) < 1e-37);
    }

    #[test]
    fn the_fast_passes_equal_the_plain_ones() {
        // Gemma-sized rows with ties, a late maximum and non-finite values.
        let mut logits: Vec<f32> = (0..262_147)
            .map(|i| ((i * 7919 % 1000) as f32) * 0.031 - 20.0)
            .collect();
        logits[5] = f32::NAN;
        logits[6] = f32::INFINITY;
        logits[7] = f32::NEG_INFINITY;
        logits[262_140] = 25.0;
        for k in [0, 1, 5, 20] {
            let (normalizer, top) = log_normalizer_and_top(&logits, k);
            let (want_normalizer, want_top) = reference(&logits, k);
            assert!((f64::from(normalizer) - want_normalizer).abs() < 1e-5);
            let top_raw: Vec<(u32, f32)> =
                top.iter().map(|&(i, lp)| (i, lp + normalizer)).collect();
            assert_eq!(
                top_raw.iter().map(|t| t.0).collect::<Vec<_>>(),
                want_top.iter().map(|t| t.0).collect::<Vec<_>>(),
                "k = {k}"
            );
        }
        assert_eq!(log_normalizer_and_top(&[f32::NAN; 40], 3), (0.0, vec![]));
    }

    #[test]
    fn rank_counts_the_tokens_above() {
        let mut logits: Vec<f32> = (0..1000).map(|i| (i % 100) as f32).collect();
        logits[3] = f32::NAN;
        logits[4] = f32::INFINITY;
        // Token 99 holds the largest finite logit, shared with 9 others.
        assert_eq!(rank(&logits, 99), 1);
        // Ten tokens each at 90..=99 are above 89.
        assert_eq!(rank(&logits, 89), 101);
        // 990 tokens hold 1..=99, less the NaN and the infinity (once 3 and 4).
        assert_eq!(rank(&logits, 0), 989);
        assert_eq!(rank(&logits, 3), 1001, "a NaN logit ranks last");
        assert_eq!(rank(&logits, 5000), 1001, "beyond the row");
    }

    #[test]
    fn a_scored_token_that_is_the_top_one_equals_it() {
        let logits = [0.5, 3.0, -1.0, 2.0];
        let scored = score(&logits, 1, 2);
        assert_eq!(scored.top[0], (1, scored.chosen.1));
        assert_eq!(scored.top[1].0, 3);
        let p: f32 = [0.5f32, 3.0, -1.0, 2.0].iter().map(|l| l.exp()).sum();
        assert!((scored.chosen.1 - (3.0 - p.ln())).abs() < 1e-6);
    }
}
