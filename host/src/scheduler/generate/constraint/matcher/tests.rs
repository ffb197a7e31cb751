//! The matcher's tests: JSON values and schemas written byte by byte.

use super::*;
use serde_json::json;

fn matcher(schema: serde_json::Value) -> (Schema, Matcher) {
    let schema = Schema::compile(&schema).unwrap();
    let m = Matcher::new(&schema);
    (schema, m)
}

fn accepts(schema: &Schema, m: &Matcher, text: &str) -> Option<bool> {
    m.after(schema, text.as_bytes()).map(|m| m.is_complete())
}

fn person() -> serde_json::Value {
    json!({"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 5},
        "age": {"type": "integer"},
        "score": {"type": "number"},
        "tags": {"type": "array", "items": {"enum": ["a", "b", 3]}, "maxItems": 2},
        "pet": {"anyOf": [{"type": "null"}, {"type": "object", "properties": {"kind": {"const": "cat"}}}]},
        "ok": {"type": "boolean"},
        "extra": {}
    }})
}

#[test]
fn a_schema_writes_every_property_in_order_with_its_type() {
    let (s, m) = matcher(person());
    let good = r#"{"name": "Ada", "age": 36, "score": -1.5e2, "tags": ["a", 3], "pet": {"kind": "cat"}, "ok": true, "extra": [1, {"x": null}]}"#;
    assert_eq!(accepts(&s, &m, good), Some(true));
    let pretty = "{\n  \"name\": \"Bo\",\n  \"age\": 0,\n  \"score\": 2,\n  \"tags\": [],\n  \"pet\": null,\n  \"ok\": false,\n  \"extra\": 7\n}\n";
    assert_eq!(accepts(&s, &m, pretty), Some(true));
    for prefix in [
        "{",
        "{\"na",
        "{\"name\": \"Ad",
        "{\"name\": \"Ada\", \"age\": 3",
        "{\"name\": \"Ada\", \"age\": 36, \"score\": -1.",
    ] {
        assert_eq!(accepts(&s, &m, prefix), Some(false), "{prefix}");
    }
    for bad in [
        "[",                                   // not an object
        "{\"age\"",                            // properties out of order
        "{\"name\": 5",                        // wrong type
        "{\"name\": \"Adaaaa",                 // beyond maxLength
        "{\"name\": \"Ada\"}",                 // a property missing
        "{\"name\": \"Ada\", \"age\": 3.5",    // an integer with a fraction
        "{\"name\": \"Ada\", \"age\": 36, \"score\": 1, \"tags\": [\"c\"", // not in the enum
        "{\"name\": \"Ada\", \"age\": 36, \"score\": 1, \"tags\": [3, 3, 3", // beyond maxItems
        "{\"name\": \"Ada\", \"age\": 36, \"score\": 1, \"tags\": [], \"pet\": {\"kind\": \"dog\"", // not the const
        "{\"name\": \"Ada\", \"age\": 36, \"score\": 1, \"tags\": [], \"pet\": 1", // neither alternative
        "{\"name\": \"Ada\", \"age\": 36, \"score\": 1, \"tags\": [], \"pet\": null, \"ok\": 1",
        "{\"name\": \"Ada\", \"age\": 36, \"score\": 1, \"tags\": [], \"pet\": null, \"ok\": true, \"extra\": 1, \"more\"",
    ] {
        assert_eq!(accepts(&s, &m, bad), None, "{bad}");
    }
}

