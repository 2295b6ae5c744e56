"""The portable SQL of expectation suites, rendered for the warehouse engine at run time.

The ``unexpected_rows_query`` texts of the suites (``expectations/``) are written in the SQL DuckDB and
PostgreSQL share, plus two functions of the project that have no common spelling:

- ``ts_full_match(text, pattern)``: the whole text matches the regular expression (DuckDB's
  ``regexp_full_match``);
- ``ts_try_double(text)``: the text as a double, NULL when it is not a number (DuckDB's
  ``try_cast(text AS DOUBLE)``).

``render(sql, engine)`` replaces them: on DuckDB by exactly the DuckDB functions (the SQL GX runs there
is the text the suites held before the functions existed), on PostgreSQL by expressions that give the
same result (``tests/test_tier3_quality_postgres.py`` runs both over a grid of awkward inputs):

- ``ts_full_match`` becomes ``text ~ '^(pattern)$'``; an unescaped ``.`` outside brackets becomes
  ``[^\\n]``, as RE2 (DuckDB) does not let ``.`` match a newline. Patterns keep to what RE2 and
  PostgreSQL's regular expressions share (classes, ranges, ``{m,n}``, groups, alternation, escaped
  punctuation); RE2-only syntax (``\\pL``, ``(?P<name>...)``, flags) fails on PostgreSQL.
- ``ts_try_double`` accepts what DuckDB's cast accepts (checked against it on generated strings):
  spaces, tabs and line breaks around, ``+``, ``-`` or ``+-`` before, digits with single underscores
  between them, an optional fraction and exponent, ``inf``, ``infinity`` and ``nan`` in any case.
  The value is PostgreSQL's cast of the same digits (both engines round correctly), with DuckDB's
  overflow to infinity and underflow to zero instead of PostgreSQL's error. Known differences, past
  any real declaration: a number within 1e-37 (relative) of the largest double's rounding limit or
  of the smallest subnormal's is infinity or zero on PostgreSQL where DuckDB rounds it to the finite
  neighbour; a number with more than 16383 digits after the point raises on PostgreSQL.

The renderer reads string literals ('' escaped) and quoted identifiers, so a function name inside
either is left alone; ``{{`` and ``}}`` (GX's ``str.format`` escapes) pass through untouched, and the
PostgreSQL expressions add no braces, no ``%`` (psycopg2's placeholder character) and no colon before
a letter, digit or ``_`` (SQLAlchemy's ``text()``, which GX runs the queries through, would take it for
a bind parameter, even inside a literal: hence ``(`` rather than ``(?:`` around a pattern).
"""

from __future__ import annotations

import re

ENGINES = ("duckdb", "postgres")
FUNCTIONS = ("ts_full_match", "ts_try_double")

_CALL = re.compile(r"\b(" + "|".join(FUNCTIONS) + r")\s*\(", re.IGNORECASE)
_SQL_LITERAL = re.compile(r"'(?:[^']|'')*'\Z")

# DuckDB's try_cast(varchar AS DOUBLE), as groups: sign, integer digits, fraction digits, exponent,
# special value. PostgreSQL's regexp_match with flag 'i'.
_WS = r"[ \t\n\v\f\r]"
_DIGITS = r"[0-9](?:[_]?[0-9])*"
_NUMBER_RE = (
    rf"^{_WS}*(\+?-?)(?:({_DIGITS})?(?:[.]({_DIGITS})?)?(?:[eE]([+-]?{_DIGITS}))?|(inf|infinity|nan)){_WS}*$"
)
# 2**1024 - 2**970 rounded down (from there on a decimal rounds to infinity) and 2**-1075 rounded up
# (up to there it rounds to zero): the casts between them never raise on PostgreSQL.
_OVERFLOW_AT = "1.7976931348623158079372897140530341507993e308"
_UNDERFLOW_TO = "2.4703282292062327208828439643411068619e-324"


def render(sql: str, engine: str) -> str:
    """``sql`` with the project's functions spelled for ``engine`` (duckdb or postgres)."""
    if engine not in ENGINES:
        raise ValueError(f"engine {engine!r}: one of {', '.join(ENGINES)}")
    out: list[str] = []
    i = 0
    n = len(sql)
    while i < n:
        ch = sql[i]
        if ch in ("'", '"'):
            j = _skip_quoted(sql, i)
            out.append(sql[i:j])
            i = j
            continue
        m = _CALL.match(sql, i)
        if m is not None and (i == 0 or not (sql[i - 1].isalnum() or sql[i - 1] in "_.$\"")):
            args, end = _arguments(sql, m.end())
            rendered = [render(a, engine) for a in args]
            out.append(_FUNCTION[m.group(1).lower()](rendered, engine))
            i = end
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _skip_quoted(sql: str, i: int) -> int:
    """The index after the literal or quoted identifier starting at ``i`` (doubled quotes escape)."""
    q = sql[i]
    j = i + 1
    while j < len(sql):
        if sql[j] == q:
            if j + 1 < len(sql) and sql[j + 1] == q:
                j += 2
                continue
            return j + 1
        j += 1
    raise ValueError(f"unterminated {q} in SQL: {sql[i:i + 60]!r}")


