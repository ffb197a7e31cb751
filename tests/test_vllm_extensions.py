"""vLLM's request extensions, which self-hosted clients (benchmark tools, chat UIs,
agent frameworks) send to OpenAI-compatible servers, end to end through the router
guest and the host's sampler, also as the `openai` SDK's `extra_body`: the sampling
fields `min_p`, `repetition_penalty`, `ignore_eos`, `min_tokens`, `stop_token_ids`
and `top_k: -1`, and the chat template's `continue_final_message`,
`add_generation_prompt` and `chat_template_kwargs`, and structured outputs
(`guided_choice`, `guided_regex`, `guided_json`, `structured_outputs`), `allowed_token_ids`,
`request_id`, a request's own `chat_template`, `stop_reason` with `include_stop_str_in_output`,
and the fields clients send at their defaults (`skip_special_tokens: true`…)."""
from __future__ import annotations

import json
import re

import openai
import pytest

from test_embeddings import assert_openai_error

CHAT = "smollm2-135m-instruct"
BASE = "gemma-3-270m"
QUESTION = [{"role": "user", "content": "Name the capital of France."}]
ANSWER = "The capital of France is Paris."


def chat(server, **body):
    r = server.post("/v1/chat/completions", {"model": CHAT, "messages": QUESTION, "temperature": 0, **body})
    assert r.status_code == 200, r.text
    return r.json()


def text_of(body) -> str:
    return body["choices"][0]["message"]["content"]


def test_the_greedy_answer_these_tests_start_from(server):
    body = chat(server)
    assert text_of(body) == ANSWER and body["choices"][0]["finish_reason"] == "stop"


def test_ignore_eos_generates_up_to_max_tokens(server):
    body = chat(server, ignore_eos=True, max_tokens=24)
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 24
    assert text_of(body).startswith(ANSWER) and len(text_of(body)) > len(ANSWER)


def test_min_tokens_holds_back_the_end(server):
    plain = chat(server)["usage"]["completion_tokens"]
    body = chat(server, min_tokens=plain + 10, max_tokens=plain + 40)
    assert body["usage"]["completion_tokens"] >= plain + 10
    assert text_of(body).startswith(ANSWER)
    # A stop string inside the first min_tokens does not end the text either.
    body = chat(server, min_tokens=plain + 2, max_tokens=plain + 2, stop=["France"])
    assert text_of(body).startswith("The capital of France is")


def test_stop_token_ids_end_the_text_before_the_token(server):
    tokens = server.post("/v1/tokenize", {"model": CHAT, "prompt": ANSWER}).json()["tokens"]
    paris = tokens[-2]
    body = chat(server, stop_token_ids=[paris])
    assert text_of(body) == "The capital of France is"
    assert body["choices"][0]["finish_reason"] == "stop"
    # Streamed the same way.
    r = server.post("/v1/chat/completions", {"model": CHAT, "messages": QUESTION, "temperature": 0,
                                             "stop_token_ids": [paris], "stream": True}, stream=True)
    assert r.status_code == 200
    assert "Paris" not in r.text and '"finish_reason":"stop"' in r.text and "data: [DONE]" in r.text


def test_min_p_one_is_greedy_at_any_temperature(server):
    for seed in (1, 2, 3):
        assert text_of(chat(server, temperature=1.5, min_p=1.0, seed=seed)) == ANSWER


def test_repetition_penalty_breaks_a_loop(server):
    def complete(**extra):
        r = server.post("/v1/completions", {"model": BASE, "prompt": "one two three one two three one two three",
                                            "max_tokens": 24, "temperature": 0, **extra})
        assert r.status_code == 200, r.text
        return r.json()["choices"][0]["text"]

    looping = complete()
    assert looping.split()[:6] == ["one", "two", "three"] * 2, looping
    penalised = complete(repetition_penalty=1.3)
    assert penalised != looping
    assert penalised.lower().split().count("one") < looping.split().count("one") // 2, penalised
    # 1 is off.
    assert complete(repetition_penalty=1.0) == looping


def test_top_k_minus_one_is_off(server):
    assert text_of(chat(server, top_k=-1)) == ANSWER


