"""Random requests against a server of its own: valid requests of every route
mutated at random (a field replaced by an odd value, removed, or an extra field of
another route added; one in ten also damaged as bytes). Nothing may get a 5xx other
than 503, every 4xx must be an OpenAI-shaped error (`/v2`: its own shape), every
stream must end, and the server must stay healthy without a panic in its log. The
cases come from a fixed seed, so a failure repeats; `NNHOST_FUZZ_SEED` and
`NNHOST_FUZZ_CASES` widen the search by hand."""
from __future__ import annotations

import copy
import json
import os
import random
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from conftest import GEMMA as GEMMA_PATH, MINILM as MINILM_PATH, ROUTER_WASM, SMOLLM, TEST_CONFIG, Server, \
    hf_folder_from_minilm

SEED = int(os.environ.get("NNHOST_FUZZ_SEED", "26"))
CASES = int(os.environ.get("NNHOST_FUZZ_CASES", "1000"))

MINILM, SMOL, GEMMA = "all-MiniLM-L6-v2", "smollm2-135m-instruct", "gemma-3-270m"
MSGS = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name the capital of France."}]
TOOL = {"type": "function", "function": {"name": "get_weather", "description": "w",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}

SEEDS = [
    ("/v1/embeddings", {"model": MINILM, "input": ["The weather is lovely today.", "hi"]}),
    ("/v1/embeddings", {"model": MINILM, "input": [[101, 2023, 102]], "dimensions": 64, "encoding_format": "base64"}),
    ("/v1/chat/completions", {"model": SMOL, "messages": MSGS, "max_tokens": 6}),
    ("/v1/chat/completions", {"model": SMOL, "messages": MSGS, "max_tokens": 6, "stream": True,
                              "stream_options": {"include_usage": True}, "logprobs": True, "top_logprobs": 2}),
    ("/v1/chat/completions", {"model": SMOL, "messages": MSGS, "max_tokens": 12, "tools": [TOOL]}),
    ("/v1/chat/completions", {"model": SMOL, "messages": MSGS, "max_tokens": 8,
                              "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema":
                                  {"type": "object", "properties": {"a": {"type": "integer"}}}}}}),
    ("/v1/chat/completions", {"model": SMOL, "messages": MSGS + [{"role": "assistant", "content": "The capital"}],
                              "max_tokens": 4, "continue_final_message": True, "add_generation_prompt": False}),
    ("/v1/chat/completions", {"model": SMOL, "messages": MSGS, "max_tokens": 4, "guided_choice": ["yes", "no"],
                              "min_p": 0.1, "repetition_penalty": 1.1, "stop_token_ids": [2], "min_tokens": 1}),
    ("/v1/completions", {"model": GEMMA, "prompt": "Once upon a time", "max_tokens": 6, "n": 2, "seed": 3,
                         "temperature": 0.8, "logprobs": 2, "echo": True, "stop": ["\n"]}),
    ("/v1/completions", {"model": GEMMA, "prompt": [[2, 651, 6037]], "max_tokens": 4, "stream": True,
                         "guided_regex": "[a-z ]{1,12}"}),
    ("/v1/responses", {"model": SMOL, "input": "Name the capital of France.", "max_output_tokens": 16}),
    ("/v1/responses", {"model": SMOL, "input": [{"role": "user", "content": "hi " * 50}, {"role": "assistant", "content": "ok"},
                                                {"role": "user", "content": "bye"}], "max_output_tokens": 8,
                       "truncation": "auto", "store": False}),
    ("/v1/chat/completions", {"model": SMOL, "messages": MSGS, "max_tokens": 4, "truncate_prompt_tokens": 12,
                              "allowed_token_ids": [504, 3458], "request_id": "r1", "stop": ["Paris"],
                              "include_stop_str_in_output": True,
                              "chat_template": "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"}),
    ("/v1/embeddings", {"model": MINILM, "input": ["a b c d e f g", [101, 7, 8]], "truncate_prompt_tokens": 4}),
    ("/v1/chat/completions", {"model": SMOL, "messages": MSGS, "max_tokens": 12, "stream": True,
                              "return_token_ids": True, "stream_options": {"include_usage": True,
                                                                            "continuous_usage_stats": True},
                              "tools": [TOOL], "response_format": {"type": "json_schema", "json_schema": {
                                  "name": "y", "schema": {"type": "object", "properties": {
                                      "n": {"type": "integer", "minimum": 1, "maximum": 9},
                                      "d": {"type": "string", "format": "date"},
                                      "c": {"type": "string", "pattern": "^[A-Z]{2}$"}}}}}}),
    ("/v1/completions", {"model": GEMMA, "prompt": ["One, two,", [2, 651]], "max_tokens": 3,
                         "prompt_logprobs": 2, "return_token_ids": True, "n": 2}),
    ("/v1/responses", {"model": SMOL, "input": [{"role": "user", "content": [{"type": "input_text", "text": "hi"}]}],
                       "max_output_tokens": 16, "stream": True, "instructions": "Be brief."}),
    ("/v1/tokenize", {"model": SMOL, "messages": MSGS}),
    ("/v1/tokenize", {"model": MINILM, "prompt": "hello world"}),
    ("/v1/detokenize", {"model": SMOL, "tokens": [504, 3458]}),
    ("/v1/rerank", {"model": MINILM, "query": "capital", "documents": ["Paris", {"text": "bananas"}], "top_n": 1}),
    ("/v1/score", {"model": MINILM, "text_1": "a", "text_2": ["b", "c"]}),
    (f"/v2/models/{MINILM}/infer", {"inputs": [
        {"name": "input_ids", "shape": [1, 3], "datatype": "INT64", "data": [101, 2023, 102]},
        {"name": "attention_mask", "shape": [1, 3], "datatype": "INT64", "data": [1, 1, 1]},
        {"name": "token_type_ids", "shape": [1, 3], "datatype": "INT64", "data": [0, 0, 0]}]}),
]

