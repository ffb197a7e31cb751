//! Choosing the next token from logits: bias and penalties, temperature, top-k,
//! top-p, min-p, a seeded generator so that `seed` makes sampling reproducible, and
//! an optional constraint on which tokens may come next (JSON mode).

use std::collections::{HashMap, HashSet};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::constraint::Constraint;
use super::log_softmax::log_normalizer_and_top;

/// Candidates a constraint may turn down before every token of the vocabulary is
/// checked: the likely tokens are almost always allowed, and checking 262,144 tokens
/// costs a few milliseconds.
const MAX_REJECTIONS: usize = 32;

#[derive(Debug, Clone)]
pub struct SamplingParams {
    pub temperature: f32,
    pub top_p: f32,
    pub top_k: u32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    pub seed: Option<u64>,
    /// Report log probabilities with this many alternatives (see [`Logprobs`]).
    pub logprobs: Option<u32>,
    /// Added to these tokens' logits before anything else (OpenAI's `logit_bias`).
    pub logit_bias: Vec<(u32, f32)>,
    /// Keep only tokens at least `min_p` times as probable as the most likely one
    /// (after temperature, top-k and top-p); 0: off.
    pub min_p: f32,
    /// Tokens seen in the prompt or the output: positive logits divided by it,
    /// negative ones multiplied (Hugging Face's and vLLM's); 1: off.
    pub repetition_penalty: f32,
}

impl Default for SamplingParams {
    /// Greedy, nothing else on.
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: None,
            logprobs: None,
            logit_bias: Vec::new(),
            min_p: 0.0,
            repetition_penalty: 1.0,
        }
    }
}

/// The most alternatives a step reports (OpenAI's limit).
pub const MAX_TOP_LOGPROBS: u32 = 20;

/// A step's log probabilities under the model's own distribution (its logits as
/// made, before penalties and temperature): the chosen token's and the `k` most
/// likely tokens', most likely first.
#[derive(Debug, Clone, PartialEq)]
pub struct Logprobs {
    pub chosen: (u32, f32),
    pub top: Vec<(u32, f32)>,
}

pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
    /// Occurrences of each generated token, for the OpenAI penalties.
    counts: HashMap<u32, u32>,
    /// The prompt's and the output's tokens, for the repetition penalty (empty when
    /// it is off).
    seen: HashSet<u32>,
    /// Never penalised for repeating.
    exempt: Vec<u32>,
    /// Tokens not sampled while fewer than `banned_until` tokens have been (a minimum
    /// length holding back the stop tokens).
    banned: Vec<u32>,
    banned_until: usize,
    sampled: usize,
    constraint: Option<Constraint>,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let seed = params.seed.unwrap_or_else(rand::random);
        Self {
            params,
            rng: StdRng::seed_from_u64(seed),
            counts: Default::default(),
            seen: Default::default(),
            exempt: Vec::new(),
            banned: Vec::new(),
            banned_until: 0,
            sampled: 0,
            constraint: None,
        }
    }

    /// Only tokens the constraint allows are picked.
    pub fn with_constraint(mut self, constraint: Option<Constraint>) -> Self {
        self.constraint = constraint;
        self
    }

    /// The prompt's tokens count as seen for the repetition penalty, except `exempt`:
    /// the stop tokens, which a chat prompt holds once per message, and which
    /// penalised would keep the model from ever ending its answer.
    pub fn with_prompt(mut self, prompt: &[u32], exempt: &[u32]) -> Self {
        if self.params.repetition_penalty != 1.0 {
            self.seen
                .extend(prompt.iter().filter(|t| !exempt.contains(t)));
            self.exempt = exempt.to_vec();
        }
        self
    }

    /// `tokens` are not sampled until `count` tokens have been.
    pub fn banning_until(mut self, tokens: Vec<u32>, count: usize) -> Self {
        self.banned = tokens;
        self.banned_until = count;
        self
    }

    /// The constraint's output is complete: the generation should end.
    pub fn output_complete(&self) -> bool {
        self.constraint.as_ref().is_some_and(|c| c.is_complete())
    }

    /// Picks a token and remembers it for the penalties; with the step's log
    /// probabilities when they were asked for. `logits` may be modified.
    pub fn sample(&mut self, logits: &mut [f32]) -> (u32, Option<Logprobs>) {
        let measured = self
            .params
            .logprobs
            .map(|k| log_normalizer_and_top(logits, k.min(MAX_TOP_LOGPROBS) as usize));
        let mut originals = measured.as_ref().map(|_| Vec::new());
        self.adjust(logits, originals.as_mut());
        let token = self.pick(logits);
        let logprobs = measured.map(|(normalizer, top)| {
            // Bias, bans and penalties moved some logits; the model's own is reported.
            let edited = originals
                .iter()
                .flatten()
                .find(|(t, _)| *t == token)
                .map(|(_, l)| *l);
            let raw = edited
                .or_else(|| logits.get(token as usize).copied())
                .unwrap_or(f32::NEG_INFINITY);
            Logprobs {
                chosen: (token, raw - normalizer),
                top,
            }
        });
        (token, logprobs)
    }

    /// Applies the bias, the bans and the penalties to `logits`, noting in
    /// `originals` (when given) each edited token's logit before its first edit.
    fn adjust(&self, logits: &mut [f32], mut originals: Option<&mut Vec<(u32, f32)>>) {
        let mut edit = |token: u32, f: &dyn Fn(f32) -> f32| {
            if let Some(l) = logits.get_mut(token as usize) {
                if let Some(o) = originals.as_deref_mut() {
                    o.push((token, *l));
                }
                *l = f(*l);
            }
        };
        let p = &self.params;
        for &(token, bias) in &p.logit_bias {
            edit(token, &|l| l + bias);
        }
        if self.sampled < self.banned_until {
            for &token in &self.banned {
                edit(token, &|_| f32::NEG_INFINITY);
            }
        }
        let r = p.repetition_penalty;
        if r != 1.0 {
            for &token in &self.seen {
                edit(token, &|l| if l > 0.0 { l / r } else { l * r });
            }
        }
        if p.presence_penalty != 0.0 || p.frequency_penalty != 0.0 {
            for (&token, &count) in &self.counts {
                let penalty = p.presence_penalty + p.frequency_penalty * count as f32;
                edit(token, &|l| l - penalty);
            }
        }
    }

    fn pick(&mut self, logits: &mut [f32]) -> u32 {
        let p = &self.params;
        let token = match &mut self.constraint {
            None if p.temperature <= 0.0 => argmax(logits),
            None => draw(p, &mut self.rng, logits, |_| true).unwrap_or_else(|| argmax(logits)),
            Some(constraint) => {
                let token = pick_allowed(p, &mut self.rng, logits, constraint);
                constraint.advance(token);
                token
            }
        };
        *self.counts.entry(token).or_default() += 1;
        if p.repetition_penalty != 1.0 && !self.exempt.contains(&token) {
            self.seen.insert(token);
        }
        self.sampled += 1;
        token
    }
}

/// The token `p` picks among those `constraint` allows. The likely candidates are
/// tried first; only when [`MAX_REJECTIONS`] of them are turned down is every token
/// checked. (Should no token be allowed, which a vocabulary with all 256 bytes
/// rules out, the unconstrained pick is returned.)
fn pick_allowed(
    p: &SamplingParams,
    rng: &mut StdRng,
    logits: &mut [f32],
    constraint: &Constraint,
) -> u32 {
    let allowed = |t: u32| constraint.allows(t);
    if p.temperature <= 0.0 {
        for _ in 0..MAX_REJECTIONS {
            let token = argmax(logits);
            if logits
                .get(token as usize)
                .is_none_or(|l| *l == f32::NEG_INFINITY)
            {
                break;
            }
            if allowed(token) {
                return token;
            }
            logits[token as usize] = f32::NEG_INFINITY;
        }
    } else if let Some(token) = draw(p, rng, logits, allowed) {
        return token;
    }
    let fallback = argmax(logits);
    if !constraint.mask(logits) {
        return fallback;
    }
    if p.temperature <= 0.0 {
        argmax(logits)
    } else {
        draw(p, rng, logits, |_| true).unwrap_or_else(|| argmax(logits))
    }
}

