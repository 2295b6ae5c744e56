"""Model detectors on the peer features (robust z-scores of log value per kg, value per unit and
mass per unit within HS6/flow peers, and optionally route and trader features).

- ``iforest``: PyOD IsolationForest, seeded, fitted on a deterministic sample of the history.
  Trees score each row on its own, so a row's score does not depend on its batch.
- ``ecod_tail``: an ECOD-style scorer that IS batch independent: PyOD's ECOD/COPOD re-fit their
  empirical distributions on training + new data at scoring time (a row's score changes with the
  batch). Here the per-feature tails are fitted on the history only, with an exponential tail past
  the history's top 1% (so rows far out do not all tie at 1/(n+1)); the score is ECOD's
  max(sum of left-tail, sum of right-tail, sum of skewness-chosen-tail) -log probabilities.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from detectors.base import FeatureFrame, Reason, TailModel, finite, peer_label
from detectors.config import DetectionConfig

FEATURE_WORDS = {
    "z_uv": "value per kg",
    "z_vq": "value per unit",
    "z_mq": "mass per unit",
    "rarity_partner": "rarity of this HS6 x partner route",
    "rarity_origin": "rarity of this HS6 x origin",
    "volume_jump": "trader's volume jump",
    "price_shift": "trader's price shift",
    "trader_new": "new trader",
}


def _feature_reason(row: Mapping[str, Any], features: tuple[str, ...], lead: str, name: str) -> list[Reason]:
    parts = []
    for f in features:
        v = row.get(f)
        if finite(v):
            parts.append((abs(float(v)), f, float(v)))
    parts.sort(reverse=True)
    words = []
    for _, f, v in parts[:3]:
        if f.startswith("z_"):
            prefix = {"z_uv": "uv", "z_vq": "vq", "z_mq": "mq"}[f]
            words.append(f"{FEATURE_WORDS[f]} {v:+.1f} robust SDs from {peer_label(row, prefix)}")
        else:
            words.append(f"{FEATURE_WORDS.get(f, f)} {v:.2f}")
    if not words:
        return []
    p = row.get(f"p_{name}")
    tail = f" (tail probability {float(p):.2g} among the history's scores)" if finite(p) else ""
    fld = "mass" if parts and parts[0][1] == "z_mq" else "value"
    return [
        Reason(
            f"{fld.capitalize()}: {lead}{tail}: " + "; ".join(words),
            fld,
            float(row.get(f"L_{name}", 0.0)),
            name,
        )
    ]


class IForestPeer:
    name: ClassVar[str] = "iforest"
    version: ClassVar[str] = "1.1"
    family: ClassVar[str] = "model"
    scope: ClassVar[str] = "night"

    def __init__(self, config: DetectionConfig | None = None) -> None:
        self.config = config or DetectionConfig()
        self.features = tuple(self.config.model_features)
        self.model: Any = None
        self.history_scores_ = np.zeros(0)

    def fit(self, history: FeatureFrame) -> IForestPeer:
        from pyod.models.iforest import IForest

        X = history.matrix(list(self.features))
        if len(X) < 10:
            self.model = None
            self.history_scores_ = np.zeros(len(X))
            return self
        self.model = IForest(
            n_estimators=self.config.iforest_estimators,
            max_samples=min(self.config.iforest_max_samples, len(X)),
            random_state=self.config.seed,
            n_jobs=1,
        )
        self.model.fit(X)
        self.history_scores_ = np.asarray(self.model.decision_scores_, dtype="float64")
        return self

    def score(self, night: FeatureFrame) -> np.ndarray:
        if self.model is None or len(night) == 0:
            return np.zeros(len(night))
        return np.asarray(self.model.decision_function(night.matrix(list(self.features))), dtype="float64")

    def explain(self, row: Mapping[str, Any]) -> list[Reason]:
        return _feature_reason(row, self.features, "isolation forest on peer features", self.name)


class ECODTail:
    name: ClassVar[str] = "ecod_tail"
    version: ClassVar[str] = "1.1"
    family: ClassVar[str] = "model"
    scope: ClassVar[str] = "night"

    def __init__(self, config: DetectionConfig | None = None) -> None:
        self.config = config or DetectionConfig()
        self.features = tuple(self.config.model_features)
        self.right: list[TailModel] = []
        self.left: list[TailModel] = []
        self.skew_left = np.zeros(0, dtype=bool)
        self.history_scores_ = np.zeros(0)

    def fit(self, history: FeatureFrame) -> ECODTail:
        X = history.matrix(list(self.features))
        self.right = [TailModel(X[:, j]) for j in range(X.shape[1])]
        self.left = [TailModel(-X[:, j]) for j in range(X.shape[1])]
        if len(X) > 2:
            mu = X.mean(axis=0)
            sd = X.std(axis=0)
            sd = np.where(sd > 0, sd, 1.0)
            self.skew_left = (((X - mu) / sd) ** 3).mean(axis=0) < 0
        else:
            self.skew_left = np.zeros(X.shape[1], dtype=bool)
        self.history_scores_ = self.score(history)
        return self

    def score(self, night: FeatureFrame) -> np.ndarray:
        X = night.matrix(list(self.features))
        n = len(X)
        if n == 0 or not self.right:
            return np.zeros(n)
        o_left = np.zeros(n)
        o_right = np.zeros(n)
        o_auto = np.zeros(n)
        for j in range(X.shape[1]):
            lj = -np.log(self.left[j].p(-X[:, j]))
            rj = -np.log(self.right[j].p(X[:, j]))
            o_left += lj
            o_right += rj
            o_auto += lj if self.skew_left[j] else rj
        return np.maximum(np.maximum(o_left, o_right), o_auto)

    def explain(self, row: Mapping[str, Any]) -> list[Reason]:
        return _feature_reason(row, self.features, "ECOD-style tail score on peer features", self.name)
