//! Chat templates rendered inside the sandbox: the model's Hugging Face Jinja
//! template (`model-info.chat-template`) through minijinja, set up the way
//! `transformers`' `apply_chat_template` sets up Jinja2: `trim_blocks` and
//! `lstrip_blocks`, lenient undefined values, Python string/dict methods
//! (`.strip()`, `.startswith()`, `.items()`... via minijinja-contrib's pycompat),
//! `raise_exception(msg)`, and the variables `messages`, `add_generation_prompt`,
//! `bos_token`, `eos_token`, `tools` and `documents` (both none), plus a request's
//! `chat_template_kwargs`. `continue_final_message` cuts the rendered prompt after
//! the last (assistant) message's text, as `transformers` does.
//!
//! Differences from Jinja2 worth knowing: minijinja's `tojson` escapes `<`, `>`,
//! `&` and `'` (HTML-safe), and `strftime_now` is not defined (templates that use
//! it check `is defined` first).
//!
//! Compiled templates are cached per model for the life of the instance (one
//! request today: instances are fresh per request).

use super::request::Message;
use crate::errors::ApiError;
use crate::host::ModelInfo;
use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, Error, ErrorKind, Value};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

const NAME: &str = "chat_template";

/// One compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    /// The message of the last `raise_exception` call (functions must be `Send +
    /// Sync`, hence the mutex; there is one thread).
    raised: Arc<Mutex<Option<String>>>,
}

/// Why rendering failed.
#[derive(Debug, Clone, PartialEq)]
pub enum TemplateError {
    /// The template called `raise_exception(msg)`: the messages break its rules.
    Raised(String),
    /// The template does not compile, or failed for another reason.
    Broken(String),
}

/// Template instructions one render may run: chat templates take tens per message
/// (a 1000-message conversation through Gemma's: ~30 000).
const TEMPLATE_FUEL: u64 = 1_000_000;

