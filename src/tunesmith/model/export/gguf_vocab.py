"""The tokenizer in GGUF metadata, as llama.cpp's two tokenizer kinds read it.

* Byte-level BPE (GPT-2, Llama 3, Qwen, SmolLM): tokenizer.ggml.model "gpt2", the merges,
  and tokenizer.ggml.pre, the name of the way text is split before merging. llama.cpp
  knows each split by name only and refuses a file whose name it does not know, so the
  name is read off the tokenizer's own pre-tokenizer (llama.cpp's converter hashes the
  tokens of a test text instead; tunesmith has the pre-tokenizer itself, so it compares
  its structure with the splits below, written out from the tokenizers that use them).
* Sentencepiece-style BPE with byte fallback (Llama 2, Mistral, Gemma, Phi-3):
  tokenizer.ggml.model "llama". llama.cpp merges the adjacent pair whose result has the
  highest score, so each token's score is minus the rank of the merge that makes it,
  which reproduces the merge order; <0xXX> tokens are typed as bytes.
"""

from __future__ import annotations

import json
from typing import Any

from tunesmith.model.export.errors import ExportError

TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6
SPACE = "▁"

GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
LLAMA3_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
               r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
SPLIT_NAMES = {LLAMA3_REGEX: "llama-bpe", QWEN2_REGEX: "qwen2"}


def add_tokenizer(writer: Any, tokenizer: Any, vocab_size: int) -> str:
    """Write the tokenizer; returns its GGUF kind ("gpt2" or "llama")."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model = spec.get("model") or {}
    if model.get("type") == "BPE" and _byte_level(spec.get("pre_tokenizer")):
        kind = "gpt2"
        # Qwen's tokenizers NFC-normalise first; llama.cpp does not, which differs only for text
        # that is not already NFC (docs/export.md says so). Any other normalizer is refused.
        if spec.get("normalizer") and spec["normalizer"].get("type") != "NFC":
            raise _unsupported(f"a byte-level BPE tokenizer with a {spec['normalizer'].get('type')} "
                               "normalizer")
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(pre_tokenizer_name(spec["pre_tokenizer"]))
    elif model.get("type") == "BPE" and model.get("byte_fallback"):
        kind = "llama"
        writer.add_tokenizer_model("llama")
        writer.add_add_space_prefix(_spm_space_prefix(spec))
    else:
        raise _unsupported(f"a {model.get('type')} tokenizer" + ("" if model.get("type") != "BPE" else
                           " that is neither byte-level nor sentencepiece-style with byte fallback"))
    by_id = {i: t for t, i in tokenizer.backend_tokenizer.get_vocab(with_added_tokens=True).items()}
    if len(by_id) > vocab_size:
        raise ExportError(f"the tokenizer has {len(by_id)} tokens but the model only {vocab_size} embeddings",
                          where="--format gguf")
    added = {t["id"]: t for t in spec.get("added_tokens", [])}
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    tokens, types = [], []
    for index in range(vocab_size):
        token = by_id.get(index)
        tokens.append(token if token is not None else f"[PAD{index}]")
        types.append(_token_type(index, token, added, tokenizer.unk_token_id, kind))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    if kind == "gpt2":
        writer.add_token_merges(merges)
    else:
        writer.add_token_scores(_scores(tokens, merges))
    for setter, token_id in ((writer.add_bos_token_id, tokenizer.bos_token_id),
                             (writer.add_eos_token_id, tokenizer.eos_token_id),
                             (writer.add_unk_token_id, tokenizer.unk_token_id),
                             (writer.add_pad_token_id, tokenizer.pad_token_id)):
        if token_id is not None:
            setter(token_id)
    # tunesmith trains on the chat template's text tokenized without added special tokens,
    # so a runtime must add no BOS or EOS the template did not write.
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)
    return kind


def pre_tokenizer_name(pre: dict[str, Any]) -> str:
    """llama.cpp's name (tokenizer.ggml.pre) for how a byte-level BPE tokenizer splits text."""
    parts = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    kinds = [p.get("type") for p in parts]
    if any(p.get("type") == "ByteLevel" and p.get("add_prefix_space") for p in parts):
        raise _unsupported("a byte-level pre-tokenizer that adds a prefix space (llama.cpp's never do)")
    if kinds == ["ByteLevel"] and parts[0].get("use_regex", True):
        return "gpt-2"
    if (kinds == ["Digits", "ByteLevel"] and parts[0].get("individual_digits")
            and parts[1].get("use_regex", True)):
        return "smollm"          # SmolLM's digits one by one, then GPT-2's split
    if (kinds == ["Split", "ByteLevel"] and not parts[1].get("use_regex", True)
            and parts[0].get("behavior") == "Isolated" and not parts[0].get("invert")):
        name = SPLIT_NAMES.get((parts[0].get("pattern") or {}).get("Regex"))
        if name:
            return name
    raise ExportError("the tokenizer splits text in a way no llama.cpp pre-tokenizer known to tunesmith does "
                      f"(known: gpt-2, smollm, {', '.join(SPLIT_NAMES.values())}): " + json.dumps(pre)[:300],
                      where="--format gguf", fix="export with --format merged")


