"""Expectation suites as files in the repository, generated from the feed specs.

Layout under ``expectations/`` (``settings.expectations_dir``):

- ``raw/<feed>.json``: generated from ``feeds/<feed>.yaml`` by :func:`generate_suites`; never edit by
  hand (``stale_suites`` / the test suite catch a hand edit or a spec change without regeneration).
- ``raw/<feed>.custom.json``: hand-written additions for one feed, merged in at validation time
  (same format; an expectation whose ``meta.name`` equals a generated one replaces it).
- ``harmonised/declarations.json``: generated, checks on ``intermediate.int_declarations_converted``;
  ``harmonised/declarations.custom.json`` for hand-written additions.

File format: GX 1.x's own suite JSON (``name``, ``expectations: [{type, kwargs, meta, severity}]``,
``meta``) without the ids GX assigns in a context, written with sorted keys so regeneration is
byte-stable. Every expectation carries in ``meta``:

- ``name``: stable name (``hs_code_format``, ``not_null__net_mass``...), the key of severity overrides
  (``spec.quality.severity``) and the ``expectation`` column of ``ops.quality_row_failures``;
- ``severity``: ``critical`` (feed held when it fails) or ``warning`` (rows quarantined);
- ``level``: ``structural`` (about the batch) or ``row`` (failing rows are quarantined);
- ``reason_code``, ``reason`` (plain words appended to the bad value), ``column`` (for messages),
  ``columns`` (every column the expectation reads; skipped when the batch lacks one of them);
- optionally ``value_digits``: the failing value is shown rounded to that many decimals (rounded by
  the gate, so that the reason reads the same whatever engine the warehouse is on).

Row-level expectations that GX cannot run natively on DuckDB (regex, parsing, ranges) are
``UnexpectedRowsExpectation`` whose query returns ``_feed, _source_file, _source_line, value`` from
``{batch}``; braces inside regexes are doubled because GX formats the query with ``str.format``.
The queries are written in the SQL DuckDB and PostgreSQL share plus the project's functions
``ts_full_match`` and ``ts_try_double``, which the gate renders for the warehouse engine
(``tradesentry.quality.dialect``); hand-written queries that must run on both engines use them too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tradesentry.feeds.spec import REQUIRED_FIELDS, FeedSpec

GENERATOR = "tradesentry.quality.suites"
HARMONISED_PREFIX = "harmonised."
HARMONISED_RELATION = "intermediate.int_declarations_converted"
# Columns validate_harmonised reads from HARMONISED_RELATION.
HARMONISED_COLUMNS = (
    "feed",
    "night",
    "source_file",
    "source_line",
    "row_status",
    "reporter_country",
    "declaration_id",
    "item_no",
    "hs6",
    "customs_value_usd",
    "net_mass_kg",
)
# Wide plausibility bounds of a unit value (USD per kg) after conversion.
MIN_UNIT_VALUE_USD_PER_KG = 1e-4
MAX_UNIT_VALUE_USD_PER_KG = 1e7

HS_PATTERNS = {
    "hs6": r"[0-9]{6}",
    "dotted": r"[0-9]{4}\.[0-9]{2}(\.[0-9]{2}){0,2}",
    "national8": r"[0-9]{8}",
    "national10": r"[0-9]{10}",
}
HS_WORDS = {
    "hs6": "not a 6-digit HS code",
    "dotted": "not a dotted HS code like 8471.30 or 8471.30.00",
    "national8": "not an 8-digit tariff line",
    "national10": "not a 10-digit tariff line",
}
COUNTRY_PATTERNS = {"alpha2": r"[A-Z]{2}", "alpha3": r"[A-Z]{3}", "numeric": r"[0-9]{3}"}
COUNTRY_WORDS = {
    "alpha2": "not a 2-letter ISO country code",
    "alpha3": "not a 3-letter ISO country code",
    "numeric": "not a 3-digit numeric country code",
}
_STRFTIME_RE = {
    "%Y": r"[0-9]{4}",
    "%y": r"[0-9]{2}",
    "%m": r"[0-9]{1,2}",
    "%d": r"[0-9]{1,2}",
    "%H": r"[0-9]{1,2}",
    "%M": r"[0-9]{2}",
    "%S": r"[0-9]{2}",
    "%b": r"[A-Za-z]{3}",
    "%B": r"[A-Za-z]+",
    "%j": r"[0-9]{1,3}",
    "%%": "%",
}


# ---------------------------------------------------------------- helpers


def qi(name: str) -> str:
    """Quote an SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def ql(value: str) -> str:
    """Quote an SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def _braces(sql: str) -> str:
    """Escape braces for GX's str.format of unexpected_rows_query ({batch} stays a field)."""
    return sql.replace("{", "{{").replace("}", "}}")


