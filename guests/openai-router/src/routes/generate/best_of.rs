//! Legacy completions' `best_of`: each prompt gets `best_of` candidate generations
//! (decoded together on the host, like `n`), and the `n` with the highest log
//! probability per token are returned — OpenAI's definition of "best". Every
//! candidate's tokens count in `usage`, as at OpenAI.

use super::Drained;

/// Candidates per prompt and how many of them are returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BestOf {
    pub candidates: usize,
    pub keep: usize,
}

/// Mean log probability of a candidate's tokens (those with no tokens rank last).
pub fn per_token(drained: &Drained) -> f64 {
    if drained.logprobs.is_empty() {
        return f64::NEG_INFINITY;
    }
    let sum: f64 = drained
        .logprobs
        .iter()
        .map(|t| f64::from(t.chosen.logprob))
        .sum();
    sum / drained.logprobs.len() as f64
}

/// Keeps the best `keep` of each prompt's consecutive `candidates` items, best
/// first (ties keep their order), prompt by prompt.
pub fn select<T>(items: Vec<T>, best: BestOf, score: impl Fn(&T) -> f64) -> Vec<T> {
    let mut out = Vec::with_capacity(items.len() / best.candidates.max(1) * best.keep);
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        let mut group: Vec<(f64, T)> = items
            .by_ref()
            .take(best.candidates.max(1))
            .map(|item| (score(&item), item))
            .collect();
        group.sort_by(|a, b| b.0.total_cmp(&a.0));
        out.extend(group.into_iter().take(best.keep).map(|(_, item)| item));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_best_of_each_prompts_candidates_are_kept_in_order() {
        let scores = [-1.0, -0.2, -3.0, -0.5, -0.1, -0.1];
        let kept = select(
            (0..6).collect(),
            BestOf {
                candidates: 3,
                keep: 2,
            },
            |&i| scores[i],
        );
        assert_eq!(kept, [1, 0, 4, 5]);
    }
}
