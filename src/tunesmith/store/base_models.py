"""Named base models: a name in the registry for a model folder or GGUF file on this machine.

`tunesmith models pull NAME` and `tunesmith models add-base NAME PATH` write these rows;
tunesmith.model.loading.resolve_model reads them, so a recipe's `base_model` and an API
job's `model` can say `smollm2-135m-instruct` instead of a path. The server asks
`is_registered_base(name)` before accepting a job for a name that is not bundled.
"""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from tunesmith.store.errors import RegistryError
from tunesmith.store.home import DATABASE_ENV, tunesmith_home
from tunesmith.store.registry import Registry, open_registry
from tunesmith.store.schema import RegisteredBase, now

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
"""One path segment: no slash (hub ids are org/name), no colon (ft:... names), no '..'."""


def check_base_name(name: str) -> None:
    if not NAME_RE.match(name) or ".." in name:
        raise RegistryError(f"bad base model name {name!r}",
                            fix="use letters, digits, '.', '_' and '-' (no '/'), e.g. smollm2-135m-instruct")


def register_base(registry: Registry, name: str, location: Path, gguf_file: str | None, source: str,
                  sha256: str | None = None) -> RegisteredBase:
    """Add or replace the name; the caller has checked that the files are a loadable model."""
    check_base_name(name)

    def work(session: Session) -> RegisteredBase:
        row = session.get(RegisteredBase, name)
        if row is None:
            row = RegisteredBase(name=name)
            session.add(row)
        row.location, row.gguf_file, row.source = str(location), gguf_file, source
        row.sha256, row.created_at = sha256, now()
        return row
    return registry.write(work)


def base_models(registry: Registry) -> list[RegisteredBase]:
    return registry.read(lambda s: list(s.scalars(select(RegisteredBase).order_by(RegisteredBase.name))))


def remove_base(registry: Registry, name: str) -> None:
    """Forget the name; the files stay where they are."""
    def work(session: Session) -> None:
        if session.execute(delete(RegisteredBase).where(RegisteredBase.name == name)).rowcount == 0:
            raise RegistryError(f"no base model named {name!r}", fix="see `tunesmith models bases`")
    registry.write(work)


def registered_base(name: str, registry: Registry | None = None) -> RegisteredBase | None:
    """The row for `name`, or None. Never creates a registry just to look: with the default
    SQLite registry and no database file yet, nothing is registered."""
    if not NAME_RE.match(name) or ".." in name:
        return None
    if registry is None:
        import os

        if not os.environ.get(DATABASE_ENV) and not (tunesmith_home() / "registry.db").exists():
            return None
        registry = open_registry()
        try:
            return registry.read(lambda s: s.get(RegisteredBase, name))
        finally:
            registry.close()
    return registry.read(lambda s: s.get(RegisteredBase, name))


def is_registered_base(name: str, registry: Registry | None = None) -> bool:
    """Whether `name` is a registered base model whose files are still on this machine
    (the server's allowed-model check; a name here is never a path)."""
    row = registered_base(name, registry)
    return row is not None and Path(row.location, row.gguf_file or "").exists()
