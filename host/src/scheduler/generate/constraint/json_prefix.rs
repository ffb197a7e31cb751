//! A byte-at-a-time recognizer of JSON prefixes: it says whether some bytes can
//! still continue into one JSON object (or one JSON value of any kind, RFC 8259),
//! and when it is complete. The state is `Copy` (the container stack is a bit set),
//! so trying a token's bytes on a copy costs no allocation.

/// Deepest nesting accepted (the stack is one bit per level).
pub(super) const MAX_DEPTH: u8 = 64;
/// Most whitespace bytes in a row outside strings: enough for any indentation a
/// model writes, and it keeps a model from emitting whitespace forever.
pub(super) const MAX_WHITESPACE_RUN: u8 = 40;

/// Whitespace between tokens as a pretty-printer writes it: spaces and tabs, at most
/// one line break (`\n` or `\r\n`), at most [`MAX_WHITESPACE_RUN`] bytes. A model
/// whose preferred token is refused reaches for blank lines otherwise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct WhitespaceRun {
    bytes: u8,
    line_break: bool,
    after_cr: bool,
}

impl WhitespaceRun {
    /// Some(true): `b` is whitespace the run takes; Some(false): `b` is not
    /// whitespace (the run ends); None: whitespace the run refuses.
    pub(super) fn take(&mut self, b: u8) -> Option<bool> {
        let line_break = match b {
            b' ' | b'\t' => false,
            b'\n' | b'\r' => true,
            _ => {
                *self = Self::default();
                return Some(false);
            }
        };
        // `\r\n` is one break: its `\n` does not count again.
        let crlf_end = b == b'\n' && self.after_cr;
        if line_break && self.line_break && !crlf_end {
            return None;
        }
        self.line_break |= line_break;
        self.after_cr = b == b'\r';
        self.bytes += 1;
        (self.bytes <= MAX_WHITESPACE_RUN).then_some(true)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// The top-level object's `{` (JSON mode: the value must be an object).
    Start,
    /// A value (after `:`, `[` or `,` in an array).
    Value,
    /// After `[`: a value or `]`.
    ValueOrEnd,
    /// After `{`: a key or `}`.
    KeyOrEnd,
    /// After `,` in an object: a key.
    Key,
    /// After a key: `:`.
    Colon,
    /// After a value inside a container: `,` or the container's closing bracket.
    CommaOrEnd,
    /// Inside a string (a key or a value).
    Str {
        key: bool,
        escape: Escape,
    },
    Number(Number),
    /// The rest of `true`, `false` or `null`.
    Literal {
        word: &'static [u8],
        at: u8,
    },
    /// The value is complete: only whitespace may follow.
    Done,
}

/// Where a string is inside an escape or a multi-byte character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Escape {
    None,
    /// After `\`.
    Backslash,
    /// Hex digits of `\uXXXX` still expected.
    Hex(u8),
    /// Continuation bytes of a UTF-8 character still expected.
    Utf8(u8),
}

/// Where a JSON number is, byte by byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Number {
    Minus,
    Zero,
    Int,
    Dot,
    Frac,
    Exp,
    ExpSign,
    ExpDigits,
}

impl Number {
    /// The state after a number's first byte.
    pub(super) fn start(b: u8) -> Option<Number> {
        match b {
            b'-' => Some(Number::Minus),
            b'0' => Some(Number::Zero),
            b'1'..=b'9' => Some(Number::Int),
            _ => None,
        }
    }

    /// A number may end here (the next byte belongs to what follows it).
    pub(super) fn may_end(self) -> bool {
        matches!(
            self,
            Number::Zero | Number::Int | Number::Frac | Number::ExpDigits
        )
    }

    /// Still an integer (no fraction or exponent).
    pub(super) fn is_integer(self) -> bool {
        matches!(self, Number::Minus | Number::Zero | Number::Int)
    }

    pub(super) fn next(self, b: u8) -> Option<Number> {
        use Number::*;
        let digit = b.is_ascii_digit();
        Some(match (self, b) {
            (Minus, b'0') => Zero,
            (Minus, _) if digit => Int,
            (Int, _) if digit => Int,
            (Zero | Int, b'.') => Dot,
            (Dot | Frac, _) if digit => Frac,
            (Zero | Int | Frac, b'e' | b'E') => Exp,
            (Exp, b'+' | b'-') => ExpSign,
            (Exp | ExpSign | ExpDigits, _) if digit => ExpDigits,
            _ => return None,
        })
    }
}

