//! `POST /v1/embeddings`: parse and validate the OpenAI request, call the host's
//! `embeddings::embed`, optionally shorten the vectors (`dimensions`), and write the
//! response JSON straight into a byte buffer (the hot path: many floats).

use crate::errors::ApiError;
use crate::host::{EmbedInput, EmbedOptions, Host, ModelInfo, ModelKind};
use crate::http::Response;
use crate::routes::json::{type_name, Fields};
use crate::routes::truncation::{self, Truncation, TruncationError};
use base64::Engine as _;
use serde_json::{Map, Value};
use std::io::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodingFormat {
    Float,
    Base64,
}

#[derive(Debug)]
pub struct EmbeddingsRequest {
    pub model: String,
    pub input: EmbedInput,
    pub encoding_format: EncodingFormat,
    pub dimensions: Option<u32>,
    /// TEI's `truncate`: inputs longer than the model's context keep their start
    /// (the host cuts them).
    pub truncate: bool,
    /// vLLM's `truncate_prompt_tokens`: long inputs keep their last tokens.
    pub truncation: Option<Truncation>,
}

impl EmbeddingsRequest {
    /// Number of inputs (vectors to return).
    pub fn count(&self) -> usize {
        input_count(&self.input)
    }
}

pub fn input_count(input: &EmbedInput) -> usize {
    match input {
        EmbedInput::Texts(t) => t.len(),
        EmbedInput::Tokens(t) => t.len(),
    }
}

/// `model` as an embedding model the tenant may use (404 if none, 400 for another
/// kind; `route` names the endpoint).
pub fn embedding_model(host: &dyn Host, model: &str, route: &str) -> Result<ModelInfo, ApiError> {
    let info = host
        .get_model(model)
        .ok_or_else(|| ApiError::model_not_found(model))?;
    if info.kind != ModelKind::Embedding {
        return Err(ApiError::invalid(
            "model",
            format!(
                "The model '{}' is a {} model, not an embedding model; it cannot be used with {route}.",
                info.id,
                crate::routes::models::kind_name(info.kind).replace('_', " ")
            ),
        ));
    }
    Ok(info)
}

pub fn handle(host: &dyn Host, body: &[u8]) -> Result<Response, ApiError> {
    let req = parse_request(body)?;
    let info = embedding_model(host, &req.model, "/v1/embeddings")?;
    let count = req.count();
    // A max-batch-size of 0 is read as "no limit set".
    if info.max_batch_size != 0 && count > info.max_batch_size as usize {
        return Err(ApiError::invalid(
            "input",
            format!(
                "'input' has {count} items; the maximum for model '{}' is {}.",
                info.id, info.max_batch_size
            ),
        ));
    }
    if let (Some(want), Some(model_dims)) = (req.dimensions, info.dimensions) {
        check_dimensions(want, model_dims, &info.id)?;
    }

    let (input, truncate) = match req.truncation.map(|t| t.limit(&info, 0)) {
        Some(limit) if limit < u32::MAX => {
            (keep_last_tokens(host, &info.id, req.input, limit)?, false)
        }
        // `-1` on a model whose context is not known: the host's own limit.
        Some(_) => (req.input, true),
        None => (req.input, req.truncate),
    };
    let batch = host.embed(&info.id, &input, EmbedOptions { truncate })?;

    let dims = batch.dimensions as usize;
    if dims == 0 || batch.data.len() != count * dims {
        return Err(ApiError::server(format!(
            "The backend returned {} values for {count} inputs of {dims} dimensions.",
            batch.data.len()
        )));
    }
    let (vectors, out_dims) = match req.dimensions {
        Some(want) => {
            check_dimensions(want, batch.dimensions, &info.id)?;
            let want = want as usize;
            if want < dims {
                (truncate_and_normalize(&batch.data, dims, want), want)
            } else {
                (batch.data, dims)
            }
        }
        None => (batch.data, dims),
    };
    let body = render(
        &info.id,
        &vectors,
        out_dims,
        req.encoding_format,
        batch.prompt_tokens,
    )?;
    Ok(Response::json(200, body).with_header("x-nnhost-provider", &batch.provider))
}

