//! vLLM's `truncate_prompt_tokens`: a prompt longer than `k` tokens keeps only its
//! last `k` (left truncation, so a conversation keeps its latest turns and a long
//! document its end), the tokenizer's special tokens ([CLS]/[SEP], BOS) kept in
//! place and counted in `k`, as Hugging Face's tokenizer truncates with
//! `truncation_side="left"`. `-1` cuts to what the model's context allows.
//!
//! The cut is done here, on the host's tokenization: the prompt is tokenized
//! once with and once without its special tokens, which locates them.

use super::json::{bad_value, Fields};
use crate::errors::ApiError;
use crate::host::{Host, HostError, ModelInfo};

pub const FIELD: &str = "truncate_prompt_tokens";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truncation {
    /// `-1`: as many tokens as the model's context holds (beside the answer).
    ToContext,
    /// Keep at most this many tokens.
    Last(u32),
}

/// The field, when the request has it: `-1` or an integer ≥ 1 (`null`: none).
pub fn parse(f: &mut Fields) -> Result<Option<Truncation>, ApiError> {
    Ok(match f.integer(FIELD, -1, i128::from(u32::MAX))? {
        None => None,
        Some(-1) => Some(Truncation::ToContext),
        Some(0) => {
            return Err(bad_value(
                FIELD,
                "0 would leave no prompt; use -1 (the model's context) or at least 1.",
            ))
        }
        Some(k) => Some(Truncation::Last(k as u32)),
    })
}

impl Truncation {
    /// The most tokens a prompt may keep on `info`'s model, when `reserved` of its
    /// context are left for the answer: `k`, or less where the context holds less.
    /// `u32::MAX` for `-1` on a model whose context is not known (0).
    pub fn limit(self, info: &ModelInfo, reserved: u32) -> u32 {
        let context = match info.context_length {
            0 => u32::MAX,
            n => n.saturating_sub(reserved).max(1),
        };
        match self {
            Truncation::ToContext => context,
            Truncation::Last(k) => k.min(context),
        }
    }
}

/// The most prompt tokens `info`'s model holds beside an answer of `max_tokens`,
/// or beside a quarter of its context when no `max_tokens` is set (an answer needs
/// room); `u32::MAX` when its context is not known.
pub fn room_for_prompt(info: &ModelInfo, max_tokens: Option<u32>) -> u32 {
    let reserved = max_tokens.unwrap_or(info.context_length / 4).max(1);
    Truncation::ToContext.limit(info, reserved)
}

/// `text` tokenized as the model would (`add_special` as the request asks), cut to
/// at most `limit` tokens: the special tokens the tokenizer puts around the text
/// stay, the text's first tokens go. None when the text fits.
pub fn tokens_of_text(
    host: &dyn Host,
    model: &str,
    text: &str,
    add_special: bool,
    limit: u32,
) -> Result<Option<Vec<u32>>, TruncationError> {
    let whole = host.encode(model, text, add_special)?;
    if whole.len() <= limit as usize {
        return Ok(None);
    }
    let content = if add_special {
        host.encode(model, text, false)?
    } else {
        whole.clone()
    };
    let (before, after) = special_margins(&whole, &content);
    let after_start = whole.len() - after;
    keep_last(&content, &whole[..before], &whole[after_start..], limit).map(Some)
}

/// Token ids whose special tokens the host adds (embedding inputs) cut so that,
/// with `specials` of them, they make at most `limit` tokens.
pub fn tokens_of_ids(
    ids: &[u32],
    specials: usize,
    limit: u32,
) -> Result<Vec<u32>, TruncationError> {
    let room = room_for_text(specials, limit)?;
    Ok(ids[ids.len().saturating_sub(room)..].to_vec())
}

/// The text tokens `limit` leaves beside `specials` special tokens: at least one.
fn room_for_text(specials: usize, limit: u32) -> Result<usize, TruncationError> {
    (limit as usize)
        .checked_sub(specials)
        .filter(|room| *room >= 1)
        .ok_or(TruncationError::TooSmall {
            least: specials + 1,
        })
}

/// How many special tokens come before and after the text's own tokens in `whole`.
fn special_margins(whole: &[u32], content: &[u32]) -> (usize, usize) {
    if content.is_empty() || whole.len() < content.len() {
        return (whole.len(), 0);
    }
    let before = (0..=whole.len() - content.len())
        .find(|&i| whole[i..i + content.len()] == *content)
        // A tokenizer whose specials change the text's own tokens: count them as leading.
        .unwrap_or(whole.len() - content.len());
    (before, whole.len() - content.len() - before)
}

fn keep_last(
    content: &[u32],
    before: &[u32],
    after: &[u32],
    limit: u32,
) -> Result<Vec<u32>, TruncationError> {
    let room = room_for_text(before.len() + after.len(), limit)?;
    let mut out = Vec::with_capacity(limit as usize);
    out.extend_from_slice(before);
    out.extend_from_slice(&content[content.len().saturating_sub(room)..]);
    out.extend_from_slice(after);
    Ok(out)
}

#[derive(Debug)]
pub enum TruncationError {
    /// The limit does not leave one token of text beside the special tokens.
    TooSmall {
        least: usize,
    },
    Host(HostError),
}

impl From<HostError> for TruncationError {
    fn from(e: HostError) -> Self {
        TruncationError::Host(e)
    }
}

impl TruncationError {
    /// The request's error; `host` maps the host's own (an unknown model…).
    pub fn into_api(self, host: impl FnOnce(HostError) -> ApiError) -> ApiError {
        match self {
            TruncationError::TooSmall { least } => bad_value(
                FIELD,
                format!(
                    "it leaves no room for the prompt's text beside the model's {} special \
                     tokens; use at least {least}.",
                    least - 1
                ),
            ),
            TruncationError::Host(e) => host(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margins_find_the_special_tokens_around_the_text() {
        assert_eq!(special_margins(&[101, 5, 6, 7, 102], &[5, 6, 7]), (1, 1));
        assert_eq!(special_margins(&[1, 5, 6], &[5, 6]), (1, 0));
        assert_eq!(special_margins(&[5, 6], &[5, 6]), (0, 0));
        assert_eq!(special_margins(&[101, 102], &[]), (2, 0));
    }

    #[test]
    fn the_first_tokens_of_the_text_go_and_the_specials_stay() {
        let cut = keep_last(&[5, 6, 7, 8], &[101], &[102], 4).unwrap();
        assert_eq!(cut, vec![101, 7, 8, 102]);
        let cut = keep_last(&[5, 6, 7, 8], &[], &[], 2).unwrap();
        assert_eq!(cut, vec![7, 8]);
    }

    #[test]
    fn a_limit_without_room_for_text_is_refused() {
        assert!(matches!(
            keep_last(&[5, 6], &[101], &[102], 2),
            Err(TruncationError::TooSmall { least: 3 })
        ));
        assert!(matches!(
            tokens_of_ids(&[5, 6], 2, 2),
            Err(TruncationError::TooSmall { least: 3 })
        ));
        assert_eq!(tokens_of_ids(&[5, 6, 7], 2, 4).unwrap(), vec![6, 7]);
        assert_eq!(tokens_of_ids(&[5], 2, 40).unwrap(), vec![5]);
    }
}
