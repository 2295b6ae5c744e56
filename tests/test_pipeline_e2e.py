"""The whole nightly pipeline on a small seeded sample: backfill, then the Airflow DAG via dag.test().

One sample and one warehouse for the module (tests only read it, except the last ones that run
further nights). Floors here are smoke floors, not the evaluation (that is `tradesentry evaluate`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from datetime import date, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from tradesentry.settings import Settings, get_settings

REPO = Path(__file__).resolve().parents[1]
LAST = date(2026, 11, 27)
NIGHTS = 36
FIRST = LAST - timedelta(days=NIGHTS - 1)
DAG_NIGHT = LAST - timedelta(days=1)  # run through the DAG twice (idempotence)
MISSING_NIGHT = LAST  # one country's file deleted

pytestmark = pytest.mark.slow


def _airflow(*args: str) -> None:
    exe = Path(sys.executable).with_name("airflow")
    subprocess.run([str(exe), *args], check=True, env=os.environ.copy(), capture_output=True, text=True)


def _dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    return bag.dags["tradesentry_nightly"]


def _dag_test(night: date):
    dag = _dag()
    return dag.test(logical_date=datetime(night.year, night.month, night.day, 3, tzinfo=__import__("datetime").UTC))


def _table_hash(con: duckdb.DuckDBPyConnection, sql: str) -> tuple[int, str]:
    rows = con.execute(sql).fetchall()
    h = hashlib.sha256()
    for r in rows:
        h.update(repr(r).encode())
    return len(rows), h.hexdigest()


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory):
    """Copies of the feed specs, the dbt project and the suites, so tests that add a feed never touch
    the repository; the DAG's tasks find them through the TRADESENTRY_* environment."""
    base = tmp_path_factory.mktemp("project")
    ignore = shutil.ignore_patterns("target", "logs", "dbt_packages", "__pycache__")
    folders = {"feeds": "FEEDS_DIR", "dbt_project": "DBT_PROJECT_DIR", "expectations": "EXPECTATIONS_DIR"}
    for name in folders:
        shutil.copytree(REPO / name, base / name, ignore=ignore)
    with pytest.MonkeyPatch.context() as mp:
        for name, var in folders.items():
            mp.setenv(f"TRADESENTRY_{var}", str(base / name))
        # A short matching horizon, so that the nightly marts builds leave the oldest exports'
        # matches as they are (test_incremental_marts_equal_a_full_refresh).
        mp.setenv("TRADESENTRY_MATCH_HORIZON_DAYS", "3")
        yield base


@pytest.fixture(scope="module")
def run(project: Path) -> dict:
    from tradesentry.pipeline.stages import backfill
    from tradesentry.samplegen import generate

    settings: Settings = get_settings()
    assert settings.feeds_dir == project / "feeds"
    info = generate(settings.samples, start=FIRST, nights=NIGHTS, seed=11, scale=0.3)
    backfill(settings, FIRST, DAG_NIGHT - timedelta(days=1))
    _airflow("db", "migrate")
    dagrun = _dag_test(DAG_NIGHT)
    summary = json.loads((settings.reports / "runs" / DAG_NIGHT.isoformat() / "summary.json").read_text())
    return {"settings": settings, "info": info, "dagrun": dagrun, "summary": summary}


def _state(settings: Settings, night: date) -> dict[str, tuple[int, str]]:
    n = night.isoformat()
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        return {
            "fct_declarations": _table_hash(con, "select * exclude (arrived_at) from marts.fct_declarations order by declaration_key"),
            "fct_quarantine": _table_hash(con, "select * from marts.fct_quarantine order by all"),
            "anomalies": _table_hash(
                con,
                f"select anomaly_id, kind, score, rank, reasons from detection.anomalies where night = '{n}' order by anomaly_id",
            ),
            "scores": _table_hash(con, f"select * from detection.scores where night = '{n}' order by declaration_key"),
        }


def test_dag_run_succeeds_and_summary_is_complete(run: dict) -> None:
    assert str(run["dagrun"].state) in ("success", "DagRunState.SUCCESS")
    summary = run["summary"]
    assert set(summary["feeds"]) == {"xa", "xb", "xc", "xd", "xe", "xf", "xg"}
    for feed, entry in summary["feeds"].items():
        assert entry["status"] == "ok", (feed, entry)
        assert entry["landed"] > 0
        assert entry["landed"] == entry["harmonised"] + entry["quarantined"] + entry["held"], (feed, entry)
    assert summary["anomalies_total"] > 0
    assert Path(summary["paths"]["anomalies_csv"]).exists()


