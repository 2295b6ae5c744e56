"""Features for scoring one night, in DuckDB SQL.

Scoring night N reads the declarations *as of N* (``marts.fct_declarations`` with ``night <= N``, plus
the versions in ``marts.fct_declaration_history`` that were replaced only after N) and uses as history
exactly the W nights ``[N-W, N-1]`` (W = ``history_window_nights``): whatever else is loaded, a rerun
of N gives the same features.

Per declaration:
- robust z-scores of log value per kg (``z_uv``), log value per supplementary unit (``z_vq``) and
  log mass per unit (``z_mq``) within the history's declarations of the same HS6 and flow (and
  quantity unit), falling back to HS4 then HS2 when the group has fewer than ``min_peer_group``
  declarations; median and spread (1.4826 x MAD, floored) of the cleaned group (rows more than
  ``clean_k`` spreads from the raw median left out);
- route rarity: -ln share of this HS6 x partner (and HS6 x origin) among the HS6's history;
- trader: declarations in the history (``trader_new`` when none), volume jump
  ln((tonight + 1) / (per-night history + 1)), price shift (z_uv minus the trader's median z_uv, when
  a model detector is fitted on the history); history rows are computed leaving their own night
  out, so they look like the night scored. Without a model detector (the default) the per-row
  features are computed for the scored rows only: the history enters through group statistics.
- mirror (``fct_consignment_matches`` pairs whose later side is night N): FOB value log ratio, mass log
  ratio, HS mismatch, and which side is blamed;
- orphan exports: exports to a member declared on N - ``transit_window_days`` with no matching import
  declared by N (computed as of N, not from the mart's status column).

Cost (benchmarks/detection.md): the window's rows are read once into a narrow table (keys, groups,
numbers); the peer statistics above HS6 are computed only for the groups some row falls back to; the
peers are chosen once per (flow, HS6, HS4, HS2, unit) group; tonight's table (``_ts_subj``, numbers
and the columns the writes need) is built in one statement and not sorted: the fetch sorts the
numbers by key. The strings explanations read are read again for the flagged rows only
(:func:`full_rows`). Without a model detector the window's rows are dropped before the fetch.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import date, timedelta

import duckdb
import numpy as np
import pandas as pd

from detectors.base import FeatureFrame
from detectors.config import DetectionConfig

METRICS: dict[str, tuple[str, bool]] = {
    # prefix: (log expression over _ts_m columns, keyed by quantity unit)
    "uv": ("l_uv", False),
    "vq": ("l_vq", True),
    "mq": ("l_mq", True),
}

TEMP_TABLES = (
    "_ts_keys",
    "_ts_m",
    "_ts_st_uv",
    "_ts_st_vq",
    "_ts_st_mq",
    "_ts_groups",
    "_ts_pick",
    "_ts_z",
    "_ts_zk",
    "_ts_pairs",
    "_ts_pair_stats",
    "_ts_mirror",
    "_ts_orph",
    "_ts_subj",
    "_ts_lot",
    "_ts_trader",
    "_ts_misc",
)
SHARD_COLUMN = "hs_chapter"  # in _ts_subj: the first two HS digits, the key of a sharded run
MODEL_DETECTORS = {"iforest", "ecod_tail"}  # detectors fitted on the history rows' features
# the numbers detectors, the combination and the feedback model read for every scored row
SUBJECT_COLUMNS = (
    "pos", "is_context", "l_uv", "l_vq", "l_mq", "uv", "uv_n", "uv_med", "uv_spread", "z_uv", "vq_n", "vq_med",
    "vq_spread", "z_vq", "mq_n", "mq_med", "mq_spread", "z_mq", "rarity_partner", "rarity_origin", "trader_new",
    "volume_jump", "price_shift", "quantity", "mass", "value", "blame_value", "blame_mass", "blame_hs",
    "pair_lr_value", "pair_lr_mass", "pair_hs_mismatch", "pair_z_value", "pair_z_mass", "is_orphan",
    "orphan_dest_exports", "orphan_dest_orphans", "lot_p05_kg", "z_lot_mass", "z_lot_value",
    "trader_price_n", "trader_price_level", "misclass_lot_llr", "mirror_pending",
)  # fmt: skip
HISTORY_COLUMNS = {
    "l_uv", "l_vq", "l_mq", "uv", "uv_n", "uv_med", "uv_spread", "z_uv", "vq_n", "vq_med", "vq_spread",
    "z_vq", "mq_n", "mq_med", "mq_spread", "z_mq", "rarity_partner", "rarity_origin", "trader_new",
    "volume_jump", "price_shift", "quantity", "mass", "value",
}  # fmt: skip


@dataclass
class FeatureBundle:
    night: date
    subjects: FeatureFrame  # night N declarations + earlier ones in tonight's pairs / orphan exports
    history: FeatureFrame  # sample of the history rows (fit), extras["pairs"]: history mirror pairs
    peer_stats_hs6: pd.DataFrame  # (flow, hs6, n, median_log_uv, spread) of value per kg
    timings: dict[str, float] = field(default_factory=dict)
    config: DetectionConfig | None = None
    # rowid in _ts_subj of each subject row (the rows are fetched in key order, _ts_subj is not sorted)
    rowids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype="int64"))
    # the schema the marts were read from (tradesentry.warehouse_io.stage_detection_inputs)
    marts_schema: str = "marts"


def date_literal(d: date) -> str:
    """A DuckDB DATE literal."""
    return f"DATE '{d.isoformat()}'"


def _table_exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    row = con.execute(
        "select count(*) from information_schema.tables where table_schema = ? and table_name = ?",
        [schema, table],
    ).fetchall()
    return bool(row and row[0][0])


# _ts_m (every row of the window) holds keys, groups and numbers only; descriptive columns (trader
# name, quantity unit, source file and line) are read for the flagged rows only (full_rows).
# Columns of the scored rows that _ts_subj leaves out too (strings no detector reads for all rows):
# full_rows reads them again from the declarations (or from _ts_pick) for the flagged rows
REREAD_COLUMNS = (
    "flow", "hs6", "hs4", "hs2", "partner_country", "origin_country", "trader_id",
    "uv_level", "uv_group", "vq_level", "vq_group", "mq_level", "mq_group",
)  # fmt: skip
# where the wide row (the one explanations read) has them: after these columns of _ts_subj (d: the
# declarations read again, k: _ts_pick)
WIDE_AFTER = {
    "night": ["d.flow", "d.hs6", "d.hs4", "d.hs2", "d.partner_country", "d.origin_country", "d.trader_id",
              "d.trader_name"],
    "quantity": ["d.quantity_unit"],
    "fob_value": ["d.source_file", "d.source_line"],
    "uv": ["k.uv_level", "k.uv_group"],
    "z_uv": ["k.vq_level", "k.vq_group"],
    "z_vq": ["k.mq_level", "k.mq_group"],
}  # fmt: skip


def as_of_select(con: duckdb.DuckDBPyConnection, marts: str, select: str, where: str, night: date) -> str:
    """``select`` (the column list, no FROM) over the declarations as of night N that match ``where``:
    the current versions in ``fct_declarations`` plus the versions in ``fct_declaration_history``
    replaced only after N, so that a rerun of N reads what N read (../shared/CONTRACTS.md)."""
    src = f"{select}\n        from {marts}.fct_declarations\n        where {where}"
    if _table_exists(con, marts, "fct_declaration_history"):
        src += (
            f"\nunion all\n{select}\n        from {marts}.fct_declaration_history\n"
            f"        where {where} and replaced_by_night > {date_literal(night)}"
        )
    return src


def _decl_columns(cif: float) -> str:
    return f"""
        select declaration_key as key, reporter_country, declaration_id, cast(item_no as integer) as item_no,
            night, lower(flow) as flow, hs6, coalesce(hs4, left(hs6, 4)) as hs4,
            coalesce(hs2, left(hs6, 2)) as hs2, partner_country, origin_country, trader_id,
            cast(quantity as double) as quantity, coalesce(quantity_unit, '') as qunit,
            cast(net_mass_kg as double) as mass, cast(customs_value_usd as double) as value,
            cast(coalesce(statistical_value_usd, customs_value_usd
                / case when upper(valuation_basis) = 'CIF' then {cif} else 1.0 end) as double) as fob_value"""


def _descriptive_select(
    con: duckdb.DuckDBPyConnection, night: date, config: DetectionConfig, keys: str, marts: str = "marts"
) -> str:
    """The descriptive and group columns of the declarations as of N whose key is in ``keys`` (a
    subquery), computed as :func:`_decl_columns` computes them."""
    lo = date_literal(night - timedelta(days=max(config.history_window_nights, config.transit_window_days)))
    where = f"night between {lo} and {date_literal(night)} and declaration_key in ({keys})"
    cols = """select declaration_key as key, lower(flow) as flow, hs6, coalesce(hs4, left(hs6, 4)) as hs4,
            coalesce(hs2, left(hs6, 2)) as hs2, partner_country, origin_country, trader_id, trader_name,
            quantity_unit, coalesce(quantity_unit, '') as qunit, source_file,
            cast(source_line as integer) as source_line"""
    return as_of_select(con, marts, cols, where, night)


def _stats_sql(prefix: str, cfg: DetectionConfig) -> str:
    expr, keyed = METRICS[prefix]
    unit = "qunit" if keyed else "''"
    floor = cfg.spread_floor
    raw_parts = []
    clean_parts = []
    for lvl in ("hs6", "hs4", "hs2"):
        raw_parts.append(
            f"select '{lvl}' as level, flow, {lvl} as grp, qunit, count(*) as n, median(x) as med0, "
            f"mad(x) as mad0 from h group by flow, {lvl}, qunit"
        )
        clean_parts.append(
            f"select r.level, r.flow, r.grp, r.qunit, h.x from r join h on r.level = '{lvl}' "
            f"and h.flow = r.flow and h.{lvl} = r.grp and h.qunit = r.qunit "
            f"where abs(h.x - r.med0) <= {cfg.clean_k} * greatest(1.4826 * r.mad0, {floor})"
        )
    return f"""
        create or replace temp table _ts_st_{prefix} as
        with h as (
            select flow, hs6, hs4, hs2, {unit} as qunit, {expr} as x
            from _ts_m where is_hist and {expr} is not null
        ),
        r as ({" union all ".join(raw_parts)}),
        c as ({" union all ".join(clean_parts)}),
        cs as (select level, flow, grp, qunit, median(x) as med, mad(x) as mad from c group by all)
        select r.level, r.flow, r.grp, r.qunit, r.n, coalesce(cs.med, r.med0) as med,
            greatest(1.4826 * coalesce(cs.mad, r.mad0), {floor}) as spread
        from r left join cs using (level, flow, grp, qunit)"""


def _level_stats_sql(prefix: str, cfg: DetectionConfig, lvl: str, needed: str | None) -> str:
    """The rows of ``_ts_st_{prefix}`` for one level, as :func:`_stats_sql` computes them; ``needed``:
    a query of the (flow, grp, qunit) groups to compute (None: all)."""
    expr, keyed = METRICS[prefix]
    unit = "qunit" if keyed else "''"
    floor = cfg.spread_floor
    h = f"select flow, {lvl} as grp, {unit} as qunit, {expr} as x from _ts_m where is_hist and {expr} is not null"
    if needed is not None:
        h = (
            f"select h.* from ({h}) h semi join ({needed}) k "
            "on k.flow = h.flow and k.grp = h.grp and k.qunit = h.qunit"
        )
    return f"""
        with h as ({h}),
        r as (select '{lvl}' as level, flow, grp, qunit, count(*) as n, median(x) as med0, mad(x) as mad0
              from h group by flow, grp, qunit),
        c as (select r.level, r.flow, r.grp, r.qunit, h.x from r join h on h.flow = r.flow and h.grp = r.grp
              and h.qunit = r.qunit
              where abs(h.x - r.med0) <= {cfg.clean_k} * greatest(1.4826 * r.mad0, {floor})),
        cs as (select level, flow, grp, qunit, median(x) as med, mad(x) as mad from c group by all)
        select r.level, r.flow, r.grp, r.qunit, r.n, coalesce(cs.med, r.med0) as med,
            greatest(1.4826 * coalesce(cs.mad, r.mad0), {floor}) as spread
        from r left join cs using (level, flow, grp, qunit)"""


def _peer_stats_sqls(prefix: str, cfg: DetectionConfig) -> list[str]:
    """``_ts_st_{prefix}``: the same statistics as :func:`_stats_sql`, computed for every HS6 group but
    for the HS4 / HS2 groups only where a row of ``_ts_groups`` falls back to them (its HS6, then
    HS4, group has fewer than ``min_peer_group`` declarations): the other HS4 / HS2 rows are never
    picked, and the levels above HS6 cost twice the HS6 level's time."""
    _, keyed = METRICS[prefix]
    unit = "g.qunit" if keyed else "''"
    mp = cfg.min_peer_group
    small6 = (
        f"left join _ts_st_{prefix} s6 on s6.level = 'hs6' and s6.flow = g.flow and s6.grp = g.hs6 "
        f"and s6.qunit = {unit}"
    )
    small4 = (
        f"left join _ts_st_{prefix} s4 on s4.level = 'hs4' and s4.flow = g.flow and s4.grp = g.hs4 "
        f"and s4.qunit = {unit}"
    )
    need4 = (
        f"select distinct g.flow, g.hs4 as grp, {unit} as qunit from _ts_groups g {small6} "
        f"where not coalesce(s6.n >= {mp}, false)"
    )
    need2 = (
        f"select distinct g.flow, g.hs2 as grp, {unit} as qunit from _ts_groups g {small6} {small4} "
        f"where not coalesce(s6.n >= {mp}, false) and not coalesce(s4.n >= {mp}, false)"
    )
    return [
        f"create or replace temp table _ts_st_{prefix} as {_level_stats_sql(prefix, cfg, 'hs6', None)}",
        f"insert into _ts_st_{prefix} {_level_stats_sql(prefix, cfg, 'hs4', need4)}",
        f"insert into _ts_st_{prefix} {_level_stats_sql(prefix, cfg, 'hs2', need2)}",
    ]


