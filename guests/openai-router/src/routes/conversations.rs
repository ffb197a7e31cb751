//! OpenAI's Conversations API: a conversation is a list of items (messages,
//! function calls and their outputs) kept in the tenant's key-value store under
//! `conv:<id>`. `POST /v1/responses` with `conversation` reads its items before
//! the request's `input` and appends the input and the answer's output items once
//! the response is complete ([`append`]). What the SDK's `conversations.create`,
//! `.retrieve`, `.update`, `.delete` and `.items.create/list/retrieve/delete` call.
//! Every change is a read-modify-write the store checks (`set-if`): two turns added
//! to one conversation at the same moment both stay.

use crate::errors::{ApiError, INVALID_REQUEST};
use crate::host::{get_json, set_json, Host, KeyValue};
use crate::http::Response;
use crate::routes::chat::stored::check_metadata;
use crate::routes::generate::new_id;
use crate::routes::json::{parse_object, wrong_type, Fields};
use crate::routes::list::Page;
use crate::routes::responses::request;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// Items one create or add call may carry (OpenAI's limit).
const MAX_ITEMS_PER_CALL: usize = 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Stored {
    /// The `conversation` object.
    conversation: Value,
    items: Vec<Value>,
    /// Items added so far, deleted ones included: the next item id's number.
    added: u64,
}

fn key(id: &str) -> String {
    format!("conv:{id}")
}

fn load(store: &dyn KeyValue, id: &str) -> Option<Stored> {
    get_json(store, &key(id))
}

fn not_stored(e: crate::host::HostError) -> ApiError {
    ApiError::new(
        400,
        INVALID_REQUEST,
        format!("The conversation could not be stored: {}", e.message),
    )
    .code("conversation_not_stored")
}

/// Reads the conversation, lets `change` edit it and writes it back, unless another
/// request wrote it in between: then all over again, on what that one wrote (so two
/// turns added at once both stay).
fn modify<R>(
    store: &dyn KeyValue,
    id: &str,
    mut change: impl FnMut(&mut Stored) -> Result<R, ApiError>,
) -> Result<R, ApiError> {
    const ATTEMPTS: usize = 32;
    for _ in 0..ATTEMPTS {
        let (version, mut stored) = store
            .get_versioned(&key(id))
            .and_then(|(v, bytes)| Some((v, serde_json::from_slice::<Stored>(&bytes).ok()?)))
            .ok_or_else(|| not_found(id, None))?;
        let out = change(&mut stored)?;
        let bytes = serde_json::to_vec(&stored).unwrap_or_default();
        if store
            .set_if(&key(id), Some(version), &bytes)
            .map_err(not_stored)?
        {
            return Ok(out);
        }
    }
    Err(ApiError::new(
        409,
        INVALID_REQUEST,
        format!("The conversation '{id}' is being changed by other requests; try again."),
    )
    .code("conversation_busy"))
}

pub fn not_found(id: &str, param: Option<&str>) -> ApiError {
    let e = ApiError::new(
        404,
        INVALID_REQUEST,
        format!(
            "No conversation with id '{id}' is stored here (never made, deleted, evicted to make \
             room, or the server restarted)."
        ),
    )
    .code("conversation_not_found");
    match param {
        Some(p) => e.param(p),
        None => e,
    }
}

/// A conversation id: `conv_` and letters, digits or `_` only (`param`: where it
/// came from, for the 404 of one that is not).
fn conversation_id<'a>(id: &'a str, param: Option<&str>) -> Result<&'a str, ApiError> {
    let ok = id.len() <= 96
        && id.strip_prefix("conv_").is_some_and(|rest| {
            !rest.is_empty() && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        });
    if ok {
        Ok(id)
    } else {
        Err(not_found(id, param))
    }
}

fn json_response(v: &Value) -> Response {
    Response::json(200, v.to_string().into_bytes())
}

/// Loads a conversation for a response (`conversation` is `"conv_…"` or `{"id"}`).
pub fn items_for_response(store: &dyn KeyValue, id: &str) -> Result<Vec<Value>, ApiError> {
    let id = conversation_id(id, Some("conversation"))?;
    load(store, id)
        .map(|s| s.items)
        .ok_or_else(|| not_found(id, Some("conversation")))
}

/// Appends a finished response's input and output items to the conversation.
/// A conversation deleted meanwhile stays deleted.
pub fn append(store: &dyn KeyValue, id: &str, input: &[Value], output: &[Value]) -> bool {
    modify(store, id, |stored| {
        add_items(stored, input.iter().chain(output).cloned());
        Ok(())
    })
    .is_ok()
}

/// Items as the API lists them: a `type`, an `id`, message text as typed parts.
fn add_items(stored: &mut Stored, items: impl Iterator<Item = Value>) -> Vec<Value> {
    let suffix = stored.conversation["id"]
        .as_str()
        .and_then(|id| id.strip_prefix("conv_"))
        .unwrap_or_default()
        .to_string();
    let mut added = Vec::new();
    for mut item in items {
        if item.get("type").is_none() {
            item["type"] = json!("message");
        }
        if item["type"] == "message" {
            let part = if item["role"] == "assistant" {
                "output_text"
            } else {
                "input_text"
            };
            if let Some(text) = item["content"].as_str() {
                item["content"] = json!([{"type": part, "text": text}]);
            }
            if item.get("status").is_none() {
                item["status"] = json!("completed");
            }
        }
        if item.get("id").is_none() {
            let prefix = if item["type"] == "message" {
                "msg"
            } else {
                "item"
            };
            item["id"] = json!(format!("{prefix}_{suffix}_{}", stored.added));
        }
        stored.added += 1;
        added.push(item.clone());
        stored.items.push(item);
    }
    added
}

