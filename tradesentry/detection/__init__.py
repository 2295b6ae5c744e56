"""Detection: features in DuckDB SQL, detectors (``detectors/``), the ranked anomaly table, export-scores."""

from __future__ import annotations

from detectors.config import DetectionConfig
from tradesentry.detection.engine import (
    DetectionResult,
    NightScores,
    anomaly_id,
    run_detection,
    score_night,
)
from tradesentry.detection.export import export_scores
from tradesentry.detection.features import FeatureBundle, build_features

__all__ = [
    "DetectionConfig",
    "DetectionResult",
    "FeatureBundle",
    "NightScores",
    "anomaly_id",
    "build_features",
    "export_scores",
    "run_detection",
    "score_night",
]
