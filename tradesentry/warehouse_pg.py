"""Tier 3 (docs/deployment.md): the warehouse on PostgreSQL.

The raw load and the quality gates write DuckDB (``raw`` and ``ops`` schemas); dbt can build the same
project on PostgreSQL (``TRADESENTRY_WAREHOUSE_ENGINE=postgres``). ``copy_schemas`` is the bridge:
it copies tables of the DuckDB warehouse into a PostgreSQL database, table for table, with the same
names, columns and types, through PostgreSQL's ``COPY`` (DuckDB writes a CSV file, psycopg2 streams
it). DuckDB's postgres extension would do the same but downloads at first use, which fails offline.

A copied table replaces the PostgreSQL table of the same name (``drop ... cascade``: the staging views
over it are dropped with it, and the next ``dbt build`` recreates them).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import duckdb

# DuckDB type (as DESCRIBE shows it) -> PostgreSQL type. Anything else is refused, not guessed.
_TYPES = {
    "VARCHAR": "text",
    "DATE": "date",
    "TIMESTAMP": "timestamp",
    "TIMESTAMP WITH TIME ZONE": "timestamptz",
    "INTEGER": "integer",
    "BIGINT": "bigint",
    "SMALLINT": "smallint",
    "DOUBLE": "double precision",
    "FLOAT": "real",
    "BOOLEAN": "boolean",
    "JSON": "json",
    "VARCHAR[]": "text[]",
}


@dataclass(frozen=True)
class PgParams:
    host: str
    port: int
    user: str
    password: str
    dbname: str

    def as_env(self) -> dict[str, str]:
        """The variables dbt_project/profiles.yml reads for its postgres target."""
        return {
            "TRADESENTRY_PG_HOST": self.host,
            "TRADESENTRY_PG_PORT": str(self.port),
            "TRADESENTRY_PG_USER": self.user,
            "TRADESENTRY_PG_PASSWORD": self.password,
            "TRADESENTRY_PG_DBNAME": self.dbname,
        }

    def connect(self) -> Any:
        import psycopg2

        return psycopg2.connect(
            host=self.host, port=self.port, user=self.user, password=self.password or None, dbname=self.dbname
        )


def pg_params(url: str) -> PgParams:
    """``postgresql://user:password@host:port/dbname`` (a SQLAlchemy driver suffix such as
    ``postgresql+psycopg2`` is accepted) as connection parameters."""
    parsed = urlparse(url)
    if parsed.scheme.split("+")[0] not in ("postgresql", "postgres"):
        raise ValueError(f"warehouse_url {parsed.scheme}://...: expected postgresql://user:password@host:port/dbname")
    dbname = unquote(parsed.path.lstrip("/"))
    if not dbname:
        raise ValueError("warehouse_url names no database: postgresql://user:password@host:port/dbname")
    return PgParams(
        host=parsed.hostname or "127.0.0.1",
        port=parsed.port or 5432,
        user=unquote(parsed.username or ""),
        password=unquote(parsed.password or ""),
        dbname=dbname,
    )


def _pg_column(name: str, duck_type: str) -> str:
    pg_type = _TYPES.get(duck_type.upper())
    if pg_type is None:
        raise ValueError(f"column {name!r}: no PostgreSQL type for DuckDB type {duck_type}")
    return f'"{name.replace(chr(34), chr(34) * 2)}" {pg_type}'


def _select_for_csv(name: str, duck_type: str) -> str:
    """The column as CSV text PostgreSQL's COPY reads back exactly."""
    q = f'"{name.replace(chr(34), chr(34) * 2)}"'
    if duck_type.upper() == "VARCHAR[]":
        # A PostgreSQL array literal: {"a","b"} with quotes and backslashes escaped.
        elem = "'\"' || replace(replace(x, '\\', '\\\\'), '\"', '\\\"') || '\"'"
        return (
            f"case when {q} is null then null else "
            f"'{{' || array_to_string(list_transform({q}, lambda x: coalesce({elem}, 'NULL')), ',') || '}}' end as {q}"
        )
    return q


# The ops tables the gates write (tradesentry.warehouse.DDL has their definition).
OPS_TABLES = ("feed_holds", "quality_row_failures")


def ops_ddl() -> str:
    """PostgreSQL statements creating the ``ops`` schema and its tables when missing, with the
    columns, types and NOT NULLs of the DuckDB ones (``tradesentry.warehouse.DDL``, the one
    definition): the gates write them on PostgreSQL as they do on DuckDB."""
    from tradesentry.warehouse import ensure_schema

    con = duckdb.connect()
    try:
        ensure_schema(con)
        rows = con.execute(
            "select table_name, column_name, data_type, is_nullable from information_schema.columns "
            "where table_schema = 'ops' and table_name in (select unnest(?)) order by table_name, ordinal_position",
            [list(OPS_TABLES)],
        ).fetchall()
    finally:
        con.close()
    tables: dict[str, list[str]] = {}
    for table, column, duck_type, nullable in rows:
        tables.setdefault(table, []).append(_pg_column(column, duck_type) + ("" if nullable == "YES" else " not null"))
    stmts = ["create schema if not exists ops"]
    stmts += [f'create table if not exists ops."{t}" ({", ".join(cols)})' for t, cols in tables.items()]
    return ";\n".join(stmts) + ";"


def copy_schemas(
    duckdb_path: Path, url: str, schemas: tuple[str, ...] = ("raw", "ops")
) -> dict[str, int]:
    """Copy every table of the given schemas of the DuckDB warehouse into PostgreSQL (created or
    replaced there). Returns rows copied per ``schema.table``."""
    params = pg_params(url)
    copied: dict[str, int] = {}
    src = duckdb.connect(str(duckdb_path), read_only=True)
    pg = params.connect()
    try:
        with tempfile.TemporaryDirectory(prefix="tradesentry-copy-") as tmp:
            tables = src.execute(
                "select table_schema, table_name from information_schema.tables "
                "where table_schema in (select unnest(?)) and table_type = 'BASE TABLE' "
                "order by table_schema, table_name",
                [list(schemas)],
            ).fetchall()
            with pg, pg.cursor() as cur:
                for schema in schemas:
                    cur.execute(f'create schema if not exists "{schema}"')
                for schema, table in tables:
                    cols = src.execute(
                        "select column_name, data_type from information_schema.columns "
                        "where table_schema = ? and table_name = ? order by ordinal_position",
                        [schema, table],
                    ).fetchall()
                    target = f'"{schema}"."{table.replace(chr(34), chr(34) * 2)}"'
                    cur.execute(f"drop table if exists {target} cascade")
                    cur.execute(f"create table {target} ({', '.join(_pg_column(c, t) for c, t in cols)})")
                    csv = Path(tmp) / "table.csv"
                    select = ", ".join(_select_for_csv(c, t) for c, t in cols)
                    src.execute(
                        f"copy (select {select} from {target}) to '{csv}' "
                        "(format csv, header false, nullstr '\\N', quote '\"', escape '\"')"
                    )
                    with csv.open("rb") as f:
                        cur.copy_expert(f"copy {target} from stdin with (format csv, null '\\N')", f)
                    copied[f"{schema}.{table}"] = cur.rowcount
                    cur.execute(f"analyze {target}")
    finally:
        pg.close()
        src.close()
    return copied
