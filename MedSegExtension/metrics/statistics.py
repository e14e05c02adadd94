"""Averages over classes and summary statistics over cases.

Conventions:

- Class averages (``EvaluationResult.averages``) are plain means over the classes present in
  at least one map, with background (``all``) and without (``foreground``); an ``inf``
  distance makes the mean ``inf``.
- Case summaries (mean, median, quartiles) skip NaN and keep ``inf`` (numpy's quantiles would
  give NaN).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from .results import METRIC_FIELDS, ClassResult


def class_means(rows: Sequence[ClassResult]) -> dict[str, float]:
    """Each metric's plain mean over ``rows`` (NaN when there are none)."""
    result = {}
    for metric in METRIC_FIELDS:
        values = [getattr(row, metric) for row in rows]
        result[metric] = float(np.mean(values)) if values else math.nan
    return result


@dataclass(frozen=True)
class SummaryStats:
    """Mean, median and quartiles of one metric over cases (``inf`` values kept)."""

    n: int
    mean: float
    median: float
    q1: float
    q3: float

    @property
    def iqr(self) -> float:
        return 0.0 if self.q1 == self.q3 else self.q3 - self.q1

    def as_dict(self) -> dict[str, float]:
        return {"n": self.n, "mean": self.mean, "median": self.median, "q1": self.q1, "q3": self.q3, "iqr": self.iqr}


def _quantile(ordered: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile of sorted values that may contain ``inf`` (numpy gives NaN)."""
    position = (len(ordered) - 1) * q
    low, high = math.floor(position), math.ceil(position)
    a, b = ordered[low], ordered[high]
    if low == high or a == b:
        return float(a)
    return float(a + (b - a) * (position - low))


def summarize(values: Iterable[float]) -> SummaryStats:
    """Summary statistics of the non-NaN values; NaN everywhere when there are none."""
    ordered = sorted(float(v) for v in values if not math.isnan(float(v)))
    if not ordered:
        return SummaryStats(0, math.nan, math.nan, math.nan, math.nan)
    mean = math.inf if math.inf in ordered else float(np.mean(ordered))
    return SummaryStats(len(ordered), mean, _quantile(ordered, 0.5), _quantile(ordered, 0.25), _quantile(ordered, 0.75))
