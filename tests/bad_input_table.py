"""The rows of `test_bad_input.py`: each malformed or abusive request and the answer it must
get (status, and the error's `param` where the row pins it)."""
from __future__ import annotations

import dataclasses
import gzip
import json

EMB = "/v1/embeddings"
CHAT = "/v1/chat/completions"
COMP = "/v1/completions"
MINILM = "all-MiniLM-L6-v2"
SMOL = "smollm2-135m-instruct"
GEMMA = "gemma-3-270m"
V2_INFER = f"/v2/models/{MINILM}/infer"
JSON_CT = {"content-type": "application/json"}
HI = [{"role": "user", "content": "hi"}]

UNSET = object()


@dataclasses.dataclass
class Case:
    name: str
    method: str
    path: str
    body: object = None          # dict/list (sent as JSON), bytes, a callable returning bytes, or None
    headers: dict | None = None  # str or bytes values; JSON bodies get content-type unless given
    status: int = 400
    param: object = UNSET        # the expected error `param`, when the row pins it
    shape: str | None = "auto"   # "openai", "v2", None (no body to check: HEAD, hyper's own 4xx)
    xfail: str | None = None     # a known host/guest bug, strict xfail
    needs: tuple = ()            # models that must be served (the chat models)
    http10: bool = False         # send HTTP/1.0
    raw_head: bytes | None = None  # a whole hand-written request (request line and headers)
    chunked: bool = False        # send the body with Transfer-Encoding: chunked

    def body_bytes(self) -> bytes | None:
        if callable(self.body):
            return self.body()
        if isinstance(self.body, (bytes, bytearray)):
            return bytes(self.body)
        if self.body is None:
            return None
        return json.dumps(self.body).encode()

    def expected_shape(self) -> str | None:
        if self.shape != "auto":
            return self.shape
        if self.method == "HEAD":
            return None
        return "v2" if self.path.startswith("/v2") else "openai"


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=1)


def chat(**fields):
    return {"model": SMOL, "messages": HI, **fields}


def comp(**fields):
    return {"model": SMOL, "prompt": "Once upon a time", **fields}


def emb(**fields):
    return {"model": MINILM, "input": "hi", **fields}


def v2_ids(ids, mask=None, types=None):
    """The three MiniLM inputs for a token-id sequence."""
    mask = [1] * len(ids) if mask is None else mask
    types = [0] * len(ids) if types is None else types
    return {"inputs": [
        {"name": "input_ids", "shape": [1, len(ids)], "datatype": "INT64", "data": ids},
        {"name": "attention_mask", "shape": [1, len(mask)], "datatype": "INT64", "data": mask},
        {"name": "token_type_ids", "shape": [1, len(types)], "datatype": "INT64", "data": types},
    ]}


def v2_binary(header: dict, blob: bytes) -> tuple[bytes, dict]:
    head = json.dumps(header).encode()
    return head + blob, {"inference-header-content-length": str(len(head)),
                         "content-type": "application/octet-stream"}


def deep(n: int) -> bytes:
    return b"[" * n + b"]" * n



_bin_huge = v2_binary({"inputs": [{"name": "input_ids", "shape": [1, 2], "datatype": "INT64",
                                    "parameters": {"binary_data_size": 2 ** 64 - 1}}]}, b"\0" * 16)
_bin_odd = v2_binary({"inputs": [{"name": "input_ids", "shape": [1, 2], "datatype": "INT64",
                                   "parameters": {"binary_data_size": 7}}]}, b"\1" * 7)

