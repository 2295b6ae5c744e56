"""Tier 3 (docs/deployment.md): the quality gates run on PostgreSQL as on DuckDB, with the same verdicts
and the same rows in ``ops``.

Three nights of the synthetic sample are landed and loaded into DuckDB, with more bad values salted
into the raw tables than the sample has (numbers DuckDB's cast reads and ones it does not, codes,
dates and empty values that fail the suites' checks, implausible unit values and a repeated key for
the harmonised gate, a feed night with too many bad rows and one whose file header lost a column:
two holds). The raw schema is copied into a throwaway PostgreSQL (``warehouse_pg.copy_schemas``);
then on each engine, through the settings' engine only: the raw gate over the three nights, dbt's
harmonise (the intermediate models, reading the holds and failures that engine's gate wrote), the
harmonised gate night by night. Verdicts (the report JSON, run times and paths aside), every
``ops.quality_row_failures`` row and the holds must be the same. A hold is then lifted on both and
the night validated again. The portable SQL functions of the suites are also compared on a grid of
awkward inputs.
"""

from __future__ import annotations

import json
import math
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import duckdb
import pytest
import tiers

from tradesentry.settings import Settings

pytestmark = [pytest.mark.tier, pytest.mark.timeout(300)]

FIRST, LAST = date(2026, 11, 25), date(2026, 11, 27)
MIDDLE = date(2026, 11, 26)
MANY_BAD = ("xb", MIDDLE)  # a third of its values unparseable: too_many_failing_rows
LOST_COLUMN = ("xc", FIRST)  # the header lost NET_WT_T (NET_WEIGHT_T instead): renamed_column
ENGINES = ("duckdb", "postgres")


@dataclass
class Run:
    settings: Settings
    raw: dict[date, dict[str, Any]] = field(default_factory=dict)
    harmonised: dict[date, dict[str, Any]] = field(default_factory=dict)
    failures: list[tuple[Any, ...]] = field(default_factory=list)
    holds: list[tuple[Any, ...]] = field(default_factory=list)
    rerun: dict[str, Any] = field(default_factory=dict)
    rerun_holds: list[tuple[Any, ...]] = field(default_factory=list)
    lifted: int = 0


@dataclass
class Pair:
    runs: dict[str, Run]
    pg: tiers.Postgres
    started: datetime
    timings: dict[str, float] = field(default_factory=dict)


def _timed(timings: dict[str, float], name: str, fn: Any) -> Any:
    t0 = time.monotonic()
    out = fn()
    timings[name] = round(time.monotonic() - t0, 1)
    return out


