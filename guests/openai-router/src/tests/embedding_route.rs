//! `/v1/embeddings`: floats, token ids, base64, `dimensions`, and the input, body
//! and model checks.

use super::*;

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
