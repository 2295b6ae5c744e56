"""Freshness judges when the source delivered a night's file, not when the pipeline pulled it: a
backfill pulls old nights days later, and those files are not late for that. No Great Expectations
here (the raw gate's preparation step only), so it runs in well under a second."""

from __future__ import annotations

from datetime import date, datetime

import duckdb
import pytest
from test_quality_fixtures import spec

from tradesentry.quality.gates import FeedQuality, _prepare_raw
from tradesentry.settings import Settings
from tradesentry.warehouse import ensure_schema
from tradesentry.warehouse_io import DuckDBReader

NIGHT = date(2026, 11, 20)  # expected_by_hour 6 (the fixtures' spec): due 2026-11-20 06:00 UTC
PULLED_DAYS_LATER = datetime(2026, 11, 28, 13, 0)


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    c = duckdb.connect()
    ensure_schema(c)
    return c


def _landed(con: duckdb.DuckDBPyConnection, name: str, arrived: datetime, modified: datetime | None) -> None:
    con.execute(
        "insert into raw.landed_files (feed, night, source_file, sha256, bytes, rows_landed, rows_rejected, "
        "source_uri, arrived_at, source_modified_at) values ('xa', ?, ?, 'sha', 10, 5, 0, 'file:///x', ?, ?)",
        [NIGHT, f"xa/{NIGHT}/{name}/xa.csv", arrived, modified],
    )


def _freshness(con: duckdb.DuckDBPyConnection, tmp_path) -> list:
    q = FeedQuality(feed="xa", country="XA", night=NIGHT)
    settings = Settings(data_dir=tmp_path).resolve()
    _prepare_raw(DuckDBReader(settings.warehouse, con), settings, NIGHT, spec("xa"), q)
    return q.freshness


def test_backfilled_file_delivered_on_time_is_not_late(con, tmp_path) -> None:
    _landed(con, "a", PULLED_DAYS_LATER, datetime(2026, 11, 20, 5, 10))
    assert _freshness(con, tmp_path) == []


def test_file_delivered_late_is_late_by_its_delivery_time(con, tmp_path) -> None:
    _landed(con, "a", PULLED_DAYS_LATER, datetime(2026, 11, 20, 9, 30))
    (f,) = _freshness(con, tmp_path)
    assert f.kind == "late_file" and f.severity == "warning"
    assert f.details["hours_late"] == 3.5  # from the delivery, not the pull 8 days later
    assert f.details["judged_by"] == "source_modified_at"
    assert f.message.startswith("the file was last modified at the source at 2026-11-20 09:30 UTC, 3.5 h after")


def test_a_resend_does_not_make_an_on_time_night_late(con, tmp_path) -> None:
    _landed(con, "a", datetime(2026, 11, 20, 5, 0), datetime(2026, 11, 20, 4, 50))
    _landed(con, "b", PULLED_DAYS_LATER, datetime(2026, 11, 27, 12, 0))
    assert _freshness(con, tmp_path) == []


def test_without_a_source_time_the_arrival_is_judged(con, tmp_path) -> None:
    """HTTP without Last-Modified, files landed before the column existed: the pull time is all
    there is, and the message says so."""
    _landed(con, "a", datetime(2026, 11, 20, 8, 0), None)
    (f,) = _freshness(con, tmp_path)
    assert f.details["judged_by"] == "arrived_at" and f.details["hours_late"] == 2.0
    assert "arrived (the source gives no modification time)" in f.message
