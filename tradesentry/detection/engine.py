"""Score one night: features (SQL) -> detectors -> tail probabilities -> one ranked anomaly table.

Combining: each detector's score becomes an empirical tail probability p among the history's scores
of that detector (:class:`detectors.base.TailModel`), and a significance L = -log10 p. Detectors of
one family (e.g. the peer-price rule, the isolation forest and the ECOD-style scorer all look at the
value against peers) count once, by their strongest; the strongest family counts in full and every
other family adds ``bonus_weight`` x (L - ``bonus_min``) when it is itself remarkable. The combined
score is L / (L + 2) in [0, 1): 0.5 is one in a hundred, 0.6 one in a thousand; unlike 1 - p it never
saturates, so rows far out in the tail keep their order.

Steps: :func:`prepare_night` (features, detectors fitted on the history), :func:`score_shard` (each
row's detector scores, tail probabilities and rule firings: row-wise), :func:`merge_scores` and
:func:`finish_night` (everything night-global: combining, feedback, ranking, audit picks, anomaly rows,
writes). One process runs them in turn; the sharded DAG runs the shards as mapped tasks on the
night's rows split by HS section (:mod:`tradesentry.detection.sharding`), with the same results.

Writes for night N (delete night N, insert: idempotent):
- ``detection.scores``: every declaration scored (night N's, plus earlier declarations charged by
  tonight's mirror pairs or orphan check), score = combined;
- ``detection.anomalies``: flagged rows (a rule fired or combined L >= ``flag_min_significance``),
  at most ``max_anomalies_per_night``, plus ``audit_picks_per_night`` random unflagged declarations
  (seeded by the night), plus at most ``pattern_max_per_night`` pattern-level anomalies (a trader
  priced below its peers over a window, :mod:`tradesentry.detection.patterns`), ranked by score.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from detectors import build_detectors
from detectors.base import Detector, FeatureFrame, Reason, TailModel, finite, fmt_num, significance
from detectors.config import DetectionConfig
from tradesentry.anomaly_ids import anomaly_id
from tradesentry.detection.features import (
    HS_SECTIONS,
    FeatureBundle,
    build_features,
    drop_temp_tables,
    full_rows,
    subject_chapters,
)
from tradesentry.detection.feedback import (
    FeedbackModel,
    ensure_table,
    feature_matrix,
    feature_names,
    fit_feedback,
    insert_rows,
    read_outcomes,
    store_rows,
)
from tradesentry.detection.patterns import PATTERN_VERSION, build_pattern_anomalies

ENGINE_VERSION = "1.0"

FIELD_OF_KIND = {
    "undervaluation": "value",
    "overvaluation": "value",
    "unit_value_implausible_for_hs": "hs_code",
    "weight_mismatch": "mass",
    "mirror_value_mismatch": "consignment",
    "mirror_mass_mismatch": "mass",
    "hs_mismatch": "hs_code",
    "orphan_export": "consignment",
    "random_audit": "",
    "trader_pattern": "value",
    "route_pattern": "value",
}
CONSIGNMENT_KINDS = {"mirror_value_mismatch", "mirror_mass_mismatch", "hs_mismatch"}
FAMILY_KIND = {
    "weight": "weight_mismatch",
    "mirror_value": "mirror_value_mismatch",
    "mirror_mass": "mirror_mass_mismatch",
    "hs_mismatch": "hs_mismatch",
    "orphan": "orphan_export",
}


@dataclass
class NightScores:
    """Everything scored for one night, in memory (run_detection writes it)."""

    night: date
    frame: FeatureFrame
    detectors: list[Detector]
    scores: dict[str, np.ndarray]  # raw score per detector
    p: dict[str, np.ndarray]  # tail probability per detector
    significance: np.ndarray  # combined -log10 p
    combined: np.ndarray  # in [0, 1)
    fired: np.ndarray  # a rule fired
    bundle: FeatureBundle
    timings: dict[str, float] = field(default_factory=dict)
    unsupervised: np.ndarray | None = None  # combined -log10 p before analysts' feedback
    feedback: FeedbackModel | None = None

    def features(self, idx: np.ndarray | None = None) -> np.ndarray:
        """Feedback features (detectors' significances, peer, route, trader and mirror features)."""
        frame = self.frame
        pv = self.p
        sig = self.unsupervised if self.unsupervised is not None else self.significance
        if idx is not None:
            frame = FeatureFrame(self.frame.df.iloc[idx], self.night)
            pv = {k: v[idx] for k, v in pv.items()}
            sig = sig[idx]
        return feature_matrix(frame, pv, sig, self.detectors)


@dataclass
class DetectionResult:
    night: date
    rows_scored: int
    anomalies: int  # flagged (audit picks not counted)
    audit_picks: int
    by_kind: dict[str, int]
    detector_version: str
    timings: dict[str, float]
    feedback: dict[str, Any] = field(default_factory=dict)  # decisions used (count, digest)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (the night as an ISO date)."""
        return {
            "night": self.night.isoformat(),
            "rows_scored": self.rows_scored,
            "anomalies": self.anomalies,
            "audit_picks": self.audit_picks,
            "by_kind": dict(self.by_kind),
            "detector_version": self.detector_version,
            "timings": dict(self.timings),
            "feedback": dict(self.feedback),
        }


def detector_version(detectors: list[Detector], config: DetectionConfig) -> str:
    cfg = hashlib.sha256(repr(config).encode()).hexdigest()[:8]
    parts = ",".join(f"{d.name}={d.version}" for d in detectors)
    # The pattern queries are not Detector objects, but a change to them changes the rows too.
    return f"engine={ENGINE_VERSION};{parts};patterns={PATTERN_VERSION};config={cfg}"


def _config(settings: Any, config: DetectionConfig | None) -> DetectionConfig:
    if config is not None:
        return config
    return DetectionConfig.from_settings(settings)


@dataclass
class PreparedNight:
    """A night's features and the detectors fitted on its history: what every shard scores with."""

    bundle: FeatureBundle
    detectors: list[Detector]
    version: str
    timings: dict[str, float] = field(default_factory=dict)


@dataclass
class ShardScores:
    """Per-detector raw scores, tail probabilities and rule firings of some of a night's rows
    (``positions`` in the night's key order). Row-wise only: nothing here depends on the other rows."""

    positions: np.ndarray
    scores: dict[str, np.ndarray]
    p: dict[str, np.ndarray]
    fired: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)


