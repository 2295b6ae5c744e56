"""Learning from analysts: confirmed / dismissed decisions re-rank the next nights.

Every anomaly row written for night N (flagged rows and random audit picks) keeps its feature vector
in ``detection.anomaly_features`` (anomaly id, night, primary key, features as JSON): the detectors'
significances, the peer z-scores, route and trader features, the mirror ratios. When night N is
scored, the decisions of the review store (``Store.reviewed_outcomes()``: anomaly id -> confirmed /
dismissed) on anomalies of the history window [N - W, N - 1] label those vectors, and a seeded
gradient-boosted classifier learns P(confirmed | features). Every row of night N then gets

    significance' = significance + weight * clip(logit(P) - logit(share confirmed), -6, 6),
    weight = min(1, labels / ramp) x skill

so a few decisions nudge the unsupervised ranking and many decisions move it; the unsupervised
evidence never disappears. ``skill`` is the classifier's out-of-fold gain over the unsupervised
significance in ranking the labelled rows (0: no better, the ranking is left alone; 1: perfect).
Nothing is learned until both outcomes have at least ``min_each`` labels.
Random audit picks stay in every night's table (``audit_share`` of the reviews in the evaluation's
simulation, and at least ``audit_picks_per_night`` rows), so the labels are not only what the
ranking already flags.

Reruns: the window is fixed by N, the model is seeded, and the training rows are sorted by anomaly
id, so rerunning N with the same decisions gives the same scores. The decisions used (count and a
hash of the ids and outcomes) are reported with the night's detection result.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from detectors.base import Detector, FeatureFrame, significance
from detectors.config import DetectionConfig

log = logging.getLogger("tradesentry.detection.feedback")

TABLE = "detection.anomaly_features"
DDL = f"""
create table if not exists {TABLE} (
    anomaly_id varchar not null,
    night date not null,
    primary_key varchar not null,
    is_audit_pick boolean not null,
    features json not null
)"""
FRAME_FEATURES = (
    "z_uv", "z_vq", "z_mq", "rarity_partner", "rarity_origin", "volume_jump", "price_shift", "trader_new",
    "pair_lr_value", "pair_lr_mass", "pair_hs_mismatch", "is_orphan",
)  # fmt: skip


def feature_names(dets: list[Detector]) -> list[str]:
    return [f"L_{d.name}" for d in dets] + ["L_combined", *FRAME_FEATURES]


def feature_matrix(
    frame: FeatureFrame, pvals: dict[str, np.ndarray], sig: np.ndarray, dets: list[Detector]
) -> np.ndarray:
    cols = [significance(pvals[d.name]) for d in dets] + [sig]
    cols += [frame.col(c, 0.0) for c in FRAME_FEATURES]
    return np.column_stack(cols) if cols else np.zeros((len(frame), 0))


def insert_rows(
    con: duckdb.DuckDBPyConnection, table: str, columns: list[str], rows: list[list[Any]], chunk: int = 100
) -> None:
    """``executemany`` insert in a few statements: DuckDB runs ``executemany`` one row at a time (about
    2 ms a row). List parameters are cast to their column's type one by one (an empty list would
    not unify with the others in VALUES); the insert casts the others as the one-row insert would."""
    if not rows:
        return
    schema, name = table.split(".") if "." in table else ("main", table)
    types = dict(
        con.execute(
            "select column_name, data_type from information_schema.columns "
            "where table_schema = ? and table_name = ?",
            [schema, name],
        ).fetchall()
    )
    one = "(" + ", ".join(f"cast(? as {types[c]})" if types[c].endswith("]") else "?" for c in columns) + ")"
    for i in range(0, len(rows), chunk):
        part = rows[i : i + chunk]
        con.execute(
            f"insert into {table} ({', '.join(columns)}) values " + ", ".join([one] * len(part)),
            [v for r in part for v in r],
        )


def ensure_table(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("create schema if not exists detection")
    con.execute(DDL)


def store_rows(
    con: duckdb.DuckDBPyConnection,
    night: date,
    anomalies: list[dict[str, Any]],
    X: np.ndarray,
    names: list[str],
) -> None:
    """Replace night N's feature rows (called inside the detection write)."""
    con.execute(f"delete from {TABLE} where night = ?", [night])
    rows = []
    for a in anomalies:
        pos = a.get("_pos")
        if pos is None:
            continue
        vec = {n: round(float(v), 6) for n, v in zip(names, X[int(pos)], strict=True)}
        rows.append([a["anomaly_id"], night, a["primary_key"], bool(a["is_audit_pick"]), json.dumps(vec)])
    if rows:
        insert_rows(con, TABLE, ["anomaly_id", "night", "primary_key", "is_audit_pick", "features"], rows)


