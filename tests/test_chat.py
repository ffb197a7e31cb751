"""Chat and completions end to end: HTTP → guest (chat template in the sandbox, SSE)
→ host generation engine (KV cache) → ONNX Runtime; also through the official
`openai` Python SDK."""
from __future__ import annotations

import json
import threading
import time

import openai
import pytest
import requests

from test_embeddings import assert_openai_error

CHAT = "smollm2-135m-instruct"
BASE = "gemma-3-270m"
# Not "What is the capital of France?": a near-tie for the int4 graph that some CPUs answer in French
# (docs/PROVIDERS.md); this one has a clear margin, and model preparation checks it on every machine.
QUESTION = [{"role": "user", "content": "Name the capital of France."}]


def chat(server, **body):
    return server.post("/v1/chat/completions", {"model": CHAT, "messages": QUESTION, "temperature": 0, **body})


def sse_events(response) -> list:
    assert response.headers["content-type"].startswith("text/event-stream")
    events = []
    for line in response.iter_lines(decode_unicode=True):
        if line.startswith("data: "):
            data = line[len("data: "):]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def answer(server) -> str:
    r = chat(server)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == CHAT
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert r.headers["x-nnhost-provider"].startswith("cpu-")
    return choice["message"]["content"]


def test_capital_of_france(answer):
    assert "Paris" in answer, answer


def test_streaming_yields_the_identical_text(server, answer):
    r = server.session.post(server.url + "/v1/chat/completions", timeout=120, stream=True, json={
        "model": CHAT, "messages": QUESTION, "temperature": 0, "stream": True,
        "stream_options": {"include_usage": True}})
    assert r.status_code == 200
    assert r.headers["x-nnhost-provider"].startswith("cpu-")
    events = sse_events(r)
    assert events[-1] == "[DONE]"
    chunks = [e for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == answer
    finals = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finals) == 1 and finals[0]["choices"][0]["finish_reason"] == "stop"
    usage = chunks[-1]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] > 0