def date_regex(date_format: str) -> str:
    """A regex that roughly matches dates written with a strftime format."""
    out: list[str] = []
    i = 0
    while i < len(date_format):
        tok = date_format[i : i + 2]
        if tok in _STRFTIME_RE:
            out.append(_STRFTIME_RE[tok])
            i += 2
        else:
            out.append(re.escape(date_format[i]))
            i += 1
    return "".join(out)


def numeric_sql(column_sql: str, decimal: str, thousands: str) -> str:
    """SQL that parses a VARCHAR number written with the feed's separators (NULL when it cannot), in
    the suites' portable spelling (``ts_try_double``, see dialect.py)."""
    expr = f"trim({column_sql})"
    if thousands:
        expr = f"replace({expr}, {ql(thousands)}, '')"
    if decimal != ".":
        expr = f"replace({expr}, {ql(decimal)}, '.')"
    return f"ts_try_double({expr})"


def _rows_query(
    value_sql: str, where: str, key_cols: tuple[str, str, str] = ("_feed", "_source_file", "_source_line")
) -> str:
    f, s, ln = key_cols
    sel = (
        f"SELECT {qi(f)} AS _feed, {qi(s)} AS _source_file, {qi(ln)} AS _source_line, "
        f"{value_sql} AS value FROM {{batch}} WHERE {where}"
    )
    return sel


def _exp(
    type_: str,
    kwargs: dict[str, Any],
    *,
    name: str,
    severity: str,
    level: str,
    reason_code: str,
    reason: str,
    column: str | None,
    columns: list[str],
    value_digits: int | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "severity": severity,
        "level": level,
        "reason_code": reason_code,
        "reason": reason,
        "column": column,
        "columns": columns,
    }
    if value_digits is not None:
        meta["value_digits"] = value_digits
    return {
        "type": type_,
        "kwargs": kwargs,
        "severity": severity,
        "meta": meta,
    }


def _apply_overrides(expectations: list[dict[str, Any]], overrides: dict[str, str]) -> None:
    for e in expectations:
        sev = overrides.get(e["meta"]["name"])
        if sev:
            e["severity"] = sev
            e["meta"]["severity"] = sev


# ---------------------------------------------------------------- raw suites


