"""Device and dtype choice: the one place that decides where tensors live and in what precision.

Training, evaluation and the server ask here, so a run and the model serving it agree. A leaf
module: it imports torch and tunesmith.errors only.
"""

from __future__ import annotations

import torch

from tunesmith.errors import RecipeError


def pick_device(requested: str) -> torch.device:
    """`auto`: CUDA, then Apple MPS, then CPU. An explicit device that is absent is an error."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise RecipeError("device cuda asked for, but no CUDA GPU is visible", where="training.device")
    return torch.device(requested)


def pick_dtype(requested: str, device: torch.device) -> torch.dtype:
    """`auto`: bf16 on a CUDA GPU that supports it, fp32 elsewhere."""
    if requested == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return getattr(torch, requested)
