//! Log probabilities in OpenAI's two shapes: chat's `logprobs.content` (one object
//! per token, with its UTF-8 bytes and its alternatives) and legacy completions'
//! parallel arrays (`tokens`, `token_logprobs`, `top_logprobs`, `text_offset`).
//! The host reports them per token, from the model's own distribution.

use crate::host::TokenLogprobs;
use serde_json::{json, Map, Value};

/// `{"content": [...], "refusal": null}` for `choices[i].logprobs` of a chat
/// completion (or of one streamed chunk).
pub fn chat(entries: &[TokenLogprobs]) -> Value {
    let content: Vec<Value> = entries
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
        .collect();
    json!({"content": content, "refusal": null})
}

/// Legacy completions' `logprobs` object. `offset` is where the first token's
/// text starts in the choice's text (in characters), so that streamed chunks
/// continue the offsets of the ones before.
pub fn completions(entries: &[TokenLogprobs], offset: usize) -> Value {
    let mut text_offset = Vec::with_capacity(entries.len());
    let mut at = offset;
    for t in entries {
        text_offset.push(at);
        at += t.chosen.text.chars().count();
    }
    let top: Vec<Value> = entries
        .iter()
        .map(|t| {
            let alternatives: Map<String, Value> = t
                .top
                .iter()
                .map(|a| (a.text.clone(), json!(a.logprob)))
                .collect();
            Value::Object(alternatives)
        })
        .collect();
    json!({
        "tokens": entries.iter().map(|t| t.chosen.text.as_str()).collect::<Vec<_>>(),
        "token_logprobs": entries.iter().map(|t| t.chosen.logprob).collect::<Vec<_>>(),
        "top_logprobs": top,
        "text_offset": text_offset,
    })
}

/// How many characters the tokens' texts add to the offsets.
pub fn chars(entries: &[TokenLogprobs]) -> usize {
    entries.iter().map(|t| t.chosen.text.chars().count()).sum()
}
