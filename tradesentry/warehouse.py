"""The DuckDB warehouse: connections and the tables Python stages own (raw, ops, detection).

dbt owns the `staging`, `intermediate`, `marts` and `seeds` schemas; everything else is created here,
idempotently, before any stage runs.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Protocol

import duckdb

DDL = """
create schema if not exists raw;
create schema if not exists ops;
create schema if not exists detection;

create table if not exists raw.landed_files (
    feed varchar not null,
    night date not null,
    source_file varchar not null,
    sha256 varchar not null,
    bytes bigint not null,
    rows_landed integer not null,
    rows_rejected integer not null,
    source_uri varchar,
    arrived_at timestamp not null,
    columns varchar[],
    source_modified_at timestamp,
    primary key (source_file)
);
-- Warehouses created before the column existed.
alter table raw.landed_files add column if not exists source_modified_at timestamp;

create table if not exists raw.parse_rejects (
    feed varchar not null,
    night date not null,
    source_file varchar not null,
    source_line integer not null,
    reason_code varchar not null,
    reason varchar not null,
    raw_line varchar
);

create table if not exists ops.feed_holds (
    feed varchar not null,
    night date not null,
    reason_code varchar not null,
    reason varchar not null,
    held_at timestamp not null,
    lifted_at timestamp
);

create table if not exists ops.quality_row_failures (
    feed varchar not null,
    night date not null,
    source_file varchar not null,
    source_line integer not null,
    stage varchar not null,
    expectation varchar not null,
    reason_code varchar not null,
    reason varchar not null,
    severity varchar not null
);

create table if not exists detection.scores (
    night date not null,
    reporter_country varchar not null,
    declaration_id varchar not null,
    item_no integer not null,
    declaration_key varchar not null,
    score double not null,
    detector_scores json,
    detector_version varchar not null
);

create table if not exists detection.anomalies (
    anomaly_id varchar not null,
    night date not null,
    kind varchar not null,
    level varchar not null,
    declaration_keys varchar[] not null,
    primary_key varchar not null,
    reporter_country varchar,
    partner_country varchar,
    countries varchar[],
    flow varchar,
    hs6 varchar,
    trader_id varchar,
    trader_name varchar,
    score double not null,
    rank integer not null,
    detectors varchar[],
    detector_scores json,
    tail_probabilities json,
    reasons varchar[],
    peer_median_usd_per_kg double,
    peer_count integer,
    unit_value_usd_per_kg double,
    value_at_stake_usd double,
    detector_version varchar not null,
    is_audit_pick boolean not null,
    source_file varchar,
    source_line integer
);
"""


def connect(path: Path, read_only: bool = False, memory_limit: str | None = None) -> duckdb.DuckDBPyConnection:
    """``memory_limit``: the caller's settings.duckdb_memory_limit; empty or None: the environment's
    (TRADESENTRY_DUCKDB_MEMORY_LIMIT), else DuckDB's default."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # The same cap as dbt's profile: without it each task's DuckDB may hold up to 80% of the machine
    # in its buffer pool, on top of the task's own Python memory.
    limit = configured_memory_limit(memory_limit)
    config: dict[str, str | bool | int | float | list[str]] = {"memory_limit": limit} if limit else {}
    con = duckdb.connect(str(path), read_only=read_only, config=config)
    return con


def configured_memory_limit(memory_limit: str | None = None) -> str:
    """The memory_limit a warehouse connection gets: ``memory_limit`` (the settings') when set, else
    the environment's TRADESENTRY_DUCKDB_MEMORY_LIMIT ("" = DuckDB's default, 80% of the RAM)."""
    return (memory_limit or "").strip() or os.environ.get("TRADESENTRY_DUCKDB_MEMORY_LIMIT", "").strip()


_SIZE_UNITS = {"bytes": 1, "b": 1, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
               "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}  # fmt: skip


def memory_limit_bytes(con: duckdb.DuckDBPyConnection) -> int | None:
    """The connection's current memory_limit in bytes, to a tenth of the unit DuckDB shows it in
    ("3.7 GiB")."""
    row = con.execute("select current_setting('memory_limit')").fetchone()
    parts = str(row[0] if row else "").split()
    if len(parts) != 2 or parts[1].lower() not in _SIZE_UNITS:
        return None
    try:
        return int(float(parts[0]) * _SIZE_UNITS[parts[1].lower()])
    except ValueError:
        return None


def yield_memory(con: duckdb.DuckDBPyConnection, nbytes: int, floor_bytes: int = 1 << 30) -> None:
    """Lower the connection's memory_limit by ``nbytes`` (not below ``floor_bytes``): a task that
    holds that much in Python arrays next to DuckDB keeps the process within the one budget the
    limit was set for, DuckDB spilling its temp tables to disk instead. Undone by
    :func:`restore_memory_limit`."""
    limit = memory_limit_bytes(con)
    if limit is None or nbytes <= 0:
        return
    lowered = max(limit - int(nbytes), floor_bytes)
    if lowered < limit:
        try:
            con.execute(f"set memory_limit = '{lowered // (1 << 20)}MiB'")
        except duckdb.Error:  # nothing to spill to (no temp directory): keep the limit
            return


def restore_memory_limit(con: duckdb.DuckDBPyConnection, memory_limit: str | None = None) -> None:
    """Back to the limit :func:`connect` set (given the same ``memory_limit``). Called in a
    ``finally``: a failure here must not hide the error that brought it there."""
    limit = configured_memory_limit(memory_limit)
    try:
        if limit:
            con.execute(f"set memory_limit = '{limit}'")
        else:
            con.execute("reset memory_limit")
    except duckdb.Error:
        return


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(DDL)


@contextmanager
def open_warehouse(
    path: Path, read_only: bool = False, memory_limit: str | None = None
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection that is always closed: under `dag.test()` every task shares one process, and an
    open DuckDB handle would keep the file locked for the next task's dbt or GX connection.
    ``memory_limit`` as for :func:`connect` (callers pass settings.duckdb_memory_limit)."""
    con = connect(path, read_only=read_only, memory_limit=memory_limit)
    try:
        if not read_only:
            ensure_schema(con)
        yield con
    finally:
        con.close()


class WarehouseSettings(Protocol):
    @property
    def warehouse(self) -> Path: ...

    @property
    def duckdb_memory_limit(self) -> str: ...


def open_settings_warehouse(
    settings: WarehouseSettings, read_only: bool = False
) -> AbstractContextManager[duckdb.DuckDBPyConnection]:
    """:func:`open_warehouse` on the settings' warehouse, with the settings' memory cap."""
    return open_warehouse(settings.warehouse, read_only=read_only, memory_limit=settings.duckdb_memory_limit)
