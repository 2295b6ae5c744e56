"""The one place Tradesentry adapts Great Expectations 1.x to DuckDB, at run time.

Never edit installed packages (docs/../shared/CONTRACTS.md). What this module does, and why:

1. ``apply()`` registers ``duckdb`` among GX's persisted-connection dialects
   (``great_expectations.execution_engine.sqlalchemy_execution_engine._PERSISTED_CONNECTION_DIALECTS``).
   Without it GX runs each metric query on a pooled connection, returns the connection to the pool
   and only then reads the cursor; duckdb-engine has closed the cursor by then, the result is empty
   and every expectation fails with ``IndexError`` in ``resolve_metric_bundle`` (GX issues 10738,
   11579). With it GX keeps one connection open (``StaticPool``) for the whole validation, as it does
   for SQLite. ``apply()`` is idempotent and cheap.
2. ``close_datasource()`` closes GX's persisted connection and disposes the engine, so that the same
   process can open the DuckDB file again (DuckDB refuses a second handle with another configuration).
3. ``quiet()`` silences GX's logging and progress bars.

Regex expectations (``expect_column_values_to_match_regex``) still refuse DuckDB; the suites use
``UnexpectedRowsExpectation`` with ``ts_full_match``, rendered as ``regexp_full_match`` on DuckDB, instead
(see ``suites.py`` and ``dialect.py``). On PostgreSQL GX needs none of this; ``close_datasource`` is
used there too.
"""

from __future__ import annotations

import logging
from typing import Any

DIALECT = "duckdb"


class _DuckDBDialect(str):
    """Stands in for a ``GXSqlDialect`` member: GX compares members with ``==`` against the engine's
    dialect name (a str) and reads ``.value`` when it matches a connection string's prefix."""

    @property
    def value(self) -> str:
        return str(self)


def _module() -> Any:
    import great_expectations.execution_engine.sqlalchemy_execution_engine as see

    return see


def is_applied() -> bool:
    """True when duckdb is registered among GX's persisted-connection dialects in this process."""
    return any(
        str(getattr(d, "value", d)).lower() == DIALECT for d in _module()._PERSISTED_CONNECTION_DIALECTS
    )


def apply() -> None:
    """Register duckdb as a persisted-connection dialect (idempotent) and quiet GX."""
    see = _module()
    if not hasattr(see, "_PERSISTED_CONNECTION_DIALECTS"):  # pragma: no cover - GX moved it
        raise RuntimeError(
            "great_expectations no longer has sqlalchemy_execution_engine._PERSISTED_CONNECTION_DIALECTS; "
            "revisit tradesentry/quality/gx_duckdb.py for this GX version"
        )
    if not is_applied():
        see._PERSISTED_CONNECTION_DIALECTS = (*see._PERSISTED_CONNECTION_DIALECTS, _DuckDBDialect(DIALECT))
    quiet()


def quiet() -> None:
    """Keep GX's own logging to warnings and above (its INFO/DEBUG lines flood task logs)."""
    for name in ("great_expectations", "great_expectations.core", "great_expectations.data_context"):
        logging.getLogger(name).setLevel(logging.WARNING)


def quiet_context(context: Any) -> None:
    """No progress bars from this context (they go to stderr once per metric batch)."""
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)


def connection_string(path: Any) -> str:
    return f"duckdb:///{path}"


def close_datasource(datasource: Any) -> None:
    """Close the persisted connection GX keeps for duckdb and dispose its engine."""
    own = getattr(datasource, "_engine", None)  # the datasource's own engine (test_connection, reflection)
    if own is not None:
        own.dispose()
    engine = getattr(datasource, "_execution_engine", None)
    if engine is None:
        return
    conn = getattr(engine, "_connection", None)
    if conn is not None:
        try:
            conn.close()
        finally:
            engine._connection = None
    try:
        engine.close()
    finally:
        sa_engine = getattr(engine, "engine", None)
        if sa_engine is not None and hasattr(sa_engine, "dispose"):
            sa_engine.dispose()
        datasource._execution_engine = None
