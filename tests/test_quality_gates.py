"""The raw and harmonised gates on a tiny warehouse: real GX, real DuckDB, one validate_raw call for
all the broken feeds (GX start-up dominates the time)."""

from __future__ import annotations

import json
from datetime import date, datetime
from pathlib import Path

import duckdb
import pytest
from test_quality_fixtures import COLUMNS, good_row, history, land, spec

from tradesentry.quality import lift_hold, quality_report, validate_harmonised, validate_raw
from tradesentry.quality.suites import generate_suites, raw_path
from tradesentry.settings import Settings
from tradesentry.warehouse import connect, ensure_schema

NIGHT = date(2026, 11, 20)


def _table(con: duckdb.DuckDBPyConnection, sql: str) -> list[tuple]:
    return sorted(con.execute(sql).fetchall(), key=repr)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("quality")
    settings = Settings(data_dir=base / "data", expectations_dir=base / "expectations").resolve()
    feeds = {
        # a few bad HS codes: quarantined, not held; the file arrives late
        "xa_few_bad": spec("xa_few_bad", "XA"),
        # HS_CODE renamed HS_CODES: held, message names both
        "xb_missing_col": spec("xb_missing_col", "XB"),
        # landed file without rows: held
        "xc_zero_rows": spec("xc_zero_rows", "XC"),
        # half the values unparseable: held (too many failing rows)
        "xd_many_bad": spec("xd_many_bad", "XD"),
        # an extra column, schema_contract accept: warning only
        "xe_new_col": spec("xe_new_col", "XE", schema_contract={"on_new_column": "accept"}),
        # tonight far below its history: volume warning
        "xf_volume_drop": spec("xf_volume_drop", "XF"),
        # nothing landed: missing
        "xg_no_file": spec("xg_no_file", "XG"),
        # the same extra column with the default contract (stop): held
        "xh_new_col_stop": spec("xh_new_col_stop", "XH"),
    }
    generate_suites(list(feeds.values()), settings.expectations_dir)
    # a hand-written addition beside the generated suite of xa_few_bad
    raw_path(settings.expectations_dir, "xa_few_bad").with_name("xa_few_bad.custom.json").write_text(
        json.dumps(
            {
                "expectations": [
                    {
                        "type": "unexpected_rows_expectation",
                        "kwargs": {
                            "unexpected_rows_query": 'SELECT _source_file, _source_line, "DECL_ID" FROM {batch} '
                            "WHERE NOT starts_with(\"DECL_ID\", 'D-')"
                        },
                        "meta": {"name": "declaration_id_prefix", "reason": "declaration ids start with D-"},
                    }
                ]
            }
        )
    )
    con = connect(settings.warehouse)
    ensure_schema(con)
    n = NIGHT
    rows = [good_row(i, n) for i in range(1, 41)]
    for i in (3, 17, 29):
        rows[i - 1]["HS_CODE"] = "84A130"
    rows[10]["DECL_ID"] = "Z-1"  # fails only the custom expectation
    rows[16]["VALUE"] = "abc"  # line 17: HS code and value bad: one row, first failing expectation
    land(con, feeds["xa_few_bad"], n, rows, arrived_at=datetime(2026, 11, 20, 9, 30))
    history(con, feeds["xa_few_bad"], n, 5, 40)

    cols_b = [c if c != "HS_CODE" else "HS_CODES" for c in COLUMNS.values()]
    land(
        con,
        feeds["xb_missing_col"],
        n,
        [{("HS_CODES" if k == "HS_CODE" else k): v for k, v in good_row(i, n).items()} for i in range(1, 11)],
        columns=cols_b,
    )
    land(con, feeds["xc_zero_rows"], n, [])
    bad = [good_row(i, n) for i in range(1, 21)]
    for r in bad[:12]:
        r["VALUE"] = "n/a"
    land(con, feeds["xd_many_bad"], n, bad)
    extra = [{**good_row(i, n), "NEW_COL": "x"} for i in range(1, 11)]
    land(con, feeds["xe_new_col"], n, extra, columns=[*COLUMNS.values(), "NEW_COL"], landing=settings.landing)
    land(con, feeds["xh_new_col_stop"], n, extra, columns=[*COLUMNS.values(), "NEW_COL"], header_in_db=True)
    land(con, feeds["xf_volume_drop"], n, [good_row(i, n) for i in range(1, 6)])
    history(con, feeds["xf_volume_drop"], n, 6, 100)
    history(con, feeds["xg_no_file"], n, 3, 10)
    con.close()

    result = validate_raw(settings, NIGHT, list(feeds.values()))
    with duckdb.connect(str(settings.warehouse)) as c:
        first = (
            _table(c, "select * from ops.quality_row_failures"),
            _table(c, "select feed, night, reason_code, reason, held_at, lifted_at from ops.feed_holds"),
        )
    return {"settings": settings, "feeds": feeds, "result": result, "first": first}


