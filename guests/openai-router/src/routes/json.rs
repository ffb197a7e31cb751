//! JSON request plumbing for the generation routes: the body as an object, typed
//! field readers with OpenAI-style messages, and [`Fields::finish`], which rejects
//! whatever the route did not read (no field is ever silently ignored).
//!
//! Error params name the field's path (`stream_options.include_usage`,
//! `messages[2].content`); an explicit `null` counts as absent.

use crate::errors::ApiError;
use serde_json::{Map, Value};

/// The JSON type name used in error messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `Invalid type for '{path}': expected {expected}, but got {type} instead.`
pub fn wrong_type(path: &str, expected: &str, got: &Value) -> ApiError {
    ApiError::invalid(
        path,
        format!(
            "Invalid type for '{path}': expected {expected}, but got {} instead.",
            type_name(got)
        ),
    )
}

/// `Invalid value for '{path}': {what}`
pub fn bad_value(path: &str, what: impl std::fmt::Display) -> ApiError {
    ApiError::invalid(path, format!("Invalid value for '{path}': {what}"))
}

/// A field (or value) the API defines but this server does not implement.
pub fn unsupported(path: &str, what: impl std::fmt::Display) -> ApiError {
    ApiError::invalid(path, format!("Unsupported parameter: {what}")).code("unsupported_parameter")
}

/// A supported field with a value this server does not implement.
pub fn unsupported_value(path: &str, what: impl std::fmt::Display) -> ApiError {
    ApiError::invalid(path, format!("Unsupported value: {what}")).code("unsupported_value")
}

/// The request body as a JSON object; `example` shows the expected shape.
pub fn parse_object(body: &[u8], example: &str) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(format!(
            "The request body is empty; expected a JSON object like {example}."
        )));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "We could not parse the JSON body of your request: {e}."
        ))
    })?;
    match value {
        Value::Object(m) => Ok(m),
        other => Err(ApiError::bad_request(format!(
            "The request body must be a JSON object, but got {} instead.",
            type_name(&other)
        ))),
    }
}

/// An integer (any JSON integer, range-checked by the caller); `5.0` is not one.
pub fn integer(v: &Value, path: &str) -> Result<i128, ApiError> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
            .ok_or_else(|| bad_value(path, format!("expected an integer, but got {n}."))),
        other => Err(wrong_type(path, "an integer", other)),
    }
}

/// The fields of a request object (or of a nested object, under `prefix`), taken
/// one by one.
pub struct Fields {
    map: Map<String, Value>,
    prefix: String,
}

impl Fields {
    pub fn new(map: Map<String, Value>) -> Self {
        Fields {
            map,
            prefix: String::new(),
        }
    }

    /// A nested object whose field paths read `prefix.name` (`messages[0].role`).
    pub fn nested(map: Map<String, Value>, prefix: &str) -> Self {
        Fields {
            map,
            prefix: format!("{prefix}."),
        }
    }

    /// The full path of field `name`.
    pub fn path(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// The field's value; `None` when absent or `null`.
    pub fn take(&mut self, name: &str) -> Option<Value> {
        self.map.remove(name).filter(|v| !v.is_null())
    }

    pub fn string(&mut self, name: &str) -> Result<Option<String>, ApiError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(wrong_type(&self.path(name), "a string", &other)),
        }
    }

    /// A required, non-empty string (`model`).
    pub fn required_string(&mut self, name: &str) -> Result<String, ApiError> {
        let path = self.path(name);
        match self.string(name)? {
            None => Err(ApiError::invalid(
                &path,
                format!("Missing required parameter: '{path}'."),
            )),
            Some(s) if s.is_empty() => Err(ApiError::invalid(
                &path,
                format!("'{path}' cannot be an empty string."),
            )),
            Some(s) => Ok(s),
        }
    }

    pub fn bool(&mut self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(b)),
            Some(other) => Err(wrong_type(&self.path(name), "a boolean", &other)),
        }
    }

    /// A number within `min..=max`.
    pub fn number(&mut self, name: &str, min: f64, max: f64) -> Result<Option<f64>, ApiError> {
        let path = self.path(name);
        match self.take(name) {
            None => Ok(None),
            Some(Value::Number(n)) => {
                let x = n.as_f64().unwrap_or(f64::NAN);
                if x < min {
                    Err(bad_value(
                        &path,
                        format!("{n} is less than the minimum of {min}."),
                    ))
                } else if x > max {
                    Err(bad_value(
                        &path,
                        format!("{n} is greater than the maximum of {max}."),
                    ))
                } else if x.is_finite() {
                    Ok(Some(x))
                } else {
                    Err(bad_value(&path, format!("{n} is not a finite number.")))
                }
            }
            Some(other) => Err(wrong_type(&path, "a number", &other)),
        }
    }

    /// An integer within `min..=max`.
    pub fn integer(&mut self, name: &str, min: i128, max: i128) -> Result<Option<i128>, ApiError> {
        let path = self.path(name);
        let Some(v) = self.take(name) else {
            return Ok(None);
        };
        let n = integer(&v, &path)?;
        if n < min {
            Err(bad_value(
                &path,
                format!("{n} is less than the minimum of {min}."),
            ))
        } else if n > max {
            Err(bad_value(
                &path,
                format!("{n} is greater than the maximum of {max}."),
            ))
        } else {
            Ok(Some(n))
        }
    }

    /// Fails with `unsupported` when the field is present and `allowed` says no
    /// (`allowed` sees the non-null value).
    pub fn reject_unless(
        &mut self,
        name: &str,
        allowed: impl Fn(&Value) -> bool,
        why: &str,
    ) -> Result<(), ApiError> {
        match self.take(name) {
            Some(v) if !allowed(&v) => {
                let path = self.path(name);
                Err(unsupported(&path, format!("'{path}' {why}")))
            }
            _ => Ok(()),
        }
    }

    /// Every field not taken is an error: `Unrecognized request argument supplied: x`.
    pub fn finish(self) -> Result<(), ApiError> {
        // A field set to null counts as absent.
        match self.map.iter().find(|(_, v)| !v.is_null()).map(|(k, _)| k) {
            None => Ok(()),
            Some(key) => {
                let path = format!("{}{key}", self.prefix);
                Err(ApiError::invalid(
                    &path,
                    format!("Unrecognized request argument supplied: {path}"),
                )
                .code("unknown_parameter"))
            }
        }
    }

    /// Drops the fields no one read, where clients send back what responses and
    /// SDKs put in an object: messages, input items and content parts carry
    /// `annotations`, `parsed`, `reasoning_content`, `provider_specific_fields`,
    /// `phase`... OpenAI accepts them there, and they say nothing to the model.
    pub fn ignore_rest(self) {}
}

/// OpenAI's names (a function, a response format): 1 to 64 of `[a-zA-Z0-9_-]`.
pub fn check_name(path: &str, name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(bad_value(
            path,
            format!("'{name}': a name is 1 to 64 letters, digits, '_' or '-'."),
        ))
    }
}
