"""Export errors, shown to people like every tunesmith error (what, where, fix)."""

from __future__ import annotations

from tunesmith.errors import TunesmithError


class ExportError(TunesmithError):
    """A model cannot be exported as asked."""


class ParityError(ExportError):
    """An exported model does not compute what the trained model computes."""