def raw_suite(spec: FeedSpec) -> dict[str, Any]:
    """The generated suite of one feed's raw table (``raw.<feed>__declarations``, all VARCHAR)."""
    cols: dict[str, str] = {str(k): v for k, v in spec.columns.items()}
    fmt = spec.format
    conv = spec.conventions
    ex: list[dict[str, Any]] = []

    # Structural (critical): the batch has rows, every mapped column is there.
    ex.append(
        _exp(
            "expect_table_row_count_to_be_between",
            {"min_value": 1, "max_value": None},
            name="row_count_positive",
            severity="critical",
            level="structural",
            reason_code="zero_rows",
            reason="the night's file has no rows",
            column=None,
            columns=[],
        )
    )
    for field, col in cols.items():
        ex.append(
            _exp(
                "expect_column_to_exist",
                {"column": col},
                name=f"column_present__{field}",
                severity="critical",
                level="structural",
                reason_code="missing_column",
                reason=f"column '{col}' ({field}) is missing from the file",
                column=col,
                columns=[],
            )
        )

    # Row level (warning).
    for field in REQUIRED_FIELDS:
        col = cols[field]
        ex.append(
            _exp(
                "expect_column_values_to_not_be_null",
                {"column": col},
                name=f"not_null__{field}",
                severity="warning",
                level="row",
                reason_code="missing_value",
                reason=f"{field} is required",
                column=col,
                columns=[col],
            )
        )

    flow = cols["flow"]
    ex.append(
        _exp(
            "expect_column_values_to_be_in_set",
            {"column": flow, "value_set": sorted(spec.value_maps.flow)},
            name="flow_allowed",
            severity="warning",
            level="row",
            reason_code="bad_flow",
            reason="not one of the feed's flow codes " + ", ".join(sorted(spec.value_maps.flow)),
            column=flow,
            columns=[flow],
        )
    )

    hs = cols["hs_code"]
    hs_re = HS_PATTERNS[conv.hs_format]
    ex.append(
        _exp(
            "unexpected_rows_expectation",
            {
                "unexpected_rows_query": _rows_query(
                    qi(hs),
                    f"{qi(hs)} IS NOT NULL AND NOT ts_full_match(trim({qi(hs)}), {_braces(ql(hs_re))})",
                ),
                "description": f"{hs} matches {hs_re} (hs_format {conv.hs_format})",
            },
            name="hs_code_format",
            severity="warning",
            level="row",
            reason_code="bad_hs_code",
            reason=f"{HS_WORDS[conv.hs_format]} (hs_format {conv.hs_format})",
            column=hs,
            columns=[hs],
        )
    )

    c_re = COUNTRY_PATTERNS[conv.country_code]
    mapped_codes = sorted(spec.value_maps.country)
    for field in ("partner_country", "origin_country"):
        if field not in cols:
            continue
        col = cols[field]
        where = f"{qi(col)} IS NOT NULL AND NOT ts_full_match(trim({qi(col)}), {_braces(ql(c_re))})"
        if mapped_codes:
            where += (
                " AND trim(" + qi(col) + ") NOT IN (" + ", ".join(_braces(ql(c)) for c in mapped_codes) + ")"
            )
        ex.append(
            _exp(
                "unexpected_rows_expectation",
                {
                    "unexpected_rows_query": _rows_query(qi(col), where),
                    "description": f"{col} matches {c_re} (country_code {conv.country_code})"
                    + (" or a code of value_maps.country" if mapped_codes else ""),
                },
                name=f"{field}_format",
                severity="warning",
                level="row",
                reason_code="bad_country_code",
                reason=COUNTRY_WORDS[conv.country_code]
                + (" nor a code of value_maps.country" if mapped_codes else ""),
                column=col,
                columns=[col],
            )
        )

    dcol = cols["declaration_date"]
    d_re = date_regex(fmt.date_format)
    ex.append(
        _exp(
            "unexpected_rows_expectation",
            {
                "unexpected_rows_query": _rows_query(
                    qi(dcol),
                    f"{qi(dcol)} IS NOT NULL AND NOT ts_full_match(trim({qi(dcol)}), {_braces(ql(d_re))})",
                ),
                "description": f"{dcol} looks like a date written {fmt.date_format}",
            },
            name="declaration_date_format",
            severity="warning",
            level="row",
            reason_code="bad_date",
            reason=f"not a date written {fmt.date_format}",
            column=dcol,
            columns=[dcol],
        )
    )

    sep_words = f"decimal '{fmt.decimal}'" + (f", thousands '{fmt.thousands}'" if fmt.thousands else "")
    for field in ("customs_value", "net_mass", "quantity"):
        if field not in cols:
            continue
        col = cols[field]
        parsed = numeric_sql(qi(col), fmt.decimal, fmt.thousands)
        ex.append(
            _exp(
                "unexpected_rows_expectation",
                {
                    "unexpected_rows_query": _rows_query(
                        qi(col),
                        f"{qi(col)} IS NOT NULL AND trim({qi(col)}) <> '' AND {_braces(parsed)} IS NULL",
                    ),
                    "description": f"{col} parses as a number ({sep_words})",
                },
                name=f"{field}_numeric",
                severity="warning",
                level="row",
                reason_code="not_numeric",
                reason=f"not a number ({sep_words})",
                column=col,
                columns=[col],
            )
        )

    q = spec.quality
    for field, lo, hi in (
        ("customs_value", q.min_customs_value, q.max_customs_value),
        ("net_mass", q.min_net_mass, q.max_net_mass),
    ):
        col = cols[field]
        parsed = numeric_sql(qi(col), fmt.decimal, fmt.thousands)
        ex.append(
            _exp(
                "unexpected_rows_expectation",
                {
                    "unexpected_rows_query": _rows_query(
                        qi(col),
                        f"{_braces(parsed)} IS NOT NULL AND {_braces(parsed)} NOT BETWEEN {lo!r} AND {hi!r}",
                    ),
                    "description": f"{col} between {lo:g} and {hi:g}",
                },
                name=f"{field}_range",
                severity="warning",
                level="row",
                reason_code="out_of_range",
                reason=f"outside the range {lo:g} to {hi:g}",
                column=col,
                columns=[col],
            )
        )

    _apply_overrides(ex, dict(q.severity))
    return {
        "name": f"raw.{spec.feed}",
        "expectations": ex,
        "meta": {
            "generated_by": GENERATOR,
            "feed": spec.feed,
            "country": spec.country,
            "relation": f"raw.{spec.raw_table}",
            "notes": f"Generated from feeds/{spec.feed}.yaml: do not edit. "
            f"Hand-written additions go to raw/{spec.feed}.custom.json.",
        },
    }


