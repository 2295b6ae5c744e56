"""Smoke test of bench/bench_pipeline.py at a tiny size: every stage runs and is printed, the floor is
measured and the results file is written where --out says. No timing assertions: the real figures
come from running the benchmark by hand (benchmarks/pipeline.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_bench_pipeline_tiny(tmp_path: Path) -> None:
    out = tmp_path / "pipeline.md"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "bench_pipeline.py"),
            "--rows",
            "2000",
            "--history",
            "3",
            "--history-rows",
            "2000",
            "--workdir",
            str(tmp_path / "work"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for label in (
        "pull",
        "load raw",
        "raw checks (GX)",
        "dbt harmonise",
        "harmonised checks (GX)",
        "dbt marts",
        "features",
        "detection",
        "publish",
        "total",
        "Pipeline / floor",
    ):
        assert label in proc.stdout, (label, proc.stdout[-3000:])
    text = out.read_text()
    assert "<!-- bench:2000x3:begin -->" in text and "| **total** |" in text
    # A second run of another size keeps the first section.
    assert text.count("bench:2000x3:begin") == 1


def test_bench_pipeline_until_keeps_the_workdir(tmp_path: Path) -> None:
    """--until stops after a stage and leaves the data there, for profiling the next stage by hand."""
    out = tmp_path / "pipeline.md"
    work = tmp_path / "work"
    cmd = [sys.executable, str(REPO / "bench" / "bench_pipeline.py"), "--rows", "500", "--history", "0",
           "--workdir", str(work), "--out", str(out), "--until", "load_raw"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "stopped after load_raw" in proc.stdout and f"TRADESENTRY_DATA_DIR={work / 'data'}" in proc.stdout
    assert "load raw" in proc.stdout and "raw checks (GX)" not in proc.stdout
    assert (work / "data" / "warehouse" / "tradesentry.duckdb").exists()
    assert not out.exists()  # nothing measured end to end, nothing written
    no_workdir = subprocess.run([*cmd[:6], "--until", "load_raw"], capture_output=True, text=True, check=False)
    assert no_workdir.returncode == 2 and "--until needs --workdir" in no_workdir.stderr