N1, N2 = FIRST, MIDDLE
# Values that fail (or pass) the raw suites, on nights the sample's own salted lines (the last night)
# leave alone: (feed, night, source line, column, value). At most a fifth of a night's lines fail.
SALT = [
    # numbers DuckDB's cast reads (tab and spaces around, underscores, +-, exponents, inf, nan)...
    ("xa", N1, 3, "value_eur", "\t1_000.5 "), ("xa", N1, 4, "value_eur", "+-5"), ("xa", N1, 5, "value_eur", "1e400"),
    ("xa", N1, 6, "net_mass_kg", "1e-400"), ("xa", N1, 10, "value_eur", "-0"), ("xa", N1, 11, "net_mass_kg", ".5e-3"),
    ("xa", N2, 3, "value_eur", "INF"), ("xa", N2, 4, "value_eur", "nan"), ("xb", N1, 4, "Eigenmasse", "1,5e3"),
    # ... and ones it does not
    ("xa", N1, 7, "value_eur", "1__0"), ("xb", N1, 3, "Zollwert", "1.234,5"), ("xe", N1, 3, "NetMass", "1O,5"),
    ("xf", N2, 3, "net_kg", "2e9"),
    # codes, dates, empty values
    ("xa", N1, 8, "partner", "X1"), ("xa", N1, 9, "decl_date", "27/11/2026"), ("xa", N2, 5, "hs_code", None),
    ("xa", N2, 6, "origin", "xa"), ("xa", N2, 11, "flow", "IMPORT"),
    ("xd", N1, 3, "hts_code", "8471.30.00.00.00"), ("xd", N1, 4, "entry_date", "11-27-2026"),
    ("xe", N2, 3, "PartnerCountry", "GBR "), ("xe", N2, 4, "PartnerCountry", "GB"),
    ("xe", N2, 5, "CustomsValueGBP", " 7,5 "), ("xc", N2, 3, "ACCEPT_DATE", "2026-11-27"),
    ("xc", N2, 4, "STAT_CODE", "84713000001"), ("xf", N1, 3, "tescil_tarihi", "1.2.2026"),
    ("xf", N1, 4, "tescil_tarihi", "1.2.26"), ("xg", N1, 3, "hs_code", " 847130 "),
    ("xg", N1, 4, "partner_country", "U\nS"),
    # for the harmonised gate: implausible unit values (both ways) that pass the raw checks
    ("xa", N2, 7, "value_eur", "9000000000"), ("xa", N2, 7, "net_mass_kg", "0.001"),
    ("xa", N2, 8, "value_eur", "0.01"), ("xa", N2, 8, "net_mass_kg", "900000000"),
    ("xg", N1, 5, "assessable_value", "123456789.123"), ("xg", N1, 5, "net_wt_kg", "0.0007"),
]  # fmt: skip
REPEATED_KEY = ("xa", N2, 9, 10)  # line 10 gets line 9's declaration and item: the harmonised key check


def _salt(s: Settings) -> None:
    """More failing values than the sample has, identical on both engines since they go into the raw
    tables before the copy."""
    from tradesentry.warehouse import open_warehouse

    with open_warehouse(s.warehouse) as con:
        for feed, night, line, column, value in SALT:
            con.execute(
                f'update raw."{feed}__declarations" set "{column}" = ? where _night = ? and _source_line = ?',
                [value, night, line],
            )
        feed, night, first, second = REPEATED_KEY
        con.execute(
            f'update raw."{feed}__declarations" t set decl_id = s.decl_id, item_no = s.item_no '
            f'from raw."{feed}__declarations" s where s._night = ? and t._night = ? and s._source_line = ? '
            "and t._source_line = ?",
            [night, night, first, second],
        )
        feed, night = MANY_BAD
        con.execute(
            f'update raw."{feed}__declarations" set "Zollwert" = \'x\' || _source_line '
            "where _night = ? and _source_line % 3 = 0",
            [night],
        )
        feed, night = LOST_COLUMN
        con.execute(
            "update raw.landed_files set columns = list_transform(columns, lambda c: "
            "case when c = 'NET_WT_T' then 'NET_WEIGHT_T' else c end) where feed = ? and night = ?",
            [feed, night],
        )


def _gates(run: Run, nights: list[date], timings: dict[str, float], engine: str) -> None:
    """Raw gate, harmonise, harmonised gate, on the settings' engine."""
    from tradesentry.feeds.loader import load_feeds
    from tradesentry.pipeline import stages
    from tradesentry.quality.gates import validate_harmonised, validate_raw_nights

    s = run.settings
    feeds = load_feeds(s.feeds_dir)
    raw = _timed(timings, f"{engine} raw gate", lambda: validate_raw_nights(s, nights, feeds, build_docs=False))
    run.raw = {n: r.to_dict() for n, r in raw.items()}
    _timed(timings, f"{engine} harmonise (dbt)", lambda: stages.harmonise(s))
    t0 = time.monotonic()
    for n in nights:
        run.harmonised[n] = validate_harmonised(s, n, build_docs=n == nights[-1]).to_dict()
    timings[f"{engine} harmonised gates"] = round(time.monotonic() - t0, 1)


