"""The prefix cache: a prompt that starts with the tokens of an earlier one (a shared
system prompt, the earlier turns of a conversation) prefills only what follows, and
reads exactly as if it had been prefilled whole."""
from __future__ import annotations

import threading

import pytest
import requests

from conftest import GEMMA, ROUTER_WASM, SMOLLM, Server, assert_same_or_near_tie, model_counts

CONFIG = """
[server]
public_metrics = true

[[models]]
name = "smollm2-fp32"
path = "{smollm}"
onnx = "onnx/model_fp32.onnx"

[[models]]
name = "smollm2-fp32-uncached"
path = "{smollm}"
onnx = "onnx/model_fp32.onnx"
batching = {{ prefix_cache_mib = 0 }}

[[models]]
name = "smollm2"
path = "{smollm}"

[[models]]
name = "gemma-fused"
path = "{gemma}"
onnx = "onnx/model_fused.onnx"

[[models]]
name = "gemma-fused-uncached"
path = "{gemma}"
onnx = "onnx/model_fused.onnx"
batching = {{ prefix_cache_mib = 0 }}

[[tenants]]
name = "default"
public = true
component = "{router}"

[[tenants]]
name = "other"
api_keys = ["sk-other"]
component = "{router}"
"""

SYSTEM = ("You are a careful assistant for a small bakery. You answer questions about opening hours, "
          "bread, cakes and orders in one or two short sentences, and you never invent prices.")


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    srv = Server(CONFIG.format(smollm=SMOLLM, gemma=GEMMA, router=ROUTER_WASM),
                 tmp_path_factory.mktemp("nnhost-prefix-cache"))
    yield srv
    srv.stop()


def tokens(host, model: str) -> dict[str, float]:
    """The model's prompt tokens so far: reused from the cache, and prefilled."""
    return model_counts(host, "prefix_cache_tokens_total", model, ("reused", "prefilled"))


