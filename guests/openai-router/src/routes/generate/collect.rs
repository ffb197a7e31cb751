//! A generation read to its end ([`drain`]), and the non-streaming response that
//! holds every choice of a request ([`collect`]).

use std::rc::Rc;

use serde::Serialize;

use super::{
    best_of, finish_reason, logprobs, stop_reason, Choice, Flavor, Meta, PromptExtras, Shape,
    UsageJson,
};
use crate::errors::ApiError;
use crate::host::{Event, GenerationEnd, GenerationStream, TokenLogprobs};
use crate::http::Response;
use crate::routes::chat::tools::{self, ShapedAnswer, ToolCall};

/// A generation run to its end: its text, its tokens' log probabilities (when
/// asked for) and how it ended.
pub struct Drained {
    pub text: String,
    pub tokens: Vec<u32>,
    pub logprobs: Vec<TokenLogprobs>,
    pub end: GenerationEnd,
    /// Prompt tokens the host read from its prefix cache.
    pub cached_prompt_tokens: u32,
    /// vLLM's `stop_reason`: the stop string or stop token id that ended it.
    pub stop_reason: Option<serde_json::Value>,
}

/// Runs the generation to its end.
pub fn drain(mut stream: Box<dyn GenerationStream>) -> Drained {
    let mut text = String::new();
    let mut tokens = Vec::new();
    let mut logprobs = Vec::new();
    loop {
        match stream.next() {
            Event::Chunk(c) => {
                text.push_str(&c.text);
                tokens.extend(c.tokens);
                logprobs.extend(c.logprobs);
            }
            Event::Done(end) => {
                return Drained {
                    text,
                    tokens,
                    logprobs,
                    end,
                    cached_prompt_tokens: stream.cached_prompt_tokens(),
                    stop_reason: stop_reason(stream.as_ref()),
                }
            }
        }
    }
}

/// The non-streaming response: one `chat.completion` or `text_completion`
/// holding every choice. The choices' generations run together on the host;
/// they are read one after another.
pub fn collect(
    flavor: Flavor,
    meta: &Meta,
    choices: Vec<Choice>,
    shape: Shape,
    best_of: Option<best_of::BestOf>,
) -> Result<Response, ApiError> {
    let provider = choices
        .first()
        .map(|c| c.stream.provider())
        .unwrap_or_default();
    let mut finished = Vec::with_capacity(choices.len());
    let mut usage = UsageJson::default();
    for choice in choices {
        let Choice {
            counts_prompt,
            stream,
            echo,
            prompt,
            ..
        } = choice;
        let drained = drain(stream);
        let finish_reason = finish_reason(&drained.end)?;
        usage.add(
            drained.end.usage,
            drained.cached_prompt_tokens,
            counts_prompt,
        );
        finished.push((echo, drained, finish_reason, prompt));
    }
    if let Some(best) = best_of {
        finished = best_of::select(finished, best, |(_, drained, _, _)| {
            best_of::per_token(drained)
        });
    }
    // Chat has one prompt: its fields go at the top of the response.
    let first_prompt = finished
        .first()
        .map(|f| Rc::clone(&f.3))
        .unwrap_or_default();
    let mut done = Vec::with_capacity(finished.len());
    for (index, (echo, drained, finish_reason, prompt)) in finished.into_iter().enumerate() {
        let index = index as u32;
        let lp = shape.logprobs.then(|| match (flavor, &echo) {
            (Flavor::Chat, _) => logprobs::chat(&drained.logprobs),
            (Flavor::Text, Some(echo)) => echo.logprobs(&drained.logprobs),
            (Flavor::Text, None) => logprobs::completions(&drained.logprobs, 0),
        });
        let answer = if shape.tool_calls {
            tools::shape_answer(drained.text, finish_reason, &meta.id, index, false)
        } else {
            let text = match echo {
                Some(echo) => echo.text + &drained.text,
                None => drained.text,
            };
            ShapedAnswer::text(text, finish_reason)
        };
        let token_ids = shape.token_ids.then_some(drained.tokens);
        done.push(Finished {
            index,
            answer,
            logprobs: lp,
            stop_reason: drained.stop_reason,
            token_ids,
            prompt,
        });
    }
    let body = match flavor {
        Flavor::Chat => serde_json::to_vec(&ChatCompletion {
            id: &meta.id,
            object: "chat.completion",
            created: meta.created,
            model: &meta.model,
            choices: done
                .iter()
                .map(|f| ChatChoice {
                    index: f.index,
                    message: AssistantMessage {
                        role: "assistant",
                        content: f.answer.content.as_deref(),
                        tool_calls: (!f.answer.tool_calls.is_empty())
                            .then_some(f.answer.tool_calls.as_slice()),
                    },
                    logprobs: f.logprobs.as_ref(),
                    finish_reason: f.answer.finish_reason,
                    stop_reason: f.stop_reason.as_ref(),
                    token_ids: f.token_ids.as_deref(),
                })
                .collect(),
            usage,
            system_fingerprint: None,
            prompt_logprobs: first_prompt.logprobs.as_ref(),
            prompt_token_ids: first_prompt.token_ids.as_deref(),
        }),
        Flavor::Text => serde_json::to_vec(&TextCompletion {
            id: &meta.id,
            object: "text_completion",
            created: meta.created,
            model: &meta.model,
            choices: &done
                .iter()
                .map(|f| TextChoice {
                    text: f.answer.content.as_deref().unwrap_or_default(),
                    index: f.index,
                    logprobs: f.logprobs.as_ref(),
                    finish_reason: Some(f.answer.finish_reason),
                    stop_reason: f.stop_reason.as_ref(),
                    token_ids: f.token_ids.as_deref(),
                    prompt_logprobs: f.prompt.logprobs.as_ref(),
                    prompt_token_ids: f.prompt.token_ids.as_deref(),
                })
                .collect::<Vec<_>>(),
            usage: Some(Some(usage)),
        }),
    }
    .map_err(|e| ApiError::server(e.to_string()))?;
    Ok(Response::json(200, body).with_header("x-nnhost-provider", &provider))
}