/// Inputs cut to their last tokens, so that with the special tokens the host adds
/// each makes at most `limit` (texts become their token ids, which embed the same).
fn keep_last_tokens(
    host: &dyn Host,
    model: &str,
    input: EmbedInput,
    limit: u32,
) -> Result<EmbedInput, ApiError> {
    let failed = |e: TruncationError| e.into_api(|e| ApiError::from(e).param("input"));
    let specials = host
        .encode(model, "", true)
        .map_err(|e| failed(e.into()))?
        .len();
    let ids = match input {
        EmbedInput::Tokens(ids) => ids,
        EmbedInput::Texts(texts) => texts
            .iter()
            .map(|text| host.encode(model, text, false))
            .collect::<Result<_, _>>()
            .map_err(|e| failed(e.into()))?,
    };
    ids.iter()
        .map(|ids| truncation::tokens_of_ids(ids, specials, limit))
        .collect::<Result<_, _>>()
        .map(EmbedInput::Tokens)
        .map_err(failed)
}

fn check_dimensions(want: u32, model_dims: u32, model: &str) -> Result<(), ApiError> {
    if want > model_dims {
        return Err(ApiError::invalid(
            "dimensions",
            format!(
                "'dimensions' is {want}, but model '{model}' produces {model_dims}-dimensional vectors; \
                 use a value from 1 to {model_dims}."
            ),
        ));
    }
    Ok(())
}

/// Parses and validates the request body (everything that needs no model info).
pub fn parse_request(body: &[u8]) -> Result<EmbeddingsRequest, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "The request body is empty; expected a JSON object like {\"model\": \"...\", \"input\": \"...\"}.",
        ));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "We could not parse the JSON body of your request: {e}."
        ))
    })?;
    let mut obj: Map<String, Value> = match value {
        Value::Object(m) => m,
        other => {
            return Err(ApiError::bad_request(format!(
                "The request body must be a JSON object, but got {} instead.",
                type_name(&other)
            )))
        }
    };

    let model = match obj.remove("model") {
        None | Some(Value::Null) => {
            return Err(ApiError::invalid(
                "model",
                "Missing required parameter: 'model'.",
            ))
        }
        Some(Value::String(s)) if s.is_empty() => {
            return Err(ApiError::invalid(
                "model",
                "'model' cannot be an empty string.",
            ))
        }
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(ApiError::invalid(
                "model",
                format!(
                    "Invalid type for 'model': expected a string, but got {} instead.",
                    type_name(&other)
                ),
            ))
        }
    };

    let input = match obj.remove("input") {
        None => {
            return Err(ApiError::invalid(
                "input",
                "Missing required parameter: 'input'.",
            ))
        }
        Some(v) => parse_input(v)?,
    };

    let encoding_format = match obj.remove("encoding_format") {
        None | Some(Value::Null) => EncodingFormat::Float,
        Some(Value::String(s)) => match s.as_str() {
            "float" => EncodingFormat::Float,
            "base64" => EncodingFormat::Base64,
            _ => {
                return Err(ApiError::invalid(
                    "encoding_format",
                    format!(
                        "Invalid value for 'encoding_format': '{s}'. Supported values are: 'float' and 'base64'."
                    ),
                ))
            }
        },
        Some(other) => {
            return Err(ApiError::invalid(
                "encoding_format",
                format!(
                    "Invalid type for 'encoding_format': expected a string, but got {} instead.",
                    type_name(&other)
                ),
            ))
        }
    };

    let dimensions = match obj.remove("dimensions") {
        None | Some(Value::Null) => None,
        Some(v) => Some(parse_dimensions(&v)?),
    };

    match obj.get("user") {
        None | Some(Value::Null) | Some(Value::String(_)) => {}
        Some(other) => {
            return Err(ApiError::invalid(
                "user",
                format!(
                    "Invalid type for 'user': expected a string, but got {} instead.",
                    type_name(other)
                ),
            ))
        }
    }
    let mut rest = Fields::new(obj);
    let truncate = rest.bool("truncate")?.unwrap_or(false);
    let truncation = truncation::parse(&mut rest)?;
    // Other fields are ignored, as many OpenAI-compatible servers do.

    Ok(EmbeddingsRequest {
        model,
        input,
        encoding_format,
        dimensions,
        truncate,
        truncation,
    })
}