def _byte_level(pre: dict[str, Any] | None) -> bool:
    if not pre:
        return False
    parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    return any(p.get("type") == "ByteLevel" for p in parts)


def _spm_space_prefix(spec: dict[str, Any]) -> bool:
    """Whether text gets a leading ▁ (Llama 2, Mistral: yes; Gemma: no), refusing what llama.cpp's
    sentencepiece tokenizer would do differently."""
    normalizer, pre = spec.get("normalizer") or {}, spec.get("pre_tokenizer") or {}
    steps = normalizer.get("normalizers", [normalizer]) if normalizer.get("type") == "Sequence" else \
        ([normalizer] if normalizer else [])
    prefix = False
    for step in steps:
        if step.get("type") == "Prepend" and step.get("prepend") == SPACE:
            prefix = True
        elif not (step.get("type") == "Replace" and (step.get("pattern") or {}).get("String") == " "
                  and step.get("content") == SPACE):
            raise _unsupported(f"a sentencepiece-style tokenizer with a {step.get('type')} normalizer")
    if pre.get("type") == "Metaspace":
        if pre.get("replacement", SPACE) != SPACE:
            raise _unsupported("a Metaspace pre-tokenizer that does not use ▁")
        prefix = prefix or pre.get("prepend_scheme", "always") != "never"
    elif pre and not (pre.get("type") == "Split" and (pre.get("pattern") or {}).get("String") == " "):
        raise _unsupported(f"a sentencepiece-style tokenizer with a {pre.get('type')} pre-tokenizer")
    return prefix


def _token_type(index: int, token: str | None, added: dict[int, Any], unk_id: int | None, kind: str) -> int:
    if token is None:
        return TOKEN_UNUSED
    if index == unk_id and kind == "llama":
        return TOKEN_UNKNOWN
    if index in added:
        return TOKEN_CONTROL if added[index].get("special") else TOKEN_USER_DEFINED
    if kind == "llama" and len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
        return TOKEN_BYTE
    return TOKEN_NORMAL


def _scores(tokens: list[str], merges: list[str]) -> list[float]:
    """Minus the rank of the first merge that makes each token. Tokens no merge makes come last,
    so llama.cpp never builds them by merging where the trained tokenizer would not."""
    rank: dict[str, int] = {}
    for position, merge in enumerate(merges):
        left, _, right = merge.partition(" ")
        rank.setdefault(left + right, position + 1)
    last = len(merges) + 1
    return [-float(rank.get(token, last)) for token in tokens]


def _unsupported(what: str) -> ExportError:
    return ExportError(f"GGUF export cannot describe {what} to llama.cpp", where="--format gguf",
                       fix="export with --format merged")