/// A choice read to its end, in the order it is returned.
struct Finished {
    index: u32,
    answer: ShapedAnswer,
    logprobs: Option<serde_json::Value>,
    stop_reason: Option<serde_json::Value>,
    token_ids: Option<Vec<u32>>,
    prompt: Rc<PromptExtras>,
}

#[derive(Serialize)]
struct ChatCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<ChatChoice<'a>>,
    usage: UsageJson,
    system_fingerprint: Option<&'static str>,
    /// vLLM's: asked for with `prompt_logprobs`, `return_token_ids`.
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_logprobs: Option<&'a serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_token_ids: Option<&'a [u32]>,
}

#[derive(Serialize)]
struct ChatChoice<'a> {
    index: u32,
    message: AssistantMessage<'a>,
    logprobs: Option<&'a serde_json::Value>,
    finish_reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_reason: Option<&'a serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_ids: Option<&'a [u32]>,
}

#[derive(Serialize)]
struct AssistantMessage<'a> {
    role: &'static str,
    /// `null` when the answer is tool calls.
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<&'a [ToolCall]>,
}

/// A `text_completion` object: the whole response, or one streamed chunk.
#[derive(Serialize)]
pub(crate) struct TextCompletion<'a> {
    pub id: &'a str,
    pub object: &'static str,
    pub created: u64,
    pub model: &'a str,
    pub choices: &'a [TextChoice<'a>],
    /// Absent (`None`), `null` (`Some(None)`) or the usage object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<UsageJson>>,
}

#[derive(Serialize)]
pub(crate) struct TextChoice<'a> {
    pub text: &'a str,
    pub index: u32,
    pub logprobs: Option<&'a serde_json::Value>,
    pub finish_reason: Option<&'static str>,
    /// vLLM's: the stop string or stop token id that ended the choice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<&'a serde_json::Value>,
    /// vLLM's `return_token_ids` (streamed: the chunk's tokens; the prompt's in a
    /// choice's first chunk) and `prompt_logprobs`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_ids: Option<&'a [u32]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_logprobs: Option<&'a serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_token_ids: Option<&'a [u32]>,
}
