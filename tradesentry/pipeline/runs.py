"""Per-night stage records: small JSON files that the summary, the DAG and alerts read.

Tasks of one night may run in different processes (Airflow workers), so what a stage wants to tell
the summary is written to `data/runs/<night>/<stage>.json` instead of travelling through XCom.
"""

from __future__ import annotations

import json
import os
from datetime import date
from pathlib import Path
from typing import Any

from tradesentry.settings import Settings


def night_run_dir(settings: Settings, night: date) -> Path:
    return settings.runs / night.isoformat()


def write_record(settings: Settings, night: date, name: str, record: dict[str, Any]) -> Path:
    path = night_run_dir(settings, night) / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)
    return path


def read_record(settings: Settings, night: date, name: str) -> dict[str, Any] | None:
    path = night_run_dir(settings, night) / f"{name}.json"
    if not path.exists():
        return None
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def read_records(settings: Settings, night: date, prefix: str) -> dict[str, dict[str, Any]]:
    """Every record `<prefix><key>.json` of a night, by key (e.g. the pull record of each feed)."""
    out: dict[str, dict[str, Any]] = {}
    base = night_run_dir(settings, night)
    for path in sorted(base.glob(f"{prefix}*.json")):
        out[path.stem[len(prefix) :]] = json.loads(path.read_text())
    return out

