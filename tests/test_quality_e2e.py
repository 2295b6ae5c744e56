"""Issue 4's acceptance through the real pipeline: broken batches in one backfill.

`backfill` (the stages the DAG runs: pull, raw load, raw Great Expectations gate, dbt harmonise,
harmonised gate, dbt marts, detection, publish, summary) over four nights of the seven sample feeds,
real dbt, real GX, real DuckDB. The first three nights are clean; on the last night every feed carries
a different defect:

- xa: row-level defects on known lines (bad HS code format, negative value, mass out of range,
  disallowed flow, unparseable number, impossible date, a line with too few fields) -> those rows
  quarantined, each with its stage and reason; the feed goes on
- xb: a required column missing (Eigenmasse) and one renamed (Tarifnummer -> Tarifnr) -> held, the
  closest column named
- xc: a file with a header and no rows -> held
- xd: half of the values unparseable, more than the share allowed -> held
- xe: a new column (schema_contract stop) -> held
- xf: volume far below the trailing median, and the file delivered late -> warnings, the feed goes on
- xg: no file for the night -> failed pull, the others go on

Every file is pulled days after its night (a backfill): only xf's must be reported late.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tradesentry.feeds.spec import FeedSpec
from tradesentry.settings import Settings, get_settings

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
FIRST = date(2026, 11, 20)
NIGHTS = 4  # three clean nights: the volume check's trailing median needs three
LAST = FIRST + timedelta(days=NIGHTS - 1)
FEEDS = ["xa", "xb", "xc", "xd", "xe", "xf", "xg"]
HELD = {"xb", "xc", "xd", "xe"}
XF_KEPT = 3
# expected_by_hour 27 (feeds/_defaults.yaml): due 03:00 UTC the morning after the night.
ON_TIME = datetime(LAST.year, LAST.month, LAST.day, tzinfo=UTC) + timedelta(hours=25)
LATE = datetime(LAST.year, LAST.month, LAST.day, tzinfo=UTC) + timedelta(hours=33, minutes=30)

# xa's broken lines (1-based, header excluded): line -> (column, bad value, or None: cut the line
# short), stage, reason_code, words in the reason.
XA_DEFECTS: dict[int, tuple[str | None, str | None, str, str, list[str]]] = {
    3: ("hs_code", "84A130", "quality", "bad_hs_code",
        ["hs_code_format: column 'hs_code' has '84A130': not a 6-digit HS code"]),
    5: ("value_eur", "-250.00", "quality", "out_of_range",
        ["customs_value_range: column 'value_eur' has '-250.00': outside the range 0 to 1e+10"]),
    7: ("net_mass_kg", "2000000000", "quality", "out_of_range",
        ["net_mass_range: column 'net_mass_kg' has '2000000000': outside the range 0 to 1e+09"]),
    9: ("flow", "transit", "quality", "bad_flow",
        ["flow_allowed: column 'flow' has 'transit': not one of the feed's flow codes export, import"]),
    11: ("value_eur", "12,5O", "quality", "not_numeric",
         ["customs_value_numeric: column 'value_eur' has '12,5O': not a number (decimal '.')"]),
    13: ("decl_date", "2026-13-45", "harmonise", "unparseable_date",
         ["declaration_date '2026-13-45' is not a date in the format '%Y-%m-%d'"]),
    15: (None, None, "parse", "unparseable_line",
         ["line 15 of xa/", "could not be split into the header's 17 columns"]),
}  # fmt: skip


# ------------------------------------------------------------------------------------ the broken night


def _delim(spec: FeedSpec) -> str:
    d = spec.format.delimiter
    return "\t" if d in ("\\t", "tab") else d


def _read(path: Path, spec: FeedSpec) -> list[list[str]]:
    text = path.read_bytes().decode(spec.format.encoding)
    return list(csv.reader(io.StringIO(text), delimiter=_delim(spec), quotechar='"'))


def _write(path: Path, spec: FeedSpec, rows: list[list[str]], delivered: datetime = ON_TIME) -> None:
    buf = io.StringIO()
    csv.writer(buf, delimiter=_delim(spec), quotechar='"', lineterminator="\n").writerows(rows)
    path.write_bytes(buf.getvalue().encode(spec.format.encoding))
    os.utime(path, (delivered.timestamp(), delivered.timestamp()))


def _last_file(settings: Settings, feed: str) -> Path:
    return next((settings.samples / feed).glob(f"*{LAST:%Y%m%d}*"))


def _break_last_night(settings: Settings, specs: dict[str, FeedSpec]) -> dict[str, Any]:
    """Write each feed's defect into its last-night sample file; returns what the test expects."""
    out: dict[str, Any] = {}

    spec = specs["xa"]
    path = _last_file(settings, "xa")
    rows = _read(path, spec)
    col = {c: i for i, c in enumerate(rows[0])}
    for line, (column, value, *_rest) in XA_DEFECTS.items():
        rows[line] = rows[line][:3] if column is None else [
            value if i == col[column] else v for i, v in enumerate(rows[line])
        ]
    _write(path, spec, rows)
    out["xa_rows"] = len(rows) - 1

    spec = specs["xb"]
    path = _last_file(settings, "xb")
    rows = _read(path, spec)
    drop = rows[0].index("Eigenmasse")
    rows = [[v for i, v in enumerate(r) if i != drop] for r in rows]
    rows[0] = ["Tarifnr" if c == "Tarifnummer" else c for c in rows[0]]
    _write(path, spec, rows)
    out["xb_rows"] = len(rows) - 1

    spec = specs["xc"]
    path = _last_file(settings, "xc")
    _write(path, spec, _read(path, spec)[:1])

    spec = specs["xd"]
    path = _last_file(settings, "xd")
    rows = _read(path, spec)
    value = rows[0].index("value_usd")
    bad = (len(rows) - 1) // 2
    for r in rows[1 : bad + 1]:
        r[value] = "n/a"
    _write(path, spec, rows)
    out["xd_rows"], out["xd_bad"] = len(rows) - 1, bad

    spec = specs["xe"]
    path = _last_file(settings, "xe")
    rows = _read(path, spec)
    _write(path, spec, [r + (["RiskScore"] if i == 0 else ["0"]) for i, r in enumerate(rows)])
    out["xe_rows"] = len(rows) - 1

    spec = specs["xf"]
    path = _last_file(settings, "xf")
    _write(path, spec, _read(path, spec)[: XF_KEPT + 1], delivered=LATE)

    path = _last_file(settings, "xg")
    out["xg_file"] = path
    path.unlink()
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from tradesentry.feeds.loader import load_feeds
    from tradesentry.pipeline.stages import backfill
    from tradesentry.pipeline.summary import format_summary, summary_path
    from tradesentry.samplegen import generate

    base = tmp_path_factory.mktemp("quality_e2e")
    ignore = shutil.ignore_patterns("target", "logs", "dbt_packages", "__pycache__")
    folders = {"feeds": "FEEDS_DIR", "dbt_project": "DBT_PROJECT_DIR", "expectations": "EXPECTATIONS_DIR"}
    with pytest.MonkeyPatch.context() as mp:
        for name, var in folders.items():
            shutil.copytree(REPO / name, base / name, ignore=ignore)
            mp.setenv(f"TRADESENTRY_{var}", str(base / name))
        mp.setenv("TRADESENTRY_DATA_DIR", str(base / "data"))
        settings = get_settings()
        generate(settings.samples, start=FIRST, nights=NIGHTS, seed=11, scale=0.2)
        specs = {s.feed: s for s in load_feeds(settings.feeds_dir)}
        expected = _break_last_night(settings, specs)
        returned = backfill(settings, FIRST, LAST)
        summary = json.loads(summary_path(settings, LAST).read_text())
        yield {
            "settings": settings,
            "expected": expected,
            "returned": returned,
            "summary": summary,
            "text": format_summary(summary),
        }


