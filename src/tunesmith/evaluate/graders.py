"""Graders: score one model reply against one item, a number in [0, 1].

The definitions mirror the hosted reinforcement fine-tuning grader shapes, so the same
definitions serve evaluation and reinforcement training (GRPO) alike:

    {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}",
     "reference": "{{item.reference}}", "operation": "eq"}          # eq | ne | like | ilike
    {"type": "text_similarity", "input": "...", "reference": "...",
     "evaluation_metric": "rouge_l"}    # fuzzy_match | token_f1 | rouge_1 | rouge_2 | rouge_l
    {"type": "python", "source": "def grade(sample, item):\n    return 1.0", "timeout": 10}
    {"type": "multi", "graders": {"a": {...}, "b": {...}}, "calculate_output": "0.7 * a + 0.3 * b"}

plus tunesmith's own: contains, regex, json_valid, json_schema, label (classification
accuracy against a taxonomy), weighted (a weighted mean of named graders), and
tool_call_name / tool_call_arguments (the reply's tool calls against item.tool_calls:
the right functions; the right functions with arguments equal as JSON), and reward_model
({"type": "reward_model", "path": RUN_OR_FOLDER}: a model trained with method: reward scores
the reply after item.messages), in evaluation and GRPO alike.

Templates: "{{sample.output_text}}" is the reply, "{{sample.output_json.key}}" a field of
the reply read as JSON, "{{item.key}}" a field of the held-out item (item.reference is the
example's final assistant reply). A template that is a single placeholder keeps the
value's type (a list stays a list).

Public API, stable for evaluation and reinforcement training:
`build_grader(config, where, load_reward) -> Grader` (KINDS: the table of kinds);
`grader(sample_text, item) -> float` and
`grader.grade(sample_text, item) -> Grade` (score plus the error, if any). A grader never
raises on bad model output: the score is 0 and the error says why.
"""

from __future__ import annotations

import ast
import json
import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from tunesmith.errors import RecipeError
from tunesmith.evaluate.similarity import METRICS

OUTPUT = "{{sample.output_text}}"
REFERENCE = "{{item.reference}}"
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][\w.]*)\s*\}\}")


@dataclass(slots=True)
class Grade:
    score: float
    error: str | None = None


class GraderInputError(Exception):
    """A template names something the sample or item does not have."""