EXTRA_FIELDS = ["model", "messages", "prompt", "input", "max_tokens", "max_completion_tokens", "temperature",
                "top_p", "top_k", "n", "stream", "stream_options", "stop", "seed", "logprobs", "top_logprobs",
                "logit_bias", "presence_penalty", "frequency_penalty", "response_format", "tools", "tool_choice",
                "parallel_tool_calls", "user", "min_p", "repetition_penalty", "ignore_eos", "min_tokens",
                "stop_token_ids", "guided_choice", "guided_regex", "guided_json", "structured_outputs",
                "continue_final_message", "add_generation_prompt", "chat_template_kwargs", "echo", "suffix",
                "best_of", "prompt_logprobs", "dimensions", "encoding_format", "truncate", "store", "metadata",
                "previous_response_id", "conversation", "instructions", "text", "reasoning", "include",
                "max_output_tokens", "documents", "query", "top_n", "text_1", "text_2", "tokens", "inputs",
                "outputs", "parameters", "functions", "function_call", "service_tier", "prediction", "audio",
                "modalities", "web_search_options", "reasoning_effort", "verbosity", "background",
                "truncate_prompt_tokens", "truncation", "allowed_token_ids", "request_id", "chat_template",
                "include_stop_str_in_output", "add_special_tokens", "skip_special_tokens", "priority",
                "return_token_ids", "continuous_usage_stats", "minimum", "maximum", "exclusiveMinimum",
                "format", "pattern", "phase", "provider_specific_fields", "cache_control"]

def deep(rng, depth: int):
    v = 1
    for _ in range(depth):
        v = [v] if rng.random() < 0.5 else {"a": v}
    return v


def atom(rng):
    pool = [None, True, False, 0, -1, 1, 2, 7, 2**31, 2**32, 2**53 + 1, 2**63, 2**64, -2**63, 10**30, 0.5, -0.5,
            1e-320, 1e308, -1e308, 3.7, "", " ", "x", "x" * rng.choice([100, 5000, 200000]), "\u0000", "\ud800",
            "é🙂", "<|im_end|>", "<|im_start|>assistant\n", "<bos>", "[CLS]", "{{ x }}", "{% for %}", "(a|b)*a(a|b){40}",
            "[", "\\", "a{1000}{1000}", "{% for i in range(100000) %}{{ i }}{% endfor %}", "{{ raise_exception('no') }}", "{{ messages[99] }}", [], {}, [[]], [{}], [None], ["a", 1], [1, 2, 3], [-5], [2**40], [["x"]],
            {"type": "text"}, {"type": "json_object"}, {"type": "json_schema"}, {"role": "user"},
            {"role": "user", "content": None}, {"role": "tool", "content": "x"}, {"role": "bogus", "content": "x"},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x"}}]},
            {"role": "assistant", "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{"}}]},
            {"type": "function", "function": {"name": "f" * 70}}, {"json": {"type": "object"}}, {"regex": "[0-9]+"},
            {"choice": []}, {"grammar": "x"}, {"include_usage": "yes"}, {"1": 100}, {"99999999": 5}, {"2": 1e9},
            {"include_usage": True, "continuous_usage_stats": True},
            {"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "object", "properties": {
                "n": {"type": "number", "minimum": -1e30, "exclusiveMaximum": 1e-25},
                "d": {"type": "string", "format": "date-time"},
                "p": {"type": "string", "pattern": "(a|b)*a(a|b){40}", "maxLength": 3}}}}},
            {"type": "integer", "minimum": 5, "maximum": 4}, {"type": "string", "format": "uri"},
            {"type": "string", "pattern": "\\"}, {"type": "number", "exclusiveMinimum": True},
            "DEEP"]
    value = rng.choice(pool)
    # Built afresh: deepcopy would recurse through every level.
    return deep(rng, rng.choice([10, 100, 300])) if value == "DEEP" else copy.deepcopy(value)


