//! The fake generation behind [`Fake::generate`](super::Fake), the generative
//! test models, and request helpers shared by the generation tests.

use super::*;
use std::collections::VecDeque;

pub(super) const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

pub(super) const GEMMA: &str = "{{ bos_token }}{% for message in messages %}<start_of_turn>{{ 'model' if message['role'] == 'assistant' else message['role'] }}\n{{ message['content'] | trim }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}";

pub(super) fn text(t: &str) -> Event {
    Event::Chunk(Chunk {
        text: t.into(),
        tokens: vec![1],
        logprobs: vec![],
    })
}

/// A chunk of one token `id` whose text is `t` (held back when `shown` is empty),
/// with its log probability and one alternative.
pub(super) fn token(id: u32, t: &str, shown: &str, logprob: f32) -> Event {
    let one = |token: u32, text: &str, logprob: f32| Logprob {
        token,
        text: text.into(),
        logprob,
    };
    Event::Chunk(Chunk {
        text: shown.into(),
        tokens: vec![id],
        logprobs: vec![TokenLogprobs {
            chosen: one(id, t, logprob),
            top: vec![one(id, t, logprob), one(99, "x", -3.5)],
        }],
    })
}

pub(super) fn done(finish_reason: FinishReason, error: Option<HostError>) -> Event {
    Event::Done(GenerationEnd {
        finish_reason,
        usage: Usage {
            prompt_tokens: 7,
            completion_tokens: 3,
        },
        provider: "cpu-test".into(),
        error,
    })
}

/// "Hel", an empty chunk (held-back text), "lo!", stop.
pub(super) fn default_script() -> Vec<Event> {
    vec![
        text("Hel"),
        text(""),
        text("lo!"),
        done(FinishReason::Stop, None),
    ]
}

struct FakeStream {
    events: VecDeque<Event>,
    last: Event,
    log: Rc<RefCell<Vec<String>>>,
    /// A text prompt's bytes, as the fake's `encode` gives them (no BOS).
    prompt_ids: Vec<u32>,
    ranks: Vec<u32>,
}

impl GenerationStream for FakeStream {
    fn provider(&self) -> String {
        "cpu-test".into()
    }

    /// 5 of the 7 prompt tokens, as if a previous turn had prefilled them.
    fn cached_prompt_tokens(&self) -> u32 {
        5
    }

    fn prompt_token_ids(&self) -> Vec<u32> {
        self.prompt_ids.clone()
    }

    fn prompt_token_ranks(&self) -> Vec<u32> {
        self.ranks.clone()
    }

    fn next(&mut self) -> Event {
        self.log.borrow_mut().push("next".into());
        match self.events.pop_front() {
            Some(e) => {
                if matches!(e, Event::Done(_)) {
                    self.last = e.clone();
                }
                e
            }
            None => self.last.clone(),
        }
    }
}

impl Drop for FakeStream {
    fn drop(&mut self) {
        self.log.borrow_mut().push("drop".into());
    }
}

pub(super) fn fake_generate(
    h: &Fake,
    model: &str,
    prompt: &Prompt,
    options: &GenerateOptions,
) -> Result<Box<dyn GenerationStream>, HostError> {
    Ok(Box::new(fake_stream(h, model, prompt, options)?))
}

fn fake_stream(
    h: &Fake,
    model: &str,
    prompt: &Prompt,
    options: &GenerateOptions,
) -> Result<FakeStream, HostError> {
    h.gen_calls
        .borrow_mut()
        .push((model.into(), prompt.clone(), options.clone()));
    if let Some(e) = &h.gen_fail {
        return Err(e.clone());
    }
    let script = h.scripts.borrow_mut().pop_front();
    Ok(FakeStream {
        events: script.unwrap_or_else(|| h.script.clone()).into(),
        last: done(FinishReason::Stop, None),
        log: Rc::clone(&h.log),
        prompt_ids: match prompt {
            Prompt::Text(text) => text.bytes().map(u32::from).collect(),
            Prompt::Tokens(ids) => ids.clone(),
        },
        ranks: Vec::new(),
    })
}

/// The scored prompt of the fake: "Say" (first, no score), " hi" (-0.5, rank 2, one
/// alternative " yo" at -0.25), then the script's generation.
pub(super) fn fake_generate_scored(
    h: &Fake,
    model: &str,
    prompt: &Prompt,
    options: &GenerateOptions,
    top: u32,
) -> Result<(Vec<PromptToken>, Box<dyn GenerationStream>), HostError> {
    h.log.borrow_mut().push(format!("score top {top}"));
    let mut stream = fake_stream(h, model, prompt, options)?;
    stream.prompt_ids = vec![5, 6];
    stream.ranks = vec![0, 2];
    let alternative = Logprob {
        token: 7,
        text: " yo".into(),
        logprob: -0.25,
    };
    let tokens = vec![
        PromptToken {
            token: 5,
            text: "Say".into(),
            text_offset: 0,
            logprob: None,
            top: vec![],
        },
        PromptToken {
            token: 6,
            text: " hi".into(),
            text_offset: 3,
            logprob: Some(-0.5),
            top: vec![alternative],
        },
    ];
    Ok((tokens, Box::new(stream)))
}

/// [`Fake::new`] plus `smol` (ChatML), `gemma` and `base` (no template).
pub(super) fn gen_fake() -> Fake {
    let mut h = Fake::new();
    h.models.push(ModelInfo {
        chat_template: Some(CHATML.into()),
        eos_token: Some("<|im_end|>".into()),
        ..model("smol", ModelKind::Chat, None, 1)
    });
    h.models.push(ModelInfo {
        chat_template: Some(GEMMA.into()),
        bos_token: Some("<bos>".into()),
        eos_token: Some("<eos>".into()),
        ..model("gemma", ModelKind::Chat, None, 1)
    });
    h.models.push(model("base", ModelKind::Completion, None, 1));
    h
}

pub(super) fn post(h: &Fake, path: &str, body: &Value) -> Response {
    let bytes = body.to_string().into_bytes();
    let mut read = || Ok(bytes.clone());
    crate::dispatch("POST", path, h, &mut read).buffer()
}

pub(super) fn chat(h: &Fake, body: Value) -> (Response, Value) {
    call(h, "POST", "/v1/chat/completions", &body.to_string())
}

pub(super) fn complete(h: &Fake, body: Value) -> (Response, Value) {
    call(h, "POST", "/v1/completions", &body.to_string())
}

pub(super) fn hi() -> Value {
    json!([{"role": "user", "content": "Hi"}])
}

/// The `data:` payloads of an SSE body, checking the framing on the way.
pub(super) fn sse_data(body: &[u8]) -> Vec<String> {
    let text = std::str::from_utf8(body).unwrap();
    assert!(text.ends_with("\n\n"), "{text:?}");
    text[..text.len() - 2]
        .split("\n\n")
        .map(|event| {
            let data = event.strip_prefix("data: ").expect("data: prefix");
            assert!(!data.contains('\n'), "{event:?}");
            data.to_string()
        })
        .collect()
}
