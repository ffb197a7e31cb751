//! nnhost serves its own graphs over the Open Inference Protocol (KServe v2 /
//! Triton HTTP), so Triton's client library works against it and one nnhost can be
//! another's remote provider. JSON tensors and Triton's binary tensor extension.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use hyper::{Method, Response};
use serde_json::{json, Value};

use super::responses::{self, full, HttpResponse};
use crate::api::ModelAccess;
use crate::models::LoadedModel;
use crate::oip::{self, InferRequest, InferResponse};
use crate::tensor::Tensor;

fn error(status: u16, message: impl Into<String>) -> HttpResponse {
    responses::json(status, &json!({"error": message.into()}))
}

pub async fn handle(
    access: &ModelAccess,
    method: &Method,
    path: &str,
    headers: &hyper::HeaderMap,
    body: Bytes,
) -> HttpResponse {
    let parts: Vec<&str> = path
        .trim_start_matches("/v2")
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match (method, parts.as_slice()) {
        (&Method::GET, []) => responses::json(
            200,
            &json!({"name": "nnhost", "version": env!("CARGO_PKG_VERSION"), "extensions": ["binary_tensor_data"]}),
        ),
        (&Method::GET, ["health", "live"]) => responses::json(200, &json!({"live": true})),
        (&Method::GET, ["health", "ready"]) => responses::json(200, &json!({"ready": true})),
        (&Method::GET, ["models", name, rest @ ..]) => {
            match (model(access, name), strip_version(rest)) {
                (Err(e), _) => e,
                (Ok(m), []) => metadata(&m),
                (Ok(_), ["ready"]) => responses::json(200, &json!({"name": name, "ready": true})),
                _ => error(404, format!("unknown endpoint {path}")),
            }
        }
        (&Method::POST, ["models", name, rest @ ..]) if strip_version(rest) == ["infer"] => {
            match model(access, name) {
                Err(e) => e,
                Ok(m) => infer(m, &access.tenant, headers, body).await,
            }
        }
        _ => error(404, format!("unknown endpoint {method} {path}")),
    }
}

