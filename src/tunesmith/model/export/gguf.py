"""GGUF for Llama-family models, written with the `gguf` package, and read back with
transformers' own GGUF loader for the parity check.

The tensor names come from gguf's TensorNameMap; what is written by hand here is what
a converter must decide itself: which configurations GGUF's "llama" architecture can
express exactly, the q/k row order llama.cpp expects, which tensors are quantised, and
the tokenizer metadata read from the tokenizer tunesmith trained with.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.model.export.errors import ExportError

FILE_TYPES = {"f32": 0, "f16": 1, "q8_0": 7, "bf16": 32}   # gguf.LlamaFileType values
TOKEN_NORMAL, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED = 1, 3, 4, 5


def write_gguf(model: Any, tokenizer: Any, path: Path, dtype: str, name: str) -> None:
    """Write `model` (a merged, float32 Llama) and its tokenizer as one GGUF file."""
    import gguf

    config = model.config
    _check_architecture(config)
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    writer = gguf.GGUFWriter(path, arch="llama")
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(head_dim)
    if head_dim * heads != config.hidden_size:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    writer.add_rope_freq_base(float(_rope(config).get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(FILE_TYPES[dtype])
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _add_tokenizer(writer, tokenizer, config.vocab_size)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    tied = getattr(config, "tie_word_embeddings", False)
    for hf_name, tensor in model.state_dict().items():
        if hf_name == "lm_head.weight" and tied:
            continue
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ExportError(f"GGUF has no place for the tensor {hf_name}",
                              fix="export with --format merged; GGUF export covers plain Llama models")
        data = tensor.detach().float().cpu().numpy()
        if hf_name.endswith("q_proj.weight"):
            data = _permute(data, heads, heads)
        elif hf_name.endswith("k_proj.weight"):
            data = _permute(data, heads, kv_heads)
        data, qtype = _encode(data, dtype)
        writer.add_tensor(gguf_name, data, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def load_gguf_with_transformers(path: Path) -> tuple[Any, Any]:
    """The GGUF file as transformers runs it (dequantised to float32), with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    except Exception as exc:  # transformers raises many types; the user needs one message
        raise ExportError(f"transformers cannot load {path}: {exc}", where=str(path)) from exc
    return model.eval(), tokenizer


def _check_architecture(config: Any) -> None:
    problems = []
    if config.model_type != "llama":
        problems.append(f"model_type is {config.model_type!r}")
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        problems.append("it has attention or MLP biases")
    if _rope(config).get("rope_type", "default") != "default":
        problems.append(f"it uses {_rope(config)['rope_type']!r} RoPE scaling")
    if getattr(config, "hidden_act", "silu") != "silu":
        problems.append(f"its activation is {config.hidden_act!r}")
    if problems:
        raise ExportError("GGUF export covers plain Llama-architecture models, and " + "; ".join(problems),
                          where="--format gguf", fix="export with --format merged and convert that folder "
                          "with llama.cpp's convert_hf_to_gguf.py")


def _rope(config: Any) -> dict[str, Any]:
    return dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})


def _permute(weights: np.ndarray, heads: int, kv_heads: int) -> np.ndarray:
    """llama.cpp applies RoPE to interleaved pairs, Hugging Face Llama to two halves of each
    head: reorder the rows of q and k the way llama.cpp's converter does."""
    if kv_heads != heads:
        heads = kv_heads
    return (weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _encode(data: np.ndarray, dtype: str) -> tuple[np.ndarray, Any]:
    """Norms and other 1-D tensors stay float32 (as in llama.cpp); matrices take the export dtype.
    q8_0 needs rows in blocks of 32; a matrix whose rows are not falls back to f16."""
    from gguf import GGMLQuantizationType as Q
    from gguf import quants

    if data.ndim == 1 or dtype == "f32":
        return data.astype(np.float32), None
    if dtype == "q8_0" and data.shape[-1] % 32 == 0:
        return quants.quantize(data, Q.Q8_0), Q.Q8_0
    if dtype == "bf16":
        return quants.quantize(data, Q.BF16), Q.BF16
    return data.astype(np.float16), None


def _add_tokenizer(writer: Any, tokenizer: Any, vocab_size: int) -> None:
    """Byte-level BPE tokenizers (GPT-2 style, as most Llama-family chat models use)."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or spec.get("normalizer") or not _is_byte_level(spec.get("pre_tokenizer")):
        raise ExportError("GGUF export supports byte-level BPE tokenizers (GPT-2, Llama 3, Qwen style); "
                          f"this one is {model.get('type')} with pre-tokenizer "
                          f"{(spec.get('pre_tokenizer') or {}).get('type')}",
                          where="--format gguf", fix="export with --format merged")
    pre = _pre_tokenizer_name(spec["pre_tokenizer"])
    added = {t["id"]: t for t in spec.get("added_tokens", [])}
    by_id = {i: t for t, i in tokenizer.backend_tokenizer.get_vocab(with_added_tokens=True).items()}
    if len(by_id) > vocab_size:
        raise ExportError(f"the tokenizer has {len(by_id)} tokens but the model only {vocab_size} embeddings")
    tokens, types = [], []
    for index in range(vocab_size):
        token = by_id.get(index)
        if token is None:
            tokens.append(f"[PAD{index}]")
            types.append(TOKEN_UNUSED)
        elif index in added:
            tokens.append(token)
            types.append(TOKEN_CONTROL if added[index].get("special") else TOKEN_USER_DEFINED)
        else:
            tokens.append(token)
            types.append(TOKEN_NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for setter, token_id in ((writer.add_bos_token_id, tokenizer.bos_token_id),
                             (writer.add_eos_token_id, tokenizer.eos_token_id),
                             (writer.add_unk_token_id, tokenizer.unk_token_id),
                             (writer.add_pad_token_id, tokenizer.pad_token_id)):
        if token_id is not None:
            setter(token_id)
    # tunesmith trains on the chat template's text tokenized without added special tokens,
    # so a runtime must not add a BOS the template did not write.
    writer.add_add_bos_token(False)
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)


def _is_byte_level(pre: dict[str, Any] | None) -> bool:
    if not pre:
        return False
    parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    return any(p.get("type") == "ByteLevel" for p in parts)


def _pre_tokenizer_name(pre: dict[str, Any]) -> str:
    """llama.cpp's name (tokenizer.ggml.pre) for how text is split before BPE merges."""
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt2"
    parts = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else []
    if (len(parts) == 2 and parts[0].get("type") == "Split" and parts[1].get("type") == "ByteLevel"
            and not parts[1].get("use_regex", True)):
        try:  # the splits transformers' GGUF loader knows by name, so the parity check can rebuild them
            from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS
        except ImportError:
            GGUF_PRE_TOKENIZER_SPLITS = {}
        regex = (parts[0].get("pattern") or {}).get("Regex")
        preferred = ("llama-bpe", "qwen2", "gpt-4o", "tekken")
        for name in (*preferred, *GGUF_PRE_TOKENIZER_SPLITS):
            if GGUF_PRE_TOKENIZER_SPLITS.get(name) == regex:
                return name
    raise ExportError("the tokenizer splits text in a way tunesmith cannot name for GGUF runtimes: "
                      + json.dumps(pre)[:200], where="--format gguf", fix="export with --format merged")
