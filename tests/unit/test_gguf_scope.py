"""What GGUF export accepts: the families llama.cpp runs (each configuration GGUF cannot express
is refused with its reason), and tokenizers whose pre-tokenizer has a name llama.cpp knows."""

from __future__ import annotations

import pytest

from tunesmith.model.export.errors import ExportError
from tunesmith.model.export.family import family_for
from tunesmith.model.export.gguf_vocab import GPT2_REGEX, LLAMA3_REGEX, QWEN2_REGEX, pre_tokenizer_name


def split_then_bytes(regex: str) -> dict:
    return {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}


def test_pre_tokenizer_names_are_the_ones_llama_cpp_knows() -> None:
    # "gpt2" is not a llama.cpp pre-tokenizer (it refuses the file): GPT-2's split is "gpt-2".
    assert pre_tokenizer_name({"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}) == "gpt-2"
    assert pre_tokenizer_name(split_then_bytes(LLAMA3_REGEX)) == "llama-bpe"
    assert pre_tokenizer_name(split_then_bytes(QWEN2_REGEX)) == "qwen2"
    smollm = {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}
    assert pre_tokenizer_name(smollm) == "smollm"


@pytest.mark.parametrize("pre", [
    split_then_bytes(r"\d|\s+"),
    split_then_bytes(GPT2_REGEX) | {"type": "Sequence"},
    {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": False},
                                           {"type": "ByteLevel", "use_regex": True}]},
    {"type": "ByteLevel", "add_prefix_space": True, "use_regex": True},
])
def test_unknown_splits_are_refused(pre) -> None:
    with pytest.raises(ExportError, match=r"llama\.cpp"):
        pre_tokenizer_name(pre)


@pytest.mark.parametrize(("model_type", "arch"), [
    ("llama", "LLAMA"), ("mistral", "LLAMA"), ("qwen2", "QWEN2"), ("qwen3", "QWEN3"), ("phi3", "PHI3"),
    ("gemma2", "GEMMA2"), ("gemma3_text", "GEMMA3")])
def test_each_family_maps_to_its_llama_cpp_architecture(model_type, arch) -> None:
    from transformers import AutoConfig

    config = AutoConfig.for_model(model_type, num_hidden_layers=6, sliding_window=None,
                                  **({"query_pre_attn_scalar": 256} if "gemma" in model_type else {}))
    family = family_for(config)
    assert family.arch.name == arch
    assert family.permute_qk == (arch == "LLAMA")
    assert family.norm_shift == (1.0 if "gemma" in model_type else 0.0)


@pytest.mark.parametrize(("model_type", "change", "reason"), [
    ("llama", {"attention_bias": True}, "biases"),
    ("llama", {"hidden_act": "gelu"}, "activation"),
    ("llama", {"rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0,
                                   "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                   "original_max_position_embeddings": 8192}}, "RoPE"),
    ("mistral", {"sliding_window": 4096}, "sliding window of 4096"),
    ("gemma2", {"query_pre_attn_scalar": 144, "head_dim": 128}, "scales queries"),
    ("gemma3_text", {"layer_types": ["full_attention"] * 6}, "fixed pattern"),
])
def test_configurations_gguf_cannot_express_are_refused(model_type, change, reason) -> None:
    from transformers import AutoConfig

    base = {"num_hidden_layers": 6, **({"query_pre_attn_scalar": 256} if "gemma" in model_type else {})}
    family_for(AutoConfig.for_model(model_type, **base, **({"sliding_window": None}
                                                            if model_type == "mistral" else {})))
    with pytest.raises(ExportError, match=reason):
        family_for(AutoConfig.for_model(model_type, **{**base, **change}))


def test_other_architectures_are_refused() -> None:
    from transformers import AutoConfig

    with pytest.raises(ExportError, match="model_type 'gpt2'"):
        family_for(AutoConfig.for_model("gpt2"))
