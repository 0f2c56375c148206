"""Errors for people: every one says what is wrong, where, and how to fix it.

The library raises these and never prints or exits; the CLI and the server decide
how to show them.
"""

from __future__ import annotations


class TunesmithError(Exception):
    """Base error. `where` is a file:line or a recipe key; `fix` is a hint for the user."""

    def __init__(self, message: str, *, where: str | None = None, fix: str | None = None):
        self.message = message
        self.where = where
        self.fix = fix
        super().__init__(self.__str__())

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        return f"{text}\n  fix: {self.fix}" if self.fix else text


class RecipeError(TunesmithError):
    """A recipe key is unknown, missing or has a bad value."""


class DataError(TunesmithError):
    """A dataset cannot be read or holds records that cannot be trained on."""


class ModelError(TunesmithError):
    """A base model or tokenizer cannot be loaded or used as asked."""
