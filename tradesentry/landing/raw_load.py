"""Load landed files into the warehouse's `raw` schema, as text, with file and line of every row.

Everything is read as VARCHAR (`all_varchar`): DuckDB's type sniffing differs per file and would, for
example, drop the leading zeros of an HS code. Casting is staging's job. Lines the CSV reader cannot
split into the header's columns go to `raw.parse_rejects` with their line number, so nothing landed
is lost.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date

import duckdb

from tradesentry.feeds.spec import FeedSpec, RatesFeedSpec
from tradesentry.landing.pull import LandedFile, landed_files, local_copy
from tradesentry.landing.readers import ReadError, read_to_stage
from tradesentry.settings import Settings

AnySpec = FeedSpec | RatesFeedSpec
META_COLUMNS = ("_feed", "_night", "_source_file", "_source_line", "_file_sha256", "_arrived_at")


@dataclass(frozen=True)
class LoadResult:
    feed: str
    night: str
    source_file: str
    rows_landed: int
    rows_rejected: int
    columns: tuple[str, ...]


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def raw_table(spec: AnySpec) -> str:
    return f"raw.{_q(spec.raw_table)}"


def load_file(con: duckdb.DuckDBPyConnection, spec: AnySpec, landed: LandedFile, settings: Settings) -> LoadResult:
    """(Re)load one landed file: replaces that file's rows, so loading twice changes nothing."""
    tag = uuid.uuid4().hex[:10]
    stage = f"stage_{tag}"
    table = raw_table(spec)
    where = f"feed {spec.feed}, file {landed.source_file}"
    in_tx = False
    # An older layout (spec versions) is read with its own format; its columns are renamed below to
    # the current layout's names, because staging is generated from the current layout only.
    layout = spec.for_night(date.fromisoformat(landed.night)) if isinstance(spec, FeedSpec) else spec
    try:
        with local_copy(landed, settings) as path:  # object storage landing: a verified local copy
            rejects = read_to_stage(con, layout, str(path), stage, tag)
    except (duckdb.Error, ReadError) as exc:
        fmt = layout.format
        how = f"{fmt.encoding}, delimiter {fmt.delimiter!r}" if fmt.kind == "csv" else fmt.encoding
        version = ""
        if isinstance(layout, FeedSpec) and layout is not spec:  # an older layout of a declarations feed
            version = f" (layout valid from {layout.valid_from})"
        raise RuntimeError(
            f"{where}: could not be read as {fmt.kind}{version} ({how}): {exc}. "
            f"Check format in feeds/{spec.feed}.yaml."
        ) from exc
    try:
        if isinstance(spec, FeedSpec) and layout is not spec:
            _rename_to_current(con, stage, spec.renames_for_night(date.fromisoformat(landed.night)))
        columns = tuple(
            r[0] for r in con.execute(f"select column_name from (describe {stage})").fetchall() if r[0] != "__row"
        )
        good = con.execute(f"select count(*) from {stage}").fetchone()[0]  # type: ignore[index]
        if rejects:
            # Good records are numbered by position; map positions back to record numbers by
            # skipping the rejected ones.
            total = good + len(rejects)
            rejected = ", ".join(str(r.source_line) for r in rejects)
            con.execute(
                f"create temp table map_{tag} as select sl as source_line, row_number() over (order by sl) as __row "
                f"from (select unnest(range(1, {total + 1})) as sl) where sl not in ({rejected})"
            )
            line_expr, from_clause = "m.source_line", f"{stage} s join map_{tag} m using (__row)"
        else:
            line_expr, from_clause = "s.__row", f"{stage} s"

        con.execute("begin transaction")
        in_tx = True
        con.execute(f"create table if not exists {table} ({', '.join(_meta_ddl())})")
        existing = {r[0] for r in con.execute(f"select column_name from (describe {table})").fetchall()}
        for c in columns:
            if c not in existing:
                con.execute(f"alter table {table} add column {_q(c)} varchar")
        con.execute(f"delete from {table} where _source_file = ?", [landed.source_file])
        con.execute("delete from raw.parse_rejects where source_file = ?", [landed.source_file])
        con.execute("delete from raw.landed_files where source_file = ?", [landed.source_file])
        cols = ", ".join(_q(c) for c in columns)
        scols = ", ".join(f"s.{_q(c)}" for c in columns)
        con.execute(
            f"insert into {table} (_feed, _night, _source_file, _source_line, _file_sha256, _arrived_at, {cols}) "
            f"select ?, ?::date, ?, {line_expr}, ?, ?::timestamp, {scols} from {from_clause}",
            [spec.feed, landed.night, landed.source_file, landed.sha256, landed.arrived_at],
        )
        for r in rejects:
            con.execute(
                "insert into raw.parse_rejects values (?, ?::date, ?, ?, ?, ?, ?)",
                [
                    spec.feed,
                    landed.night,
                    landed.source_file,
                    r.source_line,
                    "unparseable_line",
                    f"line {r.source_line} of {landed.source_file} could not be split into the header's "
                    f"{len(columns)} columns ({r.error_type}): {r.message}"
                    if layout.format.kind == "csv"
                    else f"record {r.source_line} of {landed.source_file} could not be read "
                    f"({r.error_type}): {r.message}",
                    r.raw_line,
                ],
            )
        con.execute(
            "insert into raw.landed_files (feed, night, source_file, sha256, bytes, rows_landed, rows_rejected, "
            "source_uri, arrived_at, columns, source_modified_at) "
            "values (?, ?::date, ?, ?, ?, ?, ?, ?, ?::timestamp, ?, ?::timestamp)",
            [
                spec.feed,
                landed.night,
                landed.source_file,
                landed.sha256,
                landed.bytes,
                good,
                len(rejects),
                landed.source_uri,
                landed.arrived_at,
                list(columns),
                landed.source_modified_at,
            ],
        )
        con.execute("commit")
        in_tx = False
    except Exception:
        if in_tx:
            con.execute("rollback")
        raise
    finally:
        for t in (stage, f"map_{tag}"):
            con.execute(f"drop table if exists {t}")
    return LoadResult(spec.feed, landed.night, landed.source_file, good, len(rejects), columns)


