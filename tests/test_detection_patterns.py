"""Pattern-level anomalies on the synthetic world: one trader that underprices moderately across
many declarations and one control trader that prices normally (``trader_pattern``); four traders
that each declare a few imports of one route (partner and origin BD), all priced low, which no trader
pattern can show (``route_pattern``)."""

from __future__ import annotations

import sys
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_detection_synth import PRODUCTS, _decl, load_world, make_world

from tradesentry.detection import DetectionConfig, anomaly_id, run_detection
from tradesentry.detection.patterns import PATTERN_VERSION, sign_test_significance

CFG = DetectionConfig(history_window_nights=20, transit_window_days=10, pattern_window_nights=15)
HS6 = "610910"
PATTERN_TRADER, CONTROL_TRADER = "TXAPAT", "TXACTL"


ROUTE_TRADERS, ROUTE_PARTNER = ("TXAR1", "TXAR2", "TXAR3", "TXAR4"), "BD"


def _add_trader(
    world, trader: str, price_factor: float, seed: int, start: int, partner: str = "CN", offsets=None
) -> list[str]:
    """Imports of HS 610910 by ``trader`` (XA) from ``partner`` on the nights ``offsets`` before
    tonight (default: 14 over the pattern window, two of them tonight, and one more before the
    window), each priced at ``price_factor`` x the HS6's median (with a small spread). Returns the
    keys inside the 15-night window."""
    rng = np.random.default_rng(seed)
    med = PRODUCTS[HS6][0]
    if offsets is None:
        offsets = [0, 0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 14, 18]  # 18: outside the 15-night window
    rows = []
    for i, off in enumerate(offsets):
        night = world.night - timedelta(days=off)
        mass = float(round(rng.uniform(200, 800), 1))
        value = round(med * mass * price_factor * float(rng.lognormal(0, 0.08)), 2)
        rows.append(
            _decl(rng, "XA", start + i, night, "import", HS6, partner, mass, value, round(mass / 0.2),
                  f"P{trader}{i}", trader)
        )  # fmt: skip
    world.decl = pd.concat([world.decl, pd.DataFrame(rows, columns=world.decl.columns)], ignore_index=True)
    return sorted(r["declaration_key"] for r, off in zip(rows, offsets, strict=True) if off < 15)


@pytest.fixture(scope="module")
def world():
    w = make_world(transit_window_days=CFG.transit_window_days, later_nights=3)
    w.injected["pattern"] = _add_trader(w, PATTERN_TRADER, 0.62, seed=11, start=900001)
    w.injected["control"] = _add_trader(w, CONTROL_TRADER, 1.0, seed=12, start=910001)
    # a route: 4 traders x 3 imports from BD at 0.65 x the median, fewer than a trader pattern needs
    route: list[str] = []
    for j, trader in enumerate(ROUTE_TRADERS):
        offsets = [0, 4 + j, 9 + j] if j == 0 else [1 + j, 5 + j, 10 + j]
        route += _add_trader(w, trader, 0.65, seed=20 + j, start=920001 + 100 * j, partner=ROUTE_PARTNER,
                             offsets=offsets)  # fmt: skip
    w.injected["route"] = sorted(route)
    return w


def _anoms(con, night):
    return con.execute(
        "select anomaly_id, kind, level, declaration_keys, primary_key, score, rank, reasons, "
        "value_at_stake_usd, trader_id, peer_median_usd_per_kg, detector_version from detection.anomalies "
        "where night = ? order by rank",
        [night],
    ).fetchall()


@pytest.fixture(scope="module")
def scored(world, tmp_path_factory):
    con = duckdb.connect(str(tmp_path_factory.mktemp("pat") / "w.duckdb"))
    load_world(con, world, up_to=world.night)
    result = run_detection(con, world.night, config=CFG, labels={})
    yield con, result
    con.close()