# ---------------------------------------------------------------- harmonised suite


def harmonised_suite() -> dict[str, Any]:
    """Checks on ``intermediate.int_declarations_converted`` rows with row_status 'ok' for one night."""
    keys = ("feed", "source_file", "source_line")
    p = HARMONISED_PREFIX
    uv = "customs_value_usd / net_mass_kg"
    ex = [
        _exp(
            "expect_column_values_to_not_be_null",
            {"column": "customs_value_usd"},
            name=p + "customs_value_usd_not_null",
            severity="warning",
            level="row",
            reason_code="missing_value",
            reason="no customs value in USD after conversion",
            column="customs_value_usd",
            columns=["customs_value_usd"],
        ),
        _exp(
            "unexpected_rows_expectation",
            {
                "unexpected_rows_query": _rows_query("customs_value_usd", "customs_value_usd < 0", keys),
                "description": "customs_value_usd is not negative",
            },
            name=p + "customs_value_usd_non_negative",
            severity="warning",
            level="row",
            reason_code="negative_value",
            reason="negative value",
            column="customs_value_usd",
            columns=["customs_value_usd"],
        ),
        _exp(
            "unexpected_rows_expectation",
            {
                "unexpected_rows_query": _rows_query("net_mass_kg", "net_mass_kg < 0", keys),
                "description": "net_mass_kg is not negative",
            },
            name=p + "net_mass_kg_non_negative",
            severity="warning",
            level="row",
            reason_code="negative_value",
            reason="negative mass",
            column="net_mass_kg",
            columns=["net_mass_kg"],
        ),
        _exp(
            "unexpected_rows_expectation",
            {
                "unexpected_rows_query": _rows_query(
                    "hs6", "hs6 IS NULL OR NOT ts_full_match(hs6, " + _braces(ql("[0-9]{6}")) + ")", keys
                ),
                "description": "hs6 is six digits",
            },
            name=p + "hs6_format",
            severity="warning",
            level="row",
            reason_code="bad_hs_code",
            reason="not a 6-digit HS code after conversion",
            column="hs6",
            columns=["hs6"],
        ),
        _exp(
            "unexpected_rows_expectation",
            {
                "unexpected_rows_query": _rows_query(
                    uv,
                    f"customs_value_usd > 0 AND net_mass_kg > 0 AND ({uv} < {MIN_UNIT_VALUE_USD_PER_KG!r} "
                    f"OR {uv} > {MAX_UNIT_VALUE_USD_PER_KG!r})",
                    keys,
                ),
                "description": f"unit value between {MIN_UNIT_VALUE_USD_PER_KG:g} and "
                f"{MAX_UNIT_VALUE_USD_PER_KG:g} USD per kg",
            },
            name=p + "unit_value_plausible",
            severity="warning",
            level="row",
            reason_code="implausible_unit_value",
            reason=f"unit value in USD per kg outside {MIN_UNIT_VALUE_USD_PER_KG:g} to {MAX_UNIT_VALUE_USD_PER_KG:g}",
            column="customs_value_usd / net_mass_kg",
            columns=["customs_value_usd", "net_mass_kg"],
            value_digits=6,
        ),
        _exp(
            "unexpected_rows_expectation",
            {
                # Every repeat of a key after its first line is unexpected; the first one goes through.
                "unexpected_rows_query": "SELECT _feed, _source_file, _source_line, value FROM ("
                "SELECT feed AS _feed, source_file AS _source_file, source_line AS _source_line, "
                "reporter_country || '|' || declaration_id || '|' || CAST(item_no AS VARCHAR) AS value, "
                "row_number() OVER (PARTITION BY reporter_country, declaration_id, item_no, night, source_file "
                "ORDER BY source_line) AS _n FROM {batch}) AS d WHERE _n > 1",
                "description": "(reporter_country, declaration_id, item_no, night, source_file) is unique",
            },
            name=p + "declaration_key_unique",
            severity="warning",
            level="row",
            reason_code="duplicate_key",
            reason="the declaration key repeats an earlier line of the same file",
            column="declaration key",
            columns=["reporter_country", "declaration_id", "item_no", "night", "source_file"],
        ),
    ]
    return {
        "name": "harmonised.declarations",
        "expectations": ex,
        "meta": {
            "generated_by": GENERATOR,
            "relation": HARMONISED_RELATION,
            "filter": "row_status = 'ok' and night = <night>",
            "notes": "Generated by tradesentry.quality.suites: do not edit. "
            "Hand-written additions go to harmonised/declarations.custom.json.",
        },
    }


