"""Detection split into tasks: prepare (reads the warehouse), shards (no warehouse), merge (the writer).

The single-task run (:func:`tradesentry.detection.engine.run_detection`) is the same three steps in
one process (:func:`~tradesentry.detection.engine.prepare_night`,
:func:`~tradesentry.detection.engine.score_shard`, :func:`~tradesentry.detection.engine.merge_scores`
then :func:`~tradesentry.detection.engine.finish_night`); here they hand over through files, so the
shards can run on any worker in parallel while the warehouse stays with its one writer.

**Shard key: the HS section** (the 21 sections of the Harmonized System, from the first two digits of
a row's HS6; rows without a valid code form a section of their own). A section is never split. The
sections present tonight are packed into at most ``detect_shards`` shards by tonight's row counts
(largest first, each to the shard with the fewest rows so far), so the shards are balanced as far as
whole sections allow. Every scored row (tonight's and the earlier ones charged by tonight's mirror
pairs or orphan check) is in exactly one shard.

What is where:

- ``prepare`` (warehouse read, read-only connection): the night's features in SQL as the single run
  computes them, and every detector **fitted once** on the history window. Fitting in prepare, not in
  each shard, keeps the results identical by construction (every shard scores with the very objects
  the single run would use, not a refit that merely should agree) and is the cheapest: a fit costs
  about as much as scoring the history sample (up to ``fit_max_rows`` rows, the same for every shard),
  so K shards refitting would do that work K times, and the fitted detectors (a few MB pickled) are
  smaller than the history sample they were fitted on. Writes, under ``detect_work_dir/<night>/``:
  ``subjects/_shard=<i>/`` (tonight's table ``_ts_subj``, with each row's position and shard, parquet
  partitioned by shard), ``pick.parquet`` (the peers chosen per group, for explanations),
  ``peers.parquet`` (HS6 peer statistics), ``detectors.pkl`` and ``manifest.json`` (a fresh token, the
  detector version, the shard plan, the schemas). The night's folder is replaced as a whole.
- ``shard i`` (no warehouse; an in-memory DuckDB reads the parquet): the detectors' raw scores, tail
  probabilities and rule firings of its rows. Each detector scores a row on its own, so a row's
  numbers are the same in any shard. Writes ``results/shard-<i>.parquet`` and a JSON beside it naming
  the prepare token it scored.
- ``merge`` (warehouse writer): checks that every shard scored this prepare's rows exactly once, then
  does everything night-global: combining the detectors, small-lot discount, analysts' feedback,
  ranking, the audit picks, the anomaly rows (explanations, consignment-level anomalies whose two
  sides may sit in different shards, counted once) and the writes, exactly as ``detect`` does. On
  success it removes the night's folder.

``detectors.pkl`` is a pickle: it is read only from the pipeline's own work folder, which has the same
trust as the warehouse file.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import time
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from detectors.base import Detector, FeatureFrame
from detectors.config import DetectionConfig
from tradesentry.detection.engine import (
    DetectionResult,
    ShardScores,
    detector_version,
    finish_night,
    merge_scores,
    night_outcomes,
    prepare_night,
    score_shard,
    shard_plan,
)
from tradesentry.detection.features import (
    FeatureBundle,
    drop_temp_tables,
    fetch_subjects,
    plain_array,
    subject_chapters,
)

MANIFEST = "manifest.json"


def night_dir(work_dir: Path, night: date) -> Path:
    return Path(work_dir) / night.isoformat()


def _sql_str(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _schema(con: duckdb.DuckDBPyConnection, table: str) -> list[list[str]]:
    return [[n, t] for n, t, *_ in con.execute(f"describe {table}").fetchall()]


def _restore(
    con: duckdb.DuckDBPyConnection, table: str, source: str, schema: list[list[str]], order: str
) -> None:
    """Temp ``table`` from parquet ``source``, with the column names, order and types it had (parquet
    has no HUGEINT: those came back as DOUBLE)."""
    cols = ", ".join(f'cast("{n}" as {t}) as "{n}"' for n, t in schema)
    con.execute(f"create or replace temp table {table} as select {cols} from {source} order by {order}")


def _read_manifest(work_dir: Path, night: date) -> dict[str, Any]:
    path = night_dir(work_dir, night) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"no prepared detection for {night} ({path}): run detect_prepare first")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


# ---------------------------------------------------------------------------------------- prepare


def prepare(
    con: duckdb.DuckDBPyConnection, night: date, config: DetectionConfig, shards: int, work_dir: Path
) -> dict[str, Any]:
    """Features and fitted detectors of ``night`` to ``work_dir/<night>/`` (replaced as a whole).
    Returns the manifest; its ``shards`` list has at least one entry."""
    t0 = time.perf_counter()
    prep = prepare_night(con, night, config)
    bundle = prep.bundle
    group, plan = shard_plan(subject_chapters(con, bundle.rowids), shards)
    token = uuid.uuid4().hex
    final = night_dir(work_dir, night)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{final.name}.tmp-{token}")
    tmp.mkdir()
    try:
        t = time.perf_counter()
        positions = pd.DataFrame(
            {"rid": bundle.rowids, "pos": np.arange(len(bundle.rowids), dtype="int64"), "shard": group}
        )
        con.register("_ts_shard_pos", positions)
        try:
            con.execute(
                "copy (select s.*, p.pos as _pos, p.shard as _shard from _ts_subj s "
                f"join _ts_shard_pos p on s.rowid = p.rid) to {_sql_str(tmp / 'subjects')} "
                "(format parquet, partition_by (_shard))"
            )
        finally:
            con.unregister("_ts_shard_pos")
        for entry in plan:  # an empty shard still gets its (empty) partition
            part = tmp / "subjects" / f"_shard={entry['shard']}"
            if not part.exists():
                part.mkdir(parents=True)
                con.execute(
                    "copy (select *, 0::bigint as _pos from _ts_subj limit 0) "
                    f"to {_sql_str(part / 'data_0.parquet')} (format parquet)"
                )
        con.execute(f"copy (select * from _ts_pick) to {_sql_str(tmp / 'pick.parquet')} (format parquet)")
        con.register("_ts_peers_out", bundle.peer_stats_hs6)
        try:
            con.execute(
                f"copy (select * from _ts_peers_out) to {_sql_str(tmp / 'peers.parquet')} (format parquet)"
            )
        finally:
            con.unregister("_ts_peers_out")
        (tmp / "detectors.pkl").write_bytes(pickle.dumps(prep.detectors, protocol=pickle.HIGHEST_PROTOCOL))
        timings = {**prep.timings, "prepare_write": time.perf_counter() - t}
        timings["prepare_total"] = time.perf_counter() - t0
        manifest = {
            "night": night.isoformat(),
            "token": token,
            "detector_version": prep.version,
            "rows": len(bundle.subjects),
            "shard_key": "hs_section",
            "shards": plan,
            "frame_dtypes": {c: str(t) for c, t in bundle.subjects.df.dtypes.items()},
            "subj_schema": _schema(con, "_ts_subj"),
            "pick_schema": _schema(con, "_ts_pick"),
            "peers_schema": _schema(con, f"(select * from {_sql_str(tmp / 'peers.parquet')})"),
            "timings": {k: round(v, 4) for k, v in timings.items()},
            "created_at": datetime.now(UTC).isoformat(),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        drop_temp_tables(con)
    old = final.with_name(f"{final.name}.old-{token}")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return manifest


# ------------------------------------------------------------------------------------------ shard


def _shard_frame(folder: Path, manifest: dict[str, Any], shard: int) -> tuple[np.ndarray, FeatureFrame]:
    """Shard ``shard``'s rows of the night's table, in key order: the numbers detectors read, with the
    dtypes the whole night's frame has (a column with no NULL in this shard still comes as float)."""
    dtypes: dict[str, str] = manifest["frame_dtypes"]
    have = {n for n, _ in manifest["subj_schema"]}
    cols = [c for c in dtypes if c != "pos" and c in have]
    src = _sql_str(folder / "subjects" / f"_shard={int(shard)}" / "*.parquet")
    with duckdb.connect() as mem:  # in memory: the warehouse is never opened here
        got = mem.execute(
            f"select _pos, {', '.join(cols)} from read_parquet({src}, hive_partitioning = false) order by _pos"
        ).fetchnumpy()
    positions = np.asarray(got.pop("_pos"), dtype="int64")
    data: dict[str, Any] = {"pos": positions}
    data.update({c: plain_array(got[c]) for c in cols})
    df = pd.DataFrame({c: data[c] for c in dtypes if c in data})
    for c, t in dtypes.items():
        if c in df.columns and str(df[c].dtype) != t:
            df[c] = df[c].astype(t)
    return positions, FeatureFrame(df, date.fromisoformat(manifest["night"]))


