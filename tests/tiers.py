"""Harness for the deployment-tier tests (docs/deployment.md): real services, real Airflow processes.

A `Stack` starts throwaway services in temporary folders on free ports of 127.0.0.1 (PostgreSQL as the
`postgres` user when run as root, Redis, moto's S3 server) and the Airflow processes (api-server,
dag-processor, scheduler, Celery worker), each in its own process group and with a marker in its
environment. `Stack.close()` stops every group (TERM, then KILL), then sweeps /proc for anything still
belonging to the stack (its descendants, including those that started sessions of their own, orphans
reparented to the test process, anything carrying the marker), kills it and reports it: the tests
assert that nothing was left behind.

Services are installed by `.ci/install-services`, never from here. Where they are missing the tests
skip with a message saying so, except with CI=true, where they fail.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DAG_ID = "tradesentry_nightly"
WAREHOUSE_POOL = "tradesentry_warehouse"
# Warehouse-writing tasks of the nightly DAG: they must all run through the one-slot pool.
WAREHOUSE_TASKS = ("load_raw", "validate_raw", "harmonise", "validate_harmonised", "build_marts", "detect", "publish")
MARK_VAR = "TRADESENTRY_TIER_MARK"
SAMPLE_NIGHTS = 3
SAMPLE_SCALE = 0.1
SAMPLE_SEED = 11
NIGHT = date(2026, 11, 27)


# ---------------------------------------------------------------------------------- availability


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def unavailable(reason: str) -> None:
    """Skip (developer machine) or fail (CI=true) because a service or package is missing."""
    msg = f"tier test needs {reason}; install with `bash .ci/install-services` (as root) and `make install`"
    if in_ci():
        pytest.fail(f"{msg} (CI=true: tier tests never skip)", pytrace=False)
    pytest.skip(msg)


def pg_bindir() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def require(*, redis: bool = False, s3: bool = False, dbt_postgres: bool = False) -> None:
    """Skip/fail unless the services and Python packages a tier needs are here."""
    bindir = pg_bindir()
    if bindir is None or not (bindir / "postgres").exists():
        unavailable("PostgreSQL server binaries (Debian package postgresql), which are not installed")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            unavailable("a `postgres` system user to run PostgreSQL as (root cannot), which does not exist")
    dists = ["psycopg2-binary", "apache-airflow-providers-postgres"]
    if redis:
        if shutil.which("redis-server") is None:
            unavailable("redis-server (Debian package redis-server), which is not installed")
        dists += ["celery", "redis", "apache-airflow-providers-celery"]
    if s3:
        dists += ["moto", "s3fs", "boto3", "apache-airflow-providers-amazon"]
    if dbt_postgres:
        dists += ["dbt-postgres"]
    from importlib.metadata import PackageNotFoundError, version

    missing = []
    for dist in dists:
        try:
            version(dist)  # no import: importing Airflow costs seconds
        except PackageNotFoundError:
            missing.append(dist)
    if missing:
        unavailable(f"Python packages {', '.join(missing)} (the `scale` and `warehouse-pg` extras, locked in requirements.lock)")


# -------------------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    stop_signal: int = signal.SIGTERM


@dataclass
class Stack:
    """Services and processes of one tier test, all stopped by close()."""

    root: Path
    mark: str = field(default_factory=lambda: secrets.token_hex(8))
    procs: list[Proc] = field(default_factory=list)
    extra_dirs: list[Path] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    leftovers: list[str] = field(default_factory=list)
    peak_memory_mb: float = 0.0
    foreign: set[int] = field(default_factory=set)

    @property
    def logs(self) -> Path:
        d = self.root / "logs"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def spawn(
        self,
        name: str,
        cmd: list[str],
        env: dict[str, str] | None = None,
        user: str | None = None,
        stop_signal: int = signal.SIGTERM,
        cwd: Path | None = None,
    ) -> Proc:
        env = dict(os.environ if env is None else env)
        env[MARK_VAR] = self.mark
        log = self.logs / f"{name}.log"
        with log.open("ab") as out:
            kwargs: dict[str, Any] = {}
            if user is not None:
                kwargs.update(user=user, group=pwd.getpwnam(user).pw_gid, extra_groups=[])
            popen = subprocess.Popen(
                cmd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: killpg reaches its children
                cwd=str(cwd or self.root),
                **kwargs,
            )
        proc = Proc(name, popen, log, stop_signal)
        self.procs.append(proc)
        return proc

    def check_alive(self) -> None:
        for p in self.procs:
            if p.popen.poll() is not None:
                raise RuntimeError(f"{p.name} exited with {p.popen.returncode}:\n{tail(p.log)}")

    def wait_port(self, proc: Proc, port: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _port_open(port):
                return
            if proc.popen.poll() is not None:
                raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{tail(proc.log)}")
            time.sleep(0.1)
        raise TimeoutError(f"{proc.name} did not listen on 127.0.0.1:{port} within {timeout} s:\n{tail(proc.log)}")

    def tree(self) -> dict[int, str]:
        """Live processes of this stack: descendants of the processes it spawned (task processes and
        PostgreSQL backends start sessions of their own, so process groups alone miss them), orphans
        reparented to this process (it is a child subreaper while the stack lives), and anything
        whose environment still carries the marker."""
        table = _proc_table()
        roots = {p.popen.pid for p in self.procs} | {
            pid for pid, (ppid, _) in table.items() if ppid == os.getpid() and pid not in self.foreign
        }
        found: set[int] = set()
        frontier = [pid for pid in roots if pid in table]
        while frontier:
            pid = frontier.pop()
            if pid in found:
                continue
            found.add(pid)
            frontier += [c for c, (ppid, _) in table.items() if ppid == pid]
        found |= {pid for pid in marked_pids(self.mark) if pid in table}
        return {pid: table[pid][1] for pid in found if not _is_zombie(pid)}

    def close(self) -> list[str]:
        """Stop every process group (all signalled at once), wait, KILL what is left, then look for
        any process of the stack still alive: those are reported (and killed)."""
        started = time.monotonic()
        before = self.tree()
        for p in reversed(self.procs):
            _signal_group(p.popen.pid, p.stop_signal)
        deadline = time.monotonic() + 4  # then KILL: everything here is thrown away
        for p in reversed(self.procs):
            while time.monotonic() < deadline and _group_alive(p.popen.pid):
                time.sleep(0.1)
            self.timings[f"stop {p.name}"] = time.monotonic() - started
            if _group_alive(p.popen.pid):
                _signal_group(p.popen.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.popen.wait(timeout=5)
        self.timings["stop"] = time.monotonic() - started
        _reap_orphans(self.foreign)
        # Whatever outlived its group's stop: processes that left the groups (setsid, daemonised).
        left = {pid: cmd for pid, cmd in {**before, **self.tree()}.items() if _alive(pid)}
        for pid, cmd in left.items():
            self.leftovers.append(f"{pid} {cmd}")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _reap_orphans(self.foreign)
        _set_subreaper(False)
        for d in self.extra_dirs:
            shutil.rmtree(d, ignore_errors=True)
        self.timings["close"] = time.monotonic() - started
        return self.leftovers

    def memory_mb(self) -> float:
        """Proportional set size (shared pages split between sharers) of the stack's processes, MB."""
        total_kb = 0
        for pid in self.tree():
            try:
                for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                    if line.startswith("Pss:"):
                        total_kb += int(line.split()[1])
                        break
            except OSError:
                continue
        return total_kb / 1024

    def __post_init__(self) -> None:
        # Children of the test process from before the stack (other tests' fixtures) are not its own.
        self.foreign = {pid for pid, (ppid, _) in _proc_table().items() if ppid == os.getpid()}
        _set_subreaper(True)


