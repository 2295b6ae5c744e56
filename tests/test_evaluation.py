"""The evaluation's arithmetic on hand-made cases (no thresholds on the real figures here)."""

from __future__ import annotations

from datetime import date, timedelta

import duckdb
import numpy as np
import pandas as pd
import pytest

from tradesentry.evaluation.metrics import (
    average_precision,
    explanation_share,
    judge,
    names_field,
    precision_at,
    rank_order,
    recall_by_kind,
    top_k,
)
from tradesentry.evaluation.run import Pool, collect, random_scores, robust_z_scores, simulate_decisions

KEYS = [f"d{i:02d}" for i in range(1, 11)]
SCORES = [0.9, 0.8, 0.8, 0.7, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0]
LABELS = [True, False, True, False, False, True, False, False, False, False]
KINDS = ["undervaluation", "", "phantom_export", "", "", "undervaluation", "", "", "", ""]


def test_top_k_is_ceil_of_the_share_and_at_least_one():
    assert top_k(10, 0.02) == 1
    assert top_k(10, 0.25) == 3
    assert top_k(1000, 0.01) == 10
    assert top_k(1001, 0.01) == 11
    assert top_k(0, 0.01) == 0


def test_ties_are_broken_by_key_not_by_input_order():
    order = rank_order(SCORES, KEYS)
    assert [KEYS[i] for i in order[:4]] == ["d01", "d02", "d03", "d04"]
    rev = list(reversed(range(10)))
    order_rev = rank_order([SCORES[i] for i in rev], [KEYS[i] for i in rev])
    assert [KEYS[rev[i]] for i in order_rev] == [KEYS[i] for i in order]
    assert rank_order([np.nan, 1.0], ["a", "b"]).tolist() == [1, 0]  # NaN ranks last


def test_precision_recall_and_average_precision_by_hand():
    rep = judge("t", KEYS, SCORES, LABELS, KINDS, shares=(0.1, 0.2, 0.5), kind_share=0.3)
    # ranked labels: T F T F F T F F F F
    assert rep.precision == {0.1: 1.0, 0.2: 0.5, 0.5: 0.4}
    assert rep.recall[0.5] == pytest.approx(2 / 3)
    assert rep.average_precision == pytest.approx((1 / 1 + 2 / 3 + 3 / 6) / 3)
    # top 30% = d01, d02, d03
    assert rep.recall_by_kind == {"phantom_export": (1, 1, 1.0), "undervaluation": (1, 2, 0.5)}
    assert rep.n == 10 and rep.positives == 3


def test_perfect_and_worst_rankings():
    y = np.array([True, True, False, False])
    assert average_precision(y) == 1.0
    assert average_precision(y[::-1]) == pytest.approx((1 / 3 + 2 / 4) / 2)
    assert precision_at(y, 0.5) == 1.0
    assert np.isnan(average_precision(np.zeros(3, dtype=bool)))


def test_recall_by_kind_ignores_non_anomalies():
    kinds = np.array(["a", "", "b", "a", ""], dtype=object)
    assert recall_by_kind(kinds, 0.6) == {"a": (1, 2, 0.5), "b": (1, 1, 1.0)}


def test_explanations_match_the_reason_head_to_the_field():
    assert names_field("Value: declared 0.41 USD/kg; HS 610910 ...", "customs_value")
    assert names_field("Mass: declared 10 kg ...", "net_mass")
    assert names_field("HS code: declared HS 240110 ...", "hs_code")
    assert names_field("Consignment: export of 1,000 USD ...", "consignment")
    assert not names_field("Value: declared ...", "net_mass")
    assert not names_field(None, "customs_value")
    assert explanation_share([("Value: x", "customs_value"), ("Mass: y", "hs_code")]) == (1, 2, 0.5)


# ------------------------------------------------------------------------------------ warehouse


N0 = date(2026, 11, 1)


def _warehouse() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("create schema marts; create schema detection")
    decl = pd.DataFrame(
        {
            "declaration_key": ["XA|E1|1", "XA|E2|1", "XB|I1|1", "XB|I2|1", "XA|E3|1", "XC|I9|1"],
            "night": [N0, N0 + timedelta(days=5), N0, N0 + timedelta(days=1), N0, N0 - timedelta(days=3)],
            "flow": ["export", "export", "import", "import", "export", "import"],
            "hs6": ["610910"] * 6,
            "customs_value_usd": [100.0, 100.0, 100.0, 10.0, 120.0, 100.0],
            "net_mass_kg": [10.0, 10.0, 10.0, 10.0, 10.0, 10.0],
        }
    )
    con.register("decl_df", decl)
    con.execute("create table marts.fct_declarations as select * from decl_df")
    scores = pd.DataFrame(
        {
            "night": [N0, N0 + timedelta(days=5), N0, N0 + timedelta(days=1), N0, N0 + timedelta(days=3)],
            "declaration_key": ["XA|E1|1", "XA|E2|1", "XB|I1|1", "XB|I2|1", "XA|E3|1", "XA|E1|1"],
            "score": [0.1, 0.2, 0.3, 0.9, 0.05, 0.8],
        }
    )
    con.register("scores_df", scores)
    con.execute("create table detection.scores as select * from scores_df")
    con.execute("""create table detection.anomalies as select * from (values
        ('a1', DATE '2026-11-02', 1, false, ['XB|I2|1'], 'XB|I2|1', ['Value: declared 1 USD/kg']),
        ('a2', DATE '2026-11-04', 1, false, ['XA|E1|1'], 'XA|E1|1', ['Consignment: export ...']),
        ('a3', DATE '2026-11-01', 1, false, ['XB|I1|1'], 'XB|I1|1', ['Value: declared ...']),
        ('a4', DATE '2026-11-01', 2, true, ['XA|E3|1'], 'XA|E3|1', ['Random audit pick'])
    ) t(anomaly_id, night, rank, is_audit_pick, declaration_keys, primary_key, reasons)""")
    return con


