"""Data-quality gates: Great Expectations on the warehouse through SQL, holds and quarantined rows.

The warehouse is the settings' engine (DuckDB, or PostgreSQL in tier 3), read and written through
``tradesentry.warehouse_io`` (``open_work``): the gates' own queries are the SQL both engines share,
GX gets its datasource from there, the suites' queries are rendered for the engine
(``tradesentry.quality.dialect``), and the failing rows are fetched into DuckDB, where the reasons
are written and ranked the same way for both, before they go to ``ops`` in the warehouse.

Public API (see also report.py):

- ``validate_raw(settings, night, feeds) -> RawGateResult``: validates each feed's raw batch for the
  night (``raw.<feed>__declarations`` where ``_night = night``), checks volume, freshness and schema
  drift, writes ``ops.quality_row_failures`` (stage 'quality') and ``ops.feed_holds``.
- ``validate_harmonised(settings, night) -> HarmonisedGateResult``: validates
  ``intermediate.int_declarations_converted`` rows with ``row_status = 'ok'`` for the night and writes
  their failing rows to ``ops.quality_row_failures``.
- ``lift_hold(settings, feed, night) -> int``: lifts the active hold of a feed and night.

Both gates are idempotent: rerunning a night replaces that gate's rows in ``ops.quality_row_failures``
and keeps at most one active hold per feed and night.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb

from tradesentry.feeds.spec import FeedSpec
from tradesentry.quality import suites as S
from tradesentry.quality.drift import DriftFinding, detect_drift, read_header
from tradesentry.settings import Settings
from tradesentry.warehouse_io import WarehouseReader, add_gx_datasource, open_work

log = logging.getLogger(__name__)

STAGE = "quality"
MIN_VOLUME_HISTORY_NIGHTS = 3
_KEYS = ("_feed", "_source_file", "_source_line")
_HARMONISED_KEYS = ("feed", "source_file", "source_line")


# ---------------------------------------------------------------- results


@dataclass
class Finding:
    kind: str  # volume_drop | missing_night | late_file | suite_missing | ...
    severity: str  # critical | warning
    message: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExpectationOutcome:
    name: str
    type: str
    severity: str
    level: str
    success: bool | None  # None: not evaluated (skipped: the batch lacks a column it reads)
    unexpected_count: int | None
    reason_code: str
    message: str
    quarantined_rows: int = 0


@dataclass
class FeedQuality:
    feed: str
    country: str
    night: date
    status: str = "ok"  # ok | held | missing
    rows: int = 0
    source_files: list[str] = field(default_factory=list)
    expectations_failed: list[ExpectationOutcome] = field(default_factory=list)
    expectations_evaluated: int = 0
    quarantined_rows: int = 0
    failing_share: float = 0.0
    hold_reason_code: str | None = None
    hold_reason: str | None = None
    hold_lifted_at: datetime | None = None
    drift: list[DriftFinding] = field(default_factory=list)
    volume: list[Finding] = field(default_factory=list)
    freshness: list[Finding] = field(default_factory=list)
    notes: list[Finding] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["night"] = self.night.isoformat()
        d["hold_lifted_at"] = self.hold_lifted_at.isoformat() if self.hold_lifted_at else None
        return d


@dataclass
class RawGateResult:
    night: date
    feeds: dict[str, FeedQuality]
    data_docs_index: Path | None = None
    seconds: float = 0.0

    @property
    def held(self) -> list[str]:
        return sorted(f for f, q in self.feeds.items() if q.status == "held")

    @property
    def missing(self) -> list[str]:
        return sorted(f for f, q in self.feeds.items() if q.status == "missing")

    @property
    def ok(self) -> list[str]:
        return sorted(f for f, q in self.feeds.items() if q.status == "ok")

    def to_dict(self) -> dict[str, Any]:
        from tradesentry.quality.report import raw_report

        return raw_report(self)


@dataclass
class HarmonisedGateResult:
    night: date
    rows: int = 0
    expectations_failed: list[ExpectationOutcome] = field(default_factory=list)
    expectations_evaluated: int = 0
    quarantined_rows: int = 0
    quarantined_by_feed: dict[str, int] = field(default_factory=dict)
    rows_by_feed: dict[str, int] = field(default_factory=dict)
    data_docs_index: Path | None = None
    seconds: float = 0.0
    notes: list[Finding] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        from tradesentry.quality.report import harmonised_report

        return harmonised_report(self)


# ---------------------------------------------------------------- warehouse helpers


def _resolved(settings: Settings) -> Settings:
    return settings if settings.warehouse_path is not None else settings.resolve()


def _relation_exists(wh: WarehouseReader, schema: str, name: str) -> bool:
    return bool(wh.columns_of(schema, name))


def _columns(wh: WarehouseReader, schema: str, name: str) -> list[str]:
    return wh.columns_of(schema, name)


def _night_start_utc(night: date, tz: str) -> datetime:
    local = datetime(night.year, night.month, night.day, tzinfo=ZoneInfo(tz))
    return local.astimezone(ZoneInfo("UTC")).replace(tzinfo=None)


# ---------------------------------------------------------------- raw gate: preparation


@dataclass
class _Batch:
    spec: FeedSpec
    query: str
    columns: list[str]
    suite: dict[str, Any]
    result: Any = None  # GX ExpectationSuiteValidationResult
    skipped: list[dict[str, Any]] = field(default_factory=list)


def _volume_and_freshness(
    wh: WarehouseReader,
    settings: Settings,
    spec: FeedSpec,
    night: date,
    q: FeedQuality,
    first_arrival: datetime | None,
    delivered_at: datetime | None = None,
) -> None:
    """Volume against the trailing median, and freshness: the night's file judged by when the source
    delivered it (its modification time at the source, ``delivered_at``) against the night's expected
    delivery, so that a file pulled days later (a backfill, a retry) is not late for that; only when
    the source does not tell its modification time is the file judged by its arrival."""
    k = settings.volume_history_nights
    hist = wh.fetchall(
        "select night, sum(rows_landed) from raw.landed_files where feed = ? and night < ? and night >= ? "
        "group by night order by night",
        [spec.feed, night, night - timedelta(days=k)],
    )
    if len(hist) >= MIN_VOLUME_HISTORY_NIGHTS:
        median = statistics.median(r[1] for r in hist)
        if median > 0 and q.rows < settings.volume_drop_ratio * median:
            q.volume.append(
                Finding(
                    "volume_drop",
                    "warning",
                    f"{q.rows} rows tonight against a median of {median:g} over the last {len(hist)} nights "
                    f"with files (warning below {settings.volume_drop_ratio:g} x median)",
                    {
                        "rows": q.rows,
                        "median": median,
                        "nights": len(hist),
                        "ratio": settings.volume_drop_ratio,
                    },
                )
            )
    hour = spec.source.expected_by_hour
    when = delivered_at or first_arrival
    if hour is not None and when is not None:
        due = _night_start_utc(night, spec.timezone) + timedelta(hours=hour)
        if when > due:
            late_h = (when - due).total_seconds() / 3600
            what = (
                "was last modified at the source"
                if delivered_at is not None
                else "arrived (the source gives no modification time)"
            )
            q.freshness.append(
                Finding(
                    "late_file",
                    "warning",
                    f"the file {what} at {when:%Y-%m-%d %H:%M} UTC, {late_h:.1f} h after it was "
                    f"expected ({due:%Y-%m-%d %H:%M} UTC, expected_by_hour {hour})",
                    {
                        "delivered_at": when.isoformat(),
                        "judged_by": "source_modified_at" if delivered_at is not None else "arrived_at",
                        "arrived_at": first_arrival.isoformat() if first_arrival else None,
                        "expected_by": due.isoformat(),
                        "hours_late": round(late_h, 2),
                    },
                )
            )


def _header(wh: WarehouseReader, settings: Settings, spec: FeedSpec, source_file: str) -> list[str] | None:
    """A landed file's header: ``raw.landed_files.columns`` when the loader recorded it, else the
    first line of the file under the landing folder; None when neither is available."""
    if "columns" in _columns(wh, "raw", "landed_files"):
        rows = wh.fetchall("select columns from raw.landed_files where source_file = ?", [source_file])
        if rows and rows[0][0] is not None:
            return list(rows[0][0])
    return read_header(settings.landing / source_file, spec)


def _previous_header(wh: WarehouseReader, settings: Settings, spec: FeedSpec, night: date) -> list[str] | None:
    prev = wh.fetchall(
        "select source_file from raw.landed_files where feed = ? and night < ? order by night desc, arrived_at desc limit 1",
        [spec.feed, night],
    )
    if not prev:
        return None
    return _header(wh, settings, spec, prev[0][0])


def _load_raw_suite(settings: Settings, spec: FeedSpec, q: FeedQuality) -> dict[str, Any]:
    path = S.raw_path(settings.expectations_dir, spec.feed)
    if path.exists():
        return S.load_suite(path)
    q.notes.append(
        Finding(
            "suite_missing",
            "warning",
            f"{path} does not exist: validated with a suite generated in memory from the spec "
            "(run generate_suites and commit the file)",
        )
    )
    return S.merge_custom(S.raw_suite(spec), S.custom_path(path))


def _prepare_raw(
    wh: WarehouseReader, settings: Settings, night: date, spec: FeedSpec, q: FeedQuality
) -> _Batch | None:
    modified = "source_modified_at" if "source_modified_at" in _columns(wh, "raw", "landed_files") else "null"
    files = wh.fetchall(
        f"select source_file, rows_landed, arrived_at, {modified} from raw.landed_files "
        "where feed = ? and night = ? order by arrived_at, source_file",
        [spec.feed, night],
    )
    if not files:
        q.status = "missing"
        q.freshness.append(
            Finding("missing_night", "warning", f"no file landed for {spec.feed} for the night {night}", {})
        )
        return None
    q.source_files = [f[0] for f in files]
    q.rows = int(sum(f[1] for f in files))
    # The night's first delivery: each file's source time, or its arrival when the source gives none.
    when, from_source = min(((f[3], True) if f[3] is not None else (f[2], False)) for f in files)
    _volume_and_freshness(
        wh, settings, spec, night, q, min(f[2] for f in files), when if from_source else None
    )

    if not _relation_exists(wh, "raw", spec.raw_table):
        q.drift = []
        q.notes.append(Finding("raw_table_missing", "critical", f"raw.{spec.raw_table} does not exist"))
        return _Batch(spec, "", [], {})
    table_cols = _columns(wh, "raw", spec.raw_table)
    headers = [_header(wh, settings, spec, f[0]) for f in files]
    read = [h for h in headers if h is not None]
    if read:
        file_cols = list(dict.fromkeys(c for h in read for c in h))
    else:
        file_cols = [c for c in table_cols if not c.startswith("_")]
    prev = _previous_header(wh, settings, spec, night)
    q.drift = detect_drift(spec, file_cols, prev, source_file=files[-1][0])

    file_set = set(file_cols)
    cols = [c for c in table_cols if c.startswith("_") or c in file_set]
    query = (
        "SELECT " + ", ".join(S.qi(c) for c in cols) + f" FROM raw.{S.qi(spec.raw_table)} "
        f"WHERE _night = DATE '{night.isoformat()}'"
    )
    q.rows = int(wh.fetchall(f"select count(*) from ({query}) AS b")[0][0])
    return _Batch(spec, query, cols, _load_raw_suite(settings, spec, q))


# ---------------------------------------------------------------- GX run


def _gx_context(settings: Settings) -> Any:
    """An ephemeral GX context: suites, validation definitions and checkpoints live in memory (the
    suites come from ``expectations/`` every run); only validation results are kept, under
    ``<reports>/gx/validations``, so that the one Data Docs site ``<reports>/data_docs`` lists every
    run of both gates."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    from tradesentry.quality import gx_duckdb

    gx_duckdb.apply()
    reports = settings.reports
    defaults = InMemoryStoreBackendDefaults(init_temp_docs_sites=False)
    defaults.stores[defaults.validation_results_store_name]["store_backend"] = {
        "class_name": "TupleFilesystemStoreBackend",
        "base_directory": str(reports / "gx" / "validations"),
    }
    cfg = DataContextConfig(
        store_backend_defaults=defaults,
        data_docs_sites={
            "local": {
                "class_name": "SiteBuilder",
                "store_backend": {
                    "class_name": "TupleFilesystemStoreBackend",
                    "base_directory": str(reports / "data_docs"),
                },
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        },
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
    )
    ctx = gx.get_context(mode="ephemeral", project_config=cfg)
    gx_duckdb.quiet()
    return ctx


# The Data Docs index lists the stored validation results; building it reads every one of them, so
# keep a bounded number (about a fortnight of nightly runs of both gates) to keep a run's cost flat.
DOCS_KEEP_RESULTS = 14 * 10


def _prune_results(base: Path, keep: int) -> None:
    files = sorted(base.rglob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in files[keep:]:
        old.unlink(missing_ok=True)


def _run_gx(
    settings: Settings,
    batches: list[tuple[str, str, dict[str, Any], set[str] | None]],
    keys: tuple[str, ...],
    datasource_name: str,
    build_docs: bool = True,
) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """Validate (asset name, query, suite, batch columns) with one checkpoint; returns the GX result per
    asset name and the expectations skipped per asset. Always closes GX's engine."""
    import great_expectations as gx

    from tradesentry.quality import gx_duckdb

    ctx = _gx_context(settings)
    ds = add_gx_datasource(ctx, settings, datasource_name)
    results: dict[str, Any] = {}
    skipped: dict[str, list[dict[str, Any]]] = {}
    try:
        vds = []
        for name, query, suite_dict, cols in batches:
            asset = ds.add_query_asset(name=name, query=query)
            bd = asset.add_batch_definition_whole_table("night")
            suite, skip = S.to_gx_suite(suite_dict, cols, settings.warehouse_engine)
            skipped[name] = skip
            # The context is ephemeral and new for this run, so plain add: add_or_update compares
            # every expectation with a stored copy (quadratic; about 3 s a gate for 7 feeds).
            suite = ctx.suites.add(suite)
            vds.append(ctx.validation_definitions.add(gx.ValidationDefinition(name=name, data=bd, suite=suite)))
        if not vds:
            return results, skipped
        cp = ctx.checkpoints.add(
            gx.Checkpoint(
                name=f"{datasource_name}_gate",
                validation_definitions=vds,
                # Data Docs are built once below, not per validation: GX's action rebuilds the whole
                # site (reloading every stored result) after each validation definition.
                actions=[],
                result_format={
                    "result_format": "SUMMARY",
                    "unexpected_index_column_names": list(keys),
                    "return_unexpected_index_query": True,
                    "partial_unexpected_count": 5,
                },
            )
        )
        run = cp.run()
        for vr in run.run_results.values():
            results[vr.meta["active_batch_definition"]["data_asset_name"]] = vr
        if build_docs:
            _prune_results(settings.reports / "gx" / "validations", DOCS_KEEP_RESULTS)
            # Only this run's pages (and the index): a full rebuild re-renders every kept result,
            # seconds per gate once the store is full.
            ctx.build_data_docs(resource_identifiers=list(run.run_results.keys()))
    finally:
        gx_duckdb.close_datasource(ds)
    return results, skipped


def _raised(exc: Any) -> tuple[bool, str]:
    """GX reports an exception either at the top of exception_info or per metric id."""
    if not isinstance(exc, dict):
        return False, ""
    if exc.get("raised_exception"):
        return True, str(exc.get("exception_message"))
    for v in exc.values():
        if isinstance(v, dict) and v.get("raised_exception"):
            return True, str(v.get("exception_message"))
    return False, ""


def _outcomes(
    vr: Any, skipped: list[dict[str, Any]]
) -> list[tuple[dict[str, Any], ExpectationOutcome, dict[str, Any]]]:
    out = []
    for r in vr.results:
        cfg = r.expectation_config
        meta = dict(cfg.meta or {})
        res = dict(r.result or {})
        exc = r.exception_info or {}
        raised, exc_msg = _raised(exc)
        count = res.get(
            "unexpected_count",
            res.get("observed_value") if cfg.type == "unexpected_rows_expectation" else None,
        )
        msg = meta.get("reason", "")
        if raised:
            msg = f"could not be evaluated: {exc_msg[:300]}"
        elif not r.success and cfg.type == "expect_table_row_count_to_be_between":
            msg = f"{meta.get('reason')} (observed {res.get('observed_value')})"
        elif not r.success and count:
            msg = f"{count} rows: {meta.get('reason')}"
        sev = str(getattr(cfg.severity, "value", cfg.severity) or meta.get("severity", "warning"))
        o = ExpectationOutcome(
            name=meta.get("name", cfg.type),
            type=cfg.type,
            severity=sev,
            level=meta.get("level", "row"),
            success=bool(r.success),
            unexpected_count=int(count) if isinstance(count, (int, float)) else None,
            reason_code=meta.get("reason_code", meta.get("name", cfg.type)),
            message=msg,
        )
        out.append((meta, o, {"type": cfg.type, "kwargs": dict(cfg.kwargs), "result": res, "raised": raised}))
    for e in skipped:
        m = e["meta"]
        out.append(
            (
                m,
                ExpectationOutcome(
                    m["name"],
                    e["type"],
                    m["severity"],
                    m["level"],
                    None,
                    None,
                    m["reason_code"],
                    "not evaluated: the batch lacks column(s) " + ", ".join(m.get("columns") or []),
                ),
                {"type": e["type"], "kwargs": e["kwargs"], "result": {}, "raised": False},
            )
        )
    return out


def _failing_rows_sql(batch_query: str, info: dict[str, Any]) -> str | None:
    """The SQL returning the failing rows of one row-level expectation: the expectation's own
    unexpected_rows_query, or the unexpected_index_query GX returns for a column map expectation
    (repaired: GX pastes a query asset's text after FROM without parentheses)."""
    wrapped = f"({batch_query}) AS batch"
    if info["type"] == "unexpected_rows_expectation":
        return str(info["kwargs"]["unexpected_rows_query"]).format(batch=wrapped)
    q = info["result"].get("unexpected_index_query")
    if not isinstance(q, str):
        return None
    q = q.strip().rstrip(";")
    if f"FROM {batch_query}" in q:
        return q.replace(f"FROM {batch_query}", f"FROM {wrapped}", 1)
    return q


def _collect_failures(
    con: duckdb.DuckDBPyConnection,
    wh: WarehouseReader,
    batch_query: str,
    outcomes: list[tuple[dict[str, Any], ExpectationOutcome, dict[str, Any]]],
    default_feed: str | None,
) -> None:
    """Fill temp table _qf of ``con`` with every failing row of every failed row-level expectation:
    each expectation's failing rows are fetched from the warehouse (temp table _qrows, their values
    with their types), and the reason is written here, in DuckDB, whatever the warehouse engine."""
    con.execute(
        "create or replace temp table _qf (feed varchar, source_file varchar, source_line integer, "
        "expectation varchar, rank integer, reason_code varchar, reason varchar, severity varchar)"
    )
    for rank, (meta, o, info) in enumerate(outcomes):
        if o.level != "row" or o.success is not False or info["raised"]:
            continue
        sql = _failing_rows_sql(batch_query, info)
        if sql is None:
            continue
        wh.into_duckdb(con, "_qrows", sql, temp=True)
        cols = [d[0] for d in con.execute("select * from _qrows limit 0").description]
        low = {c.lower(): c for c in cols}
        for k in ("feed", "source_file", "source_line"):  # GX names the index columns as in the batch
            if f"_{k}" not in low and k in low:
                low[f"_{k}"] = low.pop(k)
        if "_source_file" not in low or "_source_line" not in low:
            log.warning("expectation %s: failing rows query lacks _source_file/_source_line", o.name)
            continue
        keys = {low[k] for k in ("_feed", "_source_file", "_source_line") if k in low}
        rest = [c for c in cols if c not in keys]
        feed_sql = S.qi(low["_feed"]) if "_feed" in low else S.ql(default_feed or "")
        value_sql = "NULL"
        if rest:
            digits = meta.get("value_digits")
            value = S.qi(rest[0]) if digits is None else f"round({S.qi(rest[0])}, {int(digits)})"
            value_sql = f"CAST({value} AS VARCHAR)"
        column = meta.get("column")
        lead = f"column '{column}' " if column else "value "
        reason_sql = (
            f"{S.ql(lead)} || CASE WHEN {value_sql} IS NULL THEN 'is empty' "
            f"ELSE 'has ''' || {value_sql} || '''' END || {S.ql(': ' + str(meta.get('reason', o.name)))}"
        )
        con.execute(
            f"insert into _qf select {feed_sql}, {S.qi(low['_source_file'])}, {S.qi(low['_source_line'])}, "
            f"?, ?, ?, {reason_sql}, ? from _qrows AS f",
            [o.name, rank, o.reason_code, o.severity],
        )
    con.execute("drop table if exists _qrows")


_FAILURE_COLUMNS = (
    "feed", "night", "source_file", "source_line", "stage", "expectation", "reason_code", "reason", "severity",
)  # fmt: skip
_FIRST = (
    "select feed, source_file, source_line, expectation, reason_code, reason, severity from _qf "
    "qualify row_number() over (partition by feed, source_file, source_line order by rank, reason) = 1"
)


# ---------------------------------------------------------------- holds


def _hold(wh: WarehouseReader, feed: str, night: date, code: str, reason: str, now: datetime) -> datetime | None:
    """Insert or refresh the one active hold; returns lifted_at when a person already lifted a hold for
    the same reason (then the feed is not held again)."""
    ((active,),) = wh.fetchall(
        "select count(*) from ops.feed_holds where feed = ? and night = ? and lifted_at is null",
        [feed, night],
    )
    if active:
        wh.execute(
            "update ops.feed_holds set reason_code = ?, reason = ? where feed = ? and night = ? and lifted_at is null",
            [code, reason, feed, night],
        )
        return None
    ((lifted,),) = wh.fetchall(
        "select max(lifted_at) from ops.feed_holds where feed = ? and night = ? and reason_code = ? "
        "and lifted_at is not null",
        [feed, night, code],
    )
    if lifted is not None:
        return lifted  # type: ignore[no-any-return]
    wh.execute(
        "insert into ops.feed_holds (feed, night, reason_code, reason, held_at, lifted_at) values (?, ?, ?, ?, ?, NULL)",
        [feed, night, code, reason, now],
    )
    return None


def lift_hold(settings: Settings, feed: str, night: date) -> int:
    """Lift the active hold of a feed for a night (sets lifted_at); returns how many holds were lifted.
    A rerun of validate_raw for that night does not hold the feed again for the same reason."""
    settings = _resolved(settings)
    with open_work(settings) as (_con, wh), wh.transaction():
        ((n,),) = wh.fetchall(
            "select count(*) from ops.feed_holds where feed = ? and night = ? and lifted_at is null",
            [feed, night],
        )
        wh.execute(
            "update ops.feed_holds set lifted_at = ? where feed = ? and night = ? and lifted_at is null",
            [datetime.now().replace(microsecond=0), feed, night],
        )
    return int(n)


def _decide(
    spec: FeedSpec,
    settings: Settings,
    q: FeedQuality,
    outcomes: list[tuple[dict[str, Any], ExpectationOutcome, dict[str, Any]]],
    failing_rows: int,
) -> list[tuple[str, str]]:
    """The hold reasons of a feed, in a fixed order (schema drift, zero rows, missing columns, other
    critical expectations, too many failing rows)."""
    reasons: list[tuple[str, str]] = []
    for n in q.notes:
        if n.severity == "critical":
            reasons.append((n.kind, n.message))
    drift_cols = set()
    for d in q.drift:
        if d.severity == "critical":
            reasons.append((d.reason_code, d.message))
            drift_cols.add(d.column)
    by_kind: dict[str, list[ExpectationOutcome]] = {}
    for meta, o, _info in outcomes:
        if o.success is False and o.severity == "critical":
            if o.reason_code == "missing_column" and meta.get("column") in drift_cols:
                continue
            by_kind.setdefault(o.reason_code, []).append(o)
    for code in ("zero_rows", "missing_column"):
        for o in by_kind.pop(code, []):
            reasons.append((code, o.message))
    for code, os_ in sorted(by_kind.items()):
        for o in os_:
            reasons.append((code, f"critical expectation {o.name} failed: {o.message}"))
    share = spec.quality.max_failing_share
    if share is None:
        share = settings.max_failing_share
    if q.rows and failing_rows / q.rows > share:
        reasons.append(
            (
                "too_many_failing_rows",
                f"{failing_rows} of {q.rows} rows ({failing_rows / q.rows:.0%}) fail row-level expectations, "
                f"more than the {share:.0%} allowed",
            )
        )
    return reasons


# ---------------------------------------------------------------- raw gate


def validate_raw(
    settings: Settings, night: date, feeds: list[FeedSpec], build_docs: bool = True
) -> RawGateResult:
    """Validate each feed's raw batch for the night; hold the feeds that fail a critical check.

    Writes, idempotently: ``ops.quality_row_failures`` (the feed's rows for this night and stage
    'quality' from this gate are replaced: one row per failing source line, the first failing
    expectation in suite order) and ``ops.feed_holds`` (one active hold per feed and night; a clean
    rerun lifts a hold this gate set). Builds Data Docs under ``<reports>/data_docs``.
    """
    return validate_raw_nights(settings, [night], feeds, build_docs)[night]


def _outcomes_for_night(
    outcomes: list[tuple[dict[str, Any], ExpectationOutcome, dict[str, Any]]],
    q: FeedQuality,
    columns: list[str],
    failing_all: dict[str, int],
    several: bool,
) -> list[tuple[dict[str, Any], ExpectationOutcome, dict[str, Any]]]:
    """One night's share of outcomes evaluated over a range of nights: row-level results from that
    night's failing rows, table-level ones from that night's own rows and columns."""
    if not several:
        return outcomes
    out = []
    for meta, o, info in outcomes:
        if o.success is None or info["raised"]:
            out.append((meta, o, info))
            continue
        column = meta.get("column")
        if o.level == "row" and column and column not in columns:
            # As a one-night batch would: an expectation on a column the night's file lacks is skipped.
            o2 = replace(o, success=None, unexpected_count=None, message=f"skipped: the file has no column {column!r}")
        elif o.level == "row":
            n = failing_all.get(o.name, 0)
            msg = f"{n} rows: {meta.get('reason')}" if n else ""
            o2 = replace(o, success=n == 0, unexpected_count=n, message=msg or o.message)
        elif o.reason_code == "zero_rows":
            o2 = replace(o, success=q.rows > 0, message=f"{meta.get('reason')} (observed {q.rows})")
        elif o.reason_code == "missing_column":
            o2 = replace(o, success=meta.get("column") in columns)
        else:
            o2 = o
        out.append((meta, o2, info))
    return out


def _drop_absent_column_failures(
    con: duckdb.DuckDBPyConnection,
    outcomes: list[tuple[dict[str, Any], ExpectationOutcome, dict[str, Any]]],
    batches: dict[date, _Batch],
) -> None:
    """In a range batch, a night whose file lacks a column shows NULLs there; a one-night batch would
    have skipped the expectations on that column, so their failing rows of that night are dropped.
    ``_landed``: the feed's landed files (source_file, night) in ``con``."""
    for night, b in batches.items():
        for meta, o, _info in outcomes:
            column = meta.get("column")
            if o.level == "row" and column and column not in b.columns:
                con.execute(
                    "delete from _qf where expectation = ? and source_file in "
                    "(select source_file from _landed where night = ?)",
                    [o.name, night],
                )


def validate_raw_nights(
    settings: Settings, nights: list[date], feeds: list[FeedSpec], build_docs: bool = True
) -> dict[date, RawGateResult]:
    """The raw gate over several nights at once (a backfill): one Great Expectations batch per feed
    covering all the nights, so the fixed cost of each expectation is paid once, not once a night.
    Row failures, drift, volume, freshness and holds are still decided per night."""
    t0 = time.perf_counter()
    settings = _resolved(settings)
    nights = sorted(set(nights))
    several = len(nights) > 1
    results = {n: RawGateResult(night=n, feeds={}) for n in nights}
    per_night: dict[str, dict[date, _Batch]] = {}
    combined: dict[str, _Batch] = {}
    with open_work(settings) as (_con, wh):
        for night in nights:
            for spec in feeds:
                q = FeedQuality(feed=spec.feed, country=spec.country, night=night)
                results[night].feeds[spec.feed] = q
                b = _prepare_raw(wh, settings, night, spec, q)
                if b is not None and b.query:
                    per_night.setdefault(spec.feed, {})[night] = b
        for feed, batches in per_night.items():
            if not several:
                combined[feed] = next(iter(batches.values()))
                continue
            last = batches[max(batches)]
            table_cols = _columns(wh, "raw", last.spec.raw_table)
            wanted = {c for b in batches.values() for c in b.columns}
            cols = [c for c in table_cols if c in wanted]
            in_list = ", ".join(f"DATE '{n.isoformat()}'" for n in sorted(batches))
            query = (
                "SELECT " + ", ".join(S.qi(c) for c in cols) + f" FROM raw.{S.qi(last.spec.raw_table)} "
                f"WHERE _night IN ({in_list})"
            )
            combined[feed] = _Batch(last.spec, query, cols, last.suite)

    gx_results, skipped = _run_gx(
        settings,
        [(f"raw__{f}", b.query, b.suite, set(b.columns)) for f, b in combined.items()],
        _KEYS,
        "warehouse_raw",
        build_docs,
    )
    if gx_results:
        for r in results.values():
            r.data_docs_index = settings.reports / "data_docs" / "index.html"

    now = datetime.now().replace(microsecond=0)
    in_nights = ", ".join(f"DATE '{n.isoformat()}'" for n in nights)
    with open_work(settings) as (con, wh), wh.transaction():
        for spec in feeds:
            b = combined.get(spec.feed)
            outcomes: list[tuple[dict[str, Any], ExpectationOutcome, dict[str, Any]]] = []
            wh.execute(
                f"delete from ops.quality_row_failures where feed = ? and night in ({in_nights}) and stage = ? "
                "and expectation not like 'harmonised.%'",
                [spec.feed, STAGE],
            )
            first_counts: dict[date, dict[str, int]] = {}
            all_counts: dict[date, dict[str, int]] = {}
            if b is not None and f"raw__{spec.feed}" in gx_results:
                outcomes = _outcomes(gx_results[f"raw__{spec.feed}"], skipped.get(f"raw__{spec.feed}", []))
                _collect_failures(con, wh, b.query, outcomes, spec.feed)
                wh.into_duckdb(
                    con,
                    "_landed",
                    f"select source_file, night from raw.landed_files where feed = {S.ql(spec.feed)}",
                    temp=True,
                )
                if several:
                    _drop_absent_column_failures(con, outcomes, per_night.get(spec.feed, {}))
                # A failing row's night is its landed file's night.
                con.execute(
                    "create or replace temp table _qfn as select f.*, l.night from (" + _FIRST + ") f "
                    "join _landed l using (source_file)"
                )
                wh.append_from_duckdb(
                    con,
                    "ops.quality_row_failures",
                    _FAILURE_COLUMNS,
                    f"select feed, night, source_file, source_line, {S.ql(STAGE)}, expectation, reason_code, "
                    "reason, severity from _qfn",
                )
                for n, e, c in con.execute("select night, expectation, count(*) from _qfn group by all").fetchall():
                    first_counts.setdefault(n, {})[e] = int(c)
                for n, e, c in con.execute(
                    "select l.night, q.expectation, count(distinct (q.source_file, q.source_line)) from _qf q "
                    "join _landed l using (source_file) group by all"
                ).fetchall():
                    all_counts.setdefault(n, {})[e] = int(c)
                con.execute("drop table if exists _qf")
                con.execute("drop table if exists _qfn")
                con.execute("drop table if exists _landed")
            for night in nights:
                q = results[night].feeds[spec.feed]
                if q.status == "missing":
                    continue
                nb = per_night.get(spec.feed, {}).get(night)
                night_outcomes = _outcomes_for_night(
                    outcomes, q, nb.columns if nb else [], all_counts.get(night, {}), several
                )
                per = first_counts.get(night, {})
                for _m, o, _i in night_outcomes:
                    o.quarantined_rows = int(per.get(o.name, 0))
                failing = sum(per.values())
                q.expectations_evaluated = sum(1 for _m, o, _i in night_outcomes if o.success is not None)
                q.expectations_failed = [o for _m, o, _i in night_outcomes if o.success is False]
                q.quarantined_rows = failing
                q.failing_share = round(failing / q.rows, 6) if q.rows else 0.0
                reasons = _decide(spec, settings, q, night_outcomes, failing)
                if reasons:
                    code = reasons[0][0]
                    text = "; ".join(dict.fromkeys(r[1] for r in reasons))
                    lifted = _hold(wh, spec.feed, night, code, text, now)
                    q.hold_reason_code, q.hold_reason = code, text
                    if lifted is None:
                        q.status = "held"
                    else:
                        q.status, q.hold_lifted_at = "ok", lifted
                else:
                    wh.execute(
                        "update ops.feed_holds set lifted_at = ? where feed = ? and night = ? and lifted_at is null",
                        [now, spec.feed, night],
                    )
    seconds = round(time.perf_counter() - t0, 3)
    for r in results.values():
        r.seconds = seconds
    return results


# ---------------------------------------------------------------- harmonised gate


def harmonised_query(night: date) -> str:
    return f"SELECT * FROM {S.HARMONISED_RELATION} WHERE row_status = 'ok' AND night = DATE '{night.isoformat()}'"


def validate_harmonised(settings: Settings, night: date, build_docs: bool = True) -> HarmonisedGateResult:
    """Validate the night's converted rows (``intermediate.int_declarations_converted``, row_status
    'ok'). Reads the columns ``suites.HARMONISED_COLUMNS``. Failing rows go to
    ``ops.quality_row_failures`` (stage 'quality', expectation ``harmonised.<name>``), replacing this
    gate's rows for the night; a source line the raw gate already quarantined is not added twice."""
    t0 = time.perf_counter()
    settings = _resolved(settings)
    result = HarmonisedGateResult(night=night)
    schema, name = S.HARMONISED_RELATION.split(".")
    query = harmonised_query(night)
    with open_work(settings) as (_con, wh):
        cols = _columns(wh, schema, name)
        if not cols:
            result.notes.append(
                Finding("relation_missing", "warning", f"{S.HARMONISED_RELATION} does not exist")
            )
            return result
        result.rows_by_feed = {
            str(f): int(n) for f, n in wh.fetchall(f"select feed, count(*) from ({query}) AS b group by 1")
        }
        result.rows = int(sum(result.rows_by_feed.values()))
    path = S.harmonised_path(settings.expectations_dir)
    suite = S.load_suite(path) if path.exists() else S.merge_custom(S.harmonised_suite(), S.custom_path(path))
    if not path.exists():
        result.notes.append(
            Finding("suite_missing", "warning", f"{path} does not exist: used the generated suite")
        )
    gx_results, skipped = _run_gx(
        settings,
        [("harmonised__declarations", query, suite, set(cols))],
        _HARMONISED_KEYS,
        "warehouse_harmonised",
        build_docs,
    )
    result.data_docs_index = settings.reports / "data_docs" / "index.html"
    night_sql = f"DATE '{night.isoformat()}'"
    with open_work(settings) as (con, wh), wh.transaction():
        outcomes = _outcomes(
            gx_results["harmonised__declarations"], skipped.get("harmonised__declarations", [])
        )
        _collect_failures(con, wh, query, outcomes, None)
        wh.execute(
            "delete from ops.quality_row_failures where night = ? and stage = ? and expectation like 'harmonised.%'",
            [night, STAGE],
        )
        # The night's lines already quarantined by the raw gate.
        wh.into_duckdb(
            con,
            "_qf_raw",
            "select feed, source_file, source_line from ops.quality_row_failures "
            f"where night = {night_sql} and stage = {S.ql(STAGE)}",
            temp=True,
        )
        first = (
            f"select * from ({_FIRST}) AS n where not exists (select 1 from _qf_raw o "
            "where o.feed = n.feed and o.source_file = n.source_file and o.source_line = n.source_line)"
        )
        con.execute("create or replace temp table _qf_first as " + first)
        wh.append_from_duckdb(
            con,
            "ops.quality_row_failures",
            _FAILURE_COLUMNS,
            f"select feed, {night_sql}, source_file, source_line, {S.ql(STAGE)}, expectation, reason_code, "
            "reason, severity from _qf_first",
        )
        result.quarantined_by_feed = dict(
            con.execute("select feed, count(*) from _qf_first group by 1").fetchall()
        )
        per = dict(con.execute("select expectation, count(*) from _qf_first group by 1").fetchall())
        con.execute("drop table if exists _qf; drop table if exists _qf_first; drop table if exists _qf_raw")
    for _m, o, _i in outcomes:
        o.quarantined_rows = int(per.get(o.name, 0))
    result.quarantined_rows = int(sum(result.quarantined_by_feed.values()))
    result.expectations_evaluated = sum(1 for _m, o, _i in outcomes if o.success is not None)
    result.expectations_failed = [o for _m, o, _i in outcomes if o.success is False]
    result.seconds = round(time.perf_counter() - t0, 3)
    return result