class Grader:
    """Base class: subclasses implement `_score`; errors become a score of 0."""

    kind = ""

    def __init__(self, name: str):
        self.name = name

    def __call__(self, sample_text: str, item: dict[str, Any]) -> float:
        return self.grade(sample_text, item).score

    def grade(self, sample_text: str, item: dict[str, Any]) -> Grade:
        try:
            result = self._score(sample_namespace(sample_text), item)
        except GraderInputError as exc:
            return Grade(0.0, str(exc))
        if isinstance(result, Grade):
            return result
        return Grade(min(1.0, max(0.0, float(result))))

    def _score(self, sample: dict[str, Any], item: dict[str, Any]) -> float | Grade:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the grader holds (a child process for python graders)."""


# --- templates -----------------------------------------------------------------------------


def sample_namespace(text: str) -> dict[str, Any]:
    return {"output_text": text, "output_json": _parse_json(text)}


_MISSING = object()


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        return _MISSING


def _lookup(path: str, sample: dict[str, Any], item: dict[str, Any]) -> Any:
    root, *parts = path.split(".")
    if root not in ("sample", "item"):
        raise GraderInputError(f"template names '{root}'; use sample.* or item.*")
    value: Any = sample if root == "sample" else item
    walked = root
    for part in parts:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            value = _MISSING
        if value is _MISSING:
            if walked == "sample.output_json" or (walked == "sample" and part == "output_json"):
                raise GraderInputError("the reply is not valid JSON" if walked == "sample"
                                       else f"the reply's JSON has no '{part}'")
            raise GraderInputError(f"{walked} has no '{part}'")
        walked += f".{part}"
    return value


def render(template: Any, sample: dict[str, Any], item: dict[str, Any]) -> Any:
    """Fill a template; a template that is one placeholder returns the value itself."""
    if not isinstance(template, str):
        return template
    whole = _PLACEHOLDER.fullmatch(template.strip())
    if whole:
        return _lookup(whole.group(1), sample, item)

    def text(match: re.Match[str]) -> str:
        value = _lookup(match.group(1), sample, item)
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)

    return _PLACEHOLDER.sub(text, template)


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


# --- the graders -----------------------------------------------------------------------------


class StringCheck(Grader):
    kind = "string_check"
    OPERATIONS: ClassVar[dict[str, Callable[[str, str], bool]]] = {
        "eq": lambda a, b: a == b,
        "ne": lambda a, b: a != b,
        "like": lambda a, b: b in a,
        "ilike": lambda a, b: b.lower() in a.lower(),
    }

    def __init__(self, name: str, input: str, reference: Any, operation: str):
        super().__init__(name)
        self.input, self.reference, self.check = input, reference, self.OPERATIONS[operation]

    def _score(self, sample: dict[str, Any], item: dict[str, Any]) -> float:
        got = _as_text(render(self.input, sample, item))
        want = _as_text(render(self.reference, sample, item))
        return float(self.check(got.strip(), want.strip()))


class TextSimilarity(Grader):
    kind = "text_similarity"

    def __init__(self, name: str, input: str, reference: Any, evaluation_metric: str,
                 pass_threshold: float | None = None):
        super().__init__(name)
        self.input, self.reference, self.metric = input, reference, METRICS[evaluation_metric]
        self.pass_threshold = pass_threshold

    def _score(self, sample: dict[str, Any], item: dict[str, Any]) -> float:
        value = self.metric(_as_text(render(self.input, sample, item)),
                            _as_text(render(self.reference, sample, item)))
        if self.pass_threshold is not None:
            return float(value >= self.pass_threshold)
        return value


class Contains(Grader):
    kind = "contains"

    def __init__(self, name: str, reference: Any, input: str = OUTPUT, case_sensitive: bool = False):
        super().__init__(name)
        self.input, self.reference, self.case_sensitive = input, reference, case_sensitive

    def _score(self, sample: dict[str, Any], item: dict[str, Any]) -> float:
        got = _as_text(render(self.input, sample, item))
        wanted = render(self.reference, sample, item)
        needles = [_as_text(w) for w in wanted] if isinstance(wanted, list) else [_as_text(wanted)]
        if not self.case_sensitive:
            got, needles = got.lower(), [n.lower() for n in needles]
        return sum(n in got for n in needles) / max(len(needles), 1)


class Regex(Grader):
    kind = "regex"

    def __init__(self, name: str, pattern: str, input: str = OUTPUT, ignore_case: bool = False):
        super().__init__(name)
        self.input = input
        self.pattern = re.compile(pattern, re.IGNORECASE if ignore_case else 0)

    def _score(self, sample: dict[str, Any], item: dict[str, Any]) -> float:
        return float(self.pattern.search(_as_text(render(self.input, sample, item))) is not None)


class JsonValid(Grader):
    kind = "json_valid"

    def __init__(self, name: str, input: str = OUTPUT):
        super().__init__(name)
        self.input = input

    def _score(self, sample: dict[str, Any], item: dict[str, Any]) -> float | Grade:
        parsed = _parse_json(_as_text(render(self.input, sample, item)))
        return Grade(0.0, "not valid JSON") if parsed is _MISSING else 1.0


class JsonSchema(Grader):
    kind = "json_schema"

    def __init__(self, name: str, schema: dict[str, Any], input: str = OUTPUT):
        import jsonschema

        super().__init__(name)
        self.input = input
        validator = jsonschema.validators.validator_for(schema)
        validator.check_schema(schema)
        self.validator = validator(schema)

    def _score(self, sample: dict[str, Any], item: dict[str, Any]) -> float | Grade:
        parsed = _parse_json(_as_text(render(self.input, sample, item)))
        if parsed is _MISSING:
            return Grade(0.0, "not valid JSON")
        error = next(iter(self.validator.iter_errors(parsed)), None)
        if error is not None:
            where = "/".join(map(str, error.absolute_path)) or "(root)"
            return Grade(0.0, f"does not match the schema at {where}: {error.message}")
        return 1.0


class Label(Grader):
    """Classification: the predicted label (the reply, or one field of it read as JSON)
    equals the reference label, compared without case and surrounding spaces."""

    kind = "label"

    def __init__(self, name: str, reference: Any = REFERENCE, input: str = OUTPUT,
                 labels: list[str] | None = None, field: str | None = None):
        super().__init__(name)
        self.input, self.reference, self.field = input, reference, field
        self.labels = {label.strip().lower() for label in labels} if labels else None

    def _score(self, sample: dict[str, Any], item: dict[str, Any]) -> float | Grade:
        predicted = self.predict(sample, item)
        if isinstance(predicted, Grade):
            return predicted
        want = _as_text(render(self.reference, sample, item)).strip().lower()
        if self.labels is not None and predicted not in self.labels:
            return Grade(0.0, f"'{predicted}' is not one of the labels")
        return float(predicted == want)

    def predict(self, sample: dict[str, Any], item: dict[str, Any]) -> str | Grade:
        text = _as_text(render(self.input, sample, item))
        if self.field is None:
            return text.strip().lower()
        parsed = _parse_json(text)
        if not isinstance(parsed, dict):
            return Grade(0.0, "not a JSON object" if parsed is not _MISSING else "not valid JSON")
        if self.field not in parsed:
            return Grade(0.0, f"the JSON has no '{self.field}'")
        return _as_text(parsed[self.field]).strip().lower()


class Python(Grader):
    """`grade(sample, item) -> float` from the user's source, in a child process."""

    kind = "python"

    def __init__(self, name: str, source: str, timeout: float = 10.0, image_tag: str | None = None):
        from tunesmith.evaluate.sandbox import PythonGraderProcess

        super().__init__(name)
        try:
            tree = ast.parse(source)
        except SyntaxError as exc:
            raise ValueError(f"source is not valid Python (line {exc.lineno}): {exc.msg}") from None
        if not any(isinstance(n, ast.FunctionDef) and n.name == "grade" for n in tree.body):
            raise ValueError("source must define grade(sample, item)")
        if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not 0 < timeout <= 3600:
            raise ValueError(f"timeout must be a number of seconds between 0 and 3600 (got {timeout!r})")
        self.process = PythonGraderProcess(source, float(timeout))

    def grade(self, sample_text: str, item: dict[str, Any]) -> Grade:
        sample = sample_namespace(sample_text)
        if sample["output_json"] is _MISSING:
            sample["output_json"] = None
        score, error = self.process.grade(sample, item)
        return Grade(score, error)

    def close(self) -> None:
        self.process.close()