# ---------------------------------------------------------------- files


def dumps(suite: dict[str, Any]) -> str:
    return json.dumps(suite, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def raw_path(expectations_dir: Path, feed: str) -> Path:
    return Path(expectations_dir) / "raw" / f"{feed}.json"


def custom_path(path: Path) -> Path:
    return path.with_name(path.name.removesuffix(".json") + ".custom.json")


def harmonised_path(expectations_dir: Path) -> Path:
    return Path(expectations_dir) / "harmonised" / "declarations.json"


def _wanted(feeds: Iterable[FeedSpec], expectations_dir: Path) -> dict[Path, str]:
    out = {raw_path(expectations_dir, f.feed): dumps(raw_suite(f)) for f in feeds}
    out[harmonised_path(expectations_dir)] = dumps(harmonised_suite())
    return out


def generate_suites(feeds: Iterable[FeedSpec], expectations_dir: Path) -> list[Path]:
    """Write every generated suite (raw per feed + harmonised); only files whose text changes are
    rewritten. Returns the paths of all generated suites."""
    paths: list[Path] = []
    for path, text in _wanted(feeds, expectations_dir).items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths


def stale_suites(feeds: Iterable[FeedSpec], expectations_dir: Path) -> list[str]:
    """Generated suite files that are missing or differ from what the specs generate, plus generated
    raw suites of feeds that no longer exist; paths relative to ``expectations_dir``."""
    base = Path(expectations_dir)
    wanted = _wanted(feeds, base)
    out = [
        str(p.relative_to(base))
        for p, text in wanted.items()
        if not p.exists() or p.read_text(encoding="utf-8") != text
    ]
    raw_dir = base / "raw"
    if raw_dir.is_dir():
        for p in sorted(raw_dir.glob("*.json")):
            if p.name.endswith(".custom.json") or p in wanted:
                continue
            out.append(str(p.relative_to(base)))
    return sorted(out)


def load_suite(path: Path) -> dict[str, Any]:
    """A generated suite file merged with its hand-written ``.custom.json`` beside it."""
    suite = json.loads(Path(path).read_text(encoding="utf-8"))
    return merge_custom(suite, custom_path(Path(path)))


def merge_custom(suite: dict[str, Any], cpath: Path) -> dict[str, Any]:
    """Merge hand-written expectations (``{"expectations": [...]}`` or a bare list) into a suite.

    A custom expectation with the ``meta.name`` of a generated one replaces it; others are appended
    (after the generated ones: the order decides which failure a row is quarantined under). Custom
    expectations default to severity warning, and to level row for column map expectations and
    UnexpectedRowsExpectation (whose query must return ``_source_file`` and ``_source_line``).
    """
    suite = json.loads(json.dumps(suite))
    if not cpath.exists():
        return suite
    custom = json.loads(cpath.read_text(encoding="utf-8"))
    items = custom.get("expectations", []) if isinstance(custom, dict) else custom
    by_name = {e["meta"]["name"]: i for i, e in enumerate(suite["expectations"])}
    for e in items:
        e = normalise_custom(e, cpath)
        name = e["meta"]["name"]
        if name in by_name:
            suite["expectations"][by_name[name]] = e
        else:
            by_name[name] = len(suite["expectations"])
            suite["expectations"].append(e)
    return suite


_ROW_TYPES_PREFIX = ("expect_column_values_", "expect_column_pair_values_", "expect_multicolumn_values_")


def normalise_custom(e: dict[str, Any], where: Path) -> dict[str, Any]:
    e = json.loads(json.dumps(e))
    meta = e.setdefault("meta", {})
    if "type" not in e or not meta.get("name"):
        raise ValueError(f"{where}: every expectation needs a 'type' and a meta.name")
    row = e["type"] == "unexpected_rows_expectation" or e["type"].startswith(_ROW_TYPES_PREFIX)
    meta.setdefault("level", "row" if row else "structural")
    sev = e.get("severity") or meta.get("severity") or "warning"
    e["severity"] = meta["severity"] = sev
    meta.setdefault("reason_code", meta["name"])
    meta.setdefault("reason", e.get("kwargs", {}).get("description") or f"fails {meta['name']}")
    col = e.get("kwargs", {}).get("column")
    meta.setdefault("column", col)
    meta.setdefault("columns", [col] if col else [])
    e.setdefault("kwargs", {})
    return e


def to_gx_suite(
    suite: dict[str, Any], columns: set[str] | None = None, engine: str = "duckdb"
) -> tuple[Any, list[dict[str, Any]]]:
    """Build a GX ExpectationSuite from a suite dict, its queries rendered for the warehouse
    ``engine`` (dialect.render). Expectations that read a column the batch lacks (``columns`` given)
    are left out and returned as skipped (the missing column is reported by its own structural
    expectation)."""
    import great_expectations as gx
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    from tradesentry.quality.dialect import render

    kept, skipped = [], []
    for e in suite["expectations"]:
        need = set(e["meta"].get("columns") or [])
        if columns is not None and not need <= columns:
            skipped.append(e)
            continue
        kwargs = dict(e["kwargs"])
        if isinstance(kwargs.get("unexpected_rows_query"), str):
            kwargs["unexpected_rows_query"] = render(kwargs["unexpected_rows_query"], engine)
        kept.append(
            ExpectationConfiguration(
                type=e["type"], kwargs=kwargs, meta=e["meta"], severity=e.get("severity", "warning")
            ).to_domain_obj()
        )
    return gx.ExpectationSuite(name=suite["name"], expectations=kept, meta=suite.get("meta", {})), skipped


def main(argv: list[str] | None = None) -> int:
    """``python -m tradesentry.quality.suites [--check]``: regenerate the committed suites from
    ``feeds/*.yaml`` (or, with --check, list the stale ones and exit 1)."""
    import argparse

    from tradesentry.feeds.loader import load_feeds
    from tradesentry.settings import get_settings

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--check", action="store_true")
    args = p.parse_args(argv)
    settings = get_settings()
    specs = load_feeds(settings.feeds_dir)
    if args.check:
        stale = stale_suites(specs, settings.expectations_dir)
        for s in stale:
            print(f"stale: {s}")
        return 1 if stale else 0
    for path in generate_suites(specs, settings.expectations_dir):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
