//! vLLM's structured-output fields, which clients written for vLLM send to
//! `/v1/chat/completions` and `/v1/completions`: `guided_json`, `guided_regex`,
//! `guided_choice` (with the ignored `guided_decoding_backend`), and their newer
//! form `structured_outputs: {"json" | "regex" | "choice": ...}`. A JSON schema
//! becomes the same constraint as `response_format` `json_schema`; a regex or a list
//! of choices becomes the host's pattern constraint (choices as an alternation of
//! escaped literals).

use super::json::{bad_value, wrong_type, Fields};
use crate::errors::ApiError;
use serde_json::Value;

/// The most choices `guided_choice` may list.
pub const MAX_CHOICES: usize = 1024;

/// What the output must be, and the field that said so (for errors about it).
#[derive(Debug, Clone, PartialEq)]
pub enum Structured {
    /// A JSON Schema, as JSON text.
    Json(String, &'static str),
    /// A regular expression the whole output matches.
    Pattern(String, &'static str),
}

impl Structured {
    pub fn param(&self) -> &'static str {
        match self {
            Structured::Json(_, p) | Structured::Pattern(_, p) => p,
        }
    }
}

/// Reads one form's value; the path names it in errors.
type Form = fn(Value, &'static str) -> Result<Structured, ApiError>;

/// Each form: its `guided_*` field, its key in `structured_outputs`, that key's
/// full path, and its reader.
const FORMS: [(&str, &str, &str, Form); 3] = [
    (
        "guided_json",
        "json",
        "structured_outputs.json",
        json_schema,
    ),
    ("guided_regex", "regex", "structured_outputs.regex", regex),
    (
        "guided_choice",
        "choice",
        "structured_outputs.choice",
        choice,
    ),
];

/// Takes the fields out of `f`; at most one of them may be given.
pub fn parse(f: &mut Fields) -> Result<Option<Structured>, ApiError> {
    // Which library vLLM should use: the host has one.
    f.string("guided_decoding_backend")?;
    for name in ["guided_grammar", "guided_whitespace_pattern"] {
        f.reject_unless(
            name,
            |_| false,
            "is not supported (JSON schemas, regexes and choices are).",
        )?;
    }
    let mut found = Vec::new();
    for (field, _, _, form) in FORMS {
        if let Some(v) = f.take(field) {
            found.push(form(v, field)?);
        }
    }
    match f.take("structured_outputs") {
        None => {}
        Some(Value::Object(m)) => {
            let mut o = Fields::nested(m, "structured_outputs");
            for (_, key, path, form) in FORMS {
                if let Some(v) = o.take(key) {
                    found.push(form(v, path)?);
                }
            }
            for name in [
                "grammar",
                "json_object",
                "structural_tag",
                "whitespace_pattern",
            ] {
                o.reject_unless(
                    name,
                    |_| false,
                    "is not supported (json, regex and choice are).",
                )?;
            }
            o.string("backend")?;
            o.finish()?;
        }
        Some(other) => return Err(wrong_type("structured_outputs", "an object", &other)),
    }
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        _ => Err(ApiError::invalid(
            found[1].param(),
            format!(
                "'{}' and '{}' cannot both be given: the output has one form.",
                found[0].param(),
                found[1].param()
            ),
        )),
    }
}

/// A schema object, or its JSON text.
fn json_schema(v: Value, path: &'static str) -> Result<Structured, ApiError> {
    let text = match v {
        Value::Object(_) => v.to_string(),
        Value::String(s) => match serde_json::from_str::<Value>(&s) {
            Ok(Value::Object(_)) => s,
            _ => return Err(bad_value(path, "the string is not a JSON Schema object.")),
        },
        other => return Err(wrong_type(path, "a JSON Schema object", &other)),
    };
    Ok(Structured::Json(text, path))
}

fn regex(v: Value, path: &'static str) -> Result<Structured, ApiError> {
    match v {
        Value::String(s) if s.is_empty() => Err(bad_value(path, "the pattern is empty.")),
        Value::String(s) => Ok(Structured::Pattern(s, path)),
        other => Err(wrong_type(path, "a string", &other)),
    }
}

/// One of the strings, exactly.
fn choice(v: Value, path: &'static str) -> Result<Structured, ApiError> {
    let Value::Array(items) = v else {
        return Err(wrong_type(path, "an array of strings", &v));
    };
    if items.is_empty() || items.len() > MAX_CHOICES {
        return Err(bad_value(
            path,
            format!("{} choices; 1 to {MAX_CHOICES} are allowed.", items.len()),
        ));
    }
    let mut alternatives = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match item {
            Value::String(s) if !s.is_empty() => alternatives.push(escape(s)),
            Value::String(_) => {
                return Err(bad_value(
                    &format!("{path}[{i}]"),
                    "a choice cannot be empty.",
                ))
            }
            other => return Err(wrong_type(&format!("{path}[{i}]"), "a string", other)),
        }
    }
    Ok(Structured::Pattern(alternatives.join("|"), path))
}

