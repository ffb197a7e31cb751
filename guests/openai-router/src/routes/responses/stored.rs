//! Stored responses. With `store` (true unless the request says false, as at
//! OpenAI) a response is kept in the tenant's key-value store on the host, with the
//! conversation through it (every input item since the first response of the
//! chain, then its output items), under `response:<id>`. A later request names it
//! in `previous_response_id` and sends only what is new; `GET`, `DELETE
//! /v1/responses/{id}` and `GET /v1/responses/{id}/input_items` read and remove it.
//! The store is the host's: in memory, per tenant, bounded (the oldest entries make
//! room), lost at restart.

use crate::errors::ApiError;
use crate::host::{get_json, set_json, HostError, KeyValue};
use crate::http::Response;
use crate::routes::list::Page;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    /// The response object as it was returned.
    pub response: Value,
    /// This response's own input items.
    pub input: Vec<Value>,
    /// The conversation through this response: earlier items, its input, its output.
    pub items: Vec<Value>,
}

fn key(id: &str) -> String {
    format!("response:{id}")
}

pub fn load(store: &dyn KeyValue, id: &str) -> Option<Stored> {
    get_json(store, &key(id))
}

pub fn save(store: &dyn KeyValue, stored: &Stored) -> Result<(), HostError> {
    let id = stored.response["id"].as_str().unwrap_or_default();
    set_json(store, &key(id), stored)
}

/// 404 for a response id that is not (or no longer) stored.
pub fn not_found(id: &str, param: Option<&str>) -> ApiError {
    let e = ApiError::new(
        404,
        crate::errors::INVALID_REQUEST,
        format!(
            "No response with id '{id}' is stored here (never stored, deleted, evicted to make \
             room, or the server restarted)."
        ),
    )
    .code("response_not_found");
    match param {
        Some(p) => e.param(p),
        None => e,
    }
}

/// The stored id in a path: `resp_` and letters or digits only.
fn checked(id: &str) -> Result<&str, ApiError> {
    let ok = id.starts_with("resp_")
        && id.len() <= 64
        && id[5..].chars().all(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(id)
    } else {
        Err(not_found(id, None))
    }
}

/// `GET /v1/responses/{id}`
pub fn get(store: &dyn KeyValue, id: &str) -> Result<Response, ApiError> {
    let id = checked(id)?;
    let stored = load(store, id).ok_or_else(|| not_found(id, None))?;
    Ok(Response::json(
        200,
        stored.response.to_string().into_bytes(),
    ))
}

/// `DELETE /v1/responses/{id}`
pub fn delete(store: &dyn KeyValue, id: &str) -> Result<Response, ApiError> {
    let id = checked(id)?;
    if !store.delete(&key(id)) {
        return Err(not_found(id, None));
    }
    let body = json!({"id": id, "object": "response", "deleted": true});
    Ok(Response::json(200, body.to_string().into_bytes()))
}

/// `GET /v1/responses/{id}/input_items?after=&limit=&order=`: the response's input
/// items, newest first (OpenAI's default order), 20 a page, each with an id.
pub fn input_items(store: &dyn KeyValue, id: &str, query: &str) -> Result<Response, ApiError> {
    let id = checked(id)?;
    let page = Page::only(query, 20, false, true)?;
    let stored = load(store, id).ok_or_else(|| not_found(id, None))?;
    let suffix = &id[5..];
    let items: Vec<Value> = stored
        .input
        .into_iter()
        .enumerate()
        .map(|(i, mut item)| {
            if item.get("id").is_none() {
                item["id"] = json!(format!("msg_{suffix}_{i}"));
            }
            item
        })
        .collect();
    let body = page.of(items)?;
    Ok(Response::json(200, body.to_string().into_bytes()))
}

/// What a response needs to be stored (and added to its conversation) once it is
/// complete.
pub struct Keeper {
    store: std::rc::Rc<dyn KeyValue>,
    input: Vec<Value>,
    /// Earlier items and this input.
    items: Vec<Value>,
    /// `store`: keep the response itself.
    keep_response: bool,
    /// The conversation the input and output are added to.
    conversation: Option<String>,
}

impl Keeper {
    pub fn new(
        store: std::rc::Rc<dyn KeyValue>,
        earlier: Vec<Value>,
        input: &[Value],
        keep_response: bool,
        conversation: Option<String>,
    ) -> Self {
        let mut items = earlier;
        items.extend_from_slice(input);
        Self {
            store,
            input: input.to_vec(),
            items,
            keep_response,
            conversation,
        }
    }

    /// Stores the finished response, with `store` set to whether it was: a tenant
    /// without a store, or a response larger than its whole store, is answered all
    /// the same (`"store": false`), and a later `previous_response_id` naming it
    /// gets a clear 404.
    pub fn keep(self, response: &mut Value) {
        let output = response["output"].as_array().cloned().unwrap_or_default();
        if let Some(id) = &self.conversation {
            crate::routes::conversations::append(&*self.store, id, &self.input, &output);
        }
        if !self.keep_response {
            return;
        }
        let mut items = self.items;
        items.extend(output);
        let stored = Stored {
            response: response.clone(),
            input: self.input,
            items,
        };
        if save(&*self.store, &stored).is_err() {
            response["store"] = json!(false);
        }
    }
}
