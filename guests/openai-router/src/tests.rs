//! Native unit tests: the whole router over a fake [`Host`]. Generation tests
//! (chat, completions, templates, streaming) are in the `tests/` submodules.

mod chat;
mod choices;
mod completions;
mod echo;
mod generation;
mod logprobs;
mod responses;
mod stored;
mod support;
mod template;
mod tokenize;
mod tools;

use crate::errors::ApiError;
use crate::host::*;
use crate::http::Response;
use crate::routes::embeddings::{self, EncodingFormat};
use base64::Engine as _;
use serde_json::{json, Value};
use std::cell::RefCell;
use std::rc::Rc;

fn model(id: &str, kind: ModelKind, dims: Option<u32>, max_batch: u32) -> ModelInfo {
    ModelInfo {
        id: id.into(),
        kind,
        owned_by: "nnhost".into(),
        created: 1_700_000_000,
        context_length: 512,
        dimensions: dims,
        max_batch_size: max_batch,
        chat_template: None,
        bos_token: None,
        eos_token: None,
        stop_tokens: vec![],
        metadata: vec![("pooling".into(), "mean".into())],
    }
}

struct Fake {
    models: Vec<ModelInfo>,
    fail: Option<HostError>,
    /// Overrides the embed result's data.
    data: Option<Vec<f32>>,
    calls: RefCell<Vec<(String, EmbedInput)>>,
    /// What each generation stream returns (then its last `Done`, repeated).
    script: Vec<Event>,
    /// Scripts for the next generations, one each, before `script` is used.
    scripts: RefCell<std::collections::VecDeque<Vec<Event>>>,
    /// `generate` fails with this.
    gen_fail: Option<HostError>,
    gen_calls: RefCell<Vec<(String, Prompt, GenerateOptions)>>,
    /// `next`, `drop` of the streams and sink writes, in order.
    log: Rc<RefCell<Vec<String>>>,
    /// The key-value store.
    kv: Rc<FakeStore>,
}

#[derive(Default)]
struct FakeStore(RefCell<std::collections::HashMap<String, Vec<u8>>>);

impl KeyValue for FakeStore {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.0.borrow().get(key).cloned()
    }
    fn set(&self, key: &str, value: &[u8]) -> Result<(), HostError> {
        self.0.borrow_mut().insert(key.into(), value.to_vec());
        Ok(())
    }
    fn delete(&self, key: &str) -> bool {
        self.0.borrow_mut().remove(key).is_some()
    }
}

impl Fake {
    fn new() -> Self {
        Fake {
            models: vec![
                model("e5", ModelKind::Embedding, Some(4), 3),
                ModelInfo {
                    metadata: vec![
                        ("pooling".into(), "mean".into()),
                        ("q".into(), "int8".into()),
                        ("pooling".into(), "cls".into()),
                    ],
                    ..model("org/mini", ModelKind::Embedding, Some(4), 0)
                },
                model("chatty", ModelKind::Chat, None, 1),
            ],
            fail: None,
            data: None,
            calls: RefCell::new(vec![]),
            script: support::default_script(),
            scripts: RefCell::new(Default::default()),
            gen_fail: None,
            gen_calls: RefCell::new(vec![]),
            log: Rc::new(RefCell::new(vec![])),
            kv: Rc::default(),
        }
    }
}

