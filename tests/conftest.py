"""Test-session environment: every test writes under a temporary folder, never the repo's data/.

Airflow reads its configuration at import, so the environment is set here, before any test module
imports it. Retry delays are zero so `dag.test()` never waits.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_SESSION_TMP = Path(tempfile.mkdtemp(prefix="tradesentry-tests-"))

os.environ.setdefault("TRADESENTRY_DATA_DIR", str(_SESSION_TMP / "data"))
os.environ["TRADESENTRY_RETRY_DELAY_SECONDS"] = "0"
os.environ["TRADESENTRY_RETRY_MAX_DELAY_SECONDS"] = "0"
os.environ["AIRFLOW_HOME"] = str(_SESSION_TMP / "airflow")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_SESSION_TMP / 'airflow' / 'airflow.db'}"
os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
(_SESSION_TMP / "airflow").mkdir(parents=True, exist_ok=True)


def session_tmp() -> Path:
    return _SESSION_TMP