class _Combined(Grader):
    def __init__(self, name: str, graders: dict[str, Grader]):
        super().__init__(name)
        self.graders = graders

    def _parts(self, sample_text: str, item: dict[str, Any]) -> tuple[dict[str, float], list[str]]:
        scores, errors = {}, []
        for key, grader in self.graders.items():
            grade = grader.grade(sample_text, item)
            scores[key] = grade.score
            if grade.error:
                errors.append(f"{key}: {grade.error}")
        return scores, errors

    def close(self) -> None:
        for grader in self.graders.values():
            grader.close()


class Weighted(_Combined):
    kind = "weighted"

    def __init__(self, name: str, graders: dict[str, Grader], weights: dict[str, float] | None = None):
        super().__init__(name, graders)
        weights = weights or {}
        unknown = set(weights) - set(graders)
        if unknown:
            raise ValueError(f"weights name unknown graders: {', '.join(sorted(unknown))}")
        self.weights = {key: float(weights.get(key, 1.0)) for key in graders}
        if any(w < 0 for w in self.weights.values()) or sum(self.weights.values()) <= 0:
            raise ValueError("weights must be non-negative with a positive sum")

    def grade(self, sample_text: str, item: dict[str, Any]) -> Grade:
        scores, errors = self._parts(sample_text, item)
        total = sum(self.weights[k] * s for k, s in scores.items()) / sum(self.weights.values())
        return Grade(total, "; ".join(errors) or None)


_BINARY: dict[type, Callable[[float, float], float]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.Pow: operator.pow, ast.Mod: operator.mod}
_UNARY: dict[type, Callable[[float], float]] = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_FUNCTIONS: dict[str, Callable[..., float]] = {
    "min": min, "max": max, "abs": abs, "floor": math.floor, "ceil": math.ceil, "sqrt": math.sqrt,
    "exp": math.exp, "log": math.log}