def test_statuses(env: dict) -> None:
    r = env["result"]
    status = {f: q.status for f, q in r.feeds.items()}
    assert status == {
        "xa_few_bad": "ok",
        "xb_missing_col": "held",
        "xc_zero_rows": "held",
        "xd_many_bad": "held",
        "xe_new_col": "ok",
        "xf_volume_drop": "ok",
        "xg_no_file": "missing",
        "xh_new_col_stop": "held",
    }


def test_missing_column_is_held_with_closest_match(env: dict) -> None:
    q = env["result"].feeds["xb_missing_col"]
    assert q.hold_reason_code == "renamed_column"
    assert "column 'HS_CODE' is missing; the file has 'HS_CODES' (closest match)" in q.hold_reason
    assert [d.kind for d in q.drift] == ["renamed_column"]
    # GX agrees: the structural expectation failed and the row checks on HS_CODE were not evaluated
    names = {o.name for o in q.expectations_failed}
    assert "column_present__hs_code" in names


def test_zero_rows_and_too_many_failing_rows_are_held(env: dict) -> None:
    feeds = env["result"].feeds
    assert feeds["xc_zero_rows"].hold_reason_code == "zero_rows"
    q = feeds["xd_many_bad"]
    assert q.hold_reason_code == "too_many_failing_rows"
    assert q.quarantined_rows == 12 and "12 of 20 rows" in q.hold_reason


def test_few_bad_hs_codes_are_quarantined_not_held(env: dict) -> None:
    q = env["result"].feeds["xa_few_bad"]
    assert q.hold_reason_code is None
    with duckdb.connect(str(env["settings"].warehouse), read_only=True) as c:
        rows = c.execute(
            "select source_line, expectation, reason_code, reason, severity, stage from ops.quality_row_failures "
            "where feed = 'xa_few_bad' order by source_line"
        ).fetchall()
    assert [r[0] for r in rows] == [3, 11, 17, 29]
    by_line = {r[0]: r for r in rows}
    assert by_line[3][1:3] == ("hs_code_format", "bad_hs_code")
    assert by_line[3][3] == "column 'HS_CODE' has '84A130': not a 6-digit HS code (hs_format hs6)"
    assert by_line[3][4:] == ("warning", "quality")
    # line 17 fails HS code and value: one row, the first expectation in suite order
    assert by_line[17][1] == "hs_code_format"
    assert by_line[11][1] == "declaration_id_prefix"  # the hand-written addition was merged in
    failed = {o.name: o for o in q.expectations_failed}
    assert failed["hs_code_format"].unexpected_count == 3
    assert failed["customs_value_numeric"].unexpected_count == 1
    assert failed["customs_value_numeric"].quarantined_rows == 0


def test_drift_accept_is_a_warning_and_stop_holds(env: dict) -> None:
    q = env["result"].feeds["xe_new_col"]
    assert [(d.kind, d.column, d.severity) for d in q.drift] == [("new_column", "NEW_COL", "warning")]
    h = env["result"].feeds["xh_new_col_stop"]
    assert h.hold_reason_code == "new_column" and "NEW_COL" in h.hold_reason


def test_volume_freshness_and_missing_night(env: dict) -> None:
    feeds = env["result"].feeds
    assert [f.kind for f in feeds["xf_volume_drop"].volume] == ["volume_drop"]
    assert "5 rows tonight against a median of 100" in feeds["xf_volume_drop"].volume[0].message
    assert feeds["xa_few_bad"].volume == []
    assert [f.kind for f in feeds["xa_few_bad"].freshness] == ["late_file"]
    assert [f.kind for f in feeds["xg_no_file"].freshness] == ["missing_night"]


