"""Training's optimizer: AdamW, fused into one kernel where PyTorch has it for the weights'
device, and kept fused when a checkpoint's state is loaded into it."""

from __future__ import annotations

import torch

FUSED_ADAMW_DEVICES = ("cpu", "cuda")


def adamw(params: list[torch.nn.Parameter], lr: float, weight_decay: float) -> torch.optim.AdamW:
    """Off CUDA, PyTorch's default AdamW loops over the tensors: over SmolLM2-135M's fp32
    weights on a 2-core CPU its step took 0.34-0.83 s against 0.05-0.12 s fused, a fifth of a
    full fine-tuning step (bench/README.md). The fused update matches the loop's to float
    rounding and keeps the same state (tests/unit/test_optimizer.py)."""
    fused = all(p.device.type in FUSED_ADAMW_DEVICES and p.dtype.is_floating_point for p in params)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused)


def keep_fused(optimizer: torch.optim.Optimizer) -> None:
    """After a checkpoint's state is loaded: `load_state_dict` replaces each group's settings
    with the saved ones, so a checkpoint written by an unfused AdamW would resume unfused. The
    optimizer keeps the choice it was built with; a fused step wants `step` on the weights'
    device in float32."""
    fused = bool(optimizer.defaults.get("fused"))
    for group in optimizer.param_groups:
        group["fused"] = fused
        for p in group["params"]:
            state = optimizer.state.get(p)
            if fused and state and torch.is_tensor(state.get("step")):
                state["step"] = state["step"].to(device=p.device, dtype=torch.float32)
