//! `POST /v1/chat/completions`: parse and validate the request ([`request`]),
//! render the model's chat template in the guest ([`template`]), and hand the
//! prompt to the host's generation as text without special tokens (the template
//! carries its own BOS). The response, buffered or streamed, is [`super::generate`]'s.
//! With `tools`, the model answers in the JSON form [`tools`] describes.

pub mod request;
pub mod template;
pub mod tools;

use super::generate::{self, Flavor};
use super::sampling::ResponseFormat;
use crate::errors::ApiError;
use crate::host::{Host, ModelKind, Prompt};
use crate::http::Reply;
use request::{Message, Role};

pub fn handle(host: &dyn Host, body: &[u8]) -> Result<Reply, ApiError> {
    let req = request::parse_request(body)?;
    let info = host
        .get_model(&req.model)
        .ok_or_else(|| ApiError::model_not_found(&req.model))?;
    match info.kind {
        ModelKind::Chat => {}
        ModelKind::Completion => return Err(template::no_template(&info)),
        other => {
            return Err(ApiError::invalid(
                "model",
                format!(
                    "The model '{}' is not a chat model (kind: {}); it cannot be used with \
                     /v1/chat/completions.",
                    info.id,
                    crate::routes::models::kind_name(other)
                ),
            ))
        }
    }
    let mut messages = req.messages;
    let mut sampling = req.sampling;
    if let Some(tools) = &req.tools {
        add_instructions(&mut messages, tools.instructions());
        sampling.format = ResponseFormat::JsonSchema(tools.schema().to_string());
    }
    let prompt = template::render_prompt(&info, &messages)?;
    let tools = req.tools.is_some();
    generate::run(
        host,
        Flavor::Chat,
        &info,
        vec![Prompt::Text(prompt)],
        &sampling,
        false,
        tools,
    )
    .map_err(|mut e| {
        // With tools the schema the host judged is made of the tools' parameters.
        if tools && e.param.as_deref() == Some("response_format") {
            e.param = Some("tools".into());
            e.message = e.message.replace("response_format", "tools");
        }
        e
    })
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
