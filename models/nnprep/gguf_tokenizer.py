"""tokenizer.json (Hugging Face `tokenizers`) rebuilt from a GGUF file's tokenizer metadata.

  gpt2  (byte-level BPE, e.g. SmolLM2): vocabulary + merges as stored; ByteLevel pre-tokenizer,
        preceded by single-digit splitting for the StarCoder-family pre-tokenizers ("smollm", ...),
        as llama.cpp and the original tokenizer.json do. No BOS added (add_bos_token false).
  llama (SentencePiece BPE, e.g. Gemma): the GGUF has no merges; they are rebuilt from the
        vocabulary, ranked by token position (Gemma's scores do not follow its merge order), the
        way transformers' GGUF loader does. Tokens made only of spaces are stored as real spaces and
        are respelled with "▁". Byte fallback, no prefix space (add_space_prefix false), spaces -> "▁".
        A TemplateProcessing post-processor adds BOS when the GGUF says add_bos_token (as Gemma's
        original tokenizer.json does).
Token types: CONTROL (3) -> special added tokens; USER_DEFINED (4) -> non-special added tokens
(matched whole, e.g. Gemma's "\n\n" and "<start_of_image>").
"""
from __future__ import annotations

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from .errors import PrepError

CONTROL, USER_DEFINED = 3, 4
_DIGIT_SPLIT_PRE = {"smollm", "starcoder", "refact", "codeshell", "command-r", "exaone", "minerva-7b"}
_PLAIN_BYTE_LEVEL_PRE = {"gpt-2", "gpt2", "default", "phi-2", "jais", "gpt-neox", "olmo", "poro-chat", "bloom"}


def build_tokenizer(g) -> tuple[Tokenizer, dict]:
    """(tokenizer, facts) from a GGUFModel `g`; facts: bos/eos/unk/pad token strings and add_bos."""
    kind = g.get("tokenizer.ggml.model")
    tokens = g.array("tokens")
    types = g.array("token_type") or [1] * len(tokens)
    if not tokens:
        raise PrepError(f"{g.path.name}: no tokenizer.ggml.tokens in the GGUF")
    if kind == "gpt2":
        tok = _byte_level(g, tokens)
        default_bos = False
    elif kind == "llama":
        tok, tokens = _sentencepiece_bpe(g, tokens, types)
        default_bos = True
    else:
        raise PrepError(f"{g.path.name}: tokenizer model '{kind}' is not supported (gpt2, llama)")

    control = [AddedToken(t, special=True, normalized=False) for t, ty in zip(tokens, types) if ty == CONTROL]
    user = [AddedToken(t, special=False, normalized=False) for t, ty in zip(tokens, types) if ty == USER_DEFINED]
    tok.add_special_tokens(control)
    if user:
        tok.add_tokens(user)

    def token(key: str) -> str | None:
        i = g.get(f"tokenizer.ggml.{key}")
        return tokens[i] if i is not None and 0 <= i < len(tokens) else None

    add_bos = bool(g.get("tokenizer.ggml.add_bos_token", default_bos))
    bos = token("bos_token_id")
    if add_bos and bos is not None:
        bos_id = g.get("tokenizer.ggml.bos_token_id")
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1", special_tokens=[(bos, bos_id)])
    if tok.get_vocab_size(with_added_tokens=True) != len(tokens):
        raise PrepError(f"{g.path.name}: rebuilt tokenizer has {tok.get_vocab_size(True)} tokens, GGUF {len(tokens)}")
    facts = {"bos_token": bos, "eos_token": token("eos_token_id"), "unk_token": token("unknown_token_id"),
             "pad_token": token("padding_token_id"), "add_bos_token": add_bos,
             "add_eos_token": bool(g.get("tokenizer.ggml.add_eos_token", False))}
    return tok, facts


def _byte_level(g, tokens: list[str]) -> Tokenizer:
    merges = g.array("merges")
    if not merges:
        raise PrepError(f"{g.path.name}: a gpt2 (byte-level BPE) tokenizer needs tokenizer.ggml.merges")
    pre = g.get("tokenizer.ggml.pre", "default")
    if pre not in _DIGIT_SPLIT_PRE | _PLAIN_BYTE_LEVEL_PRE:
        raise PrepError(f"{g.path.name}: byte-level pre-tokenizer '{pre}' is not supported")
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[tuple(m.split(" ", 1)) for m in merges],
                               dropout=None, fuse_unk=False, byte_fallback=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=bool(g.get("tokenizer.ggml.add_space_prefix", False)),
                                          trim_offsets=True, use_regex=True)
    tok.pre_tokenizer = (pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
                         if pre in _DIGIT_SPLIT_PRE else byte_level)
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def _sentencepiece_bpe(g, tokens: list[str], types: list[int]) -> tuple[Tokenizer, list[str]]:
    if g.get("tokenizer.ggml.add_space_prefix", False):
        raise PrepError(f"{g.path.name}: SentencePiece with add_space_prefix is not supported yet")
    # tokens of only spaces are stored as spaces; the model's text has "▁" for a space
    tokens = ["\u2581" * len(t) if t and set(t) == {" "} else t for t in tokens]
    vocab: dict[str, int] = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)
    if len(vocab) != len(tokens):
        raise PrepError(f"{g.path.name}: duplicate tokens in the GGUF vocabulary")
    tok = Tokenizer(models.BPE(vocab=vocab, merges=_merges_by_rank(tokens, vocab), unk_token=tokens[
        g.get("tokenizer.ggml.unknown_token_id", 0)], fuse_unk=True, byte_fallback=True, dropout=None))
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(" "), behavior="merged_with_previous", invert=False)
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    return tok, tokens


def _merges_by_rank(tokens: list[str], vocab: dict[str, int]) -> list[tuple[str, str]]:
    """Every split (a, b) of a token into two vocabulary tokens, best first: by the merged token's
    position, then longer left piece, longer right piece, ids (transformers' generate_merges order)."""
    merges = []
    for i, t in enumerate(tokens):
        for j in range(1, len(t)):
            a, b = t[:j], t[j:]
            ia, ib = vocab.get(a), vocab.get(b)
            if ia is not None and ib is not None:
                merges.append((i, -len(a), -len(b), ia, ib, a, b))
    merges.sort()
    return [(m[5], m[6]) for m in merges]
