"""The dbt project end to end on a tiny hand-made warehouse: codegen from two specs, the two nightly
dbt invocations, then the marts' promises (conservation, replacement, holds, quarantine reasons,
consignment matching). Real dbt, real DuckDB, in a tmp dir; built once per module."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import date, datetime
from pathlib import Path

import duckdb
import pytest

from tradesentry.harmonise import build_marts, check_stale, generate, harmonise, run_dbt
from tradesentry.harmonise.dbt_runner import DbtRunError
from tradesentry.settings import REPO_ROOT, Settings
from tradesentry.warehouse import ensure_schema

pytestmark = pytest.mark.timeout(600)

PROJECT = REPO_ROOT / "dbt_project"

XA_SPEC = """\
feed: xa
country: XA
name: Xanadia customs (test)
synthetic: true
valid_from: 2026-03-02
source: {uri: "file://{sample_dir}/xa/{night:%Y%m%d}.csv"}
format: {delimiter: ";", decimal: ",", thousands: ".", date_format: "%Y-%m-%d"}
# The layout before 2026-03-02 wrote dates as dd/mm/yyyy.
versions:
  - valid_from: 2026-01-01
    format: {date_format: "%d/%m/%Y"}
columns:
  declaration_id: "Decl No"
  item_no: Item
  declaration_date: Datum
  flow: Richtung
  hs_code: HS
  partner_country: Partner
  origin_country: Origin
  trader_id: Trader
  trader_name: "Trader name"
  net_mass: "Mass (kg)"
  customs_value: Wert
  consignment_ref: "Ref's"
conventions: {currency: EUR, mass_unit: kg, hs_format: dotted, country_code: alpha2}
value_maps: {flow: {E: export, I: import}, country: {UK: GB}}
"""

XB_SPEC = """\
feed: xb
country: XB
name: Borealia customs (test)
synthetic: true
source: {uri: "file://{sample_dir}/xb/{night:%Y%m%d}.csv"}
columns:
  declaration_id: decl_id
  declaration_date: date
  flow: flow
  hs_code: tariff_line
  partner_country: partner
  net_mass: net_mass
  mass_unit: mass_unit
  customs_value: value
  currency: currency
  consignment_ref: transport_ref