def prepare_night(
    con: duckdb.DuckDBPyConnection, night: date, config: DetectionConfig, marts: str = "marts"
) -> PreparedNight:
    """Features (temp tables stay for the merge) and every detector fitted on the history window,
    once for the whole night: a shard scores with these very objects, so its models are the
    single run's models by construction."""
    bundle = build_features(con, night, config, marts)
    timings = dict(bundle.timings)
    dets = build_detectors(config)
    for det in dets:
        t = time.perf_counter()
        det.fit(bundle.history)
        timings[f"fit_{det.name}"] = time.perf_counter() - t
    return PreparedNight(bundle, dets, detector_version(dets, config), timings)


def score_shard(
    dets: list[Detector], frame: FeatureFrame, positions: np.ndarray | None = None
) -> ShardScores:
    """Score ``frame`` (some rows of the night, at ``positions``; default: all of them) with fitted
    detectors: raw score, tail probability among the history's scores, rule firing. Context rows
    (earlier declarations charged by tonight's pairs or orphan check) get nothing from the detectors
    that score tonight's declarations only. Every detector scores each row on its own
    (:mod:`detectors.base`), so a row's numbers do not depend on which shard it is in."""
    n = len(frame)
    pos = np.arange(n, dtype="int64") if positions is None else np.asarray(positions, dtype="int64")
    if len(pos) != n:
        raise ValueError(f"{len(pos)} positions for {n} rows")
    context = frame.col("is_context", 0.0) > 0
    scores: dict[str, np.ndarray] = {}
    pvals: dict[str, np.ndarray] = {}
    timings: dict[str, float] = {}
    fired = np.zeros(n, dtype=bool)
    for det in dets:
        t = time.perf_counter()
        s = det.score(frame) if n else np.zeros(0)
        tail_p = getattr(det, "tail_p", None)
        p = tail_p(s) if tail_p is not None else TailModel(det.history_scores_).p(s)
        if getattr(det, "scope", "night") == "night":
            s = np.where(context, 0.0, s)
            p = np.where(context, 1.0, p)
        fires = getattr(det, "fires", None)
        if fires is not None and n:
            f = np.asarray(fires(frame), dtype=bool)
            if getattr(det, "scope", "night") == "night":
                f &= ~context
            fired |= f
        scores[det.name] = np.asarray(s, dtype="float64")
        pvals[det.name] = np.asarray(p, dtype="float64")
        timings[f"detector_{det.name}"] = time.perf_counter() - t
    return ShardScores(pos, scores, pvals, fired, timings)