def _pick_sql(prefix: str, cfg: DetectionConfig, src: str = "m", with_z: bool = True) -> tuple[str, str]:
    """Select list and joins choosing HS6, else HS4, else HS2 peers for one metric (``src``: the alias
    of the rows, with columns flow, hs6, hs4, hs2, qunit; ``with_z``: also the z-score, from the
    metric's column of ``src``)."""
    expr, keyed = METRICS[prefix]
    unit = f"{src}.qunit" if keyed else "''"
    mp = cfg.min_peer_group
    a6, a4, a2 = f"{prefix}6", f"{prefix}4", f"{prefix}2"
    joins = "\n".join(
        f"left join _ts_st_{prefix} {a} on {a}.level = '{lvl}' and {a}.flow = {src}.flow "
        f"and {a}.grp = {src}.{lvl} and {a}.qunit = {unit}"
        for a, lvl in ((a6, "hs6"), (a4, "hs4"), (a2, "hs2"))
    )

    def pick(col6: str, col4: str, col2: str) -> str:
        return (
            f"case when {a6}.n >= {mp} then {col6} when {a4}.n >= {mp} then {col4} "
            f"when {a2}.n >= {mp} then {col2} end"
        )

    cols = f"""
        {pick("'hs6'", "'hs4'", "'hs2'")} as {prefix}_level,
        {pick(f"{src}.hs6", f"{src}.hs4", f"{src}.hs2")} as {prefix}_group,
        {pick(f"{a6}.n", f"{a4}.n", f"{a2}.n")} as {prefix}_n,
        {pick(f"{a6}.med", f"{a4}.med", f"{a2}.med")} as {prefix}_med,
        {pick(f"{a6}.spread", f"{a4}.spread", f"{a2}.spread")} as {prefix}_spread"""
    if with_z:
        cols += f""",
        ({expr} - {pick(f"{a6}.med", f"{a4}.med", f"{a2}.med")})
            / {pick(f"{a6}.spread", f"{a4}.spread", f"{a2}.spread")} as z_{prefix}"""
    return cols, joins