def test_snapshot_published_and_readable(run: dict) -> None:
    from tradesentry.publish import current_snapshot

    snap = current_snapshot(run["settings"].published)
    assert snap is not None and snap.exists()
    with duckdb.connect(str(snap), read_only=True) as con:
        assert con.execute("select night from snapshot_info").fetchone()[0] == DAG_NIGHT
        assert con.execute("select count(*) from anomalies").fetchone()[0] > 0
        # Every subject declaration of an anomaly is in the snapshot with its landed file and line.
        missing = con.execute(
            "select count(*) from anomaly_declarations a left join declarations d using (declaration_key) "
            "where a.role = 'subject' and d.source_file is null"
        ).fetchone()[0]
        assert missing == 0


def test_consignment_matching_against_the_generator_truth(run: dict) -> None:
    """At least 99% of the true export/import pairs whose two declarations are loaded are matched,
    and no match pairs declarations of different consignments."""
    settings = run["settings"]
    truth_path = Path(run["info"].out_dir) / "consignment_pairs.csv"
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        truth = {
            (e, i)
            for e, i in con.execute(
                f"select export_country || '|' || export_declaration_id || '|' || export_item_no, "
                f"import_country || '|' || import_declaration_id || '|' || import_item_no "
                f"from read_csv('{truth_path}', all_varchar=true)"
            ).fetchall()
        }
        loaded = {r[0] for r in con.execute("select declaration_key from marts.fct_declarations").fetchall()}
        matched = set(
            con.execute(
                "select export_key, import_key from marts.fct_consignment_matches where import_key is not null"
            ).fetchall()
        )
    expected = {(e, i) for e, i in truth if e in loaded and i in loaded}
    assert len(expected) > 100
    found = expected & matched
    assert len(found) / len(expected) >= 0.99, f"{len(found)} of {len(expected)} true pairs matched"
    assert matched - truth == set(), f"false matches: {sorted(matched - truth)[:5]}"


def test_injected_anomalies_rank_near_the_top(run: dict) -> None:
    """Smoke floor: at least 60% of each injected kind among the top 5% of scored declarations."""
    settings = run["settings"]
    truth = Path(run["info"].ground_truth)
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        con.execute(f"create temp table truth as select * from read_csv('{truth}', all_varchar=true)")
        rows = con.execute(
            """
            with s as (
                select night, reporter_country, declaration_id, item_no, score,
                       percent_rank() over (partition by night order by score desc) as pr
                from detection.scores
            )
            select t.kind, count(*) as n, count(*) filter (where s.pr <= 0.05) as top
            from truth t join s
              on s.reporter_country = t.reporter_country and s.declaration_id = t.declaration_id
             and s.item_no = cast(t.item_no as integer)
            where lower(t.is_anomaly) = 'true' and t.kind <> 'phantom_export'
            group by t.kind order by t.kind
            """
        ).fetchall()
    assert rows, "no injected anomaly was scored"
    for kind, n, top in rows:
        assert top / n >= 0.6, f"{kind}: only {top}/{n} in the top 5%"


def test_review_app_serves_the_published_snapshot(run: dict, tmp_path: Path) -> None:
    """The review app over the snapshot the pipeline published (not a demo one): queue, detail page
    with both charts, and country visibility for an analyst."""
    from fastapi.testclient import TestClient

    sys.path.insert(0, str(Path(__file__).parent))
    from conftest_review import login

    from tradesentry.review.app import create_app
    from tradesentry.review.auth import hash_password
    from tradesentry.review.store import Store

    settings = run["settings"]
    store = Store(f"sqlite:///{tmp_path / 'review.sqlite'}")
    store.upgrade()
    store.create_user("lead1", role="lead", password_hash=hash_password("lead-password-1"))
    store.create_user("ana_xc", role="analyst", countries="XC", password_hash=hash_password("analyst-xc-pass"))
    with TestClient(create_app(settings, store=store)) as client:
        login(client, "lead1", "lead-password-1")
        listed = client.get("/api/anomalies", params={"night": DAG_NIGHT.isoformat()}).json()["items"]
        assert listed
        first = listed[0]
        page = client.get(f"/anomalies/{first['anomaly_id']}")
        assert page.status_code == 200
        assert page.text.count("<svg") >= 2, "peer distribution and trader history charts"
    with TestClient(create_app(settings, store=store)) as client:
        login(client, "ana_xc", "analyst-xc-pass")
        listed = client.get("/api/anomalies", params={"night": "all"}).json()["items"]
        assert listed and all("XC" in a["countries"] for a in listed)


