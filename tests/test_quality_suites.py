"""Suite generation from feed specs, hand-written additions, drift messages (no GX start-up)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from test_quality_fixtures import spec

from tradesentry.quality.dialect import render
from tradesentry.quality.drift import closest_column, detect_drift
from tradesentry.quality.suites import (
    date_regex,
    generate_suites,
    harmonised_path,
    load_suite,
    raw_path,
    raw_suite,
    stale_suites,
)
from tradesentry.settings import REPO_ROOT


def _by_name(suite: dict) -> dict[str, dict]:
    return {e["meta"]["name"]: e for e in suite["expectations"]}


def test_generated_suite_covers_the_spec() -> None:
    s = spec("xa_test", quality={"severity": {"hs_code_format": "critical"}, "max_customs_value": 5e6})
    e = _by_name(raw_suite(s))
    assert e["row_count_positive"]["severity"] == "critical"
    assert e["column_present__hs_code"]["kwargs"] == {"column": "HS_CODE"}
    assert e["column_present__hs_code"]["meta"]["severity"] == "critical"
    assert e["not_null__net_mass"]["severity"] == "warning"
    assert e["flow_allowed"]["kwargs"]["value_set"] == ["E", "I"]
    # severity override by expectation name
    assert e["hs_code_format"]["severity"] == e["hs_code_format"]["meta"]["severity"] == "critical"
    # the portable spelling (dialect.py), rendered as DuckDB's regexp_full_match on DuckDB
    assert "NOT ts_full_match(trim(\"HS_CODE\"), " in e["hs_code_format"]["kwargs"]["unexpected_rows_query"]
    assert "NOT regexp_full_match(trim(\"HS_CODE\"), " in render(
        e["hs_code_format"]["kwargs"]["unexpected_rows_query"], "duckdb"
    )
    assert "[0-9]{{6}}" in e["hs_code_format"]["kwargs"]["unexpected_rows_query"]  # braces escaped for GX
    assert (
        "replace(trim(\"VALUE\"), ',', '.')" in e["customs_value_numeric"]["kwargs"]["unexpected_rows_query"]
    )
    assert "5000000.0" in e["customs_value_range"]["kwargs"]["unexpected_rows_query"]
    assert "partner_country_format" in e and "origin_country_format" not in e
    for x in e.values():
        assert x["meta"]["level"] in ("structural", "row") and x["meta"]["reason_code"]


def test_hs_and_country_formats_follow_conventions() -> None:
    s = spec(
        "xb_test",
        conventions={"hs_format": "dotted", "country_code": "alpha3"},
        value_maps={"country": {"999": "ZZ"}},
    )
    e = _by_name(raw_suite(s))
    assert "[0-9]{{4}}\\.[0-9]{{2}}" in e["hs_code_format"]["kwargs"]["unexpected_rows_query"]
    q = e["partner_country_format"]["kwargs"]["unexpected_rows_query"]
    assert "[A-Z]{{3}}" in q and "NOT IN ('999')" in q


def test_date_regex() -> None:
    r = date_regex("%d/%m/%Y")
    assert re.fullmatch(r, "20/11/2026") and not re.fullmatch(r, "2026-11-20")
    assert re.fullmatch(date_regex("%Y%m%d"), "20261120")


def test_generation_is_idempotent_and_stale_is_detected(tmp_path: Path) -> None:
    feeds = [spec("xa_test"), spec("xb_test", "XB")]
    paths = generate_suites(feeds, tmp_path)
    assert raw_path(tmp_path, "xa_test") in paths and harmonised_path(tmp_path) in paths
    text = {p: p.read_text() for p in paths}
    mtimes = {p: p.stat().st_mtime_ns for p in paths}
    assert generate_suites(feeds, tmp_path) == paths
    assert {p: p.read_text() for p in paths} == text
    assert {p: p.stat().st_mtime_ns for p in paths} == mtimes  # unchanged files are not rewritten
    assert stale_suites(feeds, tmp_path) == []
    data = json.loads(raw_path(tmp_path, "xa_test").read_text())
    assert list(data) == sorted(data)  # sorted keys
    assert "id" not in data and all("id" not in e for e in data["expectations"])

    changed = [spec("xa_test", quality={"max_net_mass": 10.0}), spec("xb_test", "XB")]
    assert stale_suites(changed, tmp_path) == ["raw/xa_test.json"]
    assert stale_suites(feeds[:1], tmp_path) == ["raw/xb_test.json"]  # a feed that no longer exists


def test_custom_expectations_are_merged(tmp_path: Path) -> None:
    generate_suites([spec("xa_test")], tmp_path)
    p = raw_path(tmp_path, "xa_test")
    p.with_name("xa_test.custom.json").write_text(
        json.dumps(
            {
                "expectations": [
                    {
                        "type": "expect_column_values_to_not_be_null",
                        "kwargs": {"column": "PARTNER"},
                        "meta": {"name": "not_null__partner_country", "reason": "partner needed"},
                        "severity": "critical",
                    },
                    {
                        "type": "expect_table_row_count_to_be_between",
                        "kwargs": {"max_value": 10**6},
                        "meta": {"name": "row_count_sane"},
                    },
                ]
            }
        )
    )
    merged = load_suite(p)
    e = _by_name(merged)
    assert e["not_null__partner_country"]["meta"]["reason"] == "partner needed"  # replaced
    assert e["not_null__partner_country"]["severity"] == "critical"
    assert merged["expectations"][-1]["meta"]["name"] == "row_count_sane"  # appended last
    assert e["row_count_sane"]["meta"]["level"] == "structural"
    assert len(merged["expectations"]) == len(raw_suite(spec("xa_test"))["expectations"]) + 1


def test_drift_names_the_closest_column() -> None:
    s = spec("xa_test")
    cols = [c if c != "HS_CODE" else "HS_CODES" for c in s.columns.values()]
    f = detect_drift(s, cols)
    assert [(d.kind, d.column, d.closest) for d in f] == [("renamed_column", "HS_CODE", "HS_CODES")]
    assert f[0].message == "column 'HS_CODE' is missing; the file has 'HS_CODES' (closest match)"
    f = detect_drift(s, [c for c in s.columns.values() if c != "VALUE"] + ["COMMENTS"])
    kinds = sorted((d.kind, d.column) for d in f)
    assert kinds == [("missing_column", "VALUE"), ("new_column", "COMMENTS")]
    # an unmapped column the previous file had is not new
    assert detect_drift(s, [*s.columns.values(), "COMMENTS"], previous_columns=["COMMENTS"]) == []
    assert closest_column("mass_kg", ["MASS_KG", "VALUE"]) == "MASS_KG"
    assert closest_column("zzz", ["MASS_KG"]) is None


FEEDS_DIR = REPO_ROOT / "feeds"


@pytest.mark.skipif(
    not any(p for p in FEEDS_DIR.glob("*.yaml") if not p.name.startswith("_")),
    reason="feeds/*.yaml not written yet",
)
def test_committed_suites_are_regenerated() -> None:
    from tradesentry.feeds.loader import load_feeds

    specs = load_feeds(FEEDS_DIR)
    stale = stale_suites(specs, REPO_ROOT / "expectations")
    assert stale == [], f"run generate_suites and commit: {stale}"
