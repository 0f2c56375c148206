"""tunesmith's rendering against `tokenizer.apply_chat_template`, token by token, for the
chat templates of popular families (real template texts in tests/fixtures/templates, small
byte-level BPE tokenizers built here with each family's special tokens).

Every case ends in one of: "one" (the template is prefix-stable: the conversation is one
rendering, equal to apply_chat_template of the whole), "per turn" (each trained turn is its
own rendering, equal to what inference renders: the generation prompt's tokens, then the
reply), or "refused" with the reason. `EXPECTED` is the table reported for the issue.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunesmith.data.records import ChatRecord, Source
from tunesmith.data.render import Renderer
from tunesmith.errors import DataError

TEMPLATES = Path(__file__).resolve().parents[1] / "fixtures" / "templates"
SRC = Source("family.jsonl", 1)

# family: (template file, bos, eos, other special tokens)
FAMILIES = {
    "smollm2": ("smollm2.jinja", "<|im_start|>", "<|im_end|>", ["<|endoftext|>"]),
    "qwen2.5": ("qwen2.5.jinja", None, "<|im_end|>", ["<|im_start|>", "<|endoftext|>"]),
    "qwen3": ("qwen3.jinja", None, "<|im_end|>", ["<|im_start|>", "<|endoftext|>"]),
    "llama3-instruct": ("llama3.jinja", "<|begin_of_text|>", "<|eot_id|>",
                        ["<|start_header_id|>", "<|end_header_id|>", "<|end_of_text|>"]),
    # A base model's tokenizer config: EOS is <|end_of_text|>, <|eot_id|> only an added token.
    "llama3-base-config": ("llama3.jinja", "<|begin_of_text|>", "<|end_of_text|>",
                           ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]),
    "gemma2": ("gemma2.jinja", "<bos>", "<eos>", ["<start_of_turn>", "<end_of_turn>"]),
    "gemma3": ("gemma3.jinja", "<bos>", "<eos>", ["<start_of_turn>", "<end_of_turn>"]),
    "mistral-nemo": ("mistral-nemo.jinja", "<s>", "</s>", ["[INST]", "[/INST]"]),
    "phi3.5": ("phi3.5.jinja", "<s>", "<|endoftext|>",
               ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]),
    "deepseek-r1-distill": ("deepseek-r1-distill.jinja", "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>",
                            ["<｜User｜>", "<｜Assistant｜>"]),
}

TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather now",
                                         "parameters": {"type": "object", "properties": {
                                             "city": {"type": "string"}}, "required": ["city"]}}}
CASES = {
    "single": ([{"role": "user", "content": "Where is my order?"},
                {"role": "assistant", "content": "It ships today."}], None),
    "system": ([{"role": "system", "content": "You are Wren."},
                {"role": "user", "content": "Where is my order?"},
                {"role": "assistant", "content": "It ships today."}], None),
    "multi-turn": ([{"role": "user", "content": "Where is my order?"},
                    {"role": "assistant", "content": "It ships today."},
                    {"role": "user", "content": "Thanks!"},
                    {"role": "assistant", "content": "Happy to help."}], None),
    "multi-turn+system": ([{"role": "system", "content": "You are Wren."},
                           {"role": "user", "content": "Where is my order?"},
                           {"role": "assistant", "content": "It ships today."},
                           {"role": "user", "content": "Thanks!"},
                           {"role": "assistant", "content": "Happy to help."}], None),
    "tools": ([{"role": "user", "content": "Weather in Oslo?"},
               {"role": "assistant", "content": "", "tool_calls": [
                   {"id": "call12345", "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]}],
              [TOOL]),
}

ONE, PER_TURN = "one", "per turn"
DROPS_TOOLS = "refused: drops the tool definitions"
SYSTEM_UNSUPPORTED = "refused: the template raises 'System role not supported'"
THINK_PROMPT = "refused: the generation prompt opens <think> that rendered replies lack"
EXPECTED = {
    "smollm2": {"single": ONE, "system": ONE, "multi-turn": ONE, "multi-turn+system": ONE,
                "tools": DROPS_TOOLS},
    "qwen2.5": {"single": ONE, "system": ONE, "multi-turn": ONE, "multi-turn+system": ONE, "tools": ONE},
    "qwen3": {"single": ONE, "system": ONE, "multi-turn": PER_TURN, "multi-turn+system": PER_TURN,
              "tools": ONE},
    "llama3-instruct": {"single": ONE, "system": ONE, "multi-turn": ONE, "multi-turn+system": ONE,
                        "tools": DROPS_TOOLS},
    "llama3-base-config": {"single": ONE, "system": ONE, "multi-turn": ONE, "multi-turn+system": ONE,
                           "tools": DROPS_TOOLS},
    "gemma2": {"single": ONE, "system": SYSTEM_UNSUPPORTED, "multi-turn": ONE,
               "multi-turn+system": SYSTEM_UNSUPPORTED, "tools": DROPS_TOOLS},
    "gemma3": {"single": ONE, "system": ONE, "multi-turn": ONE, "multi-turn+system": ONE,
               "tools": DROPS_TOOLS},
    "mistral-nemo": {"single": ONE, "system": PER_TURN, "multi-turn": ONE, "multi-turn+system": PER_TURN,
                     "tools": ONE},
    "phi3.5": {"single": ONE, "system": ONE, "multi-turn": ONE, "multi-turn+system": ONE,
               "tools": DROPS_TOOLS},
    "deepseek-r1-distill": {"single": THINK_PROMPT, "system": THINK_PROMPT, "multi-turn": THINK_PROMPT,
                            "multi-turn+system": THINK_PROMPT, "tools": DROPS_TOOLS},
}

_CORPUS = [json.dumps(CASES), "Where is my order? It ships today. Thanks! Happy to help. Weather in Oslo?",
           "You are Wren. You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
           "# Tools You may call one or more functions <tools></tools> <tool_call> arguments"]


def family_tokenizer(family: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    template, bos, eos, others = FAMILIES[family]
    specials = [t for t in (bos, eos) if t] + others
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(_CORPUS, trainers.BpeTrainer(
        vocab_size=600, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=bos, eos_token=eos)
    tokenizer.chat_template = (TEMPLATES / template).read_text(encoding="utf-8")
    return tokenizer


def template_ids(tokenizer, messages, tools, generation_prompt: bool = False) -> list[int]:
    out = tokenizer.apply_chat_template(messages, tools=tools, tokenize=True,
                                        add_generation_prompt=generation_prompt)
    ids = out["input_ids"] if hasattr(out, "keys") else out
    return list(ids[0] if ids and isinstance(ids[0], list) else ids)


def outcome(family: str, case: str) -> str:
    tokenizer = family_tokenizer(family)
    messages, tools = CASES[case]
    renderer = Renderer(tokenizer)
    try:
        example = renderer.render(ChatRecord(messages, SRC, tools))
    except DataError as exc:
        if "drops the tool definitions" in exc.message:
            return DROPS_TOOLS
        if "System role not supported" in exc.message:
            return SYSTEM_UNSUPPORTED
        if "generation prompt does not start its replies" in exc.message and "<think>" in exc.message:
            return THINK_PROMPT
        return f"refused: {exc.message}"
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    parts = example.parts()
    trained_ends = []
    if not example.per_turn:
        # One rendering: the very tokens apply_chat_template gives for the conversation.
        assert example.input_ids == template_ids(tokenizer, messages, tools), (family, case)
        layouts = [(example.input_ids, example.loss_mask, i) for i in turns]
    else:
        assert len(parts) == len(turns)
        layouts = [(ids, mask, i) for (ids, mask), i in zip(parts, turns, strict=True)]
    for ids, mask, i in layouts:
        prompt = template_ids(tokenizer, messages[:i], tools, generation_prompt=True)
        if example.per_turn:
            # Per turn: the prompt inference sends, token for token, then the trained reply.
            assert ids[:len(prompt)] == prompt and not any(mask[:len(prompt)]), (family, case, i)
            assert mask[len(prompt)], (family, case, i)
            if ids != template_ids(tokenizer, messages[: i + 1], tools):
                # Only where the template renders the history otherwise once a reply follows
                # (the system message sits in the last user turn): the prompt, then the reply.
                assert family == "mistral-nemo", (family, case, i)
        trained_ends.append(max(k for k, m in enumerate(mask) if m))
    # Every trained turn ends on the template's own end-of-turn token, never an extra EOS.
    for (ids, _, _), end in zip(layouts, trained_ends, strict=True):
        assert ids[end] in renderer.special_ids and not (ids[end] == renderer.eos_id and ids[end - 1]
                                                         in renderer.special_ids), (family, case)
    return PER_TURN if example.per_turn else ONE


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_renders_as_inference_does(family: str) -> None:
    assert {case: outcome(family, case) for case in CASES} == EXPECTED[family]


def test_llama3_base_config_trains_no_extra_eos_after_eot() -> None:
    tokenizer = family_tokenizer("llama3-base-config")
    messages, _ = CASES["multi-turn"]
    example = Renderer(tokenizer).render(ChatRecord(messages, SRC))
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    assert tokenizer.eos_token == "<|end_of_text|>" and eot not in tokenizer.all_special_ids
    assert tokenizer.eos_token_id not in example.input_ids
    trained = [t for t, m in zip(example.input_ids, example.loss_mask, strict=True) if m]
    assert tokenizer.decode(trained) == "It ships today.<|eot_id|>Happy to help.<|eot_id|>"


def test_phi35_trains_end_of_turn_not_the_templates_trailing_eos() -> None:
    tokenizer = family_tokenizer("phi3.5")
    messages, _ = CASES["single"]
    example = Renderer(tokenizer).render(ChatRecord(messages, SRC))
    assert example.input_ids[-1] == tokenizer.eos_token_id and example.loss_mask[-1] == 0
    trained = [t for t, m in zip(example.input_ids, example.loss_mask, strict=True) if m]
    assert tokenizer.decode(trained) == "It ships today.<|end|>"


def test_qwen3_multi_turn_trains_each_turn_as_inference_renders_it() -> None:
    tokenizer = family_tokenizer("qwen3")
    messages, _ = CASES["multi-turn"]
    example = Renderer(tokenizer).render(ChatRecord(messages, SRC))
    first, second = example.parts()
    assert first[0] == template_ids(tokenizer, messages[:2], None)
    assert second[0] == template_ids(tokenizer, messages, None)
    runs = [tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m])
            for ids, mask in (first, second)]
    assert runs == ["<think>\n\n</think>\n\nIt ships today.<|im_end|>",
                    "<think>\n\n</think>\n\nHappy to help.<|im_end|>"]
    assert example.positions()[len(first[0])] == 0  # positions restart at the second rendering


def test_data_check_preview_shows_each_rendering(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import write_jsonl
    from tunesmith.data import check

    tokenizer = family_tokenizer("qwen3")
    monkeypatch.setattr(check, "load_tokenizer", lambda ref: tokenizer)
    messages, _ = CASES["multi-turn"]
    path = write_jsonl(tmp_path / "chat.jsonl", [{"messages": messages}])
    report = check.check_dataset(path, model="tunesmith/tiny-chat")
    assert report.ok and report.preview is not None
    text = "".join(piece for piece, _ in report.preview)
    assert "rendering 1 of 2" in text and "rendering 2 of 2" in text
    trained = "".join(piece for piece, trained in report.preview if trained)
    assert trained.count("<think>") == 2 and "Happy to help." in trained
    assert report.tokens is not None and report.tokens.total == len(
        Renderer(tokenizer).render(ChatRecord(messages, SRC)))
