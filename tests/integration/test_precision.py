"""Mixed precision: what `training.dtype: auto` chose is recorded with the run; over a bf16
base an adapter, its AdamW state and the loss stay fp32; and a bf16 run's held-out loss
stays within a stated tolerance of the fp32 run's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.conftest import colour_chats, write_jsonl
from tunesmith import hardware
from tunesmith.recipe import AdapterConfig, load_recipe
from tunesmith.train.loop import train
from tunesmith.train.run import RunDir

BF16_LOSS_TOLERANCE = 0.01
"""Largest relative difference of the held-out loss of a bf16-base LoRA run from the fp32 run."""


@pytest.fixture
def colour_data(tmp_path: Path) -> tuple[Path, Path]:
    return (write_jsonl(tmp_path / "train.jsonl", colour_chats(32, seed=1)),
            write_jsonl(tmp_path / "validation.jsonl", colour_chats(8, seed=2)))


def recipe_for(model: Path, data: tuple[Path, Path], out: Path, name: str, *overrides: str):
    return load_recipe(None, [
        f"base_model={model}", f"data.train={data[0]}", f"data.validation={data[1]}",
        f"output.dir={out}", f"output.name={name}", "training.batch_size=8", "training.epochs=1",
        "training.learning_rate=0.01", "training.eval_every=100", "training.save_every=100",
        "training.warmup_ratio=0", *overrides])


@pytest.mark.parametrize(("bf16_gflops", "expected"), [(700.0, "bfloat16"), (60.0, "float32")])
def test_the_probe_decision_is_recorded_in_the_resolved_recipe_and_run(
        bf16_gflops, expected, random_model_path, colour_data, tmp_path, monkeypatch,
        one_torch_thread) -> None:
    asked: list[tuple[int, int, int]] = []

    def probe(shape: tuple[int, int, int]) -> dict[str, float]:
        asked.append(shape)
        return {"float32": 120.0, "bfloat16": bf16_gflops}

    monkeypatch.setattr(hardware, "probe_cpu_matmul", probe)
    monkeypatch.delenv(hardware.CPU_DTYPE_ENV)  # the suite's pin (tests/conftest.py) off: the probe decides
    result = train(recipe_for(random_model_path, colour_data, tmp_path, "run", "training.max_steps=2",
                              "training.device=cpu"))
    assert result.status == "succeeded" and len(asked) == 1
    run = RunDir(result.run_dir)
    assert run.read_recipe().training.dtype == expected  # recipe.yaml: a resume keeps the choice
    auto = run.info()["auto"]
    assert auto["dtype"] == expected
    assert auto["dtype_probe"] == {"float32": 120.0, "bfloat16": bf16_gflops}
    assert f"{bf16_gflops:.0f} GFLOP/s" in auto["dtype_reason"]
    start = next(r for r in run.metrics() if r["type"] == "start")
    assert start["auto"]["dtype"] == expected
    adapter = json.loads((run.final / "adapter_config.json").read_text())
    assert adapter["r"] > 0
    from safetensors.torch import load_file

    saved = load_file(run.final / "adapter_model.safetensors")
    assert saved and all(t.dtype == torch.float32 for t in saved.values())  # adapter fp32 either way


def test_lora_over_a_bf16_base_keeps_adapter_and_adamw_state_fp32(tiny_model_path, colour_data,
                                                                    one_torch_thread) -> None:
    from tunesmith.data.load import load_dataset
    from tunesmith.data.pack import collate_packed
    from tunesmith.data.render import Renderer
    from tunesmith.model.adapters import apply_adapter
    from tunesmith.model.loading import load_model, load_tokenizer, resolve_model
    from tunesmith.train.loss import token_loss

    ref = resolve_model(str(tiny_model_path))
    model = apply_adapter(load_model(ref, dtype=torch.bfloat16), AdapterConfig(kind="lora", rank=4))
    trained = {n: p for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n: p for n, p in model.named_parameters() if not p.requires_grad}
    assert trained and all("lora_" in n for n in trained)
    assert all(p.dtype == torch.float32 for p in trained.values())
    assert any(p.dtype == torch.bfloat16 for p in frozen.values())

    renderer = Renderer(load_tokenizer(ref))
    batch = collate_packed([renderer.render(r) for r in load_dataset(colour_data[1]).records[:4]])
    optimizer = torch.optim.AdamW(list(trained.values()), lr=1e-3)
    out = token_loss(model, batch.input_ids, batch.labels, batch.position_ids)
    assert out.loss_sum.dtype == torch.float32  # the loss is reduced in fp32
    (out.loss_sum / out.tokens).backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in trained.values())
    optimizer.step()
    states = [optimizer.state[p] for p in trained.values()]
    assert all(s["exp_avg"].dtype == torch.float32 and s["exp_avg_sq"].dtype == torch.float32 for s in states)


@pytest.mark.slow  # two real trainings of the tiny chat model
def test_bf16_heldout_loss_is_within_tolerance_of_fp32(tiny_model_path, colour_data, tmp_path,
                                                        one_torch_thread) -> None:
    losses = {}
    for dtype in ("float32", "bfloat16"):
        result = train(recipe_for(tiny_model_path, colour_data, tmp_path, dtype, f"training.dtype={dtype}",
                                  "training.epochs=2", "training.learning_rate=0.002"))
        evals = [r for r in RunDir(result.run_dir).metrics() if r["type"] == "eval"]
        assert evals[-1]["loss"] < evals[0]["loss"]  # both learned
        losses[dtype] = evals[-1]["loss"]
    assert abs(losses["bfloat16"] - losses["float32"]) <= BF16_LOSS_TOLERANCE * losses["float32"], losses


def test_full_fine_tuning_in_bf16_keeps_fp32_master_weights_and_a_tiny_update_lands(
        tiny_model_path, colour_data, tmp_path, monkeypatch, one_torch_thread) -> None:
    """Full fine-tuning with training.dtype=bfloat16: the weights and AdamW's moments are fp32,
    the forward runs in bf16 (autocast), and one step of lr 1e-5 (AdamW's first update is about
    lr per weight, far below bf16's rounding of these weights) still changes the weights."""
    from safetensors.torch import load_file

    optimizers: list[torch.optim.Optimizer] = []

    class RecordingAdamW(torch.optim.AdamW):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            optimizers.append(self)

    compute: set[torch.dtype] = set()
    real_forward = torch.nn.Linear.forward

    def recording_forward(self, x):
        out = real_forward(self, x)
        if torch.is_grad_enabled():
            compute.add(out.dtype)
        return out

    monkeypatch.setattr(torch.optim, "AdamW", RecordingAdamW)
    monkeypatch.setattr(torch.nn.Linear, "forward", recording_forward)
    lr = 1e-5
    result = train(recipe_for(tiny_model_path, colour_data, tmp_path, "full-bf16", "adapter.kind=full",
                              "training.dtype=bfloat16", "training.device=cpu", "training.max_steps=1",
                              f"training.learning_rate={lr}"))
    assert result.status == "succeeded"
    assert compute == {torch.bfloat16}  # every trained projection computed in bf16
    (optimizer,) = optimizers
    params = [p for group in optimizer.param_groups for p in group["params"]]
    assert params and all(p.dtype == torch.float32 for p in params)  # fp32 master weights
    states = [optimizer.state[p] for p in params]
    assert len(states) == len(params)
    assert all(s["exp_avg"].dtype == torch.float32 and s["exp_avg_sq"].dtype == torch.float32 for s in states)
    assert RunDir(result.run_dir).info()["precision"] == {
        "base_weights": "float32", "compute": "bfloat16", "trained_weights": "float32",
        "optimizer_state": "float32", "loss": "float32"}

    base = load_file(tiny_model_path / "model.safetensors")
    final = load_file(result.run_dir / "final" / "model.safetensors")
    name = "model.layers.0.mlp.up_proj.weight"
    before, after = base[name].float(), final[name]
    assert after.dtype == torch.float32
    delta = after - before
    moved = delta.abs() > lr / 4
    assert moved.float().mean() > 0.5, "most weights took AdamW's ~lr-sized first step"
    # The same update applied to bf16 weights would vanish for most of them: bf16 rounds it away.
    in_bf16 = (before.bfloat16() + delta.bfloat16()).float() == before
    assert (in_bf16 & moved).float().mean() > 0.5


def test_full_fine_tuning_in_float16_is_refused_before_loading() -> None:
    from tunesmith.errors import RecipeError

    with pytest.raises(RecipeError) as caught:
        hardware.training_precision(torch.float16, full=True)
    assert caught.value.where == "training.dtype"
    assert hardware.training_precision(torch.float16, full=False).weights == torch.float16
    assert hardware.training_precision(torch.bfloat16, full=False) == hardware.Precision(torch.bfloat16)
    assert hardware.training_precision(torch.bfloat16, full=True) == hardware.Precision(torch.float32,
                                                                                          torch.bfloat16)
