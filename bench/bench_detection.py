"""Detection on a big night: time and peak memory per step, beside a floor.

    .venv/bin/python bench/bench_detection.py [--night-rows (or --rows) 1000000] [--history-rows 2000000]
        [--history-nights 30] [--threads 2] [--iforest] [--out benchmarks/detection.md] [--no-write]

Builds ``marts.fct_declarations`` and ``marts.fct_consignment_matches`` (the documented columns
detection reads) straight in a temporary DuckDB file: one night of ``--night-rows`` declarations and
``--history-rows`` declarations over the ``--history-nights`` nights before it (2,000 HS6 codes,
log-normal prices, a supplementary quantity on a third of the codes, 7 reporters, 50,000 traders,
one tonight import in ten matched to an earlier export). Then runs the detection steps of
``run_detection`` one by one (features in SQL, fit and score, anomaly rows with explanations, writes)
and prints wall time and the process's peak RSS (``resource.getrusage``) after each step.

The floor, in the same process on the same data: DuckDB computing the same peer statistics (median
and MAD of the three log metrics per HS6 / HS4 / HS2, flow and unit, joined onto tonight's rows) plus
fitting and scoring the same PyOD IsolationForest on the same features.

Results: the run rewrites its own section of ``--out`` (benchmarks/detection.md; one section per size
and detector set, between markers), with the load average before and after the run: the machine is
shared, and the figures mean little without it.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import duckdb
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detectors.config import DEFAULT_DETECTORS, DetectionConfig
from tradesentry.detection import engine
from tradesentry.detection.features import METRICS, _pick_sql, _stats_sql

NIGHT = date(2026, 11, 27)
MEMBERS = ["XA", "XB", "XC", "XD", "XE", "XF", "XG"]


REPO = Path(__file__).resolve().parents[1]
TARGET_S, TARGET_MB = 15.0, 4096.0


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def build(con: duckdb.DuckDBPyConnection, night_rows: int, history_rows: int, history_nights: int) -> None:
    total = night_rows + history_rows
    members = "[" + ", ".join(f"'{m}'" for m in MEMBERS) + "]"
    u = "((hash(i * 8 + {k}) % 1000000007) / 1000000007.0)"
    u1, u2, u3, u4, u5, u6 = (u.format(k=k) for k in range(1, 7))
    con.execute("create schema if not exists marts")
    con.execute(f"""
        create or replace table marts.fct_declarations as
        with base as (
            select i,
                case when i >= {history_rows} then DATE '{NIGHT}'
                     else DATE '{NIGHT}' - cast(1 + i % {history_nights} as integer) end as night,
                case when i % 2 = 0 then 'export' else 'import' end as flow,
                cast(hash(i * 8) % 2000 as integer) as h,
                {u1} as a, {u2} as b, {u3} as c, {u4} as d, {u5} as e, {u6} as f
            from range({total}) t(i)
        ), p as (
            select *, printf('%06d', 100000 + h * 397) as hs6,
                (h % 9) - 1.0 + 0.3 * sqrt(-2 * ln(greatest(a, 1e-12))) * cos(2 * pi() * b) as luv,
                exp(2 + 5 * c) as mass,
                h % 3 = 0 as has_q, 0.2 + (h % 17) as kgpu
            from base
        )
        select
            {members}[1 + cast(i % 7 as integer)] || '|D' || i || '|1' as declaration_key,
            {members}[1 + cast(i % 7 as integer)] as reporter_country, 'D' || i as declaration_id,
            1 as item_no, lower({members}[1 + cast(i % 7 as integer)]) as feed, night,
            night as declaration_date, flow, hs6 as hs_code_declared, 'HS2022' as hs_edition, hs6,
            left(hs6, 4) as hs4, left(hs6, 2) as hs2,
            case when d < 0.3 then {members}[1 + cast((i + 3) % 7 as integer)]
                 else 'P' || cast(d * 40 as integer) end as partner_country,
            'O' || cast(e * 30 as integer) as origin_country,
            'T' || cast(f * 50000 as integer) as trader_id, 'Trader ' || cast(f * 50000 as integer) as trader_name,
            'D1' as declarant_id, 'OFF1' as customs_office,
            case when has_q then greatest(1, round(mass / kgpu)) end as quantity,
            case when has_q then 'u' end as quantity_unit,
            mass as net_mass_original, 'kg' as mass_unit, mass as net_mass_kg,
            mass * exp(luv) as customs_value_original, 'USD' as currency_code, 1.0 as fx_usd_per_unit,
            night as fx_rate_date, mass * exp(luv) as customs_value_usd,
            case when flow = 'import' then 'CIF' else 'FOB' end as valuation_basis,
            case when flow = 'import' then mass * exp(luv) / 1.06 else mass * exp(luv) end as statistical_value_usd,
            exp(luv) as unit_value_usd_per_kg, 'R' || i as consignment_ref, 'R' || i as consignment_ref_norm,
            'synthetic goods' as goods_description, 'bench/' || night || '.csv' as source_file,
            cast(i % 1000000 + 1 as integer) as source_line, now()::timestamp as arrived_at, '{{}}'::json as raw_values
        from p""")
    # one tonight import in ten matched to an earlier export (history rows with even i are exports)
    con.execute(f"""
        create or replace table marts.fct_consignment_matches as
        select 'R' || e as consignment_ref_norm, ek as export_key, ik as import_key,
            null::varchar as exporter_country, null::varchar as importer_country, 'reference' as match_method,
            'matched' as status, null::date as export_night, DATE '{NIGHT}' as import_night,
            null::varchar as export_hs6, null::varchar as import_hs6, false as hs_mismatch,
            null::double as value_ratio, null::double as mass_ratio, null::integer as transit_days,
            null::double as export_value_usd, null::double as import_value_usd
        from (
            select i.declaration_key as ik, x.declaration_key as ek, x.i as e
            from (select declaration_key, row_number() over (order by declaration_key) as r
                  from marts.fct_declarations where night = DATE '{NIGHT}' and flow = 'import') i
            join (select declaration_key, cast(split_part(declaration_id, 'D', 2) as bigint) as i,
                         row_number() over (order by declaration_key) as r
                  from marts.fct_declarations where night < DATE '{NIGHT}' and flow = 'export') x
              on x.r = i.r
            where i.r % 10 = 0
        )""")


def step(label: str, fn, results: list):
    t = time.perf_counter()
    out = fn()
    results.append((label, time.perf_counter() - t, rss_mb(), peak_mb()))
    return out


def run_engine(con: duckdb.DuckDBPyConnection, cfg: DetectionConfig) -> list:
    """run_detection's steps, one by one (same functions, same order)."""
    from tradesentry.warehouse import ensure_schema

    res: list = []
    ensure_schema(con)
    ns = step("features + fit + score (score_night)", lambda: engine.score_night(con, NIGHT, cfg, {}), res)
    version = engine.detector_version(ns.detectors, cfg)
    anomalies = step(
        "anomaly rows + explanations", lambda: engine.build_anomalies(con, ns, cfg, version), res
    )
    step("write scores + anomalies", lambda: engine._write(con, ns, anomalies, version), res)
    from tradesentry.detection.features import drop_temp_tables

    drop_temp_tables(con)
    return res, ns.timings, len(ns.frame), len([a for a in anomalies if not a["is_audit_pick"]])


