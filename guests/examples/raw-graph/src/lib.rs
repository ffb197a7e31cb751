//! Example nnhost guest: the WASI-NN style `graph` interface. The host serves any
//! ONNX model as a bare graph (`kind = "graph"` in its config); this guest runs it
//! with tensors it builds itself and does the model-specific work in wasm.
//!
//! - `GET /graphs/{model}` → the graph's inputs and outputs (names, types, shapes).
//! - `POST /compute` with `{"model", "inputs": [{"name", "datatype", "shape", "data"}]}`
//!   → `{"model", "outputs": [...]}` in the same form (Open Inference Protocol datatype
//!   names: FP32, FP64, INT32, INT64, UINT8), every output of the graph.
//! - `POST /embed` with `{"model", "input": "text"}` → a sentence vector from a BERT-style
//!   graph: the host's tokenizer for the ids, the graph for the token states, mean
//!   pooling and L2 normalisation here. `{"model", "tokens", "embedding"}`.
//!
//! Everything but the `component` module is plain Rust over the [`Graphs`] trait, so
//! `cargo test` runs it natively with a fake graph. See docs/WRITING_GUESTS.md.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "router",
});

use nnhost::inference::tensors::TensorType;
use nnhost::inference::types::{Error as HostError, ErrorCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The largest request body the guest reads.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A tensor as plain data: what crosses the `graph` interface, without the resource.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorData {
    pub name: String,
    pub ty: TensorType,
    pub dims: Vec<u32>,
    /// Row-major little-endian elements.
    pub bytes: Vec<u8>,
}

/// One input or output as the graph declares it (`-1` = any size).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Declared {
    pub name: String,
    pub datatype: &'static str,
    pub shape: Vec<i64>,
}

/// The host calls this guest makes: the imports in the component, a fake in tests.
pub trait Graphs {
    fn describe(&self, model: &str) -> Result<(Vec<Declared>, Vec<Declared>), HostError>;
    fn encode(&self, model: &str, text: &str) -> Result<Vec<u32>, HostError>;
    fn compute(&self, model: &str, inputs: Vec<TensorData>) -> Result<Vec<TensorData>, HostError>;
}

/// A complete HTTP response (always JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Response {
    fn json(status: u16, value: &impl Serialize) -> Self {
        Response {
            status,
            body: serde_json::to_vec(value).unwrap_or_default(),
        }
    }
}

/// An error answered as `{"error":{"message","type","param","code"}}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            param: None,
            code: None,
        }
    }

    fn invalid(param: &str, message: impl Into<String>) -> Self {
        ApiError {
            param: Some(param.into()),
            ..Self::new(400, message)
        }
    }

    fn code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    pub fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Body<'a> {
            error: Inner<'a>,
        }
        #[derive(Serialize)]
        struct Inner<'a> {
            message: &'a str,
            #[serde(rename = "type")]
            kind: &'a str,
            param: Option<&'a str>,
            code: Option<&'a str>,
        }
        let kind = if self.status >= 500 {
            "server_error"
        } else {
            "invalid_request_error"
        };
        let error = Inner {
            message: &self.message,
            kind,
            param: self.param.as_deref(),
            code: self.code,
        };
        Response::json(self.status, &Body { error })
    }
}

/// The host's error record as an HTTP error; its message is safe to show clients.
impl From<HostError> for ApiError {
    fn from(e: HostError) -> Self {
        let (status, code) = match e.code {
            ErrorCode::InvalidArgument => (400, Some("invalid_tensor")),
            ErrorCode::NotFound => (404, Some("model_not_found")),
            ErrorCode::ContextLengthExceeded => (400, Some("context_length_exceeded")),
            ErrorCode::Unsupported => (400, Some("unsupported")),
            ErrorCode::ResourceExhausted => (429, Some("resource_exhausted")),
            ErrorCode::Busy => (503, Some("server_busy")),
            ErrorCode::BackendError | ErrorCode::Internal => (500, None),
        };
        ApiError {
            param: e.param,
            code,
            ..ApiError::new(status, e.message)
        }
    }
}