# HS sections (chapter ranges): goods are misdeclared under a code of the same kind of goods
HS_SECTIONS = (
    (1, 5), (6, 14), (15, 15), (16, 24), (25, 27), (28, 38), (39, 40), (41, 43), (44, 46), (47, 49),
    (50, 63), (64, 67), (68, 70), (71, 71), (72, 83), (84, 85), (86, 89), (90, 92), (93, 93),
    (94, 96), (97, 97),
)  # fmt: skip


# misclass_lot compares a row's lot with those of at most this many other codes of its section
MISCLASS_MAX_ALTERNATIVES = 5


def section_sql(hs6: str) -> str:
    """The HS section index (:data:`HS_SECTIONS`) of an HS6 column, in SQL (-1: no valid chapter)."""
    ch = f"try_cast(left({hs6}, 2) as integer)"
    whens = " ".join(f"when {ch} between {lo} and {hi} then {i}" for i, (lo, hi) in enumerate(HS_SECTIONS))
    return f"(case {whens} else -1 end)"


GROUP_KEY = ("flow", "hs6", "hs4", "hs2", "qunit")  # all the choice of peers depends on


def _z_table_sql(cfg: DetectionConfig, where: str, view: bool = False) -> list[str]:
    """``_ts_z``: the rows of ``_ts_m`` (``where``, over alias m) with, per metric, the peers chosen
    (level, group, n, median, spread) and the robust z. The choice depends on the row's (flow, HS6,
    HS4, HS2, unit) only: it is made once per distinct group (``_ts_pick``, a few thousand rows) and
    joined onto the rows with one join instead of three per metric. ``view``: ``_ts_z`` is a view
    (read once by the subjects' table), not a table."""
    selects, joins = [], []
    for prefix in METRICS:
        c, j = _pick_sql(prefix, cfg, src="g", with_z=False)
        selects.append(c)
        joins.append(j)
    pick = f"""
        create or replace temp table _ts_pick as
        select g.*, {",".join(selects)}
        from _ts_groups g
        {" ".join(joins)}"""
    cols = []
    for prefix, (expr, _) in METRICS.items():
        cols += [f"p.{prefix}_{c}" for c in ("level", "group", "n", "med", "spread")]
        cols.append(f"(m.{expr} - p.{prefix}_med) / p.{prefix}_spread as z_{prefix}")
    on = " and ".join(f"p.{c} is not distinct from m.{c}" for c in GROUP_KEY)
    z = f"""
        create or replace temp {"view" if view else "table"} _ts_z as
        select m.*, {", ".join(cols)}
        from (select * from _ts_m m {where}) m
        left join _ts_pick p on {on}"""
    return [pick, z]


