"""The chat bench's conversation scenario (tests/bench/chat.py runs it): time to first
token of each turn of a conversation about a long document, with the prefix cache and
without it."""
from __future__ import annotations

import statistics
import sys
import time

from chat import COLD, LONG_PROMPT, Model, sse_events

QUESTIONS = ["Who brought grain to the mill?", "Where was the mill?", "What year does the story begin in?"]


def conversation_turns(url: str, m: Model, repeats: int = 3) -> list[dict]:
    """A conversation about a ~1500-token document: three turns, each re-sending the
    whole conversation (as chat clients do) and streaming 16 tokens. Time to first token
    of each turn with the prefix cache (the model as configured) and without (`-cold`),
    interleaved; medians over `repeats` conversations, each on a document of its own (a
    different first line), so the first turn is never cached."""
    def turn(name: str, history: list, question: str) -> tuple[float, str, int]:
        if m.chat:
            history.append({"role": "user", "content": question})
            body = {"messages": history}
            route = "/v1/chat/completions"
        else:
            history.append(f"\n\nQ: {question}\nA:")
            body = {"prompt": "".join(history)}
            route = "/v1/completions"
        body.update(model=name, max_tokens=16, temperature=0, stream=True, stream_options={"include_usage": True})
        started = time.perf_counter()
        first, text, prompt_tokens = None, "", 0
        for event in sse_events(url + route, body):
            if event.get("usage"):
                prompt_tokens = event["usage"]["prompt_tokens"]
            for c in event.get("choices") or []:
                piece = c.get("delta", {}).get("content") or c.get("text") or ""
                if piece and first is None:
                    first = time.perf_counter()
                text += piece
        history.append({"role": "assistant", "content": text} if m.chat else text)
        return ((first or time.perf_counter()) - started) * 1e3, text, prompt_tokens

    samples: dict[tuple[str, int], list[float]] = {}
    tokens: dict[int, int] = {}
    for rep in range(repeats + 1):  # the first conversation warms up
        for variant in (("cached", m.name), ("cold", m.name + COLD))[:: 1 if rep % 2 else -1]:
            document = f"Document {rep} ({variant[0]}).\n" + LONG_PROMPT
            history: list = [] if m.chat else [document]
            for k, q in enumerate(QUESTIONS):
                question = f"{document}\n\n{q}" if m.chat and k == 0 else q
                ttft, _, prompt_tokens = turn(variant[1], history, question)
                if rep:
                    samples.setdefault((variant[0], k), []).append(ttft)
                    tokens[k] = prompt_tokens
    rows = [{"turn": k + 1, "prompt_tokens": tokens[k],
             "cold_ms": statistics.median(samples[("cold", k)]),
             "cached_ms": statistics.median(samples[("cached", k)])} for k in range(len(QUESTIONS))]
    print(f"conversation {m.name}: {rows}", file=sys.stderr, flush=True)
    return rows


BURST_QUESTIONS = ["Who brought grain to the mill?", "Where was the mill?", "What year does the story begin in?",
                   "What did the farmers bring?"]


def document_burst(url: str, m: Model, repeats: int = 2) -> dict:
    """Four users ask about one ~1500-token document at the same moment (a team's shared
    file, agents with one set of instructions). Time to first token of each, sorted, with
    the prefix cache (the later prompts wait for the first to be cached, then prefill only
    their question) and without (`-cold`: each prefills the whole document, one after the
    other); medians per rank over `repeats` bursts, each on a document of its own."""
    import threading

    def burst(name: str, document: str) -> list[float]:
        ttft: list[float] = []

        def ask(question: str) -> None:
            if m.chat:
                body = {"messages": [{"role": "user", "content": f"{document}\n\n{question}"}]}
                route = "/v1/chat/completions"
            else:
                body = {"prompt": f"{document}\n\nQ: {question}\nA:"}
                route = "/v1/completions"
            body.update(model=name, max_tokens=4, temperature=0, stream=True)
            started = time.perf_counter()
            first = None
            for event in sse_events(url + route, body):
                for c in event.get("choices") or []:
                    if first is None and (c.get("delta", {}).get("content") or c.get("text")):
                        first = time.perf_counter()
            ttft.append(((first or time.perf_counter()) - started) * 1e3)

        threads = [threading.Thread(target=ask, args=(q,)) for q in BURST_QUESTIONS]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return sorted(ttft)

    samples: dict[str, list[list[float]]] = {"cached": [], "cold": []}
    for rep in range(repeats + 1):  # the first burst warms up
        for variant, name in (("cached", m.name), ("cold", m.name + COLD))[:: 1 if rep % 2 else -1]:
            ttfts = burst(name, f"Burst {rep} ({variant}).\n" + LONG_PROMPT)
            if rep:
                samples[variant].append(ttfts)
    result = {v: [statistics.median(run[k] for run in runs) for k in range(len(BURST_QUESTIONS))]
              for v, runs in samples.items()}
    print(f"document burst {m.name}: {result}", file=sys.stderr, flush=True)
    return result