def chat(host, model: str, messages: list[dict], max_tokens: int = 24) -> tuple[str, dict]:
    r = requests.post(host.url + "/v1/chat/completions", timeout=300,
                      json={"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0})
    assert r.status_code == 200, r.text
    body = r.json()
    return body["choices"][0]["message"]["content"], body["usage"]


def complete(host, model: str, prompt: str, max_tokens: int = 24) -> tuple[dict, dict]:
    """The greedy choice (with its tokens' top-5 log probabilities) and the usage."""
    r = requests.post(host.url + "/v1/completions", timeout=300,
                      json={"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0,
                            "logprobs": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    return body["choices"][0], body["usage"]


QUESTIONS = ["When do you open on Saturdays?", "Do you bake rye bread?", "Can I order a cake for Sunday?"]


def conversation(host, model: str, answers: list[str] | None = None) -> list[tuple[dict | str, dict, float]]:
    """Three turns of one conversation (chat messages for SmolLM2, a growing transcript
    for Gemma 3 270M, a base model); each turn's answer, usage and the tokens the
    prefix cache gave it. With `answers`, the transcript holds those instead of the
    model's own, so two models get the same prompts."""
    messages = [{"role": "system", "content": SYSTEM}]
    transcript = SYSTEM
    turns = []
    for k, question in enumerate(QUESTIONS):
        before = tokens(host, model)["reused"]
        if model.startswith("gemma"):
            transcript += f"\n\nQ: {question}\nA:"
            answer, usage = complete(host, model, transcript)
            transcript += answers[k] if answers else answer["text"]
        else:
            messages.append({"role": "user", "content": question})
            answer, usage = chat(host, model, messages)
            messages.append({"role": "assistant", "content": answers[k] if answers else answer})
        turns.append((answer, usage, tokens(host, model)["reused"] - before))
    return turns


@pytest.mark.parametrize("model", ["smollm2-fp32", "gemma-fused"])
def test_a_conversation_prefills_only_its_new_turn_and_reads_as_uncached(host, model):
    """Each turn re-sends the whole conversation: from the second on, the earlier turns
    come from the cache. The answers are those of the uncached model, token for token, on
    both cache layouts (the fp32 graph's concatenated one, the 8-bit fused graph's
    GroupQueryAttention one); the quantized graph is also held to the weaker near-tie
    bound, which says where an answer parted if it ever does."""
    before = tokens(host, model)
    cached = conversation(host, model)
    answers = [a if isinstance(a, str) else a["text"] for a, _, _ in cached]
    uncached = conversation(host, model + "-uncached", answers)
    if not model.endswith("fp32"):
        for k, ((c, _, _), (u, _, _)) in enumerate(zip(cached, uncached)):
            assert_same_or_near_tie(u, c, f"turn {k + 1}")
    assert answers == [a if isinstance(a, str) else a["text"] for a, _, _ in uncached]
    assert [t[1]["prompt_tokens"] for t in cached] == [t[1]["prompt_tokens"] for t in uncached]
    (_, first, _), (_, second, reused_second), (_, third, reused_third) = cached
    # A turn's prompt starts with the previous turn's prompt (up to a token where the
    # tokenizer merges across the seam of the answer): that much comes from the cache.
    for earlier, later, reused in ((first, second, reused_second), (second, third, reused_third)):
        assert earlier["prompt_tokens"] - 2 <= reused <= earlier["prompt_tokens"], (earlier, later, reused)
    after = tokens(host, model)
    # Every prompt token was either reused or prefilled, none twice.
    assert (after["reused"] + after["prefilled"]) - (before["reused"] + before["prefilled"]) \
        == sum(t[1]["prompt_tokens"] for t in cached)
    assert tokens(host, model + "-uncached")["reused"] == 0
    # Each answer's usage reports what the cache gave its prompt, as OpenAI's prompt
    # caching does; the uncached model's report none.
    assert [t[1]["prompt_tokens_details"]["cached_tokens"] for t in cached] == [t[2] for t in cached]
    assert [t[1]["prompt_tokens_details"]["cached_tokens"] for t in uncached] == [0, 0, 0]


def test_prompts_sharing_a_system_prompt_reuse_it(host):
    """Different users, one system prompt: later prompts reuse its tokens."""
    before = tokens(host, "smollm2")
    for question in ["What is rye?", "Are you open on Mondays?", "How long does a cake keep?"]:
        chat(host, "smollm2", [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
             max_tokens=4)
    after = tokens(host, "smollm2")
    # The system prompt alone is ~45 tokens: reused by the second and the third prompts.
    assert after["reused"] - before["reused"] >= 2 * 40, (before, after)


def test_a_tenant_never_reads_another_tenants_cached_prompt(host):
    """A cache shared across tenants would leak their prompts: `cached_tokens` would
    grow as a guess matched another tenant's system prompt, token by token."""
    secret = [{"role": "system", "content": "The vault code is 4711. " + SYSTEM},
              {"role": "user", "content": "What is the vault code?"}]
    chat(host, "smollm2", secret, max_tokens=2)  # the default tenant's prompt, now cached

    def as_other() -> dict:
        r = requests.post(host.url + "/v1/chat/completions", timeout=300,
                          headers={"authorization": "Bearer sk-other"},
                          json={"model": "smollm2", "messages": secret, "max_tokens": 2, "temperature": 0})
        assert r.status_code == 200, r.text
        return r.json()["usage"]

    assert as_other()["prompt_tokens_details"]["cached_tokens"] == 0
    # Its own repeat is served from its own entry; the default tenant's still serves it.
    usage = as_other()
    assert usage["prompt_tokens_details"]["cached_tokens"] == usage["prompt_tokens"] - 2
    _, usage = chat(host, "smollm2", secret, max_tokens=2)
    assert usage["prompt_tokens_details"]["cached_tokens"] == usage["prompt_tokens"] - 2


def test_the_same_prompt_twice_runs_only_its_last_two_tokens_again(host):
    """Two, not one: a single row runs on another MatMulNBits kernel on some CPUs (AVX2),
    while a rest of two gives the logits of the whole prompt bit for bit. So the int4
    model answers a repeated prompt with the same tokens and the same log probabilities."""
    body = {"model": "smollm2", "temperature": 0, "max_tokens": 16, "logprobs": True, "top_logprobs": 3,
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Tell me about sourdough."}]}

    def ask() -> dict:
        r = requests.post(host.url + "/v1/chat/completions", json=body, timeout=300)
        assert r.status_code == 200, r.text
        return r.json()

    first = ask()
    before = tokens(host, "smollm2")
    second = ask()
    after = tokens(host, "smollm2")
    assert second["choices"][0]["logprobs"] == first["choices"][0]["logprobs"]
    assert second["choices"][0]["message"] == first["choices"][0]["message"]
    prompt_tokens = first["usage"]["prompt_tokens"]
    assert after["reused"] - before["reused"] == prompt_tokens - 2
    assert after["prefilled"] - before["prefilled"] == 2
    assert second["usage"]["prompt_tokens_details"] == {"cached_tokens": prompt_tokens - 2}


def test_the_openai_client_reads_the_cached_tokens(host):
    """`usage.prompt_tokens_details.cached_tokens` (chat, streamed with include_usage)
    and `usage.input_tokens_details.cached_tokens` (Responses API) through the official
    client, for a prompt first seen and then repeated."""
    import openai

    client = openai.OpenAI(base_url=host.url + "/v1", api_key="unused", max_retries=0, timeout=300)
    # Prompts of their own: nothing earlier in this module starts the same way.
    messages = [{"role": "system", "content": "Today is a holiday at the hardware store on Elm Street."},
                {"role": "user", "content": "Is the shop open this afternoon?"}]

    def streamed_usage():
        chunks = list(client.chat.completions.create(
            model="smollm2-fp32", messages=messages, max_tokens=4, temperature=0, stream=True,
            stream_options={"include_usage": True}))
        return chunks[-1].usage

    first, second = streamed_usage(), streamed_usage()
    assert first.prompt_tokens_details.cached_tokens == 0, first
    assert second.prompt_tokens_details.cached_tokens == second.prompt_tokens - 2, second

    def response_usage():
        return client.responses.create(model="smollm2-fp32", instructions="It is raining in the harbour.",
                                       input="Do you sell umbrellas?", max_output_tokens=4,
                                       temperature=0).usage

    first, second = response_usage(), response_usage()
    assert first.input_tokens_details.cached_tokens == 0, first
    assert second.input_tokens_details.cached_tokens == second.input_tokens - 2, second


def test_a_long_cached_document_is_not_prefilled_again(host):
    """A long document asked about twice (in chunks the first time): the second question
    prefills only itself."""
    document = "The mill by the river ground the town's grain for a hundred years. " * 60
    before = tokens(host, "smollm2")
    _, usage = chat(host, "smollm2", [{"role": "user", "content": document + "\nWho built the mill?"}],
                    max_tokens=4)
    long_tokens = usage["prompt_tokens"]
    middle = tokens(host, "smollm2")
    chat(host, "smollm2", [{"role": "user", "content": document + "\nWhat did it grind?"}], max_tokens=4)
    after = tokens(host, "smollm2")
    assert long_tokens > 600
    assert middle["prefilled"] - before["prefilled"] > 0.9 * long_tokens
    assert after["reused"] - middle["reused"] > long_tokens - 30


def test_prompts_arriving_together_with_one_document_prefill_it_once(host):
    """Three users ask about one long document at the same moment. Chunked prompts are
    prefilled one after the other anyway, so the second and third wait for the first to
    be cached and then prefill only their question; each answer is the one the model
    gives without any cache (fp32: exact)."""
    document = ("The lighthouse keeper's log for the winter of 1907 records storms, ships and supplies, "
                "day after day, in a careful hand. ") * 30
    questions = ["What does the log record?", "Who wrote the log?", "Which winter is it about?"]

    def ask(model, question, out, i):
        out[i] = chat(host, model, [{"role": "system", "content": document},
                                    {"role": "user", "content": question}], max_tokens=8)

    before = tokens(host, "smollm2-fp32")
    answers: dict = {}
    threads = [threading.Thread(target=ask, args=("smollm2-fp32", q, answers, i)) for i, q in enumerate(questions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = tokens(host, "smollm2-fp32")
    prompt_tokens = [answers[i][1]["prompt_tokens"] for i in range(3)]
    cached = sorted(answers[i][1]["prompt_tokens_details"]["cached_tokens"] for i in range(3))
    assert min(prompt_tokens) > 600
    # One prefilled the document; the two others reused it (all but their question's tokens).
    assert cached[0] == 0 and cached[1] > min(prompt_tokens) - 40, (cached, prompt_tokens)
    assert after["prefilled"] - before["prefilled"] < max(prompt_tokens) + 2 * 40, (before, after)

    uncached: dict = {}
    for i, q in enumerate(questions):
        ask("smollm2-fp32-uncached", q, uncached, i)
    assert [answers[i][0] for i in range(3)] == [uncached[i][0] for i in range(3)]


def prefills_of_several(host, model: str) -> float:
    """The model's prefill runs so far that held two prompts or more."""
    count = single = 0.0
    for line in host.get("/metrics").text.splitlines():
        if f'model="{model}"' not in line:
            continue
        if line.startswith("nnhost_prefill_prompts_count"):
            count = float(line.split()[-1])
        elif line.startswith("nnhost_prefill_prompts_bucket") and 'le="1"' in line:
            single = float(line.split()[-1])
    return count - single


def test_prompts_arriving_together_after_a_cached_system_prompt_prefill_together(host):
    """Users asking at the same moment with a system prompt already cached: their rests
    run in one prefill, lined up on the longest (a row with a shorter rest runs a few of
    its cached tokens again), not one prompt per decode step. Each answer is the one the
    model gives without any cache (fp32: exact), and each usage reports what its prompt
    took from the cache."""
    system = ("You answer questions about the town library: its opening hours, its books, its "
              "reading rooms and its events. Keep every answer short and friendly.")
    questions = ["When does it open?", "Can I borrow ten books at once for a school project?",
                 "Is there wifi?", "Do you have a reading room for children and their parents?",
                 "Where is the library?"]
    model = "smollm2-fp32"

    def ask(which, question, out, i):
        out[i] = chat(host, which, [{"role": "system", "content": system},
                                    {"role": "user", "content": question}], max_tokens=8)

    ask(model, "Hello!", {}, 0)  # caches the system prompt
    # The first arrival is prefilled alone while the others come in; how the rest group
    # depends on the clients' timing, so a burst is sent again if none ran together.
    for _ in range(3):
        before, runs_before = tokens(host, model), prefills_of_several(host, model)
        answers: dict = {}
        threads = [threading.Thread(target=ask, args=(model, q, answers, i)) for i, q in enumerate(questions)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        after = tokens(host, model)
        usages = [answers[i][1] for i in range(len(questions))]
        cached = [u["prompt_tokens_details"]["cached_tokens"] for u in usages]
        assert all(0 < c <= u["prompt_tokens"] - 2 for c, u in zip(cached, usages)), usages
        assert after["reused"] - before["reused"] == sum(cached)
        assert (after["reused"] + after["prefilled"]) - (before["reused"] + before["prefilled"]) \
            == sum(u["prompt_tokens"] for u in usages)
        if prefills_of_several(host, model) > runs_before:
            break
    else:
        pytest.fail("three bursts of five prompts, and never two prefilled in one run")

    uncached: dict = {}
    for i, q in enumerate(questions):
        ask(model + "-uncached", q, uncached, i)
    assert [answers[i][0] for i in range(len(questions))] == [uncached[i][0] for i in range(len(questions))]