def build_features(
    con: duckdb.DuckDBPyConnection, night: date, config: DetectionConfig, marts: str = "marts"
) -> FeatureBundle:
    """The features of night N's rows (see the module's docstring); temp tables stay for the writes.
    ``marts``: the schema of ``con`` holding the marts (``tradesentry.warehouse_io``).

    Every statement here either sorts explicitly or does not depend on row order (the rows are
    fetched in key order through their rowids), so DuckDB may insert and scan in any order meanwhile
    (``preserve_insertion_order`` off: cheaper parallel table builds); the setting is restored."""
    before = con.execute("select current_setting('preserve_insertion_order')").fetchall()[0][0]
    con.execute("set preserve_insertion_order = false")
    try:
        return _build_features(con, night, config, marts)
    finally:
        con.execute(f"set preserve_insertion_order = {'true' if before else 'false'}")


def _build_features(
    con: duckdb.DuckDBPyConnection, night: date, config: DetectionConfig, marts: str = "marts"
) -> FeatureBundle:
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    W = config.history_window_nights
    T = config.transit_window_days
    N = date_literal(night)
    h_lo = date_literal(night - timedelta(days=W))
    h_hi = date_literal(night - timedelta(days=1))
    lo = date_literal(night - timedelta(days=max(W, T)))
    cif = float(config.cif_fob_factor)

    # 1. declarations as of N, nights [lo, N]
    src = as_of_select(con, marts, _decl_columns(cif), f"night between {lo} and {N}", night)
    con.execute("drop view if exists _ts_decl")
    con.execute(f"""
        create or replace temp table _ts_m as
        select *,
            case when value > 0 and mass > 0 then ln(value / mass) end as l_uv,
            case when value > 0 and quantity > 0 then ln(value / quantity) end as l_vq,
            case when mass > 0 and quantity > 0 then ln(mass / quantity) end as l_mq,
            case when value > 0 and mass > 0 then value / mass end as uv,
            night between {h_lo} and {h_hi} as is_hist
        from ({src})""")
    con.execute("create or replace temp view _ts_decl as select * from _ts_m")
    timings["load"] = time.perf_counter() - t0

    # mirror pairs (as of N: both sides declared by N); the rows scored tonight: night N's, and the
    # earlier rows tonight's pairs and orphan check charge
    t = time.perf_counter()
    if _table_exists(con, marts, "fct_consignment_matches"):
        matches = f"""(select distinct export_key, import_key from {marts}.fct_consignment_matches
                      where export_key is not null and import_key is not null)"""
    else:
        matches = "(select null::varchar as export_key, null::varchar as import_key where false)"
    con.execute(f"""
        create or replace temp table _ts_pairs as
        select m.export_key, m.import_key, e.night as e_night, i.night as i_night,
            greatest(e.night, i.night) as done_night,
            e.reporter_country as e_country, i.reporter_country as i_country,
            e.fob_value as e_val, i.fob_value as i_val, e.mass as e_mass, i.mass as i_mass,
            e.hs6 as e_hs6, i.hs6 as i_hs6,
            case when e.fob_value > 0 and i.fob_value > 0 then ln(i.fob_value / e.fob_value) end as lr_value,
            case when e.mass > 0 and i.mass > 0 then ln(i.mass / e.mass) end as lr_mass,
            (e.hs6 <> i.hs6)::int as hs_mismatch
        from {matches} m
        join _ts_decl e on e.key = m.export_key and e.flow = 'export'
        join _ts_decl i on i.key = m.import_key and i.flow = 'import'""")
    export_night = date_literal(night - timedelta(days=T))
    con.execute(f"""
        create or replace temp table _ts_orph as
        with members as (select distinct reporter_country as c from _ts_decl),
        ex as (
            select d.key, d.partner_country, d.reporter_country, d.declaration_id,
                d.key not in (select export_key from _ts_pairs) as is_orphan
            from _ts_decl d
            where d.flow = 'export' and d.night = {export_night}
              and d.partner_country in (select c from members)
              and d.partner_country <> d.reporter_country
        ),
        -- counted by declaration (one consignment), not by item: the items of one phantom
        -- declaration are not other exports the destination failed to match
        dc as (
            select partner_country, reporter_country, declaration_id, max(is_orphan::int) as orphan
            from ex group by all
        ),
        dest as (
            select partner_country, count(*) as n, sum(orphan) as k from dc group by all
        )
        select ex.key, ex.is_orphan::int as is_orphan,
            dest.n as orphan_dest_exports, dest.k as orphan_dest_orphans
        from ex join dest using (partner_country)""")
    need_history = bool(set(config.detectors) & MODEL_DETECTORS)
    con.execute(f"""
        create or replace temp table _ts_keys as
        select export_key as key from _ts_pairs where done_night = {N}
        union select import_key from _ts_pairs where done_night = {N}
        union select key from _ts_orph where is_orphan = 1""")
    subjects_only = f"where m.night = {N} or m.key in (select key from _ts_keys)"
    timings["pairs"] = time.perf_counter() - t

    # 2. peer statistics of the history, per metric and level
    t = time.perf_counter()
    con.execute(f"""
        create or replace temp table _ts_groups as
        select distinct {", ".join(GROUP_KEY)} from _ts_m m {"" if need_history else subjects_only}""")
    for prefix in METRICS:
        for sql in _peer_stats_sqls(prefix, config):
            con.execute(sql)
    _drop(con, "_ts_f")
    _drop(con, "_ts_z")
    for sql in _z_table_sql(config, "" if need_history else subjects_only, view=not need_history):
        con.execute(sql)
    # the rows tonight's pairs charge, with their z (the mirror's blame reads them)
    zk = "_ts_z"
    if not need_history:
        zk = "_ts_zk"
        con.execute(
            "create or replace temp table _ts_zk as select * from _ts_z where key in (select key from _ts_keys)"
        )
    timings["peer_stats"] = time.perf_counter() - t

    # 4. mirror: tonight's pairs against the spread of the history's pairs
    t = time.perf_counter()
    # the spread of clean pairs: robust statistics of the history's pair log ratios (floored)
    vf, mf = config.mirror_value_floor, config.mirror_mass_floor
    con.execute(f"""
        create or replace temp table _ts_pair_stats as
        select coalesce(median(lr_value), 0.0) as v_med,
            greatest(coalesce(1.4826 * mad(lr_value), 0.0), {vf}) as v_spread,
            coalesce(median(lr_mass), 0.0) as m_med,
            greatest(coalesce(1.4826 * mad(lr_mass), 0.0), {mf}) as m_spread,
            count(lr_value) as n_pairs
        from _ts_pairs where done_night between {h_lo} and {h_hi}""")
    # blame: a value gap is charged to the import (where duty is at stake: "an import value far below
    # the partner's export value is an undervaluation lead, whatever the peer prices say") unless
    # "the export was changed" explains the pair better than "the import was changed" by more than
    # mirror_blame_odds. Both sides declare the same goods, so either reading accounts for the gap;
    # they differ in which declared value is the goods' honest one, a draw from its own peers: the
    # export's under "import changed" (likelihood phi(z_export)), the import's under "export
    # changed" (phi(z_import)). The likelihood ratio is exp((z_export^2 - z_import^2) / 2), the export
    # straying from its peers in the gap's direction. Mass and HS gaps go to the side that strays
    # more from its peers.
    blame_llr = 2.0 * math.log(max(config.mirror_blame_odds, 1e-9))
    con.execute(f"""
        create or replace temp table _ts_mirror as
        with np as (
            select p.*,
                (lr_value - ps.v_med) / ps.v_spread as z_value,
                (lr_mass - ps.m_med) / ps.m_spread as z_mass,
                not (-sign(coalesce(lr_value, 0)) * coalesce(ze.z_vq, ze.z_uv, 0) > 0
                     and power(coalesce(ze.z_vq, ze.z_uv, 0), 2) - power(coalesce(zi.z_vq, zi.z_uv, 0), 2)
                         > {blame_llr!r}) as bv_imp,
                sign(coalesce(lr_mass, 0)) * coalesce(zi.z_mq, -zi.z_uv, 0)
                    >= -sign(coalesce(lr_mass, 0)) * coalesce(ze.z_mq, -ze.z_uv, 0) as bm_imp,
                abs(coalesce(zi.z_vq, zi.z_uv, 0)) >= abs(coalesce(ze.z_vq, ze.z_uv, 0)) as bh_imp
            from _ts_pairs p
            cross join _ts_pair_stats ps
            join {zk} ze on ze.key = p.export_key
            join {zk} zi on zi.key = p.import_key
            where p.done_night = {N}
        ),
        sides as (
            select export_key as key, import_key as pair_partner_key, i_country as pair_partner_country,
                i_hs6 as pair_partner_hs6, not bv_imp as blame_value, not bm_imp as blame_mass,
                not bh_imp as blame_hs, np.*
            from np
            union all
            select import_key as key, export_key as pair_partner_key, e_country as pair_partner_country,
                e_hs6 as pair_partner_hs6, bv_imp as blame_value, bm_imp as blame_mass,
                bh_imp as blame_hs, np.*
            from np
        )
        select key, pair_partner_key, pair_partner_country, pair_partner_hs6,
            blame_value::int as blame_value, blame_mass::int as blame_mass, blame_hs::int as blame_hs,
            lr_value as pair_lr_value, lr_mass as pair_lr_mass, hs_mismatch as pair_hs_mismatch,
            z_value as pair_z_value, z_mass as pair_z_mass,
            e_val as pair_export_value, i_val as pair_import_value,
            e_mass as pair_export_mass, i_mass as pair_import_mass
        from sides
        qualify row_number() over (partition by key order by abs(coalesce(lr_value, 0)) desc,
            pair_partner_key) = 1""")
    timings["mirror"] = time.perf_counter() - t

    # 3. route rarity and trader features (history rows leave themselves / their night out); for
    # tonight's rows and the earlier rows tonight's pairs and orphan check charge, and for the
    # history too only when a model detector is fitted on it (_ts_z holds those rows already)
    con.execute(f"""
        create or replace temp view _ts_f as
        with rh as (select flow, hs6, count(*) as n from _ts_m where is_hist group by all),
        rp as (select flow, hs6, coalesce(partner_country, '') as pc, count(*) as c
               from _ts_m where is_hist group by all),
        ro as (select flow, hs6, coalesce(origin_country, '') as oc, count(*) as c
               from _ts_m where is_hist group by all),
        tn as (select reporter_country, trader_id, night, count(*) as c
               from _ts_m where trader_id is not null and night = {N} group by all
               union all
               -- per-night counts of the history: only for the (trader, night) of rows in _ts_z
               select reporter_country, trader_id, night, count(*) as c
               from _ts_m semi join (select distinct reporter_country, trader_id, night from _ts_z
                                     where trader_id is not null and is_hist) s
                   using (reporter_country, trader_id, night)
               where trader_id is not null and is_hist group by all),
        th as (select reporter_country, trader_id, count(*) as tot
               from _ts_m where trader_id is not null and is_hist group by all),
        tz as (select reporter_country, trader_id, median(z_uv) as med_z
               from _ts_z where trader_id is not null and is_hist and {need_history} group by all)
        select z.*,
            greatest(coalesce(rh.n, 0) - z.is_hist::int, 0) as route_hs6_n,
            greatest(coalesce(rp.c, 0) - z.is_hist::int, 0) as route_partner_n,
            greatest(coalesce(ro.c, 0) - z.is_hist::int, 0) as route_origin_n,
            ln((greatest(coalesce(rh.n, 0) - z.is_hist::int, 0) + 1.0)
               / (greatest(coalesce(rp.c, 0) - z.is_hist::int, 0) + 1.0)) as rarity_partner,
            ln((greatest(coalesce(rh.n, 0) - z.is_hist::int, 0) + 1.0)
               / (greatest(coalesce(ro.c, 0) - z.is_hist::int, 0) + 1.0)) as rarity_origin,
            case when z.trader_id is null then null
                 else coalesce(th.tot, 0) - case when z.is_hist then coalesce(tn.c, 0) else 0 end
            end as trader_prev_n,
            tn.c as trader_night_n,
            case when z.trader_id is null then null
                 else (coalesce(th.tot, 0) - case when z.is_hist then coalesce(tn.c, 0) else 0 end) = 0
            end::double as trader_new,
            case when z.trader_id is null then null
                 else ln((coalesce(tn.c, 0) + 1.0) / ((coalesce(th.tot, 0)
                     - case when z.is_hist then coalesce(tn.c, 0) else 0 end) / {float(W)} + 1.0))
            end as volume_jump,
            z.z_uv - tz.med_z as price_shift
        from _ts_z z
        left join rh on rh.flow = z.flow and rh.hs6 = z.hs6
        left join rp on rp.flow = z.flow and rp.hs6 = z.hs6 and rp.pc = coalesce(z.partner_country, '')
        left join ro on ro.flow = z.flow and ro.hs6 = z.hs6 and ro.oc = coalesce(z.origin_country, '')
        left join tn on tn.reporter_country = z.reporter_country and tn.trader_id = z.trader_id
            and tn.night = z.night
        left join th on th.reporter_country = z.reporter_country and th.trader_id = z.trader_id
        left join tz on tz.reporter_country = z.reporter_country and tz.trader_id = z.trader_id""")

    # 5. tonight's table and the fetch: tonight's rows (+ context rows), a deterministic history sample
    t = time.perf_counter()
    # the peers' usual lot size (5th percentile of net mass): far smaller lots of tiny value are
    # samples or parcels, legitimate oddities the ranking discounts
    con.execute("""
        create or replace temp table _ts_lot as
        select flow, hs6, exp(quantile_cont(ln(mass), 0.05)) as lot_p05_kg,
            median(ln(mass)) as lot_mass_med, greatest(1.4826 * mad(ln(mass)), 0.1) as lot_mass_spread,
            median(ln(value)) filter (where value > 0) as lot_value_med,
            greatest(1.4826 * mad(ln(value)) filter (where value > 0), 0.1) as lot_value_spread
        from _ts_m where is_hist and mass > 0 group by all""")
    # the trader's own price level: median log deviation of its history declarations from their HS6
    # peers' cleaned median (rows further than clean_k spreads left out, as the cleaned median
    # leaves them out), per declaring trader; a trader's prices sit consistently above or below the
    # market, and a row typical of its trader's level is less remarkable
    mp, ck = config.min_peer_group, config.clean_k
    con.execute(f"""
        create or replace temp table _ts_trader as
        select m.reporter_country, m.trader_id, count(*) as trader_price_n,
            median(m.l_uv - s.med) as trader_price_level
        from _ts_m m
        join _ts_st_uv s on s.level = 'hs6' and s.flow = m.flow and s.grp = m.hs6 and s.qunit = ''
        where m.is_hist and m.trader_id is not null and m.l_uv is not null and s.n >= {mp}
            and abs(m.l_uv - s.med) <= {ck} * s.spread
        group by all""")
    # misclassification lead: tonight's rows priced above their HS6 peers' median and typical
    # (within misclass_max_z robust SDs) of another HS6 of the same HS section and flow whose peers
    # price higher; goods declared under another code come in their own code's lot sizes, so the
    # evidence is how much likelier the row's net mass is among that code's lots than among the
    # declared code's: log10 of the ratio of the two empirical two-sided tail probabilities of
    # ln(mass) in the history (best alternative code kept)
    mz = config.misclass_max_z
    con.execute(f"""
        create or replace temp table _ts_misc as
        with subj as (
            select f.key, f.flow, f.hs6, f.l_uv, ln(f.mass) as lm, own.med as own_med,
                {section_sql("f.hs6")} as section
            -- _ts_m, not the view _ts_f: its route and trader statistics are not needed here
            from _ts_m f
            join _ts_st_uv own on own.level = 'hs6' and own.flow = f.flow and own.grp = f.hs6
                and own.qunit = '' and own.n >= {mp}
            -- priced at least one robust SD above the declared code's peers: below that the lead,
            -- capped, cannot lift a row to the flag threshold, and half of every night qualified
            where f.night = {N} and f.mass > 0 and f.l_uv > own.med + own.spread
        ),
        alts as (
            select grp, flow, med, spread, {section_sql("grp")} as section
            from _ts_st_uv
            where level = 'hs6' and qunit = '' and n >= {mp}
        ),
        cand as (
            -- the section is an equality join key, not a filter on every (row, code) pair; the
            -- {MISCLASS_MAX_ALTERNATIVES} codes whose peers' price is closest to the row's are kept
            -- (a section of a full nomenclature holds a hundred HS6: every one within the price
            -- band multiplied the lot comparisons of a 1M-row night by as much)
            select key, flow, hs6, lm, alt
            from (
                select s.key, s.flow, s.hs6, s.lm, a.grp as alt,
                    row_number() over (
                        partition by s.key order by abs(s.l_uv - a.med) / a.spread, a.grp
                    ) as alt_rank
                from subj s
                join alts a on a.flow = s.flow and a.section = s.section
                    and a.grp <> s.hs6 and a.med > s.own_med and abs(s.l_uv - a.med) <= {mz} * a.spread
            )
            where alt_rank <= {MISCLASS_MAX_ALTERNATIVES}
        ),
        codes as (
            -- a tail probability depends on (flow, code, size) only: no row keys carried
            select flow, lm, hs6 as code from cand
            union select flow, lm, alt as code from cand
        ),
        -- each row's rank among its codes' history lots: the lots counted per (flow, code, size)
        -- and cumulated once, each row finding its place by an as-of join (joining every row with
        -- every history lot of its codes took minutes at 1M rows)
        lots as (
            select h.flow, h.hs6 as code, ln(h.mass) as lm, count(*) as c
            from _ts_m h
            semi join (select distinct flow, code from codes) k on k.flow = h.flow and k.code = h.hs6
            where h.is_hist and h.mass > 0
            group by all
        ),
        cum as (
            select flow, code, lm,
                cast(sum(c) over (partition by flow, code order by lm
                    rows between unbounded preceding and current row) as bigint) as n_le
            from lots
        ),
        totals as (
            select flow, code, cast(sum(c) as bigint) as n from lots group by all
        ),
        tails as (
            -- le.n_le: lots at or below the row's size; lt.n_le: lots below it, so n - lt.n_le are
            -- the lots at or above it
            select c.flow, c.code, c.lm,
                least(1.0, 2.0 * least(
                    (coalesce(le.n_le, 0) + 1.0) / (t.n + 1.0),
                    (t.n - coalesce(lt.n_le, 0) + 1.0) / (t.n + 1.0))) as p
            from codes c
            join totals t on t.flow = c.flow and t.code = c.code
            asof left join cum le on le.flow = c.flow and le.code = c.code and c.lm >= le.lm
            asof left join cum lt on lt.flow = c.flow and lt.code = c.code and c.lm > lt.lm
        )
        select c.key, max(log10(ta.p / td.p)) as misclass_lot_llr,
            first(c.alt order by log10(ta.p / td.p) desc, c.alt) as misclass_hs6
        from cand c
        join tails td on td.flow = c.flow and td.code = c.hs6 and td.lm = c.lm
        join tails ta on ta.flow = c.flow and ta.code = c.alt and ta.lm = c.lm
        group by c.key""")
    timings["lot"] = time.perf_counter() - t
    # tonight's table: the route and trader statistics (the view _ts_f) are computed here
    t = time.perf_counter()
    con.execute(f"""
        create or replace temp table _ts_subj as
        select f.* exclude (is_hist, qunit, {", ".join(REREAD_COLUMNS)}), f.night < {N} as is_context,
            mi.* exclude (key), coalesce(oo.is_orphan, 0) as is_orphan,
            oo.orphan_dest_exports, oo.orphan_dest_orphans,
            exp(pst.med) as partner_hs_uv_med, lot.lot_p05_kg,
            (ln(f.mass) - lot.lot_mass_med) / lot.lot_mass_spread as z_lot_mass,
            (ln(f.value) - lot.lot_value_med) / lot.lot_value_spread as z_lot_value,
            exp(lot.lot_mass_med) as lot_mass_median_kg, exp(lot.lot_value_med) as lot_value_median_usd,
            tp.trader_price_n, tp.trader_price_level, mc.misclass_lot_llr, mc.misclass_hs6,
            -- an export to another member not paired yet: the partner's import will say within
            -- the transit window whether its value and mass are the goods'
            (f.flow = 'export' and mi.key is null and f.partner_country <> f.reporter_country
             and f.partner_country in (select distinct d.reporter_country from _ts_decl d))::int
                as mirror_pending,
            try_cast(left(f.hs6, 2) as integer) as {SHARD_COLUMN}
        from _ts_f f
        left join _ts_lot lot on lot.flow = f.flow and lot.hs6 = f.hs6
        left join _ts_misc mc on mc.key = f.key
        left join _ts_trader tp on tp.reporter_country = f.reporter_country and tp.trader_id = f.trader_id
        left join _ts_mirror mi on mi.key = f.key
        left join _ts_orph oo on oo.key = f.key and oo.is_orphan = 1
        left join _ts_st_uv pst on pst.level = 'hs6' and pst.flow = f.flow
            and pst.grp = mi.pair_partner_hs6 and pst.qunit = ''
        where f.night = {N} or mi.key is not null or oo.key is not null""")
    timings["subjects_table"] = time.perf_counter() - t
    if not need_history:
        # the rows of the window are not read again (the history sample reads them with a model
        # detector only): free their memory before the fetch
        for name in ("_ts_f", "_ts_z", "_ts_decl", "_ts_zk", "_ts_m"):
            _drop(con, name)
    t = time.perf_counter()
    # detectors read a few numbers per row (as numpy arrays); descriptive columns are read for the
    # flagged rows only (full_rows). A row's position is its rank by key (ties in the ranking are
    # broken by position): the fetch sorts by key and keeps each row's rowid in _ts_subj (for the
    # writes and the explanations); _ts_subj itself is not sorted
    rowids, subjects = fetch_subjects(con)
    wanted = list(subjects.columns)
    if need_history:
        hist_cols = [c for c in wanted if c in HISTORY_COLUMNS]
        history = con.execute(f"""
            select night, {", ".join(hist_cols)} from (
                select * from _ts_f where is_hist order by md5(key) limit {int(config.fit_max_rows)}
            ) order by key""").df()
    else:
        history = pd.DataFrame({c: np.zeros(0) for c in HISTORY_COLUMNS})
    pairs = con.execute(f"""
        select lr_value, lr_mass, hs_mismatch from _ts_pairs
        where done_night between {h_lo} and {h_hi} order by export_key, import_key""").df()
    peer = con.execute("""
        select flow, grp as hs6, n, med as median_log_uv, spread from _ts_st_uv
        where level = 'hs6' order by flow, grp""").df()
    timings["fetch"] = time.perf_counter() - t
    timings["features_total"] = time.perf_counter() - t0

    return FeatureBundle(
        night=night,
        subjects=FeatureFrame(subjects, night),
        history=FeatureFrame(history, night, extras={"pairs": pairs}),
        peer_stats_hs6=peer,
        timings=timings,
        config=config,
        rowids=rowids,
        marts_schema=marts,
    )