/// Routes one request. `read_body` is called only by the POST routes.
pub fn dispatch(
    method: &str,
    path: &str,
    host: &dyn Graphs,
    read_body: &mut dyn FnMut() -> Result<Vec<u8>, ApiError>,
) -> Response {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    let result = match (method, path) {
        ("GET", p) if p.starts_with("/graphs/") => describe(host, &p["/graphs/".len()..]),
        ("POST", "/compute") => read_body().and_then(|b| compute(host, &b)),
        ("POST", "/embed") => read_body().and_then(|b| embed(host, &b)),
        _ => Err(ApiError::new(
            404,
            format!("Unknown request: {method} {path}. Try GET /graphs/{{model}}, POST /compute or POST /embed."),
        )
        .code("unknown_url")),
    };
    result.unwrap_or_else(ApiError::into_response)
}

fn describe(host: &dyn Graphs, model: &str) -> Result<Response, ApiError> {
    let (inputs, outputs) = host.describe(model)?;
    Ok(Response::json(
        200,
        &serde_json::json!({ "model": model, "inputs": inputs, "outputs": outputs }),
    ))
}

#[derive(Deserialize)]
struct JsonTensor {
    name: String,
    datatype: String,
    shape: Vec<u32>,
    data: Vec<Value>,
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::new(400, format!("The request body is not valid: {e}.")))
}

fn compute(host: &dyn Graphs, body: &[u8]) -> Result<Response, ApiError> {
    #[derive(Deserialize)]
    struct Request {
        model: String,
        inputs: Vec<JsonTensor>,
    }
    let request: Request = parse(body)?;
    let inputs = request
        .inputs
        .iter()
        .map(from_json)
        .collect::<Result<Vec<_>, _>>()?;
    let outputs = host.compute(&request.model, inputs)?;
    let outputs: Vec<Value> = outputs.iter().map(to_json).collect();
    Ok(Response::json(
        200,
        &serde_json::json!({ "model": request.model, "outputs": outputs }),
    ))
}

pub fn type_name(ty: TensorType) -> &'static str {
    match ty {
        TensorType::Fp16 => "FP16",
        TensorType::Fp32 => "FP32",
        TensorType::Fp64 => "FP64",
        TensorType::Bf16 => "BF16",
        TensorType::U8 => "UINT8",
        TensorType::I32 => "INT32",
        TensorType::I64 => "INT64",
    }
}

/// A JSON tensor as bytes; numbers must fit the datatype exactly.
fn from_json(t: &JsonTensor) -> Result<TensorData, ApiError> {
    let param = || format!("inputs.{}", t.name);
    let count = t
        .shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d as usize))
        .filter(|&n| n == t.data.len())
        .ok_or_else(|| {
            ApiError::invalid(
                &param(),
                format!(
                    "Input {:?} has {} values, its shape {:?} needs their product.",
                    t.name,
                    t.data.len(),
                    t.shape
                ),
            )
        })?;
    let bad = |v: &Value| {
        ApiError::invalid(
            &param(),
            format!("Input {:?}: {v} is not a {} value.", t.name, t.datatype),
        )
    };
    let mut bytes = Vec::with_capacity(count * 8);
    let ty = match t.datatype.as_str() {
        "FP32" | "FP64" => {
            for v in &t.data {
                let x = v.as_f64().ok_or_else(|| bad(v))?;
                if t.datatype == "FP32" {
                    bytes.extend_from_slice(&(x as f32).to_le_bytes());
                } else {
                    bytes.extend_from_slice(&x.to_le_bytes());
                }
            }
            if t.datatype == "FP32" {
                TensorType::Fp32
            } else {
                TensorType::Fp64
            }
        }
        "INT64" => {
            for v in &t.data {
                bytes.extend_from_slice(&v.as_i64().ok_or_else(|| bad(v))?.to_le_bytes());
            }
            TensorType::I64
        }
        "INT32" => {
            for v in &t.data {
                let x = v.as_i64().and_then(|x| i32::try_from(x).ok());
                bytes.extend_from_slice(&x.ok_or_else(|| bad(v))?.to_le_bytes());
            }
            TensorType::I32
        }
        "UINT8" => {
            for v in &t.data {
                let x = v.as_u64().and_then(|x| u8::try_from(x).ok());
                bytes.push(x.ok_or_else(|| bad(v))?);
            }
            TensorType::U8
        }
        other => {
            return Err(ApiError::invalid(
                &param(),
                format!("Datatype {other:?} is not one of FP32, FP64, INT32, INT64, UINT8."),
            ))
        }
    };
    Ok(TensorData {
        name: t.name.clone(),
        ty,
        dims: t.shape.clone(),
        bytes,
    })
}

