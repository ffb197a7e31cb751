//! A JSON Schema compiled into the nodes the [`Matcher`](super::matcher::Matcher)
//! walks. Objects are written with every property, in the schema's order (valid
//! whatever `required` says, and the layout a reader expects); keywords that only
//! describe (`title`, `description`, `default`...) are ignored, and keywords that
//! constrain in ways the matcher does not enforce (`multipleOf`, `uniqueItems`...)
//! are refused rather than silently broken. Bounds on numbers, `pattern` and the
//! common `format`s are enforced byte by byte (`numbers.rs`, `string_format.rs`).

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Map, Value};

pub use super::numbers::NumberRange;
use super::string_format::{format_regex, pattern_regex, SharedRegex, StringRegex, UNBOUNDED};

/// Most nodes one schema may compile to.
const MAX_NODES: usize = 2000;

#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// Any JSON value, or any object.
    Any {
        object_only: bool,
    },
    /// Each property's key (as a JSON string, quotes included) and value schema.
    Object {
        props: Vec<(Vec<u8>, usize)>,
    },
    Array {
        items: usize,
        min: u32,
        max: Option<u32>,
    },
    /// Lengths in characters.
    String {
        min: u32,
        max: Option<u32>,
    },
    Number {
        integer: bool,
    },
    /// A number (or integer) with bounds.
    Bounded(NumberRange),
    /// A string that matches a regular expression (a `pattern` or a `format`), of
    /// `min` to `max` characters (at most one of them tighter than the expression's
    /// own lengths).
    Text {
        regex: SharedRegex,
        min: u32,
        max: Option<u32>,
    },
    /// Exactly these bytes (an `enum` member, a `const`, `true`, `null`...).
    Literal(Vec<u8>),
    /// Any one of these.
    OneOf(Vec<usize>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Schema {
    pub nodes: Vec<Node>,
    pub root: usize,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct SchemaError(String);

/// Keywords that only annotate: ignored.
const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "default",
    "examples",
    "$schema",
    "$id",
    "$comment",
    "deprecated",
    "readOnly",
    "writeOnly",
    "strict",
    "$defs",
    "definitions",
    // Every property is written, so `required` always holds.
    "required",
];

/// Keywords the compiler reads (with [`TYPED`]).
const HANDLED: &[&str] = &[
    "type",
    "properties",
    "additionalProperties",
    "items",
    "enum",
    "const",
    "anyOf",
    "oneOf",
    "$ref",
    "minItems",
    "maxItems",
    "minLength",
    "maxLength",
];

/// Keywords that constrain a value of a given type: refused where no type says
/// which (beside `$ref`, `const`, `enum`, `anyOf`, `oneOf`, or without `type`).
const TYPED: &[&str] = &[
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "format",
    "pattern",
];

impl Schema {
    /// JSON mode without a schema: one object of any shape.
    pub fn any_object() -> Self {
        Schema {
            nodes: vec![Node::Any { object_only: true }],
            root: 0,
        }
    }

    /// Compiles `schema`; its root must be an object (as OpenAI requires).
    pub fn compile(schema: &Value) -> Result<Self, SchemaError> {
        let mut compiler = Compiler {
            document: schema,
            nodes: Vec::new(),
            refs: HashMap::new(),
        };
        let root = compiler.compile(schema, "schema")?;
        let schema = Schema {
            nodes: compiler.nodes,
            root,
        };
        if schema.is_object(root, 0) {
            Ok(schema)
        } else {
            Err(SchemaError(
                "the schema's root must be an object ('type': 'object'), or alternatives that all are"
                    .into(),
            ))
        }
    }

    /// Every value `node` accepts is an object (through references and alternatives).
    fn is_object(&self, node: usize, depth: usize) -> bool {
        match &self.nodes[node] {
            Node::Object { .. } | Node::Any { object_only: true } => true,
            Node::OneOf(alternatives) => {
                depth < 32 && alternatives.iter().all(|&a| self.is_object(a, depth + 1))
            }
            _ => false,
        }
    }
}

struct Compiler<'a> {
    document: &'a Value,
    nodes: Vec<Node>,
    /// `$ref` → its node (so recursive schemas compile to cycles).
    refs: HashMap<String, usize>,
}

fn fail<T>(message: String) -> Result<T, SchemaError> {
    Err(SchemaError(message))
}

