"""Device and dtype choice: the one place that decides where tensors live and in what precision.

Training, evaluation and the server ask here, so a run and the model serving it agree. A leaf
module: it imports torch and tunesmith.errors only.

On a CPU, `dtype: auto` is decided by measurement, not by a guess from the CPU's name: CPUs
of the same kind differ (AMX-BF16 or avx512_bf16 make a bf16 matmul several times faster
than fp32; without them PyTorch emulates bf16 and it is slower). A short probe times one
matmul of a training-sized shape in both dtypes, once per process, and bf16 is chosen only
where it is clearly faster.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from tunesmith.errors import RecipeError

PROBE_SHAPE = (1024, 1024, 1024)
"""(tokens, hidden, out): a micro-batch's worth of tokens through a ~1k-wide projection, the
shape of the matmuls that dominate a small model's training step."""
SCOUT_SHAPE = (256, 256, 256)
"""Timed first: where bf16 is emulated it can be 100x slower than fp32, and one bf16 matmul of
the training shape would then take seconds. If bf16 loses clearly here, the probe stops."""
SLOW_CALL_SECONDS = 0.2
"""A bf16 matmul of the training shape predicted to take longer than this (at the scout's rate)
is not timed: bf16 that slow is emulated, and the scout's figures decide."""
PROBE_SECONDS = 0.05
"""Time spent timing each dtype at each shape (after one warm-up call)."""
BF16_MARGIN = 1.25
"""bf16 must beat fp32 by this factor: a step is not all matmuls, and casts cost something."""
CPU_DTYPE_ENV = "TUNESMITH_CPU_DTYPE"
"""Where set (float32 or bfloat16), what `auto` means on a CPU, without the probe: an operator
pins one dtype on machines whose CPUs differ, and the test suite pins float32 so its exact
comparisons hold on CPUs with and without fast bf16."""

Probe = Callable[[tuple[int, int, int]], dict[str, Any]]


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


def dtype_name(dtype: torch.dtype) -> str:
    """'bfloat16' for torch.bfloat16: the name recipes and records use."""
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True, slots=True)
class DtypeChoice:
    """The dtype a run's base weights get, and why (for the run's records and the progress line)."""

    dtype: torch.dtype
    reason: str
    measured: dict[str, Any] = field(default_factory=dict)  # GFLOP/s per dtype name and shape, if probed

    @property
    def name(self) -> str:
        return dtype_name(self.dtype)

    def record(self) -> dict[str, Any]:
        """What `auto` chose, as written into run.json and the start event."""
        out: dict[str, Any] = {"dtype": self.name, "dtype_reason": self.reason}
        if self.measured:
            out["dtype_probe"] = dict(self.measured)
        return out


def _matmul_gflops(dtype: torch.dtype, shape: tuple[int, int, int]) -> float:
    m, k, n = shape
    generator = torch.Generator().manual_seed(0)  # never the global RNG: a run's seed stays exact
    a = torch.randn(m, k, generator=generator).to(dtype)
    b = torch.randn(k, n, generator=generator).to(dtype)
    out = torch.empty(m, n, dtype=dtype)
    torch.mm(a, b, out=out)  # warm-up: first-call dispatch and packing
    count, started = 0, time.perf_counter()
    while True:
        torch.mm(a, b, out=out)
        count += 1
        elapsed = time.perf_counter() - started
        if elapsed >= PROBE_SECONDS:
            return 2 * m * k * n * count / elapsed / 1e9


def _measure(shape: tuple[int, int, int]) -> dict[str, Any]:
    return {"float32": round(_matmul_gflops(torch.float32, shape), 2),
            "bfloat16": round(_matmul_gflops(torch.bfloat16, shape), 2), "shape": "x".join(map(str, shape))}


_PROBED: dict[tuple[tuple[int, int, int], int], dict[str, Any]] = {}


def probe_cpu_matmul(shape: tuple[int, int, int] = PROBE_SHAPE) -> dict[str, Any]:
    """Measured GFLOP/s of an fp32 and a bf16 matmul of `shape` on this CPU with torch's thread
    count (bf16 at the small scout shape only, where it is clearly slow there), and the shapes.
    Cached per process (per shape and thread count); well under a second."""
    key = (shape, torch.get_num_threads())
    if key not in _PROBED:
        scout = _measure(SCOUT_SHAPE)
        m, k, n = shape
        bf16_call = 2 * m * k * n / max(scout["bfloat16"], 1e-3) / 1e9  # seconds, at the scout's rate
        slow = scout["bfloat16"] * 2 < scout["float32"] or bf16_call > SLOW_CALL_SECONDS
        if slow:  # fp32 still measured at the training shape: small matmuls under-use threads
            fp32 = round(_matmul_gflops(torch.float32, shape), 2)
            _PROBED[key] = {"float32": fp32, "bfloat16": scout["bfloat16"],
                            "shape": f"fp32 {'x'.join(map(str, shape))}, bf16 {scout['shape']}"}
        else:
            _PROBED[key] = _measure(shape)
    return _PROBED[key]


