//! The request bodies of `/v1/embeddings`, `/v1/chat/completions` and
//! `/v1/completions`, through each route's `parse_request` (bytes → validated
//! request, everything that needs no model). Any bytes must give a request or a
//! 400 with OpenAI's error shape, never a panic; what is accepted must be valid.
#![no_main]

use libfuzzer_sys::fuzz_target;
use openai_router::errors::ApiError;
use openai_router::host::{EmbedInput, Prompt};
use openai_router::routes::sampling::{Sampling, MAX_STOP};
use openai_router::routes::{chat, completions, embeddings};

fn check_error(e: &ApiError) {
    assert_eq!(e.status, 400, "a parse error must be a 400: {e:?}");
    assert!(!e.message.is_empty(), "an error needs a message: {e:?}");
    let body: serde_json::Value =
        serde_json::from_slice(&e.to_json()).expect("the error body is JSON");
    let error = &body["error"];
    assert!(
        error["message"].is_string() && error["type"].is_string(),
        "{body}"
    );
}

fn check_sampling(s: &Sampling) {
    assert!((0.0..=2.0).contains(&s.temperature), "{s:?}");
    assert!(s.top_p > 0.0 && s.top_p <= 1.0, "{s:?}");
    assert!(
        (-2.0..=2.0).contains(&s.presence_penalty) && (-2.0..=2.0).contains(&s.frequency_penalty),
        "{s:?}"
    );
    assert!(s.max_tokens != Some(0), "{s:?}");
    assert!(
        s.stop.len() <= MAX_STOP && s.stop.iter().all(|x| !x.is_empty()),
        "{s:?}"
    );
    assert!(
        s.stream || !s.include_usage,
        "include_usage without stream: {s:?}"
    );
}

fuzz_target!(|body: &[u8]| {
    match embeddings::parse_request(body) {
        Ok(req) => {
            assert!(!req.model.is_empty());
            assert!(req.count() > 0);
            match &req.input {
                EmbedInput::Texts(texts) => assert!(texts.iter().all(|t| !t.is_empty())),
                EmbedInput::Tokens(seqs) => assert!(seqs.iter().all(|s| !s.is_empty())),
            }
            assert!(req.dimensions != Some(0));
        }
        Err(e) => check_error(&e),
    }
    match chat::request::parse_request(body) {
        Ok(req) => {
            assert!(!req.model.is_empty());
            assert!(!req.messages.is_empty());
            check_sampling(&req.sampling);
        }
        Err(e) => check_error(&e),
    }
    match completions::parse_request(body) {
        Ok(req) => {
            assert!(!req.model.is_empty());
            assert!(!req.prompts.is_empty());
            for prompt in &req.prompts {
                if let Prompt::Tokens(t) = prompt {
                    assert!(!t.is_empty());
                }
            }
            // /v1/completions defaults max_tokens to 16.
            assert!(req.sampling.max_tokens.is_some());
            check_sampling(&req.sampling);
        }
        Err(e) => check_error(&e),
    }
});
