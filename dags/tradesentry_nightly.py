"""Tradesentry's nightly Airflow DAG: pull each feed, harmonise, check, detect, publish.

Kept cheap to parse: only Airflow and the standard library at top level; the pipeline's heavy
imports (duckdb, dbt, Great Expectations, PyOD) happen inside the tasks. The night a run processes is
its logical date (for scheduled runs, the start of the data interval), so
`airflow dags test tradesentry_nightly 2026-11-27` runs night 2026-11-27.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pendulum
from airflow.sdk import dag, get_current_context, task
from airflow.timetables.interval import CronDataIntervalTimetable


def _float_env(name: str, default: float) -> float:
    # Parse-time settings come from the environment only (no file reads, no imports of our package).
    raw = os.environ.get(name)
    return float(raw) if raw else default


RETRIES = int(_float_env("TRADESENTRY_RETRIES", 2))
RETRY_DELAY = timedelta(seconds=_float_env("TRADESENTRY_RETRY_DELAY_SECONDS", 300))
MAX_RETRY_DELAY = timedelta(seconds=_float_env("TRADESENTRY_RETRY_MAX_DELAY_SECONDS", 3600))
WAREHOUSE_POOL = os.environ.get("TRADESENTRY_WAREHOUSE_POOL", "default_pool")
# More than one: detection runs as detect_prepare -> detect_shard (mapped, one per group of HS
# sections, outside the warehouse pool) -> detect_merge, instead of one detect task.
DETECT_SHARDS = int(_float_env("TRADESENTRY_DETECT_SHARDS", 1))


def _night(context: dict) -> pendulum.Date:  # type: ignore[type-arg]
    # Scheduled runs: logical date = data interval start = the night. Manual runs and
    # `airflow dags test` take the date given. A run triggered without a date falls back to the
    # interval's start.
    when = context.get("logical_date") or context.get("data_interval_start") or context["run_after"]
    return when.date()


@dag(
    dag_id="tradesentry_nightly",
    description="Nightly trade-anomaly run over every partner country's declarations feed.",
    schedule=CronDataIntervalTimetable("0 3 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 8, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["tradesentry", "customs", "nightly"],
    default_args={
        "owner": "tradesentry",
        "retries": RETRIES,
        "retry_delay": RETRY_DELAY,
        "retry_exponential_backoff": True,
        "max_retry_delay": MAX_RETRY_DELAY,
    },
    doc_md=__doc__,
)
def tradesentry_nightly() -> None:
    @task(retries=0)
    def list_feeds() -> list[str]:
        from tradesentry.pipeline.stages import feed_ids
        from tradesentry.settings import get_settings

        return feed_ids(get_settings())

    @task(map_index_template="{{ feed_id }}")
    def pull(feed: str) -> dict:  # type: ignore[type-arg]
        """Land one feed's night file. Fails (and retries) on its own; other feeds go on."""
        from tradesentry.pipeline.stages import pull as pull_stage
        from tradesentry.settings import get_settings

        context = get_current_context()
        context["feed_id"] = feed  # type: ignore[typeddict-unknown-key]
        return pull_stage(get_settings(), feed, _night(context))

    # The stages below run whatever happened to individual pulls: a missing feed is reported in the
    # summary, not allowed to stop the six others.
    @task(trigger_rule="all_done", pool=WAREHOUSE_POOL)
    def load_raw() -> dict:  # type: ignore[type-arg]
        from tradesentry.pipeline.stages import load_raw as stage
        from tradesentry.settings import get_settings

        night = _night(get_current_context())
        return stage(get_settings(), [night])[night.isoformat()]

    @task(pool=WAREHOUSE_POOL)
    def validate_raw() -> dict:  # type: ignore[type-arg]
        from tradesentry.pipeline.stages import validate_raw as stage
        from tradesentry.settings import get_settings

        night = _night(get_current_context())
        record = stage(get_settings(), [night])[night.isoformat()]
        # XCom gets the verdicts only; the full report is in the run records and Data Docs.
        return {f: e.get("status") for f, e in record.get("feeds", {}).items()}

    @task(pool=WAREHOUSE_POOL)
    def harmonise() -> None:
        from tradesentry.pipeline.stages import harmonise as stage
        from tradesentry.settings import get_settings

        stage(get_settings())

    @task(pool=WAREHOUSE_POOL)
    def validate_harmonised() -> dict:  # type: ignore[type-arg]
        from tradesentry.pipeline.stages import validate_harmonised as stage
        from tradesentry.settings import get_settings

        night = _night(get_current_context())
        record = stage(get_settings(), [night])[night.isoformat()]
        return {k: record.get(k) for k in ("rows", "quarantined_rows")}

    @task(pool=WAREHOUSE_POOL)
    def build_marts() -> None:
        from tradesentry.pipeline.stages import build_marts as stage
        from tradesentry.settings import get_settings

        stage(get_settings(), as_of=_night(get_current_context()))

    @task(pool=WAREHOUSE_POOL)
    def detect() -> dict:  # type: ignore[type-arg]
        from tradesentry.pipeline.stages import detect as stage
        from tradesentry.settings import get_settings

        night = _night(get_current_context())
        record = stage(get_settings(), [night])[night.isoformat()]
        return {k: record.get(k) for k in ("rows_scored", "anomalies", "by_kind")}

    @task(pool=WAREHOUSE_POOL)
    def detect_prepare() -> list[int]:
        """Sharded detection: the night's features and fitted detectors to files (warehouse read)."""
        from tradesentry.pipeline.stages import detect_prepare as stage
        from tradesentry.settings import get_settings

        return stage(get_settings(), _night(get_current_context()))

    @task(map_index_template="{{ shard_label }}")
    def detect_shard(shard: int) -> dict:  # type: ignore[type-arg]
        """Score one shard (a group of HS sections) from the prepared files: no warehouse, any worker."""
        from tradesentry.pipeline.stages import detect_shard as stage
        from tradesentry.settings import get_settings

        context = get_current_context()
        record = stage(get_settings(), _night(context), shard)
        context["shard_label"] = record["label"]  # type: ignore[typeddict-unknown-key]
        return {k: record.get(k) for k in ("shard", "rows", "sections")}

    @task(pool=WAREHOUSE_POOL)
    def detect_merge() -> dict:  # type: ignore[type-arg]
        """Sharded detection: combine, rank, audit picks, anomaly rows; writes what detect writes."""
        from tradesentry.pipeline.stages import detect_merge as stage
        from tradesentry.settings import get_settings

        record = stage(get_settings(), _night(get_current_context()))
        return {k: record.get(k) for k in ("rows_scored", "anomalies", "by_kind")}

    @task(pool=WAREHOUSE_POOL)
    def publish() -> dict:  # type: ignore[type-arg]
        """Publish the snapshot readers use and print the run summary into the task log."""
        import json

        from tradesentry.pipeline.stages import publish as stage
        from tradesentry.pipeline.summary import format_summary, summary_path
        from tradesentry.settings import get_settings

        settings = get_settings()
        night = _night(get_current_context())
        record = stage(settings, night)
        print(format_summary(json.loads(summary_path(settings, night).read_text())))
        return record

    feeds = list_feeds()
    pulled = pull.expand(feed=feeds)
    chain_start = load_raw()
    pulled >> chain_start
    marts = chain_start >> validate_raw() >> harmonise() >> validate_harmonised() >> build_marts()
    if DETECT_SHARDS > 1:
        prepared = detect_prepare()
        marts >> prepared
        detect_shard.expand(shard=prepared) >> detect_merge() >> publish()
    else:
        marts >> detect() >> publish()


tradesentry_nightly()
