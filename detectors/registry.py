"""The detectors by name, and the set a configuration asks for."""

from __future__ import annotations

from detectors.base import Detector
from detectors.config import DetectionConfig
from detectors.mirror import HsMismatch, MirrorMass, MirrorValue, OrphanExport
from detectors.models import ECODTail, IForestPeer
from detectors.peer_price import MisclassLot, PeerPriceRule
from detectors.weight import WeightRule

REGISTRY: dict[str, type] = {
    cls.name: cls
    for cls in (
        PeerPriceRule,
        MisclassLot,
        IForestPeer,
        ECODTail,
        WeightRule,
        MirrorValue,
        MirrorMass,
        HsMismatch,
        OrphanExport,
    )
}


def build_detectors(config: DetectionConfig) -> list[Detector]:
    """The detectors named in ``config.detectors``, in that order."""
    unknown = [n for n in config.detectors if n not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown detectors {unknown}; known: {sorted(REGISTRY)}")
    return [REGISTRY[n](config) for n in config.detectors]
