"""Run the pipeline on labelled samples and judge the ranking (``tradesentry evaluate``).

Protocol (written into ``benchmarks/evaluation.md`` by :mod:`tradesentry.evaluation.report`):

- Two labelled samples from :func:`tradesentry.samplegen.generate`: **A** (seed 7, default anomaly
  proportions) is the one detection was tuned on; **B** (another seed, scale and the ``heldout``
  proportions) is held back and only reported on.
- Each sample goes through the whole pipeline (pull, load, GX, dbt, marts); detection then scores
  every night against its own history window (``--reuse`` skips the pipeline and only re-detects).
- Evaluated declarations: those of the nights after a warm-up (the first ``warmup`` nights only build
  history), one row per declaration key with its highest score over the evaluated nights (as
  ``tradesentry export-scores`` gives it). Positives: ground-truth rows with ``is_anomaly=true``;
  legitimate oddities (free samples, returns) are negatives. A phantom export counts once, and only
  when its transit window has elapsed by the last evaluated night (export night + transit window <=
  last night); later ones are left out of the evaluation altogether (neither positive nor negative).
- Baselines, computed in the same run on the same rows: a seeded random score, and the robust z of
  the log unit value (USD/kg) within HS6 (median and 1.4826 x MAD over the whole sample).
- Explanations: among the anomalies detected (a flagged row of ``detection.anomalies`` holds the
  declaration, audit picks excluded), the share whose first reason names the manipulated field.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from detectors.config import DetectionConfig
from tradesentry.evaluation.metrics import RankingReport, explanation_share, judge
from tradesentry.settings import Settings, get_settings


@dataclass(frozen=True)
class SampleSpec:
    name: str
    role: str  # "tuned on" | "held back"
    seed: int
    scale: float
    nights: int
    last: date
    proportions: str = "default"
    warmup: int = 14

    @property
    def first(self) -> date:
        return self.last - timedelta(days=self.nights - 1)

    @property
    def eval_first(self) -> date:
        return self.first + timedelta(days=self.warmup)


SAMPLES: dict[str, SampleSpec] = {
    "A": SampleSpec("A", "tuned on", seed=7, scale=0.3, nights=60, last=date(2026, 11, 27)),
    "B": SampleSpec(
        "B", "held back", seed=31, scale=0.25, nights=60, last=date(2026, 11, 27), proportions="heldout"
    ),
}
DECISION_BUDGETS = (0, 100, 1000)
RANDOM_SEED = 20261128


def nights(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def sample_settings(root: Path, spec: SampleSpec) -> Settings:
    return get_settings(data_dir=Path(root) / spec.name)


def build_sample(settings: Settings, spec: SampleSpec, progress: Callable[[str], None] = print) -> None:
    """Generate the sample and run the pipeline over it (scoring is done by :func:`detect_nights`)."""
    from tradesentry.pipeline.stages import backfill
    from tradesentry.samplegen import generate

    progress(f"sample {spec.name}: generating (seed {spec.seed}, scale {spec.scale}, {spec.nights} nights)")
    generate(
        settings.samples, spec.first, spec.nights, seed=spec.seed, scale=spec.scale,
        proportions=None if spec.proportions == "default" else spec.proportions,
    )  # fmt: skip
    progress(f"sample {spec.name}: pipeline {spec.first} .. {spec.last}")
    backfill(settings, spec.first, spec.last, score=False)


def detect_nights(
    settings: Settings,
    scored: Iterable[date],
    config: DetectionConfig | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """run_detection for each night (labels: simulated analysts' decisions, else none at all). Also
    returns what the last night learned from the labels (``feedback``: labels used, skill, weight)."""
    from tradesentry.detection.engine import run_detection
    from tradesentry.warehouse import open_settings_warehouse

    cfg = config or DetectionConfig.from_settings(settings)
    t0 = time.perf_counter()
    n = 0
    learned: dict[str, Any] = {}
    with open_settings_warehouse(settings) as con:
        for night in scored:
            result = run_detection(
                con, night, settings, config=cfg, labels=labels if labels is not None else {}
            )
            learned = dict(result.feedback)
            n += 1
    wall = time.perf_counter() - t0
    return {"nights": n, "seconds": wall, "per_night": wall / max(n, 1), "feedback": learned}


# ------------------------------------------------------------------------------------------ truth


def load_truth(path: Path) -> pd.DataFrame:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    df = pd.DataFrame(rows, columns=[
        "reporter_country", "declaration_id", "item_no", "night", "kind", "manipulated_field", "is_anomaly",
    ])  # fmt: skip
    df["key"] = df["reporter_country"] + "|" + df["declaration_id"] + "|" + df["item_no"].astype(str)
    df["is_anomaly"] = df["is_anomaly"].str.lower() == "true"
    df["night"] = pd.to_datetime(df["night"]).dt.date
    return df


@dataclass
class Pool:
    """The evaluated declarations: one row per key with score, label, kind, manipulated field."""

    df: pd.DataFrame
    first: date
    last: date
    excluded_phantoms: int
    truth_missing: int  # ground-truth anomalies of the evaluated nights not in fct_declarations


def collect(
    con: duckdb.DuckDBPyConnection, truth: pd.DataFrame, first: date, last: date, transit_days: int
) -> Pool:
    decl = con.execute(
        """select d.declaration_key as key, d.night, lower(d.flow) as flow, d.hs6,
                  coalesce(s.score, 0.0) as score
           from marts.fct_declarations d
           left join (select declaration_key, max(score) as score from detection.scores
                      where night between ? and ? group by 1) s using (declaration_key)
           where d.night between ? and ?""",
        [first, last, first, last],
    ).df()
    pos = truth[truth["is_anomaly"]].drop_duplicates("key").set_index("key")
    decl["label"] = decl["key"].isin(pos.index)
    decl["kind"] = decl["key"].map(pos["kind"]).fillna("")
    decl["field"] = decl["key"].map(pos["manipulated_field"]).fillna("")
    night = pd.to_datetime(decl["night"]).dt.date
    late = (decl["kind"] == "phantom_export") & night.map(lambda d: d + timedelta(days=transit_days) > last)
    in_nights = pos[(pos["night"] >= first) & (pos["night"] <= last)]
    missing = int((~in_nights.index.isin(decl["key"])).sum())
    df = decl[~late].reset_index(drop=True)
    return Pool(df=df, first=first, last=last, excluded_phantoms=int(late.sum()), truth_missing=missing)


def random_scores(pool: Pool, seed: int = RANDOM_SEED) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # one draw per key in key order, so the baseline does not depend on the pool's row order
    order = np.argsort(pool.df["key"].to_numpy(dtype=str), kind="stable")
    draws = rng.random(len(order))
    out = np.empty(len(order))
    out[order] = draws
    return out


def robust_z_scores(con: duckdb.DuckDBPyConnection, pool: Pool) -> np.ndarray:
    z = con.execute(
        """with d as (
               select declaration_key as key, hs6, ln(customs_value_usd / net_mass_kg) as x
               from marts.fct_declarations where customs_value_usd > 0 and net_mass_kg > 0),
           s as (select hs6, median(x) as med, mad(x) as mad from d group by hs6)
           select key, abs(x - med) / greatest(1.4826 * mad, 1e-9) as z from d join s using (hs6)"""
    ).df()
    return pool.df["key"].map(z.set_index("key")["z"]).fillna(0.0).to_numpy(dtype="float64")


def first_reasons(
    con: duckdb.DuckDBPyConnection, pool: Pool
) -> tuple[int, int, float, dict[str, tuple[int, int]]]:
    """Explanation share over detected anomalies (flagged rows holding a positive key)."""
    an = con.execute(
        """select unnest(declaration_keys) as key, primary_key, score, reasons[1] as first_reason
           from detection.anomalies where not is_audit_pick and night between ? and ?""",
        [pool.first, pool.last],
    ).df()
    pos = pool.df[pool.df["label"]].set_index("key")
    an = an[an["key"].isin(pos.index)]
    # the row where the declaration is the subject first, then the highest score
    an = an.assign(subject=an["key"] == an["primary_key"]).sort_values(
        ["key", "subject", "score"], ascending=[True, False, False]
    )
    best = an.drop_duplicates("key")
    pairs = [(r, str(pos.at[k, "field"])) for k, r in zip(best["key"], best["first_reason"], strict=True)]
    ok, n, share = explanation_share(pairs)
    by_kind: dict[str, tuple[int, int]] = {}
    for k, r in zip(best["key"], best["first_reason"], strict=True):
        kind = str(pos.at[k, "kind"])
        a, b = by_kind.get(kind, (0, 0))
        by_kind[kind] = (a + int(explanation_share([(r, str(pos.at[k, "field"]))])[0]), b + 1)
    return ok, n, share, dict(sorted(by_kind.items()))


# --------------------------------------------------------------------------------------- feedback


def simulate_decisions(
    con: duckdb.DuckDBPyConnection,
    truth: pd.DataFrame,
    first: date,
    last: date,
    budget: int,
    audit_share: float,
    seed: int = RANDOM_SEED,
) -> dict[str, str]:
    """``budget`` analysts' decisions on the anomaly tables of nights [first, last]: (1 - audit_share)
    from the top of each night's queue (rank 1 of every night, then rank 2, ...), the rest among the
    random audit picks; outcome from the ground truth (confirmed when a declaration involved is an
    injected anomaly, else dismissed)."""
    if budget <= 0:
        return {}
    an = con.execute(
        """select anomaly_id, night, rank, is_audit_pick, declaration_keys from detection.anomalies
           where night between ? and ? order by night, rank""",
        [first, last],
    ).df()
    positives = set(truth.loc[truth["is_anomaly"], "key"])
    n_audit = round(budget * audit_share)
    queue = an[~an["is_audit_pick"]].copy()
    queue["r"] = queue.groupby("night").cumcount()
    queue = queue.sort_values(["r", "night"])
    picked = list(queue["anomaly_id"][: budget - n_audit])
    audit = an[an["is_audit_pick"]].sort_values("anomaly_id")
    rng = np.random.default_rng(seed)
    take = rng.permutation(len(audit))[: budget - len(picked)]
    picked += list(audit["anomaly_id"].to_numpy()[np.sort(take)])
    keys = dict(zip(an["anomaly_id"], an["declaration_keys"], strict=True))
    return {a: ("confirmed" if any(k in positives for k in keys[a]) else "dismissed") for a in picked}


# ----------------------------------------------------------------------------------------- result


@dataclass
class SampleResult:
    spec: SampleSpec
    rows: int
    positives: int
    by_kind_total: dict[str, int]
    excluded_phantoms: int
    truth_missing: int
    rankings: list[RankingReport]
    explanations: tuple[int, int, float]
    explanations_by_kind: dict[str, tuple[int, int]]
    detect_seconds: dict[str, float]
    feedback: list[dict[str, Any]] = field(default_factory=list)
    declarations_per_night: float = 0.0


def evaluate_sample(
    settings: Settings,
    spec: SampleSpec,
    config: DetectionConfig | None = None,
    budgets: Iterable[int] = DECISION_BUDGETS,
    progress: Callable[[str], None] = print,
) -> SampleResult:
    from tradesentry.warehouse import open_settings_warehouse

    cfg = config or DetectionConfig.from_settings(settings)
    truth = load_truth(settings.samples / "ground_truth.csv")
    progress(f"sample {spec.name}: detecting {spec.first} .. {spec.last}")
    timing = detect_nights(settings, nights(spec.first, spec.last), cfg)
    with open_settings_warehouse(settings) as con:
        pool = collect(con, truth, spec.eval_first, spec.last, cfg.transit_window_days)
        df = pool.df
        rankings = [
            judge("Tradesentry", df["key"], df["score"], df["label"], df["kind"]),
            judge("random", df["key"], random_scores(pool), df["label"], df["kind"]),
            judge(
                "robust z of log USD/kg within HS6",
                df["key"],
                robust_z_scores(con, pool),
                df["label"],
                df["kind"],
            ),
        ]
        ok, n, share, by_kind = first_reasons(con, pool)
        per_night = con.execute(
            "select count(*) / count(distinct night) from marts.fct_declarations where night between ? and ?",
            [spec.eval_first, spec.last],
        ).fetchone()
    result = SampleResult(
        spec=spec,
        rows=len(df),
        positives=int(df["label"].sum()),
        by_kind_total=df[df["label"]].groupby("kind").size().to_dict(),
        excluded_phantoms=pool.excluded_phantoms,
        truth_missing=pool.truth_missing,
        rankings=rankings,
        explanations=(ok, n, share),
        explanations_by_kind=by_kind,
        detect_seconds=timing,
        declarations_per_night=float(per_night[0]) if per_night else 0.0,
    )
    budgets = [b for b in budgets if b > 0]
    if budgets:
        result.feedback = feedback_runs(settings, spec, cfg, truth, budgets, progress)
    return result


def feedback_runs(
    settings: Settings,
    spec: SampleSpec,
    cfg: DetectionConfig,
    truth: pd.DataFrame,
    budgets: list[int],
    progress: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Decisions drawn from the nights before the last third of the evaluated nights; the last third
    rescored with them and judged against the same nights without decisions."""
    from tradesentry.warehouse import open_settings_warehouse

    ev = nights(spec.eval_first, spec.last)
    split = ev[len(ev) - len(ev) // 3]
    measured = nights(split, spec.last)
    out: list[dict[str, Any]] = []
    with open_settings_warehouse(settings) as con:
        base_pool = collect(con, truth, split, spec.last, cfg.transit_window_days)
        drawn = {
            b: simulate_decisions(
                con, truth, spec.eval_first, split - timedelta(days=1), b, settings.audit_share
            )
            for b in budgets
        }
    d = base_pool.df
    out.append(
        _feedback_row(0, {}, judge("0", d["key"], d["score"], d["label"], d["kind"]), split, spec.last)
    )
    for b in budgets:
        labels = drawn[b]
        progress(
            f"sample {spec.name}: rescoring {split} .. {spec.last} with {len(labels)} simulated decisions"
        )
        learned = detect_nights(settings, measured, cfg, labels=labels)["feedback"]
        with open_settings_warehouse(settings) as con:
            p = collect(con, truth, split, spec.last, cfg.transit_window_days).df
        report = judge(str(b), p["key"], p["score"], p["label"], p["kind"])
        out.append(_feedback_row(b, labels, report, split, spec.last, learned))
    # leave the warehouse as the nightly run would have it (no simulated decisions)
    detect_nights(settings, measured, cfg)
    return out


def _feedback_row(
    budget: int,
    labels: dict[str, str],
    rep: RankingReport,
    first: date,
    last: date,
    learned: dict[str, Any] | None = None,
) -> dict[str, Any]:
    confirmed = sum(1 for v in labels.values() if v == "confirmed")
    return {
        "learned": dict(learned or {}),
        "budget": budget,
        "decisions": len(labels),
        "confirmed": confirmed,
        "dismissed": len(labels) - confirmed,
        "first": first.isoformat(),
        "last": last.isoformat(),
        "report": rep,
    }


def config_summary(cfg: DetectionConfig) -> dict[str, Any]:
    out = {}
    for k, v in cfg.__dict__.items():
        out[k] = list(v) if isinstance(v, tuple) else v
    return json.loads(json.dumps(out, default=str))


def with_overrides(cfg: DetectionConfig, **kw: Any) -> DetectionConfig:
    return replace(cfg, **kw)


def fmt(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"