/// What a byte inside a string (after its opening quote) does.
pub(super) enum StringStep {
    /// The closing quote.
    Close,
    /// Begins a character (counted by `minLength` / `maxLength`).
    NewChar(Escape),
    /// Continues one (an escape's or a UTF-8 character's later bytes).
    SameChar(Escape),
}

pub(super) fn string_step(escape: Escape, b: u8) -> Option<StringStep> {
    use StringStep::{NewChar, SameChar};
    Some(match (escape, b) {
        (Escape::None, b'"') => StringStep::Close,
        (Escape::None, b'\\') => NewChar(Escape::Backslash),
        (Escape::None, 0x00..=0x1f) => return None,
        (Escape::None, 0x20..=0x7f) => NewChar(Escape::None),
        (Escape::None, 0xc2..=0xdf) => NewChar(Escape::Utf8(1)),
        (Escape::None, 0xe0..=0xef) => NewChar(Escape::Utf8(2)),
        (Escape::None, 0xf0..=0xf4) => NewChar(Escape::Utf8(3)),
        (Escape::None, _) => return None,
        (Escape::Backslash, b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => {
            SameChar(Escape::None)
        }
        (Escape::Backslash, b'u') => SameChar(Escape::Hex(4)),
        (Escape::Hex(n), _) if b.is_ascii_hexdigit() => SameChar(match n {
            1 => Escape::None,
            n => Escape::Hex(n - 1),
        }),
        (Escape::Utf8(n), 0x80..=0xbf) => SameChar(match n {
            1 => Escape::None,
            n => Escape::Utf8(n - 1),
        }),
        _ => return None,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonPrefix {
    expect: Expect,
    /// Open containers, innermost in bit `depth - 1`: 1 = object, 0 = array.
    stack: u64,
    depth: u8,
    whitespace: WhitespaceRun,
}

impl Default for JsonPrefix {
    fn default() -> Self {
        Self::new()
    }
}

impl JsonPrefix {
    /// Expects one JSON object.
    pub fn new() -> Self {
        Self {
            expect: Expect::Start,
            stack: 0,
            depth: 0,
            whitespace: WhitespaceRun::default(),
        }
    }

    /// Expects one JSON value of any kind.
    pub fn any_value() -> Self {
        Self {
            expect: Expect::Value,
            ..Self::new()
        }
    }

    /// The value is complete.
    pub fn is_complete(&self) -> bool {
        self.expect == Expect::Done
    }

    /// A top-level number that could end here: what follows it is not its business.
    pub fn may_end_here(&self) -> bool {
        self.depth == 0 && matches!(self.expect, Expect::Number(n) if n.may_end())
    }

    /// After a value: its container's `,` or closing bracket, or the end.
    fn value_done(&mut self) {
        self.expect = if self.depth == 0 {
            Expect::Done
        } else {
            Expect::CommaOrEnd
        };
    }

    /// Feeds `bytes`; false (and the state is unspecified) when they cannot continue
    /// a JSON object.
    #[cfg(test)]
    pub fn feed(&mut self, bytes: &[u8]) -> bool {
        bytes.iter().all(|&b| self.feed_byte(b))
    }

    /// This state after `bytes`, if they can continue a JSON object.
    #[cfg(test)]
    pub fn after(mut self, bytes: &[u8]) -> Option<Self> {
        self.feed(bytes).then_some(self)
    }

    /// Feeds one byte; false when it cannot continue.
    pub fn feed_byte(&mut self, b: u8) -> bool {
        match self.expect {
            Expect::Str { key, escape } => return self.string_byte(key, escape, b),
            Expect::Literal { word, at } => {
                if word[at as usize] != b {
                    return false;
                }
                if at as usize + 1 == word.len() {
                    self.value_done();
                } else {
                    self.expect = Expect::Literal { word, at: at + 1 };
                }
                return true;
            }
            Expect::Number(n) => match n.next(b) {
                Some(next) => {
                    self.expect = Expect::Number(next);
                    return true;
                }
                None if n.may_end() => self.value_done(),
                None => return false,
            },
            _ => {}
        }
        match self.whitespace.take(b) {
            Some(true) => return true,
            None => return false,
            Some(false) => {}
        }
        match (self.expect, b) {
            (Expect::Start, b'{') => self.open(true),
            (Expect::Value | Expect::ValueOrEnd, _) => self.value_start(b),
            (Expect::KeyOrEnd, b'}') => self.close(true),
            (Expect::KeyOrEnd | Expect::Key, b'"') => {
                self.expect = Expect::Str {
                    key: true,
                    escape: Escape::None,
                };
                true
            }
            (Expect::Colon, b':') => {
                self.expect = Expect::Value;
                true
            }
            (Expect::CommaOrEnd, b',') => {
                self.expect = if self.in_object() {
                    Expect::Key
                } else {
                    Expect::Value
                };
                true
            }
            (Expect::CommaOrEnd, b'}') => self.close(true),
            (Expect::CommaOrEnd, b']') => self.close(false),
            _ => false,
        }
    }

    /// The first byte of a value (or `]` right after `[`).
    fn value_start(&mut self, b: u8) -> bool {
        self.expect = match b {
            b']' if self.expect == Expect::ValueOrEnd => return self.close(false),
            b'{' => return self.open(true),
            b'[' => return self.open(false),
            b'"' => Expect::Str {
                key: false,
                escape: Escape::None,
            },
            b'-' | b'0'..=b'9' => Expect::Number(Number::start(b).expect("a number's first byte")),
            b't' => Expect::Literal {
                word: b"true",
                at: 1,
            },
            b'f' => Expect::Literal {
                word: b"false",
                at: 1,
            },
            b'n' => Expect::Literal {
                word: b"null",
                at: 1,
            },
            _ => return false,
        };
        true
    }

    fn string_byte(&mut self, key: bool, escape: Escape, b: u8) -> bool {
        match string_step(escape, b) {
            None => false,
            Some(StringStep::Close) => {
                if key {
                    self.expect = Expect::Colon;
                } else {
                    self.value_done();
                }
                true
            }
            Some(StringStep::NewChar(escape) | StringStep::SameChar(escape)) => {
                self.expect = Expect::Str { key, escape };
                true
            }
        }
    }

    fn in_object(&self) -> bool {
        self.depth > 0 && self.stack >> (self.depth - 1) & 1 == 1
    }

    fn open(&mut self, object: bool) -> bool {
        if self.depth == MAX_DEPTH {
            return false;
        }
        self.stack = self.stack & !(1u64 << self.depth) | (u64::from(object) << self.depth);
        self.depth += 1;
        self.expect = if object {
            Expect::KeyOrEnd
        } else {
            Expect::ValueOrEnd
        };
        true
    }

    fn close(&mut self, object: bool) -> bool {
        if self.depth == 0 || self.in_object() != object {
            return false;
        }
        self.depth -= 1;
        self.value_done();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepts(text: &str) -> Option<JsonPrefix> {
        JsonPrefix::new().after(text.as_bytes())
    }

    #[test]
    fn complete_objects() {
        for text in [
            "{}",
            " {\"a\": 1}",
            "{\"a\":[1,-2.5e+3,0.0,true,false,null,\"x\"],\"b\":{\"c\":{}}}\n",
            "{\n  \"name\": \"Ada\",\n  \"tags\": [ ],\n  \"n\": -0\n}",
            r#"{"esc": "q\" b\\ s\/ \b\f\n\r\t \u00e9 \uD83D\uDE00"}"#,
            "{\"utf8\": \"café – 日本 😀\"}",
            "{\"e\": 1E5, \"f\": 2e-1, \"g\": 10}",
        ] {
            let state = accepts(text).unwrap_or_else(|| panic!("rejected {text:?}"));
            assert!(state.is_complete(), "{text:?} should be complete");
            // What the recognizer accepts, a JSON parser accepts.
            let v: serde_json::Value = serde_json::from_str(text).unwrap();
            assert!(v.is_object());
        }
    }

    #[test]
    fn prefixes_are_accepted_but_not_complete() {
        for text in [
            "",
            "  ",
            "{",
            "{\"",
            "{\"a",
            "{\"a\"",
            "{\"a\":",
            "{\"a\": -",
            "{\"a\": 1",
            "{\"a\": 1.",
            "{\"a\": 1e",
            "{\"a\": 1e-",
            "{\"a\": [",
            "{\"a\": [1,",
            "{\"a\": t",
            "{\"a\": nul",
            "{\"a\": \"\\",
            "{\"a\": \"\\u00",
            "{\"a\": {\"b\": 2}",
        ] {
            let state = JsonPrefix::new().after(text.as_bytes());
            assert!(state.is_some_and(|s| !s.is_complete()), "{text:?}");
        }
        // Half a UTF-8 character inside a string.
        assert!(JsonPrefix::new().after(b"{\"a\": \"\xc3").is_some());
        assert!(JsonPrefix::new().after(b"{\"a\": \"\xe6\x97").is_some());
    }

    #[test]
    fn invalid_continuations_are_rejected() {
        for text in [
            "[]",
            "\"a\"",
            "1",
            "x",
            "{,",
            "{\"a\" 1}",
            "{\"a\":}",
            "{\"a\":1,}",
            "{\"a\":[1,]}",
            "{\"a\":01}",
            "{\"a\":1.}",
            "{\"a\":-}",
            "{\"a\":+1}",
            "{\"a\":.5}",
            "{\"a\":1e}",
            "{\"a\":tru}",
            "{\"a\":True}",
            "{\"a\":\"\n\"}",
            "{\"a\":\"\\x\"}",
            "{\"a\":\"\\u12g\"}",
            "{\"a\":1]",
            "{\"a\":[1}",
            "{}}",
            "{} x",
            "{'a':1}",
            "{a:1}",
            "{\"a\":1}{",
        ] {
            assert!(
                JsonPrefix::new().after(text.as_bytes()).is_none(),
                "accepted {text:?}"
            );
        }
        // Bytes that are not UTF-8, inside a string or outside one.
        for bytes in [
            &b"{\"a\":\"\xff\"}"[..],
            b"{\"a\":\"\x80\"}",
            b"{\"a\":\"\xc3(\"}",
            b"{\xc3\xa9",
        ] {
            assert!(
                JsonPrefix::new().after(bytes).is_none(),
                "accepted {bytes:?}"
            );
        }
    }

    #[test]
    fn whitespace_is_one_line_break_at_most() {
        for ok in ["{\n  \"a\": 1\n}", "{\r\n\t\"a\" :\t1 }", "{ \"a\":\n1}"] {
            assert!(accepts(ok).is_some_and(|s| s.is_complete()), "{ok:?}");
        }
        for blank_line in ["{\n\n", "{\n  \n", "{\r\n\r\n", "{\"a\": 1,\r\r"] {
            assert!(accepts(blank_line).is_none(), "{blank_line:?}");
        }
    }

    #[test]
    fn whitespace_runs_and_depth_are_bounded() {
        let long_run = format!("{{{}", " ".repeat(MAX_WHITESPACE_RUN as usize + 1));
        assert!(accepts(&long_run).is_none());
        let ok_run = format!("{{{}\"a\":1}}", " ".repeat(MAX_WHITESPACE_RUN as usize));
        assert!(accepts(&ok_run).is_some_and(|s| s.is_complete()));
        let deep = format!("{{\"a\":{}", "[".repeat(MAX_DEPTH as usize - 1));
        assert!(accepts(&deep).is_some());
        assert!(accepts(&(deep + "[")).is_none());
    }

    #[test]
    fn any_value_mode_takes_every_kind_of_value() {
        for (text, complete) in [
            ("[1, {\"a\": []}]", true),
            ("\"x\"", true),
            ("null", true),
            ("-12.5e3", false),
            ("{}", true),
            ("[", false),
        ] {
            let state = JsonPrefix::any_value().after(text.as_bytes()).unwrap();
            assert_eq!(state.is_complete(), complete, "{text}");
        }
        // A number is complete only once something else follows it.
        let number = JsonPrefix::any_value().after(b"42").unwrap();
        assert!(number.may_end_here() && !number.is_complete());
        assert!(number.after(b" ").is_some_and(|s| s.is_complete()));
        assert!(number.after(b",").is_none());
        assert!(!JsonPrefix::any_value().after(b"4.").unwrap().may_end_here());
        assert!(JsonPrefix::any_value().after(b"1 2").is_none());
    }

    #[test]
    fn a_state_is_tried_on_a_copy() {
        let state = accepts("{\"a\":").unwrap();
        assert!(state.after(b"]").is_none());
        assert!(state.after(b" 12}").is_some_and(|s| s.is_complete()));
        assert!(state.after(b"[{\"b\":null}]").is_some());
    }
}