def _load_detectors(folder: Path) -> list[Detector]:
    dets: list[Detector] = pickle.loads((folder / "detectors.pkl").read_bytes())  # own work folder
    return dets


def score_shard_files(work_dir: Path, night: date, shard: int) -> dict[str, Any]:
    """Score shard ``shard`` of the prepared night and write its results. Opens no warehouse."""
    t0 = time.perf_counter()
    folder = night_dir(work_dir, night)
    manifest = _read_manifest(work_dir, night)
    entry = next((e for e in manifest["shards"] if e["shard"] == int(shard)), None)
    if entry is None:
        raise KeyError(f"no shard {shard} in the prepared night {night} ({len(manifest['shards'])} shards)")
    positions, frame = _shard_frame(folder, manifest, int(shard))
    dets = _load_detectors(folder)
    part = score_shard(dets, frame, positions)
    out = {"_pos": part.positions, "_fired": part.fired}
    for d in dets:
        out[f"s__{d.name}"] = part.scores[d.name]
        out[f"p__{d.name}"] = part.p[d.name]
    results = folder / "results"
    results.mkdir(exist_ok=True)
    target = results / f"shard-{int(shard)}.parquet"
    tmp = target.with_name(target.name + f".tmp-{uuid.uuid4().hex}")
    with duckdb.connect() as mem:
        mem.register("_ts_shard_out", pd.DataFrame(out))
        mem.execute(f"copy (select * from _ts_shard_out order by _pos) to {_sql_str(tmp)} (format parquet)")
    os.replace(tmp, target)
    timings = {**part.timings, "shard_total": time.perf_counter() - t0}
    record = {
        "night": night.isoformat(),
        "shard": int(shard),
        "label": entry["label"],
        "sections": entry["sections"],
        "rows": len(positions),
        "token": manifest["token"],
        "timings": {k: round(v, 4) for k, v in timings.items()},
    }
    side = results / f"shard-{int(shard)}.json"
    side_tmp = side.with_name(side.name + ".tmp")
    side_tmp.write_text(json.dumps(record, indent=2))
    os.replace(side_tmp, side)
    return record


