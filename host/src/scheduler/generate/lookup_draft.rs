//! Draft tokens for speculative decoding by n-gram lookup ("prompt lookup"): when a
//! sequence's last few tokens occurred before in its prompt or its own output, the
//! tokens that followed them then are a guess at what follows now. Answers that
//! quote the prompt (a document, code being edited, a JSON schema) and small models
//! repeating themselves make such guesses right often, and checking a guess costs
//! one graph run over a few more positions instead of one run per token.
//!
//! The guess never changes what is generated: each drafted position is sampled as
//! usual and the draft is kept only while the samples equal it (see the worker).

/// The longest n-gram looked up first; a miss falls back to shorter ones.
const MAX_NGRAM: usize = 3;
/// Shorter n-grams (a single token) match too often to be worth checking.
const MIN_NGRAM: usize = 2;
/// How far back the lookup searches: a bound on its cost per step for long contexts.
const MAX_LOOKBACK: usize = 4096;

/// Up to `max_tokens` tokens that followed the latest earlier occurrence of the
/// longest n-gram (3, then 2 tokens) ending `history`; empty when there is none.
pub fn draft(history: &[u32], max_tokens: usize) -> &[u32] {
    if max_tokens == 0 {
        return &[];
    }
    let window_start = history.len().saturating_sub(MAX_LOOKBACK);
    let window = &history[window_start..];
    for n in (MIN_NGRAM..=MAX_NGRAM).rev() {
        if window.len() <= n {
            continue;
        }
        let key = &window[window.len() - n..];
        // The latest occurrence before the key itself: `start + n` stays inside the
        // window, so at least one token follows it.
        let found = (0..window.len() - n)
            .rev()
            .find(|&start| &window[start..start + n] == key);
        if let Some(start) = found {
            let from = start + n;
            let to = (from + max_tokens).min(window.len());
            return &window[from..to];
        }
    }
    &[]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_trigram_drafts_what_followed_it() {
        // ... 1 2 3 4 5 ... 1 2 3 -> 4 5 6
        let h = [9, 1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3];
        assert_eq!(draft(&h, 3), &[4, 5, 6]);
        assert_eq!(draft(&h, 10), &[4, 5, 6, 7, 8, 1, 2, 3]);
    }

    #[test]
    fn the_latest_occurrence_wins() {
        let h = [1, 2, 3, 4, 0, 1, 2, 3, 5, 0, 1, 2, 3];
        assert_eq!(draft(&h, 2), &[5, 0]);
    }

    #[test]
    fn falls_back_to_a_bigram_and_never_to_one_token() {
        let h = [7, 2, 3, 8, 9, 5, 2, 3];
        assert_eq!(draft(&h, 4), &[8, 9, 5, 2]);
        let single = [4, 6, 1, 9, 9, 5, 4];
        assert!(draft(&single, 4).is_empty());
    }

    #[test]
    fn an_overlapping_run_drafts_its_continuation() {
        // "a a a a": the trigram (a, a, a) occurred one step back.
        let h = [5, 5, 5, 5];
        assert_eq!(draft(&h, 3), &[5]);
    }

    #[test]
    fn nothing_to_draft() {
        assert!(draft(&[], 4).is_empty());
        assert!(draft(&[1, 2], 4).is_empty());
        assert!(draft(&[1, 2, 3, 4, 5], 4).is_empty());
        assert!(draft(&[1, 2, 1, 2], 0).is_empty());
    }

    #[test]
    fn the_lookup_stays_within_its_window() {
        let mut h = vec![1, 2, 3, 42];
        h.extend(std::iter::repeat_n(0u32, MAX_LOOKBACK));
        h.extend([7, 1, 2, 3]);
        assert!(draft(&h, 1).is_empty());
    }
}
