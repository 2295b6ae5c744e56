"""Peer-price rule: declared unit value below ``low_price_ratio`` x the cleaned peer median (the EU
"lowest acceptable price" practice) or above ``high_price_multiple`` x.

Peers are declarations of the same HS6 and flow in the history window (HS4, then HS2, when the group
is smaller than ``min_peer_group``). Where a supplementary quantity is declared, the value per unit
must stray in the same direction as the value per kg: a row whose mass alone is off is the weight
rule's business, not a price anomaly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from detectors.base import (
    FeatureFrame,
    Reason,
    count_spread,
    finite,
    fmt_num,
    fmt_ratio,
    normal_tail_p,
    peer_label,
    significance,
)
from detectors.config import DetectionConfig


def trader_level(frame: FeatureFrame, prior: float) -> np.ndarray:
    """The declaring trader's own price level (median log deviation of its history declarations from
    their peers), shrunk toward 0 by its number of declarations n: level x n / (n + ``prior``)."""
    n = frame.col("trader_price_n", 0.0)
    level = frame.col("trader_price_level", 0.0)
    return np.where(n > 0, level * n / (n + max(prior, 0.0)), 0.0)


def price_deviation(frame: FeatureFrame, trader_prior: float | None = None) -> np.ndarray:
    """Log deviation of the declared value from the cleaned peer median: per supplementary unit where
    a quantity is declared (a manipulated mass leaves it alone), else per kg. With ``trader_prior``,
    measured from the declaring trader's own level (:func:`trader_level`) rather than the market's."""
    d_uv = frame.col("l_uv") - frame.col("uv_med")
    d_vq = frame.col("l_vq") - frame.col("vq_med")
    out = np.where(np.isfinite(d_vq), d_vq, d_uv)
    out = np.where(np.isfinite(out), out, 0.0)
    if trader_prior is None:
        return out
    return np.where(out != 0.0, out - trader_level(frame, trader_prior), 0.0)


def price_z(frame: FeatureFrame, floor: float, trader_prior: float | None = None) -> np.ndarray:
    """The same deviation in robust SDs of the peer group (per unit where declared, else per kg)."""
    d_vq = frame.col("l_vq") - frame.col("vq_med")
    has_q = np.isfinite(d_vq)
    vq_spread = count_spread(frame, np.maximum(frame.col("vq_spread", floor), floor))
    spread = np.where(has_q, vq_spread, frame.col("uv_spread", floor))
    spread = np.maximum(np.where(np.isfinite(spread), spread, floor), floor)
    return price_deviation(frame, trader_prior) / spread


class PeerPriceRule:
    name: ClassVar[str] = "peer_price"
    version: ClassVar[str] = "2.1"
    family: ClassVar[str] = "value"
    scope: ClassVar[str] = "night"

    def __init__(self, config: DetectionConfig | None = None) -> None:
        self.config = config or DetectionConfig()
        self.lo = math.log(self.config.low_price_ratio)
        self.hi = math.log(self.config.high_price_multiple)
        self.history_scores_ = np.zeros(0)

    def fit(self, history: FeatureFrame) -> PeerPriceRule:
        self.history_scores_ = self.score(history)
        return self

    def score(self, night: FeatureFrame) -> np.ndarray:
        """|robust z| of the declared value against the peers (per unit where declared, else per kg)."""
        return np.abs(price_z(night, self.config.spread_floor, self.config.trader_price_prior))

    def tail_p(self, scores: np.ndarray) -> np.ndarray:
        return normal_tail_p(scores)

    def fires(self, night: FeatureFrame) -> np.ndarray:
        """The rule: below ``low_price_ratio`` or above ``high_price_multiple`` x the cleaned median."""
        d = price_deviation(night)
        return (d < self.lo) | (d > self.hi)

    def explain(self, row: Mapping[str, Any]) -> list[Reason]:
        if not finite(row.get("uv")) or not finite(row.get("uv_med")):
            return []
        med = math.exp(float(row["uv_med"]))
        uv = float(row["uv"])
        ratio = uv / med if med > 0 else float("nan")
        has_q = finite(row.get("l_vq")) and finite(row.get("vq_med"))
        unit = row.get("quantity_unit") or "unit"
        if has_q:
            vq = math.exp(float(row["l_vq"]))
            vmed = math.exp(float(row["vq_med"]))
            text = (
                f"Value: declared {fmt_num(vq)} USD per {unit}; {peer_label(row, 'vq')}: median {fmt_num(vmed)} "
                f"USD per {unit} over {int(row.get('vq_n') or 0)} declarations ({fmt_ratio(vq / vmed)}); "
                f"{fmt_num(uv)} USD/kg vs median {fmt_num(med)}"
            )
            ratio = vq / vmed if vmed > 0 else ratio
        else:
            text = (
                f"Value: declared {fmt_num(uv)} USD/kg; {peer_label(row)}: median {fmt_num(med)} USD/kg "
                f"over {int(row.get('uv_n') or 0)} declarations ({fmt_ratio(ratio)})"
            )
        if ratio < self.config.low_price_ratio:
            text += (
                f"; below the lowest acceptable price ({self.config.low_price_ratio:.0%} of the peer median)"
            )
        elif ratio > self.config.high_price_multiple:
            text += f"; above {fmt_num(self.config.high_price_multiple)}x the peer median"
        return [Reason(text, "value", float(row.get(f"L_{self.name}", 0.0)), self.name)]


class MisclassLot:
    """Misclassification lead (family ``value``, counted with the peer price by the strongest): a row
    priced above its HS6 peers and typical of a dearer HS6 of the same section and flow, whose net
    mass is likelier among that code's lots than among the declared code's (``misclass_lot_llr``,
    log10 of the ratio of the lots' empirical tail probabilities, :mod:`tradesentry.detection.features`).
    Its significance is the peer price's plus that evidence, capped at ``misclass_lot_max``: the price
    alone cannot tell goods of a dearer code from dear goods of the declared one, their lot sizes can."""

    name: ClassVar[str] = "misclass_lot"
    version: ClassVar[str] = "1.0"
    family: ClassVar[str] = "value"
    scope: ClassVar[str] = "night"

    def __init__(self, config: DetectionConfig | None = None) -> None:
        self.config = config or DetectionConfig()
        self.history_scores_ = np.zeros(0)

    def fit(self, history: FeatureFrame) -> MisclassLot:
        return self

    def score(self, night: FeatureFrame) -> np.ndarray:
        """-log10 p of the peer price plus the lot evidence (0 without a lead)."""
        llr = night.col("misclass_lot_llr", 0.0)
        ev = np.clip(llr, 0.0, max(self.config.misclass_lot_max, 0.0))
        z = price_z(night, self.config.spread_floor, self.config.trader_price_prior)
        return np.where((ev > 0) & (z > 0), significance(normal_tail_p(z)) + ev, 0.0)

    def tail_p(self, scores: np.ndarray) -> np.ndarray:
        return np.power(10.0, -np.asarray(scores, dtype="float64"))

    def explain(self, row: Mapping[str, Any]) -> list[Reason]:
        if not finite(row.get("misclass_lot_llr")) or not row.get("misclass_hs6") or not finite(row.get("mass")):
            return []
        llr = float(row.get("misclass_lot_llr") or 0.0)
        if llr <= 0:
            return []
        text = (
            f"HS code: {fmt_num(float(row.get('uv') or float('nan')))} USD/kg is typical of HS "
            f"{row.get('misclass_hs6')} {row.get('flow')} peers, and a lot of {fmt_num(float(row.get('mass') or 0.0))} kg "
            f"is {fmt_ratio(10.0**llr)} likelier among their lots than among HS {row.get('hs6')}'s"
        )
        return [Reason(text, "hs_code", float(row.get(f"L_{self.name}", 0.0)), self.name)]