def _con(run: dict) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(run["settings"].warehouse), read_only=True)


def _landed_file(con: duckdb.DuckDBPyConnection, feed: str) -> str:
    return con.execute(
        "select source_file from raw.landed_files where feed = ? and night = ?", [feed, LAST]
    ).fetchone()[0]


# ------------------------------------------------------------------------------------ conservation


def test_every_landed_row_ends_in_exactly_one_place_with_a_reason(run: dict) -> None:
    """Every landed line (raw rows + parse rejects) of every feed and night is in exactly one of
    fct_declarations, fct_declaration_history, fct_quarantine, fct_held_rows; quarantined and held
    ones carry a reason."""
    with _con(run) as con:
        landed_sql = " union all ".join(
            f"select _feed, _night, _source_file, _source_line from raw.{feed}__declarations"
            for feed in FEEDS
            if con.execute(
                "select count(*) from information_schema.tables where table_schema = 'raw' and table_name = ?",
                [f"{feed}__declarations"],
            ).fetchone()[0]
        )
        rows = con.execute(
            f"""
            with landed as (
                {landed_sql}
                union all select feed, night, source_file, source_line from raw.parse_rejects
            ),
            placed as (
                select feed, night, source_file, source_line, 'declarations' as place, 'ok' as reason
                from marts.fct_declarations
                union all select feed, night, source_file, source_line, 'history', 'ok'
                from marts.fct_declaration_history
                union all select feed, night, source_file, source_line, 'quarantine', reason
                from marts.fct_quarantine
                union all select feed, night, source_file, source_line, 'held', hold_reason
                from marts.fct_held_rows
            )
            select l._feed, l._night, l._source_file, l._source_line,
                   count(p.place), min(p.place), min(coalesce(trim(p.reason), ''))
            from landed l
            left join placed p
              on p.feed = l._feed and p.source_file = l._source_file and p.source_line = l._source_line
            group by all
            """
        ).fetchall()
        placed_total = con.execute(
            "select (select count(*) from marts.fct_declarations) + (select count(*) from marts.fct_declaration_history)"
            " + (select count(*) from marts.fct_quarantine) + (select count(*) from marts.fct_held_rows)"
        ).fetchone()[0]
    assert len(rows) > 4 * 100
    lost = [r for r in rows if r[4] != 1]
    assert lost == [], f"rows not placed exactly once: {lost[:5]}"
    without_reason = [r for r in rows if r[6] == ""]
    assert without_reason == []
    assert placed_total == len(rows), "a row in the marts that did not land"
    nights = {(r[0], r[1]) for r in rows}
    assert nights == {(f, FIRST + timedelta(days=k)) for f in FEEDS for k in range(NIGHTS)} - {
        ("xc", LAST),  # a file without rows
        ("xg", LAST),  # no file
    }