fn parse_dimensions(v: &Value) -> Result<u32, ApiError> {
    let bad = |what: String| {
        ApiError::invalid(
            "dimensions",
            format!("Invalid value for 'dimensions': {what}"),
        )
    };
    let Value::Number(n) = v else {
        return Err(bad(format!(
            "expected an integer, but got {}.",
            type_name(v)
        )));
    };
    if let Some(u) = n.as_u64() {
        return match u32::try_from(u) {
            Ok(0) => Err(bad("must be at least 1, got 0.".into())),
            Ok(d) => Ok(d),
            Err(_) => Err(bad(format!("{u} is larger than any model's dimensions."))),
        };
    }
    if n.is_i64() {
        return Err(bad(format!("must be at least 1, got {n}.")));
    }
    Err(bad(format!("expected an integer, but got {n}.")))
}

const INPUT_SHAPES: &str =
    "a string, an array of strings, an array of token ids, or an array of token-id arrays";

/// `input`: a string, an array of strings, an array of token ids, or an array of
/// token-id arrays; nothing empty, no mixing.
pub fn parse_input(v: Value) -> Result<EmbedInput, ApiError> {
    let invalid = |msg: String| ApiError::invalid("input", msg);
    let items = match v {
        Value::String(s) if s.is_empty() => {
            return Err(invalid("'input' cannot be an empty string.".into()))
        }
        Value::String(s) => return Ok(EmbedInput::Texts(vec![s])),
        Value::Array(items) => items,
        other => {
            return Err(invalid(format!(
                "Invalid type for 'input': expected {INPUT_SHAPES}, but got {} instead.",
                type_name(&other)
            )))
        }
    };
    if items.is_empty() {
        return Err(invalid("'input' cannot be an empty array.".into()));
    }
    let mismatch = |i: usize, expected: &str, got: &Value| {
        invalid(format!(
            "Invalid type for 'input[{i}]': expected {expected} like 'input[0]', but got {} instead. \
             'input' must be {INPUT_SHAPES}.",
            type_name(got)
        ))
    };
    match &items[0] {
        Value::String(_) => {
            let mut texts = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                match item {
                    Value::String(s) if s.is_empty() => {
                        return Err(invalid(format!("'input[{i}]' cannot be an empty string.")))
                    }
                    Value::String(s) => texts.push(s),
                    other => return Err(mismatch(i, "a string", &other)),
                }
            }
            Ok(EmbedInput::Texts(texts))
        }
        Value::Number(_) => {
            let mut tokens = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::Number(_) => {
                        tokens.push(token_id(item, "input", &format!("input[{i}]"))?)
                    }
                    other => return Err(mismatch(i, "a token id", other)),
                }
            }
            Ok(EmbedInput::Tokens(vec![tokens]))
        }
        Value::Array(_) => {
            let mut seqs = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let Value::Array(inner) = item else {
                    return Err(mismatch(i, "an array of token ids", item));
                };
                if inner.is_empty() {
                    return Err(invalid(format!("'input[{i}]' cannot be an empty array.")));
                }
                let seq = inner
                    .iter()
                    .enumerate()
                    .map(|(j, t)| token_id(t, "input", &format!("input[{i}][{j}]")))
                    .collect::<Result<Vec<u32>, _>>()?;
                seqs.push(seq);
            }
            Ok(EmbedInput::Tokens(seqs))
        }
        other => Err(invalid(format!(
            "Invalid type for 'input[0]': expected a string, a token id or an array of token ids, \
             but got {} instead. 'input' must be {INPUT_SHAPES}.",
            type_name(other)
        ))),
    }
}