def _truth() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "key": ["XA|E1|1", "XA|E2|1", "XB|I2|1", "XA|E3|1"],
            "night": [N0, N0 + timedelta(days=5), N0 + timedelta(days=1), N0],
            "kind": ["phantom_export", "phantom_export", "undervaluation", "free_sample"],
            "manipulated_field": ["consignment", "consignment", "customs_value", "customs_value"],
            "is_anomaly": [True, True, True, False],
        }
    )


def test_collect_counts_phantoms_once_past_the_transit_window_with_their_best_score():
    con = _warehouse()
    pool = collect(con, _truth(), N0, N0 + timedelta(days=5), transit_days=3)
    df = pool.df.set_index("key")
    # E1: exported N0, transit elapsed N0+3 <= last: counted once, with its orphan-night score 0.8
    assert df.at["XA|E1|1", "label"] and df.at["XA|E1|1", "score"] == 0.8
    # E2: exported N0+5, transit not elapsed by N0+5: left out altogether
    assert "XA|E2|1" not in df.index and pool.excluded_phantoms == 1
    # the free sample is a legitimate oddity: a negative; XC|I9 is before the evaluated nights
    assert not df.at["XA|E3|1", "label"] and "XC|I9|1" not in df.index
    assert sorted(df.index) == ["XA|E1|1", "XA|E3|1", "XB|I1|1", "XB|I2|1"]
    assert df.at["XB|I2|1", "kind"] == "undervaluation" and df.at["XB|I2|1", "field"] == "customs_value"
    # baselines: the random score does not depend on row order; the robust z finds the cheap import
    shuffled = Pool(pool.df.iloc[::-1].reset_index(drop=True), pool.first, pool.last, 0, 0)
    r1 = dict(zip(pool.df["key"], random_scores(pool), strict=True))
    r2 = dict(zip(shuffled.df["key"], random_scores(shuffled), strict=True))
    assert r1 == r2
    z = dict(zip(pool.df["key"], robust_z_scores(con, pool), strict=True))
    assert max(z, key=z.get) == "XB|I2|1"


def test_simulated_decisions_take_the_top_of_each_queue_then_audit_picks():
    con = _warehouse()
    got = simulate_decisions(con, _truth(), N0, N0 + timedelta(days=5), budget=2, audit_share=0.5)
    # one from the queue (rank 1 of the first night in the round: a3 on N0), one audit pick (a4)
    assert got == {"a3": "dismissed", "a4": "dismissed"}
    got = simulate_decisions(con, _truth(), N0, N0 + timedelta(days=5), budget=3, audit_share=0.0)
    assert got == {"a3": "dismissed", "a1": "confirmed", "a2": "confirmed"}
    assert simulate_decisions(con, _truth(), N0, N0, budget=0, audit_share=0.1) == {}


def test_feedback_table_reports_what_the_last_night_learned():
    """The learning-from-analysts table says, per budget, the classifier's skill and weight (or that
    no model was fitted), so an unchanged ranking is explained, not just shown."""
    from tradesentry.evaluation.report import sample_section
    from tradesentry.evaluation.run import SAMPLES, SampleResult, _feedback_row

    rep = judge(
        "x", ["a", "b", "c", "d"], [0.9, 0.8, 0.1, 0.0], [True, False, True, False], ["u", "", "w", ""]
    )
    first, last = date(2026, 11, 13), date(2026, 11, 27)
    res = SampleResult(
        spec=SAMPLES["A"], rows=4, positives=2, by_kind_total={"u": 1, "w": 1}, excluded_phantoms=0,
        truth_missing=0, rankings=[rep, rep, rep], explanations=(1, 2, 0.5),
        explanations_by_kind={"u": (1, 1)}, detect_seconds={"nights": 1, "seconds": 1.0, "per_night": 1.0},
        feedback=[
            _feedback_row(0, {}, rep, first, last),
            _feedback_row(3, {"x": "confirmed", "y": "dismissed", "z": "dismissed"}, rep, first, last,
                          {"labels": 3, "confirmed": 1, "weight": 0.05, "skill": 0.125, "digest": "d"}),
        ],
    )  # fmt: skip
    lines = sample_section(res)
    rows = [line for line in lines if line.startswith("| 0 (") or line.startswith("| 3 (")]
    assert rows[0].endswith("| no model |")
    assert rows[1].startswith("| 3 (1 / 2) |") and rows[1].endswith("| 0.125, 0.050 |")
    header = next(line for line in lines if line.startswith("| decisions"))
    assert header.endswith("| learned: skill, weight |")