def _rename_to_current(con: duckdb.DuckDBPyConnection, stage: str, renames: dict[str, str]) -> None:
    """Rename an older layout's columns to the current names (old column -> field -> current column).

    Two steps through temporary names, so that swapped names (A->B, B->A) rename cleanly; a column
    the older file has under a current name it does not map keeps its data under `<name> (old)`.
    """
    present = [r[0] for r in con.execute(f"select column_name from (describe {stage})").fetchall()]
    renames = {old: new for old, new in renames.items() if old in present}
    if not renames:
        return
    targets = set(renames.values())
    for c in present:
        if c in targets and c not in renames:
            con.execute(f"alter table {stage} rename column {_q(c)} to {_q(c + ' (old)')}")
    for i, old in enumerate(renames):
        con.execute(f"alter table {stage} rename column {_q(old)} to {_q(f'__renaming_{i}')}")
    for i, new in enumerate(renames.values()):
        con.execute(f"alter table {stage} rename column {_q(f'__renaming_{i}')} to {_q(new)}")


def _meta_ddl() -> list[str]:
    return [
        "_feed varchar not null",
        "_night date not null",
        "_source_file varchar not null",
        "_source_line integer not null",
        "_file_sha256 varchar not null",
        "_arrived_at timestamp not null",
    ]


def load_night(con: duckdb.DuckDBPyConnection, spec: AnySpec, night: date, settings: Settings) -> list[LoadResult]:
    """Load every landed file of one feed and night (an original and its resends)."""
    return [load_file(con, spec, lf, settings) for lf in landed_files(settings, spec.feed, night)]
