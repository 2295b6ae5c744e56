"""Anomaly ids (../shared/CONTRACTS.md): a hash of the kind and the sorted keys of the declarations
involved, never of a score, a run, a rank or a detector version. Standard library only, so the review
app and the demo snapshot use the same function as detection without importing it."""

from __future__ import annotations

import hashlib


def anomaly_id(kind: str, declaration_keys: list[str]) -> str:
    """First 20 hex digits of sha256(kind + "\\n" + "\\n".join(sorted(keys)))."""
    payload = kind + "\n" + "\n".join(sorted(declaration_keys))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:20]
