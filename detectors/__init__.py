"""Detector classes: fit on the history window, score a night, explain a row (see detectors.base).

Importing the package loads nothing heavy: ``detectors.config`` (the detection settings, whose
defaults ``tradesentry.settings`` reads in every task and CLI command) must not pull numpy, pandas
and PyOD into processes that never score. The names below load on first use."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from detectors.base import Detector, FeatureFrame, Reason, TailModel, significance
    from detectors.config import DEFAULT_DETECTORS, DetectionConfig
    from detectors.mirror import HsMismatch, MirrorMass, MirrorValue, OrphanExport
    from detectors.models import ECODTail, IForestPeer
    from detectors.peer_price import MisclassLot, PeerPriceRule
    from detectors.registry import REGISTRY, build_detectors
    from detectors.weight import WeightRule

_MODULE_OF = {
    "Detector": "base", "FeatureFrame": "base", "Reason": "base", "TailModel": "base", "significance": "base",
    "DEFAULT_DETECTORS": "config", "DetectionConfig": "config",
    "HsMismatch": "mirror", "MirrorMass": "mirror", "MirrorValue": "mirror", "OrphanExport": "mirror",
    "ECODTail": "models", "IForestPeer": "models",
    "MisclassLot": "peer_price", "PeerPriceRule": "peer_price",
    "REGISTRY": "registry", "build_detectors": "registry",
    "WeightRule": "weight",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'detectors' has no attribute {name!r}")
    return getattr(importlib.import_module(f"detectors.{module}"), name)


__all__ = [
    "DEFAULT_DETECTORS",
    "REGISTRY",
    "DetectionConfig",
    "Detector",
    "ECODTail",
    "FeatureFrame",
    "HsMismatch",
    "IForestPeer",
    "MirrorMass",
    "MirrorValue",
    "MisclassLot",
    "OrphanExport",
    "PeerPriceRule",
    "Reason",
    "TailModel",
    "WeightRule",
    "build_detectors",
    "significance",
]
