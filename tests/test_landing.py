"""Pulling and landing: file, HTTP and SFTP sources; immutable, content-addressed landing; raw load."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from datetime import UTC, date, datetime
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tradesentry.feeds.spec import FeedSpec
from tradesentry.landing.pull import PullError, landed_files, pull_feed
from tradesentry.landing.raw_load import load_night
from tradesentry.settings import Settings
from tradesentry.warehouse import open_warehouse

NIGHT = date(2026, 11, 27)


def _spec(uri: str, **fmt: str) -> FeedSpec:
    return FeedSpec.model_validate(
        {
            "feed": "xq",
            "country": "XQ",
            "name": "Test feed",
            "source": {"uri": uri},
            "format": {"delimiter": ";", "encoding": "latin-1", "decimal": ",", **fmt},
            "columns": {
                "declaration_id": "DECL",
                "declaration_date": "DATE",
                "flow": "FLOW",
                "hs_code": "HS",
                "partner_country": "PARTNER",
                "net_mass": "MASS",
                "customs_value": "VALUE",
            },
            "conventions": {"currency": "EUR", "mass_unit": "kg"},
        }
    )


ROWS = [
    "DECL;DATE;FLOW;HS;PARTNER;MASS;VALUE;TRADER",
    "D1;27.11.2026;import;610910;CN;10,5;100,25;Société Générale d'Import",
    "D2;27.11.2026;export;851762;XA;2;99;",
    "D3;27.11.2026;import;not enough fields",
    "D4;27.11.2026;import;401110;DE;1000;5000,5;X;extra field",
    "D5;27.11.2026;export;090111;US;1;1;Café Ltd",
]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data").resolve()


def _write_source(settings: Settings, text: str = "\n".join(ROWS) + "\n") -> Path:
    src = settings.data_dir / "incoming" / "xq_20261127.csv"
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes(text.encode("latin-1"))
    return src


DELIVERED = datetime(2026, 11, 28, 1, 30, 5, tzinfo=UTC)


def test_file_pull_lands_immutably_and_idempotently(settings: Settings) -> None:
    src = _write_source(settings)
    os.utime(src, (DELIVERED.timestamp(), DELIVERED.timestamp()))
    spec = _spec("file://{data_dir}/incoming/xq_{night:%Y%m%d}.csv")
    first = pull_feed(spec, NIGHT, settings)
    # The source's own time (freshness judges by it), kept in the manifest beside the pull time.
    assert first.source_modified_at == "2026-11-28T01:30:05"
    assert landed_files(settings, "xq", NIGHT)[0].source_modified_at == "2026-11-28T01:30:05"
    path = first.path(settings)
    assert path.read_bytes() == (settings.data_dir / "incoming" / "xq_20261127.csv").read_bytes()
    assert first.rows == 5 and first.sha256[:16] in str(path)
    assert not (path.stat().st_mode & 0o222), "landed files are read-only"
    again = pull_feed(spec, NIGHT, settings)
    assert again.already_landed and again.source_file == first.source_file
    assert len(landed_files(settings, "xq", NIGHT)) == 1
    # A resend with other bytes lands beside the first one, later.
    _write_source(settings, "\n".join(ROWS[:2]) + "\n")
    resend = pull_feed(spec, NIGHT, settings)
    assert resend.source_file != first.source_file
    assert [f.source_file for f in landed_files(settings, "xq", NIGHT)] == [first.source_file, resend.source_file]


def test_missing_file_names_feed_night_and_path(settings: Settings) -> None:
    spec = _spec("file://{data_dir}/incoming/xq_{night:%Y%m%d}.csv")
    with pytest.raises(PullError) as err:
        pull_feed(spec, NIGHT, settings)
    msg = str(err.value)
    assert "feed xq" in msg and "2026-11-27" in msg and "xq_20261127.csv" in msg and "does not exist" in msg


def test_raw_load_keeps_file_lines_and_rejects(settings: Settings) -> None:
    src = _write_source(settings)
    os.utime(src, (DELIVERED.timestamp(), DELIVERED.timestamp()))
    spec = _spec("file://{data_dir}/incoming/xq_{night:%Y%m%d}.csv")
    pull_feed(spec, NIGHT, settings)
    with open_warehouse(settings.warehouse) as con:
        first = load_night(con, spec, NIGHT, settings)
        snapshot = con.execute('select * from raw.xq__declarations order by _source_line').fetchall()
        again = load_night(con, spec, NIGHT, settings)
        assert con.execute('select * from raw.xq__declarations order by _source_line').fetchall() == snapshot
        rows = con.execute('select _source_line, "DECL", "TRADER" from raw.xq__declarations order by 1').fetchall()
        rejects = con.execute("select source_line, reason_code, raw_line from raw.parse_rejects order by 1").fetchall()
        landed = con.execute(
            "select rows_landed, rows_rejected, columns, source_modified_at from raw.landed_files"
        ).fetchall()
    assert first[0].rows_landed == again[0].rows_landed == 3
    assert rows == [(1, "D1", "Société Générale d'Import"), (2, "D2", None), (5, "D5", "Café Ltd")]
    assert [(r[0], r[1]) for r in rejects] == [(3, "unparseable_line"), (4, "unparseable_line")]
    assert rejects[0][2].startswith("D3;")
    assert landed == [
        (3, 2, ["DECL", "DATE", "FLOW", "HS", "PARTNER", "MASS", "VALUE", "TRADER"], DELIVERED.replace(tzinfo=None))
    ]


def test_http_pull(settings: Settings, tmp_path: Path) -> None:
    served = tmp_path / "www"
    served.mkdir()
    (served / "xq_20261127.csv").write_bytes(("\n".join(ROWS) + "\n").encode("latin-1"))
    os.utime(served / "xq_20261127.csv", (DELIVERED.timestamp(), DELIVERED.timestamp()))
    handler = partial(SimpleHTTPRequestHandler, directory=str(served))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        landed = pull_feed(_spec(f"http://127.0.0.1:{port}/xq_{{night:%Y%m%d}}.csv"), NIGHT, settings)
        assert landed.path(settings).read_bytes() == (served / "xq_20261127.csv").read_bytes()
        assert landed.source_modified_at == "2026-11-28T01:30:05"  # from Last-Modified
        with pytest.raises(PullError, match="HTTP 404"):
            pull_feed(_spec(f"http://127.0.0.1:{port}/missing_{{night:%Y%m%d}}.csv"), NIGHT, settings)
    finally:
        server.shutdown()


def test_sftp_pull_through_airflow_connection(settings: Settings, tmp_path: Path, monkeypatch) -> None:
    asyncssh = pytest.importorskip("asyncssh")
    # sshfs closes its cached connections at interpreter exit, after pytest closed the log streams.
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    root = tmp_path / "sftp"
    (root / "outbox").mkdir(parents=True)
    (root / "outbox" / "xq_20261127.csv").write_bytes(("\n".join(ROWS) + "\n").encode("latin-1"))
    os.utime(root / "outbox" / "xq_20261127.csv", (DELIVERED.timestamp(), DELIVERED.timestamp()))
    host_key = asyncssh.generate_private_key("ssh-ed25519")

    class Server(asyncssh.SSHServer):
        def begin_auth(self, username: str) -> bool:
            return True

        def password_auth_supported(self) -> bool:
            return True

        def validate_password(self, username: str, password: str) -> bool:
            return username == "partner" and password == "s3cret"

    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, object] = {}

    def run() -> None:
        asyncio.set_event_loop(loop)

        async def start() -> None:
            server = await asyncssh.create_server(
                Server,
                "127.0.0.1",
                0,
                server_host_keys=[host_key],
                sftp_factory=lambda chan: asyncssh.SFTPServer(chan, chroot=str(root).encode()),
            )
            holder["port"] = server.sockets[0].getsockname()[1]
            holder["server"] = server
            started.set()

        loop.run_until_complete(start())
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        port = holder["port"]
        # Secrets live in the Airflow connection; the spec names it as the user part of the URI.
        monkeypatch.setenv(
            "AIRFLOW_CONN_PARTNER_SFTP",
            f'{{"conn_type": "sftp", "host": "127.0.0.1", "port": {port}, "login": "partner", '
            f'"password": "s3cret", "extra": {{"no_host_key_check": true}}}}',
        )
        landed = pull_feed(_spec("sftp://partner_sftp@/outbox/xq_{night:%Y%m%d}.csv"), NIGHT, settings)
        assert landed.path(settings).read_bytes() == (root / "outbox" / "xq_20261127.csv").read_bytes()
        assert landed.source_modified_at == "2026-11-28T01:30:05"
        with pytest.raises(PullError, match="no such file"):
            pull_feed(_spec("sftp://partner_sftp@/outbox/nothing_{night:%Y%m%d}.csv"), NIGHT, settings)
    finally:
        loop.call_soon_threadsafe(holder["server"].close)  # type: ignore[attr-defined]
        loop.call_soon_threadsafe(loop.stop)
