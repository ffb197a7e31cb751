//! Stored chat completions (`"store": true`, as at OpenAI; the default is false). The
//! completion, the request's messages and its `metadata` are kept in the tenant's
//! key-value store on the host under `chat:<id>`; what the SDK's
//! `chat.completions.retrieve`, `.update`, `.delete`, `.list` and `.messages.list`
//! call reads and changes them. A streamed completion is rebuilt from its chunks
//! ([`super::accumulate`]) and stored before its `[DONE]`. The store is the host's:
//! in memory, per tenant, bounded (the oldest entries make room), lost at restart.

use super::accumulate::StoringBody;
use crate::errors::{ApiError, INVALID_REQUEST};
use crate::host::{get_json, set_json, KeyValue};
use crate::http::{Reply, Response};
use crate::routes::json::{bad_value, parse_object, wrong_type, Fields};
use crate::routes::list::{parse_query, Page};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::rc::Rc;

const PREFIX: &str = "chat:";

/// OpenAI's metadata limits: pairs, key and value lengths.
const MAX_METADATA_PAIRS: usize = 16;
const MAX_METADATA_KEY: usize = 64;
const MAX_METADATA_VALUE: usize = 512;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Stored {
    /// The `chat.completion` object as it was returned (streamed: as its chunks
    /// add up).
    completion: Value,
    /// The request's messages, each with an id.
    messages: Vec<Value>,
    metadata: Value,
}

fn key(id: &str) -> String {
    format!("{PREFIX}{id}")
}

fn load(store: &dyn KeyValue, id: &str) -> Option<Stored> {
    get_json(store, &key(id))
}

fn save(store: &dyn KeyValue, id: &str, stored: &Stored) -> bool {
    set_json(store, &key(id), stored).is_ok()
}

/// `metadata`: at most 16 string values, keys up to 64 characters, values up to 512.
pub fn check_metadata(value: Value, param: &str) -> Result<Value, ApiError> {
    let Value::Object(map) = value else {
        return Err(wrong_type(param, "an object of strings", &value));
    };
    if map.len() > MAX_METADATA_PAIRS {
        return Err(bad_value(
            param,
            format!(
                "{} pairs; at most {MAX_METADATA_PAIRS} are allowed.",
                map.len()
            ),
        ));
    }
    for (k, v) in &map {
        let path = format!("{param}.{k}");
        if k.chars().count() > MAX_METADATA_KEY {
            return Err(bad_value(
                param,
                format!("the key '{k}' is longer than {MAX_METADATA_KEY} characters."),
            ));
        }
        match v.as_str() {
            Some(s) if s.chars().count() > MAX_METADATA_VALUE => {
                return Err(bad_value(
                    &path,
                    format!("longer than {MAX_METADATA_VALUE} characters."),
                ))
            }
            Some(_) => {}
            None => return Err(wrong_type(&path, "a string", v)),
        }
    }
    Ok(Value::Object(map))
}

fn not_found(id: &str) -> ApiError {
    ApiError::new(
        404,
        INVALID_REQUEST,
        format!(
            "No chat completion with id '{id}' is stored here (made without \"store\": true, \
             deleted, evicted to make room, or the server restarted)."
        ),
    )
    .code("not_found")
}

/// The stored id in a path: `chatcmpl-` and letters or digits only.
fn checked(id: &str) -> Result<&str, ApiError> {
    let ok = id.len() <= 64
        && id.strip_prefix("chatcmpl-").is_some_and(|rest| {
            !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric())
        });
    if ok {
        Ok(id)
    } else {
        Err(not_found(id))
    }
}

/// The completion as the stored-completion calls return it: with its metadata.
fn view(stored: Stored) -> Value {
    let mut completion = stored.completion;
    completion["metadata"] = stored.metadata;
    completion
}

fn json_response(v: &Value) -> Response {
    Response::json(200, v.to_string().into_bytes())
}

/// What a completion needs to be stored once it is made.
pub struct Keeper {
    store: Rc<dyn KeyValue>,
    messages: Vec<Value>,
    metadata: Value,
}

impl Keeper {
    /// `messages` as the request sent them (already checked by the chat path).
    pub fn new(store: Rc<dyn KeyValue>, messages: Vec<Value>, metadata: Value) -> Self {
        Keeper {
            store,
            messages,
            metadata,
        }
    }

    /// Stores `completion`. A tenant without a store, or a completion larger than
    /// its whole store, is answered all the same; a later retrieve gets a 404.
    pub fn keep(self, completion: Value) {
        let Some(id) = completion["id"].as_str().map(str::to_string) else {
            return;
        };
        let messages = self
            .messages
            .into_iter()
            .enumerate()
            .map(|(i, m)| stored_message(m, &format!("{id}-{i}")))
            .collect();
        let stored = Stored {
            completion,
            messages,
            metadata: self.metadata,
        };
        save(&*self.store, &id, &stored);
    }

