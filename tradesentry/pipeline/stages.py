"""The stages of the nightly run. The Airflow DAG and the CLI call these same functions.

Each stage is idempotent for its night: it replaces what it wrote before for that night, so a
retried or re-run task leaves the same tables behind.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

from tradesentry.feeds.loader import load_all, load_feeds
from tradesentry.feeds.spec import FeedSpec, RatesFeedSpec
from tradesentry.pipeline.runs import write_record
from tradesentry.settings import Settings
from tradesentry.warehouse import open_settings_warehouse

log = logging.getLogger("tradesentry.pipeline")

AnySpec = FeedSpec | RatesFeedSpec


@contextmanager
def _stage(what: str) -> Iterator[None]:
    """Progress on long steps: the stage name, then its wall time."""
    t0 = time.perf_counter()
    print(f"[{time.strftime('%H:%M:%S')}]   {what} ...", flush=True)
    yield
    print(f"[{time.strftime('%H:%M:%S')}]   {what}: {time.perf_counter() - t0:.1f} s", flush=True)


def nights_between(first: date, last: date) -> list[date]:
    if last < first:
        raise ValueError(f"--to {last} is before --from {first}")
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def feed_ids(settings: Settings) -> list[str]:
    """Every enabled feed, exchange rates included: each is pulled by its own mapped task."""
    return [s.feed for s in load_all(settings.feeds_dir)]


def _spec(settings: Settings, feed: str) -> AnySpec:
    for s in load_all(settings.feeds_dir):
        if s.feed == feed:
            return s
    raise KeyError(f"no enabled feed {feed!r} in {settings.feeds_dir}")


# --------------------------------------------------------------------------------------------- pull


def pull(settings: Settings, feed: str, night: date, spec: AnySpec | None = None) -> dict[str, Any]:
    """Land one feed's file for one night. Records the outcome, then re-raises any failure so that
    Airflow shows the task failed (and retries it) while the other feeds go on."""
    from tradesentry.landing.pull import pull_feed

    spec = spec or _spec(settings, feed)
    started = datetime.now(UTC).isoformat()
    try:
        landed = pull_feed(spec, night, settings)
    except Exception as exc:
        write_record(
            settings,
            night,
            f"pull-{feed}",
            {"feed": feed, "status": "failed", "error": str(exc), "error_type": type(exc).__name__, "at": started},
        )
        raise
    record = {"feed": feed, "status": "ok", "at": started, **asdict(landed)}
    write_record(settings, night, f"pull-{feed}", record)
    return record


def pull_range(settings: Settings, nights: Iterable[date], feeds: Iterable[str] | None = None) -> dict[str, Any]:
    """Backfill's pull: every feed and night in one process; failures are recorded, not raised."""
    failures: list[str] = []
    landed = 0
    specs = {s.feed: s for s in load_all(settings.feeds_dir)}
    wanted = list(feeds) if feeds is not None else list(specs)
    unknown = [f for f in wanted if f not in specs]
    if unknown:
        raise KeyError(f"no enabled feed {unknown} in {settings.feeds_dir}")
    for night in nights:
        for feed in wanted:
            try:
                pull(settings, feed, night, specs[feed])
                landed += 1
            except Exception as exc:
                failures.append(str(exc))
    return {"landed": landed, "failures": failures}


# ----------------------------------------------------------------------------------------- load raw


def load_raw(settings: Settings, nights: Iterable[date]) -> dict[str, Any]:
    """Load every landed file of the given nights into `raw`. One writer: runs as a single task."""
    from tradesentry.landing.raw_load import load_night

    specs = load_all(settings.feeds_dir)
    out: dict[str, Any] = {}
    with open_settings_warehouse(settings) as con:
        for night in nights:
            per_feed: dict[str, Any] = {}
            for spec in specs:
                results = load_night(con, spec, night, settings)
                per_feed[spec.feed] = {
                    "files": [r.source_file for r in results],
                    "rows_landed": sum(r.rows_landed for r in results),
                    "rows_rejected": sum(r.rows_rejected for r in results),
                }
            write_record(settings, night, "load", per_feed)
            out[night.isoformat()] = per_feed
    return out


# ------------------------------------------------------------------------------------ quality gates


def validate_raw(settings: Settings, nights: Iterable[date]) -> dict[str, Any]:
    """The raw gate; a range of nights (backfill) is validated in one pass, decided night by night."""
    from tradesentry.quality.gates import validate_raw_nights

    feeds = load_feeds(settings.feeds_dir)
    out: dict[str, Any] = {}
    results = validate_raw_nights(settings, list(nights), feeds)
    for night, result in results.items():
        record = result.to_dict()
        write_record(settings, night, "validate-raw", record)
        out[night.isoformat()] = record
    return out


def validate_harmonised(settings: Settings, nights: Iterable[date]) -> dict[str, Any]:
    from tradesentry.quality.gates import validate_harmonised as gate

    out: dict[str, Any] = {}
    nights = list(nights)
    for night in nights:
        result = gate(settings, night, build_docs=night == nights[-1])
        record = result.to_dict()
        write_record(settings, night, "validate-harmonised", record)
        out[night.isoformat()] = record
    return out


# ---------------------------------------------------------------------------------------- harmonise