conventions: {hs_format: national8, hs_edition: HS2017, country_code: alpha3}
value_maps: {flow: {IM: import, EX: export}}
"""

RATES_SPEC = """\
dataset: exchange_rates
feed: exchange_rates
name: Programme reference rates (test)
source: {uri: "file://{sample_dir}/rates/{night:%Y%m%d}.csv"}
columns: {rate_date: date, currency: ccy, rate: units_per_usd}
rate_quote: units_per_usd
"""

HS_PRODUCTS = """\
hs6,hs_edition,description,section
847130,HS2022,Portable computers,XVI
090111,HS2022,"Coffee, not roasted",II
851713,HS2022,Smartphones,XVI
030211,HS2022,Trout,I
847130,HS2017,Portable computers,XVI
851712,HS2017,Telephones for cellular networks,XVI
"""

HS_CONCORDANCE = """\
from_edition,from_hs6,to_edition,to_hs6
HS2017,851712,HS2022,851713
HS2017,851712,HS2022,851714
"""

XA_COLS = [
    "Decl No",
    "Item",
    "Datum",
    "Richtung",
    "HS",
    "Partner",
    "Origin",
    "Trader",
    "Trader name",
    "Mass (kg)",
    "Wert",
    "Ref's",
]
XB_COLS = [
    "decl_id",
    "date",
    "flow",
    "tariff_line",
    "partner",
    "net_mass",
    "mass_unit",
    "value",
    "currency",
    "transport_ref",
]

N1, N2, N3 = date(2026, 3, 1), date(2026, 3, 2), date(2026, 3, 3)

# xa, night N1 (file arrives late: after the N2 file)
XA_N1 = [
    # Decl No, Item, Datum, Richtung, HS, Partner, Origin, Trader, name, Mass, Wert, Ref
    [
        "EX-1",
        "1",
        "01/03/2026",
        "E",
        "8471.30",
        "XB",
        "CN",
        "T1",
        "Alpha Ltd",
        "1.000,5",
        "10.000,00",
        "bl-001/a",
    ],
    ["EX-2", "1", "01/03/2026", "E", "0901.11", "XB", "", "T2", "Beta Ltd", "500", "2.000", "BL-002"],
    ["EX-3", "1", "15/01/2026", "E", "0901.11", "XB", "", "T2", "Beta Ltd", "100", "300", "OLD-1"],
    ["EX-4", "1", "01/03/2026", "E", "0302.11", "XB", "", "", "", "80", "700", "NEW-1"],
    ["BAD-NUM", "1", "01/03/2026", "E", "0302.11", "DE", "", "T3", "", "80", "abc", ""],
    ["BAD-DATE", "1", "31/02/2026", "I", "0302.11", "DE", "", "T3", "", "80", "10", ""],
    ["BAD-HS", "1", "01/03/2026", "I", "12.34", "DE", "", "T3", "", "80", "10", ""],
    ["BAD-HS2", "1", "01/03/2026", "I", "9999.99", "DE", "", "T3", "", "80", "10", ""],
    ["BAD-CTRY", "1", "01/03/2026", "I", "0302.11", "QQ", "", "T3", "", "80", "10", ""],
    ["EX-9", "1", "01/03/2026", "E", "0302.11", "UK", "", "T3", "", "80", "111", ""],
    ["QF-1", "1", "01/03/2026", "I", "0302.11", "DE", "", "T3", "", "80", "10", ""],
    ["QW-1", "1", "01/03/2026", "I", "0302.11", "DE", "", "T3", "", "80", "10", ""],
]
# xa, night N2 (arrives first): a newer version of EX-9
XA_N2 = [
    ["EX-9", "1", "2026-03-02", "E", "0302.11", "GB", "", "T3", "", "80", "222", ""],
]
# xa, night N3 (held feed)
XA_N3 = [
    ["EX-10", "1", "2026-03-03", "E", "0302.11", "DE", "", "T3", "", "80", "10", ""],
]
# xb, night N2
XB_N2 = [
    # decl_id, date, flow, tariff_line, partner, net_mass, mass_unit, value, currency, ref
    ["IM-1", "2026-03-02", "IM", "84713000", "XAA", "1.0005", "t", "10600", "USD", "BL001A"],
    ["IM-FB", "2026-03-04", "IM", "09011100", "XAA", "0.505", "t", "2000", "EUR", ""],
    ["IM-JPY", "2026-03-02", "IM", "03021100", "DEU", "100", "kg", "50000", "JPY", ""],
    ["IM-BADCUR", "2026-03-02", "IM", "03021100", "DEU", "100", "kg", "500", "XYZ", ""],
    ["IM-LB", "2026-03-02", "IM", "03021100", "DEU", "220.46226218", "lb", "1060", "USD", ""],
    ["IM-CONC", "2026-03-02", "IM", "85171200", "CHN", "10", "kg", "1060", "USD", ""],
]
RATES_N1 = [["2026-02-27", "EUR", "0.8"], ["2026-01-14", "EUR", "0.8"], ["2026-02-27", "GBP", "0.5"]]


def _create_raw(con: duckdb.DuckDBPyConnection, table: str, cols: list[str]) -> None:
    col_sql = ", ".join(f'"{c.replace(chr(34), chr(34) * 2)}" varchar' for c in cols)
    con.execute(
        f"create table raw.{table} ({col_sql}, _feed varchar, _night date, _source_file varchar, "
        "_source_line integer, _file_sha256 varchar, _arrived_at timestamp)"
    )


def _load(
    con,
    table: str,
    cols: list[str],
    feed: str,
    night: date,
    rows: list[list[str]],
    arrived: datetime,
    file_name: str | None = None,
) -> str:
    source_file = f"{feed}/{night.isoformat()}/{arrived:%Y%m%d%H%M%S}/{file_name or feed + '.csv'}"
    ncols = len(cols)
    for i, row in enumerate(rows, start=1):
        assert len(row) == ncols
        con.execute(
            f"insert into raw.{table} values ({', '.join(['?'] * (ncols + 6))})",
            [None if v == "" else v for v in row] + [feed, night, source_file, i, "sha", arrived],
        )
    con.execute(
        "insert into raw.landed_files (feed, night, source_file, sha256, bytes, rows_landed, rows_rejected, "
        "source_uri, arrived_at) values (?, ?, ?, 'sha-' || ?, 100, ?, 0, 'file://x', ?)",
        [feed, night, source_file, source_file, len(rows), arrived],
    )
    return source_file


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dbt")
    feeds = tmp / "feeds"
    feeds.mkdir()
    (feeds / "xa.yaml").write_text(XA_SPEC)
    (feeds / "xb.yaml").write_text(XB_SPEC)
    (feeds / "exchange_rates.yaml").write_text(RATES_SPEC)
    project = tmp / "dbt_project"
    shutil.copytree(
        PROJECT, project, ignore=shutil.ignore_patterns("target", "logs", "dbt_packages", "*.duckdb")
    )
    # The tests bring their own tiny product lists; the repo's generated staging is replaced.
    (project / "seeds" / "hs_products.csv").write_text(HS_PRODUCTS)
    (project / "seeds" / "hs_concordance.csv").write_text(HS_CONCORDANCE)
    generate(feeds, project)

    settings = Settings(data_dir=tmp / "data", feeds_dir=feeds, dbt_project_dir=project).resolve()
    settings.warehouse.parent.mkdir(parents=True)
    con = duckdb.connect(str(settings.warehouse))
    ensure_schema(con)
    _create_raw(con, "xa__declarations", XA_COLS)
    _create_raw(con, "xb__declarations", XB_COLS)
    _create_raw(con, "exchange_rates__rates", ["date", "ccy", "units_per_usd"])
    # N2 lands before N1 (a late backfill): load order must not decide the version.
    _load(con, "xa__declarations", XA_COLS, "xa", N2, XA_N2, datetime(2026, 3, 3, 1))
    xa_n1 = _load(con, "xa__declarations", XA_COLS, "xa", N1, XA_N1, datetime(2026, 3, 3, 5))
    _load(con, "xa__declarations", XA_COLS, "xa", N3, XA_N3, datetime(2026, 3, 4, 1))
    _load(con, "xb__declarations", XB_COLS, "xb", N2, XB_N2, datetime(2026, 3, 3, 1))
    _load(
        con,
        "exchange_rates__rates",
        ["date", "ccy", "units_per_usd"],
        "exchange_rates",
        N1,
        RATES_N1,
        datetime(2026, 3, 2, 1),
    )
    con.execute(
        "insert into raw.parse_rejects values ('xa', ?, ?, 99, 'wrong_field_count', "
        "'line 99 has 3 fields, the header 12', 'a;b;c')",
        [N1, xa_n1],
    )
    con.execute(
        "insert into ops.feed_holds values ('xa', ?, 'volume_drop', 'rows fell by 90%', ?, null)",
        [N3, datetime(2026, 3, 4, 2)],
    )
    # Raw-stage row failures of a critical (QF-1, line 11) and a warning (QW-1, line 12) expectation:
    # both quarantine their row (a warning only does not hold the feed).
    con.execute(
        "insert into ops.quality_row_failures values "
        "('xa', ?, ?, 11, 'quality', 'customs_value_in_range', 'out_of_range', 'customs_value 10 below 50', 'critical'),"
        "('xa', ?, ?, 12, 'quality', 'trader_name_present', 'missing_value', 'trader_name is empty', 'warning')",
        [N1, xa_n1, N1, xa_n1],
    )
    con.close()

    harmonise(settings)
    build_marts(settings)
    first = _snapshot(settings)

    # The JPY rate arrives the next night: the held row is released.
    con = duckdb.connect(str(settings.warehouse))
    _load(
        con,
        "exchange_rates__rates",
        ["date", "ccy", "units_per_usd"],
        "exchange_rates",
        N3,
        [["2026-03-02", "JPY", "150"]],
        datetime(2026, 3, 4, 1),
    )
    con.close()
    harmonise(settings)
    build_marts(settings)
    second = _snapshot(settings)
    return {"settings": settings, "first": first, "second": second, "xa_n1": xa_n1, "project": project}


def _assert_unlocked(path: Path) -> None:
    """After run_dbt (in-process), another process and a read-only connection can open the file."""
    code = f"import duckdb; duckdb.connect({str(path)!r}).close()"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-500:]
    duckdb.connect(str(path), read_only=True).close()


def _snapshot(settings: Settings) -> dict[str, list[dict]]:
    _assert_unlocked(settings.warehouse)
    # The same process opens the warehouse read-write right after dbt.
    con = duckdb.connect(str(settings.warehouse))
    try:
        out = {}
        for t in (
            "fct_declarations",
            "fct_declaration_history",
            "fct_quarantine",
            "fct_held_rows",
            "fct_consignment_matches",
            "dim_countries",
            "dim_traders",
            "dim_hs_products",
        ):
            cur = con.execute(f"select * from marts.{t}")
            names = [d[0] for d in cur.description]
            out[t] = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        cur = con.execute(_CONSERVATION_SQL)
        out["conservation"] = cur.fetchall()
        return out
    finally:
        con.close()


_CONSERVATION_SQL = """
with landed as (
    select _feed as feed, _night as night, _source_file as source_file, _source_line as source_line
    from raw.xa__declarations
    union all
    select _feed, _night, _source_file, _source_line from raw.xb__declarations
    union
    select feed, night, source_file, source_line from raw.parse_rejects
),
inn as (select feed, night, count(*) as n from landed group by all),
outs as (
    select feed, night, count(*) as n from (
        select feed, night from marts.fct_declarations
        union all select feed, night from marts.fct_declaration_history
        union all select feed, night from marts.fct_quarantine
        union all select feed, night from marts.fct_held_rows
    ) group by all
)
select coalesce(inn.feed, outs.feed), coalesce(inn.night, outs.night), inn.n, outs.n
from inn full join outs using (feed, night)
order by 1, 2
"""


def _by(rows, key, value):
    return [r for r in rows if r[key] == value]


def _decl(snap, declaration_id):
    return [r for r in snap["fct_declarations"] if r["declaration_id"] == declaration_id]


def test_conservation_per_feed_and_night(built):
    for snap in (built["first"], built["second"]):
        assert snap["conservation"], "no rows at all"
        for feed, night, n_in, n_out in snap["conservation"]:
            assert n_in == n_out, f"{feed} {night}: landed {n_in} != marts {n_out}"


def test_later_night_wins_regardless_of_load_order(built):
    snap = built["first"]
    ex9 = _decl(snap, "EX-9")
    assert len(ex9) == 1
    assert ex9[0]["night"] == N2 and ex9[0]["customs_value_original"] == 222
    assert ex9[0]["partner_country"] == "GB"
    hist = [r for r in snap["fct_declaration_history"] if r["declaration_id"] == "EX-9"]
    assert len(hist) == 1
    assert hist[0]["night"] == N1 and hist[0]["replaced_by_night"] == N2
    # UK mapped to GB through value_maps.country
    assert hist[0]["partner_country"] == "GB"
    keys = [r["declaration_key"] for r in snap["fct_declarations"]]
    assert len(keys) == len(set(keys))


def test_rate_missing_held_then_released(built):
    first, second = built["first"], built["second"]
    held = [r for r in first["fct_held_rows"] if r["hold_reason_code"] == "rate_missing"]
    assert len(held) == 1 and held[0]["feed"] == "xb"
    assert "JPY" in held[0]["hold_reason"]
    assert not _decl(first, "IM-JPY")
    assert not [r for r in second["fct_held_rows"] if r["hold_reason_code"] == "rate_missing"]
    jpy = _decl(second, "IM-JPY")
    assert len(jpy) == 1
    assert jpy[0]["fx_usd_per_unit"] == pytest.approx(1 / 150)
    assert jpy[0]["customs_value_usd"] == pytest.approx(50000 / 150)
    assert jpy[0]["night"] == N2


def test_feed_hold_keeps_rows(built):
    held = [r for r in built["second"]["fct_held_rows"] if r["hold_reason_code"] == "feed_held"]
    assert [(r["feed"], r["night"]) for r in held] == [("xa", N3)]
    assert "volume_drop" in held[0]["hold_reason"]
    assert not _decl(built["second"], "EX-10")


def _quarantine(snap, declaration_id):
    rows = [r for r in snap["fct_quarantine"] if r["declaration_id"] == declaration_id]
    assert len(rows) == 1, (declaration_id, snap["fct_quarantine"])
    return rows[0]


@pytest.mark.parametrize(
    ("declaration_id", "stage", "code", "words"),
    [
        (
            "BAD-NUM",
            "harmonise",
            "unparseable_number",
            "customs_value 'abc' is not a number with decimal ','",
        ),
        ("BAD-DATE", "harmonise", "unparseable_date", "declaration_date '31/02/2026' is not a date"),
        ("BAD-HS", "harmonise", "invalid_hs_code", "hs_code '12.34'"),
        ("BAD-HS2", "harmonise", "unknown_hs_code", "hs_code '9999.99'"),
        ("BAD-CTRY", "harmonise", "unknown_country", "partner_country 'QQ' is not a known alpha2"),
        ("IM-BADCUR", "harmonise", "unknown_currency", "currency 'XYZ'"),
        ("QF-1", "quality", "out_of_range", "customs_value 10 below 50"),
        ("QW-1", "quality", "missing_value", "trader_name_present: trader_name is empty"),
    ],
)
def test_quarantine_reasons(built, declaration_id, stage, code, words):
    row = _quarantine(built["second"], declaration_id)
    assert row["stage"] == stage
    assert row["reason_code"] == code
    assert words in row["reason"]
    assert row["raw_values"] is not None


def test_parse_rejects_and_warnings(built):
    snap = built["second"]
    parse = [r for r in snap["fct_quarantine"] if r["stage"] == "parse"]
    assert (
        len(parse) == 1 and parse[0]["source_line"] == 99 and parse[0]["reason_code"] == "wrong_field_count"
    )
    # A row failing a warning expectation is quarantined too, not harmonised.
    assert _decl(snap, "QW-1") == []
    keys = [(r["feed"], r["night"], r["source_file"], r["source_line"]) for r in snap["fct_quarantine"]]
    assert len(keys) == len(set(keys))


def test_conversions(built):
    snap = built["second"]
    ex1 = _decl(snap, "EX-1")[0]
    assert ex1["declaration_key"] == "XA|EX-1|1"
    assert ex1["net_mass_kg"] == pytest.approx(1000.5)
    assert ex1["customs_value_usd"] == pytest.approx(10000 / 0.8)
    assert ex1["fx_rate_date"] == date(2026, 2, 27)
    assert ex1["statistical_value_usd"] == pytest.approx(10000 / 0.8)  # export: FOB
    assert ex1["consignment_ref_norm"] == "BL001A"
    assert ex1["hs6"] == "847130" and ex1["hs4"] == "8471" and ex1["hs2"] == "84"
    assert ex1["origin_country"] == "CN"
    assert ex1["raw_values"] is not None and "Ref's" in str(ex1["raw_values"])
    im1 = _decl(snap, "IM-1")[0]
    assert im1["declaration_key"] == "XB|IM-1|1"  # no item numbers in xb: item 1
    assert im1["partner_country"] == "XA"  # alpha-3 XAA
    assert im1["origin_country"] == "ZZ"
    assert im1["trader_id"] == "__unknown__"
    assert im1["net_mass_kg"] == pytest.approx(1000.5)
    assert im1["valuation_basis"] == "CIF"
    assert im1["statistical_value_usd"] == pytest.approx(10000)
    assert im1["unit_value_usd_per_kg"] == pytest.approx(10000 / 1000.5)
    lb = _decl(snap, "IM-LB")[0]
    assert lb["net_mass_kg"] == pytest.approx(100, rel=1e-6)
    conc = _decl(snap, "IM-CONC")[0]
    assert conc["hs_edition"] == "HS2017" and conc["hs_code_declared"] == "85171200"
    assert conc["hs6"] == "851713"


def test_consignment_matches(built):
    matches = {r["export_key"]: r for r in built["second"]["fct_consignment_matches"]}
    ref = matches["XA|EX-1|1"]
    assert ref["status"] == "matched" and ref["match_method"] == "reference"
    assert ref["import_key"] == "XB|IM-1|1"
    assert ref["exporter_country"] == "XA" and ref["importer_country"] == "XB"
    assert ref["hs_mismatch"] is False
    assert ref["mass_ratio"] == pytest.approx(1.0)
    assert ref["value_ratio"] == pytest.approx(10000 / 12500)
    assert ref["transit_days"] == 1
    fb = matches["XA|EX-2|1"]
    assert fb["status"] == "matched" and fb["match_method"] == "fallback"
    assert fb["import_key"] == "XB|IM-FB|1" and fb["transit_days"] == 3
    assert matches["XA|EX-3|1"]["status"] == "orphan"
    assert matches["XA|EX-4|1"]["status"] == "pending"
    assert matches["XA|EX-4|1"]["import_key"] is None
    # EX-9 goes to GB, not a member: not in the matching.
    assert "XA|EX-9|1" not in matches


def test_dimensions_have_unknown_members(built):
    snap = built["second"]
    assert any(r["country_code"] == "ZZ" for r in snap["dim_countries"])
    assert any(r["hs6"] == "000000" for r in snap["dim_hs_products"])
    assert any(r["trader_key"] == "XA|__unknown__" for r in snap["dim_traders"])
    members = [r for r in snap["dim_countries"] if r["is_member"]]
    assert {r["country_code"] for r in members} == {f"X{c}" for c in "ABCDEFG"}
    assert "Xanadia (synthetic)" in {r["name"] for r in members}


def test_generated_files_are_deterministic_and_fresh(built, tmp_path):
    settings = built["settings"]
    assert check_stale(settings.feeds_dir, built["project"]) == []
    # A spec change makes the files stale until codegen runs again.
    spec = settings.feeds_dir / "xb.yaml"
    original = spec.read_text()
    try:
        spec.write_text(original.replace("hs_edition: HS2017", "hs_edition: HS2022"))
        stale = check_stale(settings.feeds_dir, built["project"])
        assert any("stg_xb__declarations.sql" in s for s in stale)
    finally:
        spec.write_text(original)
    assert check_stale(settings.feeds_dir, built["project"]) == []


def test_dbt_error_names_the_failing_node(built):
    # A var that breaks the SQL of one model: the error names the model and dbt's message.
    with pytest.raises(DbtRunError) as err:
        run_dbt(
            ["run", "--select", "int_declarations_converted", "--vars", '{"target_hs_edition": "HS2022\'x"}'],
            built["settings"],
        )
    assert "model.tradesentry.int_declarations_converted" in str(err.value)
    with pytest.raises(DbtRunError) as err:
        run_dbt(
            ["run", "--select", "int_declarations_converted", "--vars", '{"target_hs_edition": "HS2022\'x"}'],
            built["settings"],
            in_process=False,  # the child-process mode gives the same error
        )
    assert "model.tradesentry.int_declarations_converted" in str(err.value)
    with pytest.raises(DbtRunError) as err:
        run_dbt(
            ["run", "--select", "int_declarations_converted", "--vars", '{"target_hs_edition": "HS2022\'x"}'],
            built["settings"],
            write_json=False,  # as the nightly builds: the failures come from dbt's in-memory result
        )
    assert "model.tradesentry.int_declarations_converted" in str(err.value)
    assert err.value.failures[0][0] == "model.tradesentry.int_declarations_converted"
    _assert_unlocked(built["settings"].warehouse)
    assert err.value.failures and err.value.failures[0][1] == "error"
    # A failed model leaves the previous table in place and the warehouse unlocked.
    con = duckdb.connect(str(built["settings"].warehouse))
    try:
        assert con.execute("select count(*) from intermediate.int_declarations_converted").fetchone()[0] > 0
    finally:
        con.close()


def test_repo_generated_files_not_stale():
    feeds = REPO_ROOT / "feeds"
    if not any(p.suffix == ".yaml" and not p.name.startswith("_") for p in feeds.glob("*.yaml")):
        pytest.skip("feeds/ has no specs yet")
    assert check_stale(feeds, PROJECT) == []


@pytest.fixture(scope="module")
def unit_test_result(built):
    return run_dbt(["test", "--select", "test_type:unit"], built["settings"])


def test_dbt_unit_tests(unit_test_result):
    passed = unit_test_result.nodes("pass")
    assert len(passed) >= 4, unit_test_result.stdout[-3000:]
    assert not unit_test_result.nodes("fail")


# --- Incremental builds against a full refresh ----------------------------------------------------

N4 = date(2026, 3, 4)
XB_N4 = [
    # the import side of EX-2 (reference BL-002) arrives two nights later
    ["IM-2", "2026-03-03", "IM", "09011100", "XAA", "0.5", "t", "2100", "EUR", "bl 002"],
    ["IM-4", "2026-03-04", "IM", "03021100", "XAA", "80", "kg", "700", "USD", ""],
]


def _copy_settings(settings: Settings, tmp: Path) -> Settings:
    """The same feeds and dbt project on a copy of the warehouse (its own dbt target and logs)."""
    copy = Settings(data_dir=tmp / "data", feeds_dir=settings.feeds_dir, dbt_project_dir=settings.dbt_project_dir)
    copy = copy.resolve()
    copy.warehouse.parent.mkdir(parents=True)
    shutil.copyfile(settings.warehouse, copy.warehouse)
    return copy


def _sorted_rows(snap: dict[str, list[dict]]) -> dict[str, list[tuple]]:
    def row(r: dict | tuple) -> tuple:
        return tuple(sorted(r.items())) if isinstance(r, dict) else tuple(r)

    return {t: sorted((row(r) for r in rows), key=repr) for t, rows in snap.items()}


def test_nightly_builds_keep_the_parsed_project(built, tmp_path):
    """The nightly harmonise and marts builds alternate as-of nights without re-parsing the project:
    the as-of night is read only when models execute, so dbt's partial-parse file stays valid; and
    they skip dbt's JSON artifacts but still report every node."""
    settings = _copy_settings(built["settings"], tmp_path)
    log = settings.logs / "dbt" / "dbt.log"
    harmonise(settings)  # the copy's first invocation parses (its own target directory)
    before = log.read_text(encoding="utf-8")
    manifest = settings.data_dir / "dbt" / "target" / "manifest.json"
    manifest_mtime = manifest.stat().st_mtime_ns if manifest.exists() else None
    marts = build_marts(settings, vars={"as_of_night": N3.isoformat()})
    again = harmonise(settings)
    build_marts(settings, vars={"as_of_night": N4.isoformat()})
    appended = log.read_text(encoding="utf-8")[len(before) :]
    assert appended.count("no changes found, skipping parsing") == 3, appended[-3000:]
    assert "Partial parsing: updated file" not in appended
    assert (manifest.stat().st_mtime_ns if manifest.exists() else None) == manifest_mtime
    assert "model.tradesentry.fct_declarations" in marts.nodes("success")
    assert "model.tradesentry.int_declarations_converted" in again.nodes("success")
    # The as-of night still reaches the SQL that ran (the last build's).
    compiled = settings.data_dir / "dbt" / "target" / "compiled" / "tradesentry" / "models" / "marts"
    assert f"cast('{N4.isoformat()}' as date)" in (compiled / "fct_consignment_matches.sql").read_text()


