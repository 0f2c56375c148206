"""The recipe: one typed description of a run, shared by the CLI, the API and Python.

Precedence is defaults < YAML file < `--set key.sub=value` overrides. Unknown keys and
bad values are errors that name the key and what it accepts. "auto" is accepted where
the hosted fine-tuning APIs accept it (epochs, batch size, learning rate) and is
resolved against the dataset when training starts; the resolved recipe is written
into the run directory in full.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tunesmith.data.templates import is_builtin
from tunesmith.errors import RecipeError

Auto = Literal["auto"]
PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]

BUNDLED_MODEL = "tunesmith/tiny-chat"
BUNDLED_PREFIX = "tunesmith/"
"""Names under tunesmith/ are bundled assets, never paths relative to a recipe file."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class AdapterConfig(_Section):
    """How the base model is changed: a LoRA or DoRA adapter, or all weights."""

    kind: Literal["lora", "dora", "full"] = "lora"
    rank: PositiveInt = 16
    alpha: PositiveFloat = 32.0
    dropout: Fraction = 0.05
    target_modules: Literal["all-linear"] | list[str] = "all-linear"
    freeze_layers: list[int] = Field(default_factory=list, description="decoder layer indices kept frozen")
    init_from: str | None = Field(None, description="a trained PEFT adapter folder to start from "
                                                    "(retraining from a model's weights)")


class DataConfig(_Section):
    train: str | None = None
    validation: str | None = None
    replay: str | None = Field(
        None, description="general examples (e.g. the base model's own replies to everyday prompts) "
                          "mixed into every epoch of SFT so tuning keeps what the model could do; "
                          "never held out, graded or shown to the baselines")
    format: Literal["auto", "chat", "completion", "text", "preference", "reinforcement"] = "auto"
    validation_split: Annotated[float, Field(ge=0, lt=1)] = 0.1
    max_length: PositiveInt = 2048
    overlong: Literal["truncate", "drop"] = "truncate"
    loss_on: Literal["assistant", "all"] = "assistant"
    chat_template: str | None = Field(
        None, description="a chat template file (.jinja, or a tokenizer_config.json) or a built-in "
                          "name (chatml-tools) used instead of the model's own; saved with the adapter")


class TrainingConfig(_Section):
    epochs: PositiveInt | Auto = "auto"
    batch_size: PositiveInt | Auto = Field("auto", description="examples per optimizer step")
    micro_batch_tokens: PositiveInt | Auto = Field("auto", description="packed tokens per forward pass")
    learning_rate: PositiveFloat | Auto = "auto"
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: Fraction = 0.05
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    max_grad_norm: PositiveFloat | None = 1.0
    max_steps: PositiveInt | None = None
    seed: int = 42
    eval_every: PositiveInt | Auto = "auto"
    save_every: PositiveInt | Auto = "auto"
    keep_checkpoints: PositiveInt = 2
    early_stopping_patience: PositiveInt | None = None
    gradient_checkpointing: bool = False
    loss_chunk_tokens: PositiveInt = 1024
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    report_to: list[Literal["tensorboard", "mlflow"]] = Field(default_factory=list)


class EvaluationConfig(_Section):
    """What `tunesmith eval` measures, and whether it runs by itself after training.

    Grader definitions are checked when the recipe is read (docs/evaluation.md)."""

    enabled: bool = Field(False, description="evaluate automatically at the end of a successful run")
    data: str | None = Field(None, description="held-out file; defaults to the validation data")
    baselines: list[Literal["base", "fewshot", "retrieval"]] = Field(default_factory=lambda: ["base"])
    graders: list[dict[str, Any]] | None = Field(
        None, description="grader definitions; null: ROUGE-L and token F1 against the reference reply")
    few_shot_k: PositiveInt = 3
    retrieval_k: PositiveInt = 3
    max_examples: PositiveInt | None = Field(200, description="held-out examples generated and graded")
    max_new_tokens: PositiveInt = 128
    temperature: Annotated[float, Field(ge=0)] = 0.0
    stop: list[str] = Field(default_factory=list)
    forgetting: str | None = Field(None, description="general reference set; 'tunesmith/general' is bundled")
    forgetting_threshold: PositiveFloat = Field(0.10, description="largest allowed relative loss increase")
    forgetting_graders: list[dict[str, Any]] | None = Field(
        None, description="graders for a chat reference set; a score drop past the threshold fails too")
    bootstrap_samples: PositiveInt = 1000
    bootstrap_seed: int = 0
    confidence: Annotated[float, Field(gt=0, lt=1)] = 0.95
    worst_examples: PositiveInt = 5
    max_train_examples: PositiveInt | None = Field(
        1000, description="training examples scored for the highest-final-loss list")

    @field_validator("graders", "forgetting_graders")
    @classmethod
    def _check_graders(cls, value: list[dict[str, Any]] | None, info: ValidationInfo) -> Any:
        if value is None:
            return value
        from tunesmith.evaluate.graders import check_graders

        check_graders(value, f"evaluation.{info.field_name}")
        return value


class OutputConfig(_Section):
    dir: str = "runs"
    name: str | None = None


class PreferenceConfig(_Section):
    """Preference optimisation (method: dpo) and reward-model training (method: reward)."""

    loss: Literal["sigmoid", "ipo", "simpo"] = "sigmoid"
    beta: PositiveFloat | Auto = Field("auto", description="auto: 0.1 (sigmoid, ipo) or 2.0 (simpo)")
    label_smoothing: Annotated[float, Field(ge=0, lt=0.5)] = 0.0
    simpo_gamma: Annotated[float, Field(ge=0)] = 1.0
    precompute_reference: bool = False