/// A token id: an integer from 0 to 2^32-1 (`path` names it in messages,
/// `param` is the request field it belongs to).
pub(crate) fn token_id(v: &Value, param: &str, path: &str) -> Result<u32, ApiError> {
    let invalid = |msg: String| ApiError::invalid(param, msg);
    let Value::Number(n) = v else {
        return Err(invalid(format!(
            "Invalid type for '{path}': expected a token id (an integer from 0 to {}), but got {} instead.",
            u32::MAX,
            type_name(v)
        )));
    };
    if let Some(u) = n.as_u64() {
        return u32::try_from(u).map_err(|_| {
            invalid(format!(
                "'{path}' is {u}, which is out of range for a token id (0 to {}).",
                u32::MAX
            ))
        });
    }
    if n.is_i64() {
        return Err(invalid(format!(
            "'{path}' is {n}; token ids cannot be negative."
        )));
    }
    let f = n.as_f64().unwrap_or(f64::NAN);
    if f.fract() == 0.0 {
        return Err(invalid(format!(
            "'{path}' is {n}, which is out of range for a token id (0 to {}).",
            u32::MAX
        )));
    }
    Err(invalid(format!(
        "'{path}' is {n}; token ids must be integers."
    )))
}

/// Keeps the first `keep` values of each `dims`-long vector and rescales each to
/// unit length (a zero vector stays zero).
pub fn truncate_and_normalize(data: &[f32], dims: usize, keep: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(data.len() / dims.max(1) * keep);
    for vector in data.chunks_exact(dims) {
        let head = &vector[..keep];
        let norm = head
            .iter()
            .map(|&x| f64::from(x) * f64::from(x))
            .sum::<f64>()
            .sqrt();
        if norm > 0.0 && norm.is_finite() {
            out.extend(head.iter().map(|&x| (f64::from(x) / norm) as f32));
        } else {
            out.extend_from_slice(head);
        }
    }
    out
}

/// Base64 (standard alphabet, padded) of the little-endian f32 bytes, as OpenAI does.
pub fn encode_base64(vector: &[f32]) -> String {
    let mut bytes = Vec::with_capacity(vector.len() * 4);
    for x in vector {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Writes the response JSON. `vectors` holds `count * dims` floats back to back.
pub fn render(
    model: &str,
    vectors: &[f32],
    dims: usize,
    format: EncodingFormat,
    prompt_tokens: u32,
) -> Result<Vec<u8>, ApiError> {
    let count = vectors.len() / dims.max(1);
    let per_vector = match format {
        // A unit vector's floats take ~11-13 chars with their comma.
        EncodingFormat::Float => dims * 13 + 48,
        EncodingFormat::Base64 => dims.div_ceil(3) * 16 + 48,
    };
    let mut out: Vec<u8> = Vec::with_capacity(count * per_vector + model.len() + 128);
    out.extend_from_slice(b"{\"object\":\"list\",\"data\":[");
    let mut fmt = ryu::Buffer::new();
    for (i, vector) in vectors.chunks_exact(dims.max(1)).enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let _ = write!(
            out,
            "{{\"object\":\"embedding\",\"index\":{i},\"embedding\":"
        );
        match format {
            EncodingFormat::Float => {
                out.push(b'[');
                for (j, &x) in vector.iter().enumerate() {
                    if !x.is_finite() {
                        return Err(ApiError::server(format!(
                            "The model produced a non-finite value ({x}) in embedding {i}."
                        )));
                    }
                    if j > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(fmt.format_finite(x).as_bytes());
                }
                out.push(b']');
            }
            EncodingFormat::Base64 => {
                out.push(b'"');
                out.extend_from_slice(encode_base64(vector).as_bytes());
                out.push(b'"');
            }
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"],\"model\":");
    serde_json::to_writer(&mut out, model).map_err(|e| ApiError::server(e.to_string()))?;
    let _ = write!(
        out,
        ",\"usage\":{{\"prompt_tokens\":{prompt_tokens},\"total_tokens\":{prompt_tokens}}}}}"
    );
    Ok(out)
}
