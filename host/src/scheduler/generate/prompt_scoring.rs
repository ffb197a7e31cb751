//! Scoring a prompt (OpenAI's `echo` with `logprobs`, lm-evaluation-harness's
//! loglikelihood): each prompt token's log probability given the tokens before it,
//! with the model's most likely tokens in its place. The prompt is prefilled in
//! chunks whose graph runs keep every position's logits; row i of a chunk starting
//! at token `from` is what the model expects after token `from + i`.

use tokenizers::Tokenizer;

use super::log_softmax;
use super::text::IncrementalDecoder;
use super::{PromptToken, TokenLogprob};

/// A scored prompt's chunks are at most this long: their logits are `chunk × vocab`
/// floats (64 MiB for Gemma's 262,144 tokens).
pub const SCORED_CHUNK: usize = 64;

pub struct PromptScoring {
    /// Alternatives per token.
    top: usize,
    tokens: Vec<PromptToken>,
    /// The prompt's text so far, for each token's offset into it.
    decoder: IncrementalDecoder,
    chars: usize,
}

impl PromptScoring {
    pub fn new(top: usize, prompt_len: usize) -> Self {
        Self {
            top,
            tokens: Vec::with_capacity(prompt_len),
            decoder: IncrementalDecoder::default(),
            chars: 0,
        }
    }

    /// The token's place in the decoded prompt; the decoder then takes its text.
    fn offset_of(&mut self, tokenizer: &Tokenizer, token: u32) -> usize {
        let at = self.chars;
        self.chars += self.decoder.push(tokenizer, token).chars().count();
        at
    }

    /// Scores tokens `from + 1 ..= end` with the rows of a chunk's logits (tokens
    /// `from .. end`): the last row of a chunk scores the next chunk's first token.
    /// The first token of the prompt has no score. The last chunk's last row, which
    /// predicts the first generated token, is left in `rows`.
    pub fn add_chunk<'a>(
        &mut self,
        prompt: &[u32],
        from: usize,
        end: usize,
        rows: &mut impl Iterator<Item = &'a mut [f32]>,
        tokenizer: &Tokenizer,
    ) {
        if from == 0 {
            let text_offset = self.offset_of(tokenizer, prompt[0]);
            self.tokens.push(PromptToken {
                token: prompt[0],
                text: token_text(tokenizer, prompt[0]),
                text_offset,
                logprob: None,
                rank: 0,
                top: Vec::new(),
            });
        }
        for &token in &prompt[from + 1..(end + 1).min(prompt.len())] {
            let Some(row) = rows.next() else { return };
            let scored = log_softmax::score(row, token, self.top);
            let text_offset = self.offset_of(tokenizer, token);
            self.tokens.push(PromptToken {
                token,
                text: token_text(tokenizer, token),
                text_offset,
                logprob: Some(scored.chosen.1),
                rank: log_softmax::rank(row, token),
                top: scored
                    .top
                    .into_iter()
                    .map(|t| token_logprob(tokenizer, t))
                    .collect(),
            });
        }
    }

    pub fn into_tokens(self) -> Vec<PromptToken> {
        self.tokens
    }
}

/// A token decoded alone (part of a multi-byte character shows as U+FFFD).
pub fn token_text(tokenizer: &Tokenizer, token: u32) -> String {
    tokenizer.decode(&[token], false).unwrap_or_default()
}

pub fn token_logprob(tokenizer: &Tokenizer, (token, logprob): (u32, f32)) -> TokenLogprob {
    TokenLogprob {
        token,
        text: token_text(tokenizer, token),
        logprob,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::models::wordlevel::WordLevel;

    /// Words "a", "b", "c", "d" as tokens 0..4 (decoded with spaces between them).
    fn words() -> Tokenizer {
        let vocab = [("a", 0), ("b", 1), ("c", 2), ("d", 3)]
            .into_iter()
            .map(|(w, i)| (w.to_string(), i))
            .collect();
        let model = WordLevel::builder()
            .vocab(vocab)
            .unk_token("a".into())
            .build()
            .unwrap();
        Tokenizer::new(model)
    }

    #[test]
    fn chunks_score_each_next_token_and_leave_the_last_row() {
        let tokenizer = words();
        let prompt = [0, 2, 1];
        let mut scoring = PromptScoring::new(1, prompt.len());
        // Row i: what follows token i. Token 2 ("c") after "a" is the likeliest.
        let mut rows = vec![vec![0.0, 1.0, 3.0, 0.0], vec![0.0, 2.0, 0.0, 0.0]];
        let mut it = rows.iter_mut().map(Vec::as_mut_slice);
        scoring.add_chunk(&prompt, 0, 2, &mut it, &tokenizer);
        assert_eq!(
            it.count(),
            0,
            "a chunk's last row scores the next chunk's first token"
        );
        let mut last = vec![vec![5.0, 0.0, 0.0, 0.0]];
        let mut it = last.iter_mut().map(Vec::as_mut_slice);
        scoring.add_chunk(&prompt, 2, 3, &mut it, &tokenizer);
        assert_eq!(
            it.count(),
            1,
            "the last chunk's last row is left for sampling"
        );
        let tokens = scoring.into_tokens();
        assert_eq!(tokens.len(), 3);
        assert_eq!((tokens[0].logprob, tokens[0].text.as_str()), (None, "a"));
        let normalizer = (1f32 + 1f32.exp() + 3f32.exp() + 1.0).ln();
        let c = tokens[1].logprob.unwrap();
        assert!((c - (3.0 - normalizer)).abs() < 1e-6, "{c}");
        assert_eq!(tokens[1].top.len(), 1);
        assert_eq!(tokens[1].top[0].token, 2);
        assert_eq!(
            tokens[1].top[0].logprob, c,
            "the top token scores as itself"
        );
        // Token 1 ("b") after "a c": the second row of the first chunk.
        assert_eq!(
            tokens.iter().map(|t| t.rank).collect::<Vec<_>>(),
            [0, 1, 1],
            "the first token has no rank; the others were the likeliest"
        );
        assert_eq!(tokens[2].token, 1);
        assert!(tokens[2].logprob.unwrap() > -0.5);
        let offsets: Vec<usize> = tokens.iter().map(|t| t.text_offset).collect();
        assert_eq!(
            offsets,
            [0, 1, 3],
            "\"a c b\": each token's place in the decoded prompt"
        );
    }
}