fn to_json(t: &TensorData) -> Value {
    let data: Vec<Value> = match t.ty {
        TensorType::Fp32 => floats(&t.bytes).map(|x| Value::from(x as f64)).collect(),
        TensorType::Fp64 => t
            .bytes
            .chunks_exact(8)
            .map(|c| Value::from(f64::from_le_bytes(c.try_into().unwrap_or_default())))
            .collect(),
        TensorType::I64 => t
            .bytes
            .chunks_exact(8)
            .map(|c| Value::from(i64::from_le_bytes(c.try_into().unwrap_or_default())))
            .collect(),
        TensorType::I32 => t
            .bytes
            .chunks_exact(4)
            .map(|c| Value::from(i32::from_le_bytes(c.try_into().unwrap_or_default())))
            .collect(),
        TensorType::U8 => t.bytes.iter().map(|&b| Value::from(b)).collect(),
        // Half precision would need a converter; this example reports the bytes' size.
        TensorType::Fp16 | TensorType::Bf16 => Vec::new(),
    };
    serde_json::json!({
        "name": t.name,
        "datatype": type_name(t.ty),
        "shape": t.dims,
        "data": data,
    })
}

fn floats(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap_or_default()))
}

fn int64s(name: &str, dims: Vec<u32>, values: impl Iterator<Item = i64>) -> TensorData {
    TensorData {
        name: name.into(),
        ty: TensorType::I64,
        dims,
        bytes: values.flat_map(i64::to_le_bytes).collect(),
    }
}

fn embed(host: &dyn Graphs, body: &[u8]) -> Result<Response, ApiError> {
    #[derive(Deserialize)]
    struct Request {
        model: String,
        input: String,
    }
    let request: Request = parse(body)?;
    if request.input.is_empty() {
        return Err(ApiError::invalid("input", "The input must not be empty."));
    }
    let ids = host.encode(&request.model, &request.input)?;
    let (declared, _) = host.describe(&request.model)?;
    let n = ids.len();
    let dims = vec![1, n as u32];
    // Feed what a BERT-style graph declares; anything else is not this route's kind of graph.
    let mut inputs = Vec::new();
    for input in &declared {
        inputs.push(match input.name.as_str() {
            "input_ids" => int64s("input_ids", dims.clone(), ids.iter().map(|&i| i as i64)),
            "attention_mask" => int64s("attention_mask", dims.clone(), (0..n).map(|_| 1)),
            "token_type_ids" => int64s("token_type_ids", dims.clone(), (0..n).map(|_| 0)),
            other => {
                return Err(ApiError::invalid(
                    "model",
                    format!("Model {:?} takes an input {other:?}; /embed feeds BERT-style graphs (input_ids, attention_mask, token_type_ids).", request.model),
                ))
            }
        });
    }
    let outputs = host.compute(&request.model, inputs)?;
    let states = outputs
        .iter()
        .find(|t| t.name == "last_hidden_state")
        .or_else(|| outputs.first())
        .ok_or_else(|| ApiError::new(500, "The graph returned no output."))?;
    let embedding = mean_pool(states, n)?;
    Ok(Response::json(
        200,
        &serde_json::json!({ "model": request.model, "tokens": n, "embedding": embedding }),
    ))
}

/// The mean of `[1, tokens, width]` token states, scaled to unit length.
pub fn mean_pool(states: &TensorData, tokens: usize) -> Result<Vec<f32>, ApiError> {
    let fits = states.ty == TensorType::Fp32
        && states.dims.len() == 3
        && states.dims[0] == 1
        && states.dims[1] as usize == tokens
        && tokens > 0;
    if !fits {
        return Err(ApiError::new(
            400,
            format!(
                "Output {:?} is {} {:?}; mean pooling needs FP32 [1, {tokens}, width].",
                states.name,
                type_name(states.ty),
                states.dims
            ),
        ));
    }
    let width = states.dims[2] as usize;
    let mut sum = vec![0f32; width];
    for (i, x) in floats(&states.bytes).enumerate() {
        sum[i % width] += x;
    }
    let norm = sum.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    Ok(sum.into_iter().map(|x| x / norm).collect())
}

