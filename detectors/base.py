"""The one detector interface, the frame detectors read, and empirical tail probabilities.

Every detector is a small class with a ``name``, a ``version``, a ``family`` (detectors of one family
look at the same evidence and are not counted twice when scores are combined) and three methods:

- ``fit(history)``: learn from the W nights before the scored night (never from the night itself);
- ``score(night) -> np.ndarray``: one score per row, higher = more anomalous, each row scored on its
  own (a row's score never depends on the other rows of the batch);
- ``explain(row) -> list[Reason]``: plain-words reasons with numbers, called only for flagged rows.

After ``fit`` every detector holds ``history_scores_`` (its scores of the history rows), from which
the engine derives an empirical tail probability per detector (see :class:`TailModel`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, ClassVar, Protocol, SupportsFloat, TypeGuard, runtime_checkable

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Reason:
    """One reason a row was flagged. ``field`` is the manipulated field it points at:
    ``value``, ``mass``, ``hs_code``, ``consignment``, ``trader`` or ``route``."""

    text: str
    field: str
    strength: float = 0.0  # -log10 tail probability of the detector that gave it
    detector: str = ""


@dataclass
class FeatureFrame:
    """Rows with their features (a pandas frame, one row per declaration) plus extra tables
    (``extras["pairs"]``: mirror pairs of the history, used by the mirror detectors)."""

    df: pd.DataFrame
    night: date | None = None
    extras: dict[str, pd.DataFrame] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.df)

    def col(self, name: str, fill: float | None = None) -> np.ndarray:
        """A numeric column as float64 (NaN for missing, or ``fill``)."""
        if name not in self.df.columns:
            out = np.full(len(self.df), np.nan)
        else:
            out = pd.to_numeric(self.df[name], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        if fill is not None:
            out = np.where(np.isnan(out), fill, out)
        return out

    def matrix(self, names: list[str], fill: float = 0.0) -> np.ndarray:
        if not names:
            return np.zeros((len(self.df), 0))
        return np.column_stack([self.col(n, fill) for n in names])


@runtime_checkable
class Detector(Protocol):
    name: ClassVar[str]
    version: ClassVar[str]
    family: ClassVar[str]
    history_scores_: np.ndarray

    def fit(self, history: FeatureFrame) -> Detector: ...

    def score(self, night: FeatureFrame) -> np.ndarray: ...

    def explain(self, row: Mapping[str, Any]) -> list[Reason]: ...


class TailModel:
    """Empirical tail probability P(history score >= s), with an exponential tail beyond the top 1%.

    Inside the history's range the probability is the empirical one, ``(#{h >= s} + 1) / (n + 1)``.
    Above the threshold ``t`` (the k-th largest history score, k = max(5, 1% of n)) a
    peaks-over-threshold fit takes over: ``p = k/(n+1) * exp(-(s - t) / beta)``, beta = mean excess.
    So the scale is the same for every detector and stays strictly decreasing past the history's
    maximum: two rows far out in the tail never tie at ``1/(n+1)``.
    """

    def __init__(self, history_scores: np.ndarray, min_beta: float = 1e-3) -> None:
        h = np.asarray(history_scores, dtype="float64")
        h = np.sort(h[np.isfinite(h)])
        self.h = h
        self.n = n = len(h)
        if n == 0:
            self.t = math.inf
            self.beta = 1.0
            self.pt = 1.0
            return
        k = min(n, max(5, math.ceil(0.01 * n)))
        self.t = float(h[n - k])
        excess = h[n - k :] - self.t
        spread = float(h[-1] - h[0])
        self.beta = max(float(excess.mean()), min_beta, 0.05 * spread)
        self.pt = k / (n + 1)

    def p(self, scores: np.ndarray) -> np.ndarray:
        s = np.asarray(scores, dtype="float64")
        out = np.ones(len(s))
        if self.n == 0:
            return out
        ok = np.isfinite(s)
        cnt = self.n - np.searchsorted(self.h, s[ok], side="left")
        pe = (cnt + 1.0) / (self.n + 1.0)
        beyond = s[ok] > self.t
        pe = np.where(beyond, self.pt * np.exp(-(s[ok] - self.t) / self.beta), pe)
        out[ok] = np.clip(pe, 1e-300, 1.0)
        return out


def normal_tail_p(z: np.ndarray) -> np.ndarray:
    """Two-sided Gaussian tail probability of a robust z-score: P(|Z| >= |z|). Robust z-scores of log
    prices within peers are close to Gaussian for normal declarations, and unlike an empirical tail
    fitted on the history this stays calibrated when the history itself holds anomalies."""
    from scipy.special import ndtr

    a = np.abs(np.asarray(z, dtype="float64"))
    a = np.where(np.isfinite(a), np.minimum(a, 37.0), 0.0)
    return np.clip(2.0 * ndtr(-a), 1e-300, 1.0)


def count_spread(frame: FeatureFrame, spread: np.ndarray) -> np.ndarray:
    """A per-unit spread widened for small counts: a declared count is only known to +-0.5 unit, so
    one car of 2,000 kg is not 4 robust SDs from peers at 1,450 kg per car."""
    q = frame.col("quantity")
    rounding = np.where(np.isfinite(q) & (q > 0), np.log1p(0.5 / np.where(q > 0, q, 1.0)), 0.0)
    return np.sqrt(spread**2 + rounding**2)


def significance(p: np.ndarray) -> np.ndarray:
    """-log10 of a tail probability (0 = unremarkable, 3 = one in a thousand)."""
    return -np.log10(np.clip(p, 1e-300, 1.0))


def fmt_num(x: float | None) -> str:
    """Numbers for reasons: 3 significant digits, thousands separators for large ones."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    ax = abs(x)
    if ax >= 1000:
        return f"{x:,.0f}"
    if ax >= 100:
        return f"{x:.0f}"
    if ax >= 10:
        return f"{x:.1f}"
    if ax >= 1:
        return f"{x:.2f}"
    if ax == 0:
        return "0"
    return f"{x:.3g}"


def fmt_ratio(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "n/a"
    return f"{x:.2f}x" if x < 10 else f"{x:.1f}x"


def peer_label(row: Mapping[str, Any], prefix: str = "uv") -> str:
    """e.g. 'HS 610910 export peers' (or HS4 / HS2 when the HS6 group was too small)."""
    level = row.get(f"{prefix}_level") or "hs6"
    grp = row.get(f"{prefix}_group") or row.get("hs6")
    name = {"hs6": "HS", "hs4": "HS4", "hs2": "HS2"}.get(str(level), "HS")
    return f"{name} {grp} {row.get('flow', '')} peers"


def finite(x: Any) -> TypeGuard[SupportsFloat]:
    """A number that is neither None, NaN nor infinite (narrows the type for ``float(x)``)."""
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False
