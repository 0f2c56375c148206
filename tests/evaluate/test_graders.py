"""Each grader on hand-made cases, malformed model output included; the Python grader's
crash and timeout handling; the multi formula refusing anything but arithmetic."""

from __future__ import annotations

import pytest

from tunesmith.errors import RecipeError
from tunesmith.evaluate.graders import build_grader
from tunesmith.evaluate.similarity import rouge_l, token_f1

ITEM = {"reference": "The box is red.", "category": "billing", "answer": "42",
        "keywords": ["refund", "label"]}


def grade(config: dict, text: str, item: dict = ITEM):
    grader = build_grader(config)
    try:
        return grader.grade(text, item)
    finally:
        grader.close()


@pytest.mark.parametrize(("operation", "text", "expected"), [
    ("eq", "42", 1.0), ("eq", " 42\n", 1.0), ("eq", "43", 0.0), ("ne", "43", 1.0),
    ("like", "it is 42!", 1.0), ("like", "it is 4 2", 0.0), ("ilike", "ANSWER 42", 1.0), ("eq", "", 0.0),
])
def test_string_check(operation, text, expected) -> None:
    config = {"type": "string_check", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
              "operation": operation}
    assert grade(config, text).score == expected


def test_like_is_case_sensitive_and_ilike_is_not() -> None:
    base = {"type": "string_check", "input": "{{sample.output_text}}", "reference": "Red"}
    assert grade({**base, "operation": "like"}, "the red box").score == 0.0
    assert grade({**base, "operation": "ilike"}, "the red box").score == 1.0


def test_text_similarity_metrics() -> None:
    config = {"type": "text_similarity", "input": "{{sample.output_text}}",
              "reference": "{{item.reference}}", "evaluation_metric": "rouge_l"}
    assert grade(config, "The box is red.").score == pytest.approx(1.0)
    assert grade(config, "completely unrelated words").score == 0.0
    partial = grade(config, "the box is blue").score
    assert 0.5 < partial < 1.0  # LCS "the box is": 3 of 4 tokens each way
    assert partial == pytest.approx(0.75)
    f1 = grade({**config, "evaluation_metric": "token_f1"}, "red box").score
    # SQuAD normalisation drops "the": reference {box, is, red}, candidate {red, box}
    assert f1 == pytest.approx(2 * 1.0 * (2 / 3) / (1.0 + 2 / 3))
    fuzzy = grade({**config, "evaluation_metric": "fuzzy_match"}, "The box is rde.").score
    assert 0.8 < fuzzy < 1.0
    assert grade({**config, "pass_threshold": 0.9}, "the box is blue").score == 0.0


def test_similarity_functions_directly() -> None:
    assert rouge_l("a b c d", "a c d") == pytest.approx(2 * (3 / 4) * 1.0 / (3 / 4 + 1.0))
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0


def test_contains_and_regex() -> None:
    assert grade({"type": "contains", "reference": "RED"}, "a red box").score == 1.0
    assert grade({"type": "contains", "reference": "RED", "case_sensitive": True}, "a red box").score == 0.0
    # a list reference scores the fraction of needles found
    assert grade({"type": "contains", "reference": "{{item.keywords}}"}, "your refund is on its way").score \
        == 0.5
    order = {"type": "regex", "pattern": r"\bBL-\d{5}\b"}
    assert grade(order, "Order BL-12345 shipped").score == 1.0
    assert grade(order, "Order BL-123 shipped").score == 0.0
    assert grade({**order, "pattern": "bl-", "ignore_case": True}, "BL-1").score == 1.0


@pytest.mark.parametrize(("text", "expected"), [
    ('{"category": "billing"}', 1.0), ("[1, 2]", 1.0), ('{"category": "billing"', 0.0), ("", 0.0),
    ("Sure! {\"category\": \"billing\"}", 0.0), ("NaN", 1.0),
])
def test_json_valid(text, expected) -> None:
    result = grade({"type": "json_valid"}, text)
    assert result.score == expected
    assert (result.error is None) == bool(expected)


