//! `truncate_prompt_tokens` and embeddings' `truncate`: what reaches the host. The
//! fake tokenizes one token per byte, with a leading 1 for the special tokens.

use super::support::{chat, complete, gen_fake, hi};
use super::*;

fn bytes(text: &str) -> Vec<u32> {
    text.bytes().map(u32::from).collect()
}

#[test]
fn a_long_text_prompt_becomes_its_special_tokens_and_last_tokens() {
    let h = gen_fake();
    let (r, v) = complete(
        &h,
        json!({"model": "base", "prompt": ["abcdefgh", "xy"], "truncate_prompt_tokens": 4}),
    );
    assert_eq!(r.status, 200, "{v}");
    let calls = h.gen_calls.borrow();
    let mut want = vec![1];
    want.extend(bytes("fgh"));
    assert_eq!(
        format!("{:?}", calls[0].1),
        format!("{:?}", Prompt::Tokens(want))
    );
    // A prompt within the limit goes as it was sent.
    assert_eq!(
        format!("{:?}", calls[1].1),
        format!("{:?}", Prompt::Text("xy".into()))
    );
}

#[test]
fn token_prompts_and_chat_prompts_keep_their_last_tokens() {
    let h = gen_fake();
    let (r, v) = complete(
        &h,
        json!({"model": "base", "prompt": [5, 6, 7, 8, 9], "truncate_prompt_tokens": 2}),
    );
    assert_eq!(r.status, 200, "{v}");
    let (r, v) = chat(
        &h,
        json!({"model": "smol", "messages": hi(), "truncate_prompt_tokens": 6}),
    );
    assert_eq!(r.status, 200, "{v}");
    let calls = h.gen_calls.borrow();
    assert_eq!(
        format!("{:?}", calls[0].1),
        format!("{:?}", Prompt::Tokens(vec![8, 9]))
    );
    // The rendered ChatML ends "<|im_start|>assistant\n"; chat adds no special tokens.
    assert_eq!(
        format!("{:?}", calls[1].1),
        format!("{:?}", Prompt::Tokens(bytes("stant\n")))
    );
}

#[test]
fn minus_one_keeps_what_the_context_holds_beside_max_tokens() {
    let h = gen_fake();
    let long = "a".repeat(600);
    let (r, v) = complete(
        &h,
        json!({"model": "base", "prompt": long, "max_tokens": 100, "truncate_prompt_tokens": -1}),
    );
    assert_eq!(r.status, 200, "{v}");
    // The fake's context is 512 tokens: 412 for the prompt, its BOS included.
    let calls = h.gen_calls.borrow();
    match &calls[0].1 {
        Prompt::Tokens(ids) => assert_eq!((ids.len(), ids[0]), (412, 1)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn embeddings_cut_inputs_to_ids_the_host_wraps_in_its_special_tokens() {
    let h = Fake::new();
    let (r, v) = call(
        &h,
        "POST",
        "/v1/embeddings",
        &json!({"model": "e5", "input": ["abcdef", "ab"], "truncate_prompt_tokens": 3}).to_string(),
    );
    assert_eq!(r.status, 200, "{v}");
    let calls = h.calls.borrow();
    assert_eq!(
        format!("{:?}", calls[0].1),
        format!("{:?}", EmbedInput::Tokens(vec![bytes("ef"), bytes("ab")]))
    );
    assert_eq!(*h.truncates.borrow(), [false]);
}

#[test]
fn embeddings_truncate_true_is_the_hosts_own_cut() {
    let h = Fake::new();
    let (r, v) = call(
        &h,
        "POST",
        "/v1/embeddings",
        &json!({"model": "e5", "input": "abcdef", "truncate": true}).to_string(),
    );
    assert_eq!(r.status, 200, "{v}");
    assert_eq!(*h.truncates.borrow(), [true]);
    assert_eq!(
        format!("{:?}", h.calls.borrow()[0].1),
        format!("{:?}", EmbedInput::Texts(vec!["abcdef".into()]))
    );
}

#[test]
fn limits_that_leave_no_text_are_400() {
    let h = gen_fake();
    let r = complete(
        &h,
        json!({"model": "base", "prompt": "abcdef", "truncate_prompt_tokens": 1}),
    );
    assert_error(&r, 400, Some("truncate_prompt_tokens"), "at least 2");
    let r = embed(json!({"model": "e5", "input": "x", "truncate_prompt_tokens": 0}));
    assert_error(&r, 400, Some("truncate_prompt_tokens"), "at least 1");
    let r = embed(json!({"model": "e5", "input": "x", "truncate_prompt_tokens": -3}));
    assert_error(&r, 400, Some("truncate_prompt_tokens"), "");
}