def _set_subreaper(on: bool) -> None:
    """PR_SET_CHILD_SUBREAPER: orphaned descendants are reparented to this process, not to init."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(36, 1 if on else 0, 0, 0, 0)


def _reap_orphans(foreign: set[int]) -> None:
    """Reap zombie children that are not ours through Popen (orphans reparented to us)."""
    for pid, (ppid, _) in _proc_table().items():
        if ppid == os.getpid() and pid not in foreign and _is_zombie(pid):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and not _is_zombie(pid)


def _proc_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process we can see."""
    out = {}
    for pid in _pids():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, ValueError, IndexError):
            continue
        out[pid] = (ppid, cmd)
    return out


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return any(_pgid_of(pid) == pgid and not _is_zombie(pid) for pid in _pids())


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _pgid_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except (ProcessLookupError, PermissionError):
        return None


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def marked_pids(mark: str) -> list[int]:
    """Processes whose environment carries the marker (Airflow's process titles may overwrite it)."""
    needle = f"{MARK_VAR}={mark}".encode()
    out = []
    for pid in _pids():
        try:
            if needle in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                out.append(pid)
        except OSError:
            continue
    return out


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------------------- services


@dataclass
class Postgres:
    port: int
    user: str = "tradesentry"
    database: str = "airflow"

    def url(self, driver: str = "postgresql+psycopg2") -> str:
        return f"{driver}://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def connect(self, database: str | None = None) -> Any:
        import psycopg2

        return psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, dbname=database or self.database)