# ------------------------------------------------------------------------------------ the other feeds


def test_the_other_feeds_complete_harmonised_and_scored(run: dict) -> None:
    exp = run["expected"]
    with _con(run) as con:
        per_feed = dict(
            con.execute("select feed, count(*) from marts.fct_declarations where night = ? group by 1", [LAST]).fetchall()
        )
        assert per_feed == {"xa": exp["xa_rows"] - len(XA_DEFECTS), "xf": XF_KEPT}
        # Earlier nights: every feed harmonised, nothing held.
        earlier = dict(
            con.execute(
                "select feed, count(distinct night) from marts.fct_declarations where night < ? group by 1", [LAST]
            ).fetchall()
        )
        assert earlier == {f: NIGHTS - 1 for f in FEEDS}
        assert con.execute("select count(*) from marts.fct_held_rows where night < ?", [LAST]).fetchone()[0] == 0
        # Tonight's declarations of the feeds that went on are scored; held feeds' are not.
        unscored = con.execute(
            "select feed, count(*) from marts.fct_declarations d where night = ? and not exists ("
            "select 1 from detection.scores s where s.night = ? and s.declaration_key = d.declaration_key) group by 1",
            [LAST, LAST],
        ).fetchall()
        assert unscored == []
        held_keys = (
            "select 'XB|' || \"Anmeldung\" || '|' || \"Position\" from raw.xb__declarations where _night = $night "
            "union all select 'XD|' || entry_number || '|1' from raw.xd__declarations where _night = $night "
            "union all select 'XE|' || \"DeclarationRef\" || '|' || \"ItemNumber\" from raw.xe__declarations "
            "where _night = $night"
        )
        assert con.execute(f"select count(*) from ({held_keys})", {"night": LAST}).fetchone()[0] == sum(
            run["expected"][f"{f}_rows"] for f in ("xb", "xd", "xe")
        )
        held_scored = con.execute(
            f"select count(*) from detection.scores where night = $night and declaration_key in ({held_keys})",
            {"night": LAST},
        ).fetchone()[0]
        assert held_scored == 0, "a held feed's rows are not scored"
        scored = dict(
            con.execute(
                "select reporter_country, count(*) from detection.scores where night = ? group by 1", [LAST]
            ).fetchall()
        )
    assert scored.get("XA", 0) >= exp["xa_rows"] - len(XA_DEFECTS) and scored.get("XF", 0) >= XF_KEPT
    assert run["summary"]["declarations_scored"] > 0


