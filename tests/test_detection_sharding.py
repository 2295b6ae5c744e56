"""Sharded detection (prepare -> shards by HS section -> merge) gives byte for byte what the single
detect task gives: scores, anomalies (ids, ranks, reasons, audit picks), feature rows and the
export-scores file. Real DuckDB files, real detectors (model detectors included), no mocks; the
shards run in another process while this one holds the warehouse open for writing, so a shard that
opened the warehouse would fail on DuckDB's lock."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_detection_synth import load_world, make_world

from detectors.config import DEFAULT_DETECTORS, DetectionConfig
from tradesentry.detection import export_scores, run_detection
from tradesentry.detection.engine import SECTION_OF_CHAPTER, shard_plan
from tradesentry.detection.sharding import merge, night_dir, prepare, score_shard_files

REPO = Path(__file__).resolve().parents[1]
NIGHT = date(2026, 9, 1)  # after the DAG's start date
CFG = DetectionConfig(
    history_window_nights=20, transit_window_days=10, detectors=(*DEFAULT_DETECTORS, "iforest", "ecod_tail")
)
SHARDS = 4


@pytest.fixture(scope="module")
def world():
    # seed 1: the injected HS mismatch is a consignment exported as HS 851712 (section XVI) and
    # imported as HS 240110 (section IV): its two declarations are scored in different shards
    return make_world(night=NIGHT, transit_window_days=CFG.transit_window_days, seed=1)


def _warehouse(path: Path, world) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(path)) as con:
        load_world(con, world, up_to=world.night)
    return path


def _digest(rows: list) -> str:
    return hashlib.sha256(repr(rows).encode()).hexdigest()


def _results(con: duckdb.DuckDBPyConnection, night: date, out: Path) -> dict[str, object]:
    """Everything detection writes for the night, fully ordered, and the export-scores file."""
    tables = {
        "scores": "select * from detection.scores where night = ? order by declaration_key",
        "anomalies": "select * from detection.anomalies where night = ? order by rank, anomaly_id",
        "features": "select * from detection.anomaly_features where night = ? order by anomaly_id",
    }
    got: dict[str, object] = {k: con.execute(sql, [night]).fetchall() for k, sql in tables.items()}
    export_scores(con, night, night, out)
    got["export"] = out.read_bytes()
    return got


def _assert_same(a: dict[str, object], b: dict[str, object]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert _digest(a[k]) == _digest(b[k]), k  # type: ignore[arg-type]
        assert a[k] == b[k], k


@pytest.fixture(scope="module")
def single(world, tmp_path_factory):
    base = tmp_path_factory.mktemp("single")
    with duckdb.connect(str(_warehouse(base / "w.duckdb", world))) as con:
        result = run_detection(con, NIGHT, config=CFG, labels={})
        return result, _results(con, NIGHT, base / "scores.csv")


def test_single_run_has_what_the_comparison_needs(single):
    result, got = single
    kinds = {r[2] for r in got["anomalies"]}  # type: ignore[union-attr]
    levels = {r[3] for r in got["anomalies"]}  # type: ignore[union-attr]
    assert result.rows_scored > 100 and result.audit_picks > 0
    assert {"random_audit", "hs_mismatch", "orphan_export"} <= kinds
    assert levels == {"declaration", "consignment"}


def test_shard_plan_keeps_sections_whole_and_balances_rows():
    chapters = np.array([61] * 50 + [62] * 10 + [85] * 40 + [84] * 5 + [24] * 30 + [-1] * 2 + [99] * 3)
    group, plan = shard_plan(chapters, 3)
    section = np.where(chapters >= 0, SECTION_OF_CHAPTER[np.clip(chapters, 0, 99)], -1)
    for sec in np.unique(section):
        assert len(set(group[section == sec])) == 1  # a section is never split
    assert [e["rows"] for e in plan] == [np.sum(group == g) for g in range(3)]
    # largest section first, each to the group with the fewest rows: XI (60) | XVI (45) | IV (30) + no
    # valid section (chapter 99 and missing codes, 5)
    assert [(e["sections"], e["rows"]) for e in plan] == [([10], 60), ([15], 45), ([-1, 3], 35)]
    assert plan[2]["label"] == "shard 2: HS sections ?, IV"
    assert plan[0]["label"].startswith("shard 0: HS section")
    one, plan1 = shard_plan(chapters, 1)
    assert (one == 0).all() and plan1[0]["rows"] == len(chapters)
    empty, plan0 = shard_plan(np.zeros(0, dtype="int64"), 4)
    assert len(empty) == 0 and [e["rows"] for e in plan0] == [0]


def test_sharded_files_equal_the_single_run(world, single, tmp_path):
    """prepare on a read-only connection; the shards in another process while this one holds the
    warehouse for writing; merge: the same tables and export file as the single run."""
    _, want = single
    wh = _warehouse(tmp_path / "w.duckdb", world)
    work = tmp_path / "work"
    with duckdb.connect(str(wh), read_only=True) as ro:
        manifest = prepare(ro, NIGHT, CFG, SHARDS, work)
    plan = manifest["shards"]
    assert len(plan) == SHARDS and all(e["rows"] > 0 for e in plan)
    assert sum(e["rows"] for e in plan) == manifest["rows"]

    with duckdb.connect(str(wh)) as con:  # the writer lock is held while the shards run
        code = (
            "import sys, json; from datetime import date; from pathlib import Path; "
            "from tradesentry.detection.sharding import score_shard_files as f; "
            f"print(json.dumps([f(Path(sys.argv[1]), date.fromisoformat('{NIGHT}'), i) for i in range({SHARDS})]))"
        )
        out = subprocess.run([sys.executable, "-c", code, str(work)], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-3000:]
        records = json.loads(out.stdout.splitlines()[-1])
        assert [r["rows"] for r in records] == [e["rows"] for e in plan]

        # a consignment-level anomaly whose two declarations were scored in different shards
        shard_of_section = {s: e["shard"] for e in plan for s in e["sections"]}
        hs6 = dict(con.execute("select declaration_key, hs6 from marts.fct_declarations").fetchall())
        consignments = [r for r in want["anomalies"] if r[3] == "consignment"]  # type: ignore[union-attr]
        spans = [
            r for r in consignments
            if len({shard_of_section[int(SECTION_OF_CHAPTER[int(hs6[k][:2])])] for k in r[4]}) == 2
        ]  # fmt: skip
        assert spans, "no consignment anomaly spans two shards: the test would not show the merge's part"

        result, _ = merge(con, NIGHT, CFG, work, labels={})
        got = _results(con, NIGHT, tmp_path / "scores.csv")
    _assert_same(got, want)
    assert result.as_dict() | {"timings": {}} == single[0].as_dict() | {"timings": {}}
    assert not night_dir(work, NIGHT).exists()  # the work files go once merged


def test_in_process_shards_equal_the_single_run(world, single, tmp_path):
    _, want = single
    with duckdb.connect(str(_warehouse(tmp_path / "w.duckdb", world))) as con:
        run_detection(con, NIGHT, config=CFG, labels={}, shards=5)
        _assert_same(_results(con, NIGHT, tmp_path / "scores.csv"), want)


def test_merge_refuses_stale_or_missing_shards_and_other_settings(world, tmp_path):
    cfg = replace(CFG, detectors=DEFAULT_DETECTORS)
    wh = _warehouse(tmp_path / "w.duckdb", world)
    work = tmp_path / "work"
    with duckdb.connect(str(wh)) as con:
        prepare(con, NIGHT, cfg, 3, work)
        score_shard_files(work, NIGHT, 0)
        score_shard_files(work, NIGHT, 1)
        with pytest.raises(FileNotFoundError, match="shard 2"):
            merge(con, NIGHT, cfg, work, labels={})
        stale = (night_dir(work, NIGHT) / "results" / "shard-0.json").read_text()
        prepare(con, NIGHT, cfg, 3, work)  # prepared again: a new token
        for i in range(3):
            score_shard_files(work, NIGHT, i)
        (night_dir(work, NIGHT) / "results" / "shard-0.json").write_text(stale)
        with pytest.raises(RuntimeError, match="another preparation"):
            merge(con, NIGHT, cfg, work, labels={})
        with pytest.raises(RuntimeError, match="settings changed"):
            merge(con, NIGHT, replace(cfg, bonus_weight=0.1), work, labels={})
        # nothing written by a refused merge (the detection tables are not even created)
        n = con.execute("select count(*) from information_schema.schemata where schema_name = 'detection'")
        assert n.fetchone() == (0,)


# ------------------------------------------------------------------------------------ the DAG


def test_sharded_dag_shape(monkeypatch):
    """TRADESENTRY_DETECT_SHARDS > 1 at parse time: prepare and merge in the warehouse pool, the mapped
    shards outside it (they never open the warehouse), named by their HS sections."""
    from airflow.dag_processing.dagbag import DagBag

    monkeypatch.setenv("TRADESENTRY_DETECT_SHARDS", "4")
    monkeypatch.setenv("TRADESENTRY_WAREHOUSE_POOL", "tradesentry_warehouse")
    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    dag = bag.dags["tradesentry_nightly"]
    assert "detect" not in dag.task_ids
    prepare, shard, merge_ = (dag.get_task(t) for t in ("detect_prepare", "detect_shard", "detect_merge"))
    assert prepare.pool == merge_.pool == "tradesentry_warehouse" and shard.pool != "tradesentry_warehouse"
    assert shard.map_index_template == "{{ shard_label }}"
    assert prepare.upstream_task_ids == {"build_marts"}
    assert shard.upstream_task_ids == {"detect_prepare"} and merge_.upstream_task_ids == {"detect_shard"}
    assert dag.get_task("publish").upstream_task_ids == {"detect_merge"}
    assert all(t.retries >= 1 for t in (prepare, shard, merge_))


def _dag_test(night: date, task_ids: list[str]):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    dag = bag.dags["tradesentry_nightly"]
    assert set(task_ids) <= set(dag.task_ids), sorted(dag.task_ids)
    sub = dag.partial_subset(task_ids=task_ids, include_upstream=False, include_downstream=False)
    # partial_subset deep-copies the "no expand input" sentinel of a @task mapped task, which the task
    # runner checks by identity (apache/airflow#41160): put the sentinel back
    from airflow.sdk.definitions._internal.expandinput import EXPAND_INPUT_EMPTY

    for t in sub.tasks:
        if hasattr(t, "op_kwargs_expand_input") and t.expand_input == EXPAND_INPUT_EMPTY:
            t.expand_input = EXPAND_INPUT_EMPTY
    return sub.test(logical_date=datetime(night.year, night.month, night.day, 3, tzinfo=UTC))


def test_dag_with_detect_shards_equals_the_unsharded_dag(world, tmp_path, monkeypatch):
    """The real DAG file, parsed with TRADESENTRY_DETECT_SHARDS=3: detect_prepare, mapped
    detect_shard tasks (one per group of HS sections) and detect_merge succeed under dag.test() and
    leave what the unsharded DAG's detect task leaves (default detectors, settings from the env)."""
    data = tmp_path / "data"
    for name, value in {
        "DATA_DIR": str(data),
        "HISTORY_WINDOW_NIGHTS": str(CFG.history_window_nights),
        "TRANSIT_WINDOW_DAYS": str(CFG.transit_window_days),
    }.items():
        monkeypatch.setenv(f"TRADESENTRY_{name}", value)
    from tradesentry.settings import get_settings

    settings = get_settings()
    _warehouse(settings.warehouse, world)
    from airflow.utils.db import upgradedb

    upgradedb()  # what `airflow db migrate` does, in this process: 2-3 s instead of 5-13 s of start-up

    monkeypatch.delenv("TRADESENTRY_DETECT_SHARDS", raising=False)
    run = _dag_test(NIGHT, ["detect"])
    assert [str(ti.state).split(".")[-1].lower() for ti in run.get_task_instances()] == ["success"]
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        want = _results(con, NIGHT, tmp_path / "single.csv")

    monkeypatch.setenv("TRADESENTRY_DETECT_SHARDS", "3")
    run = _dag_test(NIGHT, ["detect_prepare", "detect_shard", "detect_merge"])
    tis = run.get_task_instances()
    states = {(ti.task_id, ti.map_index): str(ti.state).split(".")[-1].lower() for ti in tis}
    assert set(states.values()) == {"success"}, states
    shards = sorted(i for t, i in states if t == "detect_shard")
    assert shards == [0, 1, 2]
    labels = {ti.rendered_map_index for ti in tis if ti.task_id == "detect_shard"}
    assert all(str(label).startswith("shard ") and "HS section" in str(label) for label in labels), labels
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        got = _results(con, NIGHT, tmp_path / "sharded.csv")
    _assert_same(got, want)
    record = json.loads((settings.runs / NIGHT.isoformat() / "detect.json").read_text())
    assert [s["shard"] for s in record["shards"]] == [0, 1, 2]
    assert all(s["rows"] > 0 for s in record["shards"])