def start_postgres(stack: Stack, database: str = "airflow") -> Postgres:
    """A throwaway cluster: initdb in a temporary folder (owned by `postgres` when we are root), trust
    authentication on 127.0.0.1 only, durability off (it is thrown away); `database` created in it.
    The C locale: text sorts byte-wise, as in DuckDB."""
    t0 = time.monotonic()
    bindir = pg_bindir()
    assert bindir is not None
    user = "postgres" if os.geteuid() == 0 else None
    # Its own top-level temporary folder: the postgres user cannot enter root's 0700 pytest folders.
    pgdata = Path(tempfile.mkdtemp(prefix="tradesentry-pg-"))
    stack.extra_dirs.append(pgdata)
    if user:
        pw = pwd.getpwnam(user)
        os.chown(pgdata, pw.pw_uid, pw.pw_gid)
    pg = Postgres(port=free_port(), database=database)
    initdb = stack.spawn(
        "initdb",
        [str(bindir / "initdb"), "-D", str(pgdata), "-U", pg.user, "--auth=trust", "-E", "UTF8",
         "--locale=C", "--no-sync"],
        user=user,
    )
    if initdb.popen.wait(timeout=60) != 0:
        raise RuntimeError(f"initdb failed:\n{tail(initdb.log)}")
    stack.procs.remove(initdb)
    server = stack.spawn(
        "postgres",
        [str(bindir / "postgres"), "-D", str(pgdata), "-p", str(pg.port), "-k", str(pgdata),
         "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
         "-c", "full_page_writes=off", "-c", "max_connections=200"],
        user=user,
        stop_signal=signal.SIGINT,  # fast shutdown
    )
    stack.wait_port(server, pg.port, timeout=30)
    deadline = time.monotonic() + 30
    while True:
        try:
            con = pg.connect("postgres")
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    con.autocommit = True
    with con.cursor() as cur:
        cur.execute(f"create database {pg.database}")
    con.close()
    stack.timings["postgres"] = time.monotonic() - t0
    return pg


def start_redis(stack: Stack) -> int:
    t0 = time.monotonic()
    port = free_port()
    rdir = stack.root / "redis"
    rdir.mkdir(parents=True, exist_ok=True)
    proc = stack.spawn(
        "redis",
        [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--dir", str(rdir), "--daemonize", "no"],
    )
    stack.wait_port(proc, port, timeout=15)
    stack.timings["redis"] = time.monotonic() - t0
    return port


def start_moto(stack: Stack, bucket: str) -> str:
    """moto's S3 server on 127.0.0.1 and one bucket; returns the endpoint URL."""
    t0 = time.monotonic()
    port = free_port()
    proc = stack.spawn("moto", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)])
    stack.wait_port(proc, port, timeout=30)
    endpoint = f"http://127.0.0.1:{port}"
    import boto3

    boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id="testing", aws_secret_access_key="testing",
        region_name="us-east-1",
    ).create_bucket(Bucket=bucket)
    stack.timings["moto"] = time.monotonic() - t0
    return endpoint


