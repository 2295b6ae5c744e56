"""Weight rule: net mass per supplementary unit against the peers' (same HS, flow and unit).

A mass multiplied or divided while the value is left alone shows as a mass per unit far from the
peers' while the value per unit stays normal (the value per kg then looks under- or over-valued,
which the peer-price rule leaves to this rule when the quantity is declared).
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
)
from detectors.config import DetectionConfig


class WeightRule:
    name: ClassVar[str] = "weight"
    version: ClassVar[str] = "2.0"
    family: ClassVar[str] = "weight"
    scope: ClassVar[str] = "night"

    def __init__(self, config: DetectionConfig | None = None) -> None:
        self.config = config or DetectionConfig()
        self.lo = math.log(self.config.weight_low_ratio)
        self.hi = math.log(self.config.weight_high_multiple)
        self.history_scores_ = np.zeros(0)

    def fit(self, history: FeatureFrame) -> WeightRule:
        self.history_scores_ = self.score(history)
        return self

    def score(self, night: FeatureFrame) -> np.ndarray:
        """|robust z| of the mass per supplementary unit against the peers' (0 without a quantity)."""
        d = night.col("l_mq") - night.col("mq_med")
        d = np.where(np.isfinite(d), d, 0.0)
        spread = np.maximum(night.col("mq_spread", self.config.spread_floor), self.config.spread_floor)
        return np.abs(d) / count_spread(night, spread)

    def tail_p(self, scores: np.ndarray) -> np.ndarray:
        return normal_tail_p(scores)

    def fires(self, night: FeatureFrame) -> np.ndarray:
        """The rule: mass per unit below ``weight_low_ratio`` or above ``weight_high_multiple`` x peers."""
        d = night.col("l_mq") - night.col("mq_med")
        d = np.where(np.isfinite(d), d, 0.0)
        return (d < self.lo) | (d > self.hi)

    def explain(self, row: Mapping[str, Any]) -> list[Reason]:
        if not finite(row.get("l_mq")) or not finite(row.get("mq_med")):
            return []
        mq = math.exp(float(row["l_mq"]))
        med = math.exp(float(row["mq_med"]))
        unit = row.get("quantity_unit") or "unit"
        text = (
            f"Mass: declared {fmt_num(float(row['mass']))} kg for {fmt_num(float(row['quantity']))} {unit} = "
            f"{fmt_num(mq)} kg per {unit}; {peer_label(row, 'mq')}: median {fmt_num(med)} kg per {unit} "
            f"over {int(row.get('mq_n') or 0)} declarations ({fmt_ratio(mq / med)})"
        )
        if finite(row.get("z_vq")):
            text += f"; value per {unit} is {float(row['z_vq']):+.1f} robust SDs from peers"
        return [Reason(text, "mass", float(row.get(f"L_{self.name}", 0.0)), self.name)]
