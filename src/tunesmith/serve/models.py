"""/v1/models: the bundled base model, the base models the operator registered (`tunesmith
models pull` / `models add-base`) and every tuned model in the registry."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from tunesmith.model.loading import BUNDLED
from tunesmith.serve.cache import Target
from tunesmith.serve.errors import APIError, not_found
from tunesmith.serve.objects import model_object, page, tuned_model_object
from tunesmith.serve.state import ServerState, server
from tunesmith.store.base_models import base_models as registered_rows
from tunesmith.store.base_models import is_registered_base, registered_base
from tunesmith.store.errors import RegistryError
from tunesmith.store.schema import Model, RegisteredBase

router = APIRouter()


def base_models() -> list[str]:
    return sorted(BUNDLED)


def registered_bases(state: ServerState) -> list[RegisteredBase]:
    """The operator's named bases whose files are still on this machine (the ones a job may
    name, by the same check as policy.check_api_model)."""
    return [row for row in registered_rows(state.registry)
            if row.name not in BUNDLED and Path(row.location, row.gguf_file or "").exists()]


def registered_object(row: RegisteredBase) -> dict[str, Any]:
    """A registered base on the wire: its name and where it came from, never its folder."""
    source = row.source if row.source in ("pull", "add-base") else "registered"
    return {**model_object(row.name, row.created_at, "tunesmith"),
            "tunesmith": {"base_model": True, "source": source}}


def tuned(state: ServerState, name: str) -> Model | None:
    """The registry's model with exactly this name or id (no prefixes: names are exact on the wire)."""
    try:
        model = state.registry.model(name)
    except RegistryError:
        return None
    return model if name in (model.name, model.id) else None


def aliased(state: ServerState, alias: str) -> Model | None:
    """The model an alias (name@label, matched exactly) points at now, as `tunesmith chat` reads it."""
    try:
        model = state.registry.alias_target(alias)
    except RegistryError:
        return None
    return None if model is None or model.deleted_at is not None else model


def resolve_target(state: ServerState, name: str) -> Target:
    """What to load for a chat request's `model`."""
    if name in BUNDLED or ("@" not in name and is_registered_base(name, state.registry)):
        return Target(name, name)  # the loader resolves a registered name to its files
    model = aliased(state, name) if "@" in name else tuned(state, name)
    if model is None:
        raise APIError(404, f"The model '{name}' does not exist", param="model", code="model_not_found")
    if model.kind == "full" or not (Path(model.path) / "adapter_config.json").exists():
        return Target(model.name, model.path)
    return Target(model.name, model.base_model, model.path, model.id)


@router.get("/v1/models")
def list_models(state: Annotated[ServerState, Depends(server)]) -> dict[str, Any]:
    items = [model_object(name, Path(BUNDLED[name]).stat().st_mtime, "tunesmith") for name in base_models()]
    items += [registered_object(row) for row in registered_bases(state)]
    items += [tuned_model_object(m) for m in state.registry.models()]
    return page(items, False)


@router.get("/v1/models/{model:path}")
def retrieve_model(model: str, state: Annotated[ServerState, Depends(server)]) -> dict[str, Any]:
    if model in BUNDLED:
        return model_object(model, Path(BUNDLED[model]).stat().st_mtime)
    if is_registered_base(model, state.registry):
        row = registered_base(model, state.registry)
        if row is not None:
            return registered_object(row)
    found = tuned(state, model)
    if found is None:
        raise not_found("model", model, "model")
    return tuned_model_object(found)


@router.delete("/v1/models/{model:path}")
def delete_model(model: str, state: Annotated[ServerState, Depends(server)]) -> dict[str, Any]:
    """Marks a tuned model deleted (its files and lineage stay, as `tunesmith models delete`)."""
    if model in BUNDLED or registered_base(model, state.registry) is not None:
        raise APIError(400, "base models cannot be deleted through the API", param="model")
    found = tuned(state, model)
    if found is None:
        raise not_found("model", model, "model")
    state.registry.delete_model(found.id)
    return {"id": found.name, "object": "model", "deleted": True}
