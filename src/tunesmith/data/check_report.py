"""What `tunesmith data check` reports: counts, token statistics, findings grouped by code
(kept up to MAX_LOCATIONS each, all counted), packing, a token preview and the settings used."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from tunesmith.data.findings import Finding
from tunesmith.data.pack import PackingStats


@dataclass(slots=True)
class Counts:
    rows: int = 0
    examples: int = 0
    """Rows that can be trained on."""
    with_errors: int = 0


@dataclass(frozen=True, slots=True)
class TokenStats:
    examples: int
    mean: float
    p50: int
    p95: int
    max: int
    total: int
    """Tokens trained on per epoch, after truncating or dropping overlong examples."""
    trained: int
    """Tokens that carry loss (exact, or estimated from a sample when trained_exact is False)."""
    trained_exact: bool
    billed: int
    epochs: int
    max_length: int
    over_max_length: int
    truncated: int
    dropped: int


PreviewToken = tuple[str, bool]


@dataclass(slots=True)
class CheckReport:
    path: str
    format: str | None
    counts: Counts
    findings: list[Finding]
    """Every file's findings (the validation file's and leakage included), at most
    MAX_LOCATIONS per code and file; `where` names the file."""
    finding_counts: dict[str, int]
    """Total per code, including the findings not kept."""
    model: str | None = None
    tokens: TokenStats | None = None
    packing: PackingStats | None = None
    preview: list[PreviewToken] | None = None
    preview_where: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    validation: CheckReport | None = None
    """The validation file's counts and tokens; its findings are in `findings` above."""
    replay: CheckReport | None = None
    """The replay file's (data.replay), likewise."""

    @property
    def valid_examples(self) -> int:
        return self.counts.examples

    def count(self, severity: str) -> int:
        """Findings of one severity, counting those not kept."""
        codes = dict.fromkeys(f.code for f in self.findings if f.severity == severity)
        return sum(self.finding_counts.get(code, 0) for code in codes)

    @property
    def errors(self) -> int:
        return self.count("error")

    @property
    def warnings(self) -> int:
        return self.count("warning")

    @property
    def ok(self) -> bool:
        """No errors in the data or the validation data: training can start."""
        return self.errors == 0

    def groups(self) -> Iterator[tuple[str, list[Finding], int]]:
        """(code, kept findings, total) per code, in order of first appearance."""
        by_code: dict[str, list[Finding]] = {}
        for finding in self.findings:
            by_code.setdefault(finding.code, []).append(finding)
        for code, kept in by_code.items():
            yield code, kept, max(len(kept), self.finding_counts.get(code, 0))

    def to_dict(self) -> dict[str, Any]:
        data = {
            "path": self.path,
            "format": self.format,
            "ok": self.ok,
            "model": self.model,
            "counts": asdict(self.counts),
            "errors": self.errors,
            "warnings": self.warnings,
            "findings": [f.to_dict() for f in self.findings],
            "finding_counts": dict(self.finding_counts),
            "tokens": asdict(self.tokens) if self.tokens else None,
            "packing": asdict(self.packing) if self.packing else None,
            "preview": [list(token) for token in self.preview] if self.preview else None,
            "preview_where": self.preview_where,
            "settings": dict(self.settings),
            "validation": None,
            "replay": None,
        }
        for role, part in (("validation", self.validation), ("replay", self.replay)):
            if part is not None:
                nested = part.to_dict()
                for key in ("findings", "finding_counts", "errors", "warnings", "ok", "settings", "replay"):
                    nested.pop(key)
                data[role] = nested
        return data
