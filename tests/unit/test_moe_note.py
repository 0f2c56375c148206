"""A visible note when LoRA leaves the routed experts of a mixture-of-experts model frozen."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import colour_chats, write_jsonl
from tunesmith.model.adapters import apply_adapter, untrained_experts_note
from tunesmith.recipe import AdapterConfig, load_recipe

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def tiny_moe(folder: Path | None = None, tokenizer_from: Path | None = None):
    import torch
    from transformers import AutoTokenizer, Qwen2MoeConfig, Qwen2MoeForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_from) if tokenizer_from else None
    torch.manual_seed(0)
    config = Qwen2MoeConfig(vocab_size=len(tokenizer) if tokenizer else 64, hidden_size=16,
                            intermediate_size=32, moe_intermediate_size=8, shared_expert_intermediate_size=16,
                            num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, num_experts=4,
                            num_experts_per_tok=2, max_position_embeddings=512)
    model = Qwen2MoeForCausalLM(config)
    if folder is not None:
        model.save_pretrained(folder)
        assert tokenizer is not None
        tokenizer.save_pretrained(folder)
    return model


def test_lora_on_a_moe_model_notes_the_frozen_experts() -> None:
    note = untrained_experts_note(apply_adapter(tiny_moe(), AdapterConfig()))
    assert note is not None and "routed-expert weights" in note and "experts.gate_up_proj" in note
    assert "adapter.kind: full" in note
    assert untrained_experts_note(apply_adapter(tiny_moe(), AdapterConfig(kind="full"))) is None


def test_dense_models_get_no_note(random_model_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(random_model_path)
    assert untrained_experts_note(apply_adapter(model, AdapterConfig())) is None


def test_training_reports_the_note(tmp_path: Path, tiny_model_path: Path, one_torch_thread: None) -> None:
    from tunesmith.train.loop import train
    from tunesmith.train.run import RunDir

    folder = tmp_path / "moe"
    tiny_moe(folder, tiny_model_path)
    data = write_jsonl(tmp_path / "train.jsonl", colour_chats(4, seed=1))
    result = train(load_recipe(None, [f"base_model={folder}", f"data.train={data}", f"output.dir={tmp_path}",
                                      "output.name=run", "training.max_steps=1", "training.batch_size=2"]))
    warnings = [r["message"] for r in RunDir(result.run_dir).metrics()
                if r.get("type") == "event" and r.get("level") == "warning"]
    assert any("routed-expert weights" in message for message in warnings)


def test_data_check_notes_a_moe_model(tmp_path: Path, tiny_model_path: Path) -> None:
    from tunesmith.data.check import check_dataset

    folder = tmp_path / "moe"
    tiny_moe(folder, tiny_model_path)
    data = write_jsonl(tmp_path / "train.jsonl", colour_chats(4, seed=1))
    report = check_dataset(data, model=str(folder))
    notes = [f for f in report.findings if f.code == "moe_experts"]
    assert len(notes) == 1 and notes[0].severity == "warning" and "4 experts" in notes[0].message
    assert "adapter.kind: full" in (notes[0].fix or "")
    plain = check_dataset(data, model=str(tiny_model_path))
    assert not [f for f in plain.findings if f.code == "moe_experts"]