SCHEMA = {"type": "object", "required": ["category"], "additionalProperties": False,
          "properties": {"category": {"enum": ["shipping", "billing", "account"]}}}


@pytest.mark.parametrize(("text", "expected", "error"), [
    ('{"category": "billing"}', 1.0, None),
    ('{"category": "refunds"}', 0.0, "at category"),
    ('{"category": "billing", "extra": 1}', 0.0, "Additional properties"),
    ('{"label": "billing"}', 0.0, "'category' is a required property"),
    ('["billing"]', 0.0, "not of type 'object'"),
    ("billing", 0.0, "not valid JSON"),
])
def test_json_schema(text, expected, error) -> None:
    result = grade({"type": "json_schema", "schema": SCHEMA}, text)
    assert result.score == expected
    if error:
        assert error in result.error


def test_json_schema_rejects_a_bad_schema() -> None:
    with pytest.raises(RecipeError) as info:
        build_grader({"type": "json_schema", "schema": {"type": "banana"}})
    assert info.value.where == "grader.schema"


def test_label_accuracy_on_text_and_json_output() -> None:
    labels = ["shipping", "billing", "account"]
    plain = {"type": "label", "reference": "{{item.category}}", "labels": labels}
    assert grade(plain, " Billing \n").score == 1.0
    assert grade(plain, "shipping").score == 0.0
    outside = grade(plain, "cheese")
    assert outside.score == 0.0 and "not one of the labels" in outside.error
    field = {**plain, "field": "category"}
    assert grade(field, '{"category": "billing"}').score == 1.0
    assert grade(field, '{"category": "account"}').score == 0.0
    assert "not valid JSON" in grade(field, '{"category": "bill').error
    assert "no 'category'" in grade(field, '{"cat": "billing"}').error
    assert "not a JSON object" in grade(field, '"billing"').error


def test_templates_reading_the_reply_as_json() -> None:
    config = {"type": "string_check", "input": "{{sample.output_json.category}}",
              "reference": "{{item.category}}", "operation": "eq"}
    assert grade(config, '{"category": "billing"}').score == 1.0
    broken = grade(config, "category: billing")
    assert broken.score == 0.0 and "not valid JSON" in broken.error
    missing = grade(config, '{"label": "billing"}')
    assert missing.score == 0.0 and "no 'category'" in missing.error
    item_missing = grade({**config, "reference": "{{item.nope}}"}, '{"category": "billing"}')
    assert item_missing.score == 0.0 and "item has no 'nope'" in item_missing.error


def test_weighted_and_multi() -> None:
    parts = {"exact": {"type": "string_check", "input": "{{sample.output_text}}",
                       "reference": "{{item.answer}}", "operation": "eq"},
             "json": {"type": "json_valid"}}
    weighted = {"type": "weighted", "graders": parts, "weights": {"exact": 3, "json": 1}}
    assert grade(weighted, "42").score == 1.0  # "42" is both the answer and valid JSON
    assert grade(weighted, '"41"').score == 0.25
    multi = {"type": "multi", "graders": parts, "calculate_output": "0.5 * exact + 0.5 * max(json, exact)"}
    assert grade(multi, "42").score == 1.0
    assert grade(multi, "{}").score == 0.5
    assert grade(multi, "nope").score == 0.0
    assert grade({**multi, "calculate_output": "exact / (json - json)"}, "42").error


@pytest.mark.parametrize("formula", [
    "__import__('os').system('echo hi')", "exact.__class__", "[exact]", "exact if json else 0",
    "open('x')", "unknown + 1", "lambda: 1", "exact(1)",
])
def test_multi_refuses_anything_but_arithmetic(formula) -> None:
    parts = {"exact": {"type": "json_valid"}, "json": {"type": "json_valid"}}
    with pytest.raises(RecipeError) as info:
        build_grader({"type": "multi", "graders": parts, "calculate_output": formula})
    assert "calculate_output" in info.value.message


