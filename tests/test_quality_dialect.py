"""The suites' portable SQL (tradesentry.quality.dialect) rendered per engine, without a database
server: DuckDB gets its own functions back, text for text; PostgreSQL gets expressions that DuckDB
can parse too (their results on PostgreSQL are compared with DuckDB's in
tests/test_tier3_quality_postgres.py)."""

from __future__ import annotations

import json
import re

import duckdb
import pytest

from tradesentry.quality.dialect import pg_regex, render
from tradesentry.settings import REPO_ROOT


def test_duckdb_gets_its_own_functions() -> None:
    sql = "SELECT v FROM {batch} WHERE NOT ts_full_match(trim(\"A\"), '[0-9]{{6}}') AND ts_try_double(replace(trim(\"B\"), ',', '.')) IS NULL"
    assert render(sql, "duckdb") == (
        "SELECT v FROM {batch} WHERE NOT regexp_full_match(trim(\"A\"), '[0-9]{{6}}') "
        "AND try_cast(replace(trim(\"B\"), ',', '.') AS DOUBLE) IS NULL"
    )


def test_names_inside_literals_identifiers_and_other_names_are_left_alone() -> None:
    sql = "SELECT 'ts_try_double(x)', \"ts_full_match(\", my_ts_try_double(x), s.ts_try_double(x) FROM t"
    assert render(sql, "duckdb") == sql
    assert render(sql, "postgres") == sql


def test_nested_calls_and_commas_in_literals() -> None:
    sql = "ts_full_match(concat(a, ','), 'x,(y)') OR ts_try_double(coalesce(ts_try_double(a), 'b'))"
    assert render(sql, "duckdb") == (
        "regexp_full_match(concat(a, ','), 'x,(y)') OR try_cast(coalesce(try_cast(a AS DOUBLE), 'b') AS DOUBLE)"
    )


def test_postgres_full_match_is_anchored_and_dot_excludes_newline() -> None:
    assert render("ts_full_match(x, '[0-9]{{6}}')", "postgres") == "(x ~ '^([0-9]{{6}})$')"
    assert render("ts_full_match(x, p)", "postgres") == "(x ~ ('^(' || (p) || ')$'))"
    assert pg_regex("a.c") == "a[^\\n]c"
    assert pg_regex("\\.[.][^.]") == "\\.[.][^.]"
    assert pg_regex("[]a.]x.") == "[]a.]x[^\\n]"
    assert pg_regex("[[:alpha:].]+.") == "[[:alpha:].]+[^\\n]"


def test_postgres_spelling_adds_no_braces_percent_or_bind_parameters() -> None:
    """GX formats the suites' queries with str.format and runs them through SQLAlchemy's text(), which
    takes :name for a parameter (even in a literal); psycopg2 reads %."""
    import sqlalchemy as sa

    out = render("ts_try_double(trim(\"V\")) IS NULL AND NOT ts_full_match(v, 'abc_1')", "postgres")
    assert "{" not in out and "}" not in out and "%" not in out
    assert sa.text(out)._bindparams == {}


def test_wrong_arity_and_unbalanced_sql_are_refused() -> None:
    with pytest.raises(ValueError, match="takes 2"):
        render("ts_full_match(x)", "duckdb")
    with pytest.raises(ValueError, match="unbalanced"):
        render("ts_try_double(x", "postgres")
    with pytest.raises(ValueError, match="engine"):
        render("x", "sqlite")


def test_committed_suites_render_for_both_engines() -> None:
    """Every committed query renders; the PostgreSQL text parses (DuckDB's parser reads it too) and
    has no SQLAlchemy bind parameter."""
    import sqlalchemy as sa

    con = duckdb.connect()
    try:
        for path in sorted((REPO_ROOT / "expectations").rglob("*.json")):
            for e in json.loads(path.read_text(encoding="utf-8"))["expectations"]:
                q = e["kwargs"].get("unexpected_rows_query")
                if q is None:
                    continue
                assert not re.search(r"\bts_(full_match|try_double)\(", render(q, "duckdb")), (path, q)
                pg = render(q, "postgres").format(batch="(select 1) as batch")
                con.extract_statements(pg)  # a syntax error raises
                assert sa.text(pg)._bindparams == {}, (path, q)
    finally:
        con.close()
