//! OpenAI's list objects over stored things: the query (`after`, `limit`, `order`
//! and the caller's own filters) and the page `{"object": "list", "data", "first_id",
//! "last_id", "has_more"}`, as `client.chat.completions.list()` and the other
//! cursor-paged SDK calls read them.

use crate::errors::ApiError;
use crate::routes::json::bad_value;
use crate::routes::models::percent_decode;
use serde_json::{json, Value};

/// The most items one page holds (OpenAI's limit).
pub const MAX_LIMIT: usize = 100;

/// A query string's `name=value` pairs, percent-decoded (`+` is a space).
pub fn parse_query(query: &str) -> Result<Vec<(String, String)>, ApiError> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                percent_decode(&s.replace('+', " ")).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "The query parameter '{pair}' is not valid percent-encoded UTF-8."
                    ))
                })
            };
            Ok((decode(name)?, decode(value)?))
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The id after which the page starts (in the page's order).
    pub after: Option<String>,
    pub limit: usize,
    /// Oldest first.
    pub ascending: bool,
}

impl Page {
    /// The page of a query that has nothing else (`include`, which names extra
    /// fields of tool items this server does not have, is ignored where
    /// `include_ok`).
    pub fn only(
        query: &str,
        default_limit: usize,
        ascending: bool,
        include_ok: bool,
    ) -> Result<Page, ApiError> {
        let mut query = parse_query(query)?;
        let page = Page::take(&mut query, default_limit, ascending)?;
        let unknown = query
            .iter()
            .find(|(name, _)| !(include_ok && name.starts_with("include")));
        if let Some((name, _)) = unknown {
            return Err(ApiError::invalid(
                name,
                format!(
                    "Unrecognized query parameter: '{name}'. This list takes 'after', 'limit' \
                     and 'order'."
                ),
            ));
        }
        Ok(page)
    }

    /// Reads `after`, `limit` and `order` from `query` (removing them); `default_limit`
    /// and `ascending` apply when the query has none.
    pub fn take(
        query: &mut Vec<(String, String)>,
        default_limit: usize,
        ascending: bool,
    ) -> Result<Page, ApiError> {
        let mut page = Page {
            after: None,
            limit: default_limit,
            ascending,
        };
        let mut rest = Vec::with_capacity(query.len());
        for (name, value) in query.drain(..) {
            match name.as_str() {
                "after" => page.after = Some(value),
                "limit" => {
                    page.limit = value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_LIMIT).contains(n))
                        .ok_or_else(|| {
                            bad_value(
                                "limit",
                                format!(
                                    "expected an integer from 1 to {MAX_LIMIT}, but got '{value}'."
                                ),
                            )
                        })?;
                }
                "order" => {
                    page.ascending = match value.as_str() {
                        "asc" => true,
                        "desc" => false,
                        _ => {
                            return Err(bad_value(
                                "order",
                                format!("expected 'asc' or 'desc', but got '{value}'."),
                            ))
                        }
                    }
                }
                _ => rest.push((name, value)),
            }
        }
        *query = rest;
        Ok(page)
    }

    /// The page of `items` (oldest first, each with an `id`): in the page's order,
    /// after the cursor, at most `limit`. A cursor that names no item is a 400.
    pub fn of(&self, items: Vec<Value>) -> Result<Value, ApiError> {
        let ids: Vec<String> = items
            .iter()
            .map(|i| i["id"].as_str().unwrap_or_default().to_string())
            .collect();
        let mut items: Vec<Option<Value>> = items.into_iter().map(Some).collect();
        self.load(&ids, |i, _| items[i].take())
    }

    /// The page of the items named by `ids` (oldest first): `load(i, id)` reads the
    /// one at `i`, or `None` to leave it out (gone, or filtered). Only what the page
    /// needs is read, which matters when reading an item is a copy from the host.
    pub fn load(
        &self,
        ids: &[String],
        mut load: impl FnMut(usize, &str) -> Option<Value>,
    ) -> Result<Value, ApiError> {
        let mut order: Vec<usize> = (0..ids.len()).collect();
        if !self.ascending {
            order.reverse();
        }
        let start = match &self.after {
            None => 0,
            Some(after) => {
                order
                    .iter()
                    .position(|&i| ids[i] == *after)
                    .ok_or_else(|| {
                        bad_value(
                            "after",
                            format!("'{after}' is not an id in this list (deleted or evicted?)."),
                        )
                    })?
                    + 1
            }
        };
        let mut data = Vec::with_capacity(self.limit.min(ids.len()));
        let mut has_more = false;
        for &i in &order[start..] {
            if let Some(item) = load(i, &ids[i]) {
                if data.len() == self.limit {
                    has_more = true;
                    break;
                }
                data.push(item);
            }
        }
        let first = data.first().map_or(Value::Null, |i| i["id"].clone());
        let last = data.last().map_or(Value::Null, |i| i["id"].clone());
        Ok(
            json!({"object": "list", "data": data, "first_id": first, "last_id": last,
                  "has_more": has_more}),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(n: usize) -> Vec<Value> {
        (0..n).map(|i| json!({"id": format!("x{i}")})).collect()
    }

    fn ids(page: &Value) -> Vec<&str> {
        page["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn pages_follow_the_cursor_in_either_order() {
        let mut q = parse_query("limit=2&model=a%20b&after=x1&metadata%5Bk%5D=v+w").unwrap();
        let page = Page::take(&mut q, 20, true).unwrap();
        assert_eq!(
            q,
            [
                ("model".to_string(), "a b".to_string()),
                ("metadata[k]".to_string(), "v w".to_string())
            ]
        );
        let v = page.of(items(5)).unwrap();
        assert_eq!(ids(&v), ["x2", "x3"]);
        assert_eq!(
            (v["first_id"].as_str(), v["has_more"].as_bool()),
            (Some("x2"), Some(true))
        );
        let mut q = parse_query("order=desc&after=x1").unwrap();
        let v = Page::take(&mut q, 20, true).unwrap().of(items(5)).unwrap();
        assert_eq!(
            (ids(&v), v["has_more"].as_bool()),
            (vec!["x0"], Some(false))
        );
        let v = Page::take(&mut vec![], 20, true)
            .unwrap()
            .of(vec![])
            .unwrap();
        assert_eq!(v["first_id"], Value::Null);
    }

    #[test]
    fn bad_queries_name_their_parameter() {
        for (query, param) in [
            ("limit=0", "limit"),
            ("limit=x", "limit"),
            ("limit=101", "limit"),
            ("order=up", "order"),
        ] {
            let e = Page::take(&mut parse_query(query).unwrap(), 20, true).unwrap_err();
            assert_eq!(
                (e.status, e.param.as_deref()),
                (400, Some(param)),
                "{query}"
            );
        }
        let e = Page::take(&mut vec![("after".into(), "nope".into())], 20, true)
            .unwrap()
            .of(items(2))
            .unwrap_err();
        assert_eq!(e.param.as_deref(), Some("after"));
        assert!(parse_query("a=%ff").is_err());
    }
}
