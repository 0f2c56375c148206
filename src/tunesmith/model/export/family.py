"""Which Hugging Face model families GGUF export covers, and how each one maps onto the
llama.cpp architecture that runs it.

One Family per Hugging Face `model_type`: the GGUF architecture (a gguf.MODEL_ARCH), the
configurations that architecture can express exactly (anything else is refused with the
reason, never written approximately), the hyperparameters it reads, and the tensor changes
llama.cpp's converter makes for it:

* Llama and Mistral (llama.cpp `llama`): q/k rows reordered, because llama.cpp rotates
  interleaved pairs where Hugging Face rotates two halves of each head.
* Qwen2/2.5 (`qwen2`, with q/k/v biases), Qwen3 (`qwen3`, with q/k norms), Phi-3 (`phi3`,
  its fused qkv and gate_up matrices as they are): rotated by halves, no reorder.
* Gemma-2 and Gemma-3 (`gemma2`, `gemma3`): Hugging Face stores RMSNorm weights as w - 1
  and computes x * (1 + w); llama.cpp computes x * w, so every norm weight gets + 1.
  llama.cpp scales queries by 1 / sqrt(head_dim) and fixes the sliding-window layer
  pattern (every 2nd layer global for Gemma-2, every 6th for Gemma-3, local RoPE base
  10000 for Gemma-3), so configurations that differ are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tunesmith.model.export.errors import ExportError

Problems = Callable[[Any], list[str]]
Writer = Callable[[Any, Any], None]


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    arch_name: str                        # gguf.MODEL_ARCH member name
    activation: str = "silu"
    permute_qk: bool = False
    norm_shift: float = 0.0
    biases: tuple[str, ...] = ()          # bias tensors this architecture has (q_proj, k_proj, ...)
    problems: tuple[Problems, ...] = ()
    extra: tuple[Writer, ...] = field(default_factory=tuple)

    @property
    def arch(self) -> Any:
        import gguf

        return gguf.MODEL_ARCH[self.arch_name]

    def check(self, config: Any) -> list[str]:
        found = []
        act = getattr(config, "hidden_activation", None) or getattr(config, "hidden_act", None)
        if act != self.activation:
            found.append(f"its activation is {act!r} (GGUF's {self.arch_name.lower()} runs "
                         f"{self.activation!r})")
        for rope in _rope_sets(config).values():
            if rope.get("rope_type", "default") not in ("default", "linear"):
                found.append(f"it uses {rope['rope_type']!r} RoPE scaling")
                break
        biased = getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False)
        if not self.biases and biased:
            found.append("it has attention or MLP biases")
        for check in self.problems:
            found += check(config)
        return found

    def add_hparams(self, writer: Any, config: Any) -> None:
        heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
        head_dim = _head_dim(config)
        rope = _global_rope(config)
        writer.add_context_length(config.max_position_embeddings)
        writer.add_embedding_length(config.hidden_size)
        writer.add_block_count(config.num_hidden_layers)
        writer.add_feed_forward_length(config.intermediate_size)
        writer.add_head_count(heads)
        writer.add_head_count_kv(kv_heads)
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
        rotary = rope.get("partial_rotary_factor", getattr(config, "partial_rotary_factor", 1.0))
        writer.add_rope_dimension_count(int(head_dim * rotary))
        writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))))
        if rope.get("rope_type") == "linear":
            import gguf

            writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            writer.add_rope_scaling_factor(float(rope["factor"]))
        writer.add_layer_norm_rms_eps(config.rms_norm_eps)
        for add in self.extra:
            add(writer, config)

    def transform(self, hf_name: str, data: np.ndarray, config: Any) -> np.ndarray:
        if self.permute_qk and hf_name.endswith(("q_proj.weight", "k_proj.weight")):
            heads = config.num_attention_heads if "q_proj" in hf_name else config.num_key_value_heads
            return _permute(data, heads)
        if self.norm_shift and hf_name.endswith("norm.weight"):
            return data + self.norm_shift
        return data


def family_for(config: Any) -> Family:
    """The Family for this configuration, or an ExportError that says what GGUF cannot express."""
    family = FAMILIES.get(config.model_type)
    if family is None:
        raise ExportError(f"GGUF export does not cover model_type {config.model_type!r} "
                          f"(covered: {', '.join(sorted(FAMILIES))})", where="--format gguf",
                          fix="export with --format merged and convert that folder with llama.cpp's "
                              "convert_hf_to_gguf.py")
    problems = family.check(config)
    if problems:
        raise ExportError(f"GGUF's {family.arch_name.lower()} architecture cannot express this "
                          f"{config.model_type} model exactly: " + "; ".join(problems), where="--format gguf",
                          fix="export with --format merged (exact for any configuration)")
    return family


def _head_dim(config: Any) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def _rope_sets(config: Any) -> dict[str, dict[str, Any]]:
    """RoPE parameters per layer type (Gemma-3 has one set for local and one for global layers)."""
    rope = dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})
    if rope and all(isinstance(v, dict) for v in rope.values()):
        return rope
    return {"full_attention": rope}


def _global_rope(config: Any) -> dict[str, Any]:
    sets = _rope_sets(config)
    return sets.get("full_attention") or next(iter(sets.values()))


def _permute(weights: np.ndarray, heads: int) -> np.ndarray:
    """Reorder each head's rows from two halves to interleaved pairs, as llama.cpp's converter does."""
    return (weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _no_sliding_window(config: Any) -> list[str]:
    window = getattr(config, "sliding_window", None)
    if getattr(config, "use_sliding_window", window is not None) and window is not None \
            and window < config.max_position_embeddings:
        return [f"it attends through a sliding window of {window} tokens, which GGUF's architecture for it "
                "does not apply"]
    return []


def _layer_pattern(every: int) -> Problems:
    def check(config: Any) -> list[str]:
        want = ["sliding_attention" if i % every < every - 1 else "full_attention"
                for i in range(config.num_hidden_layers)]
        got = list(getattr(config, "layer_types", None) or want)
        return [] if got == want else [f"its layer_types are not llama.cpp's fixed pattern (every {every}th "
                                       "layer global)"]
    return check


def _query_scale(config: Any) -> list[str]:
    scalar = getattr(config, "query_pre_attn_scalar", None)
    if scalar is not None and scalar != _head_dim(config):
        return [f"it scales queries by 1/sqrt({scalar}), llama.cpp by 1/sqrt(head_dim = {_head_dim(config)})"]
    return []


def _gemma3_rope(config: Any) -> list[str]:
    local = _rope_sets(config).get("sliding_attention")
    theta = (local or {}).get("rope_theta", getattr(config, "rope_local_base_freq", 10000.0))
    found = [] if float(theta) == 10000.0 else [f"its local layers use RoPE base {theta}, llama.cpp 10000"]
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "attn_logit_softcapping", None):
        found.append("it soft-caps logits, which GGUF's gemma3 architecture does not")
    return found


def _sliding_window(writer: Any, config: Any) -> None:
    if getattr(config, "sliding_window", None):
        writer.add_sliding_window(config.sliding_window)


def _softcaps(writer: Any, config: Any) -> None:
    if config.attn_logit_softcapping:
        writer.add_attn_logit_softcapping(config.attn_logit_softcapping)
    if config.final_logit_softcapping:
        writer.add_final_logit_softcapping(config.final_logit_softcapping)


FAMILIES: dict[str, Family] = {
    "llama": Family("llama", "LLAMA", permute_qk=True, problems=(_no_sliding_window,)),
    "mistral": Family("mistral", "LLAMA", permute_qk=True, problems=(_no_sliding_window,)),
    "qwen2": Family("qwen2", "QWEN2", biases=("q_proj", "k_proj", "v_proj"), problems=(_no_sliding_window,)),
    "qwen3": Family("qwen3", "QWEN3", problems=(_no_sliding_window,)),
    "phi3": Family("phi3", "PHI3", extra=(_sliding_window,)),
    "gemma2": Family("gemma2", "GEMMA2", activation="gelu_pytorch_tanh", norm_shift=1.0,
                     problems=(_query_scale, _layer_pattern(2)), extra=(_sliding_window, _softcaps)),
    "gemma3_text": Family("gemma3", "GEMMA3", activation="gelu_pytorch_tanh", norm_shift=1.0,
                          problems=(_query_scale, _layer_pattern(6), _gemma3_rope), extra=(_sliding_window,)),
}
