"""What GGUF export accepts: plain Llama configurations and byte-level BPE tokenizers, with the
pre-tokenizer named the way llama.cpp and transformers' GGUF loader name it."""

from __future__ import annotations

import pytest

from tunesmith.model.export.errors import ExportError
from tunesmith.model.export.gguf import _check_architecture, _pre_tokenizer_name

LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def split_then_bytes(regex: str) -> dict:
    return {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}


def test_pre_tokenizer_names() -> None:
    assert _pre_tokenizer_name({"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}) == "gpt2"
    assert _pre_tokenizer_name(split_then_bytes(LLAMA3_SPLIT)) == "llama-bpe"
    with pytest.raises(ExportError, match="cannot name"):
        _pre_tokenizer_name(split_then_bytes(r"\d|\s+"))
    with pytest.raises(ExportError, match="cannot name"):
        _pre_tokenizer_name({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True}, {"type": "ByteLevel", "use_regex": True}]})


@pytest.mark.parametrize(("change", "reason"), [
    ({"attention_bias": True}, "biases"),
    ({"hidden_act": "gelu"}, "activation"),
    ({"rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0, "low_freq_factor": 1.0,
                          "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}, "RoPE"),
])
def test_configurations_gguf_cannot_express_are_refused(change, reason) -> None:
    from transformers import LlamaConfig

    _check_architecture(LlamaConfig())
    with pytest.raises(ExportError, match=reason):
        _check_architecture(LlamaConfig(**change))


def test_other_architectures_are_refused() -> None:
    from transformers import Qwen2Config

    with pytest.raises(ExportError, match="model_type is 'qwen2'"):
        _check_architecture(Qwen2Config())