def merge_scores(
    con: duckdb.DuckDBPyConnection,
    bundle: FeatureBundle,
    dets: list[Detector],
    parts: list[ShardScores],
    config: DetectionConfig,
    outcomes: dict[str, str] | None = None,
    timings: dict[str, float] | None = None,
) -> NightScores:
    """The night-global steps on the shards' rows put back in key order: combined significance,
    small-lot discount, analysts' feedback (fitted here, on the warehouse's feature rows), combined
    score. Every position must come from exactly one shard."""
    frame = bundle.subjects
    n = len(frame)
    timings = dict(timings or {})
    taken = np.zeros(n, dtype="int64")
    for part in parts:
        if len(part.positions) and (part.positions.min() < 0 or part.positions.max() >= n):
            raise ValueError(f"shard positions outside the night's {n} rows")
        np.add.at(taken, part.positions, 1)
    if n and not (taken == 1).all():
        missing, twice = int((taken == 0).sum()), int((taken > 1).sum())
        raise ValueError(f"shards do not cover the night's {n} rows once: {missing} missing, {twice} twice")
    if len(parts) == 1 and np.array_equal(parts[0].positions, np.arange(n)):
        # one part holding every row in order (the unsharded run): its arrays are the night's, not
        # copied (on a 5M-row night a copy is 80 MB per detector)
        scores, pvals, fired = dict(parts[0].scores), dict(parts[0].p), parts[0].fired
    else:
        scores = {d.name: np.zeros(n) for d in dets}
        pvals = {d.name: np.ones(n) for d in dets}
        fired = np.zeros(n, dtype=bool)
        for part in parts:
            for d in dets:
                scores[d.name][part.positions] = part.scores[d.name]
                pvals[d.name][part.positions] = part.p[d.name]
            fired[part.positions] = part.fired
    for part in parts:
        for k, v in part.timings.items():
            timings[k] = timings.get(k, 0.0) + v
    context = frame.col("is_context", 0.0) > 0
    sig = small_lot_adjust(_combine(dets, pvals, n, config, frame), frame, config)
    unsupervised = sig
    model = None
    if outcomes and config.feedback:
        t = time.perf_counter()
        names = feature_names(dets)
        model = fit_feedback(con, bundle.night, outcomes, names, config)
        if model is not None and n:
            X = feature_matrix(frame, pvals, sig, dets)
            sig = np.where(context & (sig <= 0), sig, model.adjust(X, sig))
        timings["feedback"] = time.perf_counter() - t
    combined = sig / (sig + 2.0)
    return NightScores(
        bundle.night, frame, dets, scores, pvals, sig, combined, fired, bundle, timings, unsupervised, model
    )


def shard_plan(chapters: np.ndarray, shards: int) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Split a night's rows by HS section (:data:`HS_SECTIONS`, from each row's HS chapter; -1: no
    valid HS code) into at most ``shards`` groups: a section is never split; the sections, largest
    first (ties: lower section first), go each to the group with the fewest rows so far (ties: the
    lower group). Returns each row's group and, per group, its sections and row count. Always at least
    one group (an empty night has one empty group)."""
    section = np.where(
        (chapters >= 0) & (chapters < len(SECTION_OF_CHAPTER)),
        SECTION_OF_CHAPTER[np.clip(chapters, 0, len(SECTION_OF_CHAPTER) - 1)],
        -1,
    )
    present, counts = np.unique(section, return_counts=True)
    k = max(1, min(int(shards), len(present)))
    load = [0] * k
    members: list[list[int]] = [[] for _ in range(k)]
    group_of_section: dict[int, int] = {}
    for i in sorted(range(len(present)), key=lambda i: (-int(counts[i]), int(present[i]))):
        g = min(range(k), key=lambda g: (load[g], g))
        load[g] += int(counts[i])
        members[g].append(int(present[i]))
        group_of_section[int(present[i])] = g
    group = np.zeros(len(section), dtype="int64")
    for sec, g in group_of_section.items():
        group[section == sec] = g
    plan = [
        {"shard": g, "sections": sorted(members[g]), "label": shard_label(g, members[g]), "rows": load[g]}
        for g in range(k)
    ]
    return group, plan


def shard_label(shard: int, sections: list[int]) -> str:
    """e.g. 'shard 2: HS sections XI, XVI' (roman numerals as in the HS; '?' for no valid code)."""
    names = [SECTION_NAMES[s] if 0 <= s < len(SECTION_NAMES) else "?" for s in sorted(sections)]
    return f"shard {shard}: HS section{'s' if len(names) != 1 else ''} {', '.join(names) or '-'}"


def score_night(
    con: duckdb.DuckDBPyConnection,
    night: date,
    config: DetectionConfig,
    outcomes: dict[str, str] | None = None,
    shards: int = 1,
    marts: str = "marts",
) -> NightScores:
    """Features, fit on the history, score the night; with analysts' ``outcomes`` (anomaly id ->
    confirmed / dismissed), re-rank with what they teach. No writes (temp tables only).

    The same three steps as the sharded run (:mod:`tradesentry.detection.sharding`), in one process:
    :func:`prepare_night`, :func:`score_shard` per shard (``shards`` > 1 splits by HS section as the
    sharded run does; the results are the same), :func:`merge_scores`."""
    from tradesentry.warehouse import yield_memory

    prep = prepare_night(con, night, config, marts)
    frame = prep.bundle.subjects
    # the night's features now live in Python too: DuckDB's share of the task's memory shrinks by
    # as much (its temp tables spill; only the flagged rows and the writes read them again).
    # run_detection restores the limit.
    yield_memory(con, int(frame.df.memory_usage(index=False).sum()))
    if shards <= 1:
        parts = [score_shard(prep.detectors, frame)]
    else:
        group, plan = shard_plan(subject_chapters(con, prep.bundle.rowids), shards)
        parts = []
        for entry in plan:
            idx = np.flatnonzero(group == entry["shard"])
            sub = FeatureFrame(frame.df.iloc[idx].reset_index(drop=True), night)
            parts.append(score_shard(prep.detectors, sub, idx))
    return merge_scores(con, prep.bundle, prep.detectors, parts, config, outcomes, prep.timings)


def small_lot_factor(frame: FeatureFrame, config: DetectionConfig) -> np.ndarray:
    """``small_lot_discount`` for lots of tiny value far smaller than the peers' (samples, parcels)."""
    value = frame.col("value", np.inf)
    mass = frame.col("mass", np.inf)
    lot = frame.col("lot_p05_kg", 0.0)
    small = (value < config.small_lot_value_usd) & (mass < config.small_lot_mass_ratio * lot)
    return np.where(small, config.small_lot_discount, 1.0)