def _arguments(sql: str, i: int) -> tuple[list[str], int]:
    """The top-level comma-separated arguments of a call whose ``(`` ends before ``i``; the index
    after its ``)``."""
    args: list[str] = []
    depth = 0
    start = i
    while i < len(sql):
        ch = sql[i]
        if ch in ("'", '"'):
            i = _skip_quoted(sql, i)
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            if depth == 0:
                args.append(sql[start:i].strip())
                return args, i + 1
            depth -= 1
        elif ch == "," and depth == 0:
            args.append(sql[start:i].strip())
            start = i + 1
        i += 1
    raise ValueError(f"unbalanced parentheses in SQL: {sql[:80]!r}")


def _arity(name: str, args: list[str], n: int) -> None:
    if len(args) != n:
        raise ValueError(f"{name} takes {n} argument(s), got {len(args)}: {args!r}")


# ------------------------------------------------------------------------------- ts_full_match


def pg_regex(pattern: str) -> str:
    """An RE2 pattern as a PostgreSQL one: ``.`` outside brackets matches anything but a newline."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        if ch == "\\" and i + 1 < n:
            out.append(pattern[i : i + 2])
            i += 2
        elif ch == "[":
            j = i + 1
            if j < n and pattern[j] == "^":
                j += 1
            if j < n and pattern[j] == "]":  # a ] right after [ or [^ is a literal
                j += 1
            while j < n and pattern[j] != "]":
                if pattern[j] == "\\":
                    j += 2
                elif pattern.startswith("[:", j):  # [:alpha:] inside a bracket
                    k = pattern.find(":]", j + 2)
                    j = k + 2 if k >= 0 else j + 1
                else:
                    j += 1
            out.append(pattern[i : j + 1])
            i = j + 1
        elif ch == ".":
            out.append("[^\\n]")
            i += 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _full_match(args: list[str], engine: str) -> str:
    _arity("ts_full_match", args, 2)
    text, pattern = args
    if engine == "duckdb":
        return f"regexp_full_match({text}, {pattern})"
    if _SQL_LITERAL.match(pattern):
        return f"({text} ~ '^({pg_regex(pattern[1:-1])})$')"
    return f"({text} ~ ('^(' || ({pattern}) || ')$'))"


# ------------------------------------------------------------------------------- ts_try_double


def _try_double(args: list[str], engine: str) -> str:
    _arity("ts_try_double", args, 1)
    (text,) = args
    if engine == "duckdb":
        return f"try_cast({text} AS DOUBLE)"
    f8 = "DOUBLE PRECISION"
    # i, f: integer and fraction digits; e: exponent; mag: the decimal exponent of the first
    # significant digit (the number is in [10^mag, 10^(mag+1))).
    digits = "_ts_n.i || '.' || _ts_n.f || 'e' || _ts_n.e"
    mag = (
        "(CAST(_ts_n.e AS BIGINT) + CASE WHEN ltrim(_ts_n.i, '0') <> '' THEN length(ltrim(_ts_n.i, '0')) - 1 "
        "ELSE length(ltrim(_ts_n.f, '0')) - length(_ts_n.f) - 1 END)"
    )
    inf = f"CAST(_ts_n.s || 'Infinity' AS {f8})"
    zero = f"CAST(_ts_n.s || '0' AS {f8})"
    slow = (
        "(SELECT CASE "
        "WHEN NOT _ts_n.ok THEN NULL "
        f"WHEN _ts_n.special = 'nan' THEN CAST('NaN' AS {f8}) "
        f"WHEN _ts_n.special IS NOT NULL THEN {inf} "
        "WHEN _ts_n.i = '' AND _ts_n.f = '' THEN NULL "
        f"WHEN ltrim(_ts_n.i || _ts_n.f, '0') = '' THEN {zero} "
        "WHEN length(ltrim(ltrim(_ts_n.e, '+-'), '0')) > 15 "
        f"THEN CASE WHEN left(_ts_n.e, 1) = '-' THEN {zero} ELSE {inf} END "
        f"WHEN {mag} > 308 THEN {inf} "
        f"WHEN {mag} < -324 THEN {zero} "
        f"WHEN {mag} = 308 AND CAST({digits} AS NUMERIC) >= {_OVERFLOW_AT} THEN {inf} "
        f"WHEN {mag} = -324 AND CAST({digits} AS NUMERIC) <= {_UNDERFLOW_TO} THEN {zero} "
        f"ELSE CAST(_ts_n.s || {digits} AS {f8}) END "
        # OFFSET 0 keeps PostgreSQL from inlining the subqueries, which would match once per use.
        "FROM (SELECT _ts_m IS NOT NULL AS ok, "
        "CASE WHEN right(_ts_m[1], 1) = '-' THEN '-' ELSE '' END AS s, "
        "coalesce(replace(_ts_m[2], '_', ''), '') AS i, "
        "coalesce(replace(_ts_m[3], '_', ''), '') AS f, "
        "coalesce(replace(_ts_m[4], '_', ''), '0') AS e, "
        "lower(_ts_m[5]) AS special "
        f"FROM (SELECT regexp_match({text}, '{_NUMBER_RE}', 'i') AS _ts_m OFFSET 0) AS _ts_r OFFSET 0) AS _ts_n)"
    )
    # Most values are plain decimals: cast at once (under 300 characters nothing overflows).
    return (
        f"(CASE WHEN ({text}) ~ '^[+-]?[0-9]+([.][0-9]*)?$' AND length({text}) < 300 "
        f"THEN CAST({text} AS {f8}) ELSE {slow} END)"
    )


_FUNCTION = {"ts_full_match": _full_match, "ts_try_double": _try_double}