def test_openai_sdk_streamed_and_not(client, answer):
    result = client.chat.completions.create(model=CHAT, messages=QUESTION, temperature=0)
    assert result.choices[0].message.content == answer
    stream = client.chat.completions.create(model=CHAT, messages=QUESTION, temperature=0, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == answer


def test_max_tokens_ends_with_length(server):
    body = chat(server, max_tokens=5).json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 5


def test_stop_sequence_ends_the_text_before_it(server, answer):
    word = "Paris"
    body = chat(server, stop=[word]).json()
    text = body["choices"][0]["message"]["content"]
    assert body["choices"][0]["finish_reason"] == "stop"
    assert word not in text and answer.startswith(text)


def test_seed_makes_sampling_reproducible(server):
    a = chat(server, temperature=0.8, seed=1234, max_tokens=24).json()["choices"][0]["message"]["content"]
    b = chat(server, temperature=0.8, seed=1234, max_tokens=24).json()["choices"][0]["message"]["content"]
    assert a == b


def test_top_p_zero_is_greedy(server):
    """OpenAI accepts a nucleus of 0 (clients send it for deterministic answers): only the most likely
    token is kept, whatever the temperature and seed."""
    greedy = chat(server, max_tokens=16).json()["choices"][0]["message"]["content"]
    for seed in (1, 2):
        r = chat(server, temperature=1.5, top_p=0, seed=seed, max_tokens=16)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == greedy


def test_a_client_sending_every_field_with_its_empty_value_is_served(server):
    """Clients generated from OpenAI's schema send every field, unset ones as null, false, 0 or []."""
    r = chat(server, max_tokens=None, max_completion_tokens=4, stop=None, tools=[], tool_choice=None,
             functions=[], function_call="none", logprobs=False, top_logprobs=0, seed=None, temperature=None, top_p=None, n=None,
             presence_penalty=None, frequency_penalty=None, stream=False, user=None, response_format=None,
             logit_bias=None, parallel_tool_calls=None, stream_options=None)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["usage"]["completion_tokens"] == 4 and body["choices"][0]["logprobs"] is None


def test_gemma_base_model_completes(server):
    r = server.post("/v1/completions", {"model": BASE, "prompt": "The capital of France is", "max_tokens": 16,
                                        "temperature": 0})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "text_completion"
    # A base model: greedy continues on topic (" the capital of the country ..."), and
    # a few-shot prompt gets the fact itself.
    text = body["choices"][0]["text"]
    assert any(w in text for w in ("Paris", "France", "capital", "city", "country")), text
    few_shot = "Q: What is the capital of Germany?\nA: Berlin\nQ: What is the capital of France?\nA:"
    r = server.post("/v1/completions", {"model": BASE, "prompt": few_shot, "max_tokens": 3, "temperature": 0})
    assert r.json()["choices"][0]["text"].strip().startswith("Paris"), r.json()
    models = {m["id"]: m for m in server.get("/v1/models").json()["data"]}
    assert models[BASE]["nnhost"]["kind"] == "completion"
    assert models[BASE]["nnhost"]["metadata"]["base_model"] == "true"


def test_completions_stream(server):
    r = server.session.post(server.url + "/v1/completions", timeout=120, stream=True, json={
        "model": CHAT, "prompt": "Once upon a time", "max_tokens": 8, "temperature": 0, "stream": True})
    events = sse_events(r)
    assert events[-1] == "[DONE]"
    assert events[-2]["choices"][0]["finish_reason"] == "length"
    assert all(e["object"] == "text_completion" for e in events[:-1])


@pytest.mark.parametrize("extra,param", [
    ({"n": 17}, "n"),
    ({"tools": [{"type": "function", "function": {"name": "f b"}}]}, "tools[0].function.name"),
    ({"top_logprobs": 21, "logprobs": True}, "top_logprobs"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}}, "response_format"),
    ({"temperature": 3}, "temperature"),
    ({"max_tokens": -1}, "max_tokens"),
    ({"messages": []}, "messages"),
])
def test_unsupported_or_invalid_fields_are_400(server, extra, param):
    err = assert_openai_error(chat(server, **extra), 400)
    assert param in (err["param"] or "") or param in err["message"], err


def test_base_model_has_no_chat_template(server):
    r = server.post("/v1/chat/completions", {"model": BASE, "messages": QUESTION})
    assert_openai_error(r, 400, contains=["/v1/completions"])


def test_context_overflow_names_the_numbers(server):
    r = chat(server, max_tokens=100_000)
    err = assert_openai_error(r, 400, code="context_length_exceeded")
    assert "100000" in err["message"] or "100,000" in err["message"]


def test_sdk_maps_errors_to_exceptions(client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=QUESTION)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=CHAT, messages=QUESTION, n=17)