def read_outcomes(settings: Any) -> dict[str, str]:
    """Confirmed / dismissed outcomes from the review store; none when there is no store yet."""
    url = getattr(settings, "review_db_url", None) if settings is not None else None
    if not url:
        return {}
    if url.startswith("sqlite") and "///" in url:
        from pathlib import Path

        path = url.split("///", 1)[1]
        if path not in ("", ":memory:") and not Path(path).exists():
            return {}
    try:
        from tradesentry.review.store import Store

        store = Store(url)
        try:
            return store.reviewed_outcomes()
        finally:
            store.dispose()
    except Exception as exc:  # a missing table or an unreachable store: score without feedback
        log.warning("review store not readable (%s): scoring without analysts' decisions", exc)
        return {}


@dataclass
class FeedbackModel:
    model: Any
    names: list[str]
    labels: int
    confirmed: int
    weight: float
    digest: str
    prior: float = 0.0  # logit of the labels' confirmed share: the learned term is relative to it
    skill: float = 1.0  # out-of-fold skill over the unsupervised significance (_cv_skill)

    def adjust(self, X: np.ndarray, sig: np.ndarray) -> np.ndarray:
        if len(X) == 0 or self.weight <= 0:
            return sig
        q = self.model.predict_proba(X)[:, 1]
        q = np.clip(q, 1e-6, 1 - 1e-6)
        logit = np.clip(np.log(q / (1 - q)) - self.prior, -6.0, 6.0)
        return np.maximum(sig + self.weight * logit, 0.0)

    def describe(self) -> dict[str, Any]:
        return {
            "labels": self.labels,
            "confirmed": self.confirmed,
            "weight": round(self.weight, 3),
            "skill": round(self.skill, 3),
            "digest": self.digest,
        }


def fit_feedback(
    con: duckdb.DuckDBPyConnection,
    night: date,
    outcomes: dict[str, str],
    names: list[str],
    config: DetectionConfig,
) -> FeedbackModel | None:
    """A classifier on the labelled anomaly rows of the history window, or None (too few labels)."""
    if not outcomes:
        return None
    W = config.history_window_nights
    ensure_table(con)
    lab = pd.DataFrame(
        sorted((a, o) for a, o in outcomes.items() if o in ("confirmed", "dismissed")),
        columns=["anomaly_id", "outcome"],
    )
    if lab.empty:
        return None
    con.register("_ts_fb_labels", lab)
    try:
        rows = con.execute(
            f"""select f.anomaly_id, l.outcome, any_value(f.features) as features
                from {TABLE} f join _ts_fb_labels l using (anomaly_id)
                where f.night between ? and ?
                group by all order by f.anomaly_id""",
            [night - timedelta(days=W), night - timedelta(days=1)],
        ).fetchall()
    finally:
        con.unregister("_ts_fb_labels")
    y = np.array([o == "confirmed" for _, o, _ in rows], dtype=int)
    n_pos, n = int(y.sum()), len(y)
    if min(n_pos, n - n_pos) < config.feedback_min_each:
        return None
    X = np.array([[float(json.loads(f).get(c, 0.0) or 0.0) for c in names] for _, _, f in rows])
    from sklearn.ensemble import HistGradientBoostingClassifier

    model = HistGradientBoostingClassifier(
        max_iter=100,
        learning_rate=0.1,
        max_leaf_nodes=8,
        min_samples_leaf=5,
        l2_regularization=1.0,
        early_stopping=False,
        random_state=config.seed,
    )
    skill = _cv_skill(model, X, y, names, config.seed)
    model.fit(X, y)
    digest = hashlib.sha256("\n".join(f"{a}={o}" for a, o, _ in rows).encode()).hexdigest()[:12]
    weight = min(1.0, n / float(config.feedback_ramp)) * config.feedback_weight * skill
    prior = float(np.log(n_pos / (n - n_pos)))
    return FeedbackModel(model, list(names), n, n_pos, weight, digest, prior, skill)


def _cv_skill(model: Any, X: np.ndarray, y: np.ndarray, names: list[str], seed: int) -> float:
    """How much better the classifier ranks the labelled rows than the unsupervised significance
    does, out of fold (5 seeded stratified folds): (AUC_model - AUC_unsupervised) / (1 -
    AUC_unsupervised), clipped to [0, 1]. The learned term is weighted by it, so a classifier that
    cannot beat the ranking it would adjust (few labels, labels only from the top of the queues)
    shrinks toward the unsupervised rank instead of reshuffling it."""
    from sklearn.base import clone
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    folds = min(5, int(y.sum()), int(len(y) - y.sum()))
    if folds < 2 or "L_combined" not in names:
        return 0.0
    oof = np.zeros(len(y))
    for train, test in StratifiedKFold(folds, shuffle=True, random_state=seed).split(X, y):
        oof[test] = clone(model).fit(X[train], y[train]).predict_proba(X[test])[:, 1]
    auc_model = float(roc_auc_score(y, oof))
    auc_base = float(roc_auc_score(y, X[:, names.index("L_combined")]))
    if auc_base >= 1.0:
        return 0.0
    return float(np.clip((auc_model - auc_base) / (1.0 - auc_base), 0.0, 1.0))