/// `text` as a regex that matches it literally (the meta characters of Rust's
/// `regex` syntax escaped, as `regex_syntax::escape` does).
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 4);
    for c in text.chars() {
        if matches!(
            c,
            '\\' | '.'
                | '+'
                | '*'
                | '?'
                | '('
                | ')'
                | '|'
                | '['
                | ']'
                | '{'
                | '}'
                | '^'
                | '$'
                | '#'
                | '&'
                | '-'
                | '~'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse_body(v: Value) -> Result<Option<Structured>, ApiError> {
        let Value::Object(m) = v else { panic!() };
        let mut f = Fields::new(m);
        let out = parse(&mut f)?;
        f.finish()?;
        Ok(out)
    }

    #[test]
    fn each_form_and_its_newer_name() {
        assert_eq!(parse_body(json!({})).unwrap(), None);
        assert_eq!(
            parse_body(json!({"guided_choice": ["yes", "no (or maybe)"], "guided_decoding_backend": "xgrammar"}))
                .unwrap(),
            Some(Structured::Pattern(r"yes|no \(or maybe\)".into(), "guided_choice"))
        );
        assert_eq!(
            parse_body(json!({"structured_outputs": {"regex": r"\d+"}})).unwrap(),
            Some(Structured::Pattern(
                r"\d+".into(),
                "structured_outputs.regex"
            ))
        );
        let schema = json!({"type": "object"});
        assert_eq!(
            parse_body(json!({"guided_json": schema})).unwrap(),
            Some(Structured::Json(schema.to_string(), "guided_json"))
        );
        assert_eq!(
            parse_body(json!({"structured_outputs": {"json": schema.to_string()}})).unwrap(),
            Some(Structured::Json(
                schema.to_string(),
                "structured_outputs.json"
            ))
        );
    }

    #[test]
    fn escaping_keeps_every_character_literal() {
        assert_eq!(escape(r"a.b*c\d$-#~&"), r"a\.b\*c\\d\$\-\#\~\&");
        assert_eq!(escape("café ✓"), "café ✓");
    }

    #[test]
    fn bad_values_name_their_field() {
        for (body, param) in [
            (json!({"guided_choice": []}), "guided_choice"),
            (json!({"guided_choice": ["a", ""]}), "guided_choice[1]"),
            (json!({"guided_choice": ["a", 1]}), "guided_choice[1]"),
            (json!({"guided_choice": "a"}), "guided_choice"),
            (json!({"guided_regex": ""}), "guided_regex"),
            (json!({"guided_regex": 5}), "guided_regex"),
            (json!({"guided_json": "[1]"}), "guided_json"),
            (json!({"guided_json": 3}), "guided_json"),
            (json!({"guided_grammar": "root ::= x"}), "guided_grammar"),
            (
                json!({"structured_outputs": {"grammar": "x"}}),
                "structured_outputs.grammar",
            ),
            (
                json!({"structured_outputs": {"choice": ["a"], "regex": "b"}}),
                "structured_outputs.choice",
            ),
            (
                json!({"structured_outputs": {"x": 1}}),
                "structured_outputs.x",
            ),
            (
                json!({"guided_regex": "a", "guided_choice": ["b"]}),
                "guided_choice",
            ),
        ] {
            let e = parse_body(body.clone()).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {e:?}");
        }
    }
}