/// Samples from the temperature-scaled, top-k and top-p truncated distribution;
/// a drawn token that `allowed` turns down has its probability removed and another
/// is drawn, up to [`MAX_REJECTIONS`] times (None then, or when nothing is finite).
fn draw(
    p: &SamplingParams,
    rng: &mut StdRng,
    logits: &[f32],
    allowed: impl Fn(u32) -> bool,
) -> Option<u32> {
    let mut candidates: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .filter(|(_, l)| l.is_finite())
        .map(|(i, &l)| (i as u32, l / p.temperature))
        .collect();
    if candidates.is_empty() {
        return None;
    }
    let k = if p.top_k == 0 {
        candidates.len()
    } else {
        (p.top_k as usize).min(candidates.len())
    };
    if k < candidates.len() {
        candidates.select_nth_unstable_by(k - 1, |a, b| b.1.total_cmp(&a.1));
        candidates.truncate(k);
    }
    candidates.sort_unstable_by(|a, b| b.1.total_cmp(&a.1));
    let max = candidates[0].1;
    let mut total = 0.0f64;
    let mut probs: Vec<f64> = candidates
        .iter()
        .map(|(_, l)| {
            let e = ((l - max) as f64).exp();
            total += e;
            e
        })
        .collect();
    probs.iter_mut().for_each(|x| *x /= total);
    if p.top_p < 1.0 {
        let mut cumulative = 0.0;
        let mut keep = probs.len();
        for (i, prob) in probs.iter().enumerate() {
            cumulative += prob;
            if cumulative >= p.top_p as f64 {
                keep = i + 1;
                break;
            }
        }
        probs.truncate(keep);
        let kept: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|x| *x /= kept);
    }
    if p.min_p > 0.0 {
        // Sorted, so the most likely is first and the kept tokens are a prefix.
        let floor = probs[0] * f64::from(p.min_p);
        probs.truncate(probs.iter().take_while(|x| **x >= floor).count());
        let kept: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|x| *x /= kept);
    }
    let mut mass = 1.0f64;
    for _ in 0..MAX_REJECTIONS {
        let mut r = rng.random::<f64>() * mass;
        let mut at = probs.len() - 1;
        for (i, prob) in probs.iter().enumerate() {
            if r < *prob {
                at = i;
                break;
            }
            r -= prob;
        }
        // Rounding can leave `r` past the end: take the last token still possible.
        while probs[at] == 0.0 && at > 0 {
            at -= 1;
        }
        if probs[at] == 0.0 {
            return None;
        }
        let token = candidates[at].0;
        if allowed(token) {
            return Some(token);
        }
        mass -= probs[at];
        probs[at] = 0.0;
        if mass <= 1e-12 {
            return None;
        }
    }
    None
}