def small_lot_adjust(sig: np.ndarray, frame: FeatureFrame, config: DetectionConfig) -> np.ndarray:
    """Combined significance of small lots: discounted (:func:`small_lot_factor`) and then capped at
    ``small_lot_max_significance``. A sample or parcel strays from its peers by construction (a
    handful of pieces at a token value: value per kg and mass per unit tens of robust SDs out), so a
    multiplicative discount alone still ranked such lots among the strongest anomalies of the night,
    ahead of real ones; below the duty-relief value there is little at stake whatever the deviation.
    The cap keeps them below ``flag_min_significance`` (a firing rule still flags them, and they
    still rank above unremarkable rows)."""
    factor = small_lot_factor(frame, config)
    return np.where(factor < 1.0, np.minimum(sig * factor, config.small_lot_max_significance), sig)


def mirror_confirmed(frame: FeatureFrame, config: DetectionConfig) -> np.ndarray:
    """Rows whose consignment's other side, paired tonight, declared the same goods alike: the same
    HS6, a net mass within ``mirror_qty_tolerance`` and a value within ``mirror_confirm_z`` robust
    SDs of the history's pairs, or a value gap the mirror charges to the other side. A value changed
    on one side shows as a gap between the two sides; a price the partner's customs saw too is far
    likelier the goods' real price."""
    lr_value = frame.col("pair_lr_value")
    z = frame.col("pair_z_value")
    lr_mass = frame.col("pair_lr_mass")
    same_hs = frame.col("pair_hs_mismatch", 1.0) == 0
    mass_tol = -math.log(1.0 - config.mirror_qty_tolerance)
    mass_ok = np.abs(np.where(np.isfinite(lr_mass), lr_mass, np.inf)) <= mass_tol
    z_abs = np.abs(np.where(np.isfinite(z), z, np.inf))
    other_blamed = frame.col("blame_value", 1.0) == 0
    value_ok = np.isfinite(lr_value) & ((z_abs <= config.mirror_confirm_z) | other_blamed)
    return same_hs & mass_ok & value_ok


def _combine(
    dets: list[Detector],
    pvals: dict[str, np.ndarray],
    n: int,
    config: DetectionConfig,
    frame: FeatureFrame | None = None,
) -> np.ndarray:
    """Combined significance (module docstring). With ``frame``, the value family of rows the mirror
    confirms (:func:`mirror_confirmed`) counts ``mirror_confirm_discount`` of its significance."""
    fams: dict[str, np.ndarray] = {}
    for det in dets:
        L = significance(pvals[det.name])
        fams[det.family] = np.maximum(fams[det.family], L) if det.family in fams else L
    if frame is not None and "value" in fams and n:
        confirmed = mirror_confirmed(frame, config)
        pending = frame.col("mirror_pending", 0.0) > 0
        factor = np.where(
            confirmed, config.mirror_confirm_discount, np.where(pending, config.mirror_pending_discount, 1.0)
        )
        fams["value"] = fams["value"] * factor
    if not fams:
        return np.zeros(n)
    # family by family, in place: a (rows x families) matrix and its temporaries were the peak of a
    # 5M-row night's detection
    top = np.zeros(n)
    excess = np.zeros(n)  # sum over families of max(L - bonus_min, 0)
    tmp = np.empty(n)
    for L in fams.values():
        np.maximum(top, L, out=top)
        np.subtract(L, config.bonus_min, out=tmp)
        np.maximum(tmp, 0.0, out=tmp)
        excess += tmp
    np.subtract(top, config.bonus_min, out=tmp)
    np.maximum(tmp, 0.0, out=tmp)
    excess -= tmp  # the strongest family is not its own bonus
    excess *= config.bonus_weight
    return top + excess


