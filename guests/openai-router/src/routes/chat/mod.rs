//! `POST /v1/chat/completions`: parse and validate the request ([`request`]),
//! render the model's chat template in the guest ([`template`]), and hand the
//! prompt to the host's generation as text without special tokens (the template
//! carries its own BOS). The response, buffered or streamed, is [`super::generate`]'s.

pub mod request;
pub mod template;

use super::generate::{self, Flavor};
use crate::errors::ApiError;
use crate::host::{Host, ModelKind, Prompt};
use crate::http::Reply;

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
    let prompt = template::render_prompt(&info, &req.messages)?;
    generate::run(
        host,
        Flavor::Chat,
        &info,
        vec![Prompt::Text(prompt)],
        &req.sampling,
        false,
    )
}