#[test]
fn numbers_end_where_their_container_goes_on() {
    let (s, m) = matcher(json!({"type": "object", "properties": {
        "n": {"type": "number"}, "list": {"type": "array", "items": {"type": "integer"}}, "any": true}}));
    assert_eq!(
        accepts(&s, &m, r#"{"n":10,"list":[1,-20,300],"any":-4}"#),
        Some(true)
    );
    assert_eq!(
        accepts(&s, &m, r#"{"n":1 ,"list":[1 ],"any":4 }"#),
        Some(true)
    );
    assert_eq!(accepts(&s, &m, r#"{"n":01"#), None);
}

#[test]
fn recursive_schemas_and_minimums() {
    let (s, m) = matcher(json!({
        "$defs": {"Node": {"type": "object", "properties": {
            "v": {"type": "integer"},
            "kids": {"type": "array", "items": {"$ref": "#/$defs/Node"}}}}},
        "$ref": "#/$defs/Node"}));
    assert_eq!(
        accepts(
            &s,
            &m,
            r#"{"v":1,"kids":[{"v":2,"kids":[]},{"v":3,"kids":[{"v":4,"kids":[]}]}]}"#
        ),
        Some(true)
    );
    let (s, m) = matcher(json!({"type": "object", "properties": {
        "s": {"type": "string", "minLength": 2}, "a": {"type": "array", "minItems": 1}}}));
    assert_eq!(accepts(&s, &m, r#"{"s":"é"#), Some(false));
    assert_eq!(accepts(&s, &m, r#"{"s":"é""#), None);
    assert_eq!(accepts(&s, &m, r#"{"s":"\u00e9x","a":[]"#), None);
    assert_eq!(accepts(&s, &m, r#"{"s":"\u00e9x","a":[{}]}"#), Some(true));
}

#[test]
fn alternatives_of_alternatives_stay_bounded() {
    // 40 levels of two alternatives each: 2^40 paths to the same string.
    let mut defs = serde_json::Map::new();
    for i in 0..40 {
        let next = json!({"$ref": format!("#/$defs/A{}", i + 1)});
        defs.insert(format!("A{i}"), json!({"anyOf": [next, next]}));
    }
    defs.insert("A40".into(), json!({"type": "string"}));
    let (s, m) = matcher(json!({"$defs": defs, "type": "object",
        "properties": {"x": {"$ref": "#/$defs/A0"}}}));
    let started = std::time::Instant::now();
    // The budget cuts the search short: the value cannot start, but quickly.
    let _ = accepts(&s, &m, r#"{"x": "a"}"#);
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
    // A self-reference never starts a value.
    let (s, m) = matcher(json!({"$defs": {"L": {"anyOf": [{"$ref": "#/$defs/L"}]}},
        "type": "object", "properties": {"x": {"$ref": "#/$defs/L"}}}));
    assert_eq!(accepts(&s, &m, r#"{"x": 1"#), None);
}

#[test]
fn any_object_is_json_mode() {
    let s = Schema::any_object();
    let m = Matcher::new(&s);
    assert_eq!(accepts(&s, &m, "{\"a\": [1, 2]}\n"), Some(true));
    assert_eq!(accepts(&s, &m, "[1]"), None);
    assert_eq!(accepts(&s, &m, "{} x"), None);
}

/// `v` of schema `value` written as `text`: Some(true) the whole object is
/// accepted, Some(false) only as a prefix (`{"v":text`), None refused.
fn value(value: serde_json::Value, text: &str) -> Option<bool> {
    let (s, m) = matcher(json!({"type": "object", "properties": {"v": value}}));
    if accepts(&s, &m, &format!("{{\"v\":{text}}}")) == Some(true) {
        return Some(true);
    }
    accepts(&s, &m, &format!("{{\"v\":{text}")).map(|_| false)
}

fn check(schema: serde_json::Value, cases: &[(&str, Option<bool>)]) {
    for (text, want) in cases {
        assert_eq!(value(schema.clone(), text), *want, "{schema} {text}");
    }
}

const OK: Option<bool> = Some(true);
const PREFIX: Option<bool> = Some(false);
const NO: Option<bool> = None;

#[test]
fn bounded_integers_are_written_in_range() {
    check(
        json!({"type": "integer", "minimum": 1, "maximum": 10}),
        &[
            ("1", OK),
            ("5", OK),
            ("10", OK),
            ("0", NO),
            ("11", NO),
            ("100", NO),
            ("-1", NO),
            ("-", NO),
            ("1.0", NO),
            ("1e1", NO),
        ],
    );
    check(
        json!({"type": "integer", "minimum": -5, "maximum": 5}),
        &[
            ("-5", OK),
            ("0", OK),
            ("5", OK),
            ("-", PREFIX),
            ("-6", NO),
            ("6", NO),
            ("-0", NO),
            ("-05", NO),
            ("05", NO),
        ],
    );
    check(
        json!({"type": "integer", "minimum": 0}),
        &[
            ("0", OK),
            ("123456789012345678", OK),
            ("1234567890123456789", NO),
            ("-", NO),
            ("-0", NO),
        ],
    );
    check(
        json!({"type": "integer", "exclusiveMinimum": 0}),
        &[("1", OK), ("0", NO), ("-1", NO), ("10", OK)],
    );
    check(
        json!({"type": "integer", "maximum": 100}),
        &[
            ("100", OK),
            ("-100000", OK),
            ("101", NO),
            ("1000", NO),
            ("99", OK),
        ],
    );
    check(
        json!({"type": "integer", "exclusiveMinimum": -10, "exclusiveMaximum": 10}),
        &[("9", OK), ("10", NO), ("-9", OK), ("-10", NO), ("1", OK)],
    );
    check(
        json!({"type": "integer", "minimum": 10, "maximum": 20}),
        &[
            ("1", PREFIX),
            ("2", PREFIX),
            ("3", NO),
            ("15", OK),
            ("21", NO),
        ],
    );
    // A fractional bound on an integer: rounded inwards.
    check(
        json!({"type": "integer", "minimum": 0.5, "maximum": 2.5}),
        &[("0", NO), ("1", OK), ("2", OK), ("3", NO)],
    );
    // Alternatives keep their own constraints.
    check(
        json!({"type": ["integer", "null"], "minimum": 0}),
        &[("null", OK), ("3", OK), ("-1", NO)],
    );
}

#[test]
fn bounded_numbers_are_written_in_range() {
    check(
        json!({"type": "number", "minimum": 0, "maximum": 1}),
        &[
            ("0", OK),
            ("1", OK),
            ("0.5", OK),
            ("1.0", OK),
            ("1.000", OK),
            ("0.999", OK),
            ("1.", PREFIX),
            ("1.5", NO),
            ("1.01", NO),
            ("-0.1", NO),
            ("-", NO),
            ("2", NO),
            ("10", NO),
            ("1e0", NO),
            ("0.", PREFIX),
        ],
    );
    check(
        json!({"type": "number", "exclusiveMinimum": 0}),
        &[
            ("0.01", OK),
            ("3", OK),
            // Live prefixes (of 0.01...) that may not end.
            ("0", PREFIX),
            ("0.0", PREFIX),
            ("0.000000000000000001", OK),
            ("0.0000000000000000001", NO),
            ("0.", PREFIX),
            ("-", NO),
        ],
    );
    check(
        json!({"type": "number", "minimum": -1, "maximum": 1}),
        &[
            ("-1", OK),
            ("-1.0", OK),
            ("-0.5", OK),
            ("-1.01", NO),
            // Never negative zero: only a prefix of a negative number.
            ("-0", PREFIX),
            ("-0.0", PREFIX),
            ("-0.", PREFIX),
            ("1", OK),
        ],
    );
    check(
        json!({"type": "number", "minimum": 0, "exclusiveMaximum": 100}),
        &[("99.5", OK), ("100", NO), ("100.0", NO), ("99.999", OK)],
    );
    check(
        json!({"type": "number", "minimum": 0.1, "maximum": 0.2}),
        &[
            ("0.1", OK),
            ("0.15", OK),
            ("0.2", OK),
            ("0.21", NO),
            ("0.09", NO),
        ],
    );
}

#[test]
fn formats_are_written_exactly() {
    let string = |format: &str| json!({"type": "string", "format": format});
    check(
        string("date"),
        &[
            ("\"2024-02-29\"", OK),
            ("\"1999-12-31\"", OK),
            ("\"2023-02-28\"", OK),
            ("\"2000-02-29\"", OK),
            ("\"2023-02-29\"", NO),
            ("\"1900-02-29\"", NO),
            ("\"2023-13-01\"", NO),
            ("\"2023-04-31\"", NO),
            ("\"2023-00-10\"", NO),
            ("\"2023-1-01\"", NO),
            ("\"2023-01-0\"", NO),
            ("\"2023-01\"", NO),
            ("\"2023-01", PREFIX),
        ],
    );
    check(
        string("time"),
        &[
            ("\"12:30:00\"", OK),
            ("\"23:59:59.123Z\"", OK),
            ("\"01:02:03+05:30\"", OK),
            ("\"00:00:00-23:59\"", OK),
            ("\"24:00:00\"", NO),
            ("\"12:60:00\"", NO),
            ("\"12:00\"", NO),
            ("\"12:00:00.\"", NO),
            ("\"12:00:00+5:00\"", NO),
        ],
    );
    check(
        string("date-time"),
        &[
            ("\"2024-01-02T03:04:05Z\"", OK),
            ("\"2024-01-02T03:04:05.5+01:00\"", OK),
            ("\"2024-01-02T03:04:05\"", NO),
            ("\"2024-01-02 03:04:05Z\"", NO),
            ("\"2024-02-30T03:04:05Z\"", NO),
        ],
    );
    check(
        string("uuid"),
        &[
            ("\"123e4567-e89b-12d3-a456-426614174000\"", OK),
            ("\"123E4567-E89B-12D3-A456-426614174000\"", OK),
            ("\"123e4567-e89b-12d3-a456-42661417400\"", NO),
            ("\"123e4567e89b-12d3-a456-426614174000\"", NO),
            ("\"g23e4567-e89b-12d3-a456-426614174000\"", NO),
        ],
    );
    check(
        string("email"),
        &[
            ("\"ada.lovelace@example.com\"", OK),
            ("\"a+tag@mail.example.co\"", OK),
            ("\"a@b.io\"", OK),
            ("\"a@b\"", NO),
            ("\"@b.com\"", NO),
            ("\"a..b@c.com\"", NO),
            ("\".a@c.com\"", NO),
            ("\"a@-b.com\"", NO),
            ("\"a@b.test\"", NO),
            ("\"a b@c.com\"", NO),
        ],
    );
    // pydantic's HttpUrl: `uri` with a length limit.
    check(
        json!({"type": "string", "format": "uri", "minLength": 1, "maxLength": 2083}),
        &[
            ("\"https://example.com\"", OK),
            ("\"http://localhost:8080/v1/models?x=1&y=%20#top\"", OK),
            ("\"https://10.0.0.1/a/b.c\"", OK),
            ("\"https://docs.python.org/3/library/re.html\"", OK),
            ("\"ftp://example.com\"", NO),
            ("\"https://\"", NO),
            ("\"https://exa mple.com\"", NO),
            ("\"example.com\"", NO),
            ("\"https://example.com/%zz\"", NO),
        ],
    );
}

#[test]
fn ipv4_addresses_are_dotted_quads() {
    check(
        json!({"type": "string", "format": "ipv4"}),
        &[
            ("\"192.168.0.1\"", OK),
            ("\"255.255.255.255\"", OK),
            ("\"0.0.0.0\"", OK),
            ("\"256.1.1.1\"", NO),
            ("\"01.1.1.1\"", NO),
            ("\"1.1.1\"", NO),
        ],
    );
}

#[test]
fn patterns_match_anywhere_unless_anchored() {
    check(
        json!({"type": "string", "pattern": "ab"}),
        &[
            ("\"ab\"", OK),
            ("\"xxabyy\"", OK),
            ("\"é ab ✓\"", OK),
            ("\"ba\"", NO),
            ("\"ba", PREFIX),
            ("\"a\\u0062\"", NO),
            ("\"a\\\"b\"", NO),
        ],
    );
    check(
        json!({"type": "string", "pattern": r"^[a-z]+-\d{2}$"}),
        &[
            ("\"abc-12\"", OK),
            ("\"abc-123\"", NO),
            ("\"1abc-12\"", NO),
            ("\"abc-1\"", NO),
            ("\"abc-1", PREFIX),
        ],
    );
    check(
        json!({"type": "string", "pattern": "^a+$", "maxLength": 3}),
        &[("\"aaa\"", OK), ("\"aaaa\"", NO), ("\"\"", NO)],
    );
    check(
        json!({"type": "string", "pattern": "^a+$", "minLength": 2}),
        &[("\"aa\"", OK), ("\"a\"", NO), ("\"aaaaa\"", OK)],
    );
    // A limit the pattern keeps anyway is no limit.
    check(
        json!({"type": "string", "format": "uuid", "minLength": 1, "maxLength": 36}),
        &[("\"123e4567-e89b-12d3-a456-426614174000\"", OK)],
    );
}

#[test]
fn what_cannot_be_enforced_is_still_refused() {
    let prop = |value: serde_json::Value| {
        Schema::compile(&json!({"type": "object", "properties": {"v": value}}))
            .unwrap_err()
            .to_string()
    };
    for (schema, says) in [
        (
            json!({"type": "string", "format": "duration"}),
            "the format 'duration' is not supported",
        ),
        (
            json!({"type": "string", "format": "hostname"}),
            "not supported",
        ),
        (
            json!({"type": "string", "pattern": "(?=a)a"}),
            "cannot be used",
        ),
        (
            json!({"type": "string", "pattern": r"(\w)\1"}),
            "cannot be used",
        ),
        (
            json!({"type": "string", "pattern": "(unclosed"}),
            "cannot be used",
        ),
        (
            json!({"type": "string", "pattern": "^\"$"}),
            "without escapes",
        ),
        (
            json!({"type": "string", "pattern": "(a|b)*a(a|b){40}"}),
            "cannot be used",
        ),
        (
            json!({"type": "string", "pattern": "^a+$", "minLength": 2, "maxLength": 4}),
            "'minLength' and 'maxLength' together with 'pattern'",
        ),
        (
            json!({"type": "string", "pattern": "^a{5}$", "maxLength": 3}),
            "within minLength and maxLength",
        ),
        (
            json!({"type": "string", "pattern": "a", "format": "date"}),
            "together with 'format'",
        ),
        (json!({"minimum": 0}), "'minimum' without a 'type'"),
        (
            json!({"anyOf": [{"type": "integer"}], "maximum": 3}),
            "'maximum' beside 'anyOf'",
        ),
        (json!({"type": "integer", "minimum": 1e19}), "beyond"),
        (
            json!({"type": "number", "minimum": 1e-30}),
            "more than 18 decimals",
        ),
        (
            json!({"type": "integer", "minimum": 5, "maximum": 4}),
            "no integer",
        ),
        (
            json!({"type": "integer", "exclusiveMinimum": true}),
            "must be a number",
        ),
        (
            json!({"type": "integer", "format": "int32"}),
            "'format' on a number",
        ),
        (
            json!({"type": "number", "multipleOf": 0.5}),
            "the keyword 'multipleOf' is not supported",
        ),
    ] {
        let err = prop(schema.clone());
        assert!(err.contains(says), "{schema}: {err}");
        assert!(err.starts_with("schema.properties.v"), "{schema}: {err}");
    }
    // Keywords of other types do not apply (and are ignored, as JSON Schema says).
    assert!(Schema::compile(&json!({"type": "object", "properties": {
        "v": {"type": "string", "minimum": 3}}}))
    .is_ok());
}
