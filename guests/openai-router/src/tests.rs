//! Native unit tests: the whole router over a fake [`Host`]. Generation tests
//! (chat, completions, templates, streaming) are in the `tests/` submodules.

mod chat;
mod chat_stored;
mod choices;
mod completions;
mod conversations;
mod echo;
mod embedding_route;
mod generation;
mod logprobs;
mod rerank;
mod responses;
mod stored;
mod support;
mod template;
mod tokenize;
mod tools;
mod truncation;
mod vllm_outputs;

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
    /// Each embed call's `truncate` option.
    truncates: RefCell<Vec<bool>>,
    /// What each generation stream returns (then its last `Done`, repeated).
    script: Vec<Event>,
    /// Scripts for the next generations, one each, before `script` is used.
    scripts: RefCell<std::collections::VecDeque<Vec<Event>>>,
    /// `generate` fails with this.
    gen_fail: Option<HostError>,
    gen_calls: RefCell<Vec<(String, Prompt, GenerateOptions)>>,
    /// The `sampling-extras` of each generation started, in order.
    gen_extras: RefCell<Vec<SamplingExtras>>,
    /// `next`, `drop` of the streams and sink writes, in order.
    log: Rc<RefCell<Vec<String>>>,
    /// The key-value store.
    kv: Rc<FakeStore>,
    random_draws: std::cell::Cell<u64>,
}

/// Keys in the order they were first set, as the host's store lists them, each
/// with its version (the write count when it was written).
#[derive(Default)]
struct FakeStore {
    entries: RefCell<Vec<(String, u64, Vec<u8>)>>,
    writes: std::cell::Cell<u64>,
    /// Written just before the next `set_if` (another request racing this one).
    racing_write: RefCell<Option<(String, Vec<u8>)>>,
}

impl KeyValue for FakeStore {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.get_versioned(key).map(|(_, v)| v)
    }
    fn set(&self, key: &str, value: &[u8]) -> Result<(), HostError> {
        let version = self.writes.get() + 1;
        self.writes.set(version);
        let mut entries = self.entries.borrow_mut();
        match entries.iter_mut().find(|(k, ..)| k == key) {
            Some((_, v, bytes)) => (*v, *bytes) = (version, value.to_vec()),
            None => entries.push((key.into(), version, value.to_vec())),
        }
        Ok(())
    }
    fn delete(&self, key: &str) -> bool {
        let mut entries = self.entries.borrow_mut();
        let before = entries.len();
        entries.retain(|(k, ..)| k != key);
        entries.len() < before
    }
    fn keys(&self, prefix: &str) -> Vec<String> {
        let entries = self.entries.borrow();
        entries
            .iter()
            .filter(|(k, ..)| k.starts_with(prefix))
            .map(|(k, ..)| k.clone())
            .collect()
    }
    fn get_versioned(&self, key: &str) -> Option<(u64, Vec<u8>)> {
        let entries = self.entries.borrow();
        entries
            .iter()
            .find(|(k, ..)| k == key)
            .map(|(_, v, bytes)| (*v, bytes.clone()))
    }
    fn set_if(&self, key: &str, version: Option<u64>, value: &[u8]) -> Result<bool, HostError> {
        let racing = self.racing_write.borrow_mut().take();
        if let Some((k, v)) = racing {
            self.set(&k, &v)?;
        }
        if self.get_versioned(key).map(|(v, _)| v) != version {
            return Ok(false);
        }
        self.set(key, value).map(|()| true)
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
            truncates: RefCell::new(vec![]),
            script: support::default_script(),
            scripts: RefCell::new(Default::default()),
            gen_fail: None,
            gen_calls: RefCell::new(vec![]),
            gen_extras: RefCell::new(vec![]),
            log: Rc::new(RefCell::new(vec![])),
            kv: Rc::default(),
            random_draws: Default::default(),
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
        self.truncates.borrow_mut().push(options.truncate);
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
        extras: &SamplingExtras,
    ) -> Result<Box<dyn GenerationStream>, HostError> {
        self.gen_extras.borrow_mut().push(extras.clone());
        support::fake_generate(self, model, prompt, options)
    }
    fn generate_scored(
        &self,
        model: &str,
        prompt: &Prompt,
        options: &GenerateOptions,
        extras: &SamplingExtras,
        top: u32,
    ) -> Result<(Vec<PromptToken>, Box<dyn GenerationStream>), HostError> {
        self.gen_extras.borrow_mut().push(extras.clone());
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
    /// Different each call (ids must differ), the same sequence in every test.
    fn random_u64(&self) -> u64 {
        let n = self.random_draws.get() + 1;
        self.random_draws.set(n);
        0x0123_4567_89ab_cdef_u64.wrapping_mul(n)
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