def _ops(run: Run, pg: tiers.Postgres) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    failures = "select * from ops.quality_row_failures order by feed, night, source_file, source_line, expectation"
    holds = "select feed, night, reason_code, reason, held_at, lifted_at from ops.feed_holds order by feed, night"
    if run.settings.warehouse_engine == "duckdb":
        con = duckdb.connect(str(run.settings.warehouse), read_only=True)
        try:
            return con.execute(failures).fetchall(), con.execute(holds).fetchall()
        finally:
            con.close()
    pcon = pg.connect()
    try:
        with pcon.cursor() as cur:
            cur.execute(failures)
            f = [tuple(r) for r in cur.fetchall()]
            cur.execute(holds)
            return f, [tuple(r) for r in cur.fetchall()]
    finally:
        pcon.close()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    tiers.require(dbt_postgres=True)
    root = tmp_path_factory.mktemp("tier3q")
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()  # dbt in this process starts it: not one of the stack's processes
    stack = tiers.Stack(root=root)
    t0 = time.monotonic()
    try:
        pg = tiers.start_postgres(stack, database="tradesentry")
        url = f"postgresql://{pg.user}@127.0.0.1:{pg.port}/{pg.database}"
        duck = Settings(data_dir=root / "duckdb").resolve()
        # Same landing (headers of files not recorded in raw.landed_files are read from there).
        pgs = Settings(
            data_dir=root / "postgres", landing_dir=duck.landing, warehouse_engine="postgres", warehouse_url=url
        ).resolve()
        p = Pair(runs={"duckdb": Run(duck), "postgres": Run(pgs)}, pg=pg, started=datetime.now())
        p.timings["postgres up"] = round(stack.timings["postgres"], 1)

        from tradesentry.pipeline import stages
        from tradesentry.samplegen import generate
        from tradesentry.warehouse_pg import copy_schemas

        def land() -> None:
            generate(duck.samples, start=FIRST, nights=3, seed=tiers.SAMPLE_SEED, scale=tiers.SAMPLE_SCALE,
                     salt_bad_rows=True)  # fmt: skip
            nights = stages.nights_between(FIRST, LAST)
            stages.pull_range(duck, nights)
            stages.load_raw(duck, nights)
            _salt(duck)

        _timed(p.timings, "sample, pull, raw load (duckdb)", land)
        _timed(p.timings, "copy raw", lambda: copy_schemas(duck.warehouse, url, schemas=("raw",)))
        nights = stages.nights_between(FIRST, LAST)
        for engine, run in p.runs.items():
            _gates(run, nights, p.timings, engine)
            run.failures, run.holds = _ops(run, pg)

        # Lift the too-many-bad-rows hold on both and validate that night again.
        from tradesentry.feeds.loader import load_feeds
        from tradesentry.quality.gates import lift_hold, validate_raw_nights

        feed, night = MANY_BAD
        for engine, run in p.runs.items():
            run.lifted = lift_hold(run.settings, feed, night)
            t1 = time.monotonic()
            res = validate_raw_nights(run.settings, [night], load_feeds(run.settings.feeds_dir), build_docs=True)
            p.timings[f"{engine} raw gate again"] = round(time.monotonic() - t1, 1)
            run.rerun = res[night].to_dict()
            _, run.rerun_holds = _ops(run, pg)
        p.timings["fixture"] = round(time.monotonic() - t0, 1)
        print("tier 3 quality timings (s):", p.timings)
        yield p
    finally:
        leftovers = stack.close()
        assert not leftovers, f"processes left behind (killed now): {leftovers}"


# ------------------------------------------------------------------------------------ comparison


