"""Checks on the shipped assets (tiny model, tokenizer, chat template, sample datasets).

The quickstart and many other tests rely on these files, so a broken rebuild of
``scripts/build_assets.py`` should fail here first, with a clear message.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

import tunesmith

ASSETS = Path(tunesmith.__file__).parent / "assets"
MODEL_DIR = ASSETS / "models" / "tiny-chat"
DATA_DIR = ASSETS / "data"

SUPPORT_SYSTEM = "You are Wren, Brightloom's support assistant."
SIGN_OFF = "— Wren, Brightloom Support"
CATEGORIES = {"shipping", "billing", "account", "product", "returns"}
SPLIT_DATASETS = ("support", "support_preference", "handbook_text", "ticket_triage")


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return AutoTokenizer.from_pretrained(MODEL_DIR)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            assert line.strip(), f"{path}:{n} is blank"
            row = json.loads(line)
            assert isinstance(row, dict), f"{path}:{n} is not an object"
            rows.append(row)
    assert rows, f"{path} is empty"
    return rows


def render(tok: Any, messages: list[dict[str, Any]], **kwargs: Any) -> str:
    out = tok.apply_chat_template(messages, tokenize=False, **kwargs)
    assert isinstance(out, str)
    return out


# ------------------------------------------------------------------------------ model


def test_model_loads_and_gives_finite_logits(tokenizer: Any) -> None:
    model = AutoModelForCausalLM.from_pretrained(MODEL_DIR, dtype=torch.float32)
    cfg = model.config
    assert cfg.model_type == "llama"
    assert (cfg.vocab_size, cfg.hidden_size, cfg.num_hidden_layers) == (2048, 128, 4)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.intermediate_size) == (4, 2, 384)
    assert cfg.max_position_embeddings == 1024
    assert cfg.tie_word_embeddings
    assert model.get_input_embeddings().weight is model.get_output_embeddings().weight
    n_params = sum(p.numel() for p in model.parameters())
    assert 0.9e6 < n_params < 1.2e6, n_params

    ids = tokenizer("Where is my order?", return_tensors="pt", add_special_tokens=False).input_ids
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.dtype == torch.float32
    assert logits.shape == (1, ids.shape[1], 2048)
    assert torch.isfinite(logits).all()


def test_weights_are_bf16_safetensors() -> None:
    from safetensors import safe_open

    files = list(MODEL_DIR.glob("*.safetensors"))
    assert len(files) == 1
    with safe_open(str(files[0]), framework="pt") as f:
        dtypes = {f.get_slice(k).get_dtype() for k in f.keys()}  # noqa: SIM118
    assert dtypes == {"BF16"}


def test_model_folder_is_small() -> None:
    size = sum(p.stat().st_size for p in MODEL_DIR.rglob("*") if p.is_file())
    assert size < 4 * 1024 * 1024, f"{size} bytes"
    assert (MODEL_DIR / "README.md").is_file()


# -------------------------------------------------------------------------- tokenizer


def test_special_token_ids(tokenizer: Any) -> None:
    assert tokenizer.bos_token == "<|endoftext|>"
    assert tokenizer.unk_token == "<|endoftext|>"
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token == "<|pad|>"
    expected = {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2, "<|pad|>": 3}
    assert {t: tokenizer.convert_tokens_to_ids(t) for t in expected} == expected
    assert len(tokenizer) == 2048
    assert tokenizer.model_max_length == 1024

    cfg = AutoModelForCausalLM.from_pretrained(MODEL_DIR).config
    assert (cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id) == (0, 2, 3)
    gen = GenerationConfig.from_pretrained(MODEL_DIR)
    assert gen.eos_token_id in (2, [2])
    assert gen.pad_token_id == 3

    # No BOS is added: the first token of plain text is the text itself.
    assert tokenizer("Hello")["input_ids"][0] != tokenizer.bos_token_id
    # Chat markers are single tokens.
    assert tokenizer("<|im_start|>user", add_special_tokens=False)["input_ids"][0] == 1


@pytest.mark.parametrize(
    "text",
    [
        "Hello there! Where is my order BL-12345?",
        "Line one\nLine two\n\n  indented\ttab, trailing space ",
        "— Wren, Brightloom Support · café, naïve, Ünïcödé, 日本語 🧶",
        "Quotes \"double\" and 'single'; (brackets) [x] {y} 50% off $9.99 & more...",
        "",
    ],
)
def test_tokenizer_round_trips(tokenizer: Any, text: str) -> None:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    assert tokenizer.decode(enc["input_ids"]) == text
    offsets = enc["offset_mapping"]
    assert len(offsets) == len(enc["input_ids"])
    assert all(0 <= s <= e <= len(text) for s, e in offsets)
    assert [s for s, _ in offsets] == sorted(s for s, _ in offsets)


def test_offsets_cover_ascii_text_exactly(tokenizer: Any) -> None:
    text = "Hi Priya! Your order shipped on 3 May.\nHappy knitting!"
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    assert "".join(text[s:e] for s, e in offsets) == text


# ---------------------------------------------------------------------- chat template


def multi_turn_support_example() -> list[dict[str, Any]]:
    for row in read_jsonl(DATA_DIR / "support" / "train.jsonl"):
        if len(row["messages"]) >= 5:
            return row["messages"]
    raise AssertionError("no multi-turn support example")


def assert_prefix_stable(tok: Any, messages: list[dict[str, Any]], **kwargs: Any) -> None:
    for k in range(1, len(messages)):
        shorter = render(tok, messages[:k], **kwargs)
        longer = render(tok, messages[: k + 1], **kwargs)
        assert longer.startswith(shorter), f"messages[:{k}] is not a prefix"
        if messages[k]["role"] == "assistant":
            prompt = render(tok, messages[:k], add_generation_prompt=True, **kwargs)
            assert longer.startswith(prompt), f"generation prompt at {k} is not a prefix"


def test_chat_template_is_chatml_without_bos(tokenizer: Any) -> None:
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"}]
    expected = "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    assert render(tokenizer, messages) == expected
    prompt = render(tokenizer, messages, add_generation_prompt=True)
    assert prompt == expected + "<|im_start|>assistant\n"
    ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>")


def test_chat_template_prefix_stable_on_support_example(tokenizer: Any) -> None:
    messages = multi_turn_support_example()
    assert_prefix_stable(tokenizer, messages)
    text = render(tokenizer, messages)
    for m in messages:
        assert f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" in text


def test_chat_template_tools_tool_calls_and_parts(tokenizer: Any) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "order_status",
                "description": "Look up an order",
                "parameters": {"type": "object", "properties": {"order": {"type": "string"}}},
            },
        }
    ]
    call = {"type": "function", "function": {"name": "order_status", "arguments": {"order": "1"}}}
    messages = [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [{"type": "text", "text": "Where is "}, {"type": "text", "text": "it?"}],
        },
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": "Shipped."},
        {"role": "assistant", "content": "It shipped."},
    ]
    text = render(tokenizer, messages, tools=tools)
    assert text.startswith("<|im_start|>system\nBe brief.")
    system_turn = text.split("<|im_end|>")[0]
    assert json.dumps(tools[0]["function"]["name"]) in system_turn
    assert "<|im_start|>user\nWhere is it?<|im_end|>" in text
    assert (
        '<|im_start|>assistant\n<tool_call>\n{"name": "order_status", "arguments": '
        '{"order": "1"}}\n</tool_call><|im_end|>\n'
    ) in text
    assert "<|im_start|>tool\nShipped.<|im_end|>\n" in text
    assert_prefix_stable(tokenizer, messages, tools=tools)

    # Without a system message, one is emitted holding just the tools.
    no_system = render(tokenizer, messages[1:], tools=tools)
    assert no_system.startswith("<|im_start|>system\n")
    assert "order_status" in no_system.split("<|im_end|>")[0]
    assert_prefix_stable(tokenizer, messages[1:], tools=tools)


# --------------------------------------------------------------------------- datasets


def user_texts(row: dict[str, Any]) -> list[str]:
    messages = row["messages"] if "messages" in row else row["input"]["messages"]
    return [m["content"] for m in messages if m["role"] == "user"]


def check_support(row: dict[str, Any]) -> None:
    assert set(row) == {"messages"}
    msgs = row["messages"]
    assert msgs[0] == {"role": "system", "content": SUPPORT_SYSTEM}
    roles = [m["role"] for m in msgs[1:]]
    assert roles in (["user", "assistant"], ["user", "assistant"] * 2), roles
    for m in msgs:
        assert set(m) <= {"role", "content", "weight"}
        assert isinstance(m["content"], str) and m["content"].strip()
        if "weight" in m:
            assert m["role"] == "assistant" and m["weight"] in (0, 1)
    assert msgs[-1].get("weight", 1) == 1
    for m in msgs:
        if m["role"] == "assistant" and m.get("weight", 1) == 1:
            assert m["content"].startswith(("Hi ", "Hello there!")), m["content"]
            assert m["content"].endswith(SIGN_OFF)
    assert sum(len(m["content"].split()) for m in msgs[1:]) <= 120


def check_preference(row: dict[str, Any]) -> None:
    assert set(row) == {"input", "preferred_output", "non_preferred_output"}
    prompt = row["input"]["messages"]
    assert prompt[-1]["role"] == "user"
    assert [m["role"] for m in prompt[:-1]] in ([], ["system"])
    good, bad = row["preferred_output"], row["non_preferred_output"]
    assert len(good) == 1 and good[0]["role"] == "assistant"
    assert len(bad) == 1 and bad[0]["role"] == "assistant"
    assert good[0]["content"].endswith(SIGN_OFF)
    assert "Wren" not in bad[0]["content"]
    assert good[0]["content"] != bad[0]["content"]


def check_text(row: dict[str, Any]) -> None:
    assert set(row) == {"text"}
    assert 40 <= len(row["text"].split()) <= 150


def check_triage(row: dict[str, Any]) -> None:
    assert set(row) == {"messages", "category"}
    assert [m["role"] for m in row["messages"]] == ["system", "user"]
    assert '"category"' in row["messages"][0]["content"]
    assert row["category"] in CATEGORIES


CHECKS = {
    "support": (check_support, 250, 30),
    "support_preference": (check_preference, 120, 20),
    "handbook_text": (check_text, 120, 15),
    "ticket_triage": (check_triage, 120, 20),
}


@pytest.mark.parametrize("name", SPLIT_DATASETS)
def test_dataset_splits_parse_and_are_disjoint(name: str) -> None:
    check, min_train, min_val = CHECKS[name]
    train = read_jsonl(DATA_DIR / name / "train.jsonl")
    val = read_jsonl(DATA_DIR / name / "validation.jsonl")
    assert len(train) >= min_train and len(val) >= min_val
    for row in train + val:
        check(row)
    as_key = lambda r: json.dumps(r, sort_keys=True)  # noqa: E731
    assert not {as_key(r) for r in train} & {as_key(r) for r in val}
    if name == "handbook_text":
        assert not {r["text"] for r in train} & {r["text"] for r in val}
    else:
        train_users = {u for r in train for u in user_texts(r)}
        assert not any(u in train_users for r in val for u in user_texts(r))


def test_support_has_multi_turn_and_weighted_examples() -> None:
    rows = read_jsonl(DATA_DIR / "support" / "train.jsonl")
    multi = [r for r in rows if len(r["messages"]) > 3]
    assert 0.08 < len(multi) / len(rows) < 0.25
    assert any(m.get("weight") == 0 for r in multi for m in r["messages"])


def test_triage_covers_every_category() -> None:
    rows = read_jsonl(DATA_DIR / "ticket_triage" / "train.jsonl")
    assert {r["category"] for r in rows} == CATEGORIES


def test_general_reference() -> None:
    rows = read_jsonl(DATA_DIR / "general_reference.jsonl")
    assert len(rows) >= 50
    for row in rows:
        assert set(row) == {"text"}
        assert 15 <= len(row["text"].split()) <= 150
        assert "Brightloom" not in row["text"] and "Wren" not in row["text"]
    assert len({r["text"] for r in rows}) == len(rows)
    assert (DATA_DIR / "README.md").is_file()
