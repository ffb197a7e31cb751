//! Walks a compiled [`Schema`] byte by byte: whether some bytes can still continue
//! into a value the schema accepts, and when that value is complete. Alternatives
//! (`anyOf`, `enum`, type lists) are followed side by side as threads, each a stack
//! of frames, until the bytes tell them apart.

use super::json_prefix::{
    string_step, Escape, JsonPrefix, Number, StringStep, WhitespaceRun, MAX_DEPTH,
};
use super::numbers::BoundedNumber;
use super::schema::{Node, Schema};
use super::string_format::TextAt;

/// Most alternatives followed at once (the rest are dropped: the output stays valid,
/// only less of the schema's choice is left to the model).
const MAX_THREADS: usize = 16;
/// Most alternatives tried for one byte of one thread: a reference that only refers
/// to itself would otherwise never start, and alternatives of alternatives (a
/// schema can nest them through `$defs`) would multiply without end.
const FORK_BUDGET: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ObjectAt {
    /// After `{` or `,`: the next key (or `}` for an object without properties).
    Open,
    /// Inside the next key, at this byte.
    Key(u16),
    Colon,
    /// After a property's value: `,` or `}`.
    AfterValue,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArrayAt {
    /// After `[`: an item or `]`.
    Open,
    /// After `,`: an item.
    Item,
    /// After an item: `,` or `]`.
    AfterItem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    /// A value of this node is next.
    Value(u32),
    Object {
        node: u32,
        /// Properties written (or being written).
        next: u16,
        at: ObjectAt,
    },
    Array {
        node: u32,
        count: u32,
        at: ArrayAt,
    },
    Str {
        node: u32,
        escape: Escape,
        chars: u32,
    },
    Num {
        number: Number,
        integer: bool,
    },
    /// A number with bounds.
    Bounded {
        node: u32,
        number: BoundedNumber,
    },
    /// Inside a string that must match a regular expression.
    Text {
        node: u32,
        at: TextAt,
    },
    Literal {
        node: u32,
        at: u16,
    },
    Any(JsonPrefix),
}

#[derive(Debug, Clone, PartialEq)]
struct Thread {
    stack: Vec<Frame>,
    whitespace: WhitespaceRun,
}

/// Where the output is in the schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Matcher {
    threads: Vec<Thread>,
}

impl Matcher {
    pub fn new(schema: &Schema) -> Self {
        Matcher {
            threads: vec![Thread {
                stack: vec![Frame::Value(schema.root as u32)],
                whitespace: WhitespaceRun::default(),
            }],
        }
    }

    /// The value is complete (a thread has closed the root).
    pub fn is_complete(&self) -> bool {
        self.threads.iter().any(|t| t.stack.is_empty())
    }

    /// The state after `bytes`, if they can continue a value the schema accepts.
    pub fn after(&self, schema: &Schema, bytes: &[u8]) -> Option<Matcher> {
        let mut threads = self.threads.clone();
        for &b in bytes {
            let mut next = Vec::with_capacity(threads.len());
            for thread in threads {
                let mut budget = FORK_BUDGET;
                thread.step(schema, b, &mut next, &mut budget);
            }
            next.truncate(MAX_THREADS);
            if next.is_empty() {
                return None;
            }
            threads = next;
        }
        Some(Matcher { threads })
    }
}