impl Host for Fake {
    fn store(&self) -> Rc<dyn KeyValue> {
        self.kv.clone()
    }
    fn list_models(&self) -> Vec<ModelInfo> {
        self.models.clone()
    }
    fn get_model(&self, id: &str) -> Option<ModelInfo> {
        self.models.iter().find(|m| m.id == id).cloned()
    }
    fn embed(
        &self,
        model: &str,
        input: &EmbedInput,
        options: EmbedOptions,
    ) -> Result<EmbeddingBatch, HostError> {
        assert!(!options.truncate);
        self.calls.borrow_mut().push((model.into(), input.clone()));
        if let Some(e) = &self.fail {
            return Err(e.clone());
        }
        let n = embeddings::input_count(input);
        // Vector k is (k+1) * [0.1, 0.2, 0.2, 0.4] -- not unit length, to see renormalisation.
        let data = self.data.clone().unwrap_or_else(|| {
            (0..n)
                .flat_map(|k| [0.1, 0.2, 0.2, 0.4].map(|x| x * (k + 1) as f32))
                .collect()
        });
        Ok(EmbeddingBatch {
            dimensions: 4,
            data,
            prompt_tokens: 3 * n as u32,
            provider: "cpu-test".into(),
        })
    }
    fn generate(
        &self,
        model: &str,
        prompt: &Prompt,
        options: &GenerateOptions,
    ) -> Result<Box<dyn GenerationStream>, HostError> {
        support::fake_generate(self, model, prompt, options)
    }
    fn generate_scored(
        &self,
        model: &str,
        prompt: &Prompt,
        options: &GenerateOptions,
        top: u32,
    ) -> Result<(Vec<PromptToken>, Box<dyn GenerationStream>), HostError> {
        support::fake_generate_scored(self, model, prompt, options, top)
    }
    fn decode(&self, _model: &str, tokens: &[u32]) -> Result<String, HostError> {
        Ok(tokens.iter().map(|t| format!("<{t}>")).collect())
    }
    /// One token per byte (its value), plus 1 in front for the special tokens.
    fn encode(&self, _model: &str, text: &str, add_special: bool) -> Result<Vec<u32>, HostError> {
        let bos = add_special.then_some(1);
        Ok(bos.into_iter().chain(text.bytes().map(u32::from)).collect())
    }
    fn unix_time(&self) -> u64 {
        1_700_000_123
    }
    fn random_u64(&self) -> u64 {
        0x0123_4567_89ab_cdef
    }
}

fn call(host: &Fake, method: &str, path: &str, body: &str) -> (Response, Value) {
    let bytes = body.as_bytes().to_vec();
    let mut read = || Ok(bytes.clone());
    let r = crate::dispatch(method, path, host, &mut read).buffer();
    let v: Value = serde_json::from_slice(&r.body).expect("response is JSON");
    (r, v)
}

fn embed(body: Value) -> (Response, Value) {
    call(&Fake::new(), "POST", "/v1/embeddings", &body.to_string())
}

/// Asserts an OpenAI error with this status, param and message fragment.
fn assert_error(r: &(Response, Value), status: u16, param: Option<&str>, fragment: &str) {
    let (resp, v) = r;
    assert_eq!(resp.status, status, "{v}");
    let e = &v["error"];
    assert_eq!(e.as_object().unwrap().len(), 4, "{v}");
    assert!(e["type"].is_string() && e.get("code").is_some(), "{v}");
    assert_eq!(e["param"].as_str(), param, "{v}");
    assert!(
        e["message"].as_str().unwrap().contains(fragment),
        "{fragment:?} not in {v}"
    );
    assert_eq!(resp.header("content-type"), Some("application/json"));
}

