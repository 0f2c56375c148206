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