def test_generations_run_together_and_never_block_embeddings(server):
    results = {}

    def generate(i):
        r = requests.post(server.url + "/v1/chat/completions", timeout=120, json={
            "model": CHAT, "messages": [{"role": "user", "content": f"Count to {i + 20}."}], "max_tokens": 40,
            "temperature": 0})
        results[i] = r.status_code

    threads = [threading.Thread(target=generate, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    started = time.time()
    r = server.post("/v1/embeddings", {"model": "all-MiniLM-L6-v2", "input": "not blocked"})
    embed_seconds = time.time() - started
    for t in threads:
        t.join()
    assert r.status_code == 200 and embed_seconds < 2.0, embed_seconds
    assert results == {0: 200, 1: 200, 2: 200}


def cancelled_generations(server) -> float:
    text = server.get("/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("nnhost_generations_total") and 'finish_reason="cancelled"' in line)


def test_finished_generations_are_counted_by_openais_finish_reason(server):
    def finished() -> dict[str, float]:
        counts: dict[str, float] = {}
        for line in server.get("/metrics").text.splitlines():
            if line.startswith("nnhost_generations_total{") and f'model="{CHAT}"' in line:
                reason = line.split('finish_reason="', 1)[1].split('"', 1)[0]
                counts[reason] = counts.get(reason, 0) + float(line.rsplit(" ", 1)[1])
        return counts

    before = finished()
    r = server.post("/v1/chat/completions", {"model": CHAT, "max_tokens": 2,
                                             "messages": [{"role": "user", "content": "Tell me a story."}]})
    assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] == "length", r.text
    after = finished()
    assert set(after) <= {"stop", "length", "cancelled", "error"}, after
    assert after["length"] == before.get("length", 0) + 1


def test_a_disconnected_stream_stops_its_generation(server):
    def cancelled() -> float:
        return cancelled_generations(server)

    before = cancelled()
    r = server.session.post(server.url + "/v1/chat/completions", timeout=120, stream=True, json={
        "model": CHAT, "messages": [{"role": "user", "content": "Write a very long story."}],
        "max_tokens": 2000, "stream": True})
    lines = r.iter_lines()
    next(lines)
    r.close()
    deadline = time.time() + 20
    while time.time() < deadline and cancelled() <= before:
        time.sleep(0.2)
    assert cancelled() > before




def chat_metric(server, name: str) -> float:
    """A sample of the chat model's series in /metrics (`name` with its suffix), 0 if absent."""
    for line in server.get("/metrics").text.splitlines():
        if line.startswith(name + "{") and f'model="{CHAT}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_show_running_generations_and_token_latencies(server):
    """What an operator watches on an LLM server (as vLLM exports it): generations
    running and waiting, time to first token, time between tokens."""
    first_before = chat_metric(server, "nnhost_time_to_first_token_seconds_count")
    between_before = chat_metric(server, "nnhost_time_per_output_token_seconds_count")
    r = server.session.post(server.url + "/v1/chat/completions", timeout=120, stream=True, json={
        "model": CHAT, "messages": [{"role": "user", "content": "Write a very long story."}],
        "max_tokens": 2000, "stream": True})
    lines = r.iter_lines()
    for _ in range(4):
        next(lines)
    assert chat_metric(server, "nnhost_generations_running") == 1
    assert chat_metric(server, "nnhost_generations_waiting") == 0
    r.close()
    deadline = time.time() + 20
    while time.time() < deadline and chat_metric(server, "nnhost_generations_running") != 0:
        time.sleep(0.1)
    assert chat_metric(server, "nnhost_generations_running") == 0

    body = chat(server, max_tokens=8).json()
    tokens = body["usage"]["completion_tokens"]
    assert chat_metric(server, "nnhost_time_to_first_token_seconds_count") == first_before + 2
    between = chat_metric(server, "nnhost_time_per_output_token_seconds_count") - between_before
    # This answer's tokens after its first, plus those of the stream before it was dropped.
    assert between >= tokens - 1, (between, tokens)
    assert chat_metric(server, "nnhost_time_to_first_token_seconds_sum") > 0


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_gone_during_a_long_prefill_stops_it_there(server, stream):
    """The client hangs up while its ~1500-token prompt is being prefilled (before any
    token, so no write can fail): the guest is stopped with the connection, and the
    generation is dropped between two prefill chunks instead of running to the end."""
    prompt = ("In the year 1852, the town of Millbrook was a quiet place where farmers brought "
              "their grain to the mill by the river. ") * 55
    before = cancelled_generations(server)
    server.post_then_hang_up("/v1/completions", {"model": CHAT, "prompt": prompt, "max_tokens": 500,
                                                 "stream": stream}, after=0.3)
    started = time.time()
    while time.time() < started + 10 and cancelled_generations(server) <= before:
        time.sleep(0.05)
    assert cancelled_generations(server) > before
    # Dropped mid-prefill: well before the whole prompt (~1.5-2.5 s) and 500 tokens were through.
    assert time.time() - started < 1.0
    assert "cancelled during its prefill" in server.log_once(lambda log: "cancelled during its prefill" in log)