def floor(con: duckdb.DuckDBPyConnection, cfg: DetectionConfig) -> list:
    """The same peer statistics in DuckDB + the same IsolationForest on the same features."""
    from pyod.models.iforest import IForest

    res: list = []
    W = cfg.history_window_nights
    N = f"DATE '{NIGHT}'"

    def stats():
        con.execute(f"""
            create or replace temp table _ts_m as
            select lower(flow) as flow, hs6, hs4, hs2, coalesce(quantity_unit, '') as qunit, night,
                case when customs_value_usd > 0 and net_mass_kg > 0 then ln(customs_value_usd / net_mass_kg) end as l_uv,
                case when customs_value_usd > 0 and quantity > 0 then ln(customs_value_usd / quantity) end as l_vq,
                case when net_mass_kg > 0 and quantity > 0 then ln(net_mass_kg / quantity) end as l_mq,
                night < {N} as is_hist
            from marts.fct_declarations where night between {N} - {W} and {N}""")
        for prefix in METRICS:
            con.execute(_stats_sql(prefix, cfg))
        sel, joins = [], []
        for prefix in METRICS:
            c, j = _pick_sql(prefix, cfg)
            sel.append(c)
            joins.append(j)
        return con.execute(
            f"select z_uv, z_vq, z_mq from (select m.*, {','.join(sel)} from _ts_m m {' '.join(joins)}) "
            "where not is_hist"
        ).fetchnumpy()

    z = step("floor: peer statistics in DuckDB", stats, res)
    X = np.column_stack([np.nan_to_num(np.asarray(z[c], dtype="float64")) for c in ("z_uv", "z_vq", "z_mq")])
    Xh = X[: min(len(X), cfg.fit_max_rows)]

    def forest():
        m = IForest(
            n_estimators=cfg.iforest_estimators, max_samples=min(cfg.iforest_max_samples, len(Xh)),
            random_state=cfg.seed, n_jobs=1,
        )  # fmt: skip
        m.fit(Xh)
        return m.decision_function(X)

    step("floor: IsolationForest fit + score", forest, res)
    con.execute("drop table if exists _ts_m")
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--night-rows", "--rows", type=int, default=1_000_000)
    ap.add_argument("--history-rows", type=int, default=2_000_000)
    ap.add_argument("--history-nights", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iforest", action="store_true", help="also run the (optional) IsolationForest detector")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "detection.md")
    ap.add_argument("--no-write", action="store_true", help="print only, do not rewrite --out")
    args = ap.parse_args()
    load_before = load_average()

    from pyod.models.iforest import IForest  # noqa: F401  (import cost outside the timings)

    tmp = tempfile.mkdtemp(prefix="tradesentry-bench-")
    con = duckdb.connect(str(Path(tmp) / "bench.duckdb"), config={"threads": args.threads})
    t = time.perf_counter()
    build(con, args.night_rows, args.history_rows, args.history_nights)
    n_night = con.execute(
        f"select count(*) from marts.fct_declarations where night = DATE '{NIGHT}'"
    ).fetchone()[0]
    n_hist = con.execute(
        f"select count(*) from marts.fct_declarations where night < DATE '{NIGHT}'"
    ).fetchone()[0]
    n_pairs = con.execute("select count(*) from marts.fct_consignment_matches").fetchone()[0]
    print(
        f"built {n_night:,} night rows, {n_hist:,} history rows over {args.history_nights} nights, "
        f"{n_pairs:,} matched pairs in {time.perf_counter() - t:.1f} s; DuckDB threads {args.threads}"
    )
    base_peak = peak_mb()
    print(f"peak RSS after building: {base_peak:,.0f} MB")

    dets = DEFAULT_DETECTORS + (("iforest",) if args.iforest else ())
    cfg = DetectionConfig(
        history_window_nights=args.history_nights + 1, detectors=dets, model_features=("z_uv", "z_vq", "z_mq")
    )
    steps, timings, rows, flagged = run_engine(con, cfg)
    total = sum(s[1] for s in steps)
    print(f"\ndetection ({', '.join(dets)}): {rows:,} rows scored, {flagged} anomalies")
    print(f"{'step':<40} {'seconds':>8} {'RSS MB':>9} {'peak MB':>9}")
    for label, sec, rss, pk in steps:
        print(f"{label:<40} {sec:>8.2f} {rss:>9,.0f} {pk:>9,.0f}")
    print(f"{'total':<40} {total:>8.2f}")
    print("  inside score_night: " + ", ".join(f"{k} {v:.2f}" for k, v in timings.items()))

    fsteps = floor(con, cfg)
    ftotal = sum(s[1] for s in fsteps)
    print(f"\n{'floor step':<40} {'seconds':>8} {'RSS MB':>9} {'peak MB':>9}")
    for label, sec, rss, pk in fsteps:
        print(f"{label:<40} {sec:>8.2f} {rss:>9,.0f} {pk:>9,.0f}")
    print(f"{'floor total':<40} {ftotal:>8.2f}")
    peak = peak_mb()
    print(f"\ndetection / floor = {total / ftotal:.2f}; peak RSS {peak:,.0f} MB (limit 4,096)")
    load_after = load_average()
    print(f"load average before {load_before}, after {load_after} ({os.cpu_count()} cores)")
    con.close()
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)
    if not args.no_write:
        res = {
            "night_rows": args.night_rows, "history_rows": args.history_rows, "history_nights": args.history_nights,
            "threads": args.threads, "detectors": dets, "rows": rows, "flagged": flagged, "steps": steps,
            "timings": timings, "total": total, "floor": fsteps, "ftotal": ftotal, "peak": peak,
            "base_peak": base_peak, "load_before": load_before, "load_after": load_after,
        }  # fmt: skip
        write_markdown(args.out, res)
        print(f"written: {args.out}")
    return 0