FETCH_COLUMNS_AT_ONCE = 8


def fetch_subjects(con: duckdb.DuckDBPyConnection) -> tuple[np.ndarray, pd.DataFrame]:
    """The numbers detectors read (``SUBJECT_COLUMNS``) of every row of ``_ts_subj``, in key order
    (a row's position is its rank by key), and each row's rowid in ``_ts_subj``.

    Sorting the keys alone and reordering the arrays in numpy is cheaper than sorting wide rows;
    ``_ts_subj`` itself is not sorted. Also used by the sharded run's merge, on the ``_ts_subj``
    restored from the prepared night's files (:mod:`tradesentry.detection.sharding`)."""
    types = dict(con.execute("select column_name, column_type from (describe _ts_subj)").fetchall())
    wanted = [c for c in SUBJECT_COLUMNS if c in types or c == "pos"]

    def select(c: str) -> str:
        # NULL -> NaN in DuckDB for floating columns: they then come back as plain arrays, where
        # numpy's masked arrays took longer to unmask (plain_array) than the fetch itself
        return f"coalesce({c}, 'NaN'::double) as {c}" if types[c] in ("DOUBLE", "FLOAT") else c

    rowids = np.asarray(
        con.execute("select rowid as _rid from _ts_subj order by key").fetchnumpy()["_rid"], dtype="int64"
    )
    # A few columns at a time, each reordered and its fetched copy dropped before the next: on a
    # 5M-row night one fetch of every column held the masked arrays, their reordered copies and
    # pandas' consolidated blocks at once (about 3x the frame).
    cols = [c for c in wanted if c != "pos"]
    out: dict[str, np.ndarray] = {"pos": np.arange(len(rowids), dtype="int64")}
    for start in range(0, len(cols), FETCH_COLUMNS_AT_ONCE):
        group = cols[start : start + FETCH_COLUMNS_AT_ONCE]
        fetched = con.execute(f"select rowid as _rid, {', '.join(map(select, group))} from _ts_subj").fetchnumpy()
        at = np.empty(len(rowids), dtype="int64")  # rowid -> index in this fetch (each scan its own order)
        at[np.asarray(fetched.pop("_rid"), dtype="int64")] = np.arange(len(rowids), dtype="int64")
        take = np.take(at, rowids)
        # np.take rather than fancy indexing: the same gather at half the time (a second a group of
        # eight columns at 5M rows); plain_array need not copy what the gather copies anyway
        for c in group:
            out[c] = np.take(plain_array(fetched.pop(c), copy=False), take)
    # copy=False: each column stays its own array (no consolidation copy of the whole frame)
    return rowids, pd.DataFrame({c: out[c] for c in wanted}, copy=False)