# ------------------------------------------------------------------------------------ row level


def test_row_level_defects_are_quarantined_line_by_line(run: dict) -> None:
    with _con(run) as con:
        xa_file = _landed_file(con, "xa")
        rows = con.execute(
            "select source_file, source_line, stage, reason_code, reason, raw_values::varchar "
            "from marts.fct_quarantine where feed = 'xa' and night = ? order by source_line",
            [LAST],
        ).fetchall()
        earlier = con.execute("select count(*) from marts.fct_quarantine where night < ?", [LAST]).fetchone()[0]
        leaked = con.execute(
            "select source_line from marts.fct_declarations where feed = 'xa' and night = ? and source_line in "
            f"({', '.join(map(str, XA_DEFECTS))})",
            [LAST],
        ).fetchall()
    assert earlier == 0, "the clean nights quarantine nothing"
    assert leaked == []
    assert [(r[1], r[2], r[3]) for r in rows] == [(line, d[2], d[3]) for line, d in XA_DEFECTS.items()]
    for source_file, line, _stage, _code, reason, raw_values in rows:
        assert source_file == xa_file
        column, value, _s, _c, words = XA_DEFECTS[line]
        for w in words:
            assert w in reason, (line, reason)
        if column is not None:
            assert json.loads(raw_values)[column] == value  # the landed value, for the analyst
        else:
            assert json.loads(raw_values)["raw_line"].count(",") == 2  # the line as it came


def test_row_failures_are_in_the_quality_report_per_expectation(run: dict) -> None:
    q = run["summary"]["feeds"]["xa"]["quality"]
    failed = {e["name"]: (e["unexpected_count"], e["quarantined_rows"]) for e in q["expectations_failed"]}
    assert failed == {
        "hs_code_format": (1, 1),
        "customs_value_range": (1, 1),
        "net_mass_range": (1, 1),
        "flow_allowed": (1, 1),
        "customs_value_numeric": (1, 1),
    }
    assert q["status"] == "ok" and q["hold"] is None
    assert q["failing_share"] < 0.2  # below max_failing_share: quarantined, not held


# ------------------------------------------------------------------------------------ feed level


