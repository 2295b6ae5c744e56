"""Pattern-level anomalies: a trader, or a route, systematically priced below its peers over a window.

A ``trader_pattern`` is one (reporter country, trader, flow, HS6) whose declarations of the last
P nights up to and including night N (P = ``pattern_window_nights``, at most the history window W)

- number at least ``pattern_min_declarations``, at least one of them declared on N (a pattern is
  reported on the nights it gets new evidence, not every night while it is in the window),
- have a median robust z of log value per kg at or below ``pattern_max_median_z`` against the HS6 /
  flow peers of the history window (the peer statistics the declaration-level features use:
  cleaned median and spread of nights N-W .. N-1, HS6 groups of at least ``min_peer_group``),

while each declaration may be unremarkable on its own (above the peer-price rule's threshold).

A ``route_pattern`` is the same test on one (reporter country, flow, HS6, partner country, origin
country) across traders: goods of one origin coming through one partner priced low by several
traders at once (a supplier invoicing low, or a whole route's importers agreeing on a price), which
no trader pattern shows. It must span at least ``pattern_route_min_traders`` traders, so that one
trader's pattern is not reported a second time as a route.

The declarations are read as of N (``fct_declarations`` plus the versions in
``fct_declaration_history`` replaced only after N), so a rerun of N finds the same rows; the peer
statistics are those of the night's features (``FeatureBundle.peer_stats_hs6``), so the single and
the sharded runs (whose merge restores them) find the same patterns. Patterns are night-global:
they are built in the finish step, after the declaration-level ranking, and never change a
declaration's score.

**Multiple testing.** Every group with enough declarations, one of them tonight, is tested: on a
large night that is tens of thousands of groups, and some of them pass the median threshold by
chance (on the benchmark's 5M-row night of random prices, 277 routes of 8 to 14 declarations did).
A pattern is reported only when its sign test's p-value is at most 1 / m, m the number of groups of
its kind tested that night (Bonferroni at one chance pattern a night): 12 declarations all below
the median need m under 4,096.

**Score.** A pattern's significance is a sign test: were the trader's prices drawn like its peers',
each declaration would fall below the peers' median with probability 1/2 (the definition of a
median, whatever the shape of the distribution), so L = -log10 P(Binomial(n, 1/2) >= k) for k of n
declarations below it. The magnitude of the gap gates the pattern (the median z threshold) and goes
into the reasons and the value at stake, not into L: the test makes no assumption about the tails
of the price distribution, which are heavier than normal in customs data, so it does not overstate
the evidence of many small gaps. L is capped at ``pattern_max_significance`` (default 6, one in a
million) and mapped as declarations are, score = L / (L + 2): 10 of 10 below ranks like a
declaration at one in a thousand (0.60), and a pattern never outranks the strongest declaration-level
anomalies. At most ``pattern_max_per_night`` patterns (the highest scores, ties by id) join the
ranked table, so patterns cannot crowd out declaration-level anomalies.
"""

from __future__ import annotations

import json
import math
from datetime import date, timedelta
from typing import Any

import duckdb
import pandas as pd
from scipy.stats import binom

from detectors.base import fmt_num
from detectors.config import DetectionConfig
from tradesentry.anomaly_ids import anomaly_id
from tradesentry.detection.features import as_of_select, date_literal

PATTERN_KIND = "trader_pattern"
PATTERN_DETECTOR = "trader_pattern"
ROUTE_KIND = "route_pattern"
ROUTE_DETECTOR = "route_pattern"
PATTERN_VERSION = "1.1"
# the columns that make one pattern, by kind
GROUPS = {
    PATTERN_KIND: ("reporter_country", "trader_id", "flow", "hs6"),
    ROUTE_KIND: ("reporter_country", "flow", "hs6", "partner_country", "origin_country"),
}


def window_nights(cfg: DetectionConfig) -> int:
    """P: the pattern window, never longer than the history window (the rows staged for detection)."""
    return max(1, min(int(cfg.pattern_window_nights), int(cfg.history_window_nights)))


def _decl_sql(con: duckdb.DuckDBPyConnection, night: date, cfg: DetectionConfig, marts: str) -> str:
    lo = date_literal(night - timedelta(days=window_nights(cfg) - 1))
    where = f"night between {lo} and {date_literal(night)}"
    cols = """select declaration_key as key, reporter_country, trader_id, trader_name, night,
            lower(flow) as flow, hs6, partner_country, origin_country, cast(net_mass_kg as double) as mass,
            cast(customs_value_usd as double) as value, source_file, cast(source_line as integer) as source_line"""
    return as_of_select(con, marts, cols, where, night)


