"""Detector units: tail probabilities, batch independence, rules, orphans."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from detectors import (
    DetectionConfig,
    ECODTail,
    FeatureFrame,
    IForestPeer,
    OrphanExport,
    PeerPriceRule,
    TailModel,
    WeightRule,
    build_detectors,
)


def _frame(n: int, seed: int = 0) -> FeatureFrame:
    rng = np.random.default_rng(seed)
    return FeatureFrame(
        pd.DataFrame({"z_uv": rng.normal(size=n), "z_vq": rng.normal(size=n), "z_mq": rng.normal(size=n)})
    )


def test_tail_model_is_monotone_and_never_ties_past_the_history():
    tm = TailModel(np.random.default_rng(1).normal(size=1000))
    s = np.array([-5.0, 0.0, 1.0, 2.0, 3.0, 4.0, 8.0, 20.0])
    p = tm.p(s)
    assert p[0] == 1.0 and np.all(np.diff(p) < 0) and p[-1] > 0
    assert abs(tm.p(np.array([0.0]))[0] - 0.5) < 0.05
    assert TailModel(np.zeros(0)).p(np.array([3.0]))[0] == 1.0


def test_model_detectors_are_batch_independent_and_seeded():
    hist, night = _frame(600, 1), _frame(50, 2)
    for cls in (ECODTail, IForestPeer):
        det = cls(DetectionConfig()).fit(hist)
        batch = det.score(night)
        alone = np.concatenate([det.score(FeatureFrame(night.df.iloc[[i]])) for i in range(len(night))])
        np.testing.assert_allclose(batch, alone, rtol=0, atol=1e-12)
        again = cls(DetectionConfig()).fit(hist).score(night)
        np.testing.assert_array_equal(batch, again)


def test_pyod_ecod_is_batch_dependent_which_is_why_ecod_tail_exists():
    from pyod.models.ecod import ECOD

    hist, night = _frame(300, 1), _frame(40, 2)
    m = ECOD().fit(hist.df.to_numpy())
    batch = m.decision_function(night.df.to_numpy())
    alone = np.array([m.decision_function(night.df.to_numpy()[[i]])[0] for i in range(len(night))])
    assert np.max(np.abs(batch - alone)) > 1e-6


def test_peer_price_rule_thresholds_and_weight_split():
    cfg = DetectionConfig()
    rule, weight = PeerPriceRule(cfg), WeightRule(cfg)
    med = math.log(20.0)
    df = pd.DataFrame(
        {
            "l_uv": [
                math.log(20 * 0.4),
                math.log(20 * 0.6),
                math.log(20 * 3.5),
                math.log(20 / 4),
                math.log(20 * 0.3),
            ],
            "uv_med": [med] * 5,
            "uv_spread": [0.25] * 5,
            # row 3: mass x4, value per unit unchanged; row 4: no quantity
            "l_vq": [math.log(4 * 0.4), math.log(4 * 0.6), math.log(4 * 3.5), math.log(4), np.nan],
            "vq_med": [math.log(4)] * 4 + [np.nan],
            "l_mq": [math.log(0.2)] * 3 + [math.log(0.8), np.nan],
            "mq_med": [math.log(0.2)] * 4 + [np.nan],
            "mq_spread": [0.1] * 5,
            "vq_spread": [0.25] * 5,
            "quantity": [100.0, 100.0, 100.0, 100.0, np.nan],
        }
    )
    f = FeatureFrame(df)
    # the rule fires on the value per unit where a quantity is declared (row 3: only the mass moved)
    assert rule.fires(f).tolist() == [True, False, True, False, True]
    assert weight.fires(f).tolist() == [False, False, False, True, False]
    # scores are robust z-scores: per unit where declared, else per kg; the mass row scores 0 on value
    z = rule.score(f)
    assert z[3] == pytest.approx(0.0) and z[0] > 3 and z[1] < z[0]
    assert weight.score(f)[3] > 10 and weight.score(f)[0] == pytest.approx(0.0)
    row = df.iloc[0].to_dict() | {
        "uv": 8.0,
        "uv_n": 40,
        "flow": "import",
        "hs6": "610910",
        "uv_level": "hs6",
        "uv_group": "610910",
    }
    text = rule.explain(row | {"l_vq": float("nan")})[0].text
    assert text.startswith("Value: declared 8.00 USD/kg; HS 610910 import peers: median 20.0 USD/kg over 40")
    assert "(0.40x)" in text
    per_unit = rule.explain(row | {"quantity_unit": "u", "vq_n": 30, "vq_level": "hs6", "vq_group": "610910"})
    assert per_unit[0].text.startswith("Value: declared 1.60 USD per u; HS 610910 import peers: median 4.00")


def test_orphan_export_lone_vs_held_feed():
    det = OrphanExport(DetectionConfig(orphan_significance=4.0, orphan_max_share=0.2))
    df = pd.DataFrame(
        {"is_orphan": [1, 1, 0], "orphan_dest_exports": [30, 10, 30], "orphan_dest_orphans": [1, 10, 1]}
    )
    s = det.score(FeatureFrame(df))
    assert s[0] == 4.0 and s[1] == 0.0 and s[2] == 0.0
    assert det.tail_p(s)[0] == 1e-4


def test_orphan_export_one_other_orphan_is_not_a_held_feed():
    # a small destination (5 export declarations that night), two phantoms: one other orphan is
    # as likely another phantom as a feed problem; three of five are a feed problem
    det = OrphanExport(DetectionConfig(orphan_significance=4.0, orphan_max_share=0.2))
    df = pd.DataFrame(
        {"is_orphan": [1, 1], "orphan_dest_exports": [5, 5], "orphan_dest_orphans": [2, 3]}
    )
    s = det.score(FeatureFrame(df))
    assert s[0] == 4.0 and 0.0 < s[1] < 1.0


def test_registry_builds_the_configured_detectors():
    dets = build_detectors(DetectionConfig(detectors=("peer_price", "orphan_export")))
    assert [d.name for d in dets] == ["peer_price", "orphan_export"]
    for d in build_detectors(DetectionConfig()):
        assert d.name and d.version and d.family


def test_hs_mismatch_tail_is_the_mismatch_share_times_the_price_tail():
    from detectors.base import normal_tail_p
    from detectors.mirror import HsMismatch

    det = HsMismatch(DetectionConfig())
    det.history_scores_ = np.array([0.0] * 97 + [1.0])  # one mismatched pair among 98
    p = det.tail_p(np.array([0.0, 1.0, 4.0]))
    base = 2.0 / 100.0
    assert p[0] == 1.0  # no mismatch: no evidence
    assert p[1] == pytest.approx(base)  # a mismatch at a price typical of the declared code
    assert p[2] == pytest.approx(base * float(normal_tail_p(np.array([3.0]))[0]))


def test_mirror_confirmation_discounts_the_value_family_only():
    from tradesentry.detection.engine import _combine, mirror_confirmed

    cfg = DetectionConfig(detectors=("peer_price", "weight"))
    df = pd.DataFrame(
        {
            # confirmed; value gap charged to this side; mass gap; other HS6 declared by the
            # partner; no pair
            "pair_lr_value": [0.01, -1.2, 0.0, 0.0, np.nan],
            "pair_z_value": [0.3, -40.0, 0.0, 0.0, np.nan],
            "pair_lr_mass": [0.005, 0.0, 1.4, 0.0, np.nan],
            "pair_hs_mismatch": [0, 0, 0, 1, np.nan],
            "blame_value": [0, 1, 0, 0, np.nan],
        }
    )
    frame = FeatureFrame(df)
    assert mirror_confirmed(frame, cfg).tolist() == [True, False, False, False, False]
    # the same gap charged to the other side vouches for this side's value
    other = FeatureFrame(df.assign(blame_value=[0, 0, 0, 0, np.nan]))
    assert mirror_confirmed(other, cfg).tolist() == [True, True, False, False, False]
    dets = build_detectors(cfg)
    pvals = {"peer_price": np.full(5, 1e-4), "weight": np.ones(5)}
    sig = _combine(dets, pvals, 5, cfg, frame)
    assert sig[0] == pytest.approx(4.0 * cfg.mirror_confirm_discount)
    assert sig[1:] == pytest.approx([4.0] * 4)
    pvals["weight"] = np.full(5, 1e-6)  # another family's evidence stays whole
    assert _combine(dets, pvals, 5, cfg, frame)[0] == pytest.approx(6.0 + cfg.bonus_weight * (2.0 - 1.0))


def test_export_to_a_member_not_paired_yet_waits_for_the_mirror():
    from tradesentry.detection.engine import _combine

    cfg = DetectionConfig(detectors=("peer_price",))
    frame = FeatureFrame(pd.DataFrame({"mirror_pending": [1, 0]}))
    sig = _combine(build_detectors(cfg), {"peer_price": np.full(2, 1e-4)}, 2, cfg, frame)
    assert sig.tolist() == pytest.approx([4.0 * cfg.mirror_pending_discount, 4.0])