def test_pattern_anomaly_keys_id_reasons_and_stake(world, scored):
    con, result = scored
    rows = [r for r in _anoms(con, world.night) if r[1] == "trader_pattern"]
    assert [r[9] for r in rows] == [PATTERN_TRADER], rows
    aid, kind, level, keys, primary, score, rank, reasons, stake, _, peer_med, version = rows[0]
    assert kind == "trader_pattern" and level == "pattern" and rank >= 1
    assert f";patterns={PATTERN_VERSION};" in version and version == result.detector_version
    assert keys == world.injected["pattern"] and len(keys) == 14
    assert aid == anomaly_id("trader_pattern", list(reversed(keys)))
    assert primary in keys and primary.startswith("XA|")
    assert result.by_kind.get("trader_pattern") == 1
    # 14 of 14 below the peers' median: sign test 2^-14, L = 4.21
    assert sign_test_significance(14, 14) == pytest.approx(14 * np.log10(2))
    assert score == pytest.approx(4.2144 / 6.2144, abs=1e-3)
    assert len(reasons) == 3
    assert reasons[0].startswith(
        f"Value pattern: trader XA|{PATTERN_TRADER}: 14 imports of HS {HS6} over 15 nights"
    )
    assert "% below the peers' price" in reasons[0] and "USD/kg" in reasons[0]
    pct = int(reasons[0].split("median ")[1].split("%")[0])
    assert 28 <= pct <= 48, reasons[0]
    assert reasons[1].startswith("Systematic: 14 of 14 declarations below the peers' median")
    assert "none below the peer-price rule's 50% of the median" in reasons[1]
    assert reasons[2].startswith("Shortfall: ") and "USD" in reasons[2]
    # value at stake: the shortfall against the peers' median price for each declaration's mass
    d = world.decl.set_index("declaration_key").loc[keys]
    expected = float(np.maximum(peer_med * d["net_mass_kg"] - d["customs_value_usd"], 0).sum())
    assert stake == pytest.approx(expected, rel=1e-6)
    assert 0.25 * d["customs_value_usd"].sum() < stake < 0.9 * d["customs_value_usd"].sum()


def test_control_trader_and_declaration_level_unchanged(world, scored, tmp_path):
    con, _ = scored
    with_p = _anoms(con, world.night)
    assert not [r for r in with_p if r[9] == CONTROL_TRADER and r[1] == "trader_pattern"]
    other = duckdb.connect(str(tmp_path / "off.duckdb"))
    load_world(other, world, up_to=world.night)
    run_detection(other, world.night, config=replace(CFG, trader_patterns=False), labels={})
    without = _anoms(other, world.night)
    other.close()
    assert not [r for r in without if r[1] == "trader_pattern"]
    decl_level = [r[:6] + r[7:11] for r in with_p if r[1] != "trader_pattern"]
    assert decl_level == [r[:6] + r[7:11] for r in without]  # same rows, scores and order
    # ranks: the patterns are inserted, the others keep their relative order
    assert [r[6] for r in with_p] == list(range(1, len(with_p) + 1))


def test_rerun_and_sharded_run_give_the_same_rows(world, scored, tmp_path):
    con, _ = scored
    before = _anoms(con, world.night)
    run_detection(con, world.night, config=CFG, labels={})
    assert _anoms(con, world.night) == before
    sharded = duckdb.connect(str(tmp_path / "sh.duckdb"))
    load_world(sharded, world, up_to=world.night)
    run_detection(sharded, world.night, config=CFG, labels={}, shards=3)
    assert _anoms(sharded, world.night) == before
    sharded.close()


def test_later_nights_do_not_change_the_pattern(world, scored, tmp_path):
    con, _ = scored
    later = duckdb.connect(str(tmp_path / "later.duckdb"))
    load_world(later, world)  # the world's later rows are loaded too
    run_detection(later, world.night, config=CFG, labels={})
    pat = [r for r in _anoms(later, world.night) if r[1] == "trader_pattern"]
    mine = [r for r in _anoms(con, world.night) if r[1] == "trader_pattern"]
    assert [r[:9] for r in pat] == [r[:9] for r in mine]
    later.close()


def test_cap_and_switch(world, scored, tmp_path):
    con = duckdb.connect(str(tmp_path / "cap.duckdb"))
    load_world(con, world, up_to=world.night)
    run_detection(con, world.night, config=replace(CFG, pattern_max_per_night=0), labels={})
    assert not [r for r in _anoms(con, world.night) if r[1] == "trader_pattern"]
    con.close()


def test_pattern_reaches_the_published_snapshot(world, scored, tmp_path):
    """The snapshot's selects (tradesentry.publish) carry the pattern and every declaration in it."""
    from tradesentry.publish import _snapshot_sql

    con, _ = scored
    con.execute(f"attach '{tmp_path / 'snap.duckdb'}' as snap")
    try:
        for table, select in _snapshot_sql(world.night.isoformat(), CFG.history_window_nights):
            con.execute(f"create table snap.{table} as {select}")
        (aid,) = con.execute("select anomaly_id from snap.anomalies where kind = 'trader_pattern'").fetchone()
        subj = con.execute(
            "select declaration_key from snap.anomaly_declarations where anomaly_id = ? and role = 'subject' "
            "order by 1",
            [aid],
        ).fetchall()
        assert [k for (k,) in subj] == world.injected["pattern"]
        n = con.execute(
            "select count(*) from snap.declarations where declaration_key in (select unnest(?::varchar[]))",
            [world.injected["pattern"]],
        ).fetchone()[0]
        assert n == 14
    finally:
        con.execute("detach snap")