def test_the_sdk_sends_them_as_extra_body(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    r = client.chat.completions.create(model=CHAT, messages=QUESTION, temperature=0, max_tokens=16,
                                       extra_body={"ignore_eos": True, "min_p": 0.1, "repetition_penalty": 1.05})
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 16
    r = client.completions.create(model=BASE, prompt="The sky is", max_tokens=6, temperature=0,
                                  extra_body={"ignore_eos": True, "min_tokens": 6})
    assert r.usage.completion_tokens == 6


@pytest.mark.parametrize("extra, param", [
    ({"min_p": 1.5}, "min_p"),
    ({"repetition_penalty": 0}, "repetition_penalty"),
    ({"repetition_penalty": -1}, "repetition_penalty"),
    ({"ignore_eos": "yes"}, "ignore_eos"),
    ({"min_tokens": 10, "max_tokens": 5}, "min_tokens"),
    ({"stop_token_ids": "2"}, "stop_token_ids"),
    ({"stop_token_ids": [2, -3]}, "stop_token_ids[1]"),
    # Checked by the host against the model's vocabulary.
    ({"stop_token_ids": [2, 10_000_000]}, "stop_token_ids"),
    ({"stop_token_ids": list(range(1025))}, "stop_token_ids"),
    ({"top_k": -2}, "top_k"),
])
def test_bad_values_are_400_naming_the_field(server, extra, param):
    r = server.post("/v1/chat/completions", {"model": CHAT, "messages": QUESTION, "max_tokens": 4, **extra})
    assert_openai_error(r, 400, param=param)


PREFILLED = QUESTION + [{"role": "assistant", "content": "The capital of France is"}]


def test_continue_final_message_continues_the_assistants_text(server):
    body = chat(server, messages=PREFILLED, continue_final_message=True)
    # The answer holds only the continuation, as vLLM's does.
    assert text_of(body) == " Paris." and body["choices"][0]["finish_reason"] == "stop"
    # The prompt is the conversation cut inside the assistant's turn: /v1/tokenize counts it the same.
    counted = server.post("/v1/tokenize", {"model": CHAT, "messages": PREFILLED, "continue_final_message": True})
    assert counted.status_code == 200, counted.text
    assert counted.json()["count"] == body["usage"]["prompt_tokens"]
    # Streamed, through the SDK.
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    stream = client.chat.completions.create(model=CHAT, messages=PREFILLED, temperature=0, stream=True,
                                            extra_body={"continue_final_message": True, "add_generation_prompt": False})
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == " Paris."


def test_add_generation_prompt_false_renders_the_conversation_as_it_stands(server):
    def rendered(**extra) -> str:
        r = server.post("/v1/tokenize", {"model": CHAT, "messages": QUESTION, **extra})
        assert r.status_code == 200, r.text
        return server.post("/v1/detokenize", {"model": CHAT, "tokens": r.json()["tokens"]}).json()["prompt"]

    with_prompt, without = rendered(), rendered(add_generation_prompt=False)
    assert with_prompt == without + "<|im_start|>assistant\n"
    assert without.endswith("Name the capital of France.<|im_end|>\n")


def test_chat_template_kwargs_are_accepted(server):
    # SmolLM2's template has no such variable; the request is served as without it.
    assert text_of(chat(server, chat_template_kwargs={"enable_thinking": False})) == ANSWER


@pytest.mark.parametrize("extra, param", [
    ({"messages": QUESTION, "continue_final_message": True}, "continue_final_message"),
    ({"messages": PREFILLED, "continue_final_message": True, "add_generation_prompt": True},
     "continue_final_message"),
    ({"messages": PREFILLED, "continue_final_message": True, "tools": [
        {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]},
     "continue_final_message"),
    ({"chat_template_kwargs": "enable_thinking=false"}, "chat_template_kwargs"),
])
def test_bad_template_options_are_400_naming_the_field(server, extra, param):
    r = server.post("/v1/chat/completions", {"model": CHAT, "messages": QUESTION, "max_tokens": 4, **extra})
    assert_openai_error(r, 400, param=param)


YES_NO = [{"role": "user", "content": "Is Paris the capital of France? Answer yes or no."}]


def test_guided_choice_answers_one_of_the_choices_exactly(server):
    body = chat(server, messages=YES_NO, guided_choice=["yes", "no"])
    assert text_of(body) == "yes" and body["choices"][0]["finish_reason"] == "stop"
    # Sampled hot, every choice is still one of them (n = 8 generations).
    body = chat(server, messages=YES_NO, temperature=1.8, seed=3, n=8,
                structured_outputs={"choice": ["Positive", "Negative", "Neutral (unsure)"]})
    texts = [c["message"]["content"] for c in body["choices"]]
    assert set(texts) <= {"Positive", "Negative", "Neutral (unsure)"}, texts


def test_guided_regex_output_is_a_whole_match(server):
    pattern = r"[A-Z][a-z]+ (19|20)\d\d"
    body = chat(server, messages=[{"role": "user", "content": "Name a city and a year."}], guided_regex=pattern,
                max_tokens=20)
    assert re.fullmatch(pattern, text_of(body)), text_of(body)
    assert body["choices"][0]["finish_reason"] == "stop"
    for seed in range(4):
        out = chat(server, messages=[{"role": "user", "content": "Any digits."}], guided_regex=r"\d{2,6}",
                   temperature=1.5, seed=seed, max_tokens=10)
        assert re.fullmatch(r"\d{2,6}", text_of(out)), text_of(out)


def test_guided_json_is_a_json_schema(server):
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                               "capital": {"type": "boolean"}}, "required": ["city", "capital"]}
    value = json.loads(text_of(chat(server, guided_json=schema, max_tokens=40)))
    assert set(value) == {"city", "capital"} and isinstance(value["capital"], bool), value


