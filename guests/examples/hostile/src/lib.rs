//! A DELIBERATELY MISBEHAVING guest. It exists only for nnhost's containment
//! tests (tests/): each route attacks the sandbox in one way, and the tests check
//! that the host stops it cleanly and keeps serving. Never deploy it for real.
//!
//! Routes (all GET): /loop /alloc /recurse /panic /big-response /resources
//! /oversized-host-call[?count=N&len=M] /graph-hoard /graph-oversized[?rows=N&len=M]
//! /read-file /env /socket /ok

// The handler is exported on wasm32 only; `cargo test` also builds this natively.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

wit_bindgen::generate!({
    path: "../../../wit",
    world: "router",
});

use nnhost::inference::{embeddings, graph, tensors};
use serde_json::{json, Value};
use std::hint::black_box;
use wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingRequest, OutgoingResponse, ResponseOutparam,
    Scheme,
};

struct Hostile;

impl wasip2::exports::http::incoming_handler::Guest for Hostile {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let target = request.path_with_query().unwrap_or_default();
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        match path {
            "/loop" => spin(),
            "/alloc" => alloc_forever(),
            "/recurse" => send_json(out, 200, &json!({ "depth": recurse(0) })),
            "/panic" => panic!("hostile guest panicked on purpose"),
            "/big-response" => big_response(out),
            "/resources" => tensors_forever(),
            "/oversized-host-call" => send_json(out, 200, &oversized_host_call(query)),
            "/graph-hoard" => send_json(out, 200, &graph_hoard()),
            "/graph-oversized" => send_json(out, 200, &graph_oversized(query)),
            "/read-file" => send_json(out, 200, &read_file()),
            "/env" => send_json(out, 200, &env()),
            "/socket" => send_json(out, 200, &socket()),
            "/ok" => send_json(out, 200, &json!({ "ok": true })),
            _ => send_json(
                out,
                404,
                &json!({ "error": {
                "message": format!("no such attack: {path}"),
                "type": "invalid_request_error", "param": null, "code": "unknown_url" } }),
            ),
        }
    }
}

/// Burns CPU forever; black_box keeps the optimizer from removing the loop.
fn spin() -> ! {
    let mut i: u64 = 0;
    loop {
        i = black_box(i).wrapping_add(1);
    }
}

/// Allocates 1 MiB chunks without bound, writing to every page so the memory is really used.
fn alloc_forever() -> ! {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0u8; 1 << 20];
        for i in (0..chunk.len()).step_by(4096) {
            chunk[i] = 1;
        }
        chunks.push(black_box(chunk));
        black_box(&chunks);
    }
}

/// Unbounded, non-tail recursion (the addition happens after the call returns).
fn recurse(depth: u64) -> u64 {
    let frame = black_box([depth; 16]);
    if black_box(depth) == u64::MAX {
        return 0;
    }
    recurse(black_box(depth + 1)) + frame[7]
}

/// Status 200, then a 1 GiB body in 64 KiB writes; stops when a write fails.
fn big_response(out: ResponseOutparam) {
    const CHUNK: usize = 64 * 1024;
    const TOTAL: usize = 1 << 30;
    let headers = Fields::from_list(&[(
        "content-type".to_string(),
        b"application/octet-stream".to_vec(),
    )])
    .expect("valid headers");
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(200);
    let outgoing = response.body().expect("body is taken once");
    ResponseOutparam::set(out, Ok(response));
    let stream = outgoing.write().expect("stream is taken once");
    let chunk = vec![b'x'; CHUNK];
    'body: for _ in 0..TOTAL / CHUNK {
        let mut rest = &chunk[..];
        while !rest.is_empty() {
            match stream.check_write() {
                Ok(0) => stream.subscribe().block(),
                Ok(permit) => {
                    let n = rest.len().min(permit as usize);
                    if stream.write(&rest[..n]).is_err() {
                        break 'body;
                    }
                    rest = &rest[n..];
                }
                Err(_) => break 'body,
            }
        }
        if stream.blocking_flush().is_err() {
            break;
        }
    }
    drop(stream);
    let _ = OutgoingBody::finish(outgoing, None);
}

/// Creates 4-byte fp32 tensors without bound, keeping every handle alive.
fn tensors_forever() -> ! {
    let mut handles = Vec::new();
    loop {
        handles.push(tensors::Tensor::new(
            &[1],
            tensors::TensorType::Fp32,
            &[0, 0, 0, 0],
        ));
        black_box(&handles);
    }
}

/// One embeddings call with `count` strings of `len` chars (default 100,000 × 1,000).
fn oversized_host_call(query: &str) -> Value {
    let (count, len) = (param(query, "count", 100_000), param(query, "len", 1_000));
    let texts = vec!["x".repeat(len); count];
    let input = embeddings::EmbedInput::Texts(texts);
    match embeddings::embed(
        "all-MiniLM-L6-v2",
        &input,
        embeddings::EmbedOptions { truncate: false },
    ) {
        Ok(batch) => json!({ "sent": { "count": count, "len": len }, "host_ok": {
            "dimensions": batch.dimensions, "floats": batch.data.len(),
            "prompt_tokens": batch.prompt_tokens, "provider": batch.provider } }),
        Err(e) => json!({ "sent": { "count": count, "len": len }, "host_error": {
            "code": code_name(e.code), "message": e.message, "param": e.param } }),
    }
}