def test_critical_defects_hold_the_feed_and_keep_its_rows(run: dict) -> None:
    exp = run["expected"]
    with _con(run) as con:
        holds = {
            f: (code, reason)
            for f, code, reason in con.execute(
                "select feed, reason_code, reason from ops.feed_holds where lifted_at is null and night = ?", [LAST]
            ).fetchall()
        }
        other_holds = con.execute("select count(*) from ops.feed_holds where night <> ?", [LAST]).fetchone()[0]
        held = {
            f: (n, codes, reasons)
            for f, n, codes, reasons in con.execute(
                "select feed, count(*), list(distinct hold_reason_code), list(distinct hold_reason) "
                "from marts.fct_held_rows where night = ? group by 1",
                [LAST],
            ).fetchall()
        }
        placed_elsewhere = con.execute(
            "select count(*) from (select feed from marts.fct_declarations where night = ? "
            "union all select feed from marts.fct_quarantine where night = ?) where feed in ('xb', 'xc', 'xd', 'xe')",
            [LAST, LAST],
        ).fetchone()[0]
    assert other_holds == 0
    assert {f: h[0] for f, h in holds.items()} == {
        "xb": "renamed_column",
        "xc": "zero_rows",
        "xd": "too_many_failing_rows",
        "xe": "new_column",
    }
    assert holds["xb"][1] == (
        "column 'Tarifnummer' is missing; the file has 'Tarifnr' (closest match); "
        "column 'Eigenmasse' is missing; the file has no similar column"
    )
    assert holds["xc"][1] == "the night's file has no rows (observed 0)"
    n, bad = exp["xd_rows"], exp["xd_bad"]
    assert holds["xd"][1] == (
        f"{bad} of {n} rows ({bad / n:.0%}) fail row-level expectations, more than the 20% allowed"
    )
    assert holds["xe"][1] == "new column 'RiskScore' in the file; feed stopped (schema_contract: stop)"
    # The held feeds' rows are kept, held with the hold's reason; none is harmonised or quarantined.
    assert set(held) == {"xb", "xd", "xe"}
    for feed in ("xb", "xd", "xe"):
        count, codes, reasons = held[feed]
        assert count == exp[f"{feed}_rows"]
        assert codes == ["feed_held"]
        assert reasons == [f"feed held for this night: {holds[feed][0]}: {holds[feed][1]}"]
    assert placed_elsewhere == 0


def test_schema_drift_and_gx_agree_on_the_broken_columns(run: dict) -> None:
    feeds = run["summary"]["feeds"]
    xb = feeds["xb"]["quality"]
    assert [(d["kind"], d["column"], d["closest"]) for d in xb["drift"]] == [
        ("renamed_column", "Tarifnummer", "Tarifnr"),
        ("missing_column", "Eigenmasse", None),
    ]
    failed = {e["name"] for e in xb["expectations_failed"]}
    assert {"column_present__hs_code", "column_present__net_mass"} <= failed
    xe = feeds["xe"]["quality"]
    assert [(d["kind"], d["column"], d["severity"]) for d in xe["drift"]] == [("new_column", "RiskScore", "critical")]


# ------------------------------------------------------------------------------------ the summary


