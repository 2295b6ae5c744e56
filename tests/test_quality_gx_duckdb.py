"""The run-time fix for GX on DuckDB: without it an expectation fails with IndexError in
resolve_metric_bundle; with it the same expectation passes. Each case runs in a fresh process so
the fix is really absent in the first one (no mocks of GX)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import json, sys
import duckdb
path, fix = sys.argv[1], sys.argv[2] == "fix"
con = duckdb.connect(path)
con.execute("create or replace table t as select i as n from range(5) r(i)")
con.close()
import great_expectations as gx
from tradesentry.quality import gx_duckdb
if fix:
    gx_duckdb.apply()
    gx_duckdb.apply()  # idempotent
ctx = gx.get_context(mode="ephemeral")
gx_duckdb.quiet_context(ctx)
ds = ctx.data_sources.add_sql(name="w", connection_string=gx_duckdb.connection_string(path))
batch = ds.add_table_asset(name="t", table_name="t").add_batch_definition_whole_table("all").get_batch()
r = batch.validate(gx.expectations.ExpectColumnValuesToBeBetween(column="n", min_value=0, max_value=4))
gx_duckdb.close_datasource(ds)
duckdb.connect(path).close()  # the file can be opened again in this process
import great_expectations.execution_engine.sqlalchemy_execution_engine as see
print(json.dumps({"success": r.success, "applied": gx_duckdb.is_applied(),
                  "n_dialects": len(see._PERSISTED_CONNECTION_DIALECTS),
                  "exception": json.dumps(r.exception_info, default=str)}))
"""


def _run(tmp_path: Path, mode: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / f"{mode}.duckdb"), mode],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_fix_turns_index_error_into_a_pass(tmp_path: Path) -> None:
    without = _run(tmp_path, "nofix")
    assert without["success"] is False and without["applied"] is False
    assert "IndexError: list index out of range" in without["exception"]
    assert "resolve_metric_bundle" in without["exception"]
    fixed = _run(tmp_path, "fix")
    assert fixed == {**fixed, "success": True, "applied": True}
    assert fixed["n_dialects"] == without["n_dialects"] + 1