def test_rerunning_a_night_is_idempotent(run: dict) -> None:
    settings = run["settings"]
    before = _state(settings, DAG_NIGHT)
    run["first_state"] = before
    dagrun = _dag_test(DAG_NIGHT)
    assert str(dagrun.state) in ("success", "DagRunState.SUCCESS")
    after = _state(settings, DAG_NIGHT)
    assert after == before


def test_missing_feed_file_does_not_stop_the_others(run: dict) -> None:
    settings = run["settings"]
    victim = next((settings.samples / "xc").glob(f"*{MISSING_NIGHT:%Y%m%d}*"))
    victim.unlink()
    dagrun = _dag_test(MISSING_NIGHT)
    pulls = {ti.map_index: ti.state for ti in dagrun.get_task_instances() if ti.task_id == "pull"}
    assert "failed" in {str(s).split(".")[-1].lower() for s in pulls.values()}
    summary = json.loads((settings.reports / "runs" / MISSING_NIGHT.isoformat() / "summary.json").read_text())
    assert summary["feeds"]["xc"]["status"] == "failed"
    assert victim.name in summary["feeds"]["xc"]["error"]
    others = {f: e for f, e in summary["feeds"].items() if f != "xc"}
    assert all(e["status"] == "ok" and e["harmonised"] > 0 for e in others.values()), others


def test_a_new_feed_onboarded_by_cli_reaches_the_next_dag_run(run: dict) -> None:
    """Issue 7's acceptance: a JSON-lines feed from a new country, onboarded with the CLI and YAML
    edits only (init, validate --enable, generate), is in the next dag.test() run: its rows reach
    the unified table and its anomalies appear."""
    sys.path.insert(0, str(Path(__file__).parent))
    from onboarding_samples import jsonl_nested

    from tradesentry.cli import main

    settings = run["settings"]
    folder = settings.samples / "xj"
    folder.mkdir(parents=True, exist_ok=True)
    sample = jsonl_nested(folder / f"xj_{LAST:%Y%m%d}.jsonl")
    # One declaration priced at a twentieth of its peers: the new feed's anomaly to find.
    lines = sample.read_text().splitlines()
    bad = json.loads(lines[0])
    bad["decl"]["id"] = "HXJ-UNDERVALUED"
    bad["decl"]["date"] = LAST.isoformat()
    bad["value"]["amount"] = round(bad["value"]["amount"] / 20, 2)
    sample.write_text("\n".join([*lines, json.dumps(bad)]) + "\n")

    assert main(["feeds", "init", "xj", "--sample", str(sample), "--country", "XJ"]) == 0
    spec = settings.feeds_dir / "xj.yaml"
    text = spec.read_text()
    # The only hand edit: where the nightly file comes from.
    text = "\n".join(
        '  uri: "file://{sample_dir}/xj/xj_{night:%Y%m%d}.jsonl"' if line.strip().startswith("uri:") else line
        for line in text.splitlines()
    )
    spec.write_text(text + "\n")
    assert main(["feeds", "validate", "xj", "--sample", str(sample), "--enable", "--no-dbt"]) == 0
    assert main(["feeds", "generate"]) == 0

    dagrun = _dag_test(LAST)
    pulls = {ti.rendered_map_index: str(ti.state) for ti in dagrun.get_task_instances() if ti.task_id == "pull"}
    assert any(k == "xj" for k in pulls), pulls
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        rows = con.execute("select count(*) from marts.fct_declarations where feed = 'xj'").fetchone()[0]
        flagged = con.execute(
            "select kind from detection.anomalies where night = ? and reporter_country = 'XJ' "
            "and primary_key like 'XJ|HXJ-UNDERVALUED|%'",
            [LAST],
        ).fetchall()
    assert rows >= 35
    assert flagged, "the undervalued declaration of the new feed was not flagged"


