"""Machine-readable quality reports (for the run summary JSON) and the Data Docs location.

Data Docs (HTML) are built by the gates themselves through GX's ``UpdateDataDocsAction`` into
``<settings.reports>/data_docs/index.html``; validation results behind them are kept under
``<settings.reports>/gx`` so the index lists every run, raw and harmonised.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tradesentry.settings import Settings

if TYPE_CHECKING:
    from tradesentry.quality.gates import HarmonisedGateResult, RawGateResult


def data_docs_index(settings: Settings) -> Path:
    return settings.reports / "data_docs" / "index.html"


def _expectations(outcomes: list[Any]) -> list[dict[str, Any]]:
    return [
        {
            "name": o.name,
            "type": o.type,
            "severity": o.severity,
            "level": o.level,
            "unexpected_count": o.unexpected_count,
            "quarantined_rows": o.quarantined_rows,
            "reason_code": o.reason_code,
            "message": o.message,
        }
        for o in outcomes
    ]


def _findings(items: list[Any]) -> list[dict[str, Any]]:
    out = []
    for f in items:
        d = f.to_dict() if hasattr(f, "to_dict") else dict(vars(f))
        out.append(d)
    return out


def raw_report(result: RawGateResult) -> dict[str, Any]:
    """``{night, seconds, data_docs, held, missing, feeds: {<feed>: {...}}}`` with per feed: status
    (ok|held|missing), rows, source_files, expectations_failed [{name, severity, unexpected_count,
    quarantined_rows, ...}], quarantined_rows, failing_share, hold {reason_code, reason, lifted_at},
    drift, volume, freshness, notes."""
    feeds: dict[str, Any] = {}
    for name, q in sorted(result.feeds.items()):
        feeds[name] = {
            "country": q.country,
            "status": q.status,
            "rows": q.rows,
            "source_files": q.source_files,
            "expectations_evaluated": q.expectations_evaluated,
            "expectations_failed": _expectations(q.expectations_failed),
            "quarantined_rows": q.quarantined_rows,
            "failing_share": q.failing_share,
            "hold": None
            if q.hold_reason_code is None
            else {
                "reason_code": q.hold_reason_code,
                "reason": q.hold_reason,
                "lifted_at": q.hold_lifted_at.isoformat() if q.hold_lifted_at else None,
            },
            "drift": _findings(q.drift),
            "volume": _findings(q.volume),
            "freshness": _findings(q.freshness),
            "notes": _findings(q.notes),
        }
    return {
        "stage": "raw",
        "night": result.night.isoformat(),
        "seconds": result.seconds,
        "data_docs": str(result.data_docs_index) if result.data_docs_index else None,
        "held": result.held,
        "missing": result.missing,
        "feeds": feeds,
    }


def harmonised_report(result: HarmonisedGateResult) -> dict[str, Any]:
    return {
        "stage": "harmonised",
        "night": result.night.isoformat(),
        "seconds": result.seconds,
        "data_docs": str(result.data_docs_index) if result.data_docs_index else None,
        "rows": result.rows,
        "rows_by_feed": dict(sorted(result.rows_by_feed.items())),
        "expectations_evaluated": result.expectations_evaluated,
        "expectations_failed": _expectations(result.expectations_failed),
        "quarantined_rows": result.quarantined_rows,
        "quarantined_by_feed": dict(sorted(result.quarantined_by_feed.items())),
        "notes": _findings(result.notes),
    }


def quality_report(
    raw: RawGateResult | None = None, harmonised: HarmonisedGateResult | None = None
) -> dict[str, Any]:
    """The ``quality`` block the lead puts in the run summary."""
    out: dict[str, Any] = {}
    if raw is not None:
        out["raw"] = raw_report(raw)
    if harmonised is not None:
        out["harmonised"] = harmonised_report(harmonised)
    docs = (raw and raw.data_docs_index) or (harmonised and harmonised.data_docs_index)
    out["data_docs"] = str(docs) if docs else None
    return out


def write_json(report: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