class Multi(_Combined):
    """Named graders combined by an arithmetic formula.

    The formula is parsed with `ast` and walked here: only numbers, the graders' names,
    + - * / % ** and min/max/abs/floor/ceil/sqrt/exp/log are allowed, so user text is
    never evaluated as Python.
    """

    kind = "multi"

    def __init__(self, name: str, graders: dict[str, Grader], calculate_output: str):
        super().__init__(name, graders)
        try:
            self.formula = ast.parse(calculate_output, mode="eval").body
        except SyntaxError as exc:
            raise ValueError(f"calculate_output is not a formula: {exc.msg}") from None
        self._check(self.formula)

    def _check(self, node: ast.AST) -> None:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float) \
                and not isinstance(node.value, bool):
            return
        if isinstance(node, ast.Name):
            if node.id not in self.graders:
                raise ValueError(f"calculate_output names '{node.id}', which is not one of the graders "
                                 f"({', '.join(self.graders)})")
            return
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            self._check(node.left)
            self._check(node.right)
            return
        if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            self._check(node.operand)
            return
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS \
                and not node.keywords and node.args:
            for arg in node.args:
                self._check(arg)
            return
        raise ValueError(f"calculate_output may only use numbers, grader names, arithmetic and "
                         f"{', '.join(_FUNCTIONS)}; found {ast.unparse(node)!r}")

    def _evaluate(self, node: ast.AST, scores: dict[str, float]) -> float:
        if isinstance(node, ast.Constant):
            return float(node.value)
        if isinstance(node, ast.Name):
            return scores[node.id]
        if isinstance(node, ast.BinOp):
            left, right = self._evaluate(node.left, scores), self._evaluate(node.right, scores)
            return _BINARY[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp):
            return _UNARY[type(node.op)](self._evaluate(node.operand, scores))
        assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        return float(_FUNCTIONS[node.func.id](*(self._evaluate(a, scores) for a in node.args)))

    def grade(self, sample_text: str, item: dict[str, Any]) -> Grade:
        scores, errors = self._parts(sample_text, item)
        try:
            value = self._evaluate(self.formula, scores)
        except (ArithmeticError, ValueError) as exc:
            return Grade(0.0, "; ".join([*errors, f"calculate_output failed: {exc}"]))
        if not math.isfinite(value):
            return Grade(0.0, "; ".join([*errors, f"calculate_output gave {value}"]))
        return Grade(min(1.0, max(0.0, value)), "; ".join(errors) or None)


# --- tool calls --------------------------------------------------------------------------------


def _reference_calls(item: dict[str, Any]) -> list[tuple[str, Any]]:
    """(name, arguments) of the item's reference tool calls (OpenAI's shape, arguments a JSON
    string or an object)."""
    out = []
    for call in item.get("tool_calls") or []:
        function = call.get("function", call) if isinstance(call, dict) else {}
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            out.append((function["name"], _arguments_value(function.get("arguments"))))
    return out


def _arguments_value(value: Any) -> Any:
    if isinstance(value, str):
        parsed = _parse_json(value)
        return value if parsed is _MISSING else parsed
    return {} if value is None else value


def reply_tool_calls(text: str) -> list[tuple[str, Any]]:
    """Tool calls written in a reply: every JSON object in it with a "name" and "arguments"
    (or "parameters"), alone, in a list or under "function" (Hermes <tool_call> tags,
    Llama-3 JSON, Mistral's [TOOL_CALLS] list and OpenAI's shape all read this way)."""
    decoder = json.JSONDecoder()
    calls: list[tuple[str, Any]] = []
    position = 0
    while (start := _next_json(text, position)) is not None:
        try:
            value, end = decoder.raw_decode(text, start)
        except (json.JSONDecodeError, RecursionError):
            position = start + 1
            continue
        calls += _calls_in(value)
        position = end
    return calls


def _next_json(text: str, position: int) -> int | None:
    found = [i for i in (text.find("{", position), text.find("[", position)) if i >= 0]
    return min(found) if found else None


def _calls_in(value: Any) -> list[tuple[str, Any]]:
    if isinstance(value, list):
        return [call for element in value for call in _calls_in(element)]
    if not isinstance(value, dict):
        return []
    if isinstance(value.get("function"), dict):
        return _calls_in(value["function"])
    if isinstance(value.get("name"), str) and ("arguments" in value or "parameters" in value):
        return [(value["name"], _arguments_value(value.get("arguments", value.get("parameters"))))]
    return []


