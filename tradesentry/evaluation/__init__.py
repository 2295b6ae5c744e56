"""Evaluation of the anomaly ranking on labelled synthetic samples (``tradesentry evaluate``)."""

from __future__ import annotations

from tradesentry.evaluation.metrics import (
    RankingReport,
    average_precision,
    explanation_share,
    judge,
    precision_at,
    rank_order,
    recall_at,
    recall_by_kind,
)

__all__ = [
    "RankingReport",
    "average_precision",
    "explanation_share",
    "judge",
    "precision_at",
    "rank_order",
    "recall_at",
    "recall_by_kind",
]