/// MiniLM's three token inputs, `rows` × `len` each.
fn token_inputs(rows: usize, len: usize) -> Vec<(String, tensors::Tensor)> {
    let ids: Vec<u8> = (0..rows * len)
        .flat_map(|i| (if i % len == 0 { 101i64 } else { 1000 }).to_le_bytes())
        .collect();
    let ones: Vec<u8> = (0..rows * len).flat_map(|_| 1i64.to_le_bytes()).collect();
    let zeros = vec![0u8; rows * len * 8];
    let dims = [rows as u32, len as u32];
    [
        ("input_ids", ids),
        ("attention_mask", ones),
        ("token_type_ids", zeros),
    ]
    .into_iter()
    .map(|(name, data)| {
        let t = tensors::Tensor::new(&dims, tensors::TensorType::I64, &data);
        (name.to_string(), t)
    })
    .collect()
}

/// Computes MiniLM's graph on one small batch over and over, keeping every output
/// and never reading one: the host holds them, so they must count against the
/// request's budget, or the guest could pile up host memory without end.
fn graph_hoard() -> Value {
    let context =
        match graph::load_by_name("all-MiniLM-L6-v2").and_then(|g| g.init_execution_context()) {
            Ok(c) => c,
            Err(e) => return json!({ "setup_error": e.message }),
        };
    let mut kept = Vec::new();
    loop {
        match context.compute(token_inputs(1, 100)) {
            Ok(outputs) => kept.push(outputs),
            Err(e) => {
                return json!({ "computes": kept.len(), "host_error": {
                    "code": code_name(e.code), "message": e.message } })
            }
        }
    }
}

/// One compute far beyond what one batch of the model may hold (default 512 rows
/// of 512 tokens: ONNX Runtime would need tens of GB for its attention).
fn graph_oversized(query: &str) -> Value {
    let (rows, len) = (param(query, "rows", 512), param(query, "len", 512));
    let result = graph::load_by_name("all-MiniLM-L6-v2")
        .and_then(|g| g.init_execution_context())
        .and_then(|c| c.compute(token_inputs(rows, len)));
    match result {
        Ok(outputs) => json!({ "sent": [rows, len], "host_ok": { "outputs": outputs.len() } }),
        Err(e) => json!({ "sent": [rows, len], "host_error": {
            "code": code_name(e.code), "message": e.message } }),
    }
}

fn param(query: &str, name: &str, default: usize) -> usize {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(default)
}

/// The WIT name of an error code, e.g. `invalid-argument`.
fn code_name(code: nnhost::inference::types::ErrorCode) -> String {
    let debug = format!("{code:?}"); // "ErrorCode::InvalidArgument"
    let name = debug.rsplit("::").next().unwrap_or(&debug);
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('-');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

fn outcome<T>(r: std::io::Result<T>, show: impl FnOnce(T) -> Value) -> Value {
    match r {
        Ok(v) => show(v),
        Err(e) => Value::String(format!("error: {e}")),
    }
}

fn read_file() -> Value {
    json!({
        "read_file": outcome(std::fs::read_to_string("/etc/passwd"), Value::String),
        "read_dir": outcome(std::fs::read_dir("/"), |dir| {
            json!(dir.flatten().map(|e| e.path().display().to_string()).collect::<Vec<_>>())
        }),
    })
}

fn env() -> Value {
    json!({
        "vars": std::env::vars().collect::<Vec<_>>(),
        "args": std::env::args().collect::<Vec<_>>(),
    })
}

fn socket() -> Value {
    json!({
        "tcp_connect": outcome(std::net::TcpStream::connect("127.0.0.1:22"), |s| {
            json!(format!("connected: {:?}", s.peer_addr()))
        }),
        "outgoing_http": outgoing_http(),
    })
}

/// Tries `GET http://127.0.0.1:9/` through wasi:http/outgoing-handler.
fn outgoing_http() -> Value {
    use wasip2::http::outgoing_handler;
    let request = OutgoingRequest::new(Fields::new());
    let _ = request.set_scheme(Some(&Scheme::Http));
    let _ = request.set_authority(Some("127.0.0.1:9"));
    let _ = request.set_path_with_query(Some("/"));
    match outgoing_handler::handle(request, None) {
        Err(e) => json!(format!("error: {e:?}")),
        Ok(future) => {
            future.subscribe().block();
            match future.get() {
                Some(Ok(Ok(response))) => json!(format!("response: status {}", response.status())),
                Some(Ok(Err(e))) => json!(format!("error: {e:?}")),
                Some(Err(())) | None => json!("error: no response"),
            }
        }
    }
}

/// Sends a JSON response with a `content-length`.
fn send_json(out: ResponseOutparam, status: u16, value: &Value) {
    let body = value.to_string().into_bytes();
    let headers = Fields::from_list(&[
        ("content-type".to_string(), b"application/json".to_vec()),
        (
            "content-length".to_string(),
            body.len().to_string().into_bytes(),
        ),
    ])
    .expect("valid headers");
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    let outgoing = response.body().expect("body is taken once");
    ResponseOutparam::set(out, Ok(response));
    let stream = outgoing.write().expect("stream is taken once");
    for piece in body.chunks(4096) {
        if stream.blocking_write_and_flush(piece).is_err() {
            return;
        }
    }
    drop(stream);
    let _ = OutgoingBody::finish(outgoing, None);
}

#[cfg(target_arch = "wasm32")]
wasip2::http::proxy::export!(Hostile);
