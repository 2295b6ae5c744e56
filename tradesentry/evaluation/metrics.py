"""The arithmetic of the evaluation: rank declarations by score, judge the top.

Everything here is pure (numpy in, numbers out) so that tests can check it on a hand-made case.

- The ranking orders declarations by score descending; ties are broken by the declaration key
  (ascending), so a ranking is deterministic and a constant score does not flatter anyone.
- ``k`` at a share ``f`` of ``n`` declarations is ``ceil(f * n)`` (at least 1).
- Precision at ``f``: anomalies among the top ``k`` / ``k``.
- Average precision: the mean, over all anomalies, of the precision at the rank where each one
  appears (the whole ranking is used; every declaration has a score).
- Recall at ``f`` by kind: anomalies of that kind among the top ``k`` / anomalies of that kind.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

SHARES = (0.01, 0.02, 0.05)


def rank_order(scores: Sequence[float] | np.ndarray, keys: Sequence[str] | np.ndarray) -> np.ndarray:
    """Indices by score descending, ties by key ascending. NaN scores rank last."""
    s = np.asarray(scores, dtype="float64")
    s = np.where(np.isfinite(s), s, -np.inf)
    k = np.asarray(keys, dtype=object).astype(str)
    return np.lexsort((k, -s))


def top_k(n: int, share: float) -> int:
    return max(1, math.ceil(share * n - 1e-9)) if n else 0


def precision_at(ordered_labels: np.ndarray, share: float) -> float:
    y = np.asarray(ordered_labels, dtype=bool)
    k = top_k(len(y), share)
    return float(y[:k].mean()) if k else float("nan")


def recall_at(ordered_labels: np.ndarray, share: float) -> float:
    y = np.asarray(ordered_labels, dtype=bool)
    pos = int(y.sum())
    if pos == 0:
        return float("nan")
    return float(y[: top_k(len(y), share)].sum() / pos)


def average_precision(ordered_labels: np.ndarray) -> float:
    y = np.asarray(ordered_labels, dtype=bool)
    pos = int(y.sum())
    if pos == 0:
        return float("nan")
    hits = np.cumsum(y)
    ranks = np.arange(1, len(y) + 1)
    return float((hits[y] / ranks[y]).sum() / pos)


def recall_by_kind(ordered_kinds: np.ndarray, share: float) -> dict[str, tuple[int, int, float]]:
    """kind -> (found in the top share, total, recall). Rows with an empty kind are not anomalies."""
    kinds = np.asarray(ordered_kinds, dtype=object)
    k = top_k(len(kinds), share)
    out: dict[str, tuple[int, int, float]] = {}
    for kind in sorted({str(x) for x in kinds if x}):
        mask = kinds == kind
        total = int(mask.sum())
        found = int(mask[:k].sum())
        out[kind] = (found, total, found / total if total else float("nan"))
    return out


@dataclass
class RankingReport:
    name: str
    n: int
    positives: int
    precision: dict[float, float]
    recall: dict[float, float]
    average_precision: float
    recall_by_kind: dict[str, tuple[int, int, float]]
    extra: dict[str, object] = field(default_factory=dict)


def judge(
    name: str,
    keys: Sequence[str] | np.ndarray,
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[bool] | np.ndarray,
    kinds: Sequence[str] | np.ndarray,
    shares: Sequence[float] = SHARES,
    kind_share: float = 0.02,
) -> RankingReport:
    """All the figures of one ranking. ``kinds``: the anomaly kind of each positive ('' otherwise)."""
    order = rank_order(scores, keys)
    y = np.asarray(labels, dtype=bool)[order]
    kinds_o = np.asarray(kinds, dtype=object)[order]
    kinds_o = np.where(y, kinds_o, "")
    return RankingReport(
        name=name,
        n=len(y),
        positives=int(y.sum()),
        precision={s: precision_at(y, s) for s in shares},
        recall={s: recall_at(y, s) for s in shares},
        average_precision=average_precision(y),
        recall_by_kind=recall_by_kind(kinds_o, kind_share),
    )


# ------------------------------------------------------------------------------------ explanations

# the first words of a reason (detectors write "Value: ...", "Mass: ...", "HS code: ...",
# "Consignment: ...") against the field the ground truth says was manipulated
REASON_FIELD = {
    "customs_value": ("Value",),
    "net_mass": ("Mass",),
    "hs_code": ("HS code",),
    "consignment": ("Consignment",),
    "origin_country": ("Origin", "Route"),
}


def names_field(first_reason: str | None, manipulated_field: str) -> bool:
    if not first_reason:
        return False
    heads = REASON_FIELD.get(manipulated_field, ())
    return any(first_reason.startswith(h + ":") for h in heads)


def explanation_share(pairs: Sequence[tuple[str | None, str]]) -> tuple[int, int, float]:
    """(named, detected, share) over (first reason, manipulated field) of the detected anomalies."""
    n = len(pairs)
    ok = sum(1 for reason, fld in pairs if names_field(reason, fld))
    return ok, n, (ok / n if n else float("nan"))