def test_bad_definitions_name_the_key() -> None:
    cases = [
        ({"type": "nope"}, "grader.type"),
        ({"type": "string_check", "input": "x", "reference": "y", "operation": "equals"}, "grader.operation"),
        ({"type": "string_check", "input": "x", "reference": "y"}, "grader.operation"),
        ({"type": "contains", "reference": "x", "colour": "red"}, "grader.colour"),
        ({"type": "regex", "pattern": "("}, "grader.pattern"),
        ({"type": "text_similarity", "input": "x", "reference": "y", "evaluation_metric": "bleu"},
         "grader.evaluation_metric"),
        ({"type": "weighted", "graders": {"a": {"type": "json_valid", "oops": 1}}}, "grader.graders.a.oops"),
        ({"type": "python", "source": "def other(): pass"}, "grader"),
        ({"type": "python", "source": "def grade(:"}, "grader"),
        ({"type": "python", "source": "def grade(s, i):\n    return 1", "timeout": "soon"}, "grader"),
    ]
    for config, where in cases:
        with pytest.raises(RecipeError) as info:
            build_grader(config)
        assert info.value.where == where, config


PY_ITEM = {"answer": "42"}


def python_grader(body: str, timeout: float = 5.0):
    return build_grader({"type": "python", "name": "py", "timeout": timeout, "source": body})


def test_python_grader_scores_in_a_child_process() -> None:
    grader = python_grader(
        "import os\n"
        "def grade(sample, item):\n"
        "    print('debug output is ignored')\n"
        "    return 1.0 if sample['output_text'].strip() == item['answer'] else 0.25\n")
    try:
        assert grader("42", PY_ITEM) == 1.0
        assert grader("41", PY_ITEM) == 0.25
        assert grader.name == "py"
    finally:
        grader.close()


def test_python_grader_exceptions_and_bad_values_score_zero() -> None:
    grader = python_grader(
        "def grade(sample, item):\n"
        "    text = sample['output_text']\n"
        "    if text == 'raise':\n"
        "        raise KeyError('missing')\n"
        "    if text == 'string':\n"
        "        return 'high'\n"
        "    if text == 'nan':\n"
        "        return float('nan')\n"
        "    if text == 'big':\n"
        "        return 7\n"
        "    return 1\n")
    try:
        assert grader.grade("raise", PY_ITEM).error.startswith("KeyError")
        assert grader.grade("string", PY_ITEM).error.startswith("ValueError")
        assert grader.grade("nan", PY_ITEM).score == 0.0
        big = grader.grade("big", PY_ITEM)
        assert big.score == 1.0 and "clipped" in big.error
        assert grader.grade("fine", PY_ITEM).score == 1.0 and grader.grade("fine", PY_ITEM).error is None
    finally:
        grader.close()


def test_python_grader_crash_and_timeout_score_zero_and_recover() -> None:
    grader = python_grader(
        "import os, time\n"
        "def grade(sample, item):\n"
        "    if sample['output_text'] == 'crash':\n"
        "        import sys; sys.stderr.write('boom\\n'); sys.stderr.flush(); os._exit(3)\n"
        "    if sample['output_text'] == 'hang':\n"
        "        time.sleep(60)\n"
        "    return 0.5\n", timeout=1.0)
    try:
        crashed = grader.grade("crash", PY_ITEM)
        assert crashed.score == 0.0 and "crashed (exit code 3): boom" in crashed.error
        assert grader("after a crash", PY_ITEM) == 0.5
        hung = grader.grade("hang", PY_ITEM)
        assert hung.score == 0.0 and "timed out after 1s" in hung.error
        assert grader("after a timeout", PY_ITEM) == 0.5
    finally:
        grader.close()


def test_python_grader_that_fails_to_load_scores_zero() -> None:
    grader = python_grader("import module_that_does_not_exist\ndef grade(sample, item):\n    return 1\n")
    try:
        result = grader.grade("x", PY_ITEM)
        assert result.score == 0.0 and "ModuleNotFoundError" in result.error
    finally:
        grader.close()


def test_python_grader_runs_outside_this_process() -> None:
    import os

    grader = python_grader("import os\ndef grade(sample, item):\n    return os.getpid() / 1e9\n")
    try:
        assert grader("x", PY_ITEM) != pytest.approx(os.getpid() / 1e9)
    finally:
        grader.close()