    /// The reply, with the completion stored when it was made: a buffered one now,
    /// a streamed one when its last chunk has been written. `client_usage`: whether
    /// the client asked for the streamed usage chunk (the stream was made with it
    /// either way, to store the usage).
    pub fn reply(self, reply: Reply, client_usage: bool) -> Reply {
        match reply {
            Reply::Full(response) if response.status == 200 => {
                if let Ok(completion) = serde_json::from_slice::<Value>(&response.body) {
                    self.keep(completion);
                }
                Reply::Full(response)
            }
            Reply::Stream(mut streaming) if streaming.status == 200 => {
                streaming.body = Box::new(StoringBody::new(streaming.body, self, !client_usage));
                Reply::Stream(streaming)
            }
            other => other,
        }
    }
}

/// A request message as `messages.list` returns it: with an id, its text in
/// `content` and, when it came as parts, the parts in `content_parts`.
fn stored_message(mut message: Value, id: &str) -> Value {
    let parts = match message.get("content") {
        Some(Value::Array(parts)) => Some(parts.clone()),
        _ => None,
    };
    if let Some(parts) = &parts {
        let text: String = parts.iter().filter_map(|p| p["text"].as_str()).collect();
        message["content"] = json!(text);
    }
    message["content_parts"] = parts.map_or(Value::Null, Value::Array);
    message["id"] = json!(id);
    message
}

/// `GET /v1/chat/completions/{id}`
pub fn get(store: &dyn KeyValue, id: &str) -> Result<Response, ApiError> {
    let id = checked(id)?;
    let stored = load(store, id).ok_or_else(|| not_found(id))?;
    Ok(json_response(&view(stored)))
}

/// `POST /v1/chat/completions/{id}`: `{"metadata": {...}}` replaces the metadata
/// (`null` clears it).
pub fn update(store: &dyn KeyValue, id: &str, body: &[u8]) -> Result<Response, ApiError> {
    let id = checked(id)?;
    let mut f = Fields::new(parse_object(body, r#"{"metadata": {"key": "value"}}"#)?);
    let metadata = match f.take("metadata") {
        None => {
            return Err(ApiError::invalid(
                "metadata",
                "Missing required parameter: 'metadata'.",
            ))
        }
        Some(Value::Null) => Value::Object(Map::new()),
        Some(v) => check_metadata(v, "metadata")?,
    };
    f.finish()?;
    let mut stored = load(store, id).ok_or_else(|| not_found(id))?;
    stored.metadata = metadata;
    if !save(store, id, &stored) {
        return Err(ApiError::server(
            "The updated chat completion could not be stored.",
        ));
    }
    Ok(json_response(&view(stored)))
}

/// `DELETE /v1/chat/completions/{id}`
pub fn delete(store: &dyn KeyValue, id: &str) -> Result<Response, ApiError> {
    let id = checked(id)?;
    if !store.delete(&key(id)) {
        return Err(not_found(id));
    }
    Ok(json_response(
        &json!({"object": "chat.completion.deleted", "id": id, "deleted": true}),
    ))
}

/// `GET /v1/chat/completions?model=&metadata[k]=v&after=&limit=&order=`: the stored
/// completions, oldest first by default (as at OpenAI), 20 a page.
pub fn list(store: &dyn KeyValue, query: &str) -> Result<Response, ApiError> {
    let mut query = parse_query(query)?;
    let page = Page::take(&mut query, 20, true)?;
    let mut model = None;
    let mut metadata = Vec::new();
    for (name, value) in query {
        if name == "model" {
            model = Some(value);
        } else if let Some(k) = name
            .strip_prefix("metadata[")
            .and_then(|k| k.strip_suffix(']'))
        {
            metadata.push((k.to_string(), value));
        } else {
            return Err(ApiError::invalid(
                &name,
                format!(
                    "Unrecognized query parameter: '{name}'. This list takes 'model', \
                     'metadata[<key>]', 'after', 'limit' and 'order'."
                ),
            ));
        }
    }
    let ids: Vec<String> = store
        .keys(PREFIX)
        .into_iter()
        .map(|k| k[PREFIX.len()..].to_string())
        .collect();
    let page = page.load(&ids, |_, id| {
        let stored = load(store, id)?;
        let wanted = model
            .as_ref()
            .is_none_or(|m| stored.completion["model"] == m.as_str())
            && metadata
                .iter()
                .all(|(k, v)| stored.metadata[k] == v.as_str());
        wanted.then(|| view(stored))
    })?;
    Ok(json_response(&page))
}

/// `GET /v1/chat/completions/{id}/messages`: the request's messages, in order.
pub fn messages(store: &dyn KeyValue, id: &str, query: &str) -> Result<Response, ApiError> {
    let id = checked(id)?;
    let page = Page::only(query, 20, true, false)?;
    let stored = load(store, id).ok_or_else(|| not_found(id))?;
    Ok(json_response(&page.of(stored.messages)?))
}