def test_completions_and_streams_take_them_too(server):
    r = server.post("/v1/completions", {"model": BASE, "prompt": "The capital of France is", "max_tokens": 8,
                                        "temperature": 0, "guided_choice": [" Paris", " Lyon", " Berlin"]})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["text"] == " Paris"
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)
    stream = client.chat.completions.create(model=CHAT, messages=YES_NO, temperature=0, stream=True,
                                            extra_body={"structured_outputs": {"regex": "(yes|no)[.!]"}})
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) in ("yes.", "yes!", "no.", "no!")


@pytest.mark.parametrize("extra, param, words", [
    ({"guided_regex": "(unclosed"}, "guided_regex", "unclosed group"),
    ({"guided_regex": "(?=a)b"}, "guided_regex", "look-around"),
    # An automaton that would blow up is refused, not built.
    ({"guided_regex": "(a|b)*a(a|b){40}"}, "guided_regex", "size limit"),
    ({"structured_outputs": {"regex": "("}}, "structured_outputs.regex", "cannot be used"),
    ({"guided_choice": []}, "guided_choice", "1 to 1024"),
    ({"guided_choice": ["a", ""]}, "guided_choice[1]", "empty"),
    ({"guided_choice": ["a"], "guided_regex": "b"}, "guided_choice", "cannot both"),
    ({"guided_choice": ["a"], "response_format": {"type": "json_object"}}, "guided_choice", "response_format"),
    ({"guided_json": {"type": "object", "properties": {"x": {"pattern": "a+"}}}}, "guided_json", "pattern"),
    ({"guided_grammar": "root ::= 'a'"}, "guided_grammar", "not supported"),
])
def test_bad_structured_outputs_are_400_naming_the_field(server, extra, param, words):
    r = server.post("/v1/chat/completions", {"model": CHAT, "messages": QUESTION, "max_tokens": 4, **extra})
    assert_openai_error(r, 400, param=param, contains=[words])


