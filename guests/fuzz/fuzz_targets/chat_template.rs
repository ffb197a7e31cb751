//! Chat templates rendered in the guest (`routes::chat::template`): fuzzed
//! messages through the real templates of the served models (SmolLM2, Gemma 3)
//! and a template using the Jinja features Hugging Face templates use; and fuzzed
//! templates, raw or glued from Jinja fragments. Compiling and rendering must
//! return a prompt or an error, never panic; `render_prompt` must map a failure
//! to 400 (`raise_exception`) or 500 (a broken template).
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use openai_router::host::{ModelInfo, ModelKind};
use openai_router::routes::chat::request::{Message, Role};
use openai_router::routes::chat::template::{render_prompt, ChatTemplate, TemplateError};

const SMOLLM2: &str = include_str!("../templates/smollm2.jinja");
const GEMMA3: &str = include_str!("../templates/gemma3.jinja");
const FEATURES: &str = include_str!("../templates/features.jinja");

/// Pieces fuzzed templates are glued from (with fuzzed text in between).
const FRAGMENTS: &[&str] = &[
    "{% for m in messages %}",
    "{% endfor %}",
    "{{ m.content }}",
    "{{ m['role'] }}",
    "{% if ",
    " %}",
    "{% else %}",
    "{% endif %}",
    "{%- ",
    " -%}",
    "{{ ",
    " }}",
    "{{ raise_exception(",
    ")",
    "{% set ns = namespace(n=0) %}",
    "{% set ns.n = ns.n + 1 %}",
    "{{ ns.n }}",
    "messages[0]",
    "messages[-1]",
    "messages[1:]",
    "|trim",
    "|length",
    "|tojson",
    "|join(',')",
    "|upper",
    "|replace('a', 'b')",
    ".strip()",
    ".split()",
    ".startswith('x')",
    ".items()",
    "loop.index0 % 2 == 0",
    "loop.first",
    "loop.last",
    "loop.previtem",
    "{% break %}",
    "{% continue %}",
    "{% macro f(x) %}",
    "{% endmacro %}",
    "f(",
    "{{ f(m) }}",
    "bos_token",
    "eos_token",
    "add_generation_prompt",
    "tools",
    "documents",
    " is defined",
    " is none",
    " is string",
    " == ",
    " != ",
    " and ",
    " or ",
    " not ",
    " + ",
    " ~ ",
    " * ",
    "'",
    "\"",
    "range(",
    "(",
    "]",
    "[",
    "{% raw %}",
    "{% endraw %}",
    "{# ",
    " #}",
    "{% filter upper %}",
    "{% endfilter %}",
    "{{ '%s'|format(",
    "{{ messages|selectattr('role','equalto','user')|list }}",
    "{{ 9999999999 * 9999999999 }}",
    "{{ 1 / 0 }}",
    "{{ 2 ** 64 }}",
    "{{ -9223372036854775808 // -1 }}",
    "{{ 'ab' * 3 }}",
    "{{ [1,2][5] }}",
    "{{ m.content[::-1] }}",
    "{{ m.content[2:1] }}",
    "{{ {'a': 1}.a }}",
];

#[derive(Debug, Arbitrary)]
enum Template {
    Real(u8),
    Fragments(Vec<(u8, String)>),
    Raw(String),
}

#[derive(Debug, Arbitrary)]
struct Msg {
    role: u8,
    content: String,
    name: Option<String>,
}

#[derive(Debug, Arbitrary)]
struct Input {
    template: Template,
    messages: Vec<Msg>,
    bos: String,
    eos: String,
    add_generation_prompt: bool,
}

fn model(template: &str, bos: &str, eos: &str) -> ModelInfo {
    ModelInfo {
        id: "fuzz".into(),
        kind: ModelKind::Chat,
        owned_by: "nnhost".into(),
        created: 0,
        context_length: 2048,
        dimensions: None,
        max_batch_size: 1,
        chat_template: Some(template.into()),
        bos_token: Some(bos.into()),
        eos_token: Some(eos.into()),
        stop_tokens: vec![],
        metadata: vec![],
    }
}

fuzz_target!(|input: Input| {
    let messages: Vec<Message> = input
        .messages
        .into_iter()
        .take(64)
        .map(|m| Message {
            role: [Role::System, Role::User, Role::Assistant][usize::from(m.role % 3)],
            content: m.content,
            name: m.name,
        })
        .collect();
    let (source, real) = match input.template {
        Template::Real(n) => (
            [SMOLLM2, GEMMA3, FEATURES][usize::from(n % 3)].to_string(),
            true,
        ),
        Template::Fragments(parts) => {
            let mut s = String::new();
            for (i, text) in parts.iter().take(64) {
                s.push_str(FRAGMENTS[usize::from(*i) % FRAGMENTS.len()]);
                s.push_str(text);
            }
            (s, false)
        }
        Template::Raw(s) => (s, false),
    };

    let rendered = ChatTemplate::compile(&source).and_then(|t| {
        t.render(
            &messages,
            &input.bos,
            &input.eos,
            input.add_generation_prompt,
        )
    });
    if real && !messages.is_empty() {
        // The real templates compile, and fail only through raise_exception.
        assert!(
            !matches!(rendered, Err(TemplateError::Broken(_))),
            "{rendered:?}"
        );
    }
    if real && source == SMOLLM2 {
        let prompt = rendered.as_ref().expect("ChatML renders any messages");
        for m in &messages {
            assert!(prompt.contains(m.content.as_str()));
        }
    }

    if messages.is_empty() {
        return; // the chat route never renders without messages
    }
    // The route always asks for the generation prompt.
    let rendered = match input.add_generation_prompt {
        true => rendered,
        false => ChatTemplate::compile(&source)
            .and_then(|t| t.render(&messages, &input.bos, &input.eos, true)),
    };
    match render_prompt(&model(&source, &input.bos, &input.eos), &messages) {
        Ok(prompt) => assert_eq!(
            Ok(&prompt),
            rendered.as_ref().map_err(|_| ()),
            "render_prompt differs"
        ),
        Err(e) => {
            assert!(e.status == 400 || e.status == 500, "{e:?}");
            assert_eq!(
                e.status == 400,
                matches!(rendered, Err(TemplateError::Raised(_))),
                "{e:?} vs {rendered:?}"
            );
        }
    }
});
