//! Chat templates rendered inside the sandbox: the model's Hugging Face Jinja
//! template (`model-info.chat-template`) through minijinja, set up the way
//! `transformers`' `apply_chat_template` sets up Jinja2: `trim_blocks` and
//! `lstrip_blocks`, lenient undefined values, Python string/dict methods
//! (`.strip()`, `.startswith()`, `.items()`... via minijinja-contrib's pycompat),
//! `raise_exception(msg)`, and the variables `messages`, `add_generation_prompt`,
//! `bos_token`, `eos_token`, `tools` and `documents` (both none).
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

    /// The prompt for `messages`.
    pub fn render(
        &self,
        messages: &[Message],
        bos_token: &str,
        eos_token: &str,
        add_generation_prompt: bool,
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

/// Renders the prompt for a chat request: `raise_exception` is the client's
/// fault (400 about `messages`), a broken template the server's (500).
pub fn render_prompt(info: &ModelInfo, messages: &[Message]) -> Result<String, ApiError> {
    let broken = |detail: String| {
        ApiError::server(format!(
            "The chat template of model '{}' failed: {detail}",
            info.id
        ))
    };
    let template = match for_model(info) {
        None => return Err(no_template(info)),
        Some(Ok(t)) => t,
        Some(Err(TemplateError::Broken(d) | TemplateError::Raised(d))) => return Err(broken(d)),
    };
    template
        .render(
            messages,
            info.bos_token.as_deref().unwrap_or(""),
            info.eos_token.as_deref().unwrap_or(""),
            true,
        )
        .map_err(|e| match e {
            TemplateError::Raised(msg) => ApiError::invalid("messages", msg),
            TemplateError::Broken(d) => broken(d),
        })
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