@pytest.fixture(scope="module")
def incremental_then_refreshed(built, tmp_path_factory):
    """Three more changes on a copy of the built warehouse, built incrementally; then the same
    warehouse rebuilt with --full-refresh."""
    settings = _copy_settings(built["settings"], tmp_path_factory.mktemp("incremental"))
    con = duckdb.connect(str(settings.warehouse))
    try:
        # 1. the hold on xa N3 is lifted: EX-10 is harmonised
        con.execute("update ops.feed_holds set lifted_at = ? where feed = 'xa'", [datetime(2026, 3, 5, 1)])
        # 2. a late critical failure on EX-9's newest version (xa N2, line 1): N1's version is current again
        n2_file = con.execute(
            "select source_file from raw.landed_files where feed = 'xa' and night = ?", [N2]
        ).fetchone()[0]
        con.execute(
            "insert into ops.quality_row_failures values "
            "('xa', ?, ?, 1, 'quality', 'partner_country_member', 'out_of_range', 'late check', 'critical')",
            [N2, n2_file],
        )
        # 3. a new night: the import of EX-2's consignment and a fallback import
        _load(con, "xb__declarations", XB_COLS, "xb", N4, XB_N4, datetime(2026, 3, 5, 1))
    finally:
        con.close()
    harmonise(settings)
    build_marts(settings, vars={"as_of_night": N4.isoformat()})
    incremental = _snapshot(settings)
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        dirty = [r[0] for r in con.execute("select night from marts.mart_dirty_nights order by 1").fetchall()]

    refreshed_settings = _copy_settings(settings, tmp_path_factory.mktemp("refreshed"))
    args = [
        "build", "--full-refresh", "--exclude-resource-type", "unit_test",
        "--vars", json.dumps({"as_of_night": N4.isoformat()}),
    ]  # fmt: skip
    run_dbt(args, refreshed_settings)
    return {"incremental": incremental, "refreshed": _snapshot(refreshed_settings), "dirty": dirty}


