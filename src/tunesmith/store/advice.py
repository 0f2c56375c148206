"""Advice rows (`tunesmith advise`): recorded with the dataset version they were measured on, so
the advice for a dataset can be found again and compared with what training later proved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from tunesmith.store.registry import Registry, jsonable
from tunesmith.store.schema import Advice


def record_advice(registry: Registry, data: str | Path, advice: dict[str, Any],
                  heldout: str | Path | None = None, fmt: str = "auto") -> Advice:
    """Record `advice` against the dataset version of `data` (and of the held-out file, if one)."""
    dataset = registry.add_dataset(data, fmt)
    held = registry.add_dataset(heldout, fmt) if heldout else None
    row = Advice(dataset_id=dataset.id, heldout_dataset_id=held.id if held else None,
                 base_model=str(advice["base_model"]), recommendation=str(advice["recommendation"]),
                 report=jsonable(advice))

    def work(session: Any) -> Advice:
        session.add(row)
        session.flush()
        return row
    return registry.write(work)


def advice_list(registry: Registry, dataset_id: str | None = None, limit: int = 50) -> list[Advice]:
    """The newest advice first, for one dataset version or all."""
    query = select(Advice).order_by(Advice.created_at.desc()).limit(limit)
    if dataset_id is not None:
        query = query.where(Advice.dataset_id == dataset_id)
    return registry.read(lambda s: list(s.scalars(query)))


def advice(registry: Registry, advice_id: str) -> Advice | None:
    return registry.read(lambda s: s.get(Advice, advice_id))
