"""Which detectors run and their thresholds. Defaults come from :class:`tradesentry.settings.Settings`."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

# iforest and ecod_tail stay available (configuration) but are not in the default set: on the
# labelled samples they lowered average precision (benchmarks/evaluation.md, docs in detectors/models.py)
DEFAULT_DETECTORS: tuple[str, ...] = (
    "peer_price",
    "misclass_lot",
    "weight",
    "mirror_value",
    "mirror_mass",
    "hs_mismatch",
    "orphan_export",
)


@dataclass(frozen=True)
class DetectionConfig:
    detectors: tuple[str, ...] = DEFAULT_DETECTORS

    # windows (nights / days)
    history_window_nights: int = 60
    transit_window_days: int = 21

    # peer statistics
    min_peer_group: int = 8
    spread_floor: float = 0.10  # floor on the robust spread of log values (1.4826 * MAD), ~10%
    clean_k: float = (
        3.5  # rows further than clean_k spreads from the median are left out of the cleaned median
    )
    cif_fob_factor: float = 1.06

    # the peer-price score measures a row from its trader's own price level (median deviation of the
    # trader's history declarations from their peers), shrunk by n / (n + trader_price_prior)
    trader_price_prior: float = 10.0

    # peer-price rule (EU "lowest acceptable price": 50% of the cleaned median)
    low_price_ratio: float = 0.5
    high_price_multiple: float = 3.0

    # weight rule: mass per supplementary unit vs peers
    weight_low_ratio: float = 0.5
    weight_high_multiple: float = 2.0

    # mirror (GFI "clean" pair bounds)
    mirror_price_low: float = 0.75
    mirror_price_high: float = 1.75
    mirror_qty_tolerance: float = 0.025
    # spread of clean pairs' log ratios (robust, from the history's pairs), floored
    mirror_value_floor: float = 0.02
    mirror_mass_floor: float = 0.01
    # a value gap is charged to the export only when the export strays from its own peers in the gap's
    # direction and the import's price is likelier than the export's among their own peers by more
    # than these odds (Gaussian likelihood of each side's robust z): an import is where duty is at
    # stake (tradesentry.detection.features, the mirror's blame)
    mirror_blame_odds: float = 10.0
    # a consignment whose two sides agree (same HS6, mass within mirror_qty_tolerance, value within
    # mirror_confirm_z robust SDs of the history's pairs) confirms the declared price: the value
    # family's significance then counts mirror_confirm_discount (tradesentry.detection.engine)
    mirror_confirm_z: float = 2.0
    mirror_confirm_discount: float = 0.5
    # an export to another member not paired yet: its partner's import will confirm or contradict the
    # declaration within the transit window (then the mirror detectors score it again, or the orphan
    # check does), so on its own night the value family counts mirror_pending_discount
    mirror_pending_discount: float = 0.7

    # orphan exports: -log10 tail probability given to an orphan, unless the destination lost more
    # than orphan_max_share of that night's other export declarations, two at least (then a feed is
    # late or held: p = that share)
    orphan_significance: float = 6.0
    orphan_max_share: float = 0.2

    # small lots (samples, parcels): declared value under small_lot_value_usd (the EU's 150 EUR duty
    # relief, about 160 USD) and net mass under small_lot_mass_ratio x the peers' 5th percentile lot:
    # their combined significance is multiplied by small_lot_discount
    small_lot_value_usd: float = 160.0
    small_lot_mass_ratio: float = 0.2
    small_lot_discount: float = 0.3
    # ... and then capped at this (below flag_min_significance): however far a sample strays from its
    # peers' prices and masses, little duty is at stake (tradesentry.detection.engine.small_lot_adjust)
    small_lot_max_significance: float = 2.0

    # misclassification lead: the unit value lies within this many robust SDs of another HS6's peers
    misclass_max_z: float = 2.0
    # ... and its lot evidence (log10 likelihood ratio of the net mass, tradesentry.detection.features)
    # adds at most this to the peer price's significance (detectors.peer_price.MisclassLot)
    misclass_lot_max: float = 1.5
    # explanations name the HS code of a dear export only when its lot is this much likelier (log10)
    # among the other code's lots (imports: whenever the price is typical of another code)
    misclass_lot_lead: float = 1.0
    # without a quantity, the mass is named the suspect of a price gap when it strays this many robust
    # SDs further from the peers' lot sizes than the value does
    mass_suspect_margin: float = 1.5

    # model detectors
    model_features: tuple[str, ...] = (
        "z_uv", "z_vq", "z_mq", "rarity_partner", "rarity_origin", "volume_jump", "price_shift", "trader_new",
    )  # fmt: skip
    iforest_estimators: int = 100
    iforest_max_samples: int = 256
    fit_max_rows: int = 200_000  # history rows used to fit (deterministic sample by key hash)
    seed: int = 20261128

    # combining and flagging
    bonus_weight: float = 0.5  # share of other families' significance added to the strongest one
    bonus_min: float = 1.0  # significance a family needs before it adds anything
    flag_min_significance: float = 3.0  # flag rows at or above this combined -log10 p, or when a rule fires
    max_anomalies_per_night: int = 500
    audit_picks_per_night: int = 5  # at least this many random audit picks per night
    audit_share: float = 0.1  # ... and at least this share of the night's table (flagged + audit)

    # pattern-level anomalies (tradesentry.detection.patterns): a trader whose declarations of one
    # HS6 and flow over the last pattern_window_nights nights up to and including N (at most the
    # history window; at least one declared on N) number pattern_min_declarations or more and have a
    # median robust z of log value per kg at or below pattern_max_median_z against the window's HS6
    # peers; at most pattern_max_per_night per night, significance capped at pattern_max_significance
    trader_patterns: bool = True
    # ... and the same test per route (reporter, flow, HS6, partner, origin) across traders: a route
    # pattern spans at least pattern_route_min_traders traders (tradesentry.detection.patterns)
    route_patterns: bool = True
    pattern_route_min_traders: int = 3
    pattern_window_nights: int = 30
    pattern_min_declarations: int = 8
    pattern_max_median_z: float = -1.0
    pattern_max_per_night: int = 20
    pattern_max_significance: float = 6.0

    # learning from analysts' decisions (tradesentry.detection.feedback)
    feedback: bool = True
    feedback_min_each: int = 5  # confirmed and dismissed labels needed before anything is learned
    feedback_ramp: int = 300  # labels at which the learned term reaches its full weight
    feedback_weight: float = 1.0  # significance added per unit of logit(P(confirmed))

    @classmethod
    def from_settings(cls, settings: Any = None, **overrides: Any) -> DetectionConfig:
        values: dict[str, Any] = {}
        if settings is not None:
            for f in fields(cls):
                if hasattr(settings, f.name):
                    values[f.name] = getattr(settings, f.name)
        cfg = cls(**values)
        return replace(cfg, **overrides) if overrides else cfg
