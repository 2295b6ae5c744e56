"""Hand-made feeds and raw tables for the quality tests (tiny data, no YAML needed)."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from tradesentry.feeds.spec import FeedSpec

COLUMNS = {
    "declaration_id": "DECL_ID",
    "declaration_date": "DECL_DATE",
    "flow": "FLOW",
    "hs_code": "HS_CODE",
    "partner_country": "PARTNER",
    "net_mass": "MASS_KG",
    "customs_value": "VALUE",
}
META = ["_feed", "_night", "_source_file", "_source_line", "_file_sha256", "_arrived_at"]


def spec(feed: str, country: str = "XA", **over: Any) -> FeedSpec:
    data: dict[str, Any] = {
        "feed": feed,
        "country": country,
        "name": f"Test feed {feed}",
        "synthetic": True,
        "source": {"uri": "file:///nowhere/{night:%Y%m%d}.csv", "expected_by_hour": 6},
        "format": {"decimal": ",", "date_format": "%d/%m/%Y", "delimiter": ";"},
        "columns": dict(COLUMNS),
        "conventions": {"currency": "EUR", "mass_unit": "kg"},
        "value_maps": {"flow": {"I": "import", "E": "export"}},
    }
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(data.get(k), dict):
            data[k] = {**data[k], **v}
        else:
            data[k] = v
    return FeedSpec.model_validate(data)


def good_row(i: int, night: date) -> dict[str, str]:
    return {
        "DECL_ID": f"D-{i:05d}",
        "DECL_DATE": night.strftime("%d/%m/%Y"),
        "FLOW": "I" if i % 2 else "E",
        "HS_CODE": f"{847130 + i % 5:06d}",
        "PARTNER": "XB",
        "MASS_KG": f"{10 + i},5",
        "VALUE": f"{1000 + i * 7},25",
    }


def land(
    con: duckdb.DuckDBPyConnection,
    s: FeedSpec,
    night: date,
    rows: list[dict[str, str]],
    *,
    columns: list[str] | None = None,
    arrived_at: datetime | None = None,
    landing: Path | None = None,
    rows_landed: int | None = None,
    header_in_db: bool = False,
) -> str:
    """Create/extend raw.<feed>__declarations with the rows of one file and record it in landed_files.
    ``columns``: the file's header (default: the spec's mapped columns). With ``landing`` the file is
    also written there (header line only matters); with ``header_in_db`` the header goes to
    raw.landed_files.columns (when the warehouse has that column)."""
    cols = columns or list(s.columns.values())
    table = f'raw."{s.raw_table}"'
    con.execute(
        f"create table if not exists {table} ("
        + ", ".join(f'"{c}" varchar' for c in cols)
        + ", _feed varchar, _night date, _source_file varchar, _source_line integer, _file_sha256 varchar, "
        "_arrived_at timestamp)"
    )
    have = {
        r[0]
        for r in con.execute(
            f"select column_name from information_schema.columns where table_schema='raw' and table_name='{s.raw_table}'"
        ).fetchall()
    }
    for c in cols:
        if c not in have:
            con.execute(f'alter table {table} add column "{c}" varchar')
    source_file = f"{s.feed}/{night}/{abs(hash((s.feed, night))) % 10**16:016x}/{s.feed}_{night:%Y%m%d}.csv"
    arrived = arrived_at or datetime(night.year, night.month, night.day, 2, 0)
    for i, r in enumerate(rows, start=1):
        names = [c for c in cols if c in r]
        con.execute(
            f"insert into {table} ("
            + ", ".join(f'"{c}"' for c in names)
            + ", _feed, _night, _source_file, _source_line, "
            "_file_sha256, _arrived_at) values (" + ", ".join("?" for _ in names) + ", ?, ?, ?, ?, 'sha', ?)",
            [r[c] for c in names] + [s.feed, night, source_file, i, arrived],
        )
    con.execute(
        "insert into raw.landed_files (feed, night, source_file, sha256, bytes, rows_landed, rows_rejected, "
        "source_uri, arrived_at) values (?, ?, ?, 'sha', 100, ?, 0, 'file:///x', ?)",
        [s.feed, night, source_file, len(rows) if rows_landed is None else rows_landed, arrived],
    )
    if header_in_db:
        con.execute("update raw.landed_files set columns = ? where source_file = ?", [cols, source_file])
    if landing is not None:
        p = landing / source_file
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(s.format.delimiter.join(cols) + "\n", encoding="utf-8")
    return source_file


def history(con: duckdb.DuckDBPyConnection, s: FeedSpec, night: date, nights: int, rows: int) -> None:
    """landed_files rows for earlier nights (volume history); no raw rows needed."""
    for k in range(1, nights + 1):
        n = night - timedelta(days=k)
        con.execute(
            "insert into raw.landed_files (feed, night, source_file, sha256, bytes, rows_landed, rows_rejected, "
            "source_uri, arrived_at) values (?, ?, ?, 'sha', 100, ?, 0, 'file:///x', ?)",
            [s.feed, n, f"{s.feed}/{n}/hist/{s.feed}.csv", rows, datetime(n.year, n.month, n.day, 2)],
        )