def render(res: dict) -> str:
    from datetime import datetime

    total, peak = res["total"], res["peak"]
    met_s = "met" if total < TARGET_S else "NOT met"
    met_mb = "met" if peak < TARGET_MB else "NOT met"
    lines = [
        f"### {res['night_rows']:,} declarations tonight, {res['history_rows']:,} over the "
        f"{res['history_nights']} nights before ({', '.join(res['detectors'])})",
        "",
        f"Measured {datetime.now():%Y-%m-%d %H:%M} on {os.cpu_count()} cores, DuckDB threads {res['threads']}; "
        f"**load average {res['load_before']} before the run, {res['load_after']} after** (1, 5, 15 min; "
        f"other workers share the machine). {res['rows']:,} rows scored, {res['flagged']} anomalies. "
        f"Peak RSS is the process's high-water mark; building the synthetic data in the same process "
        f"peaked at {res['base_peak']:,.0f} MB before detection started.",
        "",
        "| step | seconds | peak RSS MB |",
        "|---|---:|---:|",
    ]
    for label, sec, _rss, pk in res["steps"]:
        lines.append(f"| {label} | {sec:.2f} | {pk:,.0f} |")
    lines.append(f"| **total** | **{total:.2f}** | **{peak:,.0f}** |")
    for label, sec, _rss, _pk in res["floor"]:
        lines.append(f"| {label} | {sec:.2f} | |")
    lines += [
        f"| **floor total** | **{res['ftotal']:.2f}** | |",
        "",
        "Inside `score_night` (seconds): "
        + ", ".join(f"{k} {v:.2f}" for k, v in res["timings"].items() if not k.startswith("detector_"))
        + f"; detectors {sum(v for k, v in res['timings'].items() if k.startswith('detector_')):.2f}.",
        "",
        f"detection / floor = {total / res['ftotal']:.2f}. Targets (under {TARGET_S:.0f} s, under "
        f"{TARGET_MB:,.0f} MB): time {met_s}, memory {met_mb}.",
    ]
    return "\n".join(lines)


def write_markdown(out: Path, res: dict) -> None:
    """Replace this run's section (between markers) in the results file, keep the rest."""
    key = f"{res['night_rows']}x{res['history_rows']}x{res['history_nights']}:{'+'.join(res['detectors'])}"
    begin, end = f"<!-- bench-detection:{key}:begin -->", f"<!-- bench-detection:{key}:end -->"
    current = out.read_text(encoding="utf-8") if out.exists() else "# Detection benchmark\n"
    block = f"{begin}\n{render(res)}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(current):
        current = pattern.sub(lambda _m: block, current)
    else:
        current = current.rstrip("\n") + "\n\n" + block + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(current, encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