impl Thread {
    /// Feeds `b`; the threads it leads to go to `out` (none: `b` cannot come next).
    fn step(mut self, schema: &Schema, b: u8, out: &mut Vec<Thread>, budget: &mut usize) {
        loop {
            let Some(&top) = self.stack.last() else {
                // The value is complete: only whitespace may follow.
                if self.whitespace(b) == Some(true) {
                    out.push(self);
                }
                return;
            };
            let structural = matches!(
                top,
                Frame::Value(_)
                    | Frame::Object {
                        at: ObjectAt::Open | ObjectAt::Colon | ObjectAt::AfterValue,
                        ..
                    }
                    | Frame::Array { .. }
            );
            if structural {
                match self.whitespace(b) {
                    Some(true) => return out.push(self),
                    None => return,
                    Some(false) => {}
                }
            }
            let refeed = match top {
                Frame::Value(node) => {
                    return self.start_value(schema, node as usize, b, out, budget);
                }
                Frame::Object { node, next, at } => self.object_byte(schema, node, next, at, b),
                Frame::Array { node, count, at } => self.array_byte(schema, node, count, at, b),
                Frame::Str {
                    node,
                    escape,
                    chars,
                } => self.string_byte(schema, node, escape, chars, b),
                Frame::Num { number, integer } => match number.next(b) {
                    Some(next) if !integer || next.is_integer() => {
                        self.replace_top(Frame::Num {
                            number: next,
                            integer,
                        });
                        Some(false)
                    }
                    _ if number.may_end() => {
                        self.stack.pop();
                        Some(true)
                    }
                    _ => None,
                },
                Frame::Bounded { node, number } => {
                    let Node::Bounded(range) = &schema.nodes[node as usize] else {
                        unreachable!("a bounded frame is on a bounded node")
                    };
                    match number.next(b, range) {
                        Some(number) => {
                            self.replace_top(Frame::Bounded { node, number });
                            Some(false)
                        }
                        _ if number.may_end(range) => {
                            self.stack.pop();
                            Some(true)
                        }
                        _ => None,
                    }
                }
                Frame::Text { node, at } => {
                    let Node::Text { regex, min, max } = &schema.nodes[node as usize] else {
                        unreachable!("a text frame is on a text node")
                    };
                    if b == b'"' {
                        if !regex.0.may_close(at, *min) {
                            return;
                        }
                        self.stack.pop();
                    } else {
                        let at = match regex.0.next(at, b, *min, *max) {
                            Some(at) => at,
                            None => return,
                        };
                        self.replace_top(Frame::Text { node, at });
                    }
                    Some(false)
                }
                Frame::Literal { node, at } => {
                    let Node::Literal(bytes) = &schema.nodes[node as usize] else {
                        unreachable!("a literal frame is on a literal node")
                    };
                    if bytes.get(at as usize) != Some(&b) {
                        None
                    } else if at as usize + 1 == bytes.len() {
                        self.stack.pop();
                        Some(false)
                    } else {
                        self.replace_top(Frame::Literal { node, at: at + 1 });
                        Some(false)
                    }
                }
                Frame::Any(mut prefix) => {
                    let before = prefix;
                    if prefix.feed_byte(b) {
                        if prefix.is_complete() {
                            self.stack.pop();
                        } else {
                            self.replace_top(Frame::Any(prefix));
                        }
                        Some(false)
                    } else if before.may_end_here() {
                        self.stack.pop();
                        Some(true)
                    } else {
                        None
                    }
                }
            };
            match refeed {
                None => return,
                Some(false) => return out.push(self),
                // A number ended at `b`: its container reads `b`.
                Some(true) => continue,
            }
        }
    }

    /// Whitespace outside strings: Some(true) taken, None refused, Some(false) not
    /// whitespace.
    fn whitespace(&mut self, b: u8) -> Option<bool> {
        self.whitespace.take(b)
    }

    fn replace_top(&mut self, frame: Frame) {
        *self.stack.last_mut().expect("a frame to replace") = frame;
    }

    fn push(&mut self, frame: Frame) -> bool {
        if self.stack.len() >= MAX_DEPTH as usize {
            return false;
        }
        self.stack.push(frame);
        true
    }

    /// The first byte of a value of `node` (the top frame is its `Value`).
    fn start_value(
        mut self,
        schema: &Schema,
        node: usize,
        b: u8,
        out: &mut Vec<Thread>,
        budget: &mut usize,
    ) {
        let frame = match &schema.nodes[node] {
            Node::OneOf(alternatives) => {
                for &alternative in alternatives {
                    if *budget == 0 {
                        break;
                    }
                    *budget -= 1;
                    let mut thread = self.clone();
                    thread.replace_top(Frame::Value(alternative as u32));
                    thread.step(schema, b, out, budget);
                }
                return;
            }
            Node::Any { object_only } => {
                let mut prefix = if *object_only {
                    JsonPrefix::new()
                } else {
                    JsonPrefix::any_value()
                };
                if !prefix.feed_byte(b) {
                    return;
                }
                Frame::Any(prefix)
            }
            Node::Object { .. } if b == b'{' => Frame::Object {
                node: node as u32,
                next: 0,
                at: ObjectAt::Open,
            },
            Node::Array { .. } if b == b'[' => Frame::Array {
                node: node as u32,
                count: 0,
                at: ArrayAt::Open,
            },
            Node::String { .. } if b == b'"' => Frame::Str {
                node: node as u32,
                escape: Escape::None,
                chars: 0,
            },
            Node::Number { integer } => match Number::start(b) {
                Some(number) => Frame::Num {
                    number,
                    integer: *integer,
                },
                None => return,
            },
            Node::Bounded(range) => match BoundedNumber::start(b, range) {
                Some(number) => Frame::Bounded {
                    node: node as u32,
                    number,
                },
                None => return,
            },
            Node::Text { regex, .. } if b == b'"' => Frame::Text {
                node: node as u32,
                at: regex.0.start(),
            },
            Node::Literal(bytes) if bytes.first() == Some(&b) => Frame::Literal {
                node: node as u32,
                at: 1,
            },
            _ => return,
        };
        let done = matches!(frame, Frame::Any(p) if p.is_complete())
            || matches!(frame, Frame::Literal { node, .. } if matches!(&schema.nodes[node as usize], Node::Literal(l) if l.len() == 1));
        if done {
            self.stack.pop();
        } else {
            self.replace_top(frame);
        }
        out.push(self);
    }

