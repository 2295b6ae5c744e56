"""The one place settings come from.

Every setting has a default under the repository's ``data/`` folder (ignored by git) and can be
overridden by an environment variable named ``TRADESENTRY_<FIELD>`` (upper case), e.g.
``TRADESENTRY_DATA_DIR=/srv/tradesentry``. docs/configuration.md lists them all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from detectors.config import DetectionConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
WAREHOUSE_ENGINES = ("duckdb", "postgres")
# The detection knobs a deployment sets here take their defaults from detectors.config, their one
# definition (DetectionConfig.from_settings copies them back by name).
_DETECTION = DetectionConfig()


def _default_data_dir() -> Path:
    return REPO_ROOT / "data"


@dataclass(frozen=True)
class Settings:
    """Paths, windows and thresholds of one Tradesentry installation."""

    data_dir: Path = field(default_factory=_default_data_dir)
    feeds_dir: Path = REPO_ROOT / "feeds"
    dbt_project_dir: Path = REPO_ROOT / "dbt_project"
    expectations_dir: Path = REPO_ROOT / "expectations"
    # Derived from data_dir unless set explicitly (see resolve()).
    warehouse_path: Path | None = None
    # The engine dbt builds the warehouse on: duckdb (warehouse_path) or postgres (tier 3,
    # docs/deployment.md: warehouse_url, e.g. postgresql://user:password@host:5432/tradesentry).
    warehouse_engine: str = "duckdb"
    warehouse_url: str | None = None
    landing_dir: Path | None = None
    # Landing on object storage instead of landing_dir: an ObjectStoragePath URI whose user part is
    # the Airflow connection id, e.g. s3://aws_landing@tradesentry-landing/landing (docs/deployment.md).
    # A file:// URI or a plain path is the same as setting landing_dir.
    landing_uri: str | None = None
    publish_dir: Path | None = None
    reports_dir: Path | None = None
    logs_dir: Path | None = None
    runs_dir: Path | None = None
    airflow_home: Path | None = None
    sample_dir: Path | None = None
    review_db_url: str | None = None
    # Work files of the sharded detection (prepared features, fitted detectors, shard results); must
    # be a folder every worker that runs a detect_shard task sees (docs/deployment.md)
    detect_work_dir: Path | None = None

    # Nightly run behaviour
    retries: int = 2
    retry_delay_seconds: float = 300.0
    retry_max_delay_seconds: float = 3600.0
    http_timeout_seconds: float = 60.0

    # Harmonisation
    # DuckDB's memory cap ("4GB", "4096MB") in the dbt builds and every warehouse connection the
    # stages open (tradesentry.warehouse.open_settings_warehouse); empty: the environment's
    # TRADESENTRY_DUCKDB_MEMORY_LIMIT, else DuckDB's own default, 80% of the machine's memory. Past
    # it DuckDB spills to disk, more slowly.
    duckdb_memory_limit: str = ""
    cif_fob_factor: float = _DETECTION.cif_fob_factor
    max_rate_age_days: int = 7

    # Scoring
    history_window_nights: int = _DETECTION.history_window_nights
    transit_window_days: int = _DETECTION.transit_window_days
    match_horizon_days: int = 90
    min_peer_group: int = _DETECTION.min_peer_group
    low_price_ratio: float = _DETECTION.low_price_ratio
    high_price_multiple: float = _DETECTION.high_price_multiple
    audit_share: float = _DETECTION.audit_share
    audit_picks_per_night: int = _DETECTION.audit_picks_per_night
    max_anomalies_per_night: int = _DETECTION.max_anomalies_per_night
    # pattern-level anomalies (docs/configuration.md)
    trader_patterns: bool = _DETECTION.trader_patterns
    route_patterns: bool = _DETECTION.route_patterns
    pattern_route_min_traders: int = _DETECTION.pattern_route_min_traders
    pattern_window_nights: int = _DETECTION.pattern_window_nights
    pattern_min_declarations: int = _DETECTION.pattern_min_declarations
    pattern_max_median_z: float = _DETECTION.pattern_max_median_z
    pattern_max_per_night: int = _DETECTION.pattern_max_per_night
    seed: int = _DETECTION.seed
    # Detection split by HS section into this many mapped tasks (1: one detect task). Also read when
    # the DAG file is parsed (TRADESENTRY_DETECT_SHARDS), like the retry settings
    detect_shards: int = 1

    # Data quality
    max_failing_share: float = 0.2
    volume_drop_ratio: float = 0.3
    volume_history_nights: int = 14

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
        env = dict(os.environ if environ is None else environ)
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"TRADESENTRY_{f.name.upper()}")
            if raw is None or raw == "":
                continue
            values[f.name] = _coerce(f.type, raw, f.name)
        values.update(overrides)
        return cls(**values).resolve()

    def resolve(self) -> Settings:
        """Fill the paths derived from ``data_dir`` and make every path absolute.

        Absolute paths matter: dbt-duckdb resolves relative paths against the process's working
        directory, which is not the project when Airflow runs a task.
        """
        d = Path(self.data_dir).expanduser().resolve()
        if self.warehouse_engine not in WAREHOUSE_ENGINES:
            raise ValueError(f"warehouse_engine={self.warehouse_engine!r}: use one of {', '.join(WAREHOUSE_ENGINES)}")
        if self.warehouse_engine == "postgres" and not self.warehouse_url:
            raise ValueError("warehouse_engine=postgres needs warehouse_url (TRADESENTRY_WAREHOUSE_URL)")
        landing_dir = self.landing_dir
        if self.landing_uri and not self.landing_remote:
            parsed = urlparse(self.landing_uri)
            landing_dir = Path(unquote(parsed.netloc + parsed.path) if parsed.scheme else self.landing_uri)
        derived: dict[str, Any] = {
            "data_dir": d,
            "feeds_dir": Path(self.feeds_dir).resolve(),
            "dbt_project_dir": Path(self.dbt_project_dir).resolve(),
            "expectations_dir": Path(self.expectations_dir).resolve(),
            "warehouse_path": Path(self.warehouse_path or d / "warehouse" / "tradesentry.duckdb").resolve(),
            "landing_dir": Path(landing_dir or d / "landing").resolve(),
            "publish_dir": Path(self.publish_dir or d / "published").resolve(),
            "reports_dir": Path(self.reports_dir or d / "reports").resolve(),
            "logs_dir": Path(self.logs_dir or d / "logs").resolve(),
            "runs_dir": Path(self.runs_dir or d / "runs").resolve(),
            "airflow_home": Path(self.airflow_home or d / "airflow").resolve(),
            "sample_dir": Path(self.sample_dir or d / "sample_feeds").resolve(),
            "review_db_url": self.review_db_url or f"sqlite:///{d / 'review' / 'review.sqlite'}",
            "detect_work_dir": Path(self.detect_work_dir or d / "detect").resolve(),
        }
        return replace(self, **derived)

    # Typed accessors: after resolve() the optional paths are always set.
    @property
    def warehouse(self) -> Path:
        assert self.warehouse_path is not None
        return self.warehouse_path

    @property
    def landing(self) -> Path:
        assert self.landing_dir is not None
        return self.landing_dir

    @property
    def landing_remote(self) -> bool:
        """True when landing goes to object storage (landing_uri with a scheme other than file)."""
        return bool(self.landing_uri) and urlparse(self.landing_uri or "").scheme not in ("", "file")

    @property
    def published(self) -> Path:
        assert self.publish_dir is not None
        return self.publish_dir

    @property
    def reports(self) -> Path:
        assert self.reports_dir is not None
        return self.reports_dir

    @property
    def logs(self) -> Path:
        assert self.logs_dir is not None
        return self.logs_dir

    @property
    def runs(self) -> Path:
        assert self.runs_dir is not None
        return self.runs_dir

    @property
    def samples(self) -> Path:
        assert self.sample_dir is not None
        return self.sample_dir

    @property
    def detect_work(self) -> Path:
        assert self.detect_work_dir is not None
        return self.detect_work_dir

    @property
    def review_db(self) -> str:
        assert self.review_db_url is not None
        return self.review_db_url

    def as_env(self) -> dict[str, str]:
        """The settings as environment variables, for child processes (dbt, airflow)."""
        out: dict[str, str] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is not None:
                out[f"TRADESENTRY_{f.name.upper()}"] = str(v)
        return out


def _coerce(type_name: Any, raw: str, name: str) -> Any:
    t = str(type_name)
    try:
        if "Path" in t:
            return Path(raw)
        if t.startswith("bool"):
            if raw.strip().lower() in ("1", "true", "yes", "on"):
                return True
            if raw.strip().lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true/false")
        if t.startswith("int"):
            return int(raw)
        if t.startswith("float"):
            return float(raw)
        return raw
    except ValueError as exc:
        raise ValueError(
            f"Environment variable TRADESENTRY_{name.upper()}={raw!r} is not a valid {t}: {exc}"
        ) from exc


def get_settings(**overrides: Any) -> Settings:
    return Settings.from_env(**overrides)