def harmonise(settings: Settings) -> None:
    """dbt: seeds, staging and intermediate models (everything but the marts)."""
    from tradesentry.harmonise.dbt_runner import harmonise as dbt_harmonise

    dbt_harmonise(settings)


def build_marts(settings: Settings, as_of: date | None = None) -> None:
    """dbt: the marts, after the harmonised checks have written their quarantine rows. `as_of` is
    the night consignment statuses (pending / orphan) are computed for."""
    from tradesentry.harmonise.dbt_runner import build_marts as dbt_marts

    dbt_marts(settings, vars={"as_of_night": as_of.isoformat()} if as_of else None)


# ------------------------------------------------------------------------------------------- detect


def detect(settings: Settings, nights: Iterable[date]) -> dict[str, Any]:
    from tradesentry.detection.engine import run_detection

    out: dict[str, Any] = {}
    with open_settings_warehouse(settings) as con:
        for night in nights:
            result = run_detection(con, night, settings)
            record = result.as_dict() if hasattr(result, "as_dict") else asdict(result)
            write_record(settings, night, "detect", record)
            out[night.isoformat()] = record
    return out


def detect_prepare(settings: Settings, night: date) -> list[int]:
    """Sharded detection, step 1 (reads the warehouse, read-only): the night's features and the
    detectors fitted on its history, to files. Returns the shards to score (at least one)."""
    from detectors.config import DetectionConfig
    from tradesentry.detection.sharding import prepare

    cfg = DetectionConfig.from_settings(settings)
    with open_settings_warehouse(settings, read_only=True) as con:
        manifest = prepare(con, night, cfg, settings.detect_shards, settings.detect_work)
    return [int(e["shard"]) for e in manifest["shards"]]


def detect_shard(settings: Settings, night: date, shard: int) -> dict[str, Any]:
    """Sharded detection, step 2: score one shard's rows from the prepared files. Never opens the
    warehouse, so shards run on any worker, in parallel with each other."""
    from tradesentry.detection.sharding import score_shard_files

    record = score_shard_files(settings.detect_work, night, shard)
    write_record(settings, night, f"detect-shard-{shard}", record)
    return record


def detect_merge(settings: Settings, night: date) -> dict[str, Any]:
    """Sharded detection, step 3 (the warehouse writer): rank, audit picks, anomaly rows and the
    writes of `detect`, from the shards' results. Writes the same `detect` record."""
    from detectors.config import DetectionConfig
    from tradesentry.detection.sharding import merge

    cfg = DetectionConfig.from_settings(settings)
    with open_settings_warehouse(settings) as con:
        result, manifest = merge(con, night, cfg, settings.detect_work, settings)
    record = result.as_dict()
    record["shards"] = [{k: e[k] for k in ("shard", "label", "rows")} for e in manifest["shards"]]
    write_record(settings, night, "detect", record)
    return record


# ------------------------------------------------------------------------------------------ publish


def publish(settings: Settings, night: date) -> dict[str, Any]:
    from tradesentry.publish import publish_snapshot

    record = publish_snapshot(settings, night)
    write_record(settings, night, "publish", record)
    return record


# -------------------------------------------------------------------------------------------- whole


def run_night(settings: Settings, night: date) -> dict[str, Any]:
    """The nightly run without Airflow: same stages, same order, one process."""
    from tradesentry.pipeline.summary import build_summary

    started = datetime.now(UTC)
    for feed in feed_ids(settings):
        try:
            pull(settings, feed, night)
        except Exception:
            log.warning("pull failed for %s on %s:\n%s", feed, night, traceback.format_exc(limit=1))
    load_raw(settings, [night])
    validate_raw(settings, [night])
    harmonise(settings)
    validate_harmonised(settings, [night])
    build_marts(settings, as_of=night)
    detect(settings, [night])
    publish(settings, night)
    return build_summary(settings, night, started_at=started)


def backfill(
    settings: Settings, first: date, last: date, score: bool = True, feeds: list[str] | None = None
) -> dict[str, Any]:
    """Load a range of nights in one pass: pull and load every night, one dbt build for all of them,
    then score each night against its own history window. `feeds`: pull only these feeds (a new
    feed's history); the later stages still run over every feed, as the nightly run does."""
    from tradesentry.pipeline.summary import build_summary

    started = datetime.now(UTC)
    nights = nights_between(first, last)
    with _stage(f"pull {len(nights)} nights"):
        pulled = pull_range(settings, nights, feeds)
    with _stage("load raw"):
        load_raw(settings, nights)
    with _stage("validate raw (Great Expectations)"):
        validate_raw(settings, nights)
    with _stage("harmonise (dbt staging + intermediate)"):
        harmonise(settings)
    with _stage("validate harmonised (Great Expectations)"):
        validate_harmonised(settings, nights)
    with _stage("build marts (dbt)"):
        build_marts(settings, as_of=last)
    if score:
        with _stage(f"detect {len(nights)} nights"):
            detect(settings, nights)
    with _stage("publish"):
        publish(settings, last)
    summary = build_summary(settings, last, started_at=started)
    summary["backfill"] = {"from": first.isoformat(), "to": last.isoformat(), "pull_failures": pulled["failures"]}
    return summary

