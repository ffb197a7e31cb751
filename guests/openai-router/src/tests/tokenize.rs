//! `/tokenize` and `/detokenize`: a text or a rendered chat conversation as token
//! ids (the fake host makes one token per byte, 1 for BOS), and ids back to text.

use super::support::gen_fake;
use super::*;

fn post_json(h: &Fake, path: &str, body: Value) -> (Response, Value) {
    call(h, "POST", path, &body.to_string())
}

#[test]
fn a_prompt_is_counted_with_bos_and_messages_through_the_template() {
    let h = gen_fake();
    let (r, v) = post_json(&h, "/tokenize", json!({"model": "smol", "prompt": "hi"}));
    assert_eq!(r.status, 200, "{v}");
    assert_eq!(
        v,
        json!({"count": 3, "max_model_len": 512, "tokens": [1, 104, 105]})
    );
    let (_, v) = post_json(
        &h,
        "/tokenize",
        json!({"model": "smol", "prompt": "hi", "add_special_tokens": false}),
    );
    assert_eq!(v["tokens"], json!([104, 105]));
    let (r, v) = post_json(
        &h,
        "/tokenize",
        json!({"model": "smol", "messages": [{"role": "user", "content": "Hi"}]}),
    );
    assert_eq!(r.status, 200, "{v}");
    // The ChatML rendering, byte for byte (no BOS: the template has its own markers).
    let rendered = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n";
    assert_eq!(v["count"], rendered.len());
    assert_eq!(v["tokens"][0], u32::from(b'<'));
}

#[test]
fn tokens_come_back_as_text() {
    let h = gen_fake();
    let (r, v) = post_json(
        &h,
        "/detokenize",
        json!({"model": "smol", "tokens": [7, 8]}),
    );
    assert_eq!(r.status, 200, "{v}");
    assert_eq!(v, json!({"prompt": "<7><8>"}));
}

#[test]
fn bad_tokenize_requests_name_their_field() {
    let h = gen_fake();
    let cases: &[(&str, Value, &str, u16)] = &[
        ("/tokenize", json!({"model": "smol"}), "prompt", 400),
        (
            "/tokenize",
            json!({"model": "smol", "prompt": "a", "messages": []}),
            "messages",
            400,
        ),
        (
            "/tokenize",
            json!({"model": "smol", "prompt": ["a", "b"]}),
            "prompt",
            400,
        ),
        (
            "/tokenize",
            json!({"model": "base", "messages": [{"role": "user", "content": "x"}]}),
            "model",
            400,
        ),
        (
            "/tokenize",
            json!({"model": "nope", "prompt": "a"}),
            "model",
            404,
        ),
        (
            "/tokenize",
            json!({"model": "smol", "prompt": "a", "extra": 1}),
            "extra",
            400,
        ),
        ("/detokenize", json!({"model": "smol"}), "tokens", 400),
        (
            "/detokenize",
            json!({"model": "smol", "tokens": [-1]}),
            "tokens",
            400,
        ),
        (
            "/detokenize",
            json!({"model": "smol", "tokens": "1 2"}),
            "tokens",
            400,
        ),
    ];
    for (path, body, param, status) in cases {
        let (r, v) = post_json(&h, path, body.clone());
        assert_eq!(r.status, *status, "{path} {body}: {v}");
        assert_eq!(v["error"]["param"], *param, "{path} {body}: {v}");
    }
    let (r, _) = call(&h, "GET", "/tokenize", "");
    assert_eq!(r.status, 405);
}
