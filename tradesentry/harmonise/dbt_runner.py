"""Run dbt for the pipeline: one function, settings in, a clear error out.

By default dbt runs in-process through ``dbtRunner``. dbt-duckdb 1.11 keeps its DuckDB instance in
a class-level cache (``DuckDBConnectionManager._ENV``) after the invocation ends: the same process
can still ``duckdb.connect`` the file read-write (DuckDB shares the instance), but a read-only
connection in the same process and *any* other process (a dbt subprocess, the publisher, a second
Airflow task) get "Could not set lock". ``_release_duckdb`` therefore closes that cached instance
after every invocation, failed or not; ``tests/test_dbt_pipeline.py`` checks that another process
and a read-only connection can open the warehouse right after ``run_dbt``. In-process saves the
start-up of a child process (a warm second invocation took 0.6 s instead of about 4 s).
``in_process=False`` runs ``dbt`` in a child process instead (same arguments, environment, error).

Settings reach dbt as environment variables (``TRADESENTRY_*``, absolute paths) and as ``--vars``
(the harmonisation knobs), so Airflow tasks can run from any working directory. In-process, the
variables are set in ``os.environ`` for the duration of the invocation and restored afterwards;
invocations are serialised by a lock (dbtRunner is not thread-safe).
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tradesentry.settings import Settings

# The nightly invocations (see docs/architecture.md): harmonise, then the quality gates, then marts.
# Unit tests (dbt `unit_tests:`) are for CI (`dbt test --select test_type:unit`), not every night.
HARMONISE_ARGS = ["build", "--exclude", "marts", "--exclude-resource-type", "unit_test"]
MARTS_ARGS = ["build", "--select", "marts", "--exclude-resource-type", "unit_test"]

# TRADESENTRY_DBT_TESTS=critical: the nightly builds run the models and only the data tests tagged
# `critical` (row conservation per feed and night, unique row and declaration keys): every other data
# test (about 140 not_null / accepted_values / relationships scans of whole tables, a third of a
# build's time) runs in CI and in `dbt test` (`tradesentry`'s DBT_TEST_ARGS) rather than every night;
# they check the models' SQL, which does not change from one night to the next, while the quality
# gates check the night's data. Default `all`: every data test in every build, as before.
CRITICAL_HARMONISE_ARGS = [
    "build", "--select", "resource_type:seed", "resource_type:model", "tag:critical",
    "--exclude", "marts", "--exclude-resource-type", "unit_test", "--indirect-selection", "empty",
]  # fmt: skip
CRITICAL_MARTS_ARGS = [
    "build", "--select", "marts,resource_type:model", "marts,tag:critical",
    "--exclude-resource-type", "unit_test", "--indirect-selection", "empty",
]  # fmt: skip
DBT_TEST_ARGS = ["test", "--exclude-resource-type", "unit_test"]


def nightly_tests() -> str:
    """`all` (default) or `critical`, from TRADESENTRY_DBT_TESTS."""
    mode = os.environ.get("TRADESENTRY_DBT_TESTS", "all").strip().lower() or "all"
    if mode not in ("all", "critical"):
        raise ValueError(f"TRADESENTRY_DBT_TESTS={mode!r}: use 'all' or 'critical'")
    return mode


# The `dbt` console script, run with this interpreter (no PATH lookup, no runpy warning).
_DBT_MAIN = "import sys; from dbt.cli.main import cli; sys.argv[0] = 'dbt'; sys.exit(cli())"


class DbtRunError(RuntimeError):
    """dbt failed. ``failures`` lists ``(node, status, message)`` for each failing model/test."""

    def __init__(self, message: str, failures: list[tuple[str, str, str]], result: DbtResult | None = None):
        super().__init__(message)
        self.failures = failures
        self.result = result


@dataclass
class DbtResult:
    args: list[str]
    returncode: int
    seconds: float
    stdout: str
    results: list[dict[str, Any]] = field(default_factory=list)  # run_results.json "results"

    def nodes(self, status: str | None = None) -> list[str]:
        return [r["unique_id"] for r in self.results if status is None or r.get("status") == status]


def dbt_vars(settings: Settings, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The dbt vars that come from the settings."""
    out: dict[str, Any] = {
        "max_rate_age_days": settings.max_rate_age_days,
        "cif_fob_factor": settings.cif_fob_factor,
        "transit_window_days": settings.transit_window_days,
        "match_horizon_days": settings.match_horizon_days,
    }
    out.update(extra or {})
    return out


