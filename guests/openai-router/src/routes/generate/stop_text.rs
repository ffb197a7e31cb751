//! vLLM's `include_stop_str_in_output`: the stop string that ended a generation is
//! part of its text after all. The host leaves it out and names it in the stream's
//! stop cause; this stream adds it back as a last chunk before the end.

use crate::host::{Chunk, Event, GenerationStream, StopCause};

pub struct IncludeStopText {
    inner: Box<dyn GenerationStream>,
    /// The end, held while the stop string's chunk goes first.
    end: Option<Event>,
    added: bool,
}

impl IncludeStopText {
    pub fn wrap(inner: Box<dyn GenerationStream>) -> Box<dyn GenerationStream> {
        Box::new(Self {
            inner,
            end: None,
            added: false,
        })
    }
}

impl GenerationStream for IncludeStopText {
    fn next(&mut self) -> Event {
        if let Some(end) = self.end.take() {
            return end;
        }
        match self.inner.next() {
            Event::Done(end) if !self.added => {
                self.added = true;
                match self.inner.stop_cause() {
                    Some(StopCause::Text(text)) => {
                        self.end = Some(Event::Done(end));
                        Event::Chunk(Chunk {
                            text,
                            tokens: Vec::new(),
                            logprobs: Vec::new(),
                        })
                    }
                    _ => Event::Done(end),
                }
            }
            event => event,
        }
    }

    fn provider(&self) -> String {
        self.inner.provider()
    }

    fn cached_prompt_tokens(&self) -> u32 {
        self.inner.cached_prompt_tokens()
    }

    fn stop_cause(&self) -> Option<StopCause> {
        self.inner.stop_cause()
    }

    fn prompt_token_ids(&self) -> Vec<u32> {
        self.inner.prompt_token_ids()
    }

    fn prompt_token_ranks(&self) -> Vec<u32> {
        self.inner.prompt_token_ranks()
    }
}