def _read_shard(folder: Path, manifest: dict[str, Any], shard: int, dets: list[Detector]) -> ShardScores:
    results = folder / "results"
    side = results / f"shard-{shard}.json"
    if not side.exists():
        raise FileNotFoundError(f"shard {shard} of {manifest['night']} has not been scored ({side})")
    record = json.loads(side.read_text())
    if record.get("token") != manifest["token"]:
        raise RuntimeError(
            f"shard {shard} of {manifest['night']} scored another preparation of the night "
            f"({record.get('token')} != {manifest['token']}): score it again"
        )
    with duckdb.connect() as mem:
        got = mem.execute(
            f"select * from read_parquet({_sql_str(results / f'shard-{shard}.parquet')}) order by _pos"
        ).fetchnumpy()
    return ShardScores(
        positions=np.asarray(got["_pos"], dtype="int64"),
        scores={d.name: np.asarray(got[f"s__{d.name}"], dtype="float64") for d in dets},
        p={d.name: np.asarray(got[f"p__{d.name}"], dtype="float64") for d in dets},
        fired=np.asarray(got["_fired"], dtype=bool),
        timings={f"shard_{shard}_{k}": float(v) for k, v in record.get("timings", {}).items()},
    )


# ------------------------------------------------------------------------------------------ merge


def merge(
    con: duckdb.DuckDBPyConnection,
    night: date,
    config: DetectionConfig,
    work_dir: Path,
    settings: Any = None,
    labels: dict[str, str] | None = None,
    keep: bool = False,
) -> tuple[DetectionResult, dict[str, Any]]:
    """Combine the shards of the prepared night and write what ``detect`` writes. Refuses a
    preparation made with another detector configuration, a missing or stale shard, and rows not
    covered exactly once. Removes the night's work folder afterwards unless ``keep``."""
    from tradesentry.warehouse import ensure_schema

    t0 = time.perf_counter()
    folder = night_dir(work_dir, night)
    manifest = _read_manifest(work_dir, night)
    dets = _load_detectors(folder)
    version = detector_version(dets, config)
    if version != manifest["detector_version"]:
        raise RuntimeError(
            f"the night {night} was prepared with {manifest['detector_version']}, merged with {version}: "
            "the detection settings changed between the tasks; prepare again"
        )
    parts = [_read_shard(folder, manifest, int(e["shard"]), dets) for e in manifest["shards"]]
    ensure_schema(con)
    outcomes = night_outcomes(settings, config, labels)
    t = time.perf_counter()
    drop_temp_tables(con)
    _restore(con, "_ts_subj", f"read_parquet({_sql_str(folder / 'subjects' / '*' / '*.parquet')})",
             manifest["subj_schema"], "_pos")  # fmt: skip
    _restore(
        con, "_ts_pick", f"read_parquet({_sql_str(folder / 'pick.parquet')})", manifest["pick_schema"], "all"
    )
    names = ", ".join(f'"{n}"' for n, _ in manifest["peers_schema"])
    peers = con.execute(
        f"select {names} from read_parquet({_sql_str(folder / 'peers.parquet')}) order by flow, hs6"
    ).df()
    rowids, subjects = fetch_subjects(con)
    if len(subjects) != manifest["rows"]:
        raise RuntimeError(f"restored {len(subjects)} rows of {night}, prepared {manifest['rows']}")
    bundle = FeatureBundle(
        night=night,
        subjects=FeatureFrame(subjects, night),
        history=FeatureFrame(pd.DataFrame(), night),
        peer_stats_hs6=peers,
        config=config,
        rowids=rowids,
    )
    timings = {k: float(v) for k, v in manifest.get("timings", {}).items()}
    timings["merge_restore"] = time.perf_counter() - t
    ns = merge_scores(con, bundle, dets, parts, config, outcomes, timings)
    result = finish_night(con, ns, config, t0)
    if not keep:
        shutil.rmtree(folder, ignore_errors=True)
    return result, manifest
