"""Schema drift: the landed file's columns against the feed spec's mapped columns.

A mapped column the file lacks is *missing*; when the file has an unmapped column close to it by name
(difflib) it is reported as probably *renamed*, naming the closest match. An unmapped column that the
previous file of the feed did not have either is *new*. What happens next follows
``spec.schema_contract``: missing and renamed columns always stop the feed (critical), new columns
stop it with ``on_new_column: stop`` and are a warning with ``accept``.
"""

from __future__ import annotations

import csv
import difflib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tradesentry.feeds.spec import FeedSpec

SIMILARITY_CUTOFF = 0.6


@dataclass(frozen=True)
class DriftFinding:
    kind: str  # missing_column | renamed_column | new_column
    column: str
    closest: str | None
    severity: str  # critical | warning
    message: str
    source_file: str | None = None

    @property
    def reason_code(self) -> str:
        return self.kind

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def closest_column(name: str, candidates: list[str]) -> str | None:
    """The candidate most similar to ``name`` (case-insensitive), or None below the cutoff."""
    if not candidates:
        return None
    lowered = {c.lower(): c for c in candidates}
    exact = lowered.get(name.lower())
    if exact is not None:
        return exact
    best = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=SIMILARITY_CUTOFF)
    return lowered[best[0]] if best else None


def detect_drift(
    spec: FeedSpec,
    file_columns: list[str],
    previous_columns: list[str] | None = None,
    source_file: str | None = None,
) -> list[DriftFinding]:
    """Findings for one file's header. ``previous_columns``: the header of the feed's previous file,
    whose unmapped columns are not new (the spec need not map every column a feed sends)."""
    file_columns = [c for c in file_columns if not c.startswith("_")]
    mapped = list(spec.columns.values())
    mapped_set = set(mapped)
    unmapped = [c for c in file_columns if c not in mapped_set]
    known = set(previous_columns or [])
    new_candidates = [c for c in unmapped if c not in known]
    out: list[DriftFinding] = []
    used: set[str] = set()
    present = set(file_columns)
    for col in mapped:
        if col in present:
            continue
        close = closest_column(col, [c for c in unmapped if c not in used])
        if close is not None:
            used.add(close)
            out.append(
                DriftFinding(
                    "renamed_column",
                    col,
                    close,
                    "critical",
                    f"column '{col}' is missing; the file has '{close}' (closest match)",
                    source_file,
                )
            )
        else:
            out.append(
                DriftFinding(
                    "missing_column",
                    col,
                    None,
                    "critical",
                    f"column '{col}' is missing; the file has no similar column",
                    source_file,
                )
            )
    accept = spec.schema_contract.on_new_column == "accept"
    for col in new_candidates:
        if col in used:
            continue
        close = closest_column(col, mapped)
        hint = f" (closest mapped column '{close}')" if close else ""
        action = "accepted (schema_contract: accept)" if accept else "feed stopped (schema_contract: stop)"
        out.append(
            DriftFinding(
                "new_column",
                col,
                close,
                "warning" if accept else "critical",
                f"new column '{col}' in the file{hint}; {action}",
                source_file,
            )
        )
    return out


def read_header(path: Path, spec: FeedSpec) -> list[str] | None:
    """The header of a landed file, read with the feed's format; None when it cannot be read."""
    fmt = spec.format
    if not fmt.header:
        return None
    try:
        with open(path, newline="", encoding=fmt.encoding) as fh:
            delim = "\t" if fmt.delimiter in ("\\t", "tab") else fmt.delimiter
            row = next(csv.reader(fh, delimiter=delim, quotechar=fmt.quote), None)
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    if row is None:
        return None
    if row and row[0].startswith("\ufeff"):
        row[0] = row[0][1:]
    return row