/// `/versions/{v}/…` addresses the one version a model has here.
fn strip_version<'a>(rest: &'a [&'a str]) -> &'a [&'a str] {
    match rest {
        ["versions", _, tail @ ..] => tail,
        _ => rest,
    }
}

// The error is the finished response for the client; it is returned once per request.
#[allow(clippy::result_large_err)]
fn model(access: &ModelAccess, name: &str) -> Result<Arc<LoadedModel>, HttpResponse> {
    let m = access
        .get(name)
        .map_err(|_| error(404, format!("model {name:?} is not served here")))?;
    m.graph().map_err(|e| error(400, e.message))?;
    Ok(m.clone())
}

fn metadata(model: &LoadedModel) -> HttpResponse {
    let Ok((_, signature)) = model.graph() else {
        return error(400, "no graph");
    };
    let describe = |list: &[crate::providers::TensorInfo]| -> Vec<Value> {
        list.iter()
            .map(|i| json!({"name": i.name, "datatype": i.dtype.v2_name(), "shape": i.shape}))
            .collect()
    };
    responses::json(
        200,
        &json!({
            "name": model.info.id,
            "versions": ["1"],
            "platform": "onnxruntime_onnx",
            "inputs": describe(&signature.inputs),
            "outputs": describe(&signature.outputs),
        }),
    )
}

async fn infer(
    model: Arc<LoadedModel>,
    tenant: &Arc<str>,
    headers: &hyper::HeaderMap,
    body: Bytes,
) -> HttpResponse {
    let header_len = headers
        .get("inference-header-content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let (json_part, mut binary) = match header_len {
        Some(n) if n <= body.len() => (body.slice(..n), body.slice(n..)),
        Some(n) => {
            return error(
                400,
                format!(
                    "Inference-Header-Content-Length {n} exceeds the body ({} bytes)",
                    body.len()
                ),
            )
        }
        None => (body, Bytes::new()),
    };
    let request: InferRequest = match serde_json::from_slice(&json_part) {
        Ok(r) => r,
        Err(e) => return error(400, format!("malformed inference request: {e}")),
    };
    let mut inputs = Vec::with_capacity(request.inputs.len());
    for input in &request.inputs {
        let tensor = match oip::binary_size(&input.parameters) {
            Some(size) => {
                if size > binary.len() {
                    return error(
                        400,
                        format!(
                            "input {:?}: binary data is shorter than {size} bytes",
                            input.name
                        ),
                    );
                }
                let bytes = binary.split_to(size);
                decode_binary(input, &bytes)
            }
            None => oip::to_tensor(input),
        };
        match tensor {
            Ok(t) => inputs.push((input.name.clone(), t)),
            Err(e) => return error(400, e),
        }
    }
    let turn = match model.graph_turn(tenant).await {
        Ok(turn) => turn,
        Err(e) => {
            let mut busy = error(429, e.message);
            busy.headers_mut()
                .insert("retry-after", hyper::header::HeaderValue::from_static("1"));
            return busy;
        }
    };
    let runner = model.clone();
    let run = move || {
        let _turn = turn; // until the run ends, even if the client has gone
        match runner.graph() {
            Ok((graph, _)) => graph.run(inputs),
            Err(e) => Err(crate::providers::ProviderError::InvalidInput(e.message)),
        }
    };
    let (outputs, provider_name) = match tokio::task::spawn_blocking(run).await {
        Ok(Ok(outputs)) => outputs,
        // As Triton does: a request the graph cannot run (out-of-range ids, more
        // positions than the model has, inconsistent shapes) is the client's 400.
        Ok(Err(e)) => return error(400, format!("inference failed: {e}")),
        Err(e) => return error(500, format!("inference worker failed: {e}")),
    };
    let wanted: Option<Vec<(String, bool)>> = request.outputs.as_ref().map(|outs| {
        outs.iter()
            .map(|o| {
                let binary = o
                    .parameters
                    .as_ref()
                    .and_then(|p| p.get("binary_data"))
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                (o.name.clone(), binary)
            })
            .collect()
    });
    let binary_default = request
        .parameters
        .as_ref()
        .and_then(|p| p.get("binary_data_output"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let selected: Vec<(String, bool)> = match wanted {
        Some(w) => w,
        None => outputs
            .iter()
            .map(|(n, _)| (n.clone(), binary_default))
            .collect(),
    };
    let mut json_outputs = Vec::new();
    let mut blobs = BytesMut::new();
    for (name, as_binary) in &selected {
        let Some((_, tensor)) = outputs.iter().find(|(n, _)| n == name) else {
            return error(400, format!("the model has no output {name:?}"));
        };
        let mut out = oip::from_tensor(name, tensor);
        if *as_binary {
            let bytes = tensor.to_le_bytes();
            out.data = Value::Null;
            out.parameters = Some(json!({"binary_data_size": bytes.len()}));
            blobs.extend_from_slice(&bytes);
        }
        json_outputs.push(out);
    }
    let response = InferResponse {
        model_name: model.info.id.clone(),
        model_version: Some("1".into()),
        id: request.id,
        outputs: json_outputs,
    };
    let json_bytes = serde_json::to_vec(&response).unwrap_or_default();
    let builder = Response::builder()
        .status(200)
        .header("x-nnhost-provider", provider_name);
    if blobs.is_empty() {
        builder
            .header("content-type", "application/json")
            .body(full(json_bytes))
            .unwrap()
    } else {
        let header_len = json_bytes.len();
        let mut body = BytesMut::from(&json_bytes[..]);
        body.extend_from_slice(&blobs);
        builder
            .header("content-type", "application/octet-stream")
            .header("inference-header-content-length", header_len)
            .body(full(body.freeze()))
            .unwrap()
    }
}

fn decode_binary(input: &oip::JsonTensor, bytes: &[u8]) -> Result<Tensor, String> {
    let dtype = crate::tensor::DType::from_v2_name(&input.datatype).ok_or_else(|| {
        format!(
            "input {:?}: datatype {:?} is not supported",
            input.name, input.datatype
        )
    })?;
    let shape = input
        .shape
        .iter()
        .map(|&d| {
            usize::try_from(d).map_err(|_| format!("input {:?}: negative dimension", input.name))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Tensor::from_le_bytes(shape, dtype, bytes).map_err(|e| format!("input {:?}: {e}", input.name))
}
