"""Benchmark the harmonised quality gate against a floor measured in the same run.

Builds a table shaped like intermediate.int_declarations_converted (the columns validate_harmonised
reads) with --rows rows for one night in a temporary DuckDB file, runs validate_harmonised on it and
prints its time beside the time DuckDB takes to scan the same columns. Shared CPU: run at 1M rows
once or twice, not in a loop.

    .venv/bin/python bench/bench_quality.py --rows 1000000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import date
from pathlib import Path

NIGHT = date(2026, 11, 20)


def build(path: Path, rows: int, bad_share: float) -> None:
    import duckdb

    bad_every = max(int(1 / bad_share), 2) if bad_share > 0 else 0
    con = duckdb.connect(str(path))
    con.execute("create schema if not exists intermediate")
    con.execute(
        f"""
        create or replace table intermediate.int_declarations_converted as
        select
            'x' || chr(97 + (i % 7)::integer) as feed,
            DATE '{NIGHT}' as night,
            'x' || chr(97 + (i % 7)::integer) || '/{NIGHT}/f.csv' as source_file,
            (i // 7 + 1)::integer as source_line,
            'ok' as row_status,
            'X' || chr(65 + (i % 7)::integer) as reporter_country,
            'D-' || (i // 7)::varchar as declaration_id,
            1 as item_no,
            case when {bad_every} > 0 and i % {bad_every or 1} = 0 then '84A1' else lpad(((i * 7919) % 999999)::varchar, 6, '0') end as hs6,
            case when {bad_every} > 0 and i % {bad_every or 1} = 1 then -1.0 else 10 + (i % 100000) * 1.5 end as customs_value_usd,
            1 + (i % 5000) * 0.5 as net_mass_kg
        from range({rows}) r(i)
        """
    )
    con.close()


def floor(path: Path) -> float:
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    t = time.perf_counter()
    con.execute(
        "select count(*), count(distinct (reporter_country, declaration_id, item_no, night, source_file)), "
        "min(hs6), sum(customs_value_usd), sum(net_mass_kg), max(source_line), min(feed) "
        f"from intermediate.int_declarations_converted where row_status = 'ok' and night = DATE '{NIGHT}'"
    ).fetchall()
    dt = time.perf_counter() - t
    con.close()
    return dt


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--bad-share", type=float, default=0.001, help="share of rows failing (default 0.001)")
    args = p.parse_args()

    t = time.perf_counter()
    import great_expectations  # noqa: F401  # import cost reported apart

    import_s = time.perf_counter() - t
    from tradesentry.quality import validate_harmonised
    from tradesentry.settings import Settings

    with tempfile.TemporaryDirectory() as d:
        base = Path(d)
        settings = Settings(data_dir=base / "data", expectations_dir=base / "expectations").resolve()
        settings.warehouse.parent.mkdir(parents=True)
        t = time.perf_counter()
        build(settings.warehouse, args.rows, args.bad_share)
        build_s = time.perf_counter() - t
        scan_s = floor(settings.warehouse)
        r = validate_harmonised(settings, NIGHT)
        gate_s = r.seconds
        scan2_s = floor(settings.warehouse)
        print(f"rows                      {r.rows:>12,}")
        print(f"failing rows quarantined  {r.quarantined_rows:>12,}")
        print(f"import great_expectations {import_s:>12.2f} s (once per process, not counted below)")
        print(f"build table               {build_s:>12.2f} s")
        print(f"DuckDB scan (floor)       {min(scan_s, scan2_s):>12.3f} s")
        print(
            f"validate_harmonised       {gate_s:>12.3f} s  ({gate_s / max(min(scan_s, scan2_s), 1e-9):.0f}x floor)"
        )
        for o in r.expectations_failed:
            print(f"  failed {o.name:<45} {o.unexpected_count!s:>10} rows")


if __name__ == "__main__":
    main()