impl Compiler<'_> {
    fn push(&mut self, node: Node) -> Result<usize, SchemaError> {
        if self.nodes.len() >= MAX_NODES {
            return fail(format!(
                "the schema is too large (more than {MAX_NODES} parts)"
            ));
        }
        self.nodes.push(node);
        Ok(self.nodes.len() - 1)
    }

    fn compile(&mut self, schema: &Value, path: &str) -> Result<usize, SchemaError> {
        let map = match schema {
            Value::Bool(true) => return self.push(Node::Any { object_only: false }),
            Value::Object(map) => map,
            _ => return fail(format!("{path} must be a schema object")),
        };
        if let Some(key) = map.keys().find(|k| {
            let k = k.as_str();
            !ANNOTATIONS.contains(&k) && !HANDLED.contains(&k) && !TYPED.contains(&k)
        }) {
            return fail(format!("{path}: the keyword '{key}' is not supported"));
        }
        let typed_keyword = map.keys().find(|k| TYPED.contains(&k.as_str()));
        if let Some(key) = typed_keyword {
            let beside = ["$ref", "const", "enum", "anyOf", "oneOf"]
                .into_iter()
                .find(|k| map.contains_key(*k));
            if let Some(beside) = beside {
                return fail(format!(
                    "{path}: the keyword '{key}' beside '{beside}' is not supported"
                ));
            }
        }
        if let Some(reference) = map.get("$ref") {
            return self.reference(reference, path);
        }
        if let Some(value) = map.get("const") {
            return self.literal(value);
        }
        if let Some(values) = map.get("enum") {
            let Some(values) = values.as_array().filter(|v| !v.is_empty()) else {
                return fail(format!("{path}.enum must be a non-empty array"));
            };
            let members = values
                .iter()
                .map(|v| self.literal(v))
                .collect::<Result<Vec<_>, _>>()?;
            return self.one_of(members);
        }
        for keyword in ["anyOf", "oneOf"] {
            if let Some(alternatives) = map.get(keyword) {
                let Some(alternatives) = alternatives.as_array().filter(|v| !v.is_empty()) else {
                    return fail(format!("{path}.{keyword} must be a non-empty array"));
                };
                let nodes = alternatives
                    .iter()
                    .enumerate()
                    .map(|(i, s)| self.compile(s, &format!("{path}.{keyword}[{i}]")))
                    .collect::<Result<Vec<_>, _>>()?;
                return self.one_of(nodes);
            }
        }
        let types: Vec<&str> = match map.get("type") {
            None if map.contains_key("properties") => vec!["object"],
            None if map.contains_key("items") => vec!["array"],
            None => {
                if let Some(key) = typed_keyword {
                    return fail(format!(
                        "{path}: the keyword '{key}' without a 'type' is not supported"
                    ));
                }
                return self.push(Node::Any { object_only: false });
            }
            Some(Value::String(t)) => vec![t.as_str()],
            Some(Value::Array(ts)) if !ts.is_empty() => ts
                .iter()
                .map(|t| t.as_str())
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| SchemaError(format!("{path}.type must name types")))?,
            Some(_) => return fail(format!("{path}.type must be a type name or a list of them")),
        };
        let nodes = types
            .into_iter()
            .map(|t| self.typed(t, map, path))
            .collect::<Result<Vec<_>, _>>()?;
        self.one_of(nodes)
    }

    fn typed(
        &mut self,
        t: &str,
        map: &Map<String, Value>,
        path: &str,
    ) -> Result<usize, SchemaError> {
        let node = match t {
            "object" => return self.object(map, path),
            "array" => {
                let items = match map.get("items") {
                    None => self.push(Node::Any { object_only: false })?,
                    Some(items) => self.compile(items, &format!("{path}.items"))?,
                };
                let (min, max) = bounds(map, "minItems", "maxItems", path)?;
                Node::Array { items, min, max }
            }
            "string" => self.string(map, path)?,
            "number" | "integer" => {
                if map.contains_key("format") {
                    // `int32`, `double`...: ranges the schema does not state.
                    return fail(format!(
                        "{path}: the keyword 'format' on a number is not supported"
                    ));
                }
                let integer = t == "integer";
                match NumberRange::parse(map, integer, path).map_err(SchemaError)? {
                    Some(range) => Node::Bounded(range),
                    None => Node::Number { integer },
                }
            }
            "boolean" => {
                let yes = self.push(Node::Literal(b"true".to_vec()))?;
                let no = self.push(Node::Literal(b"false".to_vec()))?;
                Node::OneOf(vec![yes, no])
            }
            "null" => Node::Literal(b"null".to_vec()),
            other => return fail(format!("{path}.type: unknown type '{other}'")),
        };
        self.push(node)
    }

    /// A string node: with a `pattern` or a `format`, one that matches it.
    fn string(&mut self, map: &Map<String, Value>, path: &str) -> Result<Node, SchemaError> {
        let (min, max) = bounds(map, "minLength", "maxLength", path)?;
        let (keyword, regex, what) = match (map.get("pattern"), map.get("format")) {
            (None, None) => return Ok(Node::String { min, max }),
            (Some(_), Some(_)) => {
                return fail(format!(
                    "{path}: 'pattern' together with 'format' is not supported"
                ))
            }
            (Some(pattern), None) => {
                let Some(pattern) = pattern.as_str() else {
                    return fail(format!("{path}.pattern must be a string"));
                };
                let regex =
                    pattern_regex(pattern).map_err(|e| SchemaError(format!("{path}: {e}")))?;
                ("pattern", regex, format!("the pattern {pattern:?}"))
            }
            (None, Some(format)) => {
                let Some(format) = format.as_str() else {
                    return fail(format!("{path}.format must be a string"));
                };
                let Some(regex) = format_regex(format) else {
                    return fail(format!(
                        "{path}: the format '{format}' is not supported (supported: date, time, date-time, uuid, email, ipv4, uri)"
                    ));
                };
                ("format", regex, format!("the format '{format}'"))
            }
        };
        let regex =
            StringRegex::compile(&regex, &what).map_err(|e| SchemaError(format!("{path}: {e}")))?;
        let lengths = regex.lengths();
        // Limits every match keeps anyway are dropped.
        let min = if min <= lengths.shortest { 0 } else { min };
        let max = max.filter(|&max| lengths.longest == UNBOUNDED || lengths.longest > max);
        if max.is_some_and(|max| lengths.shortest > max)
            || (lengths.longest != UNBOUNDED && lengths.longest < min)
        {
            return fail(format!(
                "{path}: no string of {what} has a length within minLength and maxLength"
            ));
        }
        if min > 0 && max.is_some() {
            return fail(format!(
                "{path}: 'minLength' and 'maxLength' together with '{keyword}' are not supported"
            ));
        }
        Ok(Node::Text {
            regex: SharedRegex(Arc::new(regex)),
            min,
            max,
        })
    }

    fn object(&mut self, map: &Map<String, Value>, path: &str) -> Result<usize, SchemaError> {
        let props = match map.get("properties") {
            None => None,
            Some(Value::Object(props)) => Some(props),
            Some(_) => return fail(format!("{path}.properties must be an object")),
        };
        let additional = map.get("additionalProperties");
        let Some(props) = props.filter(|p| !p.is_empty()) else {
            // No properties named: `{}` when nothing else is allowed, any object when
            // anything is; a map of typed values is beyond what the matcher writes.
            return match additional {
                Some(Value::Bool(false)) => self.push(Node::Object { props: Vec::new() }),
                None | Some(Value::Bool(true)) => self.push(Node::Any { object_only: true }),
                Some(_) => fail(format!(
                    "{path}: 'additionalProperties' with a schema and no 'properties' (a map) is not supported"
                )),
            };
        };
        let mut compiled = Vec::with_capacity(props.len());
        for (key, schema) in props {
            let key_json = serde_json::to_vec(&Value::String(key.clone())).expect("a string");
            let node = self.compile(schema, &format!("{path}.properties.{key}"))?;
            compiled.push((key_json, node));
        }
        self.push(Node::Object { props: compiled })
    }

    fn literal(&mut self, value: &Value) -> Result<usize, SchemaError> {
        self.push(Node::Literal(
            serde_json::to_vec(value).expect("a JSON value"),
        ))
    }

    fn one_of(&mut self, nodes: Vec<usize>) -> Result<usize, SchemaError> {
        match nodes.as_slice() {
            [one] => Ok(*one),
            _ => self.push(Node::OneOf(nodes)),
        }
    }

    /// `#`, `#/$defs/Name` or `#/definitions/Name` (JSON Pointer escapes `~0`, `~1`).
    fn reference(&mut self, reference: &Value, path: &str) -> Result<usize, SchemaError> {
        let Some(reference) = reference.as_str() else {
            return fail(format!("{path}.$ref must be a string"));
        };
        if let Some(&node) = self.refs.get(reference) {
            return Ok(node);
        }
        let Some(pointer) = reference.strip_prefix('#') else {
            return fail(format!("{path}.$ref '{reference}': only references within the schema ('#/...') are supported"));
        };
        let document = self.document;
        let Some(target) = document.pointer(pointer) else {
            return fail(format!(
                "{path}.$ref '{reference}' names nothing in the schema"
            ));
        };
        // A placeholder first, so that a reference to itself ends in it.
        let placeholder = self.push(Node::OneOf(Vec::new()))?;
        self.refs.insert(reference.to_string(), placeholder);
        let node = self.compile(target, reference)?;
        self.nodes[placeholder] = Node::OneOf(vec![node]);
        Ok(placeholder)
    }
}