def aws_connection(endpoint: str) -> str:
    """An Airflow `aws` connection (as AIRFLOW_CONN_* JSON) pointing at the S3-compatible endpoint."""
    return json.dumps(
        {
            "conn_type": "aws",
            "login": "testing",
            "password": "testing",
            "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"},
        }
    )


# ---------------------------------------------------------------------------------------- airflow


def airflow_env(stack: Stack, pg: Postgres, executor: str, redis_port: int | None = None) -> dict[str, str]:
    """The environment every Airflow process of the tier shares (and the CLI calls)."""
    from cryptography.fernet import Fernet

    home = stack.root / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    api_port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AIRFLOW__", "AIRFLOW_CONN_", "TRADESENTRY_", "PYTEST_"))
    }
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__CORE__EXECUTOR": executor,
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api_port}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg.url(),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{api_port}",
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            # Only the runs the test triggers: no scheduled run for "yesterday" competing with it.
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(stack.root / "airflow-logs"),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "TRADESENTRY_DATA_DIR": str(stack.root / "data"),
            "TRADESENTRY_RETRY_DELAY_SECONDS": "0",
            "TRADESENTRY_RETRY_MAX_DELAY_SECONDS": "0",
            "TRADESENTRY_WAREHOUSE_POOL": WAREHOUSE_POOL,
            "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
            "DO_NOT_TRACK": "1",
            "GX_ANALYTICS_ENABLED": "false",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if redis_port is not None:
        env["AIRFLOW__CELERY__BROKER_URL"] = f"redis://127.0.0.1:{redis_port}/0"
        env["AIRFLOW__CELERY__RESULT_BACKEND"] = "db+" + pg.url("postgresql")
        env["AIRFLOW__CELERY__WORKER_CONCURRENCY"] = "8"  # the eight pulls at once
    # The REST API user: SimpleAuthManager's admin with a password we know (the file it reads).
    password = secrets.token_urlsafe(12)
    (home / "passwords.json").write_text(json.dumps({"admin": password}))
    env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] = "admin:admin"
    env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] = str(home / "passwords.json")
    env["TIER_API_PORT"] = str(api_port)
    env["TIER_API_PASSWORD"] = password
    return env


class Api:
    """Airflow's REST API (v2) as the admin user: how the tests create the pool, unpause, trigger."""

    def __init__(self, env: dict[str, str]) -> None:
        import requests

        self.base = f"http://127.0.0.1:{env['TIER_API_PORT']}"
        self.http = requests.Session()
        res = self.http.post(f"{self.base}/auth/token", json={"username": "admin", "password": env["TIER_API_PASSWORD"]})
        res.raise_for_status()
        self.http.headers["Authorization"] = f"Bearer {res.json()['access_token']}"

    def close(self) -> None:
        # An open keep-alive connection makes the api-server's graceful shutdown wait for it.
        self.http.close()

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        res = self.http.request(method, f"{self.base}/api/v2{path}", timeout=60, **kwargs)
        if res.status_code >= 400:
            raise RuntimeError(f"{method} {path}: HTTP {res.status_code}: {res.text[:2000]}")
        return res.json() if res.content else None


