"""The raw gate over a range of nights (backfill) decides exactly as night-by-night runs do."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import duckdb
from test_quality_fixtures import COLUMNS, good_row, land, spec

from tradesentry.quality.gates import validate_raw, validate_raw_nights
from tradesentry.quality.suites import generate_suites
from tradesentry.settings import Settings
from tradesentry.warehouse import connect, ensure_schema

NIGHTS = [date(2026, 11, 18) + timedelta(days=i) for i in range(3)]
FEEDS = [spec("xa_range", "XA"), spec("xb_range", "XB")]


def _warehouse(base: Path) -> Settings:
    settings = Settings(data_dir=base / "data", expectations_dir=base / "expectations").resolve()
    generate_suites(FEEDS, settings.expectations_dir)
    con = connect(settings.warehouse)
    ensure_schema(con)
    xa, xb = FEEDS
    for k, night in enumerate(NIGHTS):
        rows = [good_row(i, night) for i in range(1, 31)]
        if k == 1:  # a few bad HS codes: quarantined, not held
            for i in (2, 9):
                rows[i]["HS_CODE"] = "84A130"
        if k == 2:  # half the values unparseable: held for too many failing rows
            for r in rows[::2]:
                r["VALUE"] = "n/a"
        land(con, xa, night, rows)
        if k == 1:  # renamed column on the middle night only: held, the other nights are not
            cols = [c if c != "HS_CODE" else "HS_CODES" for c in COLUMNS.values()]
            moved = [{("HS_CODES" if c == "HS_CODE" else c): v for c, v in r.items()} for r in rows]
            land(con, xb, night, moved, columns=cols, header_in_db=True)
        else:
            land(con, xb, night, [good_row(i, night) for i in range(1, 21)], header_in_db=True)
    con.close()
    return settings


def _state(settings: Settings) -> tuple[list[tuple], list[tuple]]:
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        failures = con.execute(
            "select feed, night, source_file, source_line, expectation, reason_code, reason, severity "
            "from ops.quality_row_failures order by all"
        ).fetchall()
        holds = con.execute("select feed, night, reason_code, reason from ops.feed_holds order by all").fetchall()
    return failures, holds


def test_range_gate_equals_night_by_night(tmp_path: Path) -> None:
    one_pass = _warehouse(tmp_path / "range")
    by_night = _warehouse(tmp_path / "nightly")

    ranged = validate_raw_nights(one_pass, NIGHTS, FEEDS, build_docs=False)
    singles = {n: validate_raw(by_night, n, FEEDS, build_docs=False) for n in NIGHTS}

    assert _state(one_pass) == _state(by_night)
    failures, holds = _state(one_pass)
    assert {(h[0], h[1], h[2]) for h in holds} == {
        ("xb_range", NIGHTS[1], "renamed_column"),
        ("xa_range", NIGHTS[2], "too_many_failing_rows"),
    }
    assert {(f[0], f[1]) for f in failures} >= {("xa_range", NIGHTS[1]), ("xa_range", NIGHTS[2])}
    for n in NIGHTS:
        for feed in ("xa_range", "xb_range"):
            r, s = ranged[n].feeds[feed], singles[n].feeds[feed]
            assert (r.status, r.rows, r.quarantined_rows, r.hold_reason_code) == (
                s.status,
                s.rows,
                s.quarantined_rows,
                s.hold_reason_code,
            ), (n, feed)
            assert sorted(o.name for o in r.expectations_failed) == sorted(o.name for o in s.expectations_failed)
