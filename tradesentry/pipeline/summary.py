"""The run summary: per feed landed / harmonised / quarantined / held, anomalies by kind, where to look.

Written as JSON to `data/reports/runs/<night>/summary.json`; the CLI prints it, the review app shows
it, alerts can read it.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb

from tradesentry.feeds.loader import load_all
from tradesentry.feeds.spec import FeedSpec
from tradesentry.pipeline.runs import read_record, read_records
from tradesentry.settings import Settings
from tradesentry.warehouse import open_settings_warehouse


def summary_path(settings: Settings, night: date) -> Path:
    return settings.reports / "runs" / night.isoformat() / "summary.json"


def _exists(con: duckdb.DuckDBPyConnection, schema: str, table: str) -> bool:
    row = con.execute(
        "select count(*) from information_schema.tables where table_schema = ? and table_name = ?", [schema, table]
    ).fetchone()
    return bool(row and row[0])


def _count(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> int:
    row = con.execute(sql, params).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def build_summary(settings: Settings, night: date, started_at: datetime | None = None) -> dict[str, Any]:
    specs = load_all(settings.feeds_dir)
    pulls = read_records(settings, night, "pull-")
    raw_gate = read_record(settings, night, "validate-raw") or {}
    raw_feeds = raw_gate.get("feeds", {}) if isinstance(raw_gate, dict) else {}
    feeds: dict[str, Any] = {}
    anomalies: dict[str, int] = {}
    with open_settings_warehouse(settings) as con:
        have_marts = _exists(con, "marts", "fct_declarations")
        for spec in specs:
            if not isinstance(spec, FeedSpec):
                continue
            entry: dict[str, Any] = {"country": spec.country, "name": spec.name}
            pull = pulls.get(spec.feed)
            raw_tbl = spec.raw_table
            landed = 0
            if _exists(con, "raw", raw_tbl):
                landed = _count(con, f'select count(*) from raw."{raw_tbl}" where _night = ?', [night])
            landed += _count(
                con, "select count(*) from raw.parse_rejects where feed = ? and night = ?", [spec.feed, night]
            )
            entry["landed"] = landed
            if have_marts:
                p = [spec.feed, night]
                entry["harmonised"] = _count(
                    con, "select count(*) from marts.fct_declarations where feed = ? and night = ?", p
                ) + _count(con, "select count(*) from marts.fct_declaration_history where feed = ? and night = ?", p)
                entry["quarantined"] = _count(
                    con, "select count(*) from marts.fct_quarantine where feed = ? and night = ?", p
                )
                entry["held"] = _count(con, "select count(*) from marts.fct_held_rows where feed = ? and night = ?", p)
                entry["held_reasons"] = dict(
                    con.execute(
                        "select hold_reason_code, count(*) from marts.fct_held_rows where feed = ? and night = ? "
                        "group by 1 order by 2 desc, 1",
                        p,
                    ).fetchall()
                )
                entry["reasons"] = dict(
                    con.execute(
                        "select reason_code, count(*) from marts.fct_quarantine where feed = ? and night = ? "
                        "group by 1 order by 2 desc, 1",
                        p,
                    ).fetchall()
                )
            hold = con.execute(
                "select reason from ops.feed_holds where feed = ? and night = ? and lifted_at is null limit 1",
                [spec.feed, night],
            ).fetchone()
            if pull is not None and pull.get("status") != "ok":
                entry["status"] = "failed"
                entry["error"] = pull.get("error")
            elif hold:
                entry["status"] = "held"
                entry["error"] = hold[0]
            elif landed == 0:
                entry["status"] = "missing"
                entry["error"] = "no file landed for this night"
            else:
                entry["status"] = "ok"
            gate = raw_feeds.get(spec.feed) if isinstance(raw_feeds, dict) else None
            if gate:
                entry["quality"] = gate
                entry["warnings"] = _gate_warnings(gate)
            feeds[spec.feed] = entry
        if _exists(con, "detection", "anomalies"):
            anomalies = dict(
                con.execute(
                    "select kind, count(*) from detection.anomalies where night = ? group by 1 order by 2 desc, 1",
                    [night],
                ).fetchall()
            )
    detect = read_record(settings, night, "detect") or {}
    data_docs = settings.reports / "data_docs" / "index.html"
    summary: dict[str, Any] = {
        "night": night.isoformat(),
        "run_id": os.environ.get("AIRFLOW_CTX_DAG_RUN_ID") or f"local-{datetime.now(UTC):%Y%m%dT%H%M%S}",
        "started_at": (started_at or datetime.now(UTC)).isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "synthetic": any(getattr(s, "synthetic", False) for s in specs),
        "feeds": feeds,
        "anomalies": anomalies,
        "anomalies_total": sum(anomalies.values()),
        "declarations_scored": detect.get("rows_scored"),
        "paths": {
            "warehouse": str(settings.warehouse),
            "anomalies_csv": str(settings.reports / "runs" / night.isoformat() / "anomalies.csv"),
            "snapshot": str(settings.published / "CURRENT"),
            "data_docs": str(data_docs),
            "logs": str(settings.logs),
            "summary": str(summary_path(settings, night)),
        },
    }
    path = summary_path(settings, night)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(summary, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)
    return summary


def _gate_warnings(gate: dict[str, Any]) -> list[dict[str, str]]:
    """The raw gate's warnings of one feed (volume drop, late file, accepted schema drift, notes) as
    ``{kind, message}``: what a feed that went on still wants a person to know. Critical findings
    are the hold reason (``error``); a missing night is the feed's status."""
    out: list[dict[str, str]] = []
    for group in ("drift", "volume", "freshness", "notes"):
        for f in gate.get(group) or []:
            if f.get("severity") != "warning" or f.get("kind") == "missing_night":
                continue
            out.append({"kind": str(f.get("kind")), "message": str(f.get("message"))})
    return out


