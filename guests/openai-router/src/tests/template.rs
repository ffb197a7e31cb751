//! Chat templates rendered in the guest: exact prompts for ChatML (SmolLM2) and
//! Gemma, Hugging Face compatibility (whitespace, pycompat, raise_exception),
//! and what reaches the host.

use super::support::{chat, gen_fake, hi, CHATML, GEMMA};
use super::*;
use crate::routes::chat::request::{Message, Role};
use crate::routes::chat::template::{ChatTemplate, TemplateError};

fn msg(role: Role, content: &str) -> Message {
    Message {
        role,
        content: content.into(),
        name: None,
    }
}

fn render(source: &str, messages: &[Message], bos: &str) -> Result<String, TemplateError> {
    ChatTemplate::compile(source)?.render(messages, bos, "</s>", true, &Default::default())
}

#[test]
fn chatml_exact() {
    let out = render(CHATML, &[msg(Role::User, "Hi")], "").unwrap();
    assert_eq!(
        out,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    let out = render(
        CHATML,
        &[
            msg(Role::System, "Be brief."),
            msg(Role::User, "Hi"),
            msg(Role::Assistant, "Hello"),
            msg(Role::User, "Bye"),
        ],
        "",
    )
    .unwrap();
    assert_eq!(
        out,
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
         <|im_start|>assistant\nHello<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n\
         <|im_start|>assistant\n"
    );
    let t = ChatTemplate::compile(CHATML).unwrap();
    assert_eq!(
        t.render(
            &[msg(Role::System, "S")],
            "",
            "",
            false,
            &Default::default()
        )
        .unwrap(),
        "<|im_start|>system\nS<|im_end|>\n",
        "add_generation_prompt false"
    );
}

#[test]
fn gemma_exact() {
    let out = render(
        GEMMA,
        &[
            msg(Role::User, "  Hi \n"),
            msg(Role::Assistant, "Hello"),
            msg(Role::User, "Bye"),
        ],
        "<bos>",
    )
    .unwrap();
    assert_eq!(
        out,
        "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello<end_of_turn>\n\
         <start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n"
    );
}

#[test]
fn huggingface_compatibility() {
    // trim_blocks and lstrip_blocks, as transformers sets them.
    let src = "{% for m in messages %}\n{{ m.content }}\n    {% endfor %}";
    let out = render(src, &[msg(Role::User, "a"), msg(Role::User, "b")], "").unwrap();
    assert_eq!(out, "a\nb\n");
    // Python string and dict methods (minijinja-contrib pycompat).
    let src = "{{ messages[0].content.strip() }}|{{ messages[0].content.startswith(' x') }}|\
               {{ messages[0].content.upper().split() | join(',') }}|\
               {% for k, v in messages[0].items() %}{{ k }}={{ v.strip() }};{% endfor %}|{{ eos_token }}";
    let out = render(src, &[msg(Role::User, " x y ")], "").unwrap();
    assert_eq!(out, "x y|True|X,Y|content=x y;role=user;|</s>");
    // Undefined is lenient; tools and documents are none; name is passed when given.
    let src = "{{ nothing }}{{ tools is none }}{{ documents is none }}{{ messages[0].name }}\
               {{ messages[1].name is defined }}";
    let named = Message {
        name: Some("ann".into()),
        ..msg(Role::User, "x")
    };
    let out = render(src, &[named, msg(Role::User, "y")], "").unwrap();
    assert_eq!(out, "TrueTrueannFalse");
    // namespace() and loop controls, common in newer templates.
    let src =
        "{% set ns = namespace(n=0) %}{% for m in messages %}{% if loop.index > 1 %}{% break %}\
               {% endif %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }}";
    let out = render(src, &[msg(Role::User, "a"), msg(Role::User, "b")], "").unwrap();
    assert_eq!(out, "1");
}

const ALTERNATE: &str =
    "{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}\
    {{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}\
    {% endif %}[{{ m['content'] }}]{% endfor %}";

#[test]
fn raise_exception_is_the_clients_error() {
    let err = render(ALTERNATE, &[msg(Role::Assistant, "x")], "").unwrap_err();
    assert_eq!(
        err,
        TemplateError::Raised(
            "Conversation roles must alternate user/assistant/user/assistant/...".into()
        )
    );
    // Reusing the compiled template after a raise works and forgets the raise.
    let t = ChatTemplate::compile(ALTERNATE).unwrap();
    assert!(t
        .render(
            &[msg(Role::Assistant, "x")],
            "",
            "",
            true,
            &Default::default()
        )
        .is_err());
    assert_eq!(
        t.render(&[msg(Role::User, "x")], "", "", true, &Default::default())
            .unwrap(),
        "[x]"
    );

    let mut h = gen_fake();
    h.models.push(ModelInfo {
        chat_template: Some(ALTERNATE.into()),
        ..model("strict", ModelKind::Chat, None, 1)
    });
    let r = chat(
        &h,
        json!({"model": "strict", "messages": [{"role": "assistant", "content": "x"}]}),
    );
    assert_error(
        &r,
        400,
        Some("messages"),
        "Conversation roles must alternate",
    );
    assert!(h.gen_calls.borrow().is_empty());
}

#[test]
fn broken_templates_are_server_errors() {
    let mut h = gen_fake();
    for (id, src) in [
        ("syntax", "{% for m in messages %}"),
        ("method", "{{ messages[0].content.no_such_method() }}"),
    ] {
        h.models.push(ModelInfo {
            chat_template: Some(src.into()),
            ..model(id, ModelKind::Chat, None, 1)
        });
        let r = chat(&h, json!({"model": id, "messages": super::support::hi()}));
        assert_error(
            &r,
            500,
            None,
            &format!("The chat template of model '{id}' failed"),
        );
    }
    assert!(matches!(
        ChatTemplate::compile("{% if %}"),
        Err(TemplateError::Broken(_))
    ));
}

#[test]
fn rendered_prompt_goes_to_the_host_without_special_tokens() {
    let h = gen_fake();
    let (r, v) = chat(
        &h,
        json!({"model": "gemma", "messages": [
            {"role": "developer", "content": "Sys"},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": "c", "name": "bot", "tool_calls": [], "refusal": null}
        ]}),
    );
    assert_eq!(r.status, 200, "{v}");
    let calls = h.gen_calls.borrow();
    let (model, prompt, options) = &calls[0];
    assert_eq!(model, "gemma");
    match prompt {
        Prompt::Text(t) => assert_eq!(
            t,
            "<bos><start_of_turn>system\nSys<end_of_turn>\n<start_of_turn>user\na\nb<end_of_turn>\n\
             <start_of_turn>model\nc<end_of_turn>\n<start_of_turn>model\n"
        ),
        Prompt::Tokens(_) => panic!("tokens"),
    }
    assert!(!options.add_special_tokens);
    drop(calls);

    // A cached template (same model, same source) renders the same.
    let (_, v2) = chat(
        &h,
        json!({"model": "smol", "messages": [{"role": "developer", "content": "D"}]}),
    );
    assert_eq!(v2["object"], "chat.completion");
    let calls = h.gen_calls.borrow();
    match &calls[1].1 {
        Prompt::Text(t) => assert_eq!(
            t,
            "<|im_start|>system\nD<|im_end|>\n<|im_start|>assistant\n"
        ),
        Prompt::Tokens(_) => panic!("tokens"),
    };
}

/// The prompt the host got for a chat request with `extra` fields.
fn prompt_for(model: &str, messages: Value, extra: Value) -> String {
    let h = gen_fake();
    let mut body = json!({"model": model, "messages": messages});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (r, v) = chat(&h, body);
    assert_eq!(r.status, 200, "{v}");
    let calls = h.gen_calls.borrow();
    match &calls[0].1 {
        Prompt::Text(t) => t.clone(),
        Prompt::Tokens(_) => panic!("tokens"),
    }
}

#[test]
fn continue_final_message_ends_the_prompt_inside_the_assistants_turn() {
    let messages = json!([{"role": "user", "content": "Capital of France?"},
                          {"role": "assistant", "content": "The capital is "}]);
    // ChatML keeps the text as it is, trailing space included.
    assert_eq!(
        prompt_for("smol", messages.clone(), json!({"continue_final_message": true})),
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nCapital of France?<|im_end|>\n<|im_start|>assistant\nThe capital is "
    );
    // Gemma's template trims each message: the cut comes after the trimmed text.
    assert_eq!(
        prompt_for(
            "gemma",
            messages.clone(),
            json!({"continue_final_message": true, "add_generation_prompt": false})
        ),
        "<bos><start_of_turn>user\nCapital of France?<end_of_turn>\n<start_of_turn>model\nThe capital is"
    );
    // Without it, the assistant's message is a finished turn and a new one opens.
    assert!(prompt_for("smol", messages.clone(), json!({}))
        .ends_with("The capital is <|im_end|>\n<|im_start|>assistant\n"));
    // add_generation_prompt false alone: the conversation as it stands.
    assert!(
        prompt_for("smol", messages, json!({"add_generation_prompt": false}))
            .ends_with("The capital is <|im_end|>\n")
    );
}

#[test]
fn chat_template_kwargs_are_template_variables() {
    let mut h = gen_fake();
    let smol = h.models.iter_mut().find(|m| m.id == "smol").unwrap();
    smol.chat_template = Some(
        "{% if enable_thinking is defined and not enable_thinking %}NO-THINK {% endif %}\
         {{ messages[0]['content'] }}|{{ add_generation_prompt }}|{{ extra.x }}"
            .into(),
    );
    let (r, v) = chat(
        &h,
        json!({"model": "smol", "messages": hi(),
               "chat_template_kwargs": {"enable_thinking": false, "extra": {"x": [1, 2.5, "s", null]},
                                        "add_generation_prompt": "ignored"}}),
    );
    assert_eq!(r.status, 200, "{v}");
    let calls = h.gen_calls.borrow();
    match &calls[0].1 {
        // The request's own variables win over the kwargs'.
        // Printed as Jinja2 prints Python values.
        Prompt::Text(t) => assert_eq!(t, "NO-THINK Hi|True|[1, 2.5, 's', None]"),
        Prompt::Tokens(_) => panic!("tokens"),
    };
}

#[test]
fn template_option_errors_name_their_param() {
    let h = gen_fake();
    let user_last = json!([{"role": "user", "content": "Hi"}]);
    let assistant_last =
        json!([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hel"}]);
    let cases = [
        (
            user_last.clone(),
            json!({"continue_final_message": true}),
            "continue_final_message",
            "last message",
        ),
        (
            json!([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "  "}]),
            json!({"continue_final_message": true}),
            "continue_final_message",
            "last message",
        ),
        (
            assistant_last.clone(),
            json!({"continue_final_message": true, "add_generation_prompt": true}),
            "continue_final_message",
            "cannot both be true",
        ),
        (
            assistant_last.clone(),
            json!({"continue_final_message": true, "response_format": {"type": "json_object"}}),
            "continue_final_message",
            "cannot be combined",
        ),
        (
            user_last.clone(),
            json!({"continue_final_message": 1}),
            "continue_final_message",
            "expected a boolean",
        ),
        (
            user_last.clone(),
            json!({"add_generation_prompt": "no"}),
            "add_generation_prompt",
            "expected a boolean",
        ),
        (
            user_last,
            json!({"chat_template_kwargs": []}),
            "chat_template_kwargs",
            "expected an object",
        ),
    ];
    for (messages, extra, param, fragment) in cases {
        let mut body = json!({"model": "smol", "messages": messages});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        assert_error(&chat(&h, body), 400, Some(param), fragment);
    }
    assert!(h.gen_calls.borrow().is_empty());
}
