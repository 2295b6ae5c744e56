"""Reading the warehouse whatever engine dbt built it on (DuckDB or PostgreSQL, tier 3).

One interface, ``WarehouseReader``: ``into_duckdb(con, table, sql)`` runs a query on the warehouse (in
the SQL both engines share) and puts its rows, with their types, into a table of a DuckDB connection,
where the Python stages do their own SQL. On DuckDB the query runs where the data is (no copy when the
connection is the warehouse); on PostgreSQL the rows come through ``COPY ... TO STDOUT`` (CSV) and
DuckDB's CSV reader with the column types PostgreSQL reports (between two DuckDB files: Parquet), so
nothing is converted by guesswork.

Detection reads its input through it (``stage_detection_inputs``): the rows of the three marts it reads
within the nights a night's features use, into a schema of the DuckDB connection it scores in.
"""

from __future__ import annotations

import tempfile
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Protocol

import duckdb

from tradesentry.settings import Settings

# PostgreSQL type oid -> DuckDB type, for the types the marts have. Anything else is refused.
_PG_OIDS = {
    16: "boolean",
    20: "bigint",
    21: "smallint",
    23: "integer",
    25: "varchar",
    114: "json",
    700: "float",
    701: "double",
    1043: "varchar",
    1082: "date",
    1114: "timestamp",
    1184: "timestamptz",
    3802: "json",  # jsonb
}

DETECTION_MARTS = ("fct_declarations", "fct_declaration_history", "fct_consignment_matches")
DETECTION_SCHEMA = "detection_input"


class WarehouseReader(Protocol):
    engine: str

    def into_duckdb(self, con: duckdb.DuckDBPyConnection, table: str, sql: str) -> int:
        """Create (or replace) ``table`` in ``con`` with the rows of ``sql`` run on the warehouse;
        returns the number of rows."""
        ...

    def close(self) -> None: ...


class DuckDBReader:
    """The DuckDB warehouse. With ``con`` the warehouse connection itself, queries run in place."""

    engine = "duckdb"

    def __init__(self, path: Path, con: duckdb.DuckDBPyConnection | None = None) -> None:
        self.path = path
        self._own = con is None
        self.con = con if con is not None else duckdb.connect(str(path), read_only=True)

    def into_duckdb(self, con: duckdb.DuckDBPyConnection, table: str, sql: str) -> int:
        if con is self.con:
            con.execute(f"create or replace table {table} as {sql}")
        else:  # another DuckDB: through a Parquet file, types kept
            with tempfile.TemporaryDirectory(prefix="tradesentry-read-") as tmp:
                parquet = str(Path(tmp) / "rows.parquet")
                self.con.sql(sql).write_parquet(parquet)
                con.execute(f"create or replace table {table} as select * from read_parquet(?)", [parquet])
        (n,) = con.execute(f"select count(*) from {table}").fetchone() or (0,)
        return int(n)

    def close(self) -> None:
        if self._own:
            self.con.close()


class PostgresReader:
    """The PostgreSQL warehouse (``warehouse_url``)."""

    engine = "postgres"

    def __init__(self, url: str) -> None:
        from tradesentry.warehouse_pg import pg_params

        self.con = pg_params(url).connect()
        self.con.autocommit = True

    def columns(self, sql: str) -> list[tuple[str, str]]:
        """(name, DuckDB type) of the query's columns, from PostgreSQL's own description."""
        with self.con.cursor() as cur:
            cur.execute(f"select * from ({sql}) as q limit 0")
            out = []
            for col in cur.description:
                duck = _PG_OIDS.get(col.type_code)
                if duck is None:
                    raise ValueError(f"column {col.name}: PostgreSQL type oid {col.type_code} has no DuckDB type here")
                out.append((col.name, duck))
        return out

    def into_duckdb(self, con: duckdb.DuckDBPyConnection, table: str, sql: str) -> int:
        cols = self.columns(sql)
        with tempfile.TemporaryDirectory(prefix="tradesentry-read-") as tmp:
            csv = Path(tmp) / "rows.csv"
            with csv.open("wb") as f, self.con.cursor() as cur:
                cur.copy_expert(f"copy ({sql}) to stdout with (format csv, null '\\N')", f)
            spec = "{" + ", ".join(f"'{n.replace(chr(39), chr(39) * 2)}': '{t}'" for n, t in cols) + "}"
            con.execute(
                f"create or replace table {table} as select * from read_csv(?, columns = {spec}, header = false, "
                "nullstr = '\\N', quote = '\"', escape = '\"', auto_detect = false)",
                [str(csv)],
            )
        (n,) = con.execute(f"select count(*) from {table}").fetchone() or (0,)
        return int(n)

    def close(self) -> None:
        self.con.close()


def open_reader(settings: Settings, con: duckdb.DuckDBPyConnection | None = None) -> WarehouseReader:
    """The reader of the settings' warehouse engine (``con``: an open connection to the DuckDB
    warehouse, used in place)."""
    settings = settings.resolve()
    if settings.warehouse_engine == "postgres":
        assert settings.warehouse_url is not None
        return PostgresReader(settings.warehouse_url)
    return DuckDBReader(settings.warehouse, con)


def stage_detection_inputs(
    reader: WarehouseReader, con: duckdb.DuckDBPyConnection, night: date, window_days: int
) -> str:
    """The schema of ``con`` detection reads the marts from for ``night``: ``marts`` itself when the
    reader is the DuckDB warehouse ``con`` is connected to, else ``detection_input`` filled with the
    rows of the three marts detection reads whose nights can matter for ``night``: declarations and
    replaced versions of nights [night - window_days, night] (features read exactly those), and the
    matched consignment pairs whose two sides are no older than that (a key's current night is never
    earlier than its version as of ``night``, so no pair the features use is left out). ``window_days``: max(history_window_nights, transit_window_days).
    """
    if isinstance(reader, DuckDBReader) and reader.con is con:
        return "marts"
    lo, hi = (night - timedelta(days=window_days)).isoformat(), night.isoformat()
    where = {
        "fct_declarations": f"night between date '{lo}' and date '{hi}'",
        "fct_declaration_history": f"night between date '{lo}' and date '{hi}'",
        "fct_consignment_matches": f"export_night >= date '{lo}' and import_night >= date '{lo}'",
    }
    con.execute(f"create schema if not exists {DETECTION_SCHEMA}")
    for mart in DETECTION_MARTS:
        reader.into_duckdb(con, f"{DETECTION_SCHEMA}.{mart}", f"select * from marts.{mart} where {where[mart]}")
    return DETECTION_SCHEMA


def detection_window_days(config: Any) -> int:
    return int(max(config.history_window_nights, config.transit_window_days))