def subject_chapters(con: duckdb.DuckDBPyConnection, rowids: np.ndarray) -> np.ndarray:
    """The HS chapter (first two digits of the HS6; -1 when unknown) of every row of ``_ts_subj``, by
    position (``rowids``: :func:`fetch_subjects`'s): the sharded run's key."""
    got = con.execute(f"select rowid as _rid, {SHARD_COLUMN} from _ts_subj").fetchnumpy()
    chapters = np.asarray(plain_array(got[SHARD_COLUMN]), dtype="float64")  # NULL -> NaN
    by_rowid = np.full(len(rowids), -1, dtype="int64")
    ok = np.isfinite(chapters)
    by_rowid[np.asarray(got["_rid"], dtype="int64")[ok]] = chapters[ok].astype("int64")
    return by_rowid[rowids]


def plain_array(v: np.ndarray, copy: bool = True) -> np.ndarray:
    """A fetched column as the plain array pandas makes of it (``pd.DataFrame`` of a masked array:
    NULLs become NaN, integers with NULLs float64, booleans with NULLs object), without pandas'
    slower masked-array path. ``copy=False``: a column without NULLs may share the masked array's
    data."""
    if not isinstance(v, np.ma.MaskedArray):
        return v
    mask = np.ma.getmaskarray(v)
    data = np.ma.getdata(v)
    if not mask.any():
        return data.copy() if copy else data
    out = data.astype("float64" if data.dtype.kind in "iuf" else object)
    out[mask] = np.nan
    return out


