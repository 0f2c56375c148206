"""`training.dtype: auto` on a CPU is decided by a measured matmul probe (hardware.py): bf16
only where the probe shows it clearly faster. The measurement is injected here; no timing is
asserted."""

from __future__ import annotations

import pytest
import torch

from tunesmith import hardware
from tunesmith.errors import RecipeError
from tunesmith.hardware import BF16_MARGIN, choose_dtype, decide_cpu_dtype, training_precision

CPU = torch.device("cpu")


def probe_of(fp32: float, bf16: float):
    calls: list[tuple[int, int, int]] = []

    def probe(shape: tuple[int, int, int]) -> dict[str, float]:
        calls.append(shape)
        return {"float32": fp32, "bfloat16": bf16}

    probe.calls = calls  # type: ignore[attr-defined]
    return probe


def test_bf16_is_chosen_where_the_probe_shows_it_faster() -> None:
    choice = choose_dtype("auto", CPU, probe_of(120.0, 700.0))
    assert choice.dtype == torch.bfloat16
    record = choice.record()
    assert record["dtype"] == "bfloat16"
    assert record["dtype_probe"] == {"float32": 120.0, "bfloat16": 700.0}
    assert "700" in record["dtype_reason"] and "120" in record["dtype_reason"]


@pytest.mark.parametrize("bf16", [10.0, 120.0, 120.0 * BF16_MARGIN * 0.99])
def test_fp32_is_kept_where_bf16_is_slower_or_barely_faster(bf16: float) -> None:
    choice = decide_cpu_dtype({"float32": 120.0, "bfloat16": bf16})
    assert choice.dtype == torch.float32
    assert choice.record()["dtype"] == "float32"
    assert "not at least" in choice.reason


def test_full_fine_tuning_computes_in_bf16_over_fp32_weights_where_bf16_is_faster() -> None:
    choice = choose_dtype("auto", CPU, probe_of(120.0, 700.0), full=True)
    assert choice.dtype == torch.bfloat16  # the compute dtype; the weights stay fp32
    assert "full fine-tuning keeps fp32 weights" in choice.reason
    assert choice.measured == {"float32": 120.0, "bfloat16": 700.0}
    precision = training_precision(choice.dtype, full=True)
    assert precision.weights == torch.float32 and precision.compute == torch.bfloat16
    assert choose_dtype("auto", CPU, probe_of(120.0, 60.0), full=True).dtype == torch.float32


def test_an_explicit_dtype_is_taken_without_probing() -> None:
    probe = probe_of(120.0, 700.0)
    assert choose_dtype("float32", CPU, probe).dtype == torch.float32
    assert choose_dtype("bfloat16", CPU, probe).dtype == torch.bfloat16
    assert probe.calls == []


def test_the_probe_is_asked_with_the_training_shape() -> None:
    probe = probe_of(120.0, 10.0)
    choose_dtype("auto", CPU, probe, shape=(512, 64, 64))
    assert probe.calls == [(512, 64, 64)]


def test_the_real_probe_measures_both_dtypes_once_per_process(monkeypatch) -> None:
    monkeypatch.setattr(hardware, "_PROBED", {})
    timed: list[torch.dtype] = []
    real = hardware._matmul_gflops

    def counting(dtype: torch.dtype, shape: tuple[int, int, int]) -> float:
        timed.append(dtype)
        return real(dtype, shape)

    monkeypatch.setattr(hardware, "_matmul_gflops", counting)
    first = hardware.probe_cpu_matmul((64, 64, 64))
    count = len(timed)
    second = hardware.probe_cpu_matmul((64, 64, 64))
    assert first is second and len(timed) == count  # cached: nothing timed the second time
    assert {torch.float32, torch.bfloat16} <= set(timed)
    assert first["float32"] > 0 and first["bfloat16"] > 0 and "64x64x64" in first["shape"]


@pytest.mark.parametrize(("bf16_rate", "bf16_at_training_shape"), [(0.4, False), (600.0, True)])
def test_emulated_bf16_is_not_timed_at_the_training_shape(monkeypatch, bf16_rate,
                                                          bf16_at_training_shape) -> None:
    """Where bf16 is emulated (hundreds of times slower), one matmul of the training shape would
    take seconds: the small scout decides, and fp32 alone is timed at the training shape."""
    monkeypatch.setattr(hardware, "_PROBED", {})
    timed: list[tuple[torch.dtype, tuple[int, int, int]]] = []

    def fake(dtype: torch.dtype, shape: tuple[int, int, int]) -> float:
        timed.append((dtype, shape))
        return 100.0 if dtype == torch.float32 else bf16_rate

    monkeypatch.setattr(hardware, "_matmul_gflops", fake)
    shape = (2048, 1024, 1024)
    measured = hardware.probe_cpu_matmul(shape)
    assert ((torch.bfloat16, shape) in timed) == bf16_at_training_shape
    assert (torch.float32, shape) in timed
    assert measured["bfloat16"] == bf16_rate and measured["float32"] == 100.0
    expected = torch.bfloat16 if bf16_rate >= BF16_MARGIN * 100.0 else torch.float32
    assert decide_cpu_dtype(measured).dtype == expected


def test_the_probe_leaves_the_global_random_state_alone(monkeypatch) -> None:
    """A run seeds torch before the probe; adapter initialisation after it must not depend on
    whether the probe ran or was cached."""
    monkeypatch.setattr(hardware, "_PROBED", {})
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    hardware.probe_cpu_matmul((32, 32, 32))
    assert torch.equal(torch.rand(3), expected)


def test_an_operator_pins_the_cpu_dtype_without_the_probe(monkeypatch) -> None:
    def probe(shape):
        raise AssertionError("the pin must spare the probe")

    monkeypatch.setattr(hardware, "probe_cpu_matmul", probe)
    monkeypatch.setenv(hardware.CPU_DTYPE_ENV, "bfloat16")
    choice = choose_dtype("auto", CPU)
    assert choice.dtype == torch.bfloat16 and hardware.CPU_DTYPE_ENV in choice.reason
    assert choose_dtype("float32", CPU).dtype == torch.float32  # a recipe's own dtype still wins
    monkeypatch.setenv(hardware.CPU_DTYPE_ENV, "fp8")
    with pytest.raises(RecipeError, match="not a dtype") as raised:
        choose_dtype("auto", CPU)
    assert raised.value.where == hardware.CPU_DTYPE_ENV
