"""Tier 3 (docs/deployment.md): the dbt project builds on PostgreSQL as well as DuckDB, from the same
models, and the marts hold the same rows.

The nightly stages run into DuckDB on three nights of the bundled synthetic sample (pull, raw load,
raw gate, harmonise, harmonised gate, marts), with every path the marts have: salted bad rows (parse
rejects, unparseable values), a resent file (replaced versions go to history), a feed hold and missing
exchange rates (held rows). The raw and ops schemas are copied into a throwaway PostgreSQL
(`tradesentry.warehouse_pg.copy_schemas`), the same project is built there (`dbt build`: seeds, models,
data tests, unit tests) and every mart is compared with DuckDB's row by row. Then the hold is lifted on
both and both rebuild (the incremental model's pre-hook on each engine) and are compared again. The
parsing macros are also compared on both engines over a grid of awkward inputs.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import duckdb
import pytest
import tiers

from tradesentry.harmonise.dbt_runner import DbtResult, run_dbt
from tradesentry.settings import Settings

pytestmark = [pytest.mark.tier, pytest.mark.timeout(420)]

FIRST, LAST = date(2026, 11, 25), date(2026, 11, 27)
RESENT = ("xa", date(2026, 11, 26))
HELD = ("xd", date(2026, 11, 26))
MARTS = (
    "fct_declarations", "fct_declaration_history", "fct_quarantine", "fct_held_rows",
    "fct_consignment_matches", "dim_countries", "dim_hs_products", "dim_traders",
)  # fmt: skip
JSON_COLUMNS = {"raw_values"}
# Column types that are the same thing on both engines.
DUCKDB_TYPES = {"VARCHAR": "text", "DOUBLE": "float", "INTEGER": "int4", "BIGINT": "int8", "DATE": "date",
                "TIMESTAMP": "timestamp", "BOOLEAN": "bool", "JSON": "json"}  # fmt: skip
POSTGRES_TYPES = {"text": "text", "character varying": "text", "double precision": "float", "integer": "int4",
                  "bigint": "int8", "date": "date", "timestamp without time zone": "timestamp",
                  "boolean": "bool", "json": "json"}  # fmt: skip


@dataclass
class Warehouses:
    duck: Settings
    pg_settings: Settings
    pg: tiers.Postgres
    url: str
    timings: dict[str, float] = field(default_factory=dict)
    builds: list[DbtResult] = field(default_factory=list)
    rounds: dict[str, dict[str, Any]] = field(default_factory=dict)


def _timed(w: Warehouses, name: str, fn: Any) -> Any:
    t0 = time.monotonic()
    out = fn()
    w.timings[name] = round(time.monotonic() - t0, 1)
    return out


def _duckdb_pipeline(s: Settings) -> None:
    """The nightly stages on the sample, with a resend, a feed hold and missing rates."""
    from tradesentry.pipeline import stages
    from tradesentry.samplegen import generate
    from tradesentry.warehouse import open_warehouse

    generate(s.samples, start=FIRST, nights=3, seed=tiers.SAMPLE_SEED, scale=tiers.SAMPLE_SCALE, salt_bad_rows=True)
    # No JPY rate from 11-19 on: JPY declarations of 11-26 and 11-27 are held (rate_missing).
    for f in (s.samples / "exchange_rates").glob("*.csv"):
        lines = f.read_text().splitlines(keepends=True)
        f.write_text("".join(x for x in lines if not (",JPY," in x and x[:10] >= "2026-11-19")))
    nights = stages.nights_between(FIRST, LAST)
    stages.pull_range(s, nights)
    # xa resends night 11-26 with one value changed: the first file's rows become history.
    feed, night = RESENT
    (resent,) = (s.samples / feed).glob(f"*{night:%Y%m%d}*")
    lines = resent.read_text().splitlines(keepends=True)
    header, first = next(csv.reader(lines[:1])), next(csv.reader(lines[1:2]))
    mass = header.index("net_mass_kg")
    first[mass] = str(float(first[mass]) + 10)
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerow(first)
    lines[1] = out.getvalue()
    resent.write_text("".join(lines))
    stages.pull(s, feed, night)
    stages.load_raw(s, nights)
    stages.validate_raw(s, nights)
    with open_warehouse(s.warehouse) as con:
        con.execute(
            "insert into ops.feed_holds values (?, ?, 'manual', 'held by the tier 3 test', ?, null)",
            [HELD[0], HELD[1], datetime(2026, 11, 27, 1)],
        )
    stages.harmonise(s)
    stages.validate_harmonised(s, nights)
    stages.build_marts(s, as_of=LAST)


def _pg_build(w: Warehouses, *args: str) -> DbtResult:
    result = run_dbt(["build", *args], w.pg_settings, vars={"as_of_night": LAST.isoformat()})
    w.builds.append(result)
    return result


@pytest.fixture(scope="module")
def warehouses(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Warehouses]:
    tiers.require(dbt_postgres=True)
    root = tmp_path_factory.mktemp("tier3")
    # dbt runs in this process and its multiprocessing locks start Python's resource tracker, a child
    # of the test process: started before the stack, it is not counted as one of the stack's processes.
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    stack = tiers.Stack(root=root)
    t0 = time.monotonic()
    try:
        pg = tiers.start_postgres(stack, database="tradesentry")
        url = f"postgresql://{pg.user}@127.0.0.1:{pg.port}/{pg.database}"
        w = Warehouses(
            duck=Settings(data_dir=root / "duckdb").resolve(),
            pg_settings=Settings(data_dir=root / "postgres", warehouse_engine="postgres", warehouse_url=url).resolve(),
            pg=pg,
            url=url,
        )
        w.timings["postgres up"] = round(stack.timings["postgres"], 1)
        _timed(w, "duckdb pipeline", lambda: _duckdb_pipeline(w.duck))

        from tradesentry.warehouse_pg import copy_schemas

        w.rounds["copied"] = _timed(w, "copy raw+ops", lambda: copy_schemas(w.duck.warehouse, url))
        _timed(w, "postgres dbt build", lambda: _pg_build(w))
        w.rounds["first"] = _compare_marts(w)

        # Lift the hold on both, rebuild both: the incremental model converts the night it left out.
        lift = "update ops.feed_holds set lifted_at = timestamp '2026-11-27 02:00:00' where lifted_at is null"
        from tradesentry.pipeline import stages
        from tradesentry.warehouse import open_warehouse

        with open_warehouse(w.duck.warehouse) as con:
            con.execute(lift)
        with pg.connect() as con, con.cursor() as cur:
            cur.execute(lift)
        con.close()
        _timed(w, "duckdb rebuild", lambda: (stages.harmonise(w.duck), stages.build_marts(w.duck, as_of=LAST)))
        _timed(w, "postgres dbt rebuild", lambda: _pg_build(w, "--exclude-resource-type", "unit_test"))
        w.rounds["after lift"] = _compare_marts(w)
        w.timings["fixture"] = round(time.monotonic() - t0, 1)
        print("tier 3 timings (s):", w.timings)
        yield w
    finally:
        leftovers = stack.close()
        assert not leftovers, f"processes left behind (killed now): {leftovers}"


# ------------------------------------------------------------------------------------ comparison


def _norm(value: Any, json_column: bool) -> Any:
    if json_column and isinstance(value, str):
        value = json.loads(value)
    if isinstance(value, dict | list):
        return ("json", json.dumps(value, sort_keys=True))
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int | float | Decimal):
        return float(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def _rounded(row: tuple[Any, ...]) -> str:
    """Sort key: floats to 6 significant digits (the engines may differ in the last bits)."""
    return repr(tuple(float(f"{v:.6g}") + 0.0 if isinstance(v, float) and math.isfinite(v) else v for v in row))


def _same(a: tuple[Any, ...], b: tuple[Any, ...]) -> bool:
    for x, y in zip(a, b, strict=True):
        if isinstance(x, float) and isinstance(y, float):
            if not (math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12) or (math.isnan(x) and math.isnan(y))):
                return False
        elif x != y:
            return False
    return True


def _fetch(cur: Any, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    cur.execute(sql)
    names = [d[0] for d in cur.description]
    rows = [tuple(_norm(v, n in JSON_COLUMNS) for n, v in zip(names, r, strict=True)) for r in cur.fetchall()]
    return names, sorted(rows, key=_rounded)


def _types(cur: Any, placeholder: str, table: str, mapping: dict[str, str]) -> list[tuple[str, str]]:
    cur.execute(
        "select column_name, data_type from information_schema.columns "
        f"where table_schema = 'marts' and table_name = {placeholder} order by ordinal_position",
        [table],
    )
    return [(name, mapping.get(dtype, dtype)) for name, dtype in cur.fetchall()]


def _compare_marts(w: Warehouses) -> dict[str, Any]:
    """Per mart: rows on each engine, differing column types, rows only on one side (a few)."""
    out: dict[str, Any] = {}
    duck = duckdb.connect(str(w.duck.warehouse), read_only=True)
    pg = w.pg.connect()
    try:
        with pg.cursor() as cur:
            for mart in MARTS:
                d_types = _types(duck, "?", mart, DUCKDB_TYPES)
                p_types = _types(cur, "%s", mart, POSTGRES_TYPES)
                d_names, d_rows = _fetch(duck, f"select * from marts.{mart}")
                p_names, p_rows = _fetch(cur, f"select * from marts.{mart}")
                same = len(d_rows) == len(p_rows) and all(_same(a, b) for a, b in zip(d_rows, p_rows, strict=True))
                diff: list[str] = []
                if not same:
                    d_keys, p_keys = {_rounded(r) for r in d_rows}, {_rounded(r) for r in p_rows}
                    diff = [f"duckdb only: {r}" for r in sorted(d_keys - p_keys)[:3]]
                    diff += [f"postgres only: {r}" for r in sorted(p_keys - d_keys)[:3]]
                    diff = diff or ["same rows at 6 significant digits, different beyond"]
                out[mart] = {
                    "rows": (len(d_rows), len(p_rows)),
                    "columns": d_names == p_names,
                    "types": [(a, b) for a, b in zip(d_types, p_types, strict=False) if a != b]
                    + ([("column count", (len(d_types), len(p_types)))] if len(d_types) != len(p_types) else []),
                    "same": same,
                    "diff": diff,
                }
    finally:
        pg.close()
        duck.close()
    return out


# ------------------------------------------------------------------------------------------ tests


def test_postgres_build_passes_every_model_and_test(warehouses: Warehouses) -> None:
    first, rebuild = warehouses.builds
    for result in (first, rebuild):
        bad = [(r["unique_id"], r["status"]) for r in result.results if r["status"] not in ("success", "pass")]
        assert not bad, bad
    kinds = {r["unique_id"].split(".")[0] for r in first.results}
    assert {"seed", "model", "test", "unit_test"} <= kinds
    assert len(first.results) > 150


@pytest.mark.parametrize("round_", ["first", "after lift"])
def test_marts_are_identical_on_duckdb_and_postgres(warehouses: Warehouses, round_: str) -> None:
    compared = warehouses.rounds[round_]
    print(round_, {m: c["rows"] for m, c in compared.items()})
    problems = {m: c for m, c in compared.items() if not (c["same"] and c["columns"] and not c["types"])}
    assert not problems, json.dumps(problems, indent=1, default=str)


def test_the_sample_reaches_every_path_of_the_marts(warehouses: Warehouses) -> None:
    """The comparison means something: every fact table has rows, for each of its routes."""
    first = warehouses.rounds["first"]
    for mart in MARTS:
        assert first[mart]["rows"][0] > 0, mart
    con = duckdb.connect(str(warehouses.duck.warehouse), read_only=True)
    try:
        stages = {r[0] for r in con.execute("select distinct stage from marts.fct_quarantine").fetchall()}
        assert {"parse", "harmonise"} <= stages
        (held_now,) = con.execute(
            "select count(*) from marts.fct_held_rows where hold_reason_code = 'feed_held'"
        ).fetchone()
        assert held_now == 0  # the lifted hold's rows were harmonised by the rebuild
        (rate_missing,) = con.execute(
            "select count(*) from marts.fct_held_rows where hold_reason_code = 'rate_missing'"
        ).fetchone()
        assert rate_missing > 0
    finally:
        con.close()
    held_before = warehouses.rounds["first"]["fct_held_rows"]["rows"][0]
    assert held_before > rate_missing  # the feed hold held rows before it was lifted


# ------------------------------------------------------------------------- the macros, edge cases


DATE_FORMATS = ["%Y-%m-%d", "%d.%m.%Y", "%m/%d/%Y", "%d/%m/%Y", "%Y%m%d"]
DATE_INPUTS = [
    "2026-03-01", "2026-3-1", "26-03-01", "02026-03-01", "2026-02-29", "2024-02-29", "2026-13-01",
    "2026-00-10", "2026-01-00", "2026-01-32", " 2026-03-01 ", "2026-03-01x", "", "x", "01.03.2026",
    "1.3.2026", "31.02.2026", "29.02.2024", "31.04.2026", "12/31/2026", "31/12/2026", "1/2/2026",
    "20261127", "2026117", "202611", "2026113", "20261301", "2026-03-01 10:00", None,
]  # fmt: skip
NUMBER_FORMATS = [(".", ""), (",", ""), (",", "."), (".", ",")]
NUMBER_INPUTS = [
    "1", "1.5", "1,5", "1.234,5", "1,234.5", "-2", "+3", ".5", "5.", "1e5", "abc", "", " 7 ", "1 000",
    "00012", "-", ".", "1.2.3", "-0", "inf", "NaN", None,
]  # fmt: skip
INTEGER_INPUTS = ["1", "01", "123456789", "1234567890", "-1", "1.0", "", " 3 ", "x", None]
TEXT_INPUTS = ["8471.30.00", " 0901-11 ", "bl-001/a", "Çé-1 ü", "abc", "", None]


def _lit(value: str | None) -> str:
    return "cast(null as varchar)" if value is None else "cast('" + value.replace("'", "''") + "' as varchar)"


def _values(inputs: list[str | None]) -> str:
    return "(values " + ", ".join(f"({_lit(v)})" for v in inputs) + ") as t (v)"


def _edge_case_sql() -> str:
    cols = "kind, arg, v, out_date, out_num, out_int, out_text"
    parts = []
    for fmt in DATE_FORMATS:
        parts.append(
            f"select 'date' as kind, '{fmt}' as arg, v, {{{{ ts_try_date('v', '{fmt}') }}}} as out_date, "
            f"cast(null as double precision) as out_num, cast(null as integer) as out_int, "
            f"cast(null as varchar) as out_text from {_values(DATE_INPUTS)}"
        )
    for dec, thou in NUMBER_FORMATS:
        parts.append(
            f"select 'number', '{dec}{thou}', v, null, {{{{ ts_try_number('v', '{dec}', '{thou}') }}}}, null, null "
            f"from {_values(NUMBER_INPUTS)}"
        )
    parts.append(f"select 'integer', '', v, null, null, {{{{ ts_try_integer('v') }}}}, null from {_values(INTEGER_INPUTS)}")
    for macro in ("ts_hs_digits", "ts_alnum_upper", "ts_clean"):
        parts.append(f"select '{macro}', '', v, null, null, null, {{{{ {macro}('v') }}}} from {_values(TEXT_INPUTS)}")
    parts.append(
        "select 'days_between', '', null, null, null, "
        "{{ ts_days_between(\"cast('2026-02-27' as date)\", \"cast('2026-03-02' as date)\") }}, null"
    )
    parts.append(
        "select 'json_object', '', null, null, null, null, cast({{ ts_json_object(['a', \"it's\", 'Mass (kg)']) }} "
        "as varchar) from (values (cast('x\"y\\z' as varchar), cast(null as varchar), cast('Ç 1,5' as varchar))) "
        "as t (\"a\", \"it's\", \"Mass (kg)\")"
    )
    parts.append(
        "select 'arg_max', '', null, null, null, null, (select {{ ts_arg_max('v', 'k', 'v is not null') }} from "
        "(values ('a', 1), ('b', 3), (null, 4), ('c', null)) as t (v, k))"
    )
    return f"select {cols} from (\n" + "\nunion all\n".join(parts) + "\n) as cases"


def _show(settings: Settings, sql: str) -> list[dict[str, Any]]:
    """`dbt show --inline` on the settings' engine: the rows, from dbt's JSON output."""
    result = run_dbt(["show", "--inline", sql, "--limit", "-1", "--output", "json", "--log-format", "text"], settings)
    starts = [m.start() for m in re.finditer(r'\{\s*"show"\s*:', result.stdout)]
    assert starts, result.stdout[-3000:]
    doc, _ = json.JSONDecoder().raw_decode(result.stdout[starts[-1]:])
    return list(doc["show"])


def test_parsing_macros_agree_on_awkward_inputs(warehouses: Warehouses) -> None:
    sql = _edge_case_sql()
    duck = _show(warehouses.duck, sql)
    pg = _show(warehouses.pg_settings, sql)

    def key(row: dict[str, Any]) -> str:
        out = dict(row)
        if out["kind"] == "json_object":
            out["out_text"] = json.loads(out["out_text"])
        return json.dumps(out, sort_keys=True, default=str)

    d_rows, p_rows = sorted(map(key, duck)), sorted(map(key, pg))
    expected = len(DATE_FORMATS) * len(DATE_INPUTS) + len(NUMBER_FORMATS) * len(NUMBER_INPUTS)
    expected += len(INTEGER_INPUTS) + 3 * len(TEXT_INPUTS) + 3
    assert len(d_rows) == len(p_rows) == expected
    assert set(d_rows) == set(p_rows), (sorted(set(d_rows) - set(p_rows)), sorted(set(p_rows) - set(d_rows)))
    # A few values pinned, so that agreeing cannot mean both wrong.
    got = {(r["kind"], r["arg"], r["v"]): r for r in duck}
    assert got[("date", "%d.%m.%Y", "1.3.2026")]["out_date"] == "2026-03-01"
    assert got[("date", "%d.%m.%Y", "31.02.2026")]["out_date"] is None
    assert got[("date", "%Y%m%d", "2026117")]["out_date"] == "2026-11-07"
    assert got[("number", ",.", "1.234,5")]["out_num"] == 1234.5
    assert got[("number", ".", "1,5")]["out_num"] is None
    assert got[("integer", "", "1234567890")]["out_int"] is None
    assert got[("ts_alnum_upper", "", "bl-001/a")]["out_text"] == "BL001A"
    assert got[("days_between", "", None)]["out_int"] == 3
    assert got[("arg_max", "", None)]["out_text"] == "b"
    assert json.loads(got[("json_object", "", None)]["out_text"]) == {"a": 'x"y\\z', "it's": None, "Mass (kg)": "Ç 1,5"}


# ---------------------------------------------------------------------- detection reads either one


def test_detection_from_the_postgres_marts_equals_detection_from_duckdb(warehouses: Warehouses) -> None:
    """Detection's input through tradesentry.warehouse_io: read in place from the DuckDB warehouse, or
    fetched from PostgreSQL into a DuckDB connection of its own; features and scores are the same."""
    import pandas as pd

    from detectors.config import DetectionConfig
    from tradesentry.detection.engine import run_detection
    from tradesentry.detection.features import build_features, drop_temp_tables
    from tradesentry.warehouse_io import detection_window_days, open_reader, stage_detection_inputs

    cfg = DetectionConfig.from_settings(warehouses.duck)
    window = detection_window_days(cfg)
    runs: dict[str, Any] = {}
    for engine, settings in (("duckdb", warehouses.duck), ("postgres", warehouses.pg_settings)):
        con = duckdb.connect(str(warehouses.duck.warehouse)) if engine == "duckdb" else duckdb.connect()
        reader = open_reader(settings, con)
        try:
            schema = stage_detection_inputs(reader, con, LAST, window)
            assert schema == ("marts" if engine == "duckdb" else "detection_input")
            bundle = build_features(con, LAST, cfg, schema)
            drop_temp_tables(con)
            result = run_detection(con, LAST, settings, cfg, labels={}, marts=schema)
            scores = con.execute(
                "select declaration_key, score, detector_scores::varchar from detection.scores "
                "where night = ? order by declaration_key",
                [LAST],
            ).fetchall()
            anomalies = con.execute(
                "select anomaly_id, kind, score, rank from detection.anomalies where night = ? order by anomaly_id",
                [LAST],
            ).fetchall()
            runs[engine] = (bundle, result, scores, anomalies)
        finally:
            reader.close()
            con.close()
    (b_duck, r_duck, s_duck, a_duck), (b_pg, r_pg, s_pg, a_pg) = runs["duckdb"], runs["postgres"]
    assert len(b_duck.subjects) > 50
    pd.testing.assert_frame_equal(b_duck.subjects.df, b_pg.subjects.df, check_exact=False, rtol=1e-9)
    pd.testing.assert_frame_equal(b_duck.history.df, b_pg.history.df, check_exact=False, rtol=1e-9)
    pd.testing.assert_frame_equal(b_duck.peer_stats_hs6, b_pg.peer_stats_hs6, check_exact=False, rtol=1e-9)
    assert r_duck.rows_scored == r_pg.rows_scored and r_duck.by_kind == r_pg.by_kind
    assert [(k, json.loads(d)) for k, _, d in s_duck] == [(k, json.loads(d)) for k, _, d in s_pg]
    assert all(math.isclose(a[1], b[1], rel_tol=1e-9) for a, b in zip(s_duck, s_pg, strict=True))
    assert [(i, k, r) for i, k, _, r in a_duck] == [(i, k, r) for i, k, _, r in a_pg]
