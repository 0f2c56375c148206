"""Registry errors, shown to people like every tunesmith error (what, where, fix)."""

from __future__ import annotations

from tunesmith.errors import TunesmithError


class RegistryError(TunesmithError):
    """A registry lookup or change cannot be done as asked."""


class AliasGuardError(RegistryError):
    """An alias was not moved because the new model's held-out score regressed."""