    /// Some(false): `b` taken; None: refused.
    fn object_byte(
        &mut self,
        schema: &Schema,
        node: u32,
        next: u16,
        at: ObjectAt,
        b: u8,
    ) -> Option<bool> {
        let Node::Object { props } = &schema.nodes[node as usize] else {
            unreachable!("an object frame is on an object node")
        };
        let set = |thread: &mut Thread, next: u16, at: ObjectAt| {
            thread.replace_top(Frame::Object { node, next, at })
        };
        match at {
            ObjectAt::Open if props.is_empty() && b == b'}' => {
                self.stack.pop();
            }
            ObjectAt::Open | ObjectAt::Key(_) => {
                let at_byte = if let ObjectAt::Key(i) = at { i } else { 0 };
                let key = &props.get(next as usize)?.0;
                if key.get(at_byte as usize) != Some(&b) {
                    return None;
                }
                let at = if at_byte as usize + 1 == key.len() {
                    ObjectAt::Colon
                } else {
                    ObjectAt::Key(at_byte + 1)
                };
                set(self, next, at);
            }
            ObjectAt::Colon if b == b':' => {
                set(self, next + 1, ObjectAt::AfterValue);
                if !self.push(Frame::Value(props[next as usize].1 as u32)) {
                    return None;
                }
            }
            ObjectAt::AfterValue if b == b',' && (next as usize) < props.len() => {
                set(self, next, ObjectAt::Open);
            }
            ObjectAt::AfterValue if b == b'}' && next as usize == props.len() => {
                self.stack.pop();
            }
            _ => return None,
        }
        Some(false)
    }

    fn array_byte(
        &mut self,
        schema: &Schema,
        node: u32,
        count: u32,
        at: ArrayAt,
        b: u8,
    ) -> Option<bool> {
        let Node::Array { items, min, max } = &schema.nodes[node as usize] else {
            unreachable!("an array frame is on an array node")
        };
        match (at, b) {
            (ArrayAt::Open | ArrayAt::AfterItem, b']') if count >= *min => {
                self.stack.pop();
                Some(false)
            }
            (ArrayAt::AfterItem, b',') if max.is_none_or(|max| count < max) => {
                self.replace_top(Frame::Array {
                    node,
                    count,
                    at: ArrayAt::Item,
                });
                Some(false)
            }
            (ArrayAt::Open | ArrayAt::Item, _) if max.is_none_or(|max| count < max) => {
                self.replace_top(Frame::Array {
                    node,
                    count: count + 1,
                    at: ArrayAt::AfterItem,
                });
                // The item's first byte: read by the item's frame.
                self.push(Frame::Value(*items as u32)).then_some(true)
            }
            _ => None,
        }
    }

    fn string_byte(
        &mut self,
        schema: &Schema,
        node: u32,
        escape: Escape,
        chars: u32,
        b: u8,
    ) -> Option<bool> {
        let Node::String { min, max } = &schema.nodes[node as usize] else {
            unreachable!("a string frame is on a string node")
        };
        let (escape, chars) = match string_step(escape, b)? {
            StringStep::Close if chars >= *min => {
                self.stack.pop();
                return Some(false);
            }
            StringStep::Close => return None,
            StringStep::NewChar(_) if max.is_some_and(|max| chars >= max) => return None,
            StringStep::NewChar(escape) => (escape, chars + 1),
            StringStep::SameChar(escape) => (escape, chars),
        };
        self.replace_top(Frame::Str {
            node,
            escape,
            chars,
        });
        Some(false)
    }
}

#[cfg(test)]
mod tests;
