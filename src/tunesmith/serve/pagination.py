"""Cursor pagination as the hosted API does it: newest first, `after` = the last id seen."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, or_


def after_condition(time_col: Any, id_col: Any, anchor_time: float, anchor_id: Any, descending: bool) -> Any:
    """Rows strictly past (time, id) in the listing order; portable (no row-value comparison)."""
    if descending:
        return or_(time_col < anchor_time, and_(time_col == anchor_time, id_col < anchor_id))
    return or_(time_col > anchor_time, and_(time_col == anchor_time, id_col > anchor_id))