#[test]
fn unknown_url_and_wrong_method() {
    let h = Fake::new();
    let r = call(&h, "GET", "/x?y=1", "");
    assert_error(&r, 404, None, "Unknown request URL: GET /x.");
    assert_eq!(r.1["error"]["code"], "unknown_url");
    assert_eq!(r.1["error"]["type"], "invalid_request_error");
    assert!(
        r.0.body.starts_with(br#"{"error":{"message":"Unknown"#),
        "OpenAI key order"
    );

    let r = call(&h, "GET", "/v1/embeddings", "");
    assert_error(&r, 405, None, "GET /v1/embeddings");
    assert_eq!(r.0.header("allow"), Some("POST"));
    let r = call(&h, "DELETE", "/v1/models/e5", "");
    assert_eq!((r.0.status, r.0.header("allow")), (405, Some("GET")));
}

#[test]
fn root_and_models() {
    let h = Fake::new();
    let (r, v) = call(&h, "GET", "/", "");
    assert_eq!(r.status, 200);
    assert!(v["message"].as_str().unwrap().contains("/v1/models"));

    let (r, v) = call(&h, "GET", "/v1/models?limit=1", "");
    assert_eq!(r.status, 200);
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"].as_array().unwrap().len(), 3);
    assert_eq!(
        v["data"][0],
        json!({"id": "e5", "object": "model", "created": 1_700_000_000u64, "owned_by": "nnhost",
               "nnhost": {"kind": "embedding", "context_length": 512, "dimensions": 4,
                          "max_batch_size": 3, "metadata": {"pooling": "mean"}}})
    );
    assert!(r
        .body
        .starts_with(br#"{"object":"list","data":[{"id":"e5","object":"model","#));
    assert_eq!(v["data"][2]["nnhost"]["kind"], "chat");
    assert_eq!(v["data"][2]["nnhost"]["dimensions"], Value::Null);

    let (_, v) = call(&h, "GET", "/v1/models/org/mini", "");
    assert_eq!(
        v["nnhost"]["metadata"],
        json!({"pooling": "cls", "q": "int8"}),
        "repeated key: last wins"
    );

    for path in [
        "/v1/models/org/mini",
        "/v1/models/org%2Fmini",
        "/v1/models/org%2fmini",
    ] {
        let (r, v) = call(&h, "GET", path, "");
        assert_eq!(
            (r.status, v["id"].as_str()),
            (200, Some("org/mini")),
            "{path}"
        );
    }
    let r = call(&h, "GET", "/v1/models/nope", "");
    assert_error(&r, 404, Some("model"), "The model 'nope' does not exist");
    assert_eq!(r.1["error"]["code"], "model_not_found");
    assert_error(
        &call(&h, "GET", "/v1/models/a%zz", ""),
        400,
        Some("model"),
        "percent-encoded",
    );
    assert_error(
        &call(&h, "GET", "/v1/models/%ff", ""),
        400,
        Some("model"),
        "UTF-8",
    );
}

#[test]
fn embeddings_float() {
    let h = Fake::new();
    let (r, v) = call(
        &h,
        "POST",
        "/v1/embeddings",
        r#"{"model":"e5","input":["a","b"],"user":"u1","extra":1}"#,
    );
    assert_eq!(r.status, 200, "{v}");
    assert_eq!(r.header("x-nnhost-provider"), Some("cpu-test"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        v,
        json!({"object": "list", "model": "e5",
               "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.2, 0.4]},
                        {"object": "embedding", "index": 1, "embedding": [0.2, 0.4, 0.4, 0.8]}],
               "usage": {"prompt_tokens": 6, "total_tokens": 6}})
    );
    // Shortest round-trip f32 text, not f64 noise.
    assert!(std::str::from_utf8(&r.body)
        .unwrap()
        .contains("[0.1,0.2,0.2,0.4]"));
    let calls = h.calls.borrow();
    assert_eq!(calls[0].0, "e5");
    assert!(matches!(&calls[0].1, EmbedInput::Texts(t) if t == &["a", "b"]));
}

#[test]
fn embeddings_tokens_passed_through() {
    let h = Fake::new();
    let (r, v) = call(
        &h,
        "POST",
        "/v1/embeddings",
        r#"{"model":"e5","input":[1,2,4294967295]}"#,
    );
    assert_eq!((r.status, v["data"].as_array().unwrap().len()), (200, 1));
    let (r, v) = call(
        &h,
        "POST",
        "/v1/embeddings",
        r#"{"model":"e5","input":[[1],[2,3]]}"#,
    );
    assert_eq!((r.status, v["data"].as_array().unwrap().len()), (200, 2));
    let calls = h.calls.borrow();
    assert!(matches!(&calls[0].1, EmbedInput::Tokens(t) if t == &[vec![1, 2, u32::MAX]]));
    assert!(matches!(&calls[1].1, EmbedInput::Tokens(t) if t == &[vec![1], vec![2, 3]]));
}

#[test]
fn embeddings_base64() {
    let (r, v) = embed(json!({"model": "e5", "input": "hi", "encoding_format": "base64"}));
    assert_eq!(r.status, 200, "{v}");
    let b64 = v["data"][0]["embedding"].as_str().unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let floats: Vec<f32> = bytes
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(floats, [0.1, 0.2, 0.2, 0.4]);
    // Known value: OpenAI-style base64 of [1.0f32] is "AACAPw==".
    assert_eq!(embeddings::encode_base64(&[1.0]), "AACAPw==");
}

#[test]
fn embeddings_dimensions() {
    let (r, v) = embed(json!({"model": "e5", "input": ["a", "b"], "dimensions": 2}));
    assert_eq!(r.status, 200, "{v}");
    for item in v["data"].as_array().unwrap() {
        let e: Vec<f64> = item["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(e.len(), 2);
        // [0.1, 0.2] / |.| = [1/sqrt5, 2/sqrt5]
        assert!(
            (e[0] - 0.4472136).abs() < 1e-6 && (e[1] - 0.8944272).abs() < 1e-6,
            "{e:?}"
        );
    }
    // Full size: unchanged.
    let (_, v) = embed(json!({"model": "e5", "input": "a", "dimensions": 4}));
    assert_eq!(v["data"][0]["embedding"], json!([0.1, 0.2, 0.2, 0.4]));

    assert_error(
        &embed(json!({"model": "e5", "input": "a", "dimensions": 5})),
        400,
        Some("dimensions"),
        "from 1 to 4",
    );
    for bad in [
        json!(0),
        json!(-3),
        json!(1.5),
        json!(2.0),
        json!("2"),
        json!(5_000_000_000u64),
    ] {
        let r = embed(json!({"model": "e5", "input": "a", "dimensions": bad}));
        assert_error(&r, 400, Some("dimensions"), "'dimensions'");
    }
    // Pure helper: zero vector stays zero, each vector is normalised separately.
    let out = embeddings::truncate_and_normalize(&[0.0, 0.0, 1.0, 3.0, 4.0, 9.0], 3, 2);
    assert_eq!(out, [0.0, 0.0, 0.6, 0.8]);
}

#[test]
fn embeddings_input_validation() {
    let cases: &[(Value, &str)] = &[
        (json!(""), "'input' cannot be an empty string"),
        (json!([]), "'input' cannot be an empty array"),
        (json!(null), "got null"),
        (json!(5), "got a number"),
        (json!({"a": 1}), "got an object"),
        (json!(["a", ""]), "'input[1]' cannot be an empty string"),
        (json!(["a", 1]), "'input[1]'"),
        (json!([1, "a"]), "'input[1]'"),
        (json!([[1], []]), "'input[1]' cannot be an empty array"),
        (json!([[1], 2]), "'input[1]'"),
        (json!([[1, "x"]]), "'input[0][1]'"),
        (json!([1, -1]), "cannot be negative"),
        (json!([1.5]), "must be integers"),
        (json!([4294967296u64]), "out of range"),
        (json!([[1e20]]), "out of range"),
        (json!([null]), "'input[0]'"),
        (json!([true]), "got a boolean"),
    ];
    for (input, fragment) in cases {
        let r = embed(json!({"model": "e5", "input": input}));
        assert_error(&r, 400, Some("input"), fragment);
    }
    assert_error(
        &embed(json!({"model": "e5"})),
        400,
        Some("input"),
        "Missing required parameter: 'input'",
    );
}

#[test]
fn embeddings_body_and_field_errors() {
    let h = Fake::new();
    let post = |body: &str| call(&h, "POST", "/v1/embeddings", body);
    assert_error(&post(""), 400, None, "empty");
    assert_error(
        &post("{\"model\":"),
        400,
        None,
        "could not parse the JSON body",
    );
    assert_error(
        &post("[1]"),
        400,
        None,
        "must be a JSON object, but got an array",
    );
    assert_error(
        &post(r#"{"input":"a"}"#),
        400,
        Some("model"),
        "Missing required parameter: 'model'",
    );
    assert_error(
        &post(r#"{"model":7,"input":"a"}"#),
        400,
        Some("model"),
        "expected a string, but got a number",
    );
    assert_error(
        &post(r#"{"model":"e5","input":"a","encoding_format":"int8"}"#),
        400,
        Some("encoding_format"),
        "'int8'",
    );
    assert_error(
        &post(r#"{"model":"e5","input":"a","encoding_format":1}"#),
        400,
        Some("encoding_format"),
        "got a number",
    );
    assert_error(
        &post(r#"{"model":"e5","input":"a","user":1}"#),
        400,
        Some("user"),
        "'user'",
    );
    assert!(h.calls.borrow().is_empty());
}

#[test]
fn embeddings_model_checks() {
    let r = embed(json!({"model": "nope", "input": "a"}));
    assert_error(&r, 404, Some("model"), "The model 'nope' does not exist");
    assert_eq!(r.1["error"]["code"], "model_not_found");
    assert_error(
        &embed(json!({"model": "chatty", "input": "a"})),
        400,
        Some("model"),
        "not an embedding model",
    );
    assert_error(
        &embed(json!({"model": "e5", "input": ["a", "b", "c", "d"]})),
        400,
        Some("input"),
        "'input' has 4 items; the maximum for model 'e5' is 3.",
    );
    // max-batch-size 0 = no limit.
    assert_eq!(
        embed(json!({"model": "org/mini", "input": ["a", "b", "c", "d"]}))
            .0
            .status,
        200
    );
}

#[test]
fn host_errors_are_mapped() {
    use ErrorCode::*;
    let cases = [
        (InvalidArgument, 400, "invalid_request_error", None),
        (
            NotFound,
            404,
            "invalid_request_error",
            Some("model_not_found"),
        ),
        (
            ContextLengthExceeded,
            400,
            "invalid_request_error",
            Some("context_length_exceeded"),
        ),
        (
            Unsupported,
            400,
            "invalid_request_error",
            Some("unsupported"),
        ),
        (
            ResourceExhausted,
            429,
            "rate_limit_error",
            Some("resource_exhausted"),
        ),
        (Busy, 429, "rate_limit_error", Some("server_busy")),
        (BackendError, 500, "server_error", None),
        (Internal, 500, "server_error", None),
    ];
    for (code, status, kind, oai_code) in cases {
        let mut h = Fake::new();
        h.fail = Some(HostError {
            code,
            message: "boom 600 > 512".into(),
            param: None,
        });
        let (r, v) = call(
            &h,
            "POST",
            "/v1/embeddings",
            r#"{"model":"e5","input":"a"}"#,
        );
        assert_eq!(r.status, status, "{code:?}");
        assert_eq!(v["error"]["type"], kind, "{code:?}");
        assert_eq!(v["error"]["code"].as_str(), oai_code, "{code:?}");
        assert_eq!(v["error"]["message"], "boom 600 > 512");
        let param = if code == ContextLengthExceeded {
            Some("input")
        } else {
            None
        };
        assert_eq!(v["error"]["param"].as_str(), param, "{code:?}");
        assert_eq!(r.header("retry-after").is_some(), code == Busy);
    }
    let e: ApiError = HostError {
        code: InvalidArgument,
        message: String::new(),
        param: Some("input".into()),
    }
    .into();
    assert_eq!(e.param.as_deref(), Some("input"));
    assert!(!e.message.is_empty());
}

#[test]
fn bad_backend_output_is_a_server_error() {
    let mut h = Fake::new();
    h.data = Some(vec![0.1, 0.2, 0.3]);
    assert_error(
        &call(
            &h,
            "POST",
            "/v1/embeddings",
            r#"{"model":"e5","input":"a"}"#,
        ),
        500,
        None,
        "returned 3 values",
    );
    h.data = Some(vec![0.1, f32::NAN, 0.3, 0.4]);
    assert_error(
        &call(
            &h,
            "POST",
            "/v1/embeddings",
            r#"{"model":"e5","input":"a"}"#,
        ),
        500,
        None,
        "non-finite",
    );
}

#[test]
fn body_too_large_is_413() {
    let h = Fake::new();
    let mut read = || Err(ApiError::body_too_large(crate::MAX_BODY_BYTES));
    let r = crate::dispatch("POST", "/v1/embeddings", &h, &mut read).buffer();
    assert_eq!(r.status, 413);
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["error"]["code"], "request_too_large");
    // GET routes never read the body.
    let mut read = || -> Result<Vec<u8>, ApiError> { panic!("read") };
    assert_eq!(
        crate::dispatch("GET", "/v1/models", &h, &mut read)
            .buffer()
            .status,
        200
    );
}

#[test]
fn render_writes_valid_json() {
    let v = [1.0f32, -0.0, 1e-7, -3.4028235e38, 0.33333334, 5e-45];
    let out = embeddings::render("m\"1", &v, 3, EncodingFormat::Float, 7).unwrap();
    let parsed: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(parsed["model"], "m\"1");
    let back: Vec<f32> = parsed["data"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|d| {
            d["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(back, v);
    assert_eq!(parsed["data"][1]["index"], 1);
}
