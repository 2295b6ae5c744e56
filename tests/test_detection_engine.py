"""run_detection end to end on a tiny synthetic world: real DuckDB, real PyOD, tmp dirs."""

from __future__ import annotations

import csv
import hashlib
import json
import sys
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import duckdb
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_detection_synth import load_world, make_world

from tradesentry.detection import (
    DetectionConfig,
    anomaly_id,
    build_features,
    export_scores,
    run_detection,
)
from tradesentry.settings import Settings

CFG = DetectionConfig(history_window_nights=20, transit_window_days=10)
EXPECTED_KIND = {
    "undervaluation": "undervaluation",
    "overvaluation": "overvaluation",
    "weight": "weight_mismatch",
    "misclassification": "unit_value_implausible_for_hs",
    "subtle_undervaluation": "mirror_value_mismatch",
    "hs_mismatch": "hs_mismatch",
    "mirror_mass": "mirror_mass_mismatch",
    "phantom_export": "orphan_export",
}


@pytest.fixture(scope="module")
def world():
    return make_world(later_nights=4, transit_window_days=CFG.transit_window_days)


@pytest.fixture(scope="module")
def scored(world, tmp_path_factory):
    path = tmp_path_factory.mktemp("det") / "w.duckdb"
    con = duckdb.connect(str(path))
    load_world(con, world, up_to=world.night)
    result = run_detection(con, world.night, config=CFG)
    yield con, result
    con.close()


def _scores(con, night):
    return con.execute(
        "select declaration_key, score, detector_scores::varchar from detection.scores "
        "where night = ? order by declaration_key",
        [night],
    ).fetchall()


def _anoms(con, night):
    return con.execute(
        "select anomaly_id, kind, level, declaration_keys, primary_key, score, rank, reasons, is_audit_pick "
        "from detection.anomalies where night = ? order by rank",
        [night],
    ).fetchall()


def test_injected_anomalies_rank_at_the_top(world, scored):
    con, result = scored
    ranked = [r[0] for r in con.execute(
        "select declaration_key from detection.scores where night = ? order by score desc, declaration_key",
        [world.night],
    ).fetchall()]  # fmt: skip
    injected = {kind: keys[0] for kind, keys in world.injected.items()}
    top = ranked[: len(injected) + 2]
    missing = {k: ranked.index(v) for k, v in injected.items() if v not in top}
    assert not missing, f"injected rows below the top {len(top)}: {missing}"
    assert result.rows_scored == len(ranked)


def test_kinds_levels_and_keys(world, scored):
    con, _ = scored
    by_primary = {r[4]: r for r in _anoms(con, world.night) if not r[8]}
    for inj_kind, keys in world.injected.items():
        row = by_primary[keys[0]]
        assert row[1] == EXPECTED_KIND[inj_kind], (inj_kind, row[1], row[7])
        if row[1] in ("mirror_value_mismatch", "mirror_mass_mismatch", "hs_mismatch"):
            assert row[2] == "consignment" and len(row[3]) == 2 and keys[0] in row[3]
        else:
            assert row[2] == "declaration" and row[3] == [keys[0]]


def test_reasons_name_the_field_and_carry_numbers(world, scored):
    con, _ = scored
    by_primary = {r[4]: r for r in _anoms(con, world.night) if not r[8]}
    under = by_primary[world.injected["undervaluation"][0]][7]
    assert under[0].startswith("Value: declared ")
    assert "USD/kg" in under[0] and "median" in under[0] and "declarations" in under[0]
    assert "0." in under[0] and "x)" in under[0]
    assert len(under) <= 3
    assert by_primary[world.injected["mirror_mass"][0]][7][0].startswith("Mass: ")
    assert by_primary[world.injected["hs_mismatch"][0]][7][0].startswith("HS code: ")
    assert by_primary[world.injected["misclassification"][0]][7][0].startswith("HS code: ")
    orphan = by_primary[world.injected["phantom_export"][0]][7][0]
    assert orphan.startswith("Consignment: export of ") and "USD" in orphan
    subtle = by_primary[world.injected["subtle_undervaluation"][0]][7][0]
    assert subtle.startswith("Value: the import of this consignment") and "0.65x" in subtle


