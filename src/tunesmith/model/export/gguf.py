"""GGUF for the model families tunesmith trains, written with the `gguf` package, the way
llama.cpp's architectures expect them.

Names and constants come from the `gguf` package (MODEL_ARCH, TensorNameMap, the writer's
keys, the quantizers). What is decided here is what a converter must decide itself: which
Hugging Face configurations a GGUF architecture can express exactly (family.py), how each
family's tensors are transformed for llama.cpp (Llama's q/k row order, Gemma's norm +1),
which tensors are quantised, and the tokenizer metadata (gguf_vocab.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.model.export.errors import ExportError
from tunesmith.model.export.family import Family, family_for
from tunesmith.model.export.gguf_vocab import add_tokenizer

DTYPES = ("f32", "f16", "bf16", "q8_0", "q4_0")


def write_gguf(model: Any, tokenizer: Any, path: Path, dtype: str, name: str) -> Family:
    """Write `model` (merged, float32) and its tokenizer as one GGUF file; returns its family."""
    import gguf

    config = model.config
    family = family_for(config)                 # raises ExportError naming what GGUF cannot express
    writer = gguf.GGUFWriter(path, arch=gguf.MODEL_ARCH_NAMES[family.arch])
    try:
        writer.add_name(name)
        family.add_hparams(writer, config)
        writer.add_vocab_size(config.vocab_size)
        writer.add_file_type(_file_type(dtype))
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        add_tokenizer(writer, tokenizer, config.vocab_size)
        names = gguf.get_tensor_name_map(family.arch, config.num_hidden_layers)
        tied = bool(getattr(config, "tie_word_embeddings", False))
        for hf_name, tensor in model.state_dict().items():
            if hf_name == "lm_head.weight" and tied:
                continue                         # llama.cpp uses token_embd when output is absent
            gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
            if gguf_name is None:
                raise ExportError(f"GGUF's {family.arch.name.lower()} architecture has no place for the "
                                  f"tensor {hf_name}", where="--format gguf",
                                  fix="export with --format merged")
            data = family.transform(hf_name, tensor.detach().float().cpu().numpy(), config)
            data, qtype = _encode(data, dtype, gguf_name)
            writer.add_tensor(gguf_name, data, raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return family


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


def _file_type(dtype: str) -> Any:
    from gguf import LlamaFileType

    return {"f32": LlamaFileType.ALL_F32, "f16": LlamaFileType.MOSTLY_F16, "bf16": LlamaFileType.MOSTLY_BF16,
            "q8_0": LlamaFileType.MOSTLY_Q8_0, "q4_0": LlamaFileType.MOSTLY_Q4_0}[dtype]


def _encode(data: np.ndarray, dtype: str, gguf_name: str) -> tuple[np.ndarray, Any]:
    """Norms, biases and other 1-D tensors stay float32 (as in llama.cpp); matrices take the
    export dtype. Block quantisation needs rows in blocks of 32: a matrix whose rows are not
    is stored f16. At q4_0 the embedding and output matrices are kept at q8_0, as llama.cpp's
    own quantizer keeps them above 4 bits: they carry every token's logits."""
    from gguf import GGMLQuantizationType as Q
    from gguf import quants

    if data.ndim == 1 or dtype == "f32":
        return data.astype(np.float32), None
    if dtype == "bf16":
        return quants.quantize(data, Q.BF16), Q.BF16
    if dtype in ("q8_0", "q4_0") and data.shape[-1] % 32 == 0:
        vocabulary_matrix = gguf_name.split(".")[0] in ("token_embd", "output")
        qtype = Q.Q4_0 if dtype == "q4_0" and not vocabulary_matrix else Q.Q8_0
        return quants.quantize(data, qtype), qtype
    return data.astype(np.float16), None
