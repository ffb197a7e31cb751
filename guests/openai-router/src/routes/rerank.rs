//! `POST /v1/rerank` (the shape Jina, Cohere's v1 and vLLM share, which RAG
//! frameworks' rerank clients send) and `POST /v1/score` (vLLM's): how relevant texts
//! are to a query, as the cosine similarity of their embeddings. The embedding model
//! embeds the query and the documents in one batch on the host (a bi-encoder; a
//! cross-encoder would read each pair together, which these models cannot).

use crate::errors::ApiError;
use crate::host::{EmbedInput, EmbedOptions, Host, ModelInfo};
use crate::http::Response;
use crate::routes::embeddings::embedding_model;
use crate::routes::generate::new_id;
use crate::routes::json::{parse_object, wrong_type, Fields};
use serde_json::{json, Value};

/// `POST /v1/rerank` `{"model", "query", "documents": [text | {"text"}], "top_n"?,
/// "return_documents"?, "truncate"?}`: the documents, most relevant first.
pub fn rerank(host: &dyn Host, body: &[u8]) -> Result<Response, ApiError> {
    let mut f = Fields::new(parse_object(
        body,
        r#"{"model": "...", "query": "...", "documents": ["...", "..."]}"#,
    )?);
    let model = f.required_string("model")?;
    let query = f.required_string("query")?;
    let documents = match f.take("documents") {
        Some(Value::Array(items)) if !items.is_empty() => items
            .into_iter()
            .enumerate()
            .map(|(i, d)| document_text(d, &format!("documents[{i}]")))
            .collect::<Result<Vec<_>, _>>()?,
        Some(Value::Array(_)) => {
            return Err(ApiError::invalid(
                "documents",
                "'documents' must hold at least one document.",
            ))
        }
        Some(other) => return Err(wrong_type("documents", "an array of documents", &other)),
        None => {
            return Err(ApiError::invalid(
                "documents",
                "Missing required parameter: 'documents'.",
            ))
        }
    };
    let top_n = f.integer("top_n", 1, i128::from(u32::MAX))?;
    let return_documents = f.bool("return_documents")?.unwrap_or(true);
    let truncate = f.bool("truncate")?.unwrap_or(false);
    f.finish()?;
    let info = embedding_model(host, &model, "/v1/rerank")?;
    let mut texts = Vec::with_capacity(documents.len() + 1);
    texts.push(query);
    texts.extend(documents.iter().cloned());
    let (vectors, tokens) = embed(host, &info, texts, truncate, "documents")?;
    let mut results: Vec<(usize, f32)> = vectors[1..]
        .iter()
        .map(|d| cosine(&vectors[0], d))
        .enumerate()
        .collect();
    results.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    results.truncate(top_n.map_or(usize::MAX, |n| n as usize));
    let results: Vec<Value> = results
        .into_iter()
        .map(|(index, score)| {
            let mut r = json!({"index": index, "relevance_score": score});
            if return_documents {
                r["document"] = json!({"text": documents[index]});
            }
            r
        })
        .collect();
    let body = json!({"id": new_id("rerank-", host), "model": info.id, "results": results,
                      "usage": {"prompt_tokens": tokens, "total_tokens": tokens}});
    Ok(Response::json(200, body.to_string().into_bytes()))
}

