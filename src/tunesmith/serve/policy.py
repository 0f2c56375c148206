"""What an API caller may ask of the server: never code to run, never a server path.

One home for each refusal, so every route (jobs, dashboard checks, chat) asks the same
questions: `check_api_model` for a model name, `check_extension` for the recipe keys a job
request sets through `tunesmith.set`, `check_graders` for the graders of the final recipe.
The operator opts in to python graders with `tunesmith serve --allow-python-graders`.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunesmith.data.templates import BUILTIN_TEMPLATES
from tunesmith.recipe import BUNDLED_MODEL, PATH_KEYS
from tunesmith.serve.errors import APIError

if TYPE_CHECKING:
    from tunesmith.store.registry import Registry

LOCKED_KEYS: tuple[str, ...] = (
    "base_model", "revision", "trust_remote_code", "method", "output",
    *(".".join(key) for key in PATH_KEYS))
"""Recipe keys a request may not set: the server sets them (model, files, run folder), or
they name server files (every recipe path key, adapter.init_from included) or code
(trust_remote_code). A path key added to recipe.PATH_KEYS is locked here by itself."""
BUNDLED_VALUES = {"evaluation.forgetting": ("tunesmith/general",),
                  "data.chat_template": tuple(BUILTIN_TEMPLATES)}
"""Locked path keys that may still name a bundled asset or a built-in template by name (never a
server path: a template file would be read into the prompt)."""
GRADER_LISTS = ("evaluation.graders", "evaluation.forgetting_graders", "reinforcement.graders")
_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
HUB_ID = re.compile(f"{_PART}/{_PART}")
"""The hub's repository id rule: owner/name, letters, digits, '-', '_', '.', 96 characters each."""
MODEL_HELP = (f"use {BUNDLED_MODEL}, a base model the operator registered, or a hub id owner/name "
              "(see GET /v1/models)")


def check_api_model(name: str, registry: Registry | None = None,
                    registered: Collection[str] | None = None) -> None:
    """Refuse a `model` that is not a bundled name, an operator-registered base or a hub id.

    Registered bases (`tunesmith models pull` / `models add-base`) are asked of the registry
    (or given as `registered`); their names never contain '/' or '..', so never a path.
    A hub id must also not resolve as a folder relative to the server's working folder:
    the model loader tries a local path first, and a caller must never pick server files.
    The refusal reads the same whatever the reason, so it tells nothing about server files."""
    from tunesmith.model.loading import BUNDLED
    from tunesmith.store.base_models import is_registered_base

    if name in BUNDLED or (name in registered if registered is not None
                           else is_registered_base(name, registry)):
        return
    if name.startswith("ft:"):
        raise APIError(400, "continuing training from a fine-tuned model is not supported yet; "
                            "fine-tune its base model", param="model", code="model_not_available")
    hub = HUB_ID.fullmatch(name) is not None and ".." not in name and "--" not in name
    if not hub or _exists_locally(name):
        raise APIError(400, f"model {name[:200]!r} is not available through the API: {MODEL_HELP}",
                       param="model", code="model_not_available")


def _exists_locally(name: str) -> bool:
    try:
        return Path(name).exists() or Path(name + ".gguf").exists()
    except OSError:
        return True


def check_extension(extension: dict[str, Any]) -> None:
    """Refuse any locked key in the nested dict the request's `tunesmith.set` built (checked
    after nesting, so {"evaluation": {"data": ...}} is caught like "evaluation.data")."""
    for key in LOCKED_KEYS:
        found, value = _lookup(extension, key)
        if not found or value is None or value in BUNDLED_VALUES.get(key, ()):
            continue
        what = "names code" if key == "trust_remote_code" else "is set by the server" \
            if key in ("base_model", "method", "output", "data.train", "data.validation") \
            else "names a file on the server"
        raise APIError(400, f"recipe key '{key}' cannot be set through the API: it {what}. Upload data with "
                            "POST /v1/files and pass its id; run `tunesmith train` on the server for "
                            "recipes that need server files", param=f"tunesmith.set.{key}", code="locked_key")


def check_graders(raw: dict[str, Any], allow_python: bool, method_grader: bool) -> None:
    """Refuse python graders (unless the operator allowed them) and graders naming a server
    path (a reward_model's `path`), however deeply nested in multi/weighted graders."""
    for where, grader in _graders(raw):
        param = "method.reinforcement.grader" if method_grader and where.startswith("reinforcement.") \
            else f"tunesmith.set.{where}"
        if grader.get("type") == "python" and not allow_python:
            raise APIError(400, "python graders run code on the server and are off for API requests; "
                                "use a declarative grader (string_check, text_similarity, regex, "
                                "json_schema, multi...), or ask the operator to start the server with "
                                "--allow-python-graders", param=param, code="python_grader_not_allowed")
        if "path" in grader or grader.get("type") == "reward_model":
            raise APIError(400, "a grader that names a file on the server (a reward_model path) cannot be "
                                "set through the API; run `tunesmith train` on the server for it",
                           param=param, code="locked_key")


def _graders(raw: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for key in GRADER_LISTS:
        found, value = _lookup(raw, key)
        if found and isinstance(value, list):
            for index, grader in enumerate(value):
                yield from _nested(f"{key}[{index}]", grader)


def _nested(where: str, grader: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    if not isinstance(grader, dict):
        return
    yield where, grader
    parts = grader.get("graders")
    if isinstance(parts, dict):
        for name, sub in parts.items():
            yield from _nested(f"{where}.graders.{name}", sub)
    elif isinstance(parts, list):
        for index, sub in enumerate(parts):
            yield from _nested(f"{where}.graders[{index}]", sub)


def _lookup(raw: dict[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = raw
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node
