"""What a model name on the command line means: one resolver for `tunesmith chat`, `eval`
and `export` (a run directory, an adapter or model folder as given, else a registered model
by name, id or alias, else - where base models are allowed - a bundled name or hub id)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tunesmith.errors import TunesmithError

if TYPE_CHECKING:
    from tunesmith.store.schema import Model


def registered(ref: str) -> Model:
    """The registry's model named `ref` (name, id, unique prefix, or alias name@label)."""
    from tunesmith.store import open_registry

    registry = open_registry()
    try:
        return registry.model(ref)
    except TunesmithError as exc:
        raise TunesmithError(f"'{ref}' is not a folder and not a registered model ({exc.message})",
                             fix="give a run directory, an adapter folder, or see `tunesmith models list`") \
            from None
    finally:
        registry.close()


def resolve_target(ref: str, bases: bool = False) -> tuple[str, Model | None]:
    """What load_trained opens for `ref`, and the registered model when it is one. With
    `bases`, a name the registry does not know is passed on as a base model (bundled name or
    hub id) - never an alias, which only the registry can mean."""
    if Path(ref).expanduser().exists():
        return ref, None
    from tunesmith.model.loading import BUNDLED
    from tunesmith.store.heldout import model_target

    if bases and ref in BUNDLED:
        return ref, None
    try:
        model = registered(ref)
    except TunesmithError:
        if bases and "@" not in ref:
            return ref, None
        raise
    return model_target(model), model