def find_patterns(
    con: duckdb.DuckDBPyConnection,
    night: date,
    peers: pd.DataFrame,
    cfg: DetectionConfig,
    kind: str = PATTERN_KIND,
    marts: str = "marts",
) -> pd.DataFrame:
    """The groups of one ``kind`` (:data:`GROUPS`) of ``night`` that pass the median test (see the
    module's docstring; the multiple-testing gate is applied by :func:`build_pattern_anomalies`),
    ordered by the group's columns: the declarations in ``keys`` (sorted), counts, medians, value at
    stake, ``traders`` (distinct traders) and ``tested`` (groups of the kind tested that night).
    ``peers``: (flow, hs6, n, median_log_uv, spread) of the history window."""
    group = ", ".join(GROUPS[kind])
    # "is not distinct from": a route's origin may be unknown (one group of its own, not dropped)
    same = " and ".join(f"z.{c} is not distinct from q.{c}" for c in GROUPS[kind])
    cols = ["flow", "hs6", "n", "median_log_uv", "spread"]
    p = peers[cols] if not peers.empty else pd.DataFrame({c: [] for c in cols})
    if kind == ROUTE_KIND:
        member = "d.partner_country is not null"
        having = f"and count(distinct trader_id) >= {int(cfg.pattern_route_min_traders)}"
    else:
        member = "d.trader_id is not null"
        having = ""
    con.register("_ts_pattern_peers", p)
    try:
        return con.execute(
            f"""
            with d as ({_decl_sql(con, night, cfg, marts)}),
            z as materialized (
                select d.*, ln(d.value / d.mass) as l_uv,
                    (ln(d.value / d.mass) - p.median_log_uv) / p.spread as z,
                    p.median_log_uv as med, p.spread, p.n as peer_n
                from d join _ts_pattern_peers p on p.flow = d.flow and p.hs6 = d.hs6
                where {member} and d.value > 0 and d.mass > 0
                    and p.n >= {int(cfg.min_peer_group)}
            ),
            -- the groups that make a pattern, found before the per-group lists are built: collecting
            -- every group's keys first took gigabytes at a million declarations a night. First with
            -- counts only: a median at or below the threshold needs half the rows at or below it, and
            -- the median (and the distinct traders) of every group of a 5M-row night took seconds
            tested as (
                select {group}, count(*) as n,
                    count(*) filter (where z <= {float(cfg.pattern_max_median_z)}) as low
                from z
                group by {group}
                having count(*) >= {int(cfg.pattern_min_declarations)}
                    and count(*) filter (where night = {date_literal(night)}) > 0
            ),
            candidates as (
                select {group} from tested where 2 * low >= n
            ),
            qualifying as (
                select {group}
                from z
                semi join candidates q on {same}
                group by {group}
                having median(z) <= {float(cfg.pattern_max_median_z)}
                    {having}
            )
            select {group},
                max(trader_name) as trader_name,
                count(distinct trader_id) as traders,
                count(*) as n,
                count(*) filter (where l_uv < med) as below,
                count(*) filter (where night = {date_literal(night)}) as tonight,
                count(distinct night) as nights,
                median(z) as median_z,
                exp(median(l_uv)) as median_uv,
                exp(any_value(med)) as peer_median_uv,
                any_value(spread) as peer_spread,
                any_value(peer_n) as peer_n,
                count(*) filter (where l_uv - med < ln({float(cfg.low_price_ratio)})) as below_rule,
                sum(greatest(exp(med) * mass - value, 0)) as value_at_stake,
                sum(value) as value,
                list(key order by key) as keys,
                arg_max(struct_pack(k := key, f := source_file, l := source_line),
                    struct_pack(tn := night = {date_literal(night)}, gap := exp(med) * mass - value, k := key))
                    as primary_row,
                (select count(*) from tested) as tested
            from z
            semi join qualifying q on {same}
            group by {group}
            order by {group}""",
        ).df()
    finally:
        con.unregister("_ts_pattern_peers")


def sign_test_significance(n: int, below: int) -> float:
    """-log10 P(Binomial(n, 1/2) >= below): the chance that at least ``below`` of ``n`` prices drawn
    like the peers' fall below the peers' median."""
    if n <= 0 or below <= 0:
        return 0.0
    p = float(binom.sf(below - 1, n, 0.5))
    return -math.log10(max(p, 1e-300))


def _pct_below(ratio: float) -> str:
    return f"{(1.0 - ratio) * 100:.0f}%"


def _subject(r: dict[str, Any], kind: str) -> str:
    """Who or what the pattern is about, in the reasons' words."""
    if kind == ROUTE_KIND:
        origin = r.get("origin_country") or "unknown"
        return (
            f"route {r['reporter_country']} {r['flow']}s from {r['partner_country']} (origin {origin}), "
            f"{int(r['traders'])} traders"
        )
    return f"trader {r['reporter_country']}|{r['trader_id']}"