def full_rows(con: duckdb.DuckDBPyConnection, positions: list[int], bundle: FeatureBundle) -> pd.DataFrame:
    """All columns of tonight's rows at these positions (for explanations), indexed by position: the
    numbers of ``_ts_subj``, plus the columns it leaves out (descriptive columns, groups, the peers
    chosen) read again for these rows only, from the declarations as of N and ``_ts_pick``."""
    if not positions:
        return pd.DataFrame()
    cols = [name for (name,) in con.execute("select column_name from (describe _ts_subj)").fetchall()]
    order: list[str] = ["p.pos"]
    for c in cols:
        if c == SHARD_COLUMN:  # the sharded run's key, not part of the wide row
            continue
        order.append(f"s.{c}")
        order += WIDE_AFTER.get(c, [])
    desc = _descriptive_select(
        con, bundle.night, bundle.config or DetectionConfig(),
        "select s.key from _ts_subj s join _ts_pos p on s.rowid = p.rid", bundle.marts_schema,
    )  # fmt: skip
    on = " and ".join(f"k.{c} is not distinct from d.{c}" for c in GROUP_KEY)
    sql = f"""select {", ".join(order)}
              from _ts_subj s join _ts_pos p on s.rowid = p.rid
              left join ({desc}) d on d.key = s.key
              left join _ts_pick k on {on}
              order by p.pos"""
    pos = np.asarray(positions, dtype="int64")
    con.register("_ts_pos", pd.DataFrame({"pos": pos, "rid": bundle.rowids[pos]}))
    try:
        df = con.execute(sql).df()
    finally:
        con.unregister("_ts_pos")
    return df.set_index("pos", drop=False)


def _drop(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Drop a temporary table or view of that name (``_ts_z`` is either)."""
    kinds = con.execute(
        "select 'view' from duckdb_views() where temporary and view_name = ? "
        "union all select 'table' from duckdb_tables() where temporary and table_name = ?",
        [name, name],
    ).fetchall()
    for (kind,) in kinds:
        con.execute(f"drop {kind} if exists {name}")


def drop_temp_tables(con: duckdb.DuckDBPyConnection) -> None:
    for name in ("_ts_decl", "_ts_f", *TEMP_TABLES):
        _drop(con, name)