def decide_cpu_dtype(measured: dict[str, Any]) -> DtypeChoice:
    """bf16 where the probe shows it at least BF16_MARGIN times faster than fp32, else fp32."""
    fp32, bf16 = measured["float32"], measured["bfloat16"]
    at = f" (matmul {measured['shape']})" if measured.get("shape") else ""
    summary = f"bf16 {bf16:.3g} GFLOP/s vs fp32 {fp32:.3g} GFLOP/s on this CPU{at}"
    if bf16 >= BF16_MARGIN * fp32:
        return DtypeChoice(torch.bfloat16, f"{summary}: bf16 is {bf16 / fp32:.1f}x faster", measured)
    return DtypeChoice(torch.float32, f"{summary}: bf16 is not at least {BF16_MARGIN}x faster", measured)


def choose_dtype(requested: str, device: torch.device, probe: Probe | None = None,
                 shape: tuple[int, int, int] = PROBE_SHAPE, full: bool = False) -> DtypeChoice:
    """`auto`: bf16 on a CUDA GPU that supports it; on a CPU, what the probe (`probe`, or the
    cached matmul timing) shows faster; fp32 elsewhere. An explicit dtype is taken as given.

    The dtype is the one the model computes in (see `training_precision` for where each part
    of training keeps its numbers). An adapter's own weights, their AdamW state and the loss
    sums stay fp32 whatever it is; under full fine-tuning (`full`) the weights and AdamW state
    stay fp32 too and a half-precision dtype is used for the compute only (autocast)."""
    if requested != "auto":
        return DtypeChoice(getattr(torch, requested), "set in the recipe")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            choice = DtypeChoice(torch.bfloat16, "CUDA GPU with bf16 support")
        else:
            return DtypeChoice(torch.float32, "CUDA GPU without bf16 support")
    elif device.type == "cpu":
        pinned = os.environ.get(CPU_DTYPE_ENV) if probe is None else None
        if pinned:
            if pinned not in ("float32", "bfloat16"):
                raise RecipeError(f"{CPU_DTYPE_ENV}={pinned!r} is not a dtype tunesmith trains in",
                                  where=CPU_DTYPE_ENV, fix="set it to float32 or bfloat16, or unset it")
            choice = DtypeChoice(getattr(torch, pinned), f"{CPU_DTYPE_ENV}={pinned} (no probe)")
        else:
            choice = decide_cpu_dtype((probe or probe_cpu_matmul)(shape))
    else:
        return DtypeChoice(torch.float32, f"fp32 on {device.type}")
    if full and choice.dtype == torch.bfloat16:
        why = f"{choice.reason}; full fine-tuning keeps fp32 weights and AdamW state, bf16 compute (autocast)"
        return DtypeChoice(choice.dtype, why, choice.measured)
    return choice


@dataclass(frozen=True, slots=True)
class Precision:
    """Where each part of a training run keeps its numbers.

    `weights`: the dtype the base model is loaded in. `compute`: the autocast dtype of forward
    passes (None: the weights' own). Trained weights (an adapter's, or all of them under full
    fine-tuning), their gradients, the AdamW moments and every loss sum are fp32 in all cases:
    PEFT keeps adapter weights fp32 over a half-precision base, and full fine-tuning with a
    half-precision dtype keeps fp32 master weights and computes under autocast, so an update
    smaller than half-precision rounding still lands."""

    weights: torch.dtype
    compute: torch.dtype | None = None

    def autocast(self, device: torch.device) -> contextlib.AbstractContextManager[Any]:
        """The context forward passes run in: autocast to `compute`, or nothing."""
        if self.compute is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.compute)

    def record(self) -> dict[str, str]:
        """For run.json: each part's dtype, by name."""
        return {"base_weights": dtype_name(self.weights), "compute": dtype_name(self.compute or self.weights),
                "trained_weights": "float32", "optimizer_state": "float32", "loss": "float32"}


def training_precision(dtype: torch.dtype, full: bool) -> Precision:
    """The run's precision for a chosen dtype. Full fine-tuning in bf16 trains fp32 master
    weights under bf16 autocast (bf16 weights would round away updates below ~0.4% of a
    weight); adapters train fp32 over a base loaded in the dtype itself. Full fine-tuning in
    float16 would also need loss scaling (float16 gradients underflow), which tunesmith does
    not do: it is refused."""
    if not full or dtype == torch.float32:
        return Precision(dtype)
    if dtype == torch.float16:
        raise RecipeError("full fine-tuning in float16 is not supported (it needs loss scaling)",
                          where="training.dtype",
                          fix="use bfloat16 (fp32 master weights, bf16 compute) or float32, "
                              "or train an adapter")
    return Precision(torch.float32, dtype)


def pick_dtype(requested: str, device: torch.device) -> torch.dtype:
    """The dtype alone (see choose_dtype)."""
    return choose_dtype(requested, device).dtype