def run_detection(
    con: duckdb.DuckDBPyConnection,
    night: date,
    settings: Any = None,
    config: DetectionConfig | None = None,
    labels: dict[str, str] | None = None,
    shards: int = 1,
    marts: str = "marts",
) -> DetectionResult:
    """Score ``night``, write ``detection.scores`` and ``detection.anomalies`` for it (idempotent).

    ``labels``: analysts' outcomes by anomaly id; None reads them from the review store
    (``settings.review_db_url``), ``{}`` scores without any. ``shards``: score in that many HS-section
    shards, one after the other in this process (same results; the Airflow DAG's sharded tasks run
    them in parallel, :mod:`tradesentry.detection.sharding`). ``marts``: the schema of ``con`` the
    marts are read from (``tradesentry.warehouse_io.stage_detection_inputs``)."""
    from tradesentry.warehouse import ensure_schema, restore_memory_limit

    t0 = time.perf_counter()
    cfg = _config(settings, config)
    ensure_schema(con)
    outcomes = night_outcomes(settings, cfg, labels)
    try:
        ns = score_night(con, night, cfg, outcomes, shards=shards, marts=marts)
        return finish_night(con, ns, cfg, t0)
    finally:
        restore_memory_limit(con, getattr(settings, "duckdb_memory_limit", None))


def night_outcomes(settings: Any, cfg: DetectionConfig, labels: dict[str, str] | None) -> dict[str, str]:
    """``labels`` when given, else the review store's outcomes (when feedback is on)."""
    return labels if labels is not None else (read_outcomes(settings) if cfg.feedback else {})