def test_rerun_is_idempotent_and_identical(world, scored):
    con, _ = scored
    before_s, before_a = _scores(con, world.night), _anoms(con, world.night)
    run_detection(con, world.night, config=CFG)
    assert _scores(con, world.night) == before_s
    assert _anoms(con, world.night) == before_a
    n = con.execute("select count(*) from detection.scores where night = ?", [world.night]).fetchone()[0]
    assert n == len(before_s)


def test_history_window_ignores_later_nights(world, scored, tmp_path):
    con, _ = scored
    later = duckdb.connect(str(tmp_path / "later.duckdb"))
    load_world(later, world)  # nights after N loaded too, and the match mart knows the later imports
    assert later.execute("select max(night) from marts.fct_declarations").fetchone()[0] > world.night
    run_detection(later, world.night, config=CFG)
    assert _scores(later, world.night) == _scores(con, world.night)
    assert [r[0] for r in _anoms(later, world.night)] == [r[0] for r in _anoms(con, world.night)]
    later.close()


def test_history_is_exactly_the_w_nights_before(world, tmp_path):
    con = duckdb.connect(str(tmp_path / "h.duckdb"))
    load_world(con, world)
    # the history rows are fetched when a model detector is fitted on them
    bundle = build_features(con, world.night, replace(CFG, detectors=(*CFG.detectors, "iforest")))
    nights = bundle.history.df["night"]
    assert nights.min().date() >= world.night - timedelta(days=CFG.history_window_nights)
    assert nights.max().date() == world.night - timedelta(days=1)
    tonight = con.execute("select count(*) from _ts_subj where not is_context and night = ?", [world.night])
    assert tonight.fetchone()[0] == int((~bundle.subjects.df["is_context"]).sum())
    con.close()


def test_anomaly_id_is_kind_and_sorted_keys_only(world, scored, tmp_path):
    assert (
        anomaly_id("hs_mismatch", ["XB|IM-1|1", "XA|EX-9|1"])
        == hashlib.sha256(b"hs_mismatch\nXA|EX-9|1\nXB|IM-1|1").hexdigest()[:20]
    )
    con, _ = scored
    base = {r[0]: r for r in _anoms(con, world.night) if not r[8]}
    for aid, r in base.items():
        assert aid == anomaly_id(r[1], r[3])
    # other weights -> other scores, same ids
    other = duckdb.connect(str(tmp_path / "o.duckdb"))
    load_world(other, world, up_to=world.night)
    run_detection(other, world.night, config=replace(CFG, bonus_weight=0.1, iforest_estimators=50))
    again = {r[0]: r for r in _anoms(other, world.night) if not r[8]}
    common = set(base) & set(again)
    assert {world.injected[k][0] for k in world.injected} <= {base[a][4] for a in common}
    assert any(abs(base[a][5] - again[a][5]) > 1e-9 for a in common)
    other.close()


def test_audit_picks_are_deterministic_per_night(world, scored):
    con, _ = scored
    picks = [r[4] for r in _anoms(con, world.night) if r[8]]
    assert len(picks) == CFG.audit_picks_per_night
    run_detection(con, world.night, config=CFG)
    assert [r[4] for r in _anoms(con, world.night) if r[8]] == picks
    flagged = {r[4] for r in _anoms(con, world.night) if not r[8]}
    assert not flagged & set(picks)
    prev = world.night - timedelta(days=1)
    run_detection(con, prev, config=CFG)
    assert [r[4] for r in _anoms(con, prev) if r[8]] != picks


def test_scores_table_and_cap(world, scored, tmp_path):
    con, result = scored
    rows = _scores(con, world.night)
    names = set(json.loads(rows[0][2]))
    assert names == set(CFG.detectors)
    assert all(0.0 <= r[1] < 1.0 for r in rows)
    assert sum(result.by_kind.values()) == result.anomalies
    capped = duckdb.connect(str(tmp_path / "c.duckdb"))
    load_world(capped, world, up_to=world.night)
    res = run_detection(capped, world.night, config=replace(CFG, max_anomalies_per_night=3))
    assert res.anomalies == 3 and res.audit_picks == CFG.audit_picks_per_night
    top3 = [r[0] for r in capped.execute(
        "select primary_key from detection.anomalies where not is_audit_pick order by rank"
    ).fetchall()]  # fmt: skip
    best = [r[0] for r in capped.execute(
        "select declaration_key from detection.scores order by score desc, declaration_key limit 3"
    ).fetchall()]  # fmt: skip
    assert top3 == best
    capped.close()


