"""Export: merged weights load with plain transformers and match the adapter, GGUF files read
back with the right tensors and metadata, parity catches corrupted weights, and the Ollama
template builds the same prompt as the chat template."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.conftest import colour_chats, write_jsonl
from tests.integration.test_training import recipe_for
from tunesmith.cli import main
from tunesmith.model.export import ExportError, ParityError, export_model, verify_export
from tunesmith.model.export.parity import SAMPLE_CONVERSATIONS


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, tiny_model_path: Path) -> Path:
    """A 2-step LoRA run on the bundled tiny model (about 5 s)."""
    from tunesmith.train.loop import train

    root = tmp_path_factory.mktemp("export-run")
    data = (write_jsonl(root / "train.jsonl", colour_chats(16, seed=1)),
            write_jsonl(root / "validation.jsonl", colour_chats(4, seed=2)))
    result = train(recipe_for(tiny_model_path, data, root / "runs", "training.epochs=1"))
    assert result.status == "succeeded"
    return result.run_dir


@pytest.fixture(scope="module")
def adapter_model(run_dir: Path):
    from tunesmith.model.inference import load_trained

    return load_trained(run_dir)


@pytest.fixture(scope="module")
def merged_export(run_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    return export_model(str(run_dir), "merged", tmp_path_factory.mktemp("exports") / "merged", dtype="f32",
                        max_shard_size="1MB")


@pytest.fixture(scope="module")
def gguf_f16_export(run_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    return export_model(str(run_dir), "gguf", tmp_path_factory.mktemp("exports") / "gguf", dtype="f16")


def prompt_ids(loaded) -> list[list[int]]:
    return [loaded.renderer.prompt_ids(m) for m in SAMPLE_CONVERSATIONS]


def test_merged_loads_with_plain_transformers_and_matches_adapter(merged_export, adapter_model) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = merged_export
    out = result.out
    assert all(c.passed for c in result.parity)
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "generation_config.json", "tokenizer.json", "chat_template.jinja",
            "model.safetensors.index.json", "README.md", "export.json"} <= files
    assert len([f for f in files if f.endswith(".safetensors")]) > 1, "--max-shard-size should shard"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "staging folder left behind"

    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template == adapter_model.tokenizer.chat_template
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    with torch.no_grad():
        for ids in prompt_ids(adapter_model):
            batch = torch.tensor([ids])
            expected = adapter_model.model(input_ids=batch).logits
            got = model(input_ids=batch).logits
            assert (got - expected).abs().max() < 1e-4
    # The merge changed the weights: the adapter was not silently dropped.
    base_path = adapter_model.model.peft_config["default"].base_model_name_or_path
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    with torch.no_grad():
        batch = torch.tensor([prompt_ids(adapter_model)[0]])
        assert (base(input_ids=batch).logits - model(input_ids=batch).logits).abs().max() > 1e-3

    card = (out / "README.md").read_text()
    assert "tunesmith/tiny-chat" in card or "tiny-chat" in card
    assert "ds-" in card and "held-out loss" in card and "Intended use" in card
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["format"] == "merged" and manifest["parity"][0]["passed"]


def test_merged_defaults_to_the_base_dtype(run_dir, tmp_path) -> None:
    result = export_model(str(run_dir), "merged", tmp_path / "m")
    assert result.dtype == "bf16"   # the bundled model is stored in bfloat16
    tensors = load_file(tmp_path / "m" / "model.safetensors")
    assert {t.dtype for t in tensors.values()} == {torch.bfloat16}


@pytest.mark.parametrize("dtype", ["f16", "q8_0"])
def test_gguf_reads_back_with_tensors_and_metadata(run_dir, adapter_model, gguf_f16_export, tmp_path,
                                                   dtype) -> None:
    from gguf import GGMLQuantizationType, GGUFReader, dequantize

    result = (gguf_f16_export if dtype == "f16"
              else export_model(str(run_dir), "gguf", tmp_path / "g", dtype=dtype))
    out = result.out
    assert all(c.passed for c in result.parity)
    names = [c.name for c in result.parity]
    assert names[0] == "merged weights" and any("transformers' GGUF loader" in n for n in names)
    from tunesmith.model.export import llamacpp

    if llamacpp.missing_reason() is None:   # the failure: a LoRA run's GGUF refused by llama.cpp
        assert any("llama.cpp" in n for n in names), names
    reader = GGUFReader(out / f"model-{dtype}.gguf")
    config = adapter_model.model.config
    tensors = {t.name: t for t in reader.tensors}
    expected = {"token_embd.weight", "output_norm.weight"} | {
        f"blk.{i}.{part}.weight" for i in range(config.num_hidden_layers)
        for part in ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate",
                     "ffn_up", "ffn_down")}
    assert set(tensors) == expected   # tied embeddings: no output.weight
    matrix_type = GGMLQuantizationType.F16 if dtype == "f16" else GGMLQuantizationType.Q8_0
    kv = config.num_key_value_heads * config.head_dim
    shapes = {"token_embd.weight": [config.hidden_size, config.vocab_size],
              "blk.0.attn_k.weight": [config.hidden_size, kv],
              "blk.0.ffn_down.weight": [config.intermediate_size, config.hidden_size],
              "output_norm.weight": [config.hidden_size]}
    for name, shape in shapes.items():
        assert list(tensors[name].shape) == shape, name   # GGUF lists dimensions innermost first
    for name, tensor in tensors.items():
        want = GGMLQuantizationType.F32 if name.endswith("norm.weight") else matrix_type
        assert tensor.tensor_type == want, name
    # Values: v_proj is stored unpermuted; it must be the merged (base + LoRA) weight.
    merged_v = adapter_model.model.get_base_model().model.layers[0].self_attn.v_proj
    with torch.no_grad():
        want_v = merged_v.get_delta_weight("default") + merged_v.base_layer.weight
    got_v = dequantize(tensors["blk.0.attn_v.weight"].data, tensors["blk.0.attn_v.weight"].tensor_type)
    assert np.abs(got_v.reshape(want_v.shape) - want_v.numpy()).max() < (1e-3 if dtype == "f16" else 2e-2)

    def field(key):
        f = reader.fields[key]
        return f.contents()

    tokenizer = adapter_model.tokenizer
    assert field("general.architecture") == "llama"
    assert field("llama.block_count") == config.num_hidden_layers
    assert field("llama.attention.head_count_kv") == config.num_key_value_heads
    assert field("tokenizer.ggml.model") == "gpt2" and field("tokenizer.ggml.pre") == "gpt-2"
    tokens = field("tokenizer.ggml.tokens")
    assert len(tokens) == config.vocab_size and tokens[tokenizer.eos_token_id] == "<|im_end|>"
    assert field("tokenizer.ggml.eos_token_id") == tokenizer.eos_token_id
    assert field("tokenizer.ggml.token_type")[tokenizer.eos_token_id] == 3   # control
    assert len(field("tokenizer.ggml.merges")) > 1000
    assert field("tokenizer.chat_template") == tokenizer.chat_template
    modelfile = (out / "Modelfile").read_text()
    assert f"FROM ./model-{dtype}.gguf" in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile


def test_corrupted_merged_weights_fail_parity(run_dir, merged_export, tmp_path) -> None:
    out = tmp_path / "merged"
    shutil.copytree(merged_export.out, out)
    assert verify_export(str(run_dir), out)[0].passed
    name = "model.layers.1.mlp.down_proj.weight"
    index = json.loads((out / "model.safetensors.index.json").read_text())["weight_map"]
    shard = out / index[name]
    weights = load_file(shard)
    weights[name] = weights[name] * 1.05
    save_file(weights, shard, metadata={"format": "pt"})
    with pytest.raises(ParityError, match="max logit difference"):
        verify_export(str(run_dir), out)
    assert main(["export", str(run_dir), "--verify", "--out", str(out)]) == 2


def test_corrupted_gguf_fails_parity(run_dir, gguf_f16_export, tmp_path) -> None:
    from gguf import GGUFReader

    out = tmp_path / "gguf"
    shutil.copytree(gguf_f16_export.out, out)
    reader = GGUFReader(out / "model-f16.gguf", "r+")
    tensor = next(t for t in reader.tensors if t.name == "blk.0.attn_q.weight")
    tensor.data[:] = tensor.data[::-1].copy()   # the same values, in the wrong places
    reader.data.flush()
    del reader
    with pytest.raises(ParityError, match="gguf file"):
        verify_export(str(run_dir), out)


def test_a_modelfile_that_prompts_differently_fails_verify(run_dir, gguf_f16_export, tmp_path) -> None:
    out = tmp_path / "gguf"
    shutil.copytree(gguf_f16_export.out, out)
    modelfile = out / "Modelfile"
    text = modelfile.read_text()
    assert "<|im_end|>\n{{ end }}" in text
    modelfile.write_text(text.replace("<|im_end|>\n{{ end }}", "<|im_end|>{{ end }}"))
    with pytest.raises(ParityError, match="TEMPLATE renders a different prompt"):
        verify_export(str(run_dir), out)


def test_adapter_export_and_overwrite_rules(run_dir, tmp_path) -> None:
    out = tmp_path / "adapter"
    assert main(["export", str(run_dir), "--format", "adapter", "--out", str(out)]) == 0
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "README.md"} <= {
        p.name for p in out.iterdir()}
    with pytest.raises(ExportError, match="already exists"):
        export_model(str(run_dir), "adapter", out)
    (out / "stale.txt").write_text("old")
    export_model(str(run_dir), "adapter", out, force=True)
    assert not (out / "stale.txt").exists() and (out / "adapter_config.json").exists()
    with pytest.raises(ExportError, match="not available"):
        export_model(str(run_dir), "merged", tmp_path / "x", dtype="q8_0")


def test_export_a_registry_model_by_alias(run_dir, tmp_path) -> None:
    from tunesmith.store import open_registry
    from tunesmith.store.runs import register_run

    registry = open_registry()
    model = register_run(registry, run_dir)
    registry.set_alias("colours@prod", model.id)
    result = export_model("colours@prod", "adapter", tmp_path / "a")
    card = (result.out / "README.md").read_text()
    assert model.name in card
    for role, version in {d.role: d.dataset_id for d in model.datasets}.items():
        assert f"{role}: `{version}`" in card
    assert f"{model.evaluation['best_validation_loss']:.4f}" in card


def test_cli_lists_the_library_formats() -> None:
    from tunesmith.commands import export as command
    from tunesmith.model.export import DTYPES, FORMATS

    assert command.FORMATS == FORMATS
    assert set(command.DTYPE_CHOICES) == {d for dtypes in DTYPES.values() for d in dtypes}


def test_full_fine_tune_exports_without_an_adapter(random_model_path, tmp_path) -> None:
    """A fully fine-tuned model has no adapter to merge: merged and GGUF export its weights."""
    from tunesmith.train.loop import train

    data = (write_jsonl(tmp_path / "t.jsonl", colour_chats(8, seed=3)),
            write_jsonl(tmp_path / "v.jsonl", colour_chats(2, seed=4)))
    run = train(recipe_for(random_model_path, data, tmp_path / "runs", "adapter.kind=full",
                           "training.epochs=1")).run_dir
    with pytest.raises(ExportError, match="no adapter"):
        export_model(str(run), "adapter", tmp_path / "a")
    result = export_model(str(run), "gguf", tmp_path / "g", dtype="f32")
    assert all(c.passed for c in result.parity)
    assert "full" in (result.out / "README.md").read_text()


def test_a_run_on_a_gguf_base_merges_into_plain_weights(tiny_model_path, tmp_path) -> None:
    """Base model folder -> GGUF (tunesmith's own writer) -> LoRA run on that file -> merged folder
    with no quantization_config left over from loading the GGUF."""
    from tunesmith.train.loop import train

    base = export_model(str(tiny_model_path), "gguf", tmp_path / "base", dtype="f32")
    data = (write_jsonl(tmp_path / "t.jsonl", colour_chats(8, seed=5)),
            write_jsonl(tmp_path / "v.jsonl", colour_chats(2, seed=6)))
    run = train(recipe_for(base.out / "model-f32.gguf", data, tmp_path / "runs", "training.epochs=1")).run_dir
    merged = export_model(str(run), "merged", tmp_path / "merged")
    assert merged.dtype == "f32" and all(c.passed for c in merged.parity)
    config = json.loads((merged.out / "config.json").read_text())
    assert "quantization_config" not in config and config["architectures"] == ["LlamaForCausalLM"]


def test_a_failed_parity_check_fails_the_export_and_writes_nothing(run_dir, tmp_path, monkeypatch,
                                                                   capsys) -> None:
    from tunesmith.model.export import parity

    monkeypatch.setitem(parity.TOLERANCES, "f16", 1e-9)   # f16 rounding now counts as a mismatch
    monkeypatch.setitem(parity.LLAMACPP_TOLERANCES, "f16", 1e-9)
    out = tmp_path / "exports" / "gguf"
    code = main(["export", str(run_dir), "--format", "gguf", "--dtype", "f16", "--out", str(out)])
    assert code == 2
    assert "max logit difference" in capsys.readouterr().err
    assert not (tmp_path / "exports").exists() or list((tmp_path / "exports").iterdir()) == []


def test_a_gguf_converts_once_into_the_same_weights_and_tokenizer(tiny_model_path, tmp_path, capfd) -> None:
    """`models pull`'s conversion: an f32 GGUF of the tiny model comes back as the same float32
    weights and a tokenizer that encodes alike, the file parsed once (not once per loader),
    transformers' dequantisation bar not written where stderr is no terminal (a log), and
    gguf's reader and that bar back in place afterwards."""
    import gguf
    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    from transformers import AutoTokenizer

    from tunesmith.model.pull import convert_gguf

    exported = export_model(str(tiny_model_path), "gguf", tmp_path / "gguf", dtype="f32")
    reader_class, parsed, said = gguf.GGUFReader, [], []

    class CountingReader(reader_class):
        def __init__(self, *args, **kwargs):
            parsed.append(args[0])
            super().__init__(*args, **kwargs)

    gguf.GGUFReader, bar = CountingReader, gguf_utils.tqdm
    capfd.readouterr()
    try:
        convert_gguf(exported.out / "model-f32.gguf", tmp_path / "hf", said.append)
    finally:
        gguf.GGUFReader = reader_class
    assert "de-quantizing" not in capfd.readouterr().err
    assert gguf_utils.tqdm is bar
    assert len(parsed) == 1
    assert said == ["reading the tokenizer", "dequantising the weights to float32",
                    "saving safetensors and the tokenizer"]
    original = load_file(tiny_model_path / "model.safetensors")
    converted = load_file(tmp_path / "hf" / "model.safetensors")
    assert converted.keys() == original.keys()
    assert all(torch.equal(original[k], converted[k]) for k in original)
    text = "The blue box holds 42 red pens."
    assert (AutoTokenizer.from_pretrained(tmp_path / "hf")(text).input_ids
            == AutoTokenizer.from_pretrained(tiny_model_path)(text).input_ids)
