//! Log probabilities in OpenAI's two shapes: chat's `logprobs.content` (one object
//! per token, with its UTF-8 bytes and its alternatives) and legacy completions'
//! parallel arrays (`tokens`, `token_logprobs`, `top_logprobs`, `text_offset`).
//! The host reports them per token, from the model's own distribution; an echoed
//! prompt's come first in completions' arrays.

use crate::host::{Logprob, PromptToken, TokenLogprobs};
use serde_json::{json, Map, Value};

/// `{"content": [...], "refusal": null}` for `choices[i].logprobs` of a chat
/// completion (or of one streamed chunk).
pub fn chat(entries: &[TokenLogprobs]) -> Value {
    json!({"content": per_token(entries), "refusal": null})
}

/// One object per token, with its UTF-8 bytes and its alternatives: chat's
/// `logprobs.content` and the Responses API's `output_text.logprobs`.
pub fn per_token(entries: &[TokenLogprobs]) -> Vec<Value> {
    entries
        .iter()
        .map(|t| {
            let top: Vec<Value> = t
                .top
                .iter()
                .map(|a| json!({"token": a.text, "logprob": a.logprob, "bytes": a.text.as_bytes()}))
                .collect();
            json!({"token": t.chosen.text, "logprob": t.chosen.logprob,
                   "bytes": t.chosen.text.as_bytes(), "top_logprobs": top})
        })
        .collect()
}

/// Legacy completions' `logprobs` object. `offset` is where the first token's
/// text starts in the choice's text (in characters), so that streamed chunks
/// continue the offsets of the ones before.
pub fn completions(entries: &[TokenLogprobs], offset: usize) -> Value {
    completions_echoed(&[], entries, offset)
}

/// [`completions`] after an echoed prompt's tokens (their offsets are the
/// host's, into the decoded prompt; the first token has no log probability and no
/// alternatives: `null`, as at OpenAI).
pub fn completions_echoed(
    prompt: &[PromptToken],
    entries: &[TokenLogprobs],
    offset: usize,
) -> Value {
    let alternatives = |top: &[Logprob]| -> Value {
        let map: Map<String, Value> = top
            .iter()
            .map(|a| (a.text.clone(), json!(a.logprob)))
            .collect();
        Value::Object(map)
    };
    let total = prompt.len() + entries.len();
    let (mut tokens, mut logprobs) = (Vec::with_capacity(total), Vec::with_capacity(total));
    let (mut top, mut text_offset) = (Vec::with_capacity(total), Vec::with_capacity(total));
    for p in prompt {
        tokens.push(p.text.as_str());
        logprobs.push(json!(p.logprob));
        top.push(match p.logprob {
            Some(_) => alternatives(&p.top),
            None => Value::Null,
        });
        text_offset.push(p.text_offset as usize);
    }
    let mut at = offset;
    for t in entries {
        tokens.push(t.chosen.text.as_str());
        logprobs.push(json!(t.chosen.logprob));
        top.push(alternatives(&t.top));
        text_offset.push(at);
        at += t.chosen.text.chars().count();
    }
    json!({
        "tokens": tokens,
        "token_logprobs": logprobs,
        "top_logprobs": top,
        "text_offset": text_offset,
    })
}

/// vLLM's `prompt_logprobs`: per prompt token `null` (the first, which has no
/// distribution before it) or `{"<token id>": {"logprob", "rank", "decoded_token"}}`
/// holding the token itself (its `rank` among the whole vocabulary, from `ranks`)
/// and its place's `k` most likely tokens (ranks 1..=k).
pub fn prompt_vllm(tokens: &[PromptToken], ranks: &[u32], k: u32) -> Value {
    let entry = |logprob: f32, rank: Option<u32>, text: &str| json!({"logprob": logprob, "rank": rank, "decoded_token": text});
    tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let Some(logprob) = t.logprob else {
                return Value::Null;
            };
            let mut map = Map::new();
            let rank = ranks.get(i).copied().filter(|&r| r > 0);
            map.insert(t.token.to_string(), entry(logprob, rank, &t.text));
            for (r, alt) in t.top.iter().take(k as usize).enumerate() {
                map.entry(alt.token.to_string())
                    .or_insert_with(|| entry(alt.logprob, Some(r as u32 + 1), &alt.text));
            }
            Value::Object(map)
        })
        .collect()
}

/// How many characters the tokens' texts add to the offsets.
pub fn chars(entries: &[TokenLogprobs]) -> usize {
    entries.iter().map(|t| t.chosen.text.chars().count()).sum()
}