def _by_count(counts: dict[str, int] | None) -> list[tuple[str, int]]:
    """Reason counts, most frequent first (the JSON on disk has its keys sorted by name)."""
    return sorted((counts or {}).items(), key=lambda kv: (-kv[1], kv[0]))


def _attention(e: dict[str, Any]) -> list[str]:
    """What to say about one feed under "Feeds that need attention" (nothing when all is well)."""
    lines: list[str] = []
    if e.get("status") != "ok":
        lines.append(str(e.get("error")))
    if e.get("quarantined"):
        reasons = ", ".join(f"{code} {n}" for code, n in _by_count(e.get("reasons")))
        lines.append(f"{e['quarantined']} rows quarantined ({reasons}); see marts.fct_quarantine")
    held_other = [(k, n) for k, n in _by_count(e.get("held_reasons")) if k != "feed_held"]
    if held_other:
        lines.append(
            f"{sum(n for _k, n in held_other)} rows held ("
            + ", ".join(f"{k} {n}" for k, n in held_other)
            + "); released when what they wait for arrives"
        )
    for w in e.get("warnings") or []:
        lines.append(f"{w['kind']}: {w['message']}")
    return lines


def format_summary(summary: dict[str, Any]) -> str:
    """The short text a person reads at the end of a run."""
    lines = [f"Tradesentry nightly run for night {summary['night']}" + (" (SYNTHETIC sample data)" if summary.get("synthetic") else "")]
    lines.append("")
    lines.append(f"{'feed':<6} {'country':<8} {'status':<8} {'landed':>7} {'harmonised':>10} {'quarantined':>11} {'held':>6}")
    for feed, e in sorted(summary["feeds"].items()):
        lines.append(
            f"{feed:<6} {e.get('country', ''):<8} {e.get('status', ''):<8} {e.get('landed', 0):>7} "
            f"{e.get('harmonised', 0):>10} {e.get('quarantined', 0):>11} {e.get('held', 0):>6}"
        )
    problems = [(f, e, _attention(e)) for f, e in sorted(summary["feeds"].items())]
    problems = [p for p in problems if p[2]]
    if problems:
        lines.append("")
        lines.append("Feeds that need attention:")
        for f, e, said in problems:
            head = f"  {f} ({e.get('status')}): "
            lines.append(head + said[0])
            lines.extend(" " * len(head) + s for s in said[1:])
    lines.append("")
    total = summary.get("anomalies_total", 0)
    lines.append(f"Anomalies flagged: {total}")
    for kind, n in summary.get("anomalies", {}).items():
        lines.append(f"  {kind:<32} {n:>6}")
    lines.append("")
    paths = summary["paths"]
    lines.append(f"Anomaly table:       {paths['anomalies_csv']} (warehouse: detection.anomalies)")
    lines.append(f"Published snapshot:  {paths['snapshot']}")
    lines.append(f"Data-quality report: {paths['data_docs']}")
    lines.append(f"Run summary (JSON):  {paths['summary']}")
    lines.append(f"Logs:                {paths['logs']}")
    return "\n".join(lines)
