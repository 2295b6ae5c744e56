"""Reading the warehouse whatever engine dbt built it on (DuckDB or PostgreSQL, tier 3).

One interface, ``WarehouseReader``: ``into_duckdb(con, table, sql)`` runs a query on the warehouse (in
the SQL both engines share) and puts its rows, with their types, into a table of a DuckDB connection,
where the Python stages do their own SQL. On DuckDB the query runs where the data is (no copy when the
connection is the warehouse); on PostgreSQL the rows come through ``COPY ... TO STDOUT`` (CSV) and
DuckDB's CSV reader with the column types PostgreSQL reports (between two DuckDB files: Parquet), so
nothing is converted by guesswork.

Detection reads its input through it (``stage_detection_inputs``): the rows of the three marts it reads
within the nights a night's features use, into a schema of the DuckDB connection it scores in.

The quality gates read and write through it too (``open_work``): a DuckDB connection to work in (the
warehouse itself on DuckDB, an in-memory one beside PostgreSQL) and the warehouse, whose
``fetchall``/``execute`` run the SQL both engines share with ``?`` placeholders, whose
``append_from_duckdb`` writes rows computed in DuckDB into a warehouse table (``ops.*``), and
``add_gx_datasource`` gives Great Expectations the same warehouse. On PostgreSQL the ``ops`` tables
live in the PostgreSQL ``ops`` schema, with the columns of the DuckDB ones (``ensure_ops``), where dbt's
``source('ops', ...)`` reads them.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

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
    1042: "varchar",  # char(n)
    1700: "double",  # numeric
    3802: "json",  # jsonb
}

DETECTION_MARTS = ("fct_declarations", "fct_declaration_history", "fct_consignment_matches")
DETECTION_SCHEMA = "detection_input"


class WarehouseReader(Protocol):
    """The warehouse, whatever its engine. SQL given to it is the SQL DuckDB and PostgreSQL share;
    ``?`` marks a parameter."""

    engine: str

    def into_duckdb(self, con: duckdb.DuckDBPyConnection, table: str, sql: str, temp: bool = False) -> int:
        """Create (or replace) ``table`` in ``con`` (a temporary table with ``temp``) with the rows of
        ``sql`` run on the warehouse; returns the number of rows."""
        ...

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of a query run on the warehouse (Python values: str, int, float, date, datetime,
        list for arrays)."""
        ...

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run a statement on the warehouse."""
        ...

    def columns_of(self, schema: str, table: str) -> list[str]:
        """The columns of a table or view, in order; [] when it does not exist."""
        ...

    def append_from_duckdb(
        self, con: duckdb.DuckDBPyConnection, table: str, columns: Sequence[str], sql: str
    ) -> int:
        """Insert the rows of ``sql``, run in ``con``, into the warehouse ``table`` (its ``columns``,
        in that order); returns the number of rows."""
        ...

    def transaction(self) -> AbstractContextManager[None]:
        """A transaction around statements (committed on success, rolled back on an error)."""
        ...

    def close(self) -> None: ...


def _columns_sql() -> str:
    return (
        "select column_name from information_schema.columns where table_schema = ? and table_name = ? "
        "order by ordinal_position"
    )


class DuckDBReader:
    """The DuckDB warehouse. With ``con`` the warehouse connection itself, queries run in place."""

    engine = "duckdb"

    def __init__(self, path: Path, con: duckdb.DuckDBPyConnection | None = None) -> None:
        self.path = path
        self._own = con is None
        self.con = con if con is not None else duckdb.connect(str(path), read_only=True)

    def into_duckdb(self, con: duckdb.DuckDBPyConnection, table: str, sql: str, temp: bool = False) -> int:
        create = "create or replace temp table" if temp else "create or replace table"
        if con is self.con:
            con.execute(f"{create} {table} as {sql}")
        else:  # another DuckDB: through a Parquet file, types kept
            with tempfile.TemporaryDirectory(prefix="tradesentry-read-") as tmp:
                parquet = str(Path(tmp) / "rows.parquet")
                self.con.sql(sql).write_parquet(parquet)
                con.execute(f"{create} {table} as select * from read_parquet(?)", [parquet])
        (n,) = con.execute(f"select count(*) from {table}").fetchone() or (0,)
        return int(n)

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.con.execute(sql, list(params)).fetchall()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self.con.execute(sql, list(params))

    def columns_of(self, schema: str, table: str) -> list[str]:
        return [r[0] for r in self.fetchall(_columns_sql(), [schema, table])]

    def append_from_duckdb(
        self, con: duckdb.DuckDBPyConnection, table: str, columns: Sequence[str], sql: str
    ) -> int:
        cols = ", ".join(columns)
        if con is self.con:
            (n,) = con.execute(f"select count(*) from ({sql}) as r").fetchone() or (0,)
            con.execute(f"insert into {table} ({cols}) {sql}")
            return int(n)
        with tempfile.TemporaryDirectory(prefix="tradesentry-write-") as tmp:
            parquet = str(Path(tmp) / "rows.parquet")
            con.sql(sql).write_parquet(parquet)
            (n,) = self.con.execute("select count(*) from read_parquet(?)", [parquet]).fetchone() or (0,)
            self.con.execute(f"insert into {table} ({cols}) select * from read_parquet(?)", [parquet])
        return int(n)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.con.begin()
        try:
            yield
        except BaseException:
            self.con.rollback()
            raise
        self.con.commit()

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

    def into_duckdb(self, con: duckdb.DuckDBPyConnection, table: str, sql: str, temp: bool = False) -> int:
        cols = self.columns(sql)
        create = "create or replace temp table" if temp else "create or replace table"
        with tempfile.TemporaryDirectory(prefix="tradesentry-read-") as tmp:
            csv = Path(tmp) / "rows.csv"
            with csv.open("wb") as f, self.con.cursor() as cur:
                cur.copy_expert(f"copy ({sql}) to stdout with (format csv, null '\\N')", f)
            spec = "{" + ", ".join(f"'{n.replace(chr(39), chr(39) * 2)}': '{t}'" for n, t in cols) + "}"
            con.execute(
                f"{create} {table} as select * from read_csv(?, columns = {spec}, header = false, "
                "nullstr = '\\N', quote = '\"', escape = '\"', auto_detect = false)",
                [str(csv)],
            )
        (n,) = con.execute(f"select count(*) from {table}").fetchone() or (0,)
        return int(n)

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.con.cursor() as cur:
            cur.execute(pg_placeholders(sql), list(params))
            return [tuple(r) for r in cur.fetchall()]

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        with self.con.cursor() as cur:
            cur.execute(pg_placeholders(sql), list(params))

    def columns_of(self, schema: str, table: str) -> list[str]:
        return [r[0] for r in self.fetchall(_columns_sql(), [schema, table])]

    def append_from_duckdb(
        self, con: duckdb.DuckDBPyConnection, table: str, columns: Sequence[str], sql: str
    ) -> int:
        """Through a CSV file DuckDB writes and ``COPY ... FROM STDIN`` reads (as warehouse_pg)."""
        with tempfile.TemporaryDirectory(prefix="tradesentry-write-") as tmp:
            csv = Path(tmp) / "rows.csv"
            con.execute(
                f"copy ({sql}) to '{csv}' (format csv, header false, nullstr '\\N', quote '\"', escape '\"')"
            )
            with csv.open("rb") as f, self.con.cursor() as cur:
                cur.copy_expert(f"copy {table} ({', '.join(columns)}) from stdin with (format csv, null '\\N')", f)
                return int(cur.rowcount)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.con.autocommit = False
        try:
            yield
        except BaseException:
            self.con.rollback()
            raise
        else:
            self.con.commit()
        finally:
            self.con.autocommit = True

    def ensure_ops(self) -> None:
        """The ``ops`` schema and tables the gates write (warehouse_pg.ops_ddl), when missing."""
        from tradesentry.warehouse_pg import OPS_TABLES, ops_ddl

        if all(self.columns_of("ops", t) for t in OPS_TABLES):
            return  # no DDL: the role may lack CREATE on the database
        with self.con.cursor() as cur:
            cur.execute(ops_ddl())

    def close(self) -> None:
        self.con.close()


def pg_placeholders(sql: str) -> str:
    """``?`` placeholders as psycopg2's ``%s`` (and ``%`` doubled), outside quotes."""
    out: list[str] = []
    quote: str | None = None
    for ch in sql:
        if quote is not None:
            if ch == quote:
                quote = None
        elif ch in ("'", '"'):
            quote = ch
        elif ch == "?":
            out.append("%s")
            continue
        out.append("%%" if ch == "%" else ch)
    return "".join(out)


