"""Tier 2 (docs/deployment.md): CeleryExecutor with Redis as broker and the results in PostgreSQL,
landing on S3-compatible object storage (moto's server on 127.0.0.1) through ObjectStoragePath.

The nightly DAG is triggered for a sample night and must succeed, every task of it run by a Celery
worker; the pulls land on the bucket (nothing on local disk) and the raw load reads them from there;
every task that writes the DuckDB warehouse runs in the one-slot pool and no two of them overlap.
Everything is stopped afterwards and nothing may be left running."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import tiers

pytestmark = [pytest.mark.tier, pytest.mark.timeout(300)]

BUCKET = "tradesentry-landing"
CONN_ID = "aws_landing"


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[tiers.Stack]:
    tiers.require(redis=True, s3=True)
    s = tiers.Stack(root=tmp_path)
    try:
        yield s
    finally:
        leftovers = s.close()  # runs on failure too
        print("stop (s):", {k: round(v, 1) for k, v in s.timings.items() if k.startswith("stop")})
        assert not leftovers, f"processes left behind (killed now): {leftovers}"


def test_nightly_dag_on_celery_with_s3_landing(stack: tiers.Stack) -> None:
    t0 = time.monotonic()
    pg = tiers.start_postgres(stack)
    redis_port = tiers.start_redis(stack)
    endpoint = tiers.start_moto(stack, BUCKET)
    env = tiers.airflow_env(stack, pg, "CeleryExecutor", redis_port=redis_port)
    # Landing on object storage: the URI's user part names the Airflow connection holding the endpoint.
    env["TRADESENTRY_LANDING_URI"] = f"s3://{CONN_ID}@{BUCKET}/landing"
    env[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = tiers.aws_connection(endpoint)
    tiers.generate_sample(env)
    api = tiers.start_airflow(stack, env, celery=True)
    result = tiers.trigger_and_wait(stack, env, pg, api)
    stack.timings["total until run end"] = time.monotonic() - t0
    print("tier 2 timings (s):", {k: round(v, 1) for k, v in stack.timings.items()},
          f"peak memory {stack.peak_memory_mb:.0f} MB")
    print(tiers.task_table(result))

    assert result.night == tiers.NIGHT
    assert result.state == "success", tiers.describe_failure(stack, result)
    assert all(t["state"] == "success" for t in result.tasks), tiers.describe_failure(stack, result)
    pulls = [t for t in result.tasks if t["task_id"] == "pull"]
    assert len(pulls) == 8

    # Every task instance went through Celery (its result is in the result backend).
    assert result.celery_results is not None and result.celery_results >= len(result.tasks)

    # The warehouse writers: all in the one-slot pool, never two at once.
    con = pg.connect()
    try:
        with con.cursor() as cur:
            cur.execute("select slots from slot_pool where pool = %s", (tiers.WAREHOUSE_POOL,))
            assert cur.fetchone() == (1,)
    finally:
        con.close()
    writers = [t for t in result.tasks if t["task_id"] in tiers.WAREHOUSE_TASKS]
    assert len(writers) == len(tiers.WAREHOUSE_TASKS)
    assert all(t["pool"] == tiers.WAREHOUSE_POOL for t in writers)
    assert tiers.overlapping(result.tasks, tiers.WAREHOUSE_TASKS) == []

    # Landed on the bucket, in the same layout as on disk, with manifests; nothing on local disk.
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
                      region_name="us-east-1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="landing/").get("Contents", [])]
    night = tiers.NIGHT.isoformat()
    manifests = [k for k in keys if k.endswith("/manifest.json") and f"/{night}/" in k]
    assert len(manifests) == 8, keys
    manifest = json.loads(s3.get_object(Bucket=BUCKET, Key=manifests[0])["Body"].read())
    assert f"landing/{manifest['source_file']}" in keys
    data = Path(env["TRADESENTRY_DATA_DIR"])
    assert not any((data / "landing").rglob("*.json")), "nothing lands on local disk"

    # The raw load read the landed objects: every feed of the night is in the warehouse.
    import duckdb

    with duckdb.connect(str(data / "warehouse" / "tradesentry.duckdb"), read_only=True) as wh:
        loaded = wh.execute(
            "select count(distinct feed), sum(rows_landed) from raw.landed_files where night = ?", [night]
        ).fetchone()
    assert loaded is not None and loaded[0] == 8 and loaded[1] > 0
