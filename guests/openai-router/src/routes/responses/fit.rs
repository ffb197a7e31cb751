//! `truncation: "auto"`: a conversation whose rendered prompt does not fit the
//! model's context beside the answer loses its oldest turns, whole, until it fits,
//! as OpenAI drops input items. The leading system messages (`instructions`) and
//! the latest user turn always stay; if even those do not fit, the host's
//! `context_length_exceeded` error answers. Stored items are not touched: only
//! what the model sees is cut.

use crate::errors::ApiError;
use crate::host::Host;
use crate::routes::chat::request::{Message, Role};
use crate::routes::chat::template::RenderOptions;
use crate::routes::chat::tools::Tools;
use crate::routes::chat::{self, Prepared};
use crate::routes::sampling::Sampling;
use crate::routes::truncation::room_for_prompt;

/// [`chat::prepare`], with the oldest turns dropped when `auto` and the prompt is
/// too long. Finding the cut renders the conversation O(log turns) times.
pub fn prepare(
    host: &dyn Host,
    model: &str,
    messages: Vec<Message>,
    sampling: Sampling,
    tools: Option<&Tools>,
    route: &str,
    auto: bool,
) -> Result<Prepared, ApiError> {
    let render = RenderOptions::default();
    let attempt = |messages: Vec<Message>| {
        chat::prepare(
            host,
            model,
            messages,
            sampling.clone(),
            tools,
            &render,
            route,
        )
    };
    if !auto {
        return attempt(messages);
    }
    let cuts = turn_starts(&messages);
    let whole = attempt(messages.clone())?;
    let room = room_for_prompt(&whole.info, sampling.max_tokens) as usize;
    let fits = |prepared: &Prepared| {
        host.encode(&prepared.info.id, &prepared.prompt, false)
            .map_or(true, |ids| ids.len() <= room)
    };
    if cuts.len() < 2 || fits(&whole) {
        return Ok(whole);
    }
    // The fewest turns dropped that fit: cuts[lo] does not fit, cuts[hi] is the last resort.
    let (mut lo, mut hi) = (0, cuts.len() - 1);
    let mut best = None;
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        let prepared = attempt(without_turns(&messages, cuts[0], cuts[mid]))?;
        if fits(&prepared) {
            hi = mid;
            best = Some(prepared);
        } else {
            lo = mid;
        }
    }
    match best {
        Some(prepared) => Ok(prepared),
        None => attempt(without_turns(&messages, cuts[0], cuts[hi])),
    }
}

/// Where the conversation after its leading system messages starts, then where
/// each later user turn starts: the places it may be cut from.
fn turn_starts(messages: &[Message]) -> Vec<usize> {
    let first = messages
        .iter()
        .position(|m| m.role != Role::System)
        .unwrap_or(messages.len());
    std::iter::once(first)
        .chain((first + 1..messages.len()).filter(|&i| messages[i].role == Role::User))
        .collect()
}

/// The messages without `from..to`.
fn without_turns(messages: &[Message], from: usize, to: usize) -> Vec<Message> {
    messages[..from]
        .iter()
        .chain(&messages[to..])
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(role: Role, content: &str) -> Message {
        Message {
            role,
            content: content.into(),
            name: None,
        }
    }

    #[test]
    fn turns_start_at_user_messages_after_the_system_ones() {
        use Role::*;
        let m = [
            message(System, "s"),
            message(User, "1"),
            message(Assistant, "a"),
            message(User, "2"),
            message(Assistant, "b"),
            message(User, "3"),
        ];
        assert_eq!(turn_starts(&m), [1, 3, 5]);
        let kept: Vec<_> = without_turns(&m, 1, 5)
            .iter()
            .map(|m| m.content.clone())
            .collect();
        assert_eq!(kept, ["s", "3"]);
        // A conversation that starts with the assistant can lose that message too.
        assert_eq!(turn_starts(&m[2..]), [0, 1, 3]);
    }
}