impl ChatTemplate {
    pub fn compile(source: &str) -> Result<Self, TemplateError> {
        let broken = |e: Error| TemplateError::Broken(e.to_string());
        let mut env = Environment::new();
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(broken)?;
        env.set_syntax(syntax);
        // A template that loops for ever (a request may bring its own) fails in well
        // under a second instead of running into the guest's CPU budget.
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        let raised = Arc::new(Mutex::new(None));
        let slot = Arc::clone(&raised);
        env.add_function(
            "raise_exception",
            move |msg: String| -> Result<Value, Error> {
                if let Ok(mut s) = slot.lock() {
                    *s = Some(msg.clone());
                }
                Err(Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_template_owned(NAME, source.to_string())
            .map_err(broken)?;
        Ok(ChatTemplate { env, raised })
    }

    /// The prompt for `messages`; `kwargs` are more variables (they cannot replace
    /// the ones above).
    pub fn render(
        &self,
        messages: &[Message],
        bos_token: &str,
        eos_token: &str,
        add_generation_prompt: bool,
        kwargs: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, TemplateError> {
        if let Ok(mut s) = self.raised.lock() {
            *s = None;
        }
        let messages: Vec<Value> = messages.iter().map(message_value).collect();
        let ctx = minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => bos_token,
            eos_token => eos_token,
            tools => (),
            documents => (),
            ..json_value(&serde_json::Value::Object(kwargs.clone()))
        };
        let template = self
            .env
            .get_template(NAME)
            .map_err(|e| TemplateError::Broken(e.to_string()))?;
        template.render(ctx).map_err(|e| {
            let raised = self.raised.lock().ok().and_then(|mut s| s.take());
            match raised {
                Some(msg) => TemplateError::Raised(msg),
                None => TemplateError::Broken(e.to_string()),
            }
        })
    }
}

/// `{"role", "content"}` (and `"name"` when given), as `transformers` passes it.
fn message_value(m: &Message) -> Value {
    let mut map = BTreeMap::new();
    map.insert("role".to_string(), Value::from(m.role.as_str()));
    map.insert("content".to_string(), Value::from(m.content.as_str()));
    if let Some(name) = &m.name {
        map.insert("name".to_string(), Value::from(name.as_str()));
    }
    Value::from(map)
}

/// A JSON value as a template value (minijinja's serde support is left out to keep
/// the component small).
fn json_value(v: &serde_json::Value) -> Value {
    use serde_json::Value as Json;
    match v {
        Json::Null => Value::from(()),
        Json::Bool(b) => Value::from(*b),
        Json::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Value::from(i),
            (None, Some(u)) => Value::from(u),
            _ => Value::from(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Value::from(s.as_str()),
        Json::Array(items) => Value::from(items.iter().map(json_value).collect::<Vec<_>>()),
        Json::Object(map) => Value::from(
            map.iter()
                .map(|(k, v)| (k.clone(), json_value(v)))
                .collect::<BTreeMap<_, _>>(),
        ),
    }
}

thread_local! {
    /// (model id, template source, compiled template).
    static CACHE: RefCell<Vec<(String, String, Rc<ChatTemplate>)>> = const { RefCell::new(Vec::new()) };
}

/// The compiled template of a chat model; `None` when it has none.
pub fn for_model(info: &ModelInfo) -> Option<Result<Rc<ChatTemplate>, TemplateError>> {
    let source = info.chat_template.as_deref()?;
    let cached = CACHE.with(|c| {
        c.borrow()
            .iter()
            .find(|(id, src, _)| id == &info.id && src == source)
            .map(|(_, _, t)| Rc::clone(t))
    });
    if let Some(t) = cached {
        return Some(Ok(t));
    }
    Some(ChatTemplate::compile(source).map(|t| {
        let t = Rc::new(t);
        CACHE.with(|c| {
            let mut c = c.borrow_mut();
            c.retain(|(id, _, _)| id != &info.id);
            c.push((info.id.clone(), source.to_string(), Rc::clone(&t)));
        });
        t
    }))
}

/// How a request asks the template to render its conversation (transformers'
/// `apply_chat_template` options, as vLLM takes them).
#[derive(Debug, Clone, PartialEq)]
pub struct RenderOptions {
    /// End with the opening of the assistant's turn (default, unless continuing).
    pub add_generation_prompt: bool,
    /// The last message is the beginning of the assistant's answer, which the
    /// generation continues (the answer holds only the continuation).
    pub continue_final_message: bool,
    /// `chat_template_kwargs`: more template variables (`enable_thinking`...).
    pub kwargs: serde_json::Map<String, serde_json::Value>,
    /// `chat_template`: the request's own template instead of the model's (vLLM);
    /// its failures are the request's (400 on `chat_template`).
    pub template: Option<String>,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            add_generation_prompt: true,
            continue_final_message: false,
            kwargs: Default::default(),
            template: None,
        }
    }
}

/// Renders the prompt for a chat request: `raise_exception` is the client's
/// fault (400 about `messages`), a broken template the server's (500).
pub fn render_prompt(
    info: &ModelInfo,
    messages: &[Message],
    options: &RenderOptions,
) -> Result<String, ApiError> {
    let own;
    let (info, broken): (&ModelInfo, &dyn Fn(String) -> ApiError) = match &options.template {
        Some(source) => {
            own = ModelInfo {
                chat_template: Some(source.clone()),
                ..info.clone()
            };
            (&own, &|detail: String| {
                ApiError::invalid(
                    "chat_template",
                    format!("The request's chat template failed: {detail}"),
                )
            })
        }
        None => (info, &|detail: String| {
            ApiError::server(format!(
                "The chat template of model '{}' failed: {detail}",
                info.id
            ))
        }),
    };
    let template = match for_model(info) {
        None => return Err(no_template(info)),
        Some(Ok(t)) => t,
        Some(Err(TemplateError::Broken(d) | TemplateError::Raised(d))) => return Err(broken(d)),
    };
    let rendered = template
        .render(
            messages,
            info.bos_token.as_deref().unwrap_or(""),
            info.eos_token.as_deref().unwrap_or(""),
            options.add_generation_prompt,
            &options.kwargs,
        )
        .map_err(|e| match e {
            TemplateError::Raised(msg) => ApiError::invalid("messages", msg),
            TemplateError::Broken(d) => broken(d),
        })?;
    match messages.last() {
        Some(last) if options.continue_final_message => cut_after(rendered, &last.content),
        _ => Ok(rendered),
    }
}

/// The rendered prompt up to the end of the final message's text, which the
/// generation then continues. Templates may trim a message: its text is looked for
/// without its outer whitespace, and its trailing whitespace is kept only where the
/// template kept it.
fn cut_after(mut rendered: String, content: &str) -> Result<String, ApiError> {
    let text = content.trim();
    let Some(at) = rendered.rfind(text) else {
        return Err(ApiError::invalid(
            "continue_final_message",
            "The chat template does not write the final message's text as it is, so it cannot be continued.",
        ));
    };
    let from_start = content.trim_start();
    let end = if rendered[at..].starts_with(from_start) {
        at + from_start.len()
    } else {
        at + text.len()
    };
    rendered.truncate(end);
    Ok(rendered)
}

/// A model that cannot chat because it has no template.
pub fn no_template(info: &ModelInfo) -> ApiError {
    ApiError::invalid(
        "model",
        format!(
            "The model '{}' is a base model without a chat template; use /v1/completions.",
            info.id
        ),
    )
}
