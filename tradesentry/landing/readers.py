"""Readers that turn one landed file into a staging relation of text columns.

Every reader creates a temporary table `<stage>` with a `__row` column (1-based position of the
record among the records it could read, in file order) followed by the file's own columns as
VARCHAR, and returns the records it could not read as `Reject`s with their 1-based record number
(header excluded). `raw_load` maps positions back to record numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from tradesentry.feeds.spec import FeedSpec, RatesFeedSpec

AnySpec = FeedSpec | RatesFeedSpec


@dataclass(frozen=True)
class Reject:
    source_line: int
    raw_line: str | None
    error_type: str
    message: str


def lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _csv_options(spec: AnySpec) -> str:
    fmt = spec.format
    delim = "\t" if fmt.delimiter in ("\\t", "tab") else fmt.delimiter
    opts = {
        "delim": lit(delim),
        "quote": lit(fmt.quote),
        "header": "true" if fmt.header else "false",
        "encoding": lit(fmt.encoding),
        "all_varchar": "true",
        "skip": str(fmt.skip_rows),
    }
    return ", ".join(f"{k}={v}" for k, v in opts.items())


def read_csv(con: duckdb.DuckDBPyConnection, spec: AnySpec, path: str, stage: str, tag: str) -> list[Reject]:
    rej_table, rej_scan = f"rej_{tag}", f"scan_{tag}"
    con.execute(
        f"create temp table {stage} as select row_number() over () as __row, * "
        f"from read_csv({lit(path)}, {_csv_options(spec)}, store_rejects=true, "
        f"rejects_table={lit(rej_table)}, rejects_scan={lit(rej_scan)})"
    )
    try:
        # The CSV reader numbers lines from the top of the file, header and skipped rows included.
        offset = (1 if spec.format.header else 0) + spec.format.skip_rows
        rows = con.execute(
            f"select line - {offset}, first(csv_line), first(error_type::varchar), first(error_message) "
            f"from {rej_table} group by line order by line"
        ).fetchall()
    finally:
        con.execute(f"drop table if exists {rej_table}")
        con.execute(f"drop table if exists {rej_scan}")
    return [Reject(int(r[0]), r[1], str(r[2]).lower(), str(r[3]).split(".")[0]) for r in rows]


READERS = {"csv": read_csv}


def read_to_stage(con: duckdb.DuckDBPyConnection, spec: AnySpec, path: str, stage: str, tag: str) -> list[Reject]:
    try:
        reader = READERS[spec.format.kind]
    except KeyError:
        raise NotImplementedError(f"feed {spec.feed}: format.kind {spec.format.kind!r} has no reader yet") from None
    return reader(con, spec, path, stage, tag)