class ReinforcementConfig(_Section):
    """Reinforcement fine-tuning from graders (method: grpo)."""

    group_size: Annotated[int, Field(ge=2)] = 8
    graders: list[dict[str, Any]] = Field(default_factory=list)
    kl_coef: Annotated[float, Field(ge=0)] = 0.0
    clip_epsilon: PositiveFloat = 0.2
    max_new_tokens: PositiveInt = 64
    temperature: PositiveFloat = 1.0
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0


class Recipe(_Section):
    base_model: str = BUNDLED_MODEL
    revision: str | None = None
    trust_remote_code: bool = False
    method: Literal["sft", "dpo", "reward", "grpo"] = "sft"
    adapter: AdapterConfig = Field(default_factory=AdapterConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    preference: PreferenceConfig = Field(default_factory=PreferenceConfig)
    reinforcement: ReinforcementConfig = Field(default_factory=ReinforcementConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    output: OutputConfig = Field(default_factory=OutputConfig)

    @model_validator(mode="after")
    def _replay_is_supervised(self) -> Recipe:
        # A RecipeError is not wrapped by pydantic, so it keeps its key.
        if self.data.replay and self.method != "sft":
            raise RecipeError(f"data.replay mixes general chats into supervised training, and method "
                              f"{self.method!r} does not train on chats", where="data.replay",
                              fix="remove data.replay, or use method: sft")
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


DATA_ROLES = ("train", "validation", "replay")
"""The data files a run reads, by role; each is versioned in the registry (a model's lineage)."""
PATH_KEYS = (("adapter", "init_from"), *(("data", role) for role in DATA_ROLES), ("evaluation", "data"),
             ("evaluation", "forgetting"), ("data", "chat_template"))


def load_recipe(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Build a recipe from defaults, an optional YAML file and `key.sub=value` overrides.

    Data paths written in a recipe file are relative to that file, so a recipe and its
    data can move together; paths given with --set are relative to the working folder.
    """
    raw: dict[str, Any] = {}
    if path is not None:
        raw = _read_yaml(Path(path))
        _anchor_paths(raw, Path(path).resolve().parent)
    for override in overrides:
        apply_override(raw, override)
    return build_recipe(raw, origin=str(path) if path else "recipe")


def build_recipe(raw: dict[str, Any], origin: str = "recipe") -> Recipe:
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        raise _recipe_error(exc, origin) from None


def save_recipe(recipe: Recipe, path: str | Path) -> None:
    from tunesmith.fsutil import atomic_write_text

    atomic_write_text(Path(path), recipe.to_yaml())


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Set `a.b.c=value` in a nested dict; the value is read as YAML (so 3, 1e-4, true, [a, b])."""
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"override {override!r} is not key=value", fix="e.g. --set training.epochs=3")
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise RecipeError(f"'{part}' is not a section", where=key)
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as exc:
        raise RecipeError(f"cannot read value {text!r}: {exc}", where=key) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise RecipeError(f"recipe not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise RecipeError(f"not valid YAML: {getattr(exc, 'problem', exc)}", where=where) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RecipeError("a recipe must be a mapping of sections", where=str(path))
    return data


GRADER_KEYS = (("reinforcement", "graders"), ("evaluation", "graders"), ("evaluation", "forgetting_graders"))
"""Recipe sections that hold grader definitions (a reward_model grader names a path)."""


def _anchor_paths(raw: dict[str, Any], folder: Path) -> None:
    for section, key in PATH_KEYS:
        node = raw.get(section)
        if isinstance(node, dict) and isinstance(node.get(key), str) \
                and not node[key].startswith(BUNDLED_PREFIX) and not is_builtin(node[key]):
            value = Path(node[key]).expanduser()
            if not value.is_absolute():
                node[key] = str(folder / value)
    for section_name, key in GRADER_KEYS:
        section = raw.get(section_name)
        graders = section.get(key) if isinstance(section, dict) else None
        for grader in graders if isinstance(graders, list) else []:
            # A reward-model grader's path, like data paths, is relative to the recipe file.
            if isinstance(grader, dict) and isinstance(grader.get("path"), str):
                value = Path(grader["path"]).expanduser()
                if not value.is_absolute():
                    grader["path"] = str(folder / value)


def _fields_at(loc: tuple[Any, ...]) -> dict[str, Any] | None:
    """The fields of the section a location points into, for 'allowed keys' hints."""
    model: Any = Recipe
    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model.model_fields


def _recipe_error(exc: ValidationError, origin: str) -> RecipeError:
    problems: dict[str, list[str]] = {}
    for err in exc.errors():
        loc = tuple(err["loc"])
        if err["type"] == "extra_forbidden":
            allowed = _fields_at(loc[:-1]) or {}
            name = str(loc[-1])
            close = difflib.get_close_matches(name, list(allowed), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems.setdefault(".".join(map(str, loc)), []).append(
                f"unknown key{hint}; allowed: {', '.join(allowed)}")
            continue
        # Unions report one error per member (e.g. 'int' and "literal['auto']"): keep the
        # field path and join the member messages.
        field_loc = [str(p) for p in loc if not (isinstance(p, str) and ("[" in p or p in (
            "int", "float", "str", "bool", "list", "constrained-int", "constrained-float")))]
        value = err.get("input")
        message = err["msg"]
        problems.setdefault(".".join(field_loc), []).append(f"{message} (got {value!r})")
    lines = [f"'{key}': {'; or '.join(dict.fromkeys(msgs))}" for key, msgs in problems.items()]
    first = next(iter(problems))
    return RecipeError("invalid recipe:\n  " + "\n  ".join(lines), where=f"{origin} key '{first}'")
