"""``tradesentry evaluate``: the pipeline on labelled samples, the figures, ``benchmarks/evaluation.md``."""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from tradesentry.settings import REPO_ROOT, Settings


def cmd_evaluate(args: argparse.Namespace, settings: Settings) -> int:
    from detectors import build_detectors
    from detectors.config import DetectionConfig
    from tradesentry.detection.engine import detector_version
    from tradesentry.evaluation.report import console, markdown
    from tradesentry.evaluation.run import (
        SAMPLES,
        build_sample,
        config_summary,
        evaluate_sample,
        sample_settings,
    )

    def progress(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)

    root = Path(args.root) if args.root else settings.data_dir / "evaluation"
    names = [s.strip().upper() for s in args.samples.split(",") if s.strip()]
    results = []
    cfg = None
    for name in names:
        spec = SAMPLES[name]
        if args.nights:
            spec = replace(spec, nights=args.nights)
        if args.scale:
            spec = replace(spec, scale=args.scale)
        s = sample_settings(root, spec)
        if not args.reuse or not s.warehouse.exists():
            build_sample(s, spec, progress)
        cfg = DetectionConfig.from_settings(s)
        budgets = () if args.no_feedback else tuple(int(b) for b in args.decisions.split(",") if b)
        res = evaluate_sample(s, spec, cfg, budgets=(0, *budgets), progress=progress)
        print(console(res), flush=True)
        results.append(res)
    if cfg is not None and args.out != "-":
        meta: dict[str, Any] = {
            "when": time.strftime("%Y-%m-%d"),
            "detector_version": detector_version(build_detectors(cfg), cfg),
            "config": config_summary(cfg),
        }
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(markdown(results, meta), encoding="utf-8")
        print(f"wrote {out}")
    return 0


def register(subparsers: Any) -> argparse.ArgumentParser:
    s = subparsers.add_parser(
        "evaluate", help="run the pipeline on labelled samples and judge the anomaly ranking"
    )
    s.add_argument("--samples", default="A,B", help="which samples: A (tuned on), B (held back); default A,B")
    s.add_argument(
        "--reuse", action="store_true", help="reuse a sample's warehouse if there is one (detect only)"
    )
    s.add_argument("--root", help="folder for the samples' data (default: <data_dir>/evaluation)")
    s.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "evaluation.md"), help="'-': print only")
    s.add_argument("--decisions", default="100,1000", help="simulated analysts' decisions to compare")
    s.add_argument("--no-feedback", action="store_true", help="skip the learning-from-analysts runs")
    s.add_argument("--nights", type=int, default=None, help="override the samples' number of nights")
    s.add_argument("--scale", type=float, default=None, help="override the samples' scale")
    s.set_defaults(func=cmd_evaluate)
    return s