def test_summary_json_names_each_feed_and_its_defect(run: dict) -> None:
    exp = run["expected"]
    feeds = run["summary"]["feeds"]
    assert {f: e["status"] for f, e in feeds.items()} == {
        "xa": "ok",
        "xb": "held",
        "xc": "held",
        "xd": "held",
        "xe": "held",
        "xf": "ok",
        "xg": "failed",
    }
    xa = feeds["xa"]
    assert (xa["landed"], xa["harmonised"], xa["quarantined"], xa["held"]) == (
        exp["xa_rows"],
        exp["xa_rows"] - len(XA_DEFECTS),
        len(XA_DEFECTS),
        0,
    )
    assert xa["reasons"] == {
        "out_of_range": 2,
        "bad_flow": 1,
        "bad_hs_code": 1,
        "not_numeric": 1,
        "unparseable_date": 1,
        "unparseable_line": 1,
    }
    for feed in ("xb", "xd", "xe"):
        e = feeds[feed]
        assert e["held"] == e["landed"] == exp[f"{feed}_rows"] and e["harmonised"] == e["quarantined"] == 0
        assert e["held_reasons"] == {"feed_held": e["landed"]}
    assert "column 'Tarifnummer' is missing; the file has 'Tarifnr' (closest match)" in feeds["xb"]["error"]
    assert "column 'Eigenmasse' is missing" in feeds["xb"]["error"]
    assert feeds["xc"]["error"] == "the night's file has no rows (observed 0)"
    assert feeds["xc"]["quality"]["hold"]["reason_code"] == "zero_rows"
    assert "fail row-level expectations, more than the 20% allowed" in feeds["xd"]["error"]
    assert feeds["xd"]["quality"]["hold"]["reason_code"] == "too_many_failing_rows"
    assert "new column 'RiskScore'" in feeds["xe"]["error"]
    xg = feeds["xg"]
    assert exp["xg_file"].name in xg["error"] and "does not exist" in xg["error"]
    assert [f["kind"] for f in xg["quality"]["freshness"]] == ["missing_night"]
    assert xg["quality"]["status"] == "missing"
    assert run["returned"]["backfill"]["pull_failures"] == [xg["error"]]
    # Warnings of feeds that went on (and a volume drop of the empty file).
    warnings = {f: [(w["kind"], w["message"]) for w in e.get("warnings", [])] for f, e in feeds.items()}
    (vol, late) = warnings["xf"]
    assert vol[0] == "volume_drop" and vol[1].startswith(f"{XF_KEPT} rows tonight against a median of ")
    assert late == (
        "late_file",
        f"the file was last modified at the source at {LATE:%Y-%m-%d %H:%M} UTC, 6.5 h after it was expected "
        f"({LAST + timedelta(days=1)} 03:00 UTC, expected_by_hour 27)",
    )
    assert [k for k, _ in warnings["xc"]] == ["volume_drop"]
    assert {f: w for f, w in warnings.items() if f not in ("xf", "xc")} == {f: [] for f in FEEDS if f not in ("xf", "xc")}


def test_backfilled_nights_delivered_on_time_are_not_late(run: dict) -> None:
    """Every file was pulled days after its night; judged by its delivery, only xf's last is late."""
    from tradesentry.pipeline.runs import read_record

    settings = run["settings"]
    for k in range(NIGHTS):
        night = FIRST + timedelta(days=k)
        gate = read_record(settings, night, "validate-raw")
        assert gate is not None
        late = {f: [x["kind"] for x in q["freshness"]] for f, q in gate["feeds"].items() if q["freshness"]}
        if night < LAST:
            assert late == {}, night
            assert gate["held"] == [] and gate["missing"] == []
        else:
            assert late == {"xf": ["late_file"], "xg": ["missing_night"]}


def test_summary_text_names_each_feed_and_its_defect(run: dict) -> None:
    text = run["text"]
    attention = text.split("Feeds that need attention:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    by_feed: dict[str, list[str]] = {}
    for line in attention:
        head = line.strip().split(" ", 1)[0]
        if line.startswith("  ") and not line.startswith("   ") and head in FEEDS:
            current = head
        by_feed.setdefault(current, []).append(line.strip())
    assert sorted(by_feed) == FEEDS
    assert by_feed["xa"][0].startswith(
        f"xa (ok): {len(XA_DEFECTS)} rows quarantined (out_of_range 2, bad_flow 1, bad_hs_code 1, "
        "not_numeric 1, unparseable_date 1, unparseable_line 1)"
    )
    assert by_feed["xb"][0].startswith("xb (held): column 'Tarifnummer' is missing; the file has 'Tarifnr'")
    assert by_feed["xc"][0] == "xc (held): the night's file has no rows (observed 0)"
    assert by_feed["xd"][0].startswith("xd (held): ") and "more than the 20% allowed" in by_feed["xd"][0]
    assert by_feed["xe"][0] == "xe (held): new column 'RiskScore' in the file; feed stopped (schema_contract: stop)"
    assert by_feed["xf"][0].startswith(f"xf (ok): volume_drop: {XF_KEPT} rows tonight against a median of ")
    assert by_feed["xf"][1].startswith("late_file: the file was last modified at the source at ")
    assert by_feed["xg"][0].startswith("xg (failed): feed xg, night ") and "does not exist" in by_feed["xg"][0]