class _ToolCallGrader(Grader):
    """Scores the reply's tool calls against the item's: matched calls over the larger of
    the two counts, so a missing or an extra call costs alike (as the hosted
    function-calling evaluation counts them)."""

    def __init__(self, name: str, input: str = OUTPUT):
        super().__init__(name)
        self.input = input

    def _score(self, sample: dict[str, Any], item: dict[str, Any]) -> float | Grade:
        expected = _reference_calls(item)
        if not expected:
            return Grade(0.0, "the item has no reference tool call")
        got = reply_tool_calls(_as_text(render(self.input, sample, item)))
        if not got:
            return Grade(0.0, "the reply holds no tool call")
        left = list(got)
        matched = 0
        for call in expected:
            hit = next((k for k, other in enumerate(left) if self._same(call, other)), None)
            if hit is not None:
                matched += 1
                left.pop(hit)
        return matched / max(len(expected), len(got))

    def _same(self, expected: tuple[str, Any], got: tuple[str, Any]) -> bool:
        raise NotImplementedError


class ToolCallName(_ToolCallGrader):
    """The right functions are called."""

    kind = "tool_call_name"

    def _same(self, expected: tuple[str, Any], got: tuple[str, Any]) -> bool:
        return expected[0] == got[0]


class ToolCallArguments(_ToolCallGrader):
    """The right functions with arguments equal as JSON (key order and spacing aside)."""

    kind = "tool_call_arguments"

    def _same(self, expected: tuple[str, Any], got: tuple[str, Any]) -> bool:
        return expected[0] == got[0] and expected[1] == got[1]


# --- reward models --------------------------------------------------------------------------


class RewardModel(Grader):
    """A trained reward model's sigmoid score of the reply after the item's `messages`.

    The model is loaded by the caller's `load` when the grader is built (evaluation and GRPO pass
    train/objectives/reward_model.py's `load_reward_scorer`; taking it as an argument keeps this
    table free of model code). Without one the definition is only checked, as reading a recipe
    does, and grading is refused."""

    kind = "reward_model"

    def __init__(self, name: str, path: str, load: Callable[[str], Callable[[str, dict[str, Any]], float]]
                 | None = None):
        super().__init__(name)
        if not isinstance(path, str) or not path:
            raise ValueError("path must name a run or folder trained with method: reward")
        self.path = path
        self._scorer = load(path) if load is not None else None

    def grade(self, sample_text: str, item: dict[str, Any]) -> Grade:
        if self._scorer is None:
            raise RuntimeError("this reward_model grader was built without a loader (checked only)")
        return Grade(min(1.0, max(0.0, float(self._scorer(sample_text, item)))))


# --- building from the recipe ------------------------------------------------------------------

KINDS: dict[str, type[Grader]] = {cls.kind: cls for cls in (
    StringCheck, TextSimilarity, Python, Multi, Contains, Regex, JsonValid, JsonSchema, Label, Weighted,
    ToolCallName, ToolCallArguments, RewardModel)}
_KEYS: dict[str, tuple[set[str], set[str]]] = {  # kind -> (required, optional) keys
    "string_check": ({"input", "reference", "operation"}, set()),
    "text_similarity": ({"input", "reference", "evaluation_metric"}, {"pass_threshold"}),
    "python": ({"source"}, {"timeout", "image_tag"}),
    "multi": ({"graders", "calculate_output"}, set()),
    "contains": ({"reference"}, {"input", "case_sensitive"}),
    "regex": ({"pattern"}, {"input", "ignore_case"}),
    "json_valid": (set(), {"input"}),
    "json_schema": ({"schema"}, {"input"}),
    "label": (set(), {"input", "reference", "labels", "field"}),
    "weighted": ({"graders"}, {"weights"}),
    "tool_call_name": (set(), {"input"}),
    "tool_call_arguments": (set(), {"input"}),
    "reward_model": ({"path"}, set()),
}
_CHOICES = {("string_check", "operation"): StringCheck.OPERATIONS,
            ("text_similarity", "evaluation_metric"): METRICS}