def test_incremental_marts_follow_the_changes(incremental_then_refreshed):
    # N1 did not change: its rows were left as they were.
    assert incremental_then_refreshed["dirty"] == [N2, N3, N4]
    snap = incremental_then_refreshed["incremental"]
    assert [r["night"] for r in _decl(snap, "EX-10")] == [N3]
    assert not [r for r in snap["fct_held_rows"] if r["hold_reason_code"] == "feed_held"]
    ex9 = _decl(snap, "EX-9")
    assert [(r["night"], r["customs_value_original"]) for r in ex9] == [(N1, 111)]
    assert not [r for r in snap["fct_declaration_history"] if r["declaration_id"] == "EX-9"]
    assert _quarantine(snap, "EX-9")["reason"] == "partner_country_member: late check"
    ex2 = [r for r in snap["fct_consignment_matches"] if r["export_key"] == "XA|EX-2|1"]
    assert [(r["import_key"], r["match_method"], r["status"]) for r in ex2] == [("XB|IM-2|1", "reference", "matched")]
    for feed, night, n_in, n_out in snap["conservation"]:
        assert n_in == n_out, f"{feed} {night}: landed {n_in} != marts {n_out}"


def test_incremental_marts_equal_a_full_refresh(incremental_then_refreshed):
    incremental = _sorted_rows(incremental_then_refreshed["incremental"])
    refreshed = _sorted_rows(incremental_then_refreshed["refreshed"])
    assert incremental.keys() == refreshed.keys()
    for table in incremental:
        assert incremental[table] == refreshed[table], table
