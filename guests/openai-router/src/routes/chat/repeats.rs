//! Small models asked for tool calls often write the same call again and again until
//! the schema's `maxItems` (or `max_tokens`, which then cuts the answer so no call can
//! be read). [`StopRepeats`] watches the answer's `tool_calls` array as it is made
//! and ends the generation at the first call that repeats an earlier one: it cancels
//! the generation on the host, closes the array and the object (`]}`), and ends
//! with `stop` and the usage so far. The repeat is then dropped where calls are read
//! ([`super::tools::read_answer`]).

use crate::host::{Chunk, Event, FinishReason, GenerationEnd, GenerationStream, Usage};
use serde_json::Value;

/// A generation answering with tool calls, ended at the first repeated call.
pub struct StopRepeats {
    inner: Option<Box<dyn GenerationStream>>,
    provider: String,
    calls: CallScanner,
    completion_tokens: u32,
    /// The prompt's ids (its count is the usage of an end made here: the host's
    /// count comes with an end it no longer sends).
    prompt_ids: Vec<u32>,
    /// The host's count, kept when the stream is cancelled here.
    cached_prompt_tokens: u32,
    ended: bool,
}

impl StopRepeats {
    pub fn wrap(inner: Box<dyn GenerationStream>) -> Box<dyn GenerationStream> {
        Box::new(StopRepeats {
            prompt_ids: inner.prompt_token_ids(),
            provider: inner.provider(),
            inner: Some(inner),
            calls: CallScanner::default(),
            completion_tokens: 0,
            cached_prompt_tokens: 0,
            ended: false,
        })
    }
}

impl GenerationStream for StopRepeats {
    fn next(&mut self) -> Event {
        let Some(inner) = self.inner.as_mut() else {
            if self.ended {
                self.ended = false;
                return Event::Chunk(Chunk {
                    text: "]}".into(),
                    tokens: Vec::new(),
                    logprobs: Vec::new(),
                });
            }
            return Event::Done(GenerationEnd {
                finish_reason: FinishReason::Stop,
                usage: Usage {
                    prompt_tokens: self.prompt_ids.len() as u32,
                    completion_tokens: self.completion_tokens,
                },
                provider: self.provider.clone(),
                error: None,
            });
        };
        let mut event = inner.next();
        self.cached_prompt_tokens = inner.cached_prompt_tokens();
        if let Event::Chunk(chunk) = &mut event {
            self.completion_tokens += chunk.tokens.len() as u32;
            if let Some(end) = self.calls.feed(&chunk.text) {
                // The answer so far ends with the repeated call; dropping the
                // stream cancels the generation on the host.
                chunk.text.truncate(end);
                self.inner = None;
                self.ended = true;
            }
        }
        event
    }

    fn provider(&self) -> String {
        self.provider.clone()
    }

    fn cached_prompt_tokens(&self) -> u32 {
        self.cached_prompt_tokens
    }

    fn prompt_token_ids(&self) -> Vec<u32> {
        self.prompt_ids.clone()
    }
}

/// Finds the complete elements of the answer's `tool_calls` array (objects at depth
/// 3: the answer, the array, the call) as the text grows.
#[derive(Default)]
struct CallScanner {
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// The call being read (from its `{`).
    current: Option<String>,
    seen: Vec<Value>,
}

/// The complete calls at the start of an answer's `tool_calls` array (an answer cut
/// short keeps the calls it finished), repeats once.
pub fn complete_calls(text: &str) -> Vec<Value> {
    let mut scanner = CallScanner::default();
    scanner.feed(text);
    scanner.seen
}

impl CallScanner {
    /// Reads more of the answer; once a call repeats an earlier one, where in
    /// `text` that call ends.
    fn feed(&mut self, text: &str) -> Option<usize> {
        for (at, c) in text.char_indices() {
            if let Some(call) = self.current.as_mut() {
                call.push(c);
            }
            if self.in_string {
                match c {
                    _ if self.escaped => self.escaped = false,
                    '\\' => self.escaped = true,
                    '"' => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match c {
                '"' => self.in_string = true,
                '{' | '[' => {
                    self.depth += 1;
                    if self.depth == 3 && c == '{' {
                        self.current = Some("{".into());
                    }
                }
                '}' | ']' => {
                    if self.depth == 3 {
                        if let Some(call) = self.current.take() {
                            if let Ok(v) = serde_json::from_str::<Value>(&call) {
                                if self.seen.contains(&v) {
                                    return Some(at + c.len_utf8());
                                }
                                self.seen.push(v);
                            }
                        }
                    }
                    self.depth = self.depth.saturating_sub(1);
                }
                _ => {}
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_call_is_found_when_it_closes() {
        let mut s = CallScanner::default();
        let text = r#"{"tool_calls": [{"name": "f", "arguments": {"city": "Oslo", "tags": ["a}"]}}, {"name": "f", "arguments": {"city": "Rome"}}, {"name": "f", "arguments": {"city": "Oslo", "tags": ["a}"]}"#;
        // Fed in pieces that split tokens anywhere.
        let pieces: Vec<String> = text
            .chars()
            .collect::<Vec<_>>()
            .chunks(7)
            .map(|c| c.iter().collect())
            .collect();
        assert!(pieces.iter().all(|p| s.feed(p).is_none()));
        // The repeat closes mid-chunk: what follows it is not part of the answer.
        assert_eq!(s.feed("}, {"), Some(1));
        // Whitespace and key order do not hide a repeat; different arguments are not one.
        let mut s = CallScanner::default();
        assert_eq!(
            s.feed(r#"{"tool_calls": [{"name": "f", "arguments": {"a": 1, "b": 2}}, "#),
            None
        );
        let again = "{ \"name\": \"f\",\n \"arguments\": {\"b\": 2, \"a\": 1} }";
        assert_eq!(s.feed(again), Some(again.len()));
        let mut s = CallScanner::default();
        assert_eq!(
            s.feed(r#"{"response": "{\"tool_calls\": [{}, {}]}"}"#),
            None
        );
    }
}