/// `POST /v1/score` `{"model", "text_1": text | [texts], "text_2": text | [texts],
/// "truncate"?}`: one text against each of the others, or pairs in order.
pub fn score(host: &dyn Host, body: &[u8]) -> Result<Response, ApiError> {
    let mut f = Fields::new(parse_object(
        body,
        r#"{"model": "...", "text_1": "...", "text_2": ["...", "..."]}"#,
    )?);
    let model = f.required_string("model")?;
    let first = texts(f.take("text_1"), "text_1")?;
    let second = texts(f.take("text_2"), "text_2")?;
    let truncate = f.bool("truncate")?.unwrap_or(false);
    f.finish()?;
    if first.len() > 1 && first.len() != second.len() {
        return Err(ApiError::invalid(
            "text_2",
            format!(
                "'text_1' has {} texts and 'text_2' {}: a list in 'text_1' is scored pair by pair \
                 against one of the same length.",
                first.len(),
                second.len()
            ),
        ));
    }
    let info = embedding_model(host, &model, "/v1/score")?;
    let split = first.len();
    let mut all = first;
    all.extend(second);
    let (vectors, tokens) = embed(host, &info, all, truncate, "text_2")?;
    let (left, right) = vectors.split_at(split);
    let data: Vec<Value> = right
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let l = if left.len() == 1 { &left[0] } else { &left[i] };
            json!({"index": i, "object": "score", "score": cosine(l, r)})
        })
        .collect();
    let body = json!({"id": new_id("score-", host), "object": "list", "created": host.unix_time(),
                      "model": info.id, "data": data,
                      "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0}});
    Ok(Response::json(200, body.to_string().into_bytes()))
}

/// A document: a string, or an object with `text` (Cohere's older form).
fn document_text(v: Value, path: &str) -> Result<String, ApiError> {
    match v {
        Value::String(s) => Ok(s),
        Value::Object(mut m) => match m.remove("text") {
            Some(Value::String(s)) => Ok(s),
            _ => Err(ApiError::invalid(
                &format!("{path}.text"),
                format!("Missing required parameter: '{path}.text'."),
            )),
        },
        other => Err(wrong_type(path, "a string or {\"text\": string}", &other)),
    }
}

fn texts(v: Option<Value>, param: &str) -> Result<Vec<String>, ApiError> {
    match v {
        Some(Value::String(s)) => Ok(vec![s]),
        Some(Value::Array(items)) if !items.is_empty() => items
            .into_iter()
            .enumerate()
            .map(|(i, t)| match t {
                Value::String(s) => Ok(s),
                other => Err(wrong_type(&format!("{param}[{i}]"), "a string", &other)),
            })
            .collect(),
        Some(Value::Array(_)) => Err(ApiError::invalid(
            param,
            format!("'{param}' must hold at least one text."),
        )),
        Some(other) => Err(wrong_type(param, "a string or an array of strings", &other)),
        None => Err(ApiError::invalid(
            param,
            format!("Missing required parameter: '{param}'."),
        )),
    }
}

/// The texts' embeddings (each its own vector, in order) and the tokens they used.
/// More texts than the model's batch holds: 400 naming `param`.
fn embed(
    host: &dyn Host,
    info: &ModelInfo,
    texts: Vec<String>,
    truncate: bool,
    param: &str,
) -> Result<(Vec<Vec<f32>>, u32), ApiError> {
    let count = texts.len();
    if info.max_batch_size != 0 && count > info.max_batch_size as usize {
        return Err(ApiError::invalid(
            param,
            format!(
                "{count} texts to embed; the model '{}' takes at most {} at once.",
                info.id, info.max_batch_size
            ),
        ));
    }
    let batch = host.embed(
        &info.id,
        &EmbedInput::Texts(texts),
        EmbedOptions { truncate },
    )?;
    let dims = batch.dimensions as usize;
    if dims == 0 || batch.data.len() != count * dims {
        return Err(ApiError::server(format!(
            "The backend returned {} values for {count} inputs of {dims} dimensions.",
            batch.data.len()
        )));
    }
    let vectors = batch.data.chunks(dims).map(<[f32]>::to_vec).collect();
    Ok((vectors, batch.prompt_tokens))
}

/// Cosine similarity (vectors of a normalising model are unit length already).
fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut dot, mut aa, mut bb) = (0f32, 0f32, 0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        // f32 rounding can put a text's score against itself just above 1.
        (dot / (aa.sqrt() * bb.sqrt())).clamp(-1.0, 1.0)
    }
}
