"""The fast feature paths give what the plain SQL gives: peer statistics above HS6 computed only for
the groups that fall back to them, the peers chosen once per group, rows fetched in key order with
their rowids, and the wide rows of flagged declarations read again for explanations."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import bench_detection as bd  # noqa: E402

from detectors.config import DetectionConfig  # noqa: E402
from tradesentry.detection.features import (  # noqa: E402
    METRICS,
    _pick_sql,
    _stats_sql,
    build_features,
    drop_temp_tables,
    full_rows,
)

# small HS6 groups: most rows fall back to HS4 (coarsened here for 4 rows in 5) or HS2 peers
CFG = DetectionConfig(history_window_nights=31, model_features=("z_uv", "z_vq", "z_mq"), min_peer_group=15)
WIDE = [
    "pos", "key", "reporter_country", "declaration_id", "item_no", "night", "flow", "hs6", "hs4", "hs2",
    "partner_country", "origin_country", "trader_id", "trader_name", "quantity", "quantity_unit", "mass",
    "value", "fob_value", "source_file", "source_line", "l_uv", "l_vq", "l_mq", "uv", "uv_level", "uv_group",
    "uv_n", "uv_med", "uv_spread", "z_uv", "vq_level", "vq_group", "vq_n", "vq_med", "vq_spread", "z_vq",
    "mq_level", "mq_group", "mq_n", "mq_med", "mq_spread", "z_mq", "route_hs6_n", "route_partner_n",
    "route_origin_n", "rarity_partner", "rarity_origin", "trader_prev_n", "trader_night_n", "trader_new",
    "volume_jump", "price_shift", "is_context", "pair_partner_key", "pair_partner_country", "pair_partner_hs6",
    "blame_value", "blame_mass", "blame_hs", "pair_lr_value", "pair_lr_mass", "pair_hs_mismatch",
    "pair_z_value", "pair_z_mass", "pair_export_value", "pair_import_value", "pair_export_mass",
    "pair_import_mass", "is_orphan", "orphan_dest_exports", "orphan_dest_orphans", "partner_hs_uv_med",
    "lot_p05_kg", "z_lot_mass", "z_lot_value", "lot_mass_median_kg", "lot_value_median_usd",
    "trader_price_n", "trader_price_level", "misclass_lot_llr", "misclass_hs6", "mirror_pending",
]  # fmt: skip


@pytest.fixture(scope="module")
def con(tmp_path_factory):
    c = duckdb.connect(str(tmp_path_factory.mktemp("paths") / "p.duckdb"))
    bd.build(c, 3000, 9000, 30)
    c.execute(
        "update marts.fct_declarations set hs4 = left(hs6, 2) || 'x' where hash(declaration_key) % 5 > 0"
    )
    yield c
    c.close()


@pytest.mark.parametrize("detectors", ["default", "with_model"])
def test_features_equal_the_plain_sql(con, detectors):
    cfg = CFG if detectors == "default" else replace(CFG, detectors=(*CFG.detectors, "iforest"))
    bundle = build_features(con, bd.NIGHT, cfg)
    df = bundle.subjects.df
    levels = dict(con.execute("select uv_level, count(*) from _ts_pick group by all").fetchall())
    assert levels.get("hs4", 0) > 0 and levels.get("hs2", 0) > 0  # the fallbacks are exercised

    # rows in key order, each with its rowid in _ts_subj
    keys = [k for (k,) in con.execute("select key from _ts_subj order by key").fetchall()]
    by_rowid = dict(con.execute("select rowid, key from _ts_subj").fetchall())
    assert [by_rowid[int(r)] for r in bundle.rowids] == keys
    assert list(df["pos"]) == list(range(len(keys)))
    # the fetched columns are the arrays pandas makes of DuckDB's masked arrays
    cols = [c for c in df.columns if c != "pos"]
    raw = con.execute(f"select {', '.join(cols)} from _ts_subj order by key").fetchnumpy()
    assert any(isinstance(v, np.ma.MaskedArray) and v.mask.any() for v in raw.values())
    pd.testing.assert_frame_equal(pd.DataFrame(raw), df[cols], check_exact=True)

    # the plain SQL: every level's statistics for every group, three joins per metric on every row
    N, W = f"DATE '{bd.NIGHT}'", cfg.history_window_nights
    con.execute(f"""
        create or replace temp table _plain_m as
        select declaration_key as key, lower(flow) as flow, hs6, coalesce(hs4, left(hs6, 4)) as hs4,
            coalesce(hs2, left(hs6, 2)) as hs2, coalesce(quantity_unit, '') as qunit,
            case when customs_value_usd > 0 and net_mass_kg > 0 then ln(customs_value_usd / net_mass_kg) end as l_uv,
            case when customs_value_usd > 0 and quantity > 0 then ln(customs_value_usd / quantity) end as l_vq,
            case when net_mass_kg > 0 and quantity > 0 then ln(net_mass_kg / quantity) end as l_mq,
            night between {N} - {W} and {N} - 1 as is_hist
        from marts.fct_declarations""")  # fmt: skip
    sel, joins = [], []
    for prefix in METRICS:
        con.execute(_stats_sql(prefix, cfg).replace("_ts_st_", "_plain_st_").replace("_ts_m", "_plain_m"))
        c, j = _pick_sql(prefix, cfg)
        sel.append(c)
        joins.append(j.replace("_ts_st_", "_plain_st_"))
    plain = con.execute(f"""
        select m.key, {", ".join(sel)} from _plain_m m
        {" ".join(joins)}
        where m.key in (select key from _ts_subj)
        order by m.key""").df()
    con.execute("drop table _plain_m")
    for prefix in METRICS:
        con.execute(f"drop table _plain_st_{prefix}")
    assert list(plain["key"]) == keys
    for col in ("uv_n", "uv_med", "uv_spread", "z_uv", "vq_n", "vq_med", "vq_spread", "z_vq", "mq_n", "mq_med",
                "mq_spread", "z_mq"):  # fmt: skip
        a = plain[col].to_numpy(dtype="float64", na_value=np.nan)
        b = df[col].to_numpy(dtype="float64", na_value=np.nan)
        assert np.array_equal(a, b, equal_nan=True), col

    # the wide rows of a few positions: every column, descriptive ones read again
    pos = [0, 7, len(df) // 2, len(df) - 1]
    full = full_rows(con, pos, bundle)
    assert list(full.columns) == WIDE
    assert list(full.index) == pos
    src = con.execute(
        "select declaration_key, trader_name, source_file, flow from marts.fct_declarations "
        "where declaration_key in (select unnest(?))",
        [list(full["key"])],
    ).fetchall()
    want = {k: (t, f, fl) for k, t, f, fl in src}
    for _, r in full.iterrows():
        assert (r["trader_name"], r["source_file"], r["flow"]) == want[r["key"]]
        i = int(r["pos"])
        assert r["key"] == keys[i]
        for col in ("uv_level", "uv_group", "vq_level", "mq_level"):
            p, q = plain.iloc[i][col], r[col]
            assert (pd.isna(p) and pd.isna(q)) or p == q, col
    drop_temp_tables(con)