def finish_night(
    con: duckdb.DuckDBPyConnection, ns: NightScores, cfg: DetectionConfig, t0: float
) -> DetectionResult:
    """The night-global end of a run: rank, pick the audit sample, build the anomaly rows (with
    consignment-level anomalies counted once) and write both tables for the night."""
    timings = ns.timings
    version = detector_version(ns.detectors, cfg)

    t = time.perf_counter()
    anomalies = build_anomalies(con, ns, cfg, version)
    timings["anomalies"] = time.perf_counter() - t

    t = time.perf_counter()
    _write(con, ns, anomalies, version)
    drop_temp_tables(con)
    timings["write"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0

    flagged = [a for a in anomalies if not a["is_audit_pick"]]
    return DetectionResult(
        night=ns.night,
        rows_scored=len(ns.frame),
        anomalies=len(flagged),
        audit_picks=len(anomalies) - len(flagged),
        by_kind=dict(sorted(Counter(a["kind"] for a in flagged).items())),
        detector_version=version,
        timings={k: round(v, 4) for k, v in timings.items()},
        feedback=ns.feedback.describe() if ns.feedback is not None else {"labels": 0},
    )


# ----------------------------------------------------------------------------------------------
# anomalies (Python only for flagged rows)


def _order(combined: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Indices by combined score descending, ties by key (deterministic)."""
    return np.lexsort((keys, -combined))


def select_rows(ns: NightScores, cfg: DetectionConfig) -> tuple[np.ndarray, np.ndarray]:
    """Indices of flagged rows (ranked, capped) and of the night's audit picks."""
    n = len(ns.frame)
    if n == 0:
        return np.zeros(0, dtype=int), np.zeros(0, dtype=int)
    # the frame is ordered by key, so the row position breaks ties exactly as the key would
    flag = (ns.fired | (ns.significance >= cfg.flag_min_significance)) & (ns.significance > 0)
    order = _order(ns.combined, np.arange(n))
    flagged = order[flag[order]][: cfg.max_anomalies_per_night]
    context = ns.frame.col("is_context", 0.0) > 0
    pool_mask = ~context
    pool_mask[flagged] = False
    pool = np.flatnonzero(pool_mask)  # in key order
    share = min(max(cfg.audit_share, 0.0), 0.9)
    wanted = max(cfg.audit_picks_per_night, math.ceil(share / (1.0 - share) * len(flagged) - 1e-9))
    k = min(wanted, len(pool))
    if k > 0:
        rng = np.random.default_rng([cfg.seed, ns.night.toordinal()])
        audit = np.sort(rng.choice(pool, size=k, replace=False))
    else:
        audit = np.zeros(0, dtype=int)
    return flagged, audit


def _missing(v: Any) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _row(ns: NightScores, i: int, full: pd.DataFrame) -> dict[str, Any]:
    row = {k: (None if _missing(v) else v) for k, v in full.loc[i].items()}
    for d in ns.detectors:
        row[f"s_{d.name}"] = float(ns.scores[d.name][i])
        row[f"p_{d.name}"] = float(ns.p[d.name][i])
        row[f"L_{d.name}"] = float(significance(np.array([ns.p[d.name][i]]))[0])
    return row


SECTION_NAMES = (
    "I", "II", "III", "IV", "V", "VI", "VII", "VIII", "IX", "X", "XI", "XII", "XIII", "XIV", "XV", "XVI",
    "XVII", "XVIII", "XIX", "XX", "XXI",
)  # fmt: skip


def hs_section(hs: str) -> int:
    try:
        ch = int(str(hs)[:2])
    except ValueError:
        return -1
    for i, (lo, hi) in enumerate(HS_SECTIONS):
        if lo <= ch <= hi:
            return i
    return -1


SECTION_OF_CHAPTER = np.array([hs_section(f"{c:02d}") for c in range(100)], dtype="int64")


def _misclassified_as(
    row: dict[str, Any], peers: pd.DataFrame, cfg: DetectionConfig
) -> dict[str, Any] | None:
    """Another HS6 of the same HS section and flow whose peers find this unit value typical."""
    if not finite(row.get("l_uv")) or not row.get("hs6") or peers.empty:
        return None
    hs6 = str(row["hs6"])
    sec = hs_section(hs6)
    cand = peers[
        (peers["flow"] == row.get("flow"))
        & (peers["hs6"] != hs6)
        & ((peers["section"] if "section" in peers.columns else peers["hs6"].map(hs_section)) == sec)
        & (peers["n"] >= cfg.min_peer_group)
    ]
    if cand.empty:
        return None
    z = (float(row["l_uv"]) - cand["median_log_uv"]) / cand["spread"]
    best = z.abs().idxmin()
    if abs(float(z[best])) > cfg.misclass_max_z:
        return None
    c = cand.loc[best]
    return {
        "hs6": c["hs6"],
        "median": math.exp(float(c["median_log_uv"])),
        "n": int(c["n"]),
        "z": float(z[best]),
    }


def _row_deviation(row: dict[str, Any]) -> float:
    """price_deviation for one row: log value per unit (else per kg) minus the peers' median."""
    for x, med in (("l_vq", "vq_med"), ("l_uv", "uv_med")):
        if finite(row.get(x)) and finite(row.get(med)):
            return float(row[x]) - float(row[med])
    return 0.0


def _mass_suspect(row: dict[str, Any], d: float, cfg: DetectionConfig) -> Reason | None:
    """Without a quantity, a value per kg off its peers is a wrong value or a wrong mass. The field
    that strays from the peers' lots in the direction that explains the gap is the suspect: the
    mass when it is further out (by ``mass_suspect_margin`` robust SDs) than the value."""
    if finite(row.get("l_vq")) or not finite(row.get("z_lot_mass")) or not finite(row.get("z_lot_value")):
        return None
    s = 1.0 if d > 0 else -1.0
    a_mass = -s * float(row["z_lot_mass"])  # value per kg high: mass too small
    a_value = s * float(row["z_lot_value"])  # value per kg high: value too large
    if a_mass < cfg.mass_suspect_margin + max(a_value, 0.0):
        return None
    med_uv = math.exp(float(row["uv_med"])) if finite(row.get("uv_med")) else float("nan")
    text = (
        f"Mass: declared {fmt_num(float(row['mass']))} kg for {fmt_num(float(row['value']))} USD = "
        f"{fmt_num(float(row['uv']))} USD/kg vs HS {row.get('hs6')} {row.get('flow')} peers' median "
        f"{fmt_num(med_uv)} USD/kg; the mass is {float(row['z_lot_mass']):+.1f} robust SDs from the peers' lots "
        f"(median {fmt_num(float(row.get('lot_mass_median_kg') or float('nan')))} kg) while the value is "
        f"{float(row['z_lot_value']):+.1f} (median {fmt_num(float(row.get('lot_value_median_usd') or float('nan')))} USD)"
    )
    return Reason(text, "mass", float(row.get("L_peer_price", 0.0)), "peer_stats")


def _family_L(row: dict[str, Any], dets: list[Detector]) -> dict[str, float]:
    out: dict[str, float] = {}
    for d in dets:
        out[d.family] = max(out.get(d.family, 0.0), row[f"L_{d.name}"])
    return out


def _kind(
    row: dict[str, Any], dets: list[Detector], peers: pd.DataFrame, cfg: DetectionConfig
) -> tuple[str, Reason | None]:
    fam = _family_L(row, dets)
    best = max(sorted(fam), key=lambda f: fam[f])
    if row.get("pair_hs_mismatch") and row.get("blame_hs") and fam.get("hs_mismatch", 0.0) >= cfg.bonus_min:
        # the partner declared another HS code for the same consignment: the mirror says it all
        return "hs_mismatch", None
    if best == "value":
        d = _row_deviation(row)
        if d == 0.0 and finite(row.get("z_uv")):
            d = float(row["z_uv"])
        # on imports a unit value implausibly high for the declared code but typical of another code
        # of the same section points at the code (a lower-duty code), not at the value. It is asked
        # before the mass: goods of another code also come in that code's lot sizes, so a lot far
        # lighter than the declared code's peers is what a wrong code predicts as well, while a wrong
        # mass makes the price per kg typical of another code only by chance.
        # Exports too when the lot size speaks strongly for the other code as well (the lot evidence
        # of detectors.peer_price.MisclassLot): a dear export alone is more often overvalued.
        lot_lead = (
            finite(row.get("misclass_lot_llr")) and float(row["misclass_lot_llr"]) > cfg.misclass_lot_lead
        )
        other = (
            _misclassified_as(row, peers, cfg)
            if d > 0 and (row.get("flow") == "import" or lot_lead)
            else None
        )
        mass_reason = _mass_suspect(row, d, cfg) if other is None else None
        if mass_reason is not None:
            return "weight_mismatch", mass_reason
        if d < 0:
            return "undervaluation", None
        if other is not None:
            text = (
                f"HS code: {fmt_num(float(row['uv']))} USD/kg is implausible for HS {row.get('hs6')} "
                f"({float(row.get('z_uv') or 0):+.1f} robust SDs) but typical of HS {other['hs6']} "
                f"{row.get('flow')} peers (median {fmt_num(other['median'])} USD/kg over {other['n']} declarations)"
            )
            return "unit_value_implausible_for_hs", Reason(text, "hs_code", fam["value"], "peer_stats")
        return "overvaluation", None
    return FAMILY_KIND.get(best, "undervaluation"), None


def _reasons(row: dict[str, Any], kind: str, extra: Reason | None, dets: list[Detector]) -> list[str]:
    by_family: dict[str, list[Reason]] = {}
    for d in dets:
        if row[f"L_{d.name}"] <= 0 and not row.get(f"s_{d.name}"):
            continue
        for r in d.explain(row):
            by_family.setdefault(d.family, []).append(r)
    # within a family: rules (with the peer numbers) before models, then by strength
    rule_first = {"peer_price": 0, "weight": 0}
    for fam, rs in by_family.items():
        rs.sort(key=lambda r: (rule_first.get(r.detector, 1), -r.strength))
        by_family[fam] = rs
    primary_family = {
        "undervaluation": "value",
        "overvaluation": "value",
        "unit_value_implausible_for_hs": "value",
        "weight_mismatch": "weight",
        "mirror_value_mismatch": "mirror_value",
        "mirror_mass_mismatch": "mirror_mass",
        "hs_mismatch": "hs_mismatch",
        "orphan_export": "orphan",
    }.get(kind)
    out: list[Reason] = []
    if extra is not None:
        out.append(extra)
        if kind == "weight_mismatch" and "value" in by_family:
            primary_family = "value"  # the price gap itself comes next
    if primary_family in by_family:
        out.append(by_family[primary_family][0])
    if kind == "weight_mismatch" and primary_family not in by_family and "value" in by_family:
        mass_reasons = [r for r in by_family["value"] if r.field == "mass"]
        out.extend(mass_reasons[:1])
    others = sorted(
        (rs[0] for fam, rs in by_family.items() if fam != primary_family),
        key=lambda r: -r.strength,
    )
    out.extend(others)
    # then the remaining reasons of the primary family (e.g. the model view of a price anomaly)
    if primary_family in by_family:
        out.extend(by_family[primary_family][1:])
    texts: list[str] = []
    for r in out:
        if r.text not in texts:
            texts.append(r.text)
    return texts[:3]


def _value_at_stake(row: dict[str, Any], kind: str) -> float | None:
    value = float(row["value"]) if finite(row.get("value")) else None
    if kind in ("undervaluation", "overvaluation") and finite(row.get("uv_med")) and finite(row.get("mass")):
        expected = math.exp(float(row["uv_med"])) * float(row["mass"])
        if value is None:
            return None
        return max(expected - value, 0.0) if kind == "undervaluation" else max(value - expected, 0.0)
    if (
        kind == "mirror_value_mismatch"
        and finite(row.get("pair_export_value"))
        and finite(row.get("pair_import_value"))
    ):
        return abs(float(row["pair_export_value"]) - float(row["pair_import_value"]))
    return value


def build_anomalies(
    con: duckdb.DuckDBPyConnection, ns: NightScores, cfg: DetectionConfig, version: str
) -> list[dict[str, Any]]:
    flagged, audit = select_rows(ns, cfg)
    peers = ns.bundle.peer_stats_hs6
    if not peers.empty:
        peers = peers.assign(section=peers["hs6"].map(hs_section))  # once, not per flagged row
    positions = sorted({int(i) for i in flagged} | {int(i) for i in audit})
    full = full_rows(con, positions, ns.bundle)
    records: list[dict[str, Any]] = []
    for idx, is_audit in [(int(i), False) for i in flagged] + [(int(i), True) for i in audit]:
        row = _row(ns, idx, full)
        kind, extra = _kind(row, ns.detectors, peers, cfg)
        reasons = _reasons(row, kind, extra, ns.detectors)
        if is_audit:
            kind = "random_audit"
            reasons = [
                f"Random audit pick (seeded by the night): not flagged, combined score "
                f"{ns.combined[idx]:.3f}; reviewed to measure what the ranking misses",
                *reasons,
            ][:3]
        keys = [str(row["key"])]
        level = "declaration"
        countries = [row.get("reporter_country")]
        if kind in CONSIGNMENT_KINDS and row.get("pair_partner_key"):
            keys.append(str(row["pair_partner_key"]))
            level = "consignment"
            countries.append(row.get("pair_partner_country"))
        contributing = sorted(
            (d.name for d in ns.detectors if row[f"L_{d.name}"] >= cfg.bonus_min),
            key=lambda name: -row[f"L_{name}"],
        )
        records.append(
            {
                "anomaly_id": anomaly_id(kind, keys),
                "night": ns.night,
                "kind": kind,
                "level": level,
                "declaration_keys": sorted(keys),
                "primary_key": str(row["key"]),
                "reporter_country": row.get("reporter_country"),
                "partner_country": row.get("partner_country"),
                "countries": sorted({c for c in countries if c}),
                "flow": row.get("flow"),
                "hs6": row.get("hs6"),
                "trader_id": row.get("trader_id"),
                "trader_name": row.get("trader_name"),
                "score": float(ns.combined[idx]),
                "rank": 0,
                "detectors": contributing,
                "detector_scores": json.dumps({d.name: round(row[f"s_{d.name}"], 6) for d in ns.detectors}),
                "tail_probabilities": json.dumps(
                    {d.name: float(f"{row[f'p_{d.name}']:.4g}") for d in ns.detectors}
                ),
                "reasons": reasons,
                "peer_median_usd_per_kg": math.exp(float(row["uv_med"]))
                if finite(row.get("uv_med"))
                else None,
                "peer_count": int(row["uv_n"]) if finite(row.get("uv_n")) else None,
                "unit_value_usd_per_kg": float(row["uv"]) if finite(row.get("uv")) else None,
                "value_at_stake_usd": _value_at_stake(row, kind),
                "detector_version": version,
                "is_audit_pick": is_audit,
                "source_file": row.get("source_file"),
                "source_line": int(row["source_line"]) if finite(row.get("source_line")) else None,
                "_pos": idx,
            }
        )
    # one anomaly per id (the same consignment can be charged from both of tonight's sides)
    seen: set[str] = set()
    unique = []
    for r in sorted(records, key=lambda r: (-r["score"], r["anomaly_id"])):
        if r["anomaly_id"] not in seen:
            seen.add(r["anomaly_id"])
            unique.append(r)
    # pattern-level anomalies (night-global, capped; tradesentry.detection.patterns) are inserted by
    # score: the declaration-level anomalies keep their scores and their order among themselves
    patterns = build_pattern_anomalies(
        con, ns.night, ns.bundle.peer_stats_hs6, cfg, version, ns.bundle.marts_schema
    )
    if patterns:
        unique = sorted(
            unique + [p for p in patterns if p["anomaly_id"] not in seen],
            key=lambda r: (-r["score"], r["anomaly_id"]),
        )
    for rank, r in enumerate(unique, start=1):
        r["rank"] = rank
    return unique


# ----------------------------------------------------------------------------------------------
# writing

ANOMALY_COLUMNS = (
    "anomaly_id, night, kind, level, declaration_keys, primary_key, reporter_country, partner_country, "
    "countries, flow, hs6, trader_id, trader_name, score, rank, detectors, detector_scores, "
    "tail_probabilities, reasons, peer_median_usd_per_kg, peer_count, unit_value_usd_per_kg, "
    "value_at_stake_usd, detector_version, is_audit_pick, source_file, source_line"
)


def _write(
    con: duckdb.DuckDBPyConnection, ns: NightScores, anomalies: list[dict[str, Any]], version: str
) -> None:
    out = pd.DataFrame({"rid": ns.bundle.rowids, "score": ns.combined})
    ensure_table(con)
    names = [d.name for d in ns.detectors]
    for name in names:
        out[f"s_{name}"] = np.round(ns.scores[name], 6)
    json_expr = "json_object(" + ", ".join(f"'{n}', s_{n}" for n in names) + ")" if names else "'{}'"
    con.register("_ts_scores_out", out)
    try:
        con.execute("begin transaction")
        con.execute("delete from detection.scores where night = ?", [ns.night])
        con.execute(
            f"""insert into detection.scores
                select ?, s.reporter_country, s.declaration_id, cast(s.item_no as integer),
                    s.key, o.score, cast({json_expr} as json), ?
                from _ts_scores_out o join _ts_subj s on s.rowid = o.rid""",
            [ns.night, version],
        )
        con.execute("delete from detection.anomalies where night = ?", [ns.night])
        # pattern-level anomalies (no _pos) have no feature row: they stay out of the feedback store
        rowed = [a for a in anomalies if a.get("_pos") is not None]
        pos = np.array([int(a["_pos"]) for a in rowed], dtype=int)
        X = ns.features(pos) if len(pos) else np.zeros((0, 0))
        store_rows(
            con, ns.night, [{**a, "_pos": i} for i, a in enumerate(rowed)], X, feature_names(ns.detectors)
        )
        cols = [c.strip() for c in ANOMALY_COLUMNS.split(",")]
        insert_rows(con, "detection.anomalies", cols, [[a[c] for c in cols] for a in anomalies])
        con.execute("commit")
    except Exception:
        con.execute("rollback")
        raise
    finally:
        con.unregister("_ts_scores_out")