RewardLoader = Callable[[str], Callable[[str, dict[str, Any]], float]]


def build_grader(config: dict[str, Any], where: str = "grader",
                 load_reward: RewardLoader | None = None) -> Grader:
    """A grader from its definition; a bad definition is a RecipeError naming the key.
    `load_reward` loads the model of a reward_model grader (none: the definition is only checked)."""
    if not isinstance(config, dict):
        raise RecipeError("a grader is a mapping with a 'type'", where=where)
    kind = config.get("type")
    if kind not in KINDS:
        raise RecipeError(f"unknown grader type {kind!r}", where=f"{where}.type",
                          fix=f"use one of: {', '.join(KINDS)}")
    required, optional = _KEYS[kind]
    allowed = required | optional | {"type", "name"}
    for key in config:
        if key not in allowed:
            raise RecipeError(f"unknown key for a {kind} grader", where=f"{where}.{key}",
                              fix=f"allowed: {', '.join(sorted(allowed))}")
    missing = sorted(required - set(config))
    if missing:
        raise RecipeError(f"a {kind} grader needs {', '.join(missing)}", where=f"{where}.{missing[0]}")
    for (choice_kind, key), choices in _CHOICES.items():
        if kind == choice_kind and config[key] not in choices:
            raise RecipeError(f"{config[key]!r} is not supported", where=f"{where}.{key}",
                              fix=f"use one of: {', '.join(choices)}")
    name = str(config.get("name") or kind)
    kwargs = {k: v for k, v in config.items() if k not in ("type", "name")}
    if kind in ("multi", "weighted"):
        parts = kwargs["graders"]
        if not isinstance(parts, dict) or not parts:
            raise RecipeError("graders must map names to grader definitions", where=f"{where}.graders")
        kwargs["graders"] = {
            str(key): build_grader({"name": key, **sub} if isinstance(sub, dict) else sub,
                                   f"{where}.graders.{key}", load_reward)
            for key, sub in parts.items()}
    if kind == "reward_model":
        kwargs["load"] = load_reward
    try:
        return KINDS[kind](name, **kwargs)
    except re.error as exc:
        raise RecipeError(f"not a valid regular expression: {exc}", where=f"{where}.pattern") from None
    except (ValueError, TypeError) as exc:
        raise RecipeError(str(exc), where=where) from None
    except Exception as exc:  # jsonschema.SchemaError and friends: the schema itself is wrong
        if type(exc).__name__ == "SchemaError":
            raise RecipeError(f"not a valid JSON Schema: {getattr(exc, 'message', exc)}",
                              where=f"{where}.schema") from None
        raise


def default_graders() -> list[dict[str, Any]]:
    """Used when the recipe names none, for held-out items with a reference reply's text."""
    return [{"type": "text_similarity", "name": "rouge_l", "input": OUTPUT, "reference": REFERENCE,
             "evaluation_metric": "rouge_l"},
            {"type": "text_similarity", "name": "token_f1", "input": OUTPUT, "reference": REFERENCE,
             "evaluation_metric": "token_f1"}]


def default_tool_graders() -> list[dict[str, Any]]:
    """Used when the recipe names none, for held-out items whose reference reply is a tool call."""
    return [{"type": "tool_call_name", "name": "tool_call_name"},
            {"type": "tool_call_arguments", "name": "tool_call_arguments"}]


def build_graders(configs: list[dict[str, Any]], where: str = "evaluation.graders",
                  load_reward: RewardLoader | None = None) -> list[Grader]:
    """Graders of a recipe section; names must be unique (they key the report)."""
    graders = [build_grader(config, f"{where}[{i}]", load_reward) for i, config in enumerate(configs)]
    names = [g.name for g in graders]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate is not None:
        for grader in graders:
            grader.close()
        raise RecipeError(f"two graders are named '{duplicate}'", where=where,
                          fix="give each grader its own 'name'")
    return graders


def check_graders(configs: list[dict[str, Any]], where: str) -> None:
    """Validate definitions without running anything (a ValueError for pydantic)."""
    try:
        for grader in build_graders(configs, where):
            grader.close()
    except RecipeError as exc:
        fix = f"; {exc.fix}" if exc.fix else ""
        raise ValueError(f"{exc.where}: {exc.message}{fix}") from None