fn bounds(
    map: &Map<String, Value>,
    min_key: &str,
    max_key: &str,
    path: &str,
) -> Result<(u32, Option<u32>), SchemaError> {
    let read = |key: &str| -> Result<Option<u32>, SchemaError> {
        match map.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| SchemaError(format!("{path}.{key} must be a non-negative integer"))),
        }
    };
    let (min, max) = (read(min_key)?.unwrap_or(0), read(max_key)?);
    if max.is_some_and(|max| max < min) {
        return fail(format!("{path}: {max_key} is below {min_key}"));
    }
    Ok((min, max))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn objects_keep_their_properties_in_order() {
        let s = Schema::compile(&json!({
            "type": "object",
            "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
            "required": ["name"], "additionalProperties": false, "title": "Person"
        }))
        .unwrap();
        let Node::Object { props } = &s.nodes[s.root] else {
            panic!("{s:?}")
        };
        let keys: Vec<_> = props
            .iter()
            .map(|(k, _)| String::from_utf8_lossy(k))
            .collect();
        assert_eq!(keys, ["\"name\"", "\"age\""]);
        assert_eq!(s.nodes[props[1].1], Node::Number { integer: true });
    }

    #[test]
    fn unsupported_and_malformed_schemas_are_refused_with_their_place() {
        for (schema, says) in [
            (json!({"type": "string"}), "root must be an object"),
            (
                json!({"anyOf": [{"type": "object"}, {"type": "null"}]}),
                "root must be an object",
            ),
            (
                json!({"type": "object", "properties": {"a": {"type": "number", "multipleOf": 2}}}),
                "schema.properties.a: the keyword 'multipleOf'",
            ),
            (
                json!({"type": "object", "properties": {"a": {"$ref": "#/$defs/B"}}}),
                "names nothing",
            ),
            (
                json!({"type": "object", "properties": {"a": {"$ref": "http://x/y"}}}),
                "within the schema",
            ),
            (
                json!({"type": "object", "properties": {"a": {"type": "decimal"}}}),
                "unknown type",
            ),
            (
                json!({"type": "object", "properties": {"a": {"enum": []}}}),
                "non-empty",
            ),
            (
                json!({"type": "object", "additionalProperties": {"type": "integer"}}),
                "a map",
            ),
            (
                json!({"type": "object", "properties": {"a": {"type": "string", "minLength": 3, "maxLength": 2}}}),
                "maxLength is below minLength",
            ),
            (json!([1]), "must be a schema object"),
        ] {
            let err = Schema::compile(&schema).unwrap_err().to_string();
            assert!(err.contains(says), "{schema}: {err}");
        }
    }

    #[test]
    fn references_resolve_and_may_recurse() {
        let s = Schema::compile(&json!({
            "$defs": {"Node": {"type": "object", "properties": {
                "value": {"type": "integer"},
                "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}}}}},
            "$ref": "#/$defs/Node"
        }));
        let s = s.unwrap_or_else(|e| panic!("{e}"));
        // The root is the reference's placeholder, holding the object; the items refer
        // back to that placeholder.
        let Node::OneOf(held) = &s.nodes[s.root] else {
            panic!("{s:?}")
        };
        let Node::Object { props } = &s.nodes[held[0]] else {
            panic!("{s:?}")
        };
        let Node::Array { items, .. } = &s.nodes[props[1].1] else {
            panic!("{s:?}")
        };
        assert_eq!(*items, s.root);
    }
}
