"""Findings: what a data check reports, each with a place and a fix."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Finding:
    severity: Severity
    code: str
    message: str
    where: str | None = None
    fix: str | None = None

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        return f"{text} (fix: {self.fix})" if self.fix else text

    def to_dict(self) -> dict[str, str | None]:
        return asdict(self)


def error(code: str, message: str, where: object = None, fix: str | None = None) -> Finding:
    return Finding("error", code, message, None if where is None else str(where), fix)


def warning(code: str, message: str, where: object = None, fix: str | None = None) -> Finding:
    return Finding("warning", code, message, None if where is None else str(where), fix)