def _run_time(value: Any, started: datetime) -> Any:
    """Timestamps set from the clock (held_at, lifted_at) as a marker."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, datetime) and value >= started.replace(microsecond=0):
        return "<set by this run>"
    return value


def _verdict(report: Any, started: datetime) -> Any:
    """A report without what differs by run (seconds, the Data Docs path, the time a hold was lifted)."""
    if isinstance(report, dict):
        return {
            k: _run_time(v, started) if k == "lifted_at" else _verdict(v, started)
            for k, v in report.items()
            if k not in ("seconds", "data_docs")
        }
    if isinstance(report, list):
        return [_verdict(v, started) for v in report]
    return report


def _holds(rows: list[tuple[Any, ...]], started: datetime) -> list[tuple[Any, ...]]:
    return [tuple(_run_time(v, started) for v in r) for r in rows]


def test_raw_gate_verdicts_are_identical(pair: Pair) -> None:
    duck, pg = pair.runs["duckdb"], pair.runs["postgres"]
    assert set(duck.raw) == set(pg.raw)
    for night in duck.raw:
        d, p = (json.dumps(_verdict(r[night], pair.started), sort_keys=True, indent=1, default=str) for r in (duck.raw, pg.raw))
        assert p == d, night


def test_harmonised_gate_verdicts_are_identical(pair: Pair) -> None:
    duck, pg = pair.runs["duckdb"], pair.runs["postgres"]
    assert set(duck.harmonised) == set(pg.harmonised)
    for night in duck.harmonised:
        assert _verdict(pg.harmonised[night], pair.started) == _verdict(duck.harmonised[night], pair.started), night


def test_quality_row_failures_are_identical(pair: Pair) -> None:
    duck, pg = pair.runs["duckdb"], pair.runs["postgres"]
    only_duck = sorted(set(duck.failures) - set(pg.failures), key=repr)
    only_pg = sorted(set(pg.failures) - set(duck.failures), key=repr)
    assert not only_duck and not only_pg, {"duckdb only": only_duck[:10], "postgres only": only_pg[:10]}
    assert len(duck.failures) == len(pg.failures)


def test_holds_are_identical(pair: Pair) -> None:
    duck, pg = pair.runs["duckdb"], pair.runs["postgres"]
    assert _holds(pg.holds, pair.started) == _holds(duck.holds, pair.started)
    assert _holds(pg.rerun_holds, pair.started) == _holds(duck.rerun_holds, pair.started)
    assert _verdict(pg.rerun, pair.started) == _verdict(duck.rerun, pair.started)


def test_the_comparison_covers_every_route(pair: Pair) -> None:
    """The equalities above mean something: both holds, a lift, failures of every kind of check."""
    duck = pair.runs["duckdb"]
    held = {(r[0], r[1]): r[2] for r in duck.holds}
    assert held == {(MANY_BAD[0], MANY_BAD[1]): "too_many_failing_rows", (LOST_COLUMN[0], LOST_COLUMN[1]): "renamed_column"}
    assert [r.lifted for r in pair.runs.values()] == [1, 1]
    assert duck.rerun["feeds"][MANY_BAD[0]]["status"] == "ok" and duck.rerun["feeds"][MANY_BAD[0]]["hold"]["lifted_at"]
    assert duck.raw[LOST_COLUMN[1]]["feeds"][LOST_COLUMN[0]]["status"] == "held"
    expectations = {r[5].split("__")[0] for r in duck.failures}
    assert {
        "not_null", "flow_allowed", "hs_code_format", "partner_country_format", "origin_country_format",
        "declaration_date_format", "customs_value_numeric", "net_mass_numeric", "customs_value_range",
        "net_mass_range", "harmonised.unit_value_plausible", "harmonised.declaration_key_unique",
    } <= expectations, expectations  # fmt: skip
    reasons = {r[7] for r in duck.failures}
    assert "column 'value_eur' has '+-5': outside the range 0 to 1e+10" in reasons  # DuckDB reads '+-5' as -5
    assert any(r.startswith("column 'customs_value_usd / net_mass_kg' has '") for r in reasons)
    assert len(duck.failures) > 40
    assert duck.raw[LOST_COLUMN[1]]["feeds"][LOST_COLUMN[0]]["drift"]


# ---------------------------------------------------------------- the suites' functions, edge cases


NUMBERS = [
    "1", "-2", "+3", "+-4", "-+5", "++6", ".5", "5.", ".", "", " ", "\t7\n", " 8 ", "\v9\f", "1_000", "1__0", "_1",
    "1_", "1._5", "0.1_5", "1e5", "1E+5", "1e-5", "1e", "e5", "1e_5", "1e1_0", "1.e5", ".e5", "inf", "-inf", "+INF",
    "Infinity", "-infinity", "infin", "nan", "-NaN", "+-nan", "0x10", "1,5", "1.2.3", "00012", "-0", "+-0.0",
    "1e308", "1.7976931348623157e308", "1.7976931348623159e308", "1e309", "-1e309", "1e400000000",
    "1e99999999999999999999", "4e-324", "2.4703282292062328e-324", "2e-324", "1e-400", "-1e-400", "0e999999",
    "0." + "0" * 400 + "1e400", "1" + "0" * 400, "1" + "0" * 400 + "e-400", "\u0661", "\uff11", "1 000", "- 1", "1e+-5",
]  # fmt: skip
PATTERNS = ["[0-9]{6}", "[0-9]{4}\\.[0-9]{2}(\\.[0-9]{2}){0,2}", "[A-Z]{2}", "[0-9]{1,2}\\.[0-9]{1,2}\\.[0-9]{4}",
            "[0-9]{4}\\-[0-9]{1,2}\\-[0-9]{1,2}", "a.c", "[.]x|y", "[]a]+", "[^]a]b", "[[:alpha:]]+."]  # fmt: skip
TEXTS = ["847130", "8471.30", "8471.30.00", "8471.30.00.00", "XA", "xa", "X1", "1.2.2026", "01.12.2026", "2026-1-2",
         "abc", "a\nc", "axc", ".x", "y", "]]a", "b\nb", "cb", "Zz.", "", " XA", None]  # fmt: skip


def test_suite_functions_agree_on_both_engines(pair: Pair) -> None:
    from tradesentry.quality.dialect import render
    from tradesentry.quality.suites import ql

    def both(sql: str, values: list[str | None], gx: bool = False) -> tuple[list[Any], list[Any]]:
        # The suites' texts go through GX's str.format: braces are doubled there, single here.
        duck = duckdb.connect()
        try:
            d = [duck.execute(f"select {render(sql, 'duckdb')} from (select ?::varchar as v)", [v]).fetchone()[0]
                 for v in values]  # fmt: skip
        finally:
            duck.close()
        con = pair.pg.connect()
        try:
            with con.cursor() as cur:
                pg_sql = render(sql, "postgres").replace("%", "%%")
                cur.execute(f"select {pg_sql} from unnest(%s::text[]) with ordinality as t (v, i) order by i", [values])
                p = [r[0] for r in cur.fetchall()]
        finally:
            con.close()
        return d, p

    def same(a: Any, b: Any) -> bool:
        if isinstance(a, float) and isinstance(b, float):
            return (math.isnan(a) and math.isnan(b)) or struct.pack(">d", a) == struct.pack(">d", b)
        return bool(a == b)

    d, p = both("ts_try_double(v)", NUMBERS)
    diff = [(v, x, y) for v, x, y in zip(NUMBERS, d, p, strict=True) if not same(x, y)]
    assert not diff, diff
    got = dict(zip(NUMBERS, d, strict=True))
    assert got["+-4"] == -4 and got["1_000"] == 1000 and got["1e309"] == math.inf and got["1__0"] is None
    for pattern in PATTERNS:
        d, p = both(f"ts_full_match(v, {ql(pattern)})", TEXTS)
        assert d == p, (pattern, [(t, x, y) for t, x, y in zip(TEXTS, d, p, strict=True) if x != y])
    d, _ = both(f"ts_full_match(v, {ql(PATTERNS[0])})", TEXTS)
    assert d[:3] == [True, False, False]
