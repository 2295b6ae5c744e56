"""The DAG folder parses, cheaply, into the DAG operators expect."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


def test_dags_import_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert "tradesentry_nightly" in dagbag.dag_ids


def test_nightly_dag_shape(dagbag):
    dag = dagbag.dags["tradesentry_nightly"]
    assert dag.max_active_runs == 1
    assert {"tradesentry", "nightly"} <= set(dag.tags)
    assert dag.catchup is False
    ids = set(dag.task_ids)
    assert {"list_feeds", "pull", "load_raw", "validate_raw", "harmonise", "validate_harmonised",
            "build_marts", "detect", "publish"} <= ids
    pull = dag.get_task("pull")
    assert pull.map_index_template == "{{ feed_id }}"
    # One feed's failure must not stop the others: the first stage after the pulls runs regardless.
    assert dag.get_task("load_raw").trigger_rule == "all_done"
    for task in dag.tasks:
        if task.task_id != "list_feeds":
            assert task.retries >= 1, task.task_id


def test_dag_file_has_no_heavy_top_level_imports():
    # Import the DAG module in a fresh interpreter and check which heavy packages got loaded.
    code = (
        "import sys, time, runpy; t=time.time(); "
        f"runpy.run_path({str(REPO / 'dags' / 'tradesentry_nightly.py')!r}); "
        "heavy=[m for m in ('duckdb','dbt','great_expectations','pyod','pandas','sklearn','tradesentry') if m in sys.modules]; "
        "print(','.join(heavy)); print(time.time()-t)"
    )
    t = time.time()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    heavy, _elapsed = out.stdout.splitlines()[-2:]
    assert heavy == "", f"heavy modules imported at DAG parse time: {heavy}"
    assert time.time() - t < 120
