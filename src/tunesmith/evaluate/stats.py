"""Seeded bootstrap intervals and per-example win/tie/loss.

Intervals are percentile bootstraps over examples (the examples are the sample; the model
is fixed). The same resampled indices serve every system, so a difference between two
systems is bootstrapped as a pair. A given seed always gives the same intervals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(slots=True)
class Interval:
    value: float
    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


def resamples(count: int, samples: int, seed: int) -> np.ndarray:
    """samples x count indices drawn with replacement: shared by every statistic of a report."""
    return np.random.default_rng(seed).integers(0, count, size=(samples, count))


def mean_interval(values: Sequence[float], indices: np.ndarray, confidence: float = 0.95) -> Interval:
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    means = data[indices].mean(axis=1)
    return _interval(float(data.mean()), means, confidence)


def ratio_interval(numerators: Sequence[float], denominators: Sequence[float], indices: np.ndarray,
                   confidence: float = 0.95) -> Interval:
    """sum(num) / sum(den), e.g. a token-weighted loss over examples of different lengths."""
    num, den = np.asarray(numerators, dtype=np.float64), np.asarray(denominators, dtype=np.float64)
    if num.size == 0 or den.sum() == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    ratios = num[indices].sum(axis=1) / np.maximum(den[indices].sum(axis=1), 1e-12)
    return _interval(float(num.sum() / den.sum()), ratios, confidence)


def _interval(value: float, draws: np.ndarray, confidence: float) -> Interval:
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return Interval(value, float(low), float(high))


@dataclass(slots=True)
class Comparison:
    """The tuned model against one baseline on one metric, example by example."""

    baseline: str
    metric: str
    wins: int
    ties: int
    losses: int
    difference: Interval  # tuned minus baseline, in the direction where positive is better

    @property
    def verdict(self) -> str:
        if self.difference.low > 0:
            return "better"
        if self.difference.high < 0:
            return "worse"
        return "no clear difference"

    def to_dict(self) -> dict[str, object]:
        return {"baseline": self.baseline, "metric": self.metric, "wins": self.wins, "ties": self.ties,
                "losses": self.losses, "difference": self.difference.to_dict(), "verdict": self.verdict}


def compare(baseline: str, metric: str, tuned: Sequence[float], other: Sequence[float], indices: np.ndarray,
            higher_is_better: bool = True, tie_margin: float = 1e-9, confidence: float = 0.95) -> Comparison:
    sign = 1.0 if higher_is_better else -1.0
    diff = sign * (np.asarray(tuned, dtype=np.float64) - np.asarray(other, dtype=np.float64))
    wins = int((diff > tie_margin).sum())
    losses = int((diff < -tie_margin).sum())
    return Comparison(baseline, metric, wins, len(diff) - wins - losses, losses,
                      mean_interval(diff.tolist(), indices, confidence))