def open_reader(settings: Settings, con: duckdb.DuckDBPyConnection | None = None) -> WarehouseReader:
    """The reader of the settings' warehouse engine (``con``: an open connection to the DuckDB
    warehouse, used in place)."""
    settings = settings.resolve()
    if settings.warehouse_engine == "postgres":
        assert settings.warehouse_url is not None
        return PostgresReader(settings.warehouse_url)
    return DuckDBReader(settings.warehouse, con)


@contextmanager
def open_work(settings: Settings) -> Iterator[tuple[duckdb.DuckDBPyConnection, WarehouseReader]]:
    """A DuckDB connection a stage works in, and the warehouse it reads and writes, both closed at
    the end. On DuckDB both are the warehouse (read-write, its schemas ensured: queries run in
    place); on PostgreSQL an in-memory DuckDB and the PostgreSQL warehouse (``ops`` ensured)."""
    settings = settings.resolve()
    if settings.warehouse_engine == "postgres":
        assert settings.warehouse_url is not None
        pg = PostgresReader(settings.warehouse_url)
        con = duckdb.connect()
        try:
            pg.ensure_ops()
            yield con, pg
        finally:
            con.close()
            pg.close()
        return
    from tradesentry.warehouse import open_settings_warehouse

    with open_settings_warehouse(settings) as con:
        yield con, DuckDBReader(settings.warehouse, con)


def sqlalchemy_url(settings: Settings) -> str:
    """The warehouse as a SQLAlchemy URL (what Great Expectations connects with)."""
    settings = settings.resolve()
    if settings.warehouse_engine == "postgres":
        assert settings.warehouse_url is not None
        parsed = urlparse(settings.warehouse_url)
        if parsed.scheme.split("+")[0] not in ("postgresql", "postgres"):
            raise ValueError(f"warehouse_url {parsed.scheme}://...: expected postgresql://user@host:port/dbname")
        return "postgresql+psycopg2://" + settings.warehouse_url.split("://", 1)[1]
    from tradesentry.quality.gx_duckdb import connection_string

    return connection_string(settings.warehouse)


def add_gx_datasource(context: Any, settings: Settings, name: str) -> Any:
    """A Great Expectations SQL datasource on the settings' warehouse (GX on DuckDB needs
    ``gx_duckdb.apply()`` first; on PostgreSQL it runs unpatched). Close it with
    ``gx_duckdb.close_datasource``."""
    settings = settings.resolve()
    if settings.warehouse_engine == "postgres":
        return context.data_sources.add_or_update_postgres(name=name, connection_string=sqlalchemy_url(settings))
    return context.data_sources.add_or_update_sql(name=name, connection_string=sqlalchemy_url(settings))


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
