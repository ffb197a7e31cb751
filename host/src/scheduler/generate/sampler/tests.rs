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
        let mut s = Sampler::new(params(temperature, 4)).with_constraint(Some(Constraint::new(
            vocab.clone(),
            Grammar::Json(Arc::new(Schema::any_object())),
        )));
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
