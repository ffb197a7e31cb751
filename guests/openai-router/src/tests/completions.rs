//! `/v1/completions`: prompt shapes, its own fields, defaults and model kinds
//! (the shared sampling fields are tested in `chat`).

use super::support::{complete, gen_fake};
use super::*;

fn sent(body: Value) -> (Prompt, GenerateOptions) {
    let h = gen_fake();
    let (r, v) = complete(&h, body);
    assert_eq!(r.status, 200, "{v}");
    let calls = h.gen_calls.borrow();
    (calls[0].1.clone(), calls[0].2.clone())
}

fn text_of(p: &Prompt) -> &str {
    match p {
        Prompt::Text(t) => t,
        Prompt::Tokens(_) => panic!("tokens"),
    }
}

fn tokens_of(p: &Prompt) -> &[u32] {
    match p {
        Prompt::Tokens(t) => t,
        Prompt::Text(_) => panic!("text"),
    }
}

#[test]
fn prompt_shapes() {
    let (p, o) = sent(json!({"model": "base", "prompt": "Once upon"}));
    assert_eq!(text_of(&p), "Once upon");
    assert!(o.add_special_tokens, "raw text gets the model's BOS");
    assert_eq!(o.max_tokens, Some(16), "OpenAI's default");
    assert_eq!(
        text_of(&sent(json!({"model": "base", "prompt": ["one"]})).0),
        "one"
    );
    assert_eq!(text_of(&sent(json!({"model": "base", "prompt": ""})).0), "");
    assert_eq!(
        tokens_of(&sent(json!({"model": "base", "prompt": [1, 2, 4294967295u64]})).0),
        [1, 2, u32::MAX]
    );
    assert_eq!(
        tokens_of(&sent(json!({"model": "base", "prompt": [[5, 6]]})).0),
        [5, 6]
    );
    // Chat models take raw prompts too; sampling fields are shared.
    let (_, o) = sent(
        json!({"model": "smol", "prompt": "x", "max_tokens": 3, "temperature": 0.2,
        "stop": ["a"], "seed": 1, "echo": false, "suffix": null, "best_of": 1, "logprobs": null,
        "n": 1, "user": "u"}),
    );
    assert_eq!(
        (o.max_tokens, o.temperature, o.seed),
        (Some(3), 0.2, Some(1))
    );
    assert_eq!(o.stop, ["a"]);
}

#[test]
fn invalid_prompts_and_fields() {
    let cases: &[(Value, &str, &str)] = &[
        (json!({}), "prompt", "Missing required parameter: 'prompt'"),
        (
            json!({"prompt": null}),
            "prompt",
            "Missing required parameter",
        ),
        (json!({"prompt": 5}), "prompt", "got a number"),
        (json!({"prompt": []}), "prompt", "cannot be an empty array"),
        (json!({"prompt": ["a", 5]}), "prompt", "'prompt[1]'"),
        (
            json!({"prompt": [[1], []]}),
            "prompt",
            "'prompt[1]' cannot be an empty array",
        ),
        (
            json!({"prompt": ["a", "b", "c"], "n": 6}),
            "n",
            "18 choices",
        ),
        (
            json!({"prompt": [[]]}),
            "prompt",
            "'prompt[0]' cannot be an empty array",
        ),
        (json!({"prompt": [1, "a"]}), "prompt", "'prompt[1]'"),
        (json!({"prompt": [1, -1]}), "prompt", "cannot be negative"),
        (json!({"prompt": [[1, 2.5]]}), "prompt", "'prompt[0][1]'"),
        (json!({"prompt": [4294967296u64]}), "prompt", "out of range"),
        (json!({"prompt": [null]}), "prompt", "'prompt[0]'"),
        (
            json!({"prompt": "x", "echo": 1}),
            "echo",
            "expected a boolean",
        ),
        (
            json!({"prompt": "x", "suffix": "end"}),
            "suffix",
            "not supported",
        ),
        (
            json!({"prompt": "x", "suffix": 1}),
            "suffix",
            "expected a string",
        ),
        (
            json!({"prompt": "x", "best_of": 2, "n": 3}),
            "best_of",
            "must be at least 'n' (3)",
        ),
        (
            json!({"prompt": "x", "best_of": 2, "stream": true}),
            "best_of",
            "cannot be used with 'stream'",
        ),
        (
            json!({"prompt": "x", "best_of": 17}),
            "best_of",
            "maximum of 16",
        ),
        (
            json!({"prompt": ["x", "y", "z"], "best_of": 6}),
            "best_of",
            "18 candidates",
        ),
        (
            json!({"prompt": "x", "best_of": 0}),
            "best_of",
            "minimum of 1",
        ),
        (
            json!({"prompt": "x", "logprobs": 6}),
            "logprobs",
            "maximum of 5",
        ),
        (
            json!({"prompt": "x", "max_tokens": 0}),
            "max_tokens",
            "0 with 'echo': true",
        ),
        (
            json!({"prompt": "x", "max_completion_tokens": 5}),
            "max_completion_tokens",
            "Unrecognized",
        ),
        (json!({"prompt": "x", "n": 17}), "n", "maximum of 16"),
        (
            json!({"prompt": "x", "stream_options": {}}),
            "stream_options",
            "only allowed when 'stream' is true",
        ),
        (
            json!({"prompt": "x", "messages": []}),
            "messages",
            "Unrecognized",
        ),
    ];
    let h = gen_fake();
    for (extra, param, fragment) in cases {
        let mut body = json!({"model": "base"});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        assert_error(&complete(&h, body), 400, Some(param), fragment);
    }
    assert!(h.gen_calls.borrow().is_empty());
}

#[test]
fn model_checks() {
    let h = gen_fake();
    assert_error(
        &complete(&h, json!({"model": "nope", "prompt": "x"})),
        404,
        Some("model"),
        "does not exist",
    );
    assert_error(
        &complete(&h, json!({"model": "e5", "prompt": "x"})),
        400,
        Some("model"),
        "is not a text generation model (kind: embedding)",
    );
    // The default max_tokens (16) is checked against the context too.
    let mut h = gen_fake();
    for m in &mut h.models {
        m.context_length = 16;
    }
    assert_error(
        &complete(&h, json!({"model": "base", "prompt": "x"})),
        400,
        Some("max_tokens"),
        "context length of 16",
    );
    assert_eq!(
        complete(
            &h,
            json!({"model": "base", "prompt": "x", "max_tokens": 15})
        )
        .0
        .status,
        200
    );
    // Base models answer here, and a chat model without a template too.
    assert_eq!(
        complete(&gen_fake(), json!({"model": "chatty", "prompt": "x"}))
            .0
            .status,
        200
    );
}
