"""Mirror detectors: the export and the import of one consignment (matched in
``marts.fct_consignment_matches``) compared with each other.

Global Financial Integrity treats a pair as "clean" when quantities (here: net mass) differ by less than
2.5% and the import/export unit-price ratio lies within 0.75-1.75. Values are compared on the FOB
basis (the import's CIF value divided by the CIF/FOB factor). A pair's discrepancy is charged to one
side, the other scores 0: a value gap to the import (where duty is at stake) unless the export's
declared value is the less likely of the two among their own peers by more than ``mirror_blame_odds``
(:mod:`tradesentry.detection.features`); a mass or HS gap to the side that strays more from its peers.
The history of pairs completed in the window gives the tail probabilities.

``orphan_export``: an export to a member declared ``transit_window_days`` before the scored night
with no matching import by that night (phantom-shipment lead).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from detectors.base import FeatureFrame, Reason, finite, fmt_num, fmt_ratio, normal_tail_p
from detectors.config import DetectionConfig


def _pair_col(history: FeatureFrame, name: str) -> np.ndarray:
    pairs = history.extras.get("pairs")
    if pairs is None or name not in pairs.columns or len(pairs) == 0:
        return np.zeros(0)
    v = pairs[name].to_numpy(dtype="float64", na_value=np.nan)
    return v[np.isfinite(v)]


def _sides(row: Mapping[str, Any]) -> tuple[str, str]:
    own = str(row.get("reporter_country"))
    other = str(row.get("pair_partner_country"))
    return (own, other) if row.get("flow") == "export" else (other, own)


class MirrorValue:
    name: ClassVar[str] = "mirror_value"
    version: ClassVar[str] = "2.1"
    family: ClassVar[str] = "mirror_value"
    scope: ClassVar[str] = "any"
    kind: ClassVar[str] = "mirror_value_mismatch"

    def __init__(self, config: DetectionConfig | None = None) -> None:
        self.config = config or DetectionConfig()
        self.history_scores_ = np.zeros(0)

    def fit(self, history: FeatureFrame) -> MirrorValue:
        self.history_scores_ = np.abs(_pair_col(history, "lr_value"))
        return self

    def score(self, night: FeatureFrame) -> np.ndarray:
        """|robust z| of the pair's FOB value log ratio among the history's pairs, on the blamed side."""
        z = night.col("pair_z_value", 0.0)
        blamed = night.col("blame_value", 0.0) > 0
        return np.where(blamed, np.abs(z), 0.0)

    def tail_p(self, scores: np.ndarray) -> np.ndarray:
        return np.where(np.asarray(scores) > 0, normal_tail_p(scores), 1.0)

    def fires(self, night: FeatureFrame) -> np.ndarray:
        r = np.exp(night.col("pair_lr_value", 0.0))
        blamed = night.col("blame_value", 0.0) > 0
        return blamed & ((r < self.config.mirror_price_low) | (r > self.config.mirror_price_high))

    def explain(self, row: Mapping[str, Any]) -> list[Reason]:
        if not finite(row.get("pair_lr_value")) or not row.get("blame_value"):
            return []
        exp_c, imp_c = _sides(row)
        r = math.exp(float(row["pair_lr_value"]))
        side = "import" if row.get("flow") == "import" else "export"
        z = row.get("pair_z_value")
        zt = f", {float(z):+.1f} robust SDs from the history's pairs" if finite(z) else ""
        text = (
            f"Value: the {side} of this consignment; {exp_c} export declared "
            f"{fmt_num(float(row['pair_export_value']))} USD FOB, {imp_c} import "
            f"{fmt_num(float(row['pair_import_value']))} USD FOB (after CIF/FOB {self.config.cif_fob_factor}): "
            f"import/export {fmt_ratio(r)}{zt} (GFI clean pairs {self.config.mirror_price_low}-"
            f"{self.config.mirror_price_high}x)"
        )
        return [Reason(text, "consignment", float(row.get(f"L_{self.name}", 0.0)), self.name)]


class MirrorMass:
    name: ClassVar[str] = "mirror_mass"
    version: ClassVar[str] = "2.0"
    family: ClassVar[str] = "mirror_mass"
    scope: ClassVar[str] = "any"
    kind: ClassVar[str] = "mirror_mass_mismatch"

    def __init__(self, config: DetectionConfig | None = None) -> None:
        self.config = config or DetectionConfig()
        self.history_scores_ = np.zeros(0)

    def fit(self, history: FeatureFrame) -> MirrorMass:
        self.history_scores_ = np.abs(_pair_col(history, "lr_mass"))
        return self

    def score(self, night: FeatureFrame) -> np.ndarray:
        """|robust z| of the pair's net mass log ratio among the history's pairs, on the blamed side."""
        z = night.col("pair_z_mass", 0.0)
        blamed = night.col("blame_mass", 0.0) > 0
        return np.where(blamed, np.abs(z), 0.0)

    def tail_p(self, scores: np.ndarray) -> np.ndarray:
        return np.where(np.asarray(scores) > 0, normal_tail_p(scores), 1.0)

    def fires(self, night: FeatureFrame) -> np.ndarray:
        lr = np.abs(night.col("pair_lr_mass", 0.0))
        blamed = night.col("blame_mass", 0.0) > 0
        # |X - M| / max(X, M) > tolerance  <=>  |ln(X/M)| > -ln(1 - tolerance)
        return blamed & (lr > -math.log(1.0 - self.config.mirror_qty_tolerance))

    def explain(self, row: Mapping[str, Any]) -> list[Reason]:
        if not finite(row.get("pair_lr_mass")) or not row.get("blame_mass"):
            return []
        exp_c, imp_c = _sides(row)
        r = math.exp(float(row["pair_lr_mass"]))
        text = (
            f"Mass: {exp_c} export declared {fmt_num(float(row['pair_export_mass']))} kg, {imp_c} import "
            f"{fmt_num(float(row['pair_import_mass']))} kg for the same consignment (import/export "
            f"{fmt_ratio(r)}; clean pairs differ by under {self.config.mirror_qty_tolerance:.1%})"
        )
        return [Reason(text, "mass", float(row.get(f"L_{self.name}", 0.0)), self.name)]


class HsMismatch:
    name: ClassVar[str] = "hs_mismatch"
    version: ClassVar[str] = "1.1"
    family: ClassVar[str] = "hs_mismatch"
    scope: ClassVar[str] = "any"
    kind: ClassVar[str] = "hs_mismatch"

    def __init__(self, config: DetectionConfig | None = None) -> None:
        self.config = config or DetectionConfig()
        self.history_scores_ = np.zeros(0)

    def fit(self, history: FeatureFrame) -> HsMismatch:
        self.history_scores_ = _pair_col(history, "hs_mismatch")
        return self

    def score(self, night: FeatureFrame) -> np.ndarray:
        mis = night.col("pair_hs_mismatch", 0.0) > 0
        blamed = night.col("blame_hs", 0.0) > 0
        # stronger when the declared code makes the unit value implausible
        return np.where(mis & blamed, 1.0 + np.abs(night.col("z_uv", 0.0)), 0.0)

    def tail_p(self, scores: np.ndarray) -> np.ndarray:
        """P(the two sides' codes differ) among the history's pairs x P(a unit value this far from
        the declared code's peers) (Gaussian tail of the robust z): an innocent disagreement (an HS
        edition, a clerical slip) says nothing about the price, so under the null the two are
        independent, while goods declared under another code carry that code's price."""
        n = len(self.history_scores_)
        k = float(np.sum(self.history_scores_ > 0))
        base = (k + 1.0) / (n + 2.0)
        s = np.asarray(scores, dtype="float64")
        return np.where(s > 0, base * normal_tail_p(np.maximum(s - 1.0, 0.0)), 1.0)

    def fires(self, night: FeatureFrame) -> np.ndarray:
        return self.score(night) > 0

    def explain(self, row: Mapping[str, Any]) -> list[Reason]:
        if not row.get("pair_hs_mismatch") or not row.get("blame_hs"):
            return []
        text = (
            f"HS code: declared HS {row.get('hs6')}; {row.get('pair_partner_country')} declared the same "
            f"consignment as HS {row.get('pair_partner_hs6')}"
        )
        if finite(row.get("z_uv")) and finite(row.get("uv")):
            text += (
                f"; {fmt_num(float(row['uv']))} USD/kg is {float(row['z_uv']):+.1f} robust SDs from "
                f"HS {row.get('uv_group')} peers"
            )
            if finite(row.get("partner_hs_uv_med")):
                text += f" (HS {row.get('pair_partner_hs6')} median {fmt_num(float(row['partner_hs_uv_med']))} USD/kg)"
        return [Reason(text, "hs_code", float(row.get(f"L_{self.name}", 0.0)), self.name)]


class OrphanExport:
    name: ClassVar[str] = "orphan_export"
    version: ClassVar[str] = "1.1"
    family: ClassVar[str] = "orphan"
    scope: ClassVar[str] = "any"
    kind: ClassVar[str] = "orphan_export"

    def __init__(self, config: DetectionConfig | None = None) -> None:
        self.config = config or DetectionConfig()
        self.history_scores_ = np.zeros(0)

    def fit(self, history: FeatureFrame) -> OrphanExport:
        return self

    def score(self, night: FeatureFrame) -> np.ndarray:
        orphan = night.col("is_orphan", 0.0) > 0
        n = night.col("orphan_dest_exports", 1.0)
        k = night.col("orphan_dest_orphans", 1.0)
        # share of orphans among the OTHER export declarations to that member that night: a lone
        # orphan keeps its full weight; when a member's feed is late or held, all its exports are
        # orphans. One other orphan is as likely another phantom as a feed problem (small members
        # send a handful of exports a night): a feed problem takes at least two
        share = np.where(n > 1, (k - 1.0) / np.maximum(n - 1.0, 1.0), 0.0)
        sig = np.where(
            (share <= self.config.orphan_max_share) | (k < 3),
            self.config.orphan_significance,
            -np.log10(np.clip(share, 1e-12, 1.0)),
        )
        return np.where(orphan, sig, 0.0)

    def tail_p(self, scores: np.ndarray) -> np.ndarray:
        return np.power(10.0, -np.asarray(scores, dtype="float64"))

    def fires(self, night: FeatureFrame) -> np.ndarray:
        return self.score(night) >= self.config.orphan_significance

    def explain(self, row: Mapping[str, Any]) -> list[Reason]:
        if not row.get("is_orphan"):
            return []
        n = int(row.get("orphan_dest_exports") or 0)
        k = int(row.get("orphan_dest_orphans") or 0)
        dest = row.get("partner_country")
        text = (
            f"Consignment: export of {fmt_num(float(row.get('value') or 0))} USD to member {dest} declared "
            f"{str(row.get('night'))[:10]}, {self.config.transit_window_days} days ago; no matching import declared by "
            f"{dest} since; {dest} matched {n - k} of {n} exports from that night"
        )
        return [Reason(text, "consignment", float(row.get(f"L_{self.name}", 0.0)), self.name)]
