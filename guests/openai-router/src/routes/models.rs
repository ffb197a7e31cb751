//! `GET /v1/models` and `GET /v1/models/{id}`.

use crate::errors::ApiError;
use crate::host::{Host, ModelInfo, ModelKind};
use crate::http::Response;
use serde::{Serialize, Serializer};

/// `{"object":"list","data":[model...]}`
pub fn list(host: &dyn Host) -> Response {
    #[derive(Serialize)]
    struct List<'a> {
        object: &'static str,
        data: Vec<ModelObject<'a>>,
    }
    let models = host.list_models();
    let body = List {
        object: "list",
        data: models.iter().map(ModelObject::from).collect(),
    };
    Response::json(200, serde_json::to_vec(&body).unwrap_or_default())
}

/// `raw_id` is the rest of the path after `/v1/models/`, percent-encoded; ids
/// may contain `/` (e.g. `org/model`), either raw or as `%2F`.
pub fn get(host: &dyn Host, raw_id: &str) -> Result<Response, ApiError> {
    let id = percent_decode(raw_id).ok_or_else(|| {
        ApiError::invalid(
            "model",
            "The model id in the URL is not valid percent-encoded UTF-8.",
        )
    })?;
    let info = host
        .get_model(&id)
        .ok_or_else(|| ApiError::model_not_found(&id))?;
    let body = serde_json::to_vec(&ModelObject::from(&info)).unwrap_or_default();
    Ok(Response::json(200, body))
}

pub fn kind_name(kind: ModelKind) -> &'static str {
    match kind {
        ModelKind::Embedding => "embedding",
        ModelKind::Chat => "chat",
        ModelKind::Completion => "completion",
        ModelKind::RawGraph => "raw_graph",
    }
}

/// OpenAI's model object plus an `nnhost` object with what a client may need to
/// size requests. The chat template is left out (it can be large).
#[derive(Serialize)]
pub struct ModelObject<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'a str,
    nnhost: NnhostInfo<'a>,
}

#[derive(Serialize)]
struct NnhostInfo<'a> {
    kind: &'static str,
    context_length: u32,
    dimensions: Option<u32>,
    max_batch_size: u32,
    #[serde(serialize_with = "as_map")]
    metadata: &'a [(String, String)],
}

impl<'a> From<&'a ModelInfo> for ModelObject<'a> {
    fn from(m: &'a ModelInfo) -> Self {
        ModelObject {
            id: &m.id,
            object: "model",
            created: m.created,
            owned_by: &m.owned_by,
            nnhost: NnhostInfo {
                kind: kind_name(m.kind),
                context_length: m.context_length,
                dimensions: m.dimensions,
                max_batch_size: m.max_batch_size,
                metadata: &m.metadata,
            },
        }
    }
}

/// `key=value` pairs as a JSON object, in the host's order (a repeated key keeps
/// its last value).
fn as_map<S: Serializer>(pairs: &&[(String, String)], s: S) -> Result<S::Ok, S::Error> {
    let last = |i: usize, k: &String| !pairs[i + 1..].iter().any(|(k2, _)| k2 == k);
    s.collect_map(
        pairs
            .iter()
            .enumerate()
            .filter(|(i, (k, _))| last(*i, k))
            .map(|(_, (k, v))| (k, v)),
    )
}

/// Decodes `%XX` escapes; `None` on a malformed escape or invalid UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    fn hex(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hi = hex(*bytes.get(i + 1)?)?;
            let lo = hex(*bytes.get(i + 2)?)?;
            out.push(hi << 4 | lo);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}
