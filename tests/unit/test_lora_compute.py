"""LoRA over a bf16 base computes its products in bf16 (model/adapters.compute_lora_in_base_dtype):
the same outputs and adapter gradients as PEFT's fp32 path within bf16's precision, fp32
gradients for the fp32 adapter weights, and PEFT's own forward wherever the mode does not apply."""

from __future__ import annotations

import torch

from tests.unit.test_pack import tiny_llama
from tunesmith.model.adapters import apply_adapter, compute_lora_in_base_dtype
from tunesmith.recipe import AdapterConfig


def lora_model(dtype: torch.dtype) -> torch.nn.Module:
    model = apply_adapter(tiny_llama("sdpa").to(dtype), AdapterConfig(dropout=0.0)).train()
    torch.manual_seed(1)
    for name, param in model.named_parameters():
        if "lora_B" in name:  # PEFT starts B at zero, which would make any forward agree
            param.data.normal_(0, 0.5)
    return model


def loss_and_adapter_grads(model: torch.nn.Module, ids: torch.Tensor) -> tuple[torch.Tensor, dict]:
    model.zero_grad()
    logits = model(input_ids=ids).logits.float()
    loss = torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:])
    loss.backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    return float((value.float() - reference).norm() / reference.norm())


def test_bf16_products_are_as_close_to_fp32_as_peft_and_keep_fp32_adapter_gradients() -> None:
    """Against an fp32 copy of the same weights, the bf16-product forward and its adapter
    gradients are about as far off as PEFT's own bf16-base path (bf16 rounding, ~2-20 % on this
    random adapter), and the gradients reach the fp32 weights in fp32."""
    model = lora_model(torch.bfloat16)
    reference = lora_model(torch.float32)
    reference.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    ids = torch.randint(0, 96, (1, 24), generator=torch.Generator().manual_seed(0))
    exact_logits, exact_grads = loss_and_adapter_grads(reference, ids)
    peft_logits, peft_grads = loss_and_adapter_grads(model, ids)
    layers = [m for m in model.modules() if hasattr(m, "lora_A")]
    assert compute_lora_in_base_dtype(model) == len(layers) == 14  # 7 projections x 2 layers
    ours_logits, ours_grads = loss_and_adapter_grads(model, ids)
    assert not torch.equal(ours_logits, peft_logits)  # the new forward did run
    peft_error = relative_error(peft_logits, exact_logits)
    assert relative_error(ours_logits, exact_logits) <= 2 * peft_error + 0.01
    for name, grad in ours_grads.items():
        assert grad.dtype == torch.float32, name
        peft_error = relative_error(peft_grads[name], exact_grads[name])
        assert relative_error(grad, exact_grads[name]) <= 2 * peft_error + 0.02, name


def test_peft_forward_stays_where_the_mode_does_not_apply() -> None:
    fp32 = lora_model(torch.float32)
    assert compute_lora_in_base_dtype(fp32) == 0
    assert all("forward" not in m.__dict__ for m in fp32.modules() if hasattr(m, "lora_A"))

    model = lora_model(torch.bfloat16)
    ids = torch.randint(0, 96, (1, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad(), model.disable_adapter():
        base = model(input_ids=ids).logits
    compute_lora_in_base_dtype(model)
    with torch.no_grad():
        with model.disable_adapter():  # adapter off: exactly the base model
            assert torch.equal(model(input_ids=ids).logits, base)
        assert not torch.equal(model(input_ids=ids).logits, base)