def dbt_env(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the dbt process: the caller's, the settings, telemetry off, absolute paths."""
    settings = settings.resolve()
    env = dict(os.environ if base is None else base)
    env.update(settings.as_env())
    project = Path(settings.dbt_project_dir)
    env.update(
        {
            "TRADESENTRY_WAREHOUSE_PATH": str(settings.warehouse),
            "DBT_PROFILES_DIR": str(project),
            "DBT_PROJECT_DIR": str(project),
            "DBT_TARGET_PATH": str(settings.data_dir / "dbt" / "target"),
            "DBT_LOG_PATH": str(settings.logs / "dbt"),
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
            "DO_NOT_TRACK": "1",
            "DBT_PARTIAL_PARSE": env.get("DBT_PARTIAL_PARSE", "true"),
            # DuckDB takes a share too; 80% is its own default
            "TRADESENTRY_DUCKDB_MEMORY_LIMIT": settings.duckdb_memory_limit or "80%",
        }
    )
    if settings.warehouse_engine == "postgres":
        # profiles.yml's postgres target reads the connection from TRADESENTRY_PG_*.
        from tradesentry.warehouse_pg import pg_params

        assert settings.warehouse_url is not None
        env.update(pg_params(settings.warehouse_url).as_env())
    return env


def _failures(results: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    bad = []
    for r in results:
        if r.get("status") in ("error", "fail", "runtime error"):
            msg = (r.get("message") or "").strip()
            if r.get("failures"):
                msg = f"{r['failures']} failing rows. {msg}".strip()
            bad.append((r.get("unique_id", "?"), r.get("status", "?"), msg))
    return bad


_LOCK = threading.Lock()


@contextmanager
def _environ(env: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _release_duckdb() -> None:
    """Close dbt-duckdb's cached DuckDB instance so the warehouse file is unlocked."""
    try:
        from dbt.adapters.duckdb.connections import DuckDBConnectionManager
    except ImportError:  # pragma: no cover - dbt-duckdb is a dependency
        return
    with DuckDBConnectionManager._LOCK:
        env = getattr(DuckDBConnectionManager, "_ENV", None)
        if env is not None:
            env.close()
            DuckDBConnectionManager._ENV = None
    gc.collect()


def _node_results(result: Any) -> list[dict[str, Any]]:
    """The run_results.json "results" fields we read, from dbtRunner's in-memory result."""
    out: list[dict[str, Any]] = []
    for r in getattr(getattr(result, "result", None), "results", None) or []:
        node = getattr(r, "node", None)
        status = getattr(r, "status", None)
        out.append(
            {
                "unique_id": getattr(node, "unique_id", "?"),
                "status": str(getattr(status, "value", status)),
                "message": getattr(r, "message", None),
                "failures": getattr(r, "failures", None),
                "execution_time": getattr(r, "execution_time", None),
            }
        )
    return out


def _invoke_in_process(cmd_args: list[str], env: dict[str, str]) -> tuple[int, str, list[dict[str, Any]]]:
    from dbt.cli.main import dbtRunner

    lines: list[str] = []

    def collect(event: Any) -> None:
        try:
            msg = event.info.msg
            level = event.info.level
        except AttributeError:
            return
        if msg and level in ("info", "warn", "error"):
            lines.append(str(msg))

    with _LOCK, _environ(env):
        try:
            result = dbtRunner(callbacks=[collect]).invoke(cmd_args)
        finally:
            _release_duckdb()
    if result.exception is not None:
        lines.append(f"{type(result.exception).__name__}: {result.exception}")
    return (0 if result.success else 1), "\n".join(lines), _node_results(result)


def _invoke_subprocess(
    cmd_args: list[str], env: dict[str, str], cwd: Path, timeout: float | None
) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-c", _DBT_MAIN, *cmd_args],
        cwd=str(cwd),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        check=False,
    )
    return proc.returncode, proc.stdout


def run_dbt(
    args: list[str],
    settings: Settings,
    *,
    vars: dict[str, Any] | None = None,
    in_process: bool = True,
    write_json: bool = True,
    timeout: float | None = 3600,
) -> DbtResult:
    """Run ``dbt <args>`` against the settings' warehouse and dbt project; raise DbtRunError on failure.

    The error message names every failing model/test (``model.tradesentry.int_...``) with dbt's
    message; ``error.failures`` has them as tuples. ``--vars`` from the settings (plus ``vars``) are
    added unless ``args`` already has ``--vars``; ``--project-dir``, ``--profiles-dir``,
    ``--target-path`` and ``--log-path`` are always absolute. ``timeout`` applies to the subprocess
    mode only. Returns the node results (``run_results.json``'s). ``write_json=False`` (in-process
    only) passes ``--no-write-json``: dbt then skips writing manifest.json and run_results.json (about
    1 s an invocation at this project's size); the results come from dbt's in-memory result.
    """
    settings = settings.resolve()
    env = dbt_env(settings)
    # as_of_night changes every night: passed in --vars it would change dbt's vars and force a full
    # re-parse of the project on every invocation (about 3 s idle, over 10 s on a busy machine). In
    # the environment, read by ts_as_of_night_sql only when models execute, it re-parses nothing.
    vars = dict(vars or {})
    env["TRADESENTRY_AS_OF_NIGHT"] = str(vars.pop("as_of_night", None) or "")
    project = Path(settings.dbt_project_dir)
    target_path = Path(env["DBT_TARGET_PATH"])
    log_path = Path(env["DBT_LOG_PATH"])
    target_path.mkdir(parents=True, exist_ok=True)
    log_path.mkdir(parents=True, exist_ok=True)
    settings.warehouse.parent.mkdir(parents=True, exist_ok=True)
    cmd_args = list(args)
    command = cmd_args[0] if cmd_args else ""
    if command not in ("deps", "clean", "debug", "init", "--version", "--help", ""):
        if "--vars" not in cmd_args:
            cmd_args += ["--vars", json.dumps(dbt_vars(settings, vars), sort_keys=True)]
        if in_process and not write_json and "--no-write-json" not in cmd_args:
            cmd_args.append("--no-write-json")
        for flag, value in (
            ("--project-dir", project),
            ("--profiles-dir", project),
            ("--target-path", target_path),
        ):
            if flag not in cmd_args:
                cmd_args += [flag, str(value)]
    run_results = target_path / "run_results.json"
    if run_results.exists():
        run_results.unlink()
    started = time.monotonic()
    results: list[dict[str, Any]] = []
    if in_process:
        returncode, output, results = _invoke_in_process(cmd_args, env)
    else:
        returncode, output = _invoke_subprocess(cmd_args, env, project, timeout)
    seconds = time.monotonic() - started
    if not results and run_results.exists():
        try:
            results = json.loads(run_results.read_text(encoding="utf-8")).get("results", [])
        except (OSError, ValueError):
            results = []
    result = DbtResult(cmd_args, returncode, seconds, output, results)
    if returncode != 0:
        failures = _failures(results)
        if failures:
            lines = [f"  {node} [{status}]: {msg}" for node, status, msg in failures]
            message = f"dbt {' '.join(args)} failed on {len(failures)} node(s):\n" + "\n".join(lines)
        else:
            # Failed before running nodes (compilation, connection, lock): dbt's own last lines say why.
            tail = "\n".join(output.strip().splitlines()[-25:])
            message = f"dbt {' '.join(args)} failed (exit {returncode}) before running models:\n{tail}"
        raise DbtRunError(message, failures, result)
    return result


def harmonise(settings: Settings, **kwargs: Any) -> DbtResult:
    """Nightly step 1: seeds, staging, intermediate and their tests (``dbt build --exclude marts``)."""
    kwargs.setdefault("write_json", False)
    return run_dbt(CRITICAL_HARMONISE_ARGS if nightly_tests() == "critical" else HARMONISE_ARGS, settings, **kwargs)


def build_marts(settings: Settings, **kwargs: Any) -> DbtResult:
    """Nightly step 2 (after the harmonised-stage quality gates): ``dbt build --select marts``."""
    kwargs.setdefault("write_json", False)
    return run_dbt(CRITICAL_MARTS_ARGS if nightly_tests() == "critical" else MARTS_ARGS, settings, **kwargs)
