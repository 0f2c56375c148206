"""Loss masks verified token by token: which text each trained run of tokens decodes to."""

from __future__ import annotations

import pytest

from tests.conftest import BUNDLED_MODEL
from tunesmith.data.records import ChatRecord, CompletionRecord, PreferenceRecord, Source, TextRecord
from tunesmith.data.render import FALLBACK_CHAT_TEMPLATE, Renderer, fit_length
from tunesmith.errors import DataError
from tunesmith.model.loading import ModelRef, load_tokenizer

SRC = Source("data.jsonl", 7)


@pytest.fixture(scope="module")
def tokenizer():
    if not (BUNDLED_MODEL / "tokenizer.json").exists():
        pytest.skip("bundled tokenizer not built")
    return load_tokenizer(ModelRef("tiny", str(BUNDLED_MODEL)))


def trained_runs(tokenizer, example) -> list[str]:
    """Contiguous trained tokens, decoded: what the model is taught to say."""
    runs, current = [], []
    for token, trained in zip(example.input_ids, example.loss_mask, strict=True):
        if trained:
            current.append(token)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    if current:
        runs.append(tokenizer.decode(current))
    return runs


def test_chat_trains_on_assistant_turns_only(tokenizer) -> None:
    record = ChatRecord(
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Where is my order?"},
            {"role": "assistant", "content": "It ships today."},
            {"role": "user", "content": "Thanks!"},
            {"role": "assistant", "content": "Happy to help — Wren"},
        ],
        SRC,
    )
    example = Renderer(tokenizer).render(record)
    assert trained_runs(tokenizer, example) == ["It ships today.<|im_end|>", "Happy to help — Wren<|im_end|>"]
    assert tokenizer.decode(example.input_ids) == tokenizer.apply_chat_template(
        record.messages, tokenize=False
    )
    assert example.loss_mask[0] == 0


def test_weight_zero_turn_is_not_trained(tokenizer) -> None:
    record = ChatRecord(
        [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Wrong answer", "weight": 0},
            {"role": "user", "content": "Try again"},
            {"role": "assistant", "content": "Right answer", "weight": 1},
        ],
        SRC,
    )
    assert trained_runs(tokenizer, Renderer(tokenizer).render(record)) == ["Right answer<|im_end|>"]


def test_loss_on_all_trains_every_token_but_the_first(tokenizer) -> None:
    record = ChatRecord([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}], SRC)
    example = Renderer(tokenizer, loss_on="all").render(record)
    assert example.loss_mask == [0] + [1] * (len(example) - 1)


def test_prompt_completion_trains_completion_and_eos(tokenizer) -> None:
    example = Renderer(tokenizer).render(CompletionRecord("Q: colour of the sky?\nA:", " Blue.", SRC))
    assert trained_runs(tokenizer, example) == [" Blue.<|im_end|>"]
    assert example.input_ids[-1] == tokenizer.eos_token_id


def test_text_trains_everything_and_learns_eos(tokenizer) -> None:
    example = Renderer(tokenizer).render(TextRecord("Merino wool is soft.", SRC))
    assert tokenizer.decode(example.input_ids) == "Merino wool is soft.<|im_end|>"
    assert example.loss_mask == [0] + [1] * (len(example) - 1)


def test_preference_pair_trains_only_the_answers(tokenizer) -> None:
    record = PreferenceRecord(
        [{"role": "user", "content": "Hi"}],
        [{"role": "assistant", "content": "Hello!"}],
        [{"role": "assistant", "content": "What."}],
        SRC,
    )
    chosen, rejected = Renderer(tokenizer).render_pair(record)
    assert trained_runs(tokenizer, chosen) == ["Hello!<|im_end|>"]
    assert trained_runs(tokenizer, rejected) == ["What.<|im_end|>"]


def test_fallback_template_when_tokenizer_has_none(stories_path) -> None:
    tokenizer = load_tokenizer(ModelRef("stories", str(stories_path)))
    assert not tokenizer.chat_template
    renderer = Renderer(tokenizer)
    assert renderer.used_fallback_template and tokenizer.chat_template == FALLBACK_CHAT_TEMPLATE
    record = ChatRecord(
        [{"role": "user", "content": "Tell a story"}, {"role": "assistant", "content": "Once upon a time"}],
        SRC,
    )
    example = renderer.render(record)
    assert [t.strip() for t in trained_runs(tokenizer, example)] == ["Once upon a time</s>"]


def test_template_that_drops_the_answer_is_an_error_naming_the_example(tokenizer) -> None:
    renderer = Renderer(tokenizer)
    tokenizer_template = tokenizer.chat_template
    try:
        tokenizer.chat_template = (
            "{% for m in messages %}{% if m.role != 'assistant' %}{{ m.content }}{% endif %}{% endfor %}"
        )
        with pytest.raises(DataError, match=r"data.jsonl:7 \(messages\[1\]\): the chat template drops "
                                            r"the reply's text \('Hello'\)"):
            renderer.render(
                ChatRecord(
                    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}], SRC
                )
            )
    finally:
        tokenizer.chat_template = tokenizer_template


def test_template_whose_prompt_is_not_the_start_of_the_reply_is_refused(tokenizer) -> None:
    renderer = Renderer(tokenizer)
    original = tokenizer.chat_template
    try:  # numbers the turns from the end, so earlier turns change when one is added
        tokenizer.chat_template = (
            "{% for m in messages %}{{ messages|length - loop.index }}:{{ m.content }}"
            "{% endfor %}{% if add_generation_prompt %}A:{% endif %}"
        )
        with pytest.raises(DataError, match="generation prompt does not start its replies"):
            renderer.render(
                ChatRecord(
                    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}], SRC
                )
            )
    finally:
        tokenizer.chat_template = original


def test_fit_length_truncates_or_drops(tokenizer) -> None:
    renderer = Renderer(tokenizer)
    long = renderer.render(
        ChatRecord([{"role": "user", "content": "word " * 50}, {"role": "assistant", "content": "ok"}], SRC)
    )
    assert fit_length(long, len(long), "truncate") is long
    assert fit_length(long, 10, "drop") is None
    assert fit_length(long, 10, "truncate") is None  # the answer was cut away entirely
    text = renderer.render(TextRecord("wool " * 40, SRC))
    cut = fit_length(text, 12, "truncate")
    assert cut is not None and len(cut) == 12 and cut.trained_tokens == 11
