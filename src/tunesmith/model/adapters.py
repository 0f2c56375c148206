"""Adapters: LoRA and DoRA through PEFT, or full fine-tuning, plus frozen layers.

Saving uses PEFT's own layout (adapter_config.json + adapter_model.safetensors) or a
standard Hugging Face folder, so the result loads anywhere without tunesmith.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tunesmith.errors import RecipeError
from tunesmith.recipe import AdapterConfig


def causal_lm(model: torch.nn.Module) -> Any:
    """The underlying transformers causal LM, also when wrapped by PEFT."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def decoder_layers(model: torch.nn.Module) -> Any:
    layers = getattr(causal_lm(model).get_decoder(), "layers", None)
    if layers is None:
        raise RecipeError("this architecture does not expose decoder layers to freeze",
                          where="adapter.freeze_layers")
    return layers


def _check_layers(model: torch.nn.Module, frozen: list[int]) -> int:
    count = len(decoder_layers(model)) if frozen else model.config.num_hidden_layers
    bad = [i for i in frozen if not 0 <= i < count]
    if bad:
        raise RecipeError(f"layers {bad} do not exist; the model has layers 0..{count - 1}",
                          where="adapter.freeze_layers")
    return count


def apply_adapter(model: torch.nn.Module, config: AdapterConfig) -> torch.nn.Module:
    """Return the model ready to train: wrapped by PEFT, or with all weights trainable."""
    layer_count = _check_layers(model, config.freeze_layers)
    if config.kind == "full":
        if config.init_from:
            raise RecipeError("init_from starts an adapter; full fine-tuning starts from base_model",
                              where="adapter.init_from", fix="set base_model to the model's folder instead")
        model.requires_grad_(True)
        if config.freeze_layers:
            layers = decoder_layers(model)
            for index in config.freeze_layers:
                layers[index].requires_grad_(False)
        return model

    from peft import LoraConfig, get_peft_model

    trained_layers = [i for i in range(layer_count) if i not in set(config.freeze_layers)]
    lora = LoraConfig(
        r=config.rank,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=config.target_modules,
        use_dora=config.kind == "dora",
        layers_to_transform=trained_layers if config.freeze_layers else None,
        # SEQ_CLS makes PEFT train and save the new scalar head of a reward model in full.
        task_type="SEQ_CLS" if is_score_model(model) else "CAUSAL_LM",
    )
    wrapped = get_peft_model(model, lora)
    if config.init_from:
        _load_adapter_weights(wrapped, Path(config.init_from))
    return wrapped


def compute_lora_in_base_dtype(model: torch.nn.Module) -> int:
    """Over a bf16 or fp16 base, the LoRA layers compute their products in the base's dtype,
    their fp32 weights cast per call; returns how many layers do.

    PEFT instead casts each layer's input to the adapter's fp32 and the sum back to the base's
    dtype: two activation-sized copies per layer and direction, and products in fp32 on a chip
    whose speed is bf16 (16-23 % of a SmolLM2 LoRA step on an AVX512-BF16 CPU, bench/README.md).
    The adapter's weights, their gradients (the casts' backward) and AdamW's state stay fp32,
    so no update is rounded away; only the products are in the dtype the base computes in, as
    under autocast. Written here because PEFT has no such mode. Applies to plain LoRA layers
    (not DoRA) with one active adapter; anything else (adapter off, merged, a mixed-adapter
    batch) takes PEFT's own forward."""
    import types

    from peft.tuners.lora.layer import Linear as LoraLinear

    count = 0
    for module in model.modules():
        if (isinstance(module, LoraLinear) and not module.lora_variant
                and module.get_base_layer().weight.dtype in (torch.bfloat16, torch.float16)):
            module.forward = types.MethodType(_lora_in_base_dtype, module)
            count += 1
    return count


def _lora_in_base_dtype(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    active = self.active_adapters
    if (self.disable_adapters or self.merged or kwargs.get("adapter_names") is not None
            or len(active) != 1 or active[0] not in self.lora_A or x.dtype == torch.float32
            or self.lora_B[active[0]].bias is not None):
        return type(self).forward(self, x, *args, **kwargs)
    name = active[0]
    down = torch.nn.functional.linear(self.lora_dropout[name](x), self.lora_A[name].weight.to(x.dtype))
    up = (self.lora_B[name].weight * self.scaling[name]).to(x.dtype)
    return self.base_layer(x, *args, **kwargs) + torch.nn.functional.linear(down, up)


def _load_adapter_weights(model: torch.nn.Module, folder: Path) -> None:
    """Start from a trained adapter of the same shape (retraining from a model's weights)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    file = folder / "adapter_model.safetensors"
    if not file.exists():
        raise RecipeError(f"no PEFT adapter to start from at {folder}", where="adapter.init_from",
                          fix="point it at a run's final/ folder trained with LoRA or DoRA")
    result = set_peft_model_state_dict(model, load_file(file))
    # PEFT reports trainable adapter tensors the file did not fill: a different rank or targets.
    unfilled = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
    if unfilled:
        raise RecipeError(f"the adapter at {folder} does not match this recipe's adapter "
                          f"({len(unfilled)} tensors not filled, e.g. {unfilled[0]})",
                          where="adapter.init_from", fix="keep the adapter's rank and target_modules")


def untrained_experts_note(model: torch.nn.Module) -> str | None:
    """A note when a mixture-of-experts model's routed expert weights are all left frozen by
    the adapter (PEFT's LoRA wraps Linear layers; fused expert tensors such as Qwen2-MoE's
    `experts.gate_up_proj` are not Linear layers, so `all-linear` skips them). None otherwise."""
    experts = [name for name, _ in model.named_parameters() if ".experts." in name]
    if not experts or any(".experts." in name for name, p in model.named_parameters() if p.requires_grad):
        return None
    example = experts[0].removeprefix("base_model.model.")
    return (f"the adapter leaves all {len(experts)} routed-expert weights of this mixture-of-experts "
            f"model frozen (e.g. {example}): only attention, shared experts and routers are trained. "
            "To adapt the experts, use adapter.kind: full")


def is_score_model(model: torch.nn.Module) -> bool:
    return type(model).__name__.endswith("ForSequenceClassification")


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Only what training changes: small for adapters, everything for full fine-tuning."""
    return {name: p.detach() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = [name for name, p in params.items() if p.requires_grad and name not in state]
    if missing:
        raise RecipeError(f"checkpoint lacks {len(missing)} trained tensors (e.g. {missing[0]}); "
                          "was it made with another adapter setting?", where="adapter")
    with torch.no_grad():
        for name, tensor in state.items():
            params[name].copy_(tensor)


def save_final(model: torch.nn.Module, tokenizer: Any, folder: Path) -> None:
    """The trained result: PEFT adapter layout, or a full Hugging Face model folder."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)


def is_adapter_folder(folder: Path) -> bool:
    return (folder / "adapter_config.json").exists()
