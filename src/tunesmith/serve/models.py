"""/v1/models: the bundled base model and every tuned model in the registry."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends

from tunesmith.model.loading import BUNDLED
from tunesmith.serve.cache import Target
from tunesmith.serve.errors import APIError, not_found
from tunesmith.serve.objects import model_object, page, tuned_model_object
from tunesmith.serve.state import ServerState, server
from tunesmith.store.errors import RegistryError
from tunesmith.store.schema import Model

router = APIRouter()


def base_models() -> list[str]:
    return sorted(BUNDLED)


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
    if name in BUNDLED:
        return Target(name, name)
    model = aliased(state, name) if "@" in name else tuned(state, name)
    if model is None:
        raise APIError(404, f"The model '{name}' does not exist", param="model", code="model_not_found")
    if model.kind == "full" or not (Path(model.path) / "adapter_config.json").exists():
        return Target(model.name, model.path)
    return Target(model.name, model.base_model, model.path, model.id)


@router.get("/v1/models")
def list_models(state: Annotated[ServerState, Depends(server)]) -> dict[str, Any]:
    items = [model_object(name, Path(BUNDLED[name]).stat().st_mtime, "tunesmith") for name in base_models()]
    items += [tuned_model_object(m) for m in state.registry.models()]
    return page(items, False)


@router.get("/v1/models/{model:path}")
def retrieve_model(model: str, state: Annotated[ServerState, Depends(server)]) -> dict[str, Any]:
    if model in BUNDLED:
        return model_object(model, Path(BUNDLED[model]).stat().st_mtime)
    found = tuned(state, model)
    if found is None:
        raise not_found("model", model, "model")
    return tuned_model_object(found)


@router.delete("/v1/models/{model:path}")
def delete_model(model: str, state: Annotated[ServerState, Depends(server)]) -> dict[str, Any]:
    """Marks a tuned model deleted (its files and lineage stay, as `tunesmith models delete`)."""
    if model in BUNDLED:
        raise APIError(400, "base models cannot be deleted", param="model")
    found = tuned(state, model)
    if found is None:
        raise not_found("model", model, "model")
    state.registry.delete_model(found.id)
    return {"id": found.name, "object": "model", "deleted": True}