def pattern_reasons(
    r: dict[str, Any], cfg: DetectionConfig, p_value: float, kind: str = PATTERN_KIND
) -> list[str]:
    """Three plain-word reasons with the numbers."""
    n, hs6, flow = int(r["n"]), r["hs6"], r["flow"]
    ratio = float(r["median_uv"]) / float(r["peer_median_uv"])
    P = window_nights(cfg)
    first = (
        f"Value pattern: {_subject(r, kind)}: {n} {flow}s of HS {hs6} over {P} nights "
        f"({int(r['nights'])} nights with declarations, {int(r['tonight'])} tonight), median "
        f"{_pct_below(ratio)} below the peers' price (median {fmt_num(float(r['median_uv']))} USD/kg vs the "
        f"peers' {fmt_num(float(r['peer_median_uv']))} USD/kg over {int(r['peer_n'])} declarations; "
        f"median robust z {float(r['median_z']):+.1f})"
    )
    k_rule = int(r["below_rule"])
    rule = f"the peer-price rule's {cfg.low_price_ratio:.0%} of the median"
    second = (
        f"Systematic: {int(r['below'])} of {n} declarations below the peers' median (by chance: "
        f"p = {p_value:.2g}); "
        + (
            f"none below {rule}: each is unremarkable on its own"
            if k_rule == 0
            else f"{k_rule} of {n} below {rule} (flagged on their own)"
        )
    )
    third = (
        f"Shortfall: declared {fmt_num(float(r['value']))} USD in total, "
        f"{fmt_num(float(r['value_at_stake']))} USD below the peers' median price for the same mass"
    )
    return [first, second, third]


def build_pattern_anomalies(
    con: duckdb.DuckDBPyConnection,
    night: date,
    peers: pd.DataFrame,
    cfg: DetectionConfig,
    version: str,
    marts: str = "marts",
) -> list[dict[str, Any]]:
    """The night's trader and route patterns as rows of the anomaly table (``rank`` 0: the caller
    ranks them with the declaration-level anomalies), the best ``pattern_max_per_night`` of both
    kinds together by score, ties by id. ``_pos`` is None: a pattern has no single feature row, so it
    stays out of the feedback model's feature store."""
    if cfg.pattern_max_per_night <= 0:
        return []
    kinds = [k for k, on in ((PATTERN_KIND, cfg.trader_patterns), (ROUTE_KIND, cfg.route_patterns)) if on]
    out: list[dict[str, Any]] = []
    for kind in kinds:
        detector = PATTERN_DETECTOR if kind == PATTERN_KIND else ROUTE_DETECTOR
        for r in find_patterns(con, night, peers, cfg, kind, marts).to_dict("records"):
            keys = sorted(str(k) for k in r["keys"])
            n, below = int(r["n"]), int(r["below"])
            L_raw = sign_test_significance(n, below)
            if L_raw < math.log10(max(int(r["tested"]), 1)):
                continue  # as likely as not among the groups tested tonight (the module's docstring)
            p_value = 10.0 ** (-L_raw)
            L = min(L_raw, float(cfg.pattern_max_significance))
            primary = r["primary_row"]  # tonight's declaration with the largest shortfall
            route = kind == ROUTE_KIND
            out.append(
                {
                    "anomaly_id": anomaly_id(kind, keys),
                    "night": night,
                    "kind": kind,
                    "level": "pattern",
                    "declaration_keys": keys,
                    "primary_key": str(primary["k"]),
                    "reporter_country": r["reporter_country"],
                    "partner_country": r["partner_country"] if route else None,
                    "countries": [r["reporter_country"]],
                    "flow": r["flow"],
                    "hs6": r["hs6"],
                    "trader_id": None if route else r["trader_id"],
                    "trader_name": None if route else r["trader_name"],
                    "score": L / (L + 2.0),
                    "rank": 0,
                    "detectors": [detector],
                    "detector_scores": json.dumps({detector: round(float(r["median_z"]), 6)}),
                    "tail_probabilities": json.dumps({detector: float(f"{p_value:.4g}")}),
                    "reasons": pattern_reasons(r, cfg, p_value, kind),
                    "peer_median_usd_per_kg": float(r["peer_median_uv"]),
                    "peer_count": int(r["peer_n"]),
                    "unit_value_usd_per_kg": float(r["median_uv"]),
                    "value_at_stake_usd": float(r["value_at_stake"]),
                    "detector_version": version,
                    "is_audit_pick": False,
                    "source_file": primary["f"],
                    "source_line": int(primary["l"]) if primary["l"] is not None else None,
                    "_pos": None,
                }
            )
    out.sort(key=lambda a: (-a["score"], a["anomaly_id"]))
    return out[: int(cfg.pattern_max_per_night)]


__all__ = [
    "PATTERN_KIND",
    "ROUTE_KIND",
    "build_pattern_anomalies",
    "find_patterns",
    "sign_test_significance",
    "window_nights",
]
