"""export-scores: every declaration scored in a range of nights, as CSV, higher = more anomalous.

``country,declaration_id,item_no,score``: one line per declaration. A declaration scored on several
nights (its own night, and later as the charged side of a mirror pair or as an orphan export) gets
its highest score. Sorted by score descending, then by key, so the file is the ranking.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import duckdb


def export_scores(con: duckdb.DuckDBPyConnection, night_from: date, night_to: date, out: Path) -> int:
    """Write the CSV to ``out`` (parent folders created; written to a temp name then renamed).
    Returns the number of declarations written."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    query = """
        select reporter_country as country, declaration_id, item_no, max(score) as score
        from detection.scores
        where night between ? and ?
        group by reporter_country, declaration_id, item_no
        order by score desc, country, declaration_id, item_no"""
    rel = con.execute(query, [night_from, night_to]).df()
    rel.to_csv(tmp, index=False, float_format="%.10g")
    tmp.replace(out)
    return len(rel)