def test_allowed_token_ids_restrict_the_answer_to_those_tokens(server):
    ids = server.post("/v1/tokenize", {"model": CHAT, "prompt": " yes no maybe", "add_special_tokens": False}).json()["tokens"]
    for seed in range(3):
        body = chat(server, allowed_token_ids=ids, temperature=1.5, seed=seed, max_tokens=6, logprobs=True)
        out = body["choices"][0]
        assert out["finish_reason"] == "length"
        assert all(lp["token"] in (" yes", " no", " maybe") for lp in out["logprobs"]["content"]), out
    # The reported log probabilities are the model's own: the first step's alternatives are
    # those of an unrestricted request, led by tokens that were not allowed.
    allowed = chat(server, allowed_token_ids=ids, max_tokens=1, logprobs=True, top_logprobs=3)
    free = chat(server, max_tokens=1, logprobs=True, top_logprobs=3)
    top = allowed["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    assert top == free["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    assert top[0]["token"] not in (" yes", " no", " maybe")
    r = server.post("/v1/completions", {"model": BASE, "prompt": "Hello", "max_tokens": 2,
                                        "allowed_token_ids": [10**7]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "allowed_token_ids", r.text


def test_request_id_names_the_response(server):
    assert chat(server, request_id="run-42.a", max_tokens=2)["id"] == "chatcmpl-run-42.a"
    r = server.post("/v1/completions", {"model": BASE, "prompt": "Hello", "max_tokens": 2, "request_id": "x1",
                                        "stream": True})
    assert '"id":"cmpl-x1"' in r.text


def test_a_request_template_renders_the_conversation(server):
    template = ("{% for m in messages %}{{ m['role'] | upper }}: {{ m['content'] }}\n{% endfor %}"
                "{% if add_generation_prompt %}ASSISTANT:{% endif %}")
    r = server.post("/v1/tokenize", {"model": BASE, "messages": QUESTION, "chat_template": template,
                                     "add_special_tokens": False})
    assert r.status_code == 200, r.text
    text = server.post("/v1/detokenize", {"model": BASE, "tokens": r.json()["tokens"]}).json()["prompt"]
    assert text == "USER: Name the capital of France.\nASSISTANT:"
    # A base model chats through the request's template (its BOS asked for, as it has none in the template).
    r = server.post("/v1/chat/completions", {"model": BASE, "messages": QUESTION, "chat_template": template,
                                             "add_special_tokens": True, "max_tokens": 8, "temperature": 0})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens"] == len(
        server.post("/v1/tokenize", {"model": BASE, "prompt": text}).json()["tokens"])
    r = server.post("/v1/chat/completions", {"model": CHAT, "messages": QUESTION, "chat_template": "{% for %}"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "chat_template", r.text
    # A template that would loop for ever runs out of fuel: a 400 at once, not the guest's CPU budget.
    forever = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    r = server.post("/v1/chat/completions", {"model": CHAT, "messages": QUESTION, "chat_template": forever})
    assert r.status_code == 400 and "fuel" in r.json()["error"]["message"], r.text
    assert r.elapsed.total_seconds() < 2


@pytest.mark.parametrize("field,default,other", [
    ("skip_special_tokens", True, False),
    ("spaces_between_special_tokens", True, False),
    ("use_beam_search", False, True),
    ("length_penalty", 1.0, 0.5),
    ("detokenize", True, False),
    ("priority", 0, 5),
])
def test_vllm_fields_at_their_defaults_are_accepted_and_others_refused(server, field, default, other):
    assert chat(server, max_tokens=2, **{field: default})["choices"][0]["finish_reason"] == "length"
    r = server.post("/v1/chat/completions", {"model": CHAT, "messages": QUESTION, field: other})
    assert r.status_code == 400 and r.json()["error"]["param"] == field, r.text
    assert r.json()["error"]["code"] == "unsupported_parameter", r.text


def test_stop_reason_names_the_stop_and_include_stop_str_in_output_keeps_it(server):
    body = chat(server, stop=["France"])
    assert text_of(body) == "The capital of " and body["choices"][0]["stop_reason"] == "France"
    body = chat(server, stop=["France"], include_stop_str_in_output=True)
    assert text_of(body) == "The capital of France" and body["choices"][0]["finish_reason"] == "stop"
    # The model's own stop token is no stop of the request's: no stop_reason (vLLM's null).
    assert chat(server)["choices"][0].get("stop_reason") is None
    tokens = server.post("/v1/tokenize", {"model": CHAT, "prompt": ANSWER}).json()["tokens"]
    assert chat(server, stop_token_ids=[tokens[-2]])["choices"][0]["stop_reason"] == tokens[-2]
    # Streamed: the stop string is the last text, and the finish chunk names it.
    r = server.post("/v1/chat/completions", {"model": CHAT, "messages": QUESTION, "temperature": 0, "stream": True,
                                             "stop": ["France"], "include_stop_str_in_output": True})
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    assert text == "The capital of France"
    assert events[-1]["choices"][0]["finish_reason"] == "stop" and events[-1]["choices"][0]["stop_reason"] == "France"
    # Completions, streamed and not.
    r = server.post("/v1/completions", {"model": BASE, "prompt": "One, two, three,", "max_tokens": 12, "temperature": 0,
                                        "stop": [" five"], "include_stop_str_in_output": True})
    assert r.json()["choices"][0]["text"].endswith(" five") and r.json()["choices"][0]["stop_reason"] == " five", r.text
    r = server.post("/v1/completions", {"model": BASE, "prompt": "One, two, three,", "max_tokens": 12, "temperature": 0,
                                        "stop": [" five"], "stream": True})
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
    assert "".join(e["choices"][0]["text"] for e in events).endswith("four,")
    assert events[-1]["choices"][0]["stop_reason"] == " five"