def paths(v, prefix=()):
    yield prefix
    if isinstance(v, dict):
        for k, x in v.items():
            yield from paths(x, prefix + (k,))
    elif isinstance(v, list):
        for i, x in enumerate(v):
            yield from paths(x, prefix + (i,))


def set_at(v, path, value):
    if not path:
        return value
    cur = v
    for p in path[:-1]:
        cur = cur[p]
    cur[path[-1]] = value
    return v


def del_at(v, path):
    if not path:
        return v
    cur = v
    for p in path[:-1]:
        cur = cur[p]
    del cur[path[-1]]
    return v


def mutate(rng, body):
    body = copy.deepcopy(body)
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        ps = list(paths(body))
        kind = rng.random()
        if kind < 0.5:
            p = rng.choice(ps[1:] or ps)
            body = set_at(body, p, atom(rng))
        elif kind < 0.65 and len(ps) > 1:
            p = rng.choice(ps[1:])
            body = del_at(body, p)
        elif isinstance(body, dict):
            body[rng.choice(EXTRA_FIELDS)] = atom(rng)
    return body


def raw_mutation(rng, data: bytes) -> bytes:
    k = rng.random()
    if k < 0.3:
        return data[: rng.randrange(len(data) + 1)]
    if k < 0.6:
        b = bytearray(data)
        for _ in range(rng.randint(1, 5)):
            b[rng.randrange(len(b))] = rng.randrange(256)
        return bytes(b)
    if k < 0.8:
        return data.replace(b"1", b"NaN", 1).replace(b"0.", b"Infinity", 1)
    return data + b"garbage"


def cases(seed: int, count: int) -> list[tuple[str, bytes, bool]]:
    """(path, body, streamed) for each case, all drawn before any is sent."""
    rng = random.Random(seed)
    out = []
    while len(out) < count:
        path, valid = SEEDS[rng.randrange(len(SEEDS))]
        try:
            body = mutate(rng, valid)
        except (KeyError, IndexError, TypeError, RecursionError):
            continue  # an earlier mutation removed the field a later one aimed at, or nested too deep
        data = json.dumps(body).encode()
        if rng.random() < 0.1:
            data = raw_mutation(rng, data)
        out.append((path, data, isinstance(body, dict) and body.get("stream") is True))
    return out


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory):
    work = tmp_path_factory.mktemp("nnhost-fuzz")
    hf = hf_folder_from_minilm(work / "hf-cls", pooling="cls")
    # A mutation that drops a token limit generates to the context's end: a 30 s
    # deadline keeps such cases short (they end as max_tokens would), and leaves room
    # for the slowest valid case (a request template looping 100,000 times: ~18 s on
    # two busy cores).
    config = TEST_CONFIG.format(minilm=MINILM_PATH, hf=hf, router=ROUTER_WASM, smollm=SMOLLM, gemma=GEMMA_PATH)
    srv = Server(config + "\n[tenants.limits]\nrequest_timeout_ms = 30_000\n", work)
    yield srv
    srv.stop()


def answer_problem(path: str, status: int, text: str, streamed: bool) -> str | None:
    """What is wrong with this answer, or None."""
    if 200 <= status < 300:
        ended = "data: [DONE]" in text or '"error"' in text or path == "/v1/responses"
        return None if not streamed or ended else "a stream that did not end"
    if status == 503:
        return None
    if status >= 500:
        return f"status {status}"
    try:
        err = json.loads(text)["error"]
        if path.startswith("/v2"):
            assert isinstance(err, str) and err
        else:
            assert isinstance(err["message"], str) and err["message"]
            assert {"type", "param", "code"} <= set(err)
    except Exception:  # noqa: BLE001 - any shape error is the finding
        return f"status {status} without an OpenAI-shaped error"
    return None


def test_random_requests_get_clear_answers(fuzzed):
    def send(case):
        path, data, streamed = case
        r = requests.post(fuzzed.url + path, data=data, headers={"content-type": "application/json"},
                          timeout=120, stream=streamed)
        text = "".join(c.decode("utf-8", "replace") for c in r.iter_content(8192)) if streamed else r.text
        problem = answer_problem(path, r.status_code, text, streamed)
        return problem and f"{problem}: POST {path} {data[:300]!r} -> {text[:300]!r}"

    with ThreadPoolExecutor(4) as pool:
        problems = [p for p in pool.map(send, cases(SEED, CASES)) if p]
    assert not problems, "\n".join(problems[:20])
    assert fuzzed.proc.poll() is None, fuzzed.log_text()
    assert fuzzed.get("/health").status_code == 200
    r = fuzzed.post("/v1/chat/completions", {"model": SMOL, "messages": MSGS, "max_tokens": 4})
    assert r.status_code == 200, r.text
    assert "panicked" not in fuzzed.log_path.read_text(errors="replace")


def test_the_cases_repeat_and_reach_every_route():
    first, again = cases(SEED, 200), cases(SEED, 200)
    assert first == again
    assert {path for path, _, _ in first} == {path for path, _ in SEEDS}