CASES: list[Case] = [
    # --- /v1/embeddings: the body is not a JSON object --------------------------------
    Case("emb: empty body", "POST", EMB, b"", JSON_CT),
    Case("emb: whitespace body", "POST", EMB, b" \n\t ", JSON_CT),
    Case("emb: not JSON", "POST", EMB, b"hello there", JSON_CT),
    Case("emb: truncated JSON", "POST", EMB, b'{"model": "all-MiniLM-L6-v2", "input": "hi"', JSON_CT),
    Case("emb: trailing garbage after the object", "POST", EMB, b'{"model":"all-MiniLM-L6-v2","input":"hi"} x',
         JSON_CT),
    Case("emb: JSON array at top level", "POST", EMB, [{"model": MINILM, "input": "hi"}]),
    Case("emb: JSON string at top level", "POST", EMB, b'"hi"', JSON_CT),
    Case("emb: JSON null at top level", "POST", EMB, b"null", JSON_CT),
    Case("emb: invalid UTF-8 in a string", "POST", EMB, b'{"model":"all-MiniLM-L6-v2","input":"\xff\xfe\xfd"}',
         JSON_CT),
    Case("emb: invalid UTF-8 body", "POST", EMB, b"\xc3\x28\xa0\xa1\xf0\x28\x8c\xbc", JSON_CT),
    Case("emb: lone surrogate escape", "POST", EMB, b'{"model":"all-MiniLM-L6-v2","input":"\\ud800"}', JSON_CT),
    Case("emb: 100k nested arrays", "POST", EMB, lambda: deep(100_000), JSON_CT),
    Case("emb: 100k nested arrays inside input", "POST", EMB,
         lambda: b'{"model":"all-MiniLM-L6-v2","input":' + deep(100_000) + b"}", JSON_CT),
    Case("emb: form-encoded body", "POST", EMB, b"model=all-MiniLM-L6-v2&input=hi",
         {"content-type": "application/x-www-form-urlencoded"}),
    Case("emb: 10 MB string (limit 1 MiB)", "POST", EMB,
         lambda: json.dumps(emb(input="x" * 10_000_000)).encode(), JSON_CT, status=413),
    Case("emb: 2 MB chunked upload (no content-length)", "POST", EMB,
         lambda: json.dumps(emb(input="y" * 2_000_000)).encode(), JSON_CT, status=413, chunked=True),
    # --- /v1/embeddings: model ---------------------------------------------------------
    Case("emb: model missing", "POST", EMB, {"input": "hi"}, param="model"),
    Case("emb: model null", "POST", EMB, emb(model=None), param="model"),
    Case("emb: model empty", "POST", EMB, emb(model=""), param="model"),
    Case("emb: model a number", "POST", EMB, emb(model=5), param="model"),
    Case("emb: model an array", "POST", EMB, emb(model=[MINILM]), param="model"),
    Case("emb: unknown model", "POST", EMB, emb(model="no-such-model"), status=404, param="model"),
    Case("emb: model id path traversal", "POST", EMB, emb(model="../../../etc/passwd"), status=404),
    Case("emb: model id 100k characters", "POST", EMB, emb(model="m" * 100_000), status=404),
    Case("emb: a chat model", "POST", EMB, emb(model=SMOL), param="model", needs=(SMOL,)),
    # --- /v1/embeddings: input ---------------------------------------------------------
    Case("emb: input missing", "POST", EMB, {"model": MINILM}, param="input"),
    Case("emb: input null", "POST", EMB, emb(input=None), param="input"),
    Case("emb: input a boolean", "POST", EMB, emb(input=True), param="input"),
    Case("emb: input an object", "POST", EMB, emb(input={"text": "hi"}), param="input"),
    Case("emb: input array of string arrays", "POST", EMB, emb(input=[["a", "b"]]), param="input"),
    Case("emb: input mixes ids and strings", "POST", EMB, emb(input=[1, "a"]), param="input"),
    Case("emb: token id 1e308", "POST", EMB, b'{"model":"all-MiniLM-L6-v2","input":[1e308]}', JSON_CT,
         param="input"),
    Case("emb: token id 2**64", "POST", EMB, emb(input=[2 ** 64]), param="input"),
    Case("emb: token id -1", "POST", EMB, emb(input=[101, -1, 102]), param="input"),
    Case("emb: token id 1.5", "POST", EMB, emb(input=[1.5]), param="input"),
    Case("emb: token id out of vocabulary", "POST", EMB, emb(input=[101, 99_999_999, 102]), param="input"),
    Case("emb: token id = vocabulary size", "POST", EMB, emb(input=[[101, 30522, 102]]), param="input"),
    Case("emb: 5,000 inputs (limit 2,048)", "POST", EMB, emb(input=["a"] * 5000), param="input"),
    Case("emb: 9 inputs to a model limited to 8", "POST", EMB, {"model": "hf-cls", "input": ["a"] * 9},
         param="input"),
    Case("emb: 100k token ids in one input", "POST", EMB, emb(input=[1000] * 100_000), param="input"),
    Case("emb: text over the context length", "POST", EMB, emb(input="word " * 1000), param="input"),
    # --- /v1/embeddings: options -------------------------------------------------------
    Case("emb: encoding_format int8", "POST", EMB, emb(encoding_format="int8"), param="encoding_format"),
    Case("emb: encoding_format BASE64", "POST", EMB, emb(encoding_format="BASE64"), param="encoding_format"),
    Case("emb: encoding_format a number", "POST", EMB, emb(encoding_format=1), param="encoding_format"),
    Case("emb: dimensions 0", "POST", EMB, emb(dimensions=0), param="dimensions"),
    Case("emb: dimensions -1", "POST", EMB, emb(dimensions=-1), param="dimensions"),
    Case("emb: dimensions 385 (model has 384)", "POST", EMB, emb(dimensions=385), param="dimensions"),
    Case("emb: dimensions 2**64", "POST", EMB, emb(dimensions=2 ** 64), param="dimensions"),
    Case("emb: dimensions 1e308", "POST", EMB, b'{"model":"all-MiniLM-L6-v2","input":"hi","dimensions":1e308}',
         JSON_CT, param="dimensions"),
    Case("emb: dimensions a string", "POST", EMB, emb(dimensions="64"), param="dimensions"),
    Case("emb: dimensions true", "POST", EMB, emb(dimensions=True), param="dimensions"),
    Case("emb: user a number", "POST", EMB, emb(user=42), param="user"),
    # --- /v1/chat/completions: messages (validated before the model is looked up) -----
    Case("chat: empty body", "POST", CHAT, b"", JSON_CT),
    Case("chat: JSON array at top level", "POST", CHAT, [chat()]),
    Case("chat: invalid UTF-8", "POST", CHAT,
         b'{"model":"smollm2-135m-instruct","messages":[{"role":"user","content":"\xff"}]}', JSON_CT),
    Case("chat: model missing", "POST", CHAT, {"messages": HI}, param="model"),
    Case("chat: model a number", "POST", CHAT, chat(model=7), param="model"),
    Case("chat: messages missing", "POST", CHAT, {"model": SMOL}, param="messages"),
    Case("chat: messages null", "POST", CHAT, chat(messages=None), param="messages"),
    Case("chat: messages a string", "POST", CHAT, chat(messages="hi"), param="messages"),
    Case("chat: messages empty", "POST", CHAT, chat(messages=[]), param="messages"),
    Case("chat: message a string", "POST", CHAT, chat(messages=["hi"]), param="messages[0]"),
    Case("chat: message without role", "POST", CHAT, chat(messages=[{"content": "hi"}]), param="messages[0].role"),
    Case("chat: message without content", "POST", CHAT, chat(messages=[{"role": "user"}]),
         param="messages[0].content"),
    Case("chat: content a number", "POST", CHAT, chat(messages=[{"role": "user", "content": 42}]),
         param="messages[0].content"),
    Case("chat: content an empty array", "POST", CHAT, chat(messages=[{"role": "user", "content": []}]),
         param="messages[0].content"),
    Case("chat: content part image_url", "POST", CHAT, chat(messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]), param="messages[0].content[0].type"),
    Case("chat: unknown role", "POST", CHAT, chat(messages=[{"role": "wizard", "content": "hi"}]),
         param="messages[0].role"),
    Case("chat: role a number", "POST", CHAT, chat(messages=[{"role": 1, "content": "hi"}]),
         param="messages[0].role"),
    Case("chat: tool message without tool_call_id", "POST", CHAT, chat(messages=[{"role": "tool", "content": "hi"}]),
         param="messages[0].tool_call_id"),
    Case("chat: content nested 100k deep", "POST", CHAT,
         lambda: b'{"model":"smollm2-135m-instruct","messages":[{"role":"user","content":' + deep(100_000) + b"}]}",
         JSON_CT),
    # --- /v1/chat/completions: sampling fields ------------------------------------------
    Case("chat: unknown top-level field", "POST", CHAT, chat(frobnicate=True), param="frobnicate"),
    Case("chat: stop with 5 entries", "POST", CHAT, chat(stop=["a", "b", "c", "d", "e"]), param="stop"),
    Case("chat: stop an empty string", "POST", CHAT, chat(stop=""), param="stop"),
    Case("chat: stop a number", "POST", CHAT, chat(stop=5), param="stop"),
    Case("chat: n 0", "POST", CHAT, chat(n=0), param="n"),
    Case("chat: n 17", "POST", CHAT, chat(n=17), param="n"),
    Case("chat: n 2**64", "POST", CHAT, chat(n=2 ** 64), param="n"),
    Case("chat: temperature -1", "POST", CHAT, chat(temperature=-1), param="temperature"),
    Case("chat: temperature 1e308", "POST", CHAT,
         b'{"model":"smollm2-135m-instruct","messages":[{"role":"user","content":"hi"}],"temperature":1e308}',
         JSON_CT, param="temperature"),
    Case("chat: temperature a string", "POST", CHAT, chat(temperature="hot"), param="temperature"),
    Case("chat: top_p -0.1", "POST", CHAT, chat(top_p=-0.1), param="top_p"),
    Case("chat: top_p 1.5", "POST", CHAT, chat(top_p=1.5), param="top_p"),
    Case("chat: max_tokens -1", "POST", CHAT, chat(max_tokens=-1), param="max_tokens"),
    Case("chat: max_tokens 0", "POST", CHAT, chat(max_tokens=0), param="max_tokens"),
    Case("chat: max_tokens 2**64", "POST", CHAT, chat(max_tokens=2 ** 64), param="max_tokens"),
    Case("chat: max_tokens 1e308", "POST", CHAT,
         b'{"model":"smollm2-135m-instruct","messages":[{"role":"user","content":"hi"}],"max_tokens":1e308}',
         JSON_CT, param="max_tokens"),
    Case("chat: max_tokens a string", "POST", CHAT, chat(max_tokens="8"), param="max_tokens"),
    Case("chat: max_tokens and max_completion_tokens disagree", "POST", CHAT,
         chat(max_tokens=5, max_completion_tokens=6), param="max_completion_tokens"),
    Case("chat: seed 2**64", "POST", CHAT, chat(seed=2 ** 64), param="seed"),
    Case("chat: presence_penalty 3", "POST", CHAT, chat(presence_penalty=3), param="presence_penalty"),
    Case("chat: stream a string", "POST", CHAT, chat(stream="yes"), param="stream"),
    Case("chat: stream_options without stream", "POST", CHAT, chat(stream_options={"include_usage": True}),
         param="stream_options"),
    Case("chat: logit_bias beyond the vocabulary", "POST", CHAT, chat(logit_bias={"50256": -100}), param="logit_bias"),
    Case("chat: logit_bias not a token id", "POST", CHAT, chat(logit_bias={"the": -100}), param="logit_bias"),
    Case("chat: tool_choice names no tool", "POST", CHAT,
         chat(tools=[{"type": "function", "function": {"name": "f"}}],
              tool_choice={"type": "function", "function": {"name": "g"}}), param="tool_choice"),
    Case("chat: tool parameters the host cannot enforce", "POST", CHAT,
         chat(tools=[{"type": "function", "function": {"name": "f", "parameters": {
             "type": "object", "properties": {"n": {"type": "integer", "multipleOf": 5}}}}}]),
         param="tools"),
    Case("chat: response_format json_object, no 'json' in the messages", "POST", CHAT,
         chat(response_format={"type": "json_object"}), param="messages"),
    Case("chat: response_format yaml", "POST", CHAT, chat(response_format={"type": "yaml"}),
         param="response_format.type"),
    Case("chat: unknown model", "POST", CHAT, chat(model="no-such-model"), status=404, param="model"),
    # --- rows that need the chat models' metadata -------------------------------------
    Case("chat: base model has no chat template", "POST", CHAT, chat(model=GEMMA), needs=(GEMMA,)),
    Case("chat: max_tokens beyond the context", "POST", CHAT, chat(max_tokens=100_000), needs=(SMOL,)),
    Case("chat: 5,000 messages (prompt beyond the context)", "POST", CHAT,
         chat(messages=[{"role": "user", "content": f"message number {i}"} for i in range(5000)], max_tokens=8),
         needs=(SMOL,)),
    Case("completions: token id out of vocabulary", "POST", COMP, comp(prompt=[1, 2, 999_999_999]),
         needs=(SMOL,)),
    # --- /v1/completions -----------------------------------------------------------------
    Case("completions: prompt missing", "POST", COMP, {"model": SMOL}, param="prompt"),
    Case("completions: prompt a number", "POST", COMP, comp(prompt=5), param="prompt"),
    Case("completions: prompt an empty array", "POST", COMP, comp(prompt=[]), param="prompt"),
    Case("completions: token id -1", "POST", COMP, comp(prompt=[1, -1]), param="prompt"),
    Case("completions: echo not a boolean", "POST", COMP, comp(echo="yes"), param="echo"),
    Case("completions: max_tokens 0 without echo", "POST", COMP, comp(max_tokens=0), param="max_tokens"),
    Case("completions: best_of below n", "POST", COMP, comp(best_of=2, n=3), param="best_of"),
    Case("completions: best_of streamed", "POST", COMP, comp(best_of=2, stream=True), param="best_of"),
    Case("completions: max_tokens -5", "POST", COMP, comp(max_tokens=-5), param="max_tokens"),
    Case("completions: unknown field", "POST", COMP, comp(frobnicate=1), param="frobnicate"),
    # --- scoring, stored responses, tokenize ---------------------------------------------
    Case("completions: echo + logprobs on an embedding model", "POST", COMP,
         {"model": "all-MiniLM-L6-v2", "prompt": "x", "echo": True, "logprobs": 1, "max_tokens": 0}, param="model"),
    Case("completions: echo + logprobs 6", "POST", COMP, comp(echo=True, logprobs=6, max_tokens=0), param="logprobs"),
    Case("completions: echo of an out-of-vocabulary token", "POST", COMP,
         comp(prompt=[1, 999_999_999], echo=True, logprobs=1, max_tokens=0), needs=(SMOL,)),
    Case("completions: best_of 0", "POST", COMP, comp(best_of=0), param="best_of"),
    Case("completions: best_of 17", "POST", COMP, comp(best_of=17), param="best_of"),
    Case("responses: previous_response_id a number", "POST", "/v1/responses",
         {"model": SMOL, "input": "Hi", "previous_response_id": 5}, param="previous_response_id"),
    Case("responses: previous_response_id unknown", "POST", "/v1/responses",
         {"model": SMOL, "input": "Hi", "previous_response_id": "resp_" + "x" * 5000}, status=404,
         param="previous_response_id"),
    Case("responses: store a string", "POST", "/v1/responses", {"model": SMOL, "input": "Hi", "store": "yes"},
         param="store"),
    Case("responses: GET an unknown id", "GET", "/v1/responses/resp_doesnotexist", status=404),
    Case("responses: GET a path-traversal id", "GET", "/v1/responses/..%2f..%2fadmin", status=404),
    Case("responses: GET a 10k-character id", "GET", "/v1/responses/" + "r" * 10_000, status=404),
    Case("responses: DELETE an unknown id", "DELETE", "/v1/responses/resp_doesnotexist", status=404),
    Case("responses: POST to a stored id", "POST", "/v1/responses/resp_x", {}, status=405),
    Case("responses: input_items of an unknown id", "GET", "/v1/responses/resp_nope/input_items", status=404),
    Case("chat store: store a string", "POST", CHAT, chat(store="yes"), param="store"),
    Case("chat store: metadata with a number", "POST", CHAT, chat(metadata={"k": 1}), param="metadata.k"),
    Case("chat store: 17 metadata pairs", "POST", CHAT, chat(metadata={f"k{i}": "v" for i in range(17)}),
         param="metadata"),
    Case("chat store: GET an unknown id", "GET", CHAT + "/chatcmpl-doesnotexist", status=404),
    Case("chat store: GET a path-traversal id", "GET", CHAT + "/..%2f..%2fadmin", status=404),
    Case("chat store: GET a 10k-character id", "GET", CHAT + "/" + "c" * 10_000, status=404),
    Case("chat store: DELETE an unknown id", "DELETE", CHAT + "/chatcmpl-doesnotexist", status=404),
    Case("chat store: PUT a stored id", "PUT", CHAT + "/chatcmpl-x", {}, status=405),
    Case("chat store: update without metadata", "POST", CHAT + "/chatcmpl-x", {}, param="metadata"),
    Case("chat store: update with metadata a list", "POST", CHAT + "/chatcmpl-x", {"metadata": []},
         param="metadata"),
    Case("chat store: messages of an unknown id", "GET", CHAT + "/chatcmpl-nope/messages", status=404),
    Case("chat store: list limit 1000", "GET", CHAT + "?limit=1000", param="limit"),
    Case("chat store: list with a bad percent escape", "GET", CHAT + "?model=%ff%fe"),
    Case("chat store: list with an unknown filter", "GET", CHAT + "?colour=red", param="colour"),
    Case("conversations: not JSON", "POST", "/v1/conversations", b"conv", JSON_CT),
    Case("conversations: items not an array", "POST", "/v1/conversations", {"items": "hi"}, param="items"),
    Case("conversations: 21 items", "POST", "/v1/conversations",
         {"items": [{"role": "user", "content": "x"}] * 21}, param="items"),
    Case("conversations: an item without content", "POST", "/v1/conversations", {"items": [{"role": "user"}]},
         param="items[0].content"),
    Case("conversations: GET an unknown id", "GET", "/v1/conversations/conv_doesnotexist", status=404),
    Case("conversations: GET a path-traversal id", "GET", "/v1/conversations/..%2f..%2fadmin", status=404),
    Case("conversations: GET a 10k-character id", "GET", "/v1/conversations/" + "c" * 10_000, status=404),
    Case("conversations: DELETE an unknown id", "DELETE", "/v1/conversations/conv_doesnotexist", status=404),
    Case("conversations: items of an unknown id", "GET", "/v1/conversations/conv_nope/items", status=404),
    Case("conversations: an item of an unknown id", "DELETE", "/v1/conversations/conv_nope/items/msg_x",
         status=404),
    Case("conversations: GET the collection", "GET", "/v1/conversations", status=405),
    Case("responses: conversation unknown", "POST", "/v1/responses",
         {"model": SMOL, "input": "Hi", "conversation": "conv_" + "x" * 5000}, status=404, param="conversation"),
    Case("responses: conversation a list", "POST", "/v1/responses",
         {"model": SMOL, "input": "Hi", "conversation": ["conv_x"]}, param="conversation"),
    Case("rerank: not JSON", "POST", "/v1/rerank", b"rr", JSON_CT),
    Case("rerank: documents a string", "POST", "/v1/rerank", {"model": MINILM, "query": "q", "documents": "d"},
         param="documents"),
    Case("rerank: 10k documents", "POST", "/v1/rerank", {"model": MINILM, "query": "q", "documents": ["d"] * 10_000},
         param="documents"),
    Case("rerank: a null document", "POST", "/v1/rerank", {"model": MINILM, "query": "q", "documents": [None]},
         param="documents[0]"),
    Case("rerank: top_n negative", "POST", "/v1/rerank", {"model": MINILM, "query": "q", "documents": ["d"],
                                                          "top_n": -1}, param="top_n"),
    Case("rerank: a chat model", "POST", "/v1/rerank", {"model": SMOL, "query": "q", "documents": ["d"]},
         param="model", needs=(SMOL,)),
    Case("score: no text_2", "POST", "/v1/score", {"model": MINILM, "text_1": "a"}, param="text_2"),
    Case("score: lists of different lengths", "POST", "/v1/score", {"model": MINILM, "text_1": ["a", "b"],
                                                                     "text_2": ["c"]}, param="text_2"),
    Case("score: GET", "GET", "/v1/score", status=405),
    Case("tokenize: not JSON", "POST", "/v1/tokenize", b"tok", JSON_CT),
    Case("tokenize: no model", "POST", "/v1/tokenize", {"prompt": "x"}, param="model"),
    Case("tokenize: prompt and messages", "POST", "/v1/tokenize",
         {"model": SMOL, "prompt": "x", "messages": [{"role": "user", "content": "x"}]}, param="messages"),
    Case("tokenize: messages not an array", "POST", "/v1/tokenize", {"model": SMOL, "messages": "hi"},
         param="messages"),
    Case("detokenize: tokens a string", "POST", "/v1/detokenize", {"model": SMOL, "tokens": "1 2"}, param="tokens"),
    Case("detokenize: token 2**40", "POST", "/v1/detokenize", {"model": SMOL, "tokens": [2 ** 40]}, param="tokens"),
    Case("detokenize: token id out of vocabulary", "POST", "/v1/detokenize", {"model": SMOL, "tokens": [1, 999_999]},
         param="tokens", needs=(SMOL,)),
    Case("completions: echo of an out-of-vocabulary token id", "POST", COMP,
         comp(prompt=[1, 999_999], echo=True), param="prompt", needs=(SMOL,)),
    Case("tokenize: GET", "GET", "/v1/tokenize", status=405),
    # --- methods -----------------------------------------------------------------------
    Case("method: GET /v1/embeddings", "GET", EMB, status=405),
    Case("method: PUT /v1/chat/completions", "PUT", CHAT, chat(), status=405),
    Case("method: PATCH /v1/embeddings", "PATCH", EMB, emb(), status=405),
    Case("method: DELETE /v1/models", "DELETE", "/v1/models", status=405),
    Case("method: BREW /v1/models", "BREW", "/v1/models", status=405),
    Case("method: TRACE /", "TRACE", "/", status=405),
    Case("method: HEAD /v1/embeddings", "HEAD", EMB, status=405),
    Case("method: POST /health", "POST", "/health", b"", status=404),
    # --- paths ---------------------------------------------------------------------------
    Case("path: unknown URL", "GET", "/v1/nope", status=404),
    Case("path: double slash", "GET", "//v1/models", status=404),
    Case("path: /v1/models/../../etc/passwd", "GET", "/v1/models/../../etc/passwd", status=404, param="model"),
    Case("path: /v1/models/..%2F..%2Fetc%2Fpasswd", "GET", "/v1/models/..%2F..%2Fetc%2Fpasswd", status=404,
         param="model"),
    Case("path: /v1/models/%2e%2e%2f%2e%2e%2fadmin", "GET", "/v1/models/%2e%2e%2f%2e%2e%2fadmin", status=404),
    Case("path: /v1/../admin/tenants (no admin bypass)", "GET", "/v1/../admin/tenants", status=404),
    Case("path: model id with NUL", "GET", f"/v1/models/{MINILM}%00", status=404),
    Case("path: percent-encoded invalid UTF-8", "GET", "/v1/models/%FF%FE", status=400, param="model"),
    Case("path: bad percent escape %zz", "GET", "/v1/models/%zz", status=400, param="model"),
    Case("path: truncated percent escape", "GET", "/v1/models/abc%4", status=400, param="model"),
    Case("path: 20k-character model id", "GET", "/v1/models/" + "a" * 20_000, status=404),
    Case("path: 70k-character URI (hyper's 414)", "GET", "/v1/models/" + "a" * 70_000, status=414, shape=None),
    Case("path: query junk on an unknown URL", "GET", "/v1/nope?%%%%=%zz&&=", status=404),
    Case("path: OPTIONS *", "OPTIONS", "*", status=404),
    Case("admin: disabled without a token", "GET", "/admin/tenants", status=403),
    # --- headers -------------------------------------------------------------------------
    Case("header: garbage bearer key", "GET", "/v1/models", headers={"authorization": "Bearer !!garbage$$ == ;; \\x00"},
         status=200, shape=None),  # a public tenant serves unknown keys (OpenAI SDKs always send one)
    Case("header: Basic credentials", "GET", "/v1/models", headers={"authorization": "Basic Zm9vOmJhcg=="},
         status=200, shape=None),  # a public tenant serves unknown keys (OpenAI SDKs always send one)
    Case("header: 10k-character bearer key", "GET", "/v1/models", headers={"authorization": "Bearer " + "k" * 10_000},
         status=200, shape=None),  # a public tenant serves unknown keys (OpenAI SDKs always send one)
    Case("header: api-key garbage", "POST", EMB, emb(), {"api-key": "%%%", **JSON_CT}, status=200, shape=None),
    Case("header: 1 MB header (hyper's 431)", "GET", "/v1/models", headers={"x-big": "a" * 1_000_000}, status=431,
         shape=None),
    Case("header: 150 headers (hyper's 431)", "GET", "/v1/models",
         headers={f"x-h{i}": "v" for i in range(150)}, status=431, shape=None),
    Case("header: content-length not a number (hyper's 400)", "POST", EMB, b"{}",
         raw_head=b"POST /v1/embeddings HTTP/1.1\r\nhost: x\r\ncontent-length: abc\r\n", shape=None),
    Case("header: malformed chunked body", "POST", EMB, None,
         raw_head=b"POST /v1/embeddings HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n"),
    Case("header: HTTP/1.1 without Host", "GET", "/v1/models",
         raw_head=b"GET /v1/models HTTP/1.1\r\n"),
    Case("header: HTTP/1.0 without Host (valid HTTP/1.0)", "GET", "/v1/models", status=200,
         raw_head=b"GET /v1/models HTTP/1.0\r\n", http10=True, shape=None),
    Case("header: garbage request line (hyper's 400)", "GET", "/", raw_head=b"\x00\x01\x02 garbage\r\n", shape=None),
    Case("header: Content-Encoding br (not supported)", "POST", EMB, b"x", {"content-encoding": "br"},
         status=415),
    Case("header: Content-Encoding gzip, body not gzip", "POST", EMB, b"not gzip at all",
         {"content-encoding": "gzip", **JSON_CT}),
    Case("header: gzip bomb (100 MB of zeros in ~100 KB)", "POST", EMB, lambda: _gzip(bytes(100_000_000)),
         {"content-encoding": "gzip", **JSON_CT}, status=413),
    # --- /v2 (Open Inference Protocol) --------------------------------------------------
    Case("v2: empty body", "POST", V2_INFER, b"", JSON_CT),
    Case("v2: not JSON", "POST", V2_INFER, b"hello", JSON_CT),
    Case("v2: invalid UTF-8", "POST", V2_INFER, b"\xff\xfe{}", JSON_CT),
    Case("v2: 100k nested arrays", "POST", V2_INFER, lambda: deep(100_000), JSON_CT),
    Case("v2: inputs a string", "POST", V2_INFER, {"inputs": "nope"}),
    Case("v2: no inputs", "POST", V2_INFER, {"inputs": []}),
    Case("v2: unknown input name", "POST", V2_INFER,
         {"inputs": [{"name": "bogus", "shape": [1], "datatype": "INT64", "data": [1]}]}),
    Case("v2: shape needs more values", "POST", V2_INFER,
         {"inputs": [{"name": "input_ids", "shape": [1, 2], "datatype": "INT64", "data": [1]}]}),
    Case("v2: negative dimension", "POST", V2_INFER,
         {"inputs": [{"name": "input_ids", "shape": [1, -3], "datatype": "INT64", "data": [1, 2, 3]}]}),
    Case("v2: shape 2**62 x 2**62", "POST", V2_INFER,
         {"inputs": [{"name": "input_ids", "shape": [2 ** 62, 2 ** 62], "datatype": "INT64", "data": []}]}),
    Case("v2: datatype BYTES", "POST", V2_INFER,
         {"inputs": [{"name": "input_ids", "shape": [1, 1], "datatype": "BYTES", "data": ["a"]}]}),
    Case("v2: wrong datatype FP32", "POST", V2_INFER,
         {"inputs": [{"name": "input_ids", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}]}),
    Case("v2: data a string", "POST", V2_INFER,
         {"inputs": [{"name": "input_ids", "shape": [1, 1], "datatype": "INT64", "data": "abc"}]}),
    Case("v2: 1e308 in INT64", "POST", V2_INFER,
         b'{"inputs":[{"name":"input_ids","shape":[1,1],"datatype":"INT64","data":[1e308]}]}', JSON_CT),
    Case("v2: 2**64 in INT64", "POST", V2_INFER,
         {"inputs": [{"name": "input_ids", "shape": [1, 1], "datatype": "INT64", "data": [2 ** 64]}]}),
    Case("v2: unknown output", "POST", V2_INFER, {**v2_ids([101, 102]), "outputs": [{"name": "nope"}]}),
    Case("v2: header length beyond the body", "POST", V2_INFER, b'{"inputs":[]}',
         {"inference-header-content-length": "99999"}),
    Case("v2: binary_data_size 2**64-1", "POST", V2_INFER, _bin_huge[0], _bin_huge[1]),
    Case("v2: binary data not a multiple of 8 bytes", "POST", V2_INFER, _bin_odd[0], _bin_odd[1]),
    Case("v2: token id out of vocabulary", "POST", V2_INFER, v2_ids([101, 99_999_999, 102])),
    Case("v2: 600 tokens (model has 512 positions)", "POST", V2_INFER, v2_ids([101] + [1000] * 598 + [102]),),
    Case("v2: attention_mask longer than input_ids", "POST", V2_INFER, v2_ids([101, 1000, 102], mask=[1, 1, 1, 1]),),
    Case("v2: token_type_id 5 (model has 2)", "POST", V2_INFER, v2_ids([101, 1000, 102], types=[5, 5, 5]),),
    Case("v2: unknown model", "POST", "/v2/models/nope/infer", v2_ids([101, 102]), status=404),
    Case("v2: model name %2e%2e", "POST", "/v2/models/%2e%2e/infer", v2_ids([101, 102]), status=404),
    Case("v2: unknown endpoint", "POST", f"/v2/models/{MINILM}/infer/extra", {"inputs": []}, status=404),
    Case("v2: GET infer", "GET", V2_INFER, status=404),
    Case("v2: DELETE a model", "DELETE", f"/v2/models/{MINILM}", status=404),
]