def test_sharded_files_merge_finds_the_same_pattern(world, scored, tmp_path):
    """prepare / shards / merge through files (the DAG's sharded path): the merge rebuilds the
    patterns from the restored peer statistics and the warehouse, identical to the single run."""
    from tradesentry.detection.sharding import merge, prepare, score_shard_files

    con, _ = scored
    want = _anoms(con, world.night)
    path = tmp_path / "files.duckdb"
    with duckdb.connect(str(path)) as w:
        load_world(w, world, up_to=world.night)
    work = tmp_path / "work"
    with duckdb.connect(str(path), read_only=True) as ro:
        manifest = prepare(ro, world.night, CFG, 3, work)
    for e in manifest["shards"]:
        score_shard_files(work, world.night, int(e["shard"]))
    with duckdb.connect(str(path)) as w:
        merge(w, world.night, CFG, work, labels={})
        got = _anoms(w, world.night)
    assert got == want and any(r[1] == "trader_pattern" for r in got)


def test_route_pattern_across_traders(world, scored):
    """The route's 12 declarations (4 traders, 3 each: no trader pattern) make one route pattern,
    reported on the night one of them is declared, with the route and its numbers in the reasons."""
    con, result = scored
    rows = [r for r in _anoms(con, world.night) if r[1] == "route_pattern"]
    assert len(rows) == 1, rows
    aid, _kind, level, keys, primary, score, rank, reasons, stake, trader, peer_med, _ = rows[0]
    assert level == "pattern" and rank >= 1 and trader is None
    assert keys == world.injected["route"] and len(keys) == 12
    assert aid == anomaly_id("route_pattern", keys)
    assert primary in keys
    assert result.by_kind.get("route_pattern") == 1
    assert score == pytest.approx(
        sign_test_significance(12, 12) / (sign_test_significance(12, 12) + 2), abs=1e-3
    )
    assert reasons[0].startswith(
        f"Value pattern: route XA imports from {ROUTE_PARTNER} (origin {ROUTE_PARTNER}), 4 traders: "
        f"12 imports of HS {HS6} over 15 nights"
    ), reasons[0]
    pct = int(reasons[0].split("median ")[1].split("%")[0])
    assert 25 <= pct <= 45, reasons[0]
    assert reasons[1].startswith("Systematic: 12 of 12 declarations below the peers' median")
    d = world.decl.set_index("declaration_key").loc[keys]
    expected = float(np.maximum(peer_med * d["net_mass_kg"] - d["customs_value_usd"], 0).sum())
    assert stake == pytest.approx(expected, rel=1e-6)
    # no trader pattern for the route's traders (3 declarations each), none for the CN route (the
    # pattern trader's 14 low imports sit among the normal CN imports: one trader, not a route)
    assert not [r for r in _anoms(con, world.night) if r[1] == "trader_pattern" and r[9] in ROUTE_TRADERS]


def test_route_pattern_needs_enough_traders_and_can_be_switched_off(world, tmp_path):
    con = duckdb.connect(str(tmp_path / "route.duckdb"))
    load_world(con, world, up_to=world.night)
    run_detection(con, world.night, config=replace(CFG, pattern_route_min_traders=5), labels={})
    assert not [r for r in _anoms(con, world.night) if r[1] == "route_pattern"]
    run_detection(con, world.night, config=replace(CFG, route_patterns=False), labels={})
    kinds = {r[1] for r in _anoms(con, world.night)}
    assert "route_pattern" not in kinds and "trader_pattern" in kinds
    con.close()


def test_chance_patterns_among_many_groups_are_not_reported(world, scored):
    """With a loose threshold (3 declarations, median below the peers' median) many groups pass the
    median test by chance; only those whose sign test beats 1 / (groups tested) are reported: the
    injected trader's and the route's, not the chance ones."""
    from tradesentry.detection.features import build_features, drop_temp_tables
    from tradesentry.detection.patterns import build_pattern_anomalies, find_patterns

    con, _ = scored
    loose = replace(CFG, pattern_min_declarations=3, pattern_max_median_z=0.0, pattern_max_per_night=100)
    bundle = build_features(con, world.night, loose)
    try:
        found = find_patterns(con, world.night, bundle.peer_stats_hs6, loose, "trader_pattern")
        reported = build_pattern_anomalies(con, world.night, bundle.peer_stats_hs6, loose, "v")
    finally:
        drop_temp_tables(con)
    tested = int(found["tested"].iloc[0])
    chance = found[found["trader_id"] != PATTERN_TRADER]
    assert len(chance) >= 3 and tested > len(found)  # groups that pass the median test by chance
    assert all(sign_test_significance(int(r.n), int(r.below)) < np.log10(tested) for r in chance.itertuples())
    traders = {a["trader_id"] for a in reported if a["kind"] == "trader_pattern"}
    assert traders == {PATTERN_TRADER}
    routes = [a["declaration_keys"] for a in reported if a["kind"] == "route_pattern"]
    assert routes == [world.injected["route"]]
