"""Deterministic synthetic sample data for Tradesentry: seven member feeds, exchange rates, ground truth.

    from tradesentry.samplegen import generate
    info = generate(Path("data/sample_feeds"), date(2026, 8, 30), nights=90, seed=7)

or ``python -m tradesentry.samplegen --out DIR --start 2026-08-30 --nights 90``. The feed
specifications in ``feeds/`` describe the files it writes; everything it writes is labelled synthetic.
"""

from __future__ import annotations

from tradesentry.samplegen.generator import DEFAULT_END, PROFILES, SampleInfo, generate
from tradesentry.samplegen.layouts import normalise_ref

__all__ = ["DEFAULT_END", "PROFILES", "SampleInfo", "generate", "normalise_ref"]