def airflow_cli(stack: Stack, env: dict[str, str], *args: str, timeout: float = 120) -> str:
    t0 = time.monotonic()
    env = {**env, MARK_VAR: stack.mark}
    res = subprocess.run(
        [str(BIN / "airflow"), *args], env=env, cwd=stack.root, capture_output=True, text=True, timeout=timeout
    )
    stack.timings[f"airflow {' '.join(args[:2])}"] = time.monotonic() - t0
    if res.returncode != 0:
        raise RuntimeError(f"airflow {' '.join(args)} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res.stdout


def generate_sample(env: dict[str, str]) -> None:
    from tradesentry.samplegen import generate

    data = Path(env["TRADESENTRY_DATA_DIR"])
    generate(data / "sample_feeds", start=NIGHT - timedelta(days=SAMPLE_NIGHTS - 1), nights=SAMPLE_NIGHTS,
             seed=SAMPLE_SEED, scale=SAMPLE_SCALE)


@dataclass
class RunResult:
    run_id: str
    state: str
    night: date
    tasks: list[dict[str, Any]]
    timings: dict[str, float]
    celery_results: int | None = None


def _warm_execution_api(env: dict[str, str]) -> None:
    import requests

    with contextlib.suppress(Exception):
        requests.get(f"http://127.0.0.1:{env['TIER_API_PORT']}/execution/health", timeout=60)


def start_airflow(stack: Stack, env: dict[str, str], celery: bool) -> Api:
    """db migrate, the long-running processes, then the one-slot pool for the warehouse writers.

    The pool, the unpause and the trigger go through the REST API (`airflow pools set`,
    `airflow dags unpause`, `airflow dags trigger` do the same from a shell, but each CLI call costs
    a Python start-up of Airflow, seconds on two shared cores)."""
    airflow_cli(stack, env, "db", "migrate")
    t0 = time.monotonic()
    api = stack.spawn("api-server", [str(BIN / "airflow"), "api-server"], env)
    stack.spawn("dag-processor", [str(BIN / "airflow"), "dag-processor"], env)
    # No log-serving side processes: everything runs on this host, and the api-server reads the task
    # logs from the shared log folder (one Airflow start-up less per process on two cores).
    stack.spawn("scheduler", [str(BIN / "airflow"), "scheduler", "--skip-serve-logs"], env)
    if celery:
        stack.spawn(
            "celery-worker",
            [str(BIN / "airflow"), "celery", "worker", "--skip-serve-logs",
             "--concurrency", env["AIRFLOW__CELERY__WORKER_CONCURRENCY"]],
            env,
        )
    stack.wait_port(api, int(env["TIER_API_PORT"]), timeout=90)
    # The execution API (what task processes talk to) builds itself on its first request, seconds:
    # have that happen now, while the pool is created and the run triggered, not in the first task.
    threading.Thread(target=_warm_execution_api, args=(env,), daemon=True).start()
    client = Api(env)
    client.call(
        "POST", "/pools",
        json={"name": WAREHOUSE_POOL, "slots": 1,
              "description": "Tasks that write the single-writer DuckDB warehouse: one at a time"},
    )
    stack.timings["airflow processes up"] = time.monotonic() - t0
    return client


def trigger_and_wait(
    stack: Stack, env: dict[str, str], pg: Postgres, api: Api, timeout: float = 240
) -> RunResult:
    """Wait for the DAG to be serialized, unpause and trigger it for NIGHT, poll until it ends."""
    t0 = time.monotonic()
    con = pg.connect()
    con.autocommit = True
    try:
        deadline = time.monotonic() + 90
        while not _query(con, "select 1 from serialized_dag where dag_id = %s", DAG_ID):
            stack.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"{DAG_ID} was not serialized within 90 s:\n{tail(stack.logs / 'dag-processor.log')}")
            time.sleep(0.3)
        stack.timings["dag serialized"] = time.monotonic() - t0
        # The run of night N, as the scheduler would create it: logical date N 03:00 (the night the
        # DAG processes), data interval [N 03:00, N+1 03:00).
        start = datetime.combine(NIGHT, dtime(3), tzinfo=UTC)
        end = start + timedelta(days=1)
        run_id = f"tier__{NIGHT.isoformat()}"
        api.call("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})
        api.call(
            "POST", f"/dags/{DAG_ID}/dagRuns",
            json={"dag_run_id": run_id, "logical_date": start.isoformat(), "data_interval_start": start.isoformat(),
                  "data_interval_end": end.isoformat()},
        )
        api.close()
        stack.timings["unpause + trigger"] = time.monotonic() - t0 - stack.timings["dag serialized"]
        t_run = time.monotonic()
        deadline = time.monotonic() + timeout
        state = "queued"
        next_sample = 0.0
        while True:
            rows = _query(con, "select state from dag_run where dag_id = %s and run_id = %s", DAG_ID, run_id)
            state = rows[0][0] if rows else "missing"
            if state in ("success", "failed"):
                break
            stack.check_alive()
            if time.monotonic() > deadline:
                break
            if time.monotonic() >= next_sample:
                stack.peak_memory_mb = max(stack.peak_memory_mb, stack.memory_mb())
                next_sample = time.monotonic() + 2
            time.sleep(0.5)
        stack.timings["dag run"] = time.monotonic() - t_run
        (logical_date,) = _query(
            con, "select logical_date from dag_run where dag_id = %s and run_id = %s", DAG_ID, run_id
        )[0]
        tasks = [
            dict(zip(("task_id", "map_index", "state", "start_date", "end_date", "pool", "try_number", "hostname"),
                     r, strict=True))
            for r in _query(
                con,
                "select task_id, map_index, state, start_date, end_date, pool, try_number, hostname "
                "from task_instance where dag_id = %s and run_id = %s order by start_date nulls last",
                DAG_ID, run_id,
            )
        ]
        celery_results = None
        if env.get("AIRFLOW__CORE__EXECUTOR") == "CeleryExecutor":
            # A Celery task stores its result after the Airflow task reported its state: wait a little.
            deadline = time.monotonic() + 20
            while True:
                if _query(con, "select 1 from information_schema.tables where table_name = 'celery_taskmeta'"):
                    celery_results = _query(con, "select count(*) from celery_taskmeta where status = 'SUCCESS'")[0][0]
                if (celery_results or 0) >= len(tasks) or time.monotonic() > deadline:
                    break
                time.sleep(0.3)
        return RunResult(run_id, state, logical_date.date(), tasks, stack.timings, celery_results)
    finally:
        con.close()


def _query(con: Any, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with con.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetchall() if cur.description else []


def describe_failure(stack: Stack, result: RunResult) -> str:
    """Failed tasks and the tails of their logs, for the assertion message."""
    lines = [f"dag run {result.run_id}: {result.state}"]
    for t in result.tasks:
        lines.append(f"  {t['task_id']}[{t['map_index']}]: {t['state']} (try {t['try_number']})")
    logs = stack.root / "airflow-logs"
    for t in result.tasks:
        if t["state"] != "success":
            for f in sorted(logs.rglob(f"*task_id={t['task_id']}*/**/*.log"))[-1:]:
                lines.append(f"--- {f.relative_to(logs)}\n{tail(f, 25)}")
    if result.state != "success":
        lines.append(f"--- scheduler\n{tail(stack.logs / 'scheduler.log', 20)}")
    return "\n".join(lines)


def task_table(result: RunResult) -> str:
    """One line per task instance: start offset and duration (seconds), for the test's output."""
    starts = [t["start_date"] for t in result.tasks if t["start_date"]]
    if not starts:
        return "(no task started)"
    t0 = min(starts)
    lines = []
    for t in result.tasks:
        if t["start_date"] and t["end_date"]:
            off = (t["start_date"] - t0).total_seconds()
            dur = (t["end_date"] - t["start_date"]).total_seconds()
            lines.append(f"  {t['task_id']}[{t['map_index']}] +{off:5.1f}s {dur:5.1f}s {t['state']}")
    return "\n".join(lines)


def overlapping(tasks: list[dict[str, Any]], task_ids: tuple[str, ...]) -> list[tuple[str, str]]:
    """Pairs of the given tasks whose [start, end] intervals overlap."""
    spans = sorted(
        (t["start_date"], t["end_date"], t["task_id"]) for t in tasks if t["task_id"] in task_ids and t["start_date"]
    )
    return [(a[2], b[2]) for a, b in itertools.pairwise(spans) if b[0] < a[1]]