/// `items` of a create or add call: at most 20, each one `/v1/responses` accepts as input.
fn parse_items(value: Option<Value>, required: bool) -> Result<Vec<Value>, ApiError> {
    let items = match value {
        None | Some(Value::Null) if !required => return Ok(Vec::new()),
        None | Some(Value::Null) => {
            return Err(ApiError::invalid(
                "items",
                "Missing required parameter: 'items'.",
            ))
        }
        Some(Value::Array(items)) => items,
        Some(other) => return Err(wrong_type("items", "an array of items", &other)),
    };
    if items.len() > MAX_ITEMS_PER_CALL {
        return Err(ApiError::invalid(
            "items",
            format!(
                "'items' has {} entries; at most {MAX_ITEMS_PER_CALL} can be added at once.",
                items.len()
            ),
        ));
    }
    // The Responses parser names its errors `input[i]…`; here the field is `items`.
    request::conversation(None, &[], &items).map_err(|mut e| {
        if let Some(p) = e.param.as_mut().filter(|p| p.starts_with("input")) {
            *p = p.replacen("input", "items", 1);
            e.message = e.message.replace("'input", "'items");
        }
        e
    })?;
    Ok(items)
}

fn metadata(value: Option<Value>) -> Result<Value, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(Value::Object(Map::new())),
        Some(v) => check_metadata(v, "metadata"),
    }
}

/// `POST /v1/conversations` `{"items"?, "metadata"?}`
pub fn create(host: &dyn Host, body: &[u8]) -> Result<Response, ApiError> {
    let mut f = Fields::new(parse_object(
        body,
        r#"{"items": [{"role": "user", "content": "Hello!"}]}"#,
    )?);
    let items = parse_items(f.take("items"), false)?;
    let metadata = metadata(f.take("metadata"))?;
    f.finish()?;
    let mut stored = Stored {
        conversation: json!({"id": new_id("conv_", host), "object": "conversation",
                             "created_at": host.unix_time(), "metadata": metadata}),
        items: Vec::new(),
        added: 0,
    };
    add_items(&mut stored, items.into_iter());
    let id = stored.conversation["id"].as_str().unwrap_or_default();
    set_json(&*host.store(), &key(id), &stored).map_err(not_stored)?;
    Ok(json_response(&stored.conversation))
}

/// `GET`, `POST` (metadata) and `DELETE /v1/conversations/{id}`
pub fn conversation(
    store: &dyn KeyValue,
    method: &str,
    id: &str,
    body: Option<&[u8]>,
) -> Result<Response, ApiError> {
    let id = conversation_id(id, None)?;
    if method == "DELETE" {
        if !store.delete(&key(id)) {
            return Err(not_found(id, None));
        }
        return Ok(json_response(
            &json!({"id": id, "object": "conversation.deleted", "deleted": true}),
        ));
    }
    let Some(body) = body else {
        let stored = load(store, id).ok_or_else(|| not_found(id, None))?;
        return Ok(json_response(&stored.conversation));
    };
    let mut f = Fields::new(parse_object(body, r#"{"metadata": {"key": "value"}}"#)?);
    let Some(value) = f.take("metadata") else {
        return Err(ApiError::invalid(
            "metadata",
            "Missing required parameter: 'metadata'.",
        ));
    };
    let metadata = metadata(Some(value))?;
    f.finish()?;
    let conversation = modify(store, id, |stored| {
        stored.conversation["metadata"] = metadata.clone();
        Ok(stored.conversation.clone())
    })?;
    Ok(json_response(&conversation))
}

/// `GET /v1/conversations/{id}/items?after=&limit=&order=` (newest first by
/// default) and `POST` `{"items": [...]}` (returns the added items as a list).
pub fn items(
    store: &dyn KeyValue,
    id: &str,
    query: &str,
    body: Option<&[u8]>,
) -> Result<Response, ApiError> {
    let id = conversation_id(id, None)?;
    if let Some(body) = body {
        let mut f = Fields::new(parse_object(
            body,
            r#"{"items": [{"role": "user", "content": "Hello!"}]}"#,
        )?);
        let items = parse_items(f.take("items"), true)?;
        f.finish()?;
        let added = modify(store, id, |stored| {
            Ok(add_items(stored, items.iter().cloned()))
        })?;
        let page = Page {
            after: None,
            limit: added.len().max(1),
            ascending: true,
        };
        return Ok(json_response(&page.of(added)?));
    }
    let page = Page::only(query, 20, false, true)?;
    let stored = load(store, id).ok_or_else(|| not_found(id, None))?;
    Ok(json_response(&page.of(stored.items)?))
}

/// `GET` and `DELETE /v1/conversations/{id}/items/{item_id}` (delete returns the
/// conversation).
pub fn item(
    store: &dyn KeyValue,
    method: &str,
    id: &str,
    item_id: &str,
) -> Result<Response, ApiError> {
    let id = conversation_id(id, None)?;
    let missing = || {
        ApiError::new(
            404,
            INVALID_REQUEST,
            format!("The conversation '{id}' has no item '{item_id}'."),
        )
        .code("item_not_found")
    };
    let position = |stored: &Stored| {
        stored
            .items
            .iter()
            .position(|i| i["id"] == item_id)
            .ok_or_else(missing)
    };
    if method == "DELETE" {
        let conversation = modify(store, id, |stored| {
            let at = position(stored)?;
            stored.items.remove(at);
            Ok(stored.conversation.clone())
        })?;
        return Ok(json_response(&conversation));
    }
    let mut stored = load(store, id).ok_or_else(|| not_found(id, None))?;
    let at = position(&stored)?;
    Ok(json_response(&stored.items.swap_remove(at)))
}
