"""Tier 1 (docs/deployment.md): Airflow's metadata in PostgreSQL, LocalExecutor, real processes
(api-server, dag-processor, scheduler). The nightly DAG is triggered for a sample night and must
succeed, every task of it; then everything is stopped and nothing may be left running."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tiers

pytestmark = [pytest.mark.tier, pytest.mark.timeout(300)]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tiers.Stack]:
    tiers.require()
    s = tiers.Stack(root=tmp_path)
    try:
        yield s
    finally:
        leftovers = s.close()  # runs on failure too
        print("stop (s):", {k: round(v, 1) for k, v in s.timings.items() if k.startswith("stop")})
        assert not leftovers, f"processes left behind (killed now): {leftovers}"


def test_nightly_dag_on_postgres_with_local_executor(stack: tiers.Stack) -> None:
    t0 = time.monotonic()
    pg = tiers.start_postgres(stack)
    env = tiers.airflow_env(stack, pg, "LocalExecutor")
    tiers.generate_sample(env)
    api = tiers.start_airflow(stack, env, celery=False)
    result = tiers.trigger_and_wait(stack, env, pg, api)
    stack.timings["total until run end"] = time.monotonic() - t0
    print("tier 1 timings (s):", {k: round(v, 1) for k, v in stack.timings.items()},
          f"peak memory {stack.peak_memory_mb:.0f} MB")
    print(tiers.task_table(result))

    assert result.night == tiers.NIGHT
    assert result.state == "success", tiers.describe_failure(stack, result)
    ids = {t["task_id"] for t in result.tasks}
    assert {"list_feeds", "pull", *tiers.WAREHOUSE_TASKS} <= ids
    assert all(t["state"] == "success" for t in result.tasks), tiers.describe_failure(stack, result)
    assert len([t for t in result.tasks if t["task_id"] == "pull"]) == 8  # seven countries + exchange rates
    assert all(t["pool"] == tiers.WAREHOUSE_POOL for t in result.tasks if t["task_id"] in tiers.WAREHOUSE_TASKS)
    assert (Path(env["TRADESENTRY_DATA_DIR"]) / "reports" / "runs" / tiers.NIGHT.isoformat() / "summary.json").exists()
