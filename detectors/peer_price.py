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

from detectors.base import FeatureFrame, Reason, finite, fmt_num, fmt_ratio, peer_label
from detectors.config import DetectionConfig


def price_deviation(frame: FeatureFrame) -> np.ndarray:
    """Log deviation of the unit value from the cleaned peer median, per kg, confirmed per unit."""
    d_uv = frame.col("l_uv") - frame.col("uv_med")
    d_vq = frame.col("l_vq") - frame.col("vq_med")
    has_q = np.isfinite(d_vq)
    same = np.sign(d_uv) == np.sign(d_vq)
    confirmed = np.where(same, np.sign(d_uv) * np.minimum(np.abs(d_uv), np.abs(d_vq)), 0.0)
    out = np.where(has_q, confirmed, d_uv)
    return np.where(np.isfinite(out), out, 0.0)


class PeerPriceRule:
    name: ClassVar[str] = "peer_price"
    version: ClassVar[str] = "1.0"
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
        d = price_deviation(night)
        spread = np.maximum(night.col("uv_spread", self.config.spread_floor), self.config.spread_floor)
        excess = np.maximum(np.maximum(self.lo - d, d - self.hi), 0.0)
        # beyond the threshold, in robust spreads of the peer group
        return excess / spread

    def fires(self, night: FeatureFrame) -> np.ndarray:
        return self.score(night) > 0

    def explain(self, row: Mapping[str, Any]) -> list[Reason]:
        if not finite(row.get("uv")) or not finite(row.get("uv_med")):
            return []
        med = math.exp(float(row["uv_med"]))
        uv = float(row["uv"])
        ratio = uv / med if med > 0 else float("nan")
        text = (
            f"Value: declared {fmt_num(uv)} USD/kg; {peer_label(row)}: median {fmt_num(med)} USD/kg "
            f"over {int(row.get('uv_n') or 0)} declarations ({fmt_ratio(ratio)})"
        )
        if ratio < self.config.low_price_ratio:
            text += f"; below the lowest acceptable price {fmt_num(med * self.config.low_price_ratio)} USD/kg"
        elif ratio > self.config.high_price_multiple:
            text += f"; above {fmt_num(self.config.high_price_multiple)}x the peer median"
        if finite(row.get("l_vq")) and finite(row.get("vq_med")):
            vq = math.exp(float(row["l_vq"]))
            vmed = math.exp(float(row["vq_med"]))
            text += (
                f"; {fmt_num(vq)} USD per {row.get('quantity_unit') or 'unit'} vs peer median {fmt_num(vmed)}"
            )
        return [Reason(text, "value", float(row.get(f"L_{self.name}", 0.0)), self.name)]