def test_nights_out_of_order_score_the_same(run: dict) -> None:
    """Rerunning an earlier night after later ones were loaded gives the same scores and anomalies:
    night N is scored against the W nights before it, whatever was loaded since."""
    settings = run["settings"]
    dagrun = _dag_test(DAG_NIGHT)
    assert str(dagrun.state) in ("success", "DagRunState.SUCCESS")
    after = _state(settings, DAG_NIGHT)
    first = run["first_state"]
    assert after["anomalies"] == first["anomalies"]
    assert after["scores"] == first["scores"]


def test_a_held_feed_is_harmonised_and_scored_after_the_hold_is_lifted(run: dict) -> None:
    """A resend of xb's file with a renamed column is held by the quality gate (the others go on);
    its rows are kept as held, and after `tradesentry holds lift` the next run harmonises and
    scores them."""
    from tradesentry.cli import main

    settings = run["settings"]
    night = LAST
    source = next((settings.samples / "xb").glob(f"*{night:%Y%m%d}*"))
    text = source.read_bytes().decode("latin-1")
    header, rest = text.split("\n", 1)
    source.write_bytes((header.replace("Tarifnummer", "Tarifnr") + "\n" + rest).encode("latin-1"))

    assert str(_dag_test(night).state) in ("success", "DagRunState.SUCCESS")
    summary = json.loads((settings.reports / "runs" / night.isoformat() / "summary.json").read_text())
    xb = summary["feeds"]["xb"]
    assert xb["status"] == "held"
    assert "Tarifnummer" in xb["error"] and "Tarifnr" in xb["error"]
    assert xb["held"] == xb["landed"] > 0 and xb["harmonised"] == 0
    assert summary["feeds"]["xa"]["status"] == "ok"
    assert _xb_scored(settings, night) == 0, "a held feed is not scored"

    assert main(["holds", "lift", "xb", night.isoformat()]) == 0
    assert str(_dag_test(night).state) in ("success", "DagRunState.SUCCESS")
    summary = json.loads((settings.reports / "runs" / night.isoformat() / "summary.json").read_text())
    xb = summary["feeds"]["xb"]
    assert xb["status"] == "ok" and xb["held"] == 0
    assert xb["landed"] == xb["harmonised"] + xb["quarantined"]
    assert _xb_scored(settings, night) > 0


def _xb_scored(settings: Settings, night: date) -> int:
    """How many of xb's declarations landed for `night` were scored that night (earlier declarations
    can be scored again on a later night, as one side of a mirror pair or as an orphan export)."""
    with duckdb.connect(str(settings.warehouse), read_only=True) as con:
        return con.execute(
            "select count(*) from detection.scores where night = ? and declaration_key in "
            "(select 'XB|' || \"Anmeldung\" || '|' || \"Position\" from raw.xb__declarations where _night = ?)",
            [night, night],
        ).fetchone()[0]


def test_incremental_marts_equal_a_full_refresh(run: dict, tmp_path: Path) -> None:
    """After the backfill and the DAG runs above (each an incremental marts build), one more
    incremental build and a --full-refresh build of a copy of the same warehouse hold the same rows."""
    from tradesentry.harmonise.dbt_runner import MARTS_ARGS, run_dbt

    settings = run["settings"]
    as_of = {"as_of_night": LAST.isoformat()}
    states = {}
    for name, extra in (("incremental", []), ("full_refresh", ["--full-refresh"])):
        copy = Settings(
            data_dir=tmp_path / name,
            feeds_dir=settings.feeds_dir,
            dbt_project_dir=settings.dbt_project_dir,
            match_horizon_days=settings.match_horizon_days,
        ).resolve()
        copy.warehouse.parent.mkdir(parents=True)
        shutil.copyfile(settings.warehouse, copy.warehouse)
        run_dbt([*MARTS_ARGS, *extra], copy, vars=as_of)
        with duckdb.connect(str(copy.warehouse), read_only=True) as con:
            states[name] = {
                table: _table_hash(con, f"select * from marts.{table} order by all")
                for table in (
                    "fct_declarations",
                    "fct_declaration_history",
                    "fct_quarantine",
                    "fct_held_rows",
                    "fct_consignment_matches",
                    "dim_traders",
                )
            }
            if name == "incremental":
                kept = con.execute(
                    "select count(*) from marts.fct_consignment_matches where export_key not in "
                    "(select declaration_key from marts.fct_consignment_matches__scope where rematch_export)"
                ).fetchone()[0]
                assert kept > 0, "the horizon left no export's match as it was"
    assert states["incremental"] == states["full_refresh"]
    assert states["incremental"]["fct_consignment_matches"][0] > 0