def test_settings_drive_the_config():
    s = Settings(history_window_nights=30, min_peer_group=5, low_price_ratio=0.4, seed=1)
    cfg = DetectionConfig.from_settings(s)
    assert (cfg.history_window_nights, cfg.min_peer_group, cfg.low_price_ratio, cfg.seed) == (30, 5, 0.4, 1)
    assert cfg.max_anomalies_per_night == s.max_anomalies_per_night


def test_export_scores_csv(world, scored, tmp_path):
    con, _ = scored
    out = tmp_path / "out" / "scores.csv"
    n = export_scores(con, world.night - timedelta(days=1), world.night, out)
    with out.open() as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["country", "declaration_id", "item_no", "score"]
    assert len(rows) - 1 == n
    keys = {f"{r[0]}|{r[1]}|{r[2]}" for r in rows[1:]}
    assert len(keys) == n  # one line per declaration (highest score when scored twice)
    night_keys = {r[0] for r in _scores(con, world.night)}
    assert night_keys <= keys
    scores = [float(r[3]) for r in rows[1:]]
    assert scores == sorted(scores, reverse=True)
    assert f"{rows[1][0]}|{rows[1][1]}|{rows[1][2]}" in {v[0] for v in world.injected.values()}


def test_detection_gives_duckdb_memory_back_and_restores_the_limit(world, tmp_path, monkeypatch):
    """Detection holds the night's features in Python next to DuckDB: it lowers DuckDB's
    memory_limit by the frame's size while it works, never below the floor, and leaves the
    connection with the limit connect() set (a backfill scores every night on one connection)."""
    from tradesentry import warehouse

    monkeypatch.setenv("TRADESENTRY_DUCKDB_MEMORY_LIMIT", "3GB")
    tol = 0.11 * (1 << 30)  # DuckDB shows the limit to a tenth of a GiB, truncated
    con = warehouse.connect(tmp_path / "w.duckdb")
    try:
        configured = warehouse.memory_limit_bytes(con)
        assert configured is not None and abs(configured - 3e9) < tol
        warehouse.yield_memory(con, 1 << 30)
        assert abs(warehouse.memory_limit_bytes(con) - (configured - (1 << 30))) < tol
        warehouse.yield_memory(con, 10 << 30)  # more than there is: the floor
        assert abs(warehouse.memory_limit_bytes(con) - (1 << 30)) < tol
        warehouse.restore_memory_limit(con)
        assert warehouse.memory_limit_bytes(con) == configured

        seen: list[int | None] = []
        real = warehouse.yield_memory

        def spy(c, nbytes, floor_bytes=1 << 30):
            real(c, nbytes, floor_bytes)
            seen.append(warehouse.memory_limit_bytes(c))

        monkeypatch.setattr(warehouse, "yield_memory", spy)
        load_world(con, world, up_to=world.night)
        run_detection(con, world.night, config=CFG)
        assert seen and seen[0] is not None and seen[0] < configured  # lowered while scoring
        assert warehouse.memory_limit_bytes(con) == configured  # and given back
    finally:
        con.close()


def test_settings_memory_limit_reaches_the_connections(world, tmp_path, monkeypatch):
    """A Settings built in code (no environment) caps the warehouse connections the stages open,
    and detection gives the connection back with that cap, not the environment's."""
    from tradesentry import warehouse

    monkeypatch.delenv("TRADESENTRY_DUCKDB_MEMORY_LIMIT", raising=False)
    settings = Settings(data_dir=tmp_path / "data", duckdb_memory_limit="2GB").resolve()
    tol = 0.11 * (1 << 30)
    with warehouse.open_settings_warehouse(settings) as con:
        configured = warehouse.memory_limit_bytes(con)
        assert configured is not None and abs(configured - 2e9) < tol
        load_world(con, world, up_to=world.night)
        run_detection(con, world.night, settings=settings, config=CFG, labels={})
        assert warehouse.memory_limit_bytes(con) == configured
    with warehouse.open_settings_warehouse(settings, read_only=True) as con:
        assert warehouse.memory_limit_bytes(con) == configured