/// The wasi:http glue and the host imports behind [`Graphs`].
#[cfg(target_arch = "wasm32")]
mod component {
    use super::*;
    use nnhost::inference::{graph, tensors::Tensor, tokenizer};
    use wasip2::http::types::{
        Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingResponse,
        ResponseOutparam,
    };
    use wasip2::io::streams::StreamError;

    struct Host;

    fn declared(list: Vec<graph::TensorInfo>) -> Vec<Declared> {
        list.into_iter()
            .map(|i| Declared {
                name: i.name,
                datatype: type_name(i.ty),
                shape: i.dimensions,
            })
            .collect()
    }

    impl Graphs for Host {
        fn describe(&self, model: &str) -> Result<(Vec<Declared>, Vec<Declared>), HostError> {
            let g = graph::load_by_name(model)?;
            Ok((declared(g.inputs()), declared(g.outputs())))
        }

        fn encode(&self, model: &str, text: &str) -> Result<Vec<u32>, HostError> {
            tokenizer::encode(model, text, true)
        }

        fn compute(
            &self,
            model: &str,
            inputs: Vec<TensorData>,
        ) -> Result<Vec<TensorData>, HostError> {
            let context = graph::load_by_name(model)?.init_execution_context()?;
            let inputs: Vec<(String, Tensor)> = inputs
                .into_iter()
                .map(|t| (t.name, Tensor::new(&t.dims, t.ty, &t.bytes)))
                .collect();
            let outputs = context.compute(inputs)?;
            Ok(outputs
                .into_iter()
                .map(|(name, t)| TensorData {
                    name,
                    ty: t.ty(),
                    dims: t.dimensions(),
                    bytes: t.data(),
                })
                .collect())
        }
    }

    struct Component;

    impl wasip2::exports::http::incoming_handler::Guest for Component {
        fn handle(request: IncomingRequest, out: ResponseOutparam) {
            let method = match request.method() {
                Method::Get => "GET",
                Method::Post => "POST",
                _ => "OTHER",
            };
            let path = request.path_with_query().unwrap_or_else(|| "/".into());
            let mut read = || read_body(&request);
            send(out, dispatch(method, &path, &Host, &mut read));
        }
    }

    /// The whole request body, at most [`MAX_BODY_BYTES`] (413 beyond).
    fn read_body(request: &IncomingRequest) -> Result<Vec<u8>, ApiError> {
        let unreadable = || ApiError::new(400, "The request body could not be read.");
        let body = request.consume().map_err(|()| unreadable())?;
        let stream = body.stream().map_err(|()| unreadable())?;
        let mut buf = Vec::new();
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) if buf.len() + chunk.len() > MAX_BODY_BYTES => {
                    return Err(ApiError::new(
                        413,
                        format!("The request body is larger than {MAX_BODY_BYTES} bytes."),
                    )
                    .code("request_too_large"))
                }
                Ok(chunk) => buf.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(_)) => return Err(unreadable()),
            }
        }
        drop(stream);
        drop(IncomingBody::finish(body));
        Ok(buf)
    }

    fn send(out: ResponseOutparam, response: Response) {
        let headers = [
            ("content-type".to_string(), b"application/json".to_vec()),
            (
                "content-length".to_string(),
                response.body.len().to_string().into_bytes(),
            ),
        ];
        let Ok(fields) = Fields::from_list(&headers) else {
            return;
        };
        let head = OutgoingResponse::new(fields);
        let _ = head.set_status_code(response.status);
        let Ok(outgoing) = head.body() else { return };
        ResponseOutparam::set(out, Ok(head));
        let Ok(stream) = outgoing.write() else { return };
        // blocking-write-and-flush takes at most 4096 bytes per call.
        for piece in response.body.chunks(4096) {
            if stream.blocking_write_and_flush(piece).is_err() {
                return; // the client went away
            }
        }
        drop(stream);
        let _ = OutgoingBody::finish(outgoing, None);
    }

    wasip2::http::proxy::export!(Component);
}

#[cfg(test)]
mod tests;
