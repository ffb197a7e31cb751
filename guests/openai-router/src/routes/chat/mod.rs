//! `POST /v1/chat/completions`: parse and validate the request ([`request`]),
//! render the model's chat template in the guest ([`template`]), and hand the
//! prompt to the host's generation as text without special tokens (the template
//! carries its own BOS). The response, buffered or streamed, is [`super::generate`]'s.
//! With `tools`, the model answers in the JSON form [`tools`] describes.

pub mod accumulate;
pub mod repeats;
pub mod request;
pub mod stored;
pub mod template;
pub mod tools;

use super::generate::{self, Flavor};
use super::sampling::ResponseFormat;
use crate::errors::ApiError;
use crate::host::{Host, ModelInfo, ModelKind, Prompt};
use crate::http::Reply;
use crate::routes::sampling::Sampling;
use request::{Message, Role};
use tools::Tools;

pub fn handle(host: &dyn Host, body: &[u8]) -> Result<Reply, ApiError> {
    let mut req = request::parse_request(body)?;
    let tools = req.tools.is_some();
    let add_special_tokens = req.add_special_tokens;
    let client_usage = req.sampling.include_usage;
    let keeper = req.stored_messages.take().map(|messages| {
        // A streamed completion is stored with its usage, which only the usage chunk has.
        req.sampling.include_usage = true;
        stored::Keeper::new(host.store(), messages, req.metadata.clone())
    });
    let chat = prepare(
        host,
        &req.model,
        req.messages,
        req.sampling,
        req.tools.as_ref(),
        &req.render,
        "/v1/chat/completions",
    )?;
    let reply = generate::run(
        host,
        Flavor::Chat,
        &chat.info,
        vec![Prompt::Text(chat.prompt)],
        &chat.sampling,
        add_special_tokens,
        tools,
    )
    .map_err(|e| tools_error(e, tools, "tools", "response_format"))?;
    Ok(match keeper {
        Some(keeper) => keeper.reply(reply, client_usage),
        None => reply,
    })
}

/// A chat request ready to generate: its model and the rendered prompt.
pub struct Prepared {
    pub info: ModelInfo,
    pub prompt: String,
    pub sampling: Sampling,
}

/// Checks that `model` is a chat model, folds the tools (if any) into the
/// conversation and the output format, and renders the chat template. `route`
/// names the endpoint in errors.
pub fn prepare(
    host: &dyn Host,
    model: &str,
    mut messages: Vec<Message>,
    mut sampling: Sampling,
    tools: Option<&Tools>,
    render: &template::RenderOptions,
    route: &str,
) -> Result<Prepared, ApiError> {
    let info = host
        .get_model(model)
        .ok_or_else(|| ApiError::model_not_found(model))?;
    match info.kind {
        ModelKind::Chat => {}
        // A base model chats with the request's own template.
        ModelKind::Completion if render.template.is_some() => {}
        ModelKind::Completion => return Err(template::no_template(&info)),
        other => {
            return Err(ApiError::invalid(
                "model",
                format!(
                    "The model '{}' is not a chat model (kind: {}); it cannot be used with \
                     {route}.",
                    info.id,
                    crate::routes::models::kind_name(other)
                ),
            ))
        }
    }
    if let Some(tools) = tools {
        add_instructions(&mut messages, tools.instructions());
        sampling.format = ResponseFormat::JsonSchema(tools.schema().to_string());
    }
    let prompt = template::render_prompt(&info, &messages, render)?;
    Ok(Prepared {
        info,
        prompt,
        sampling,
    })
}

/// With tools, the schema the host judged is made of the tools' parameters: its
/// errors are about `param` (the route's tools field).
/// A request's answer format beside tools is the schema's `response` branch: its
/// errors are about the route's format field (`format_param`).
pub fn tools_error(mut e: ApiError, tools: bool, param: &str, format_param: &str) -> ApiError {
    const ANSWER: &str = "schema.anyOf[1].properties.response";
    if tools && e.param.as_deref() == Some("response_format") {
        let (param, message) = match e.message.contains(ANSWER) {
            true => (format_param, e.message.replace(ANSWER, "schema")),
            false => (param, e.message.clone()),
        };
        e.message = message.replace("response_format", param);
        e.param = Some(param.into());
    }
    e
}

/// The tools' description goes into the system message (one is added if the
/// conversation has none).
fn add_instructions(messages: &mut Vec<Message>, instructions: String) {
    match messages.first_mut() {
        Some(first) if first.role == Role::System => {
            first.content = format!("{}\n\n{instructions}", first.content);
        }
        _ => messages.insert(
            0,
            Message {
                role: Role::System,
                content: instructions,
                name: None,
            },
        ),
    }
}
