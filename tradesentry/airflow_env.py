"""The environment Airflow runs in for this installation (embedded default: SQLite metadata DB)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tradesentry.settings import REPO_ROOT, Settings


def airflow_env(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    assert settings.airflow_home is not None
    home = settings.airflow_home
    env.update(settings.as_env())
    env.setdefault("AIRFLOW_HOME", str(home))
    env.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO_ROOT / "dags"))
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    env.setdefault("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{home / 'airflow.db'}")
    env.setdefault("AIRFLOW__LOGGING__BASE_LOG_FOLDER", str(settings.logs / "airflow"))
    env.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")
    env.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
    env.setdefault("DO_NOT_TRACK", "1")
    env.setdefault("GX_ANALYTICS_ENABLED", "false")
    return env


def airflow_cli(settings: Settings, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the `airflow` command of this interpreter's environment."""
    assert settings.airflow_home is not None
    settings.airflow_home.mkdir(parents=True, exist_ok=True)
    exe = Path(sys.executable).with_name("airflow")
    cmd = [str(exe), *args] if exe.exists() else [sys.executable, "-m", "airflow", *args]
    return subprocess.run(cmd, env=airflow_env(settings), check=check, text=True)


def ensure_airflow_db(settings: Settings) -> None:
    assert settings.airflow_home is not None
    if not (settings.airflow_home / "airflow.db").exists():
        airflow_cli(settings, "db", "migrate")