/// The first index of the largest value (NaNs never win; 0 when nothing beats -inf).
/// Two passes the compiler vectorizes, where one pass with a running index does not:
/// for Gemma's 262,144-entry vocabulary that is ~0.03 ms a row instead of ~0.25.
pub fn argmax(logits: &[f32]) -> u32 {
    const LANES: usize = 16;
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = logits.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (m, &x) in lanes.iter_mut().zip(chunk) {
            *m = if x > *m { x } else { *m };
        }
    }
    let mut max = f32::NEG_INFINITY;
    for &x in lanes.iter().chain(rest) {
        if x > max {
            max = x;
        }
    }
    if max == f32::NEG_INFINITY {
        return 0;
    }
    logits.iter().position(|&x| x == max).unwrap_or(0) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::generate::constraint::{Grammar, Schema, TokenBytes};
    use std::sync::Arc;

    fn params(temperature: f32, seed: u64) -> SamplingParams {
        SamplingParams {
            temperature,
            seed: Some(seed),
            ..Default::default()
        }
    }

    #[test]
    fn min_p_keeps_the_tokens_near_the_most_likely() {
        // Probabilities ~0.50, 0.30, 0.18, 0.02 at temperature 1.
        let logits = [0.5f32.ln(), 0.3f32.ln(), 0.18f32.ln(), 0.02f32.ln()];
        let drawn = |min_p: f32| {
            let mut s = Sampler::new(SamplingParams {
                min_p,
                ..params(1.0, 11)
            });
            (0..400)
                .map(|_| s.sample(&mut logits.clone()).0)
                .collect::<HashSet<_>>()
        };
        assert_eq!(drawn(0.0).len(), 4);
        // 0.5 × 0.5 = 0.25: tokens 0 and 1 only.
        assert_eq!(drawn(0.5), HashSet::from([0, 1]));
        // 1.0 keeps the most likely alone: greedy whatever the temperature.
        assert_eq!(drawn(1.0), HashSet::from([0]));
    }

    #[test]
    fn repetition_penalty_counts_the_prompt_and_the_output() {
        let params = SamplingParams {
            repetition_penalty: 2.0,
            logprobs: Some(1),
            ..params(0.0, 1)
        };
        // Token 0 is in the prompt: 3.0 / 2 = 1.5 < 2.0.
        let mut s = Sampler::new(params.clone()).with_prompt(&[0, 0, 5], &[]);
        let logits = [3.0f32, 2.0, -1.0, -1.5];
        let (token, lp) = s.sample(&mut logits.clone());
        assert_eq!(token, 1);
        // The reported log probability is the model's own, penalty undone.
        let z = logits.iter().map(|l| l.exp()).sum::<f32>().ln();
        assert!((lp.unwrap().chosen.1 - (2.0 - z)).abs() < 1e-5);
        // Token 1 is now seen too (2.0 / 2 = 1.0 < 1.5); a negative logit is
        // multiplied: token 2's -1.0 would fall to -2.0 once seen.
        assert_eq!(s.sample(&mut logits.clone()).0, 0);
        let mut s = Sampler::new(params.clone()).with_prompt(&[0, 1, 2], &[]);
        assert_eq!(s.sample(&mut [-1.0, -1.0, -1.0, -1.5]).0, 3);
        // Stop tokens are exempt, in the prompt and in the output.
        let mut s = Sampler::new(params).with_prompt(&[0, 1], &[0]);
        assert_eq!(s.sample(&mut [1.5, 2.0, 0.0, 0.0]).0, 0);
        assert_eq!(s.sample(&mut [1.5, 2.0, 0.0, 0.0]).0, 0);
        // Off (1.0): the prompt does not matter.
        let mut s = Sampler::new(params_greedy()).with_prompt(&[0], &[]);
        assert_eq!(s.sample(&mut logits.clone()).0, 0);
    }

    fn params_greedy() -> SamplingParams {
        params(0.0, 1)
    }

    #[test]
    fn banned_tokens_come_back_after_the_minimum() {
        let mut s = Sampler::new(SamplingParams {
            logprobs: Some(0),
            ..params(0.0, 1)
        })
        .banning_until(vec![2], 2);
        let logits = [0.0f32, 1.0, 5.0];
        let z = logits.iter().map(|l| l.exp()).sum::<f32>().ln();
        assert_eq!(s.sample(&mut logits.clone()).0, 1);
        assert_eq!(s.sample(&mut logits.clone()).0, 1);
        let (token, lp) = s.sample(&mut logits.clone());
        assert_eq!(token, 2);
        assert!((lp.unwrap().chosen.1 - (5.0 - z)).abs() < 1e-5);
    }

    #[test]
    fn logit_bias_bans_and_forces_tokens() {
        let logits = [1.0f32, 3.0, 2.0];
        let mut s = Sampler::new(SamplingParams {
            logit_bias: vec![(1, -100.0)],
            ..params(0.0, 1)
        });
        assert_eq!(s.sample(&mut logits.clone()).0, 2);
        let mut s = Sampler::new(SamplingParams {
            logit_bias: vec![(0, 100.0)],
            logprobs: Some(0),
            ..params(0.9, 5)
        });
        let (token, lp) = s.sample(&mut logits.clone());
        assert_eq!(token, 0);
        // Reported under the model's own distribution, bias undone.
        let z = logits.iter().map(|l| l.exp()).sum::<f32>().ln();
        assert!((lp.unwrap().chosen.1 - (1.0 - z)).abs() < 1e-5);
    }

    #[test]
    fn logprobs_are_the_models_own_distribution() {
        let mut s = Sampler::new(SamplingParams {
            logprobs: Some(2),
            presence_penalty: 1.5,
            ..params(0.0, 1)
        });
        let logits = [1.0f32, 3.0, 2.0, f32::NEG_INFINITY];
        let z = logits[..3].iter().map(|l| l.exp()).sum::<f32>().ln();
        let (token, lp) = s.sample(&mut logits.clone());
        let lp = lp.unwrap();
        assert_eq!(token, 1);
        assert!((lp.chosen.1 - (3.0 - z)).abs() < 1e-5, "{lp:?}");
        assert_eq!(lp.top.iter().map(|t| t.0).collect::<Vec<_>>(), [1, 2]);
        assert!((lp.top[1].1 - (2.0 - z)).abs() < 1e-5);
        // The presence penalty now picks token 2, but the log probability reported for
        // token 1 or 2 stays the model's, penalty undone.
        let (token, lp) = s.sample(&mut logits.clone());
        assert_eq!(token, 2);
        assert!((lp.unwrap().chosen.1 - (2.0 - z)).abs() < 1e-5);
        let (_, lp) = Sampler::new(params(0.0, 1)).sample(&mut logits.clone());
        assert!(lp.is_none());
    }

    #[test]
    fn argmax_takes_the_first_largest_and_skips_nans() {
        // Lengths around the 16-lane chunks, the maximum in the chunks and in the rest.
        for len in [1, 15, 16, 17, 33, 1000] {
            for at in [0, len / 2, len - 1] {
                let mut v: Vec<f32> = (0..len).map(|i| (i as f32 * 0.7).sin()).collect();
                v[at] = 10.0;
                assert_eq!(argmax(&v), at as u32, "len {len}, max at {at}");
                if at + 1 < len {
                    v[len - 1] = 10.0;
                    assert_eq!(argmax(&v), at as u32, "ties go to the first");
                }
            }
        }
        assert_eq!(argmax(&[f32::NAN, 1.0, f32::NAN, 2.0, f32::NAN]), 3);
        assert_eq!(argmax(&[f32::NEG_INFINITY; 3]), 0);
        assert_eq!(argmax(&[]), 0);
        assert_eq!(argmax(&[f32::NEG_INFINITY, f32::INFINITY]), 1);
    }

    #[test]
    fn temperature_zero_is_greedy() {
        let mut s = Sampler::new(params(0.0, 1));
        assert_eq!(s.sample(&mut [0.1, 3.0, 2.0]).0, 1);
    }

    #[test]
    fn the_same_seed_gives_the_same_tokens() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let run = |seed| {
            let mut s = Sampler::new(params(0.8, seed));
            (0..20)
                .map(|_| s.sample(&mut logits.clone()).0)
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn top_k_one_is_greedy_and_top_p_keeps_the_nucleus() {
        let mut s = Sampler::new(SamplingParams {
            top_k: 1,
            ..params(1.0, 3)
        });
        for _ in 0..20 {
            assert_eq!(s.sample(&mut [0.0, 1.0, 5.0, 4.9]).0, 2);
        }
        let mut s = Sampler::new(SamplingParams {
            top_p: 0.5,
            ..params(1.0, 3)
        });
        for _ in 0..20 {
            // token 0 holds ~88% of the mass: the 0.5 nucleus is token 0 alone.
            assert_eq!(s.sample(&mut [4.0, 2.0, 0.0, 0.0]).0, 0);
        }
    }

    /// `{`, `}`, `"a"`, `:`, `1`, `x`, and a special token.
    fn json_sampler(temperature: f32, seed: u64) -> Sampler {
        let pieces = ["{", "}", "\"a\"", ":", "1", "x"];
        let vocab = TokenBytes::from_tokens(
            pieces
                .iter()
                .map(|p| Some(p.as_bytes().to_vec()))
                .chain([None]),
        );
        Sampler::new(params(temperature, seed)).with_constraint(Some(Constraint::new(
            Arc::new(vocab),
            Grammar::Json(Arc::new(Schema::any_object())),
        )))
    }

    fn generate(sampler: &mut Sampler, logits: &[f32]) -> String {
        let pieces = ["{", "}", "\"a\"", ":", "1", "x", "<eos>"];
        let mut text = String::new();
        for _ in 0..50 {
            text += pieces[sampler.sample(&mut logits.to_vec()).0 as usize];
            if sampler.output_complete() {
                return text;
            }
        }
        panic!("no complete object in 50 tokens: {text}");
    }

    #[test]
    fn json_mode_picks_only_tokens_that_continue_an_object() {
        // The model wants `x` and the special token; the constraint does not let it.
        let logits = [0.1f32, 0.5, 0.4, 0.3, 0.2, 9.0, 10.0];
        assert_eq!(generate(&mut json_sampler(0.0, 1), &logits), "{}");
        let greedy_key = [0.1f32, 0.0, 0.6, 0.3, 0.2, 9.0, 10.0];
        let mut s = json_sampler(0.0, 1);
        assert_eq!(s.sample(&mut greedy_key.to_vec()).0, 0);
        assert_eq!(s.sample(&mut greedy_key.to_vec()).0, 2);
        assert_eq!(s.sample(&mut greedy_key.to_vec()).0, 3);
        assert!(!s.output_complete());
        for seed in 0..200 {
            let text = generate(
                &mut json_sampler(1.0, seed),
                &[1.0, 0.5, 1.0, 1.0, 1.0, 5.0, 5.0],
            );
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert!(v.is_object(), "{text}");
        }
    }

    #[test]
    fn json_mode_checks_every_token_when_the_likely_ones_are_all_refused() {
        // 100 tokens the constraint refuses outrank the one it allows.
        let vocab = Arc::new(TokenBytes::from_tokens(
            std::iter::repeat_n(Some(b"x".to_vec()), 100).chain([Some(b"{".to_vec())]),
        ));
        let mut logits: Vec<f32> = (0..101).map(|i| 20.0 - i as f32 * 0.1).collect();
        logits[100] = -5.0;
        for temperature in [0.0, 1.0] {
            let mut s = Sampler::new(params(temperature, 4)).with_constraint(Some(
                Constraint::new(vocab.clone(), Grammar::Json(Arc::new(Schema::any_object()))),
            ));
            assert_eq!(s.sample(&mut logits.clone()).0, 100);
        }
    }

    #[test]
    fn frequency_penalty_discourages_repeats() {
        let mut s = Sampler::new(SamplingParams {
            frequency_penalty: 2.0,
            ..params(0.0, 1)
        });
        assert_eq!(s.sample(&mut [1.0, 0.5]).0, 0);
        assert_eq!(s.sample(&mut [1.0, 0.5]).0, 1);
    }
}