def test_holds_table_and_report(env: dict) -> None:
    _, holds = env["first"]
    assert sorted(h[0] for h in holds) == ["xb_missing_col", "xc_zero_rows", "xd_many_bad", "xh_new_col_stop"]
    assert all(h[5] is None for h in holds)
    rep = quality_report(env["result"])
    json.dumps(rep)
    assert rep["raw"]["feeds"]["xb_missing_col"]["status"] == "held"
    assert rep["raw"]["missing"] == ["xg_no_file"]
    idx = Path(rep["data_docs"])
    assert idx.name == "index.html" and idx.exists()
    assert idx.parent == env["settings"].reports / "data_docs"


def test_rerun_is_idempotent_and_lift_hold(env: dict) -> None:
    settings, feeds = env["settings"], list(env["feeds"].values())
    validate_raw(settings, NIGHT, feeds)
    with duckdb.connect(str(settings.warehouse)) as c:
        again = (
            _table(c, "select * from ops.quality_row_failures"),
            _table(c, "select feed, night, reason_code, reason, held_at, lifted_at from ops.feed_holds"),
        )
    assert again == env["first"]

    assert lift_hold(settings, "xc_zero_rows", NIGHT) == 1
    assert lift_hold(settings, "xc_zero_rows", NIGHT) == 0
    r = validate_raw(settings, NIGHT, [env["feeds"]["xc_zero_rows"]])
    assert r.feeds["xc_zero_rows"].status == "ok" and r.feeds["xc_zero_rows"].hold_lifted_at is not None
    with duckdb.connect(str(settings.warehouse)) as c:
        active = c.execute(
            "select count(*) from ops.feed_holds where feed = 'xc_zero_rows' and lifted_at is null"
        ).fetchone()[0]
    assert active == 0


def test_harmonised_gate(env: dict) -> None:
    """intermediate.int_declarations_converted as dbt will build it; validate_harmonised reads the
    columns in suites.HARMONISED_COLUMNS."""
    settings = env["settings"]
    n = NIGHT
    with duckdb.connect(str(settings.warehouse)) as c:
        c.execute("create schema if not exists intermediate")
        c.execute(
            "create or replace table intermediate.int_declarations_converted as select "
            "'xa_few_bad' as feed, DATE '2026-11-20' as night, 'xa/f.csv' as source_file, i::integer as source_line, "
            "'ok' as row_status, 'XA' as reporter_country, 'D-' || i as declaration_id, 1 as item_no, "
            "'847130' as hs6, 100.0 * i as customs_value_usd, 10.0 as net_mass_kg from range(1, 21) r(i)"
        )
        c.execute("update intermediate.int_declarations_converted set hs6 = '8471' where source_line = 2")
        c.execute(
            "update intermediate.int_declarations_converted set customs_value_usd = -5 where source_line = 4"
        )
        c.execute(
            "update intermediate.int_declarations_converted set customs_value_usd = null where source_line = 6"
        )
        c.execute(
            "update intermediate.int_declarations_converted set declaration_id = 'D-7' where source_line = 8"
        )
        c.execute(
            "update intermediate.int_declarations_converted set row_status = 'rate_missing', hs6 = 'x' where source_line = 9"
        )
        # already quarantined by the raw gate: not written twice
        c.execute(
            "update intermediate.int_declarations_converted set source_file = ?, hs6 = '1' where source_line = 12",
            [
                c.execute(
                    "select source_file from raw.landed_files where feed = 'xa_few_bad' and night = ?", [n]
                ).fetchone()[0]
            ],
        )
        c.execute("update intermediate.int_declarations_converted set source_line = 3 where source_line = 12")
    before = None
    for _ in range(2):  # idempotent
        r = validate_harmonised(settings, n)
        with duckdb.connect(str(settings.warehouse), read_only=True) as c:
            rows = c.execute(
                "select source_file, source_line, expectation, reason from ops.quality_row_failures "
                "where expectation like 'harmonised.%' order by source_line"
            ).fetchall()
        assert before is None or rows == before
        before = rows
    assert r.rows == 19
    assert [(x[1], x[2]) for x in rows] == [
        (2, "harmonised.hs6_format"),
        (4, "harmonised.customs_value_usd_non_negative"),
        (6, "harmonised.customs_value_usd_not_null"),
        (8, "harmonised.declaration_key_unique"),
    ]
    assert "column 'hs6' has '8471'" in rows[0][3]
    assert r.quarantined_rows == 4 and r.quarantined_by_feed == {"xa_few_bad": 4}
    rep = r.to_dict()
    json.dumps(rep)
    assert {e["name"] for e in rep["expectations_failed"]} >= {
        "harmonised.hs6_format",
        "harmonised.declaration_key_unique",
    }
