"""Landing on object storage (`landing_uri = s3://CONN_ID@bucket/prefix`) against moto's S3 server on
127.0.0.1: same layout, checksums, immutability and idempotence as on local disk, and the raw load
reads landed objects (through a verified local copy). No Airflow processes: only ObjectStoragePath and
an Airflow connection given as an environment variable."""

from __future__ import annotations

import hashlib
import json
from datetime import date
from pathlib import Path

import pytest
from test_landing import ROWS, _spec, _write_source

from tradesentry.landing.pull import landed_files, landing_root, pull_feed
from tradesentry.landing.raw_load import load_night
from tradesentry.settings import Settings
from tradesentry.warehouse import open_warehouse

NIGHT = date(2026, 11, 27)
BUCKET = "tradesentry-landing"
CONN_ID = "aws_landing"
SOURCE = "file://{data_dir}/incoming/xq_{night:%Y%m%d}.csv"


@pytest.fixture(scope="module")
def s3_endpoint():
    moto_server = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    pytest.importorskip("s3fs")
    pytest.importorskip("airflow.providers.amazon")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
        s3.create_bucket(Bucket=BUCKET)
        yield endpoint, s3
    finally:
        server.stop()


@pytest.fixture
def s3_settings(tmp_path: Path, s3_endpoint, monkeypatch: pytest.MonkeyPatch) -> Settings:
    endpoint, _ = s3_endpoint
    # The secret stays in the Airflow connection; the landing URI names it as its user part.
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{CONN_ID.upper()}",
        json.dumps(
            {
                "conn_type": "aws",
                "login": "testing",
                "password": "testing",
                "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"},
            }
        ),
    )
    prefix = f"landing-{tmp_path.name}"  # one prefix per test: the bucket is shared by the module
    return Settings(data_dir=tmp_path / "data", landing_uri=f"s3://{CONN_ID}@{BUCKET}/{prefix}").resolve()


def _keys(s3, prefix: str) -> list[str]:
    out = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix + "/").get("Contents", [])
    return sorted(o["Key"][len(prefix) + 1 :] for o in out)


def test_s3_landing_layout_checksums_and_idempotence(s3_settings: Settings, s3_endpoint, tmp_path: Path) -> None:
    _, s3 = s3_endpoint
    prefix = s3_settings.landing_uri.split(f"{BUCKET}/", 1)[1]  # type: ignore[union-attr]
    assert s3_settings.landing_remote
    src = _write_source(s3_settings)
    spec = _spec(SOURCE)

    first = pull_feed(spec, NIGHT, s3_settings)
    body = src.read_bytes()
    assert first.sha256 == hashlib.sha256(body).hexdigest() and first.bytes == len(body) and first.rows == 5
    # Same layout as local landing: <feed>/<night>/<sha256[:16]>/<file name>, manifest beside it.
    local = pull_feed(spec, NIGHT, Settings(data_dir=s3_settings.data_dir, landing_dir=tmp_path / "local").resolve())
    assert first.source_file == local.source_file == f"xq/2026-11-27/{first.sha256[:16]}/xq_20261127.csv"
    assert _keys(s3, prefix) == sorted([first.source_file, f"xq/2026-11-27/{first.sha256[:16]}/manifest.json"])
    assert first.location(s3_settings).read_bytes() == body
    manifest = json.loads((landing_root(s3_settings) / first.source_file).parent.joinpath("manifest.json").read_text())
    assert manifest["sha256"] == first.sha256 and manifest["source_file"] == first.source_file
    stamp = s3.head_object(Bucket=BUCKET, Key=f"{prefix}/{first.source_file}")["LastModified"]

    # Idempotent: the same bytes again are a no-op (nothing rewritten).
    again = pull_feed(spec, NIGHT, s3_settings)
    assert again.already_landed and again.source_file == first.source_file and again.arrived_at == first.arrived_at
    assert s3.head_object(Bucket=BUCKET, Key=f"{prefix}/{first.source_file}")["LastModified"] == stamp
    assert len(landed_files(s3_settings, "xq", NIGHT)) == 1

    # A resend with other bytes lands beside the first, later.
    _write_source(s3_settings, "\n".join(ROWS[:2]) + "\n")
    resend = pull_feed(spec, NIGHT, s3_settings)
    assert resend.source_file != first.source_file and not resend.already_landed
    assert [f.source_file for f in landed_files(s3_settings, "xq", NIGHT)] == [first.source_file, resend.source_file]
    assert len(_keys(s3, prefix)) == 4


def test_raw_load_reads_s3_landing_like_local(s3_settings: Settings, s3_endpoint, tmp_path: Path) -> None:
    _, s3 = s3_endpoint
    prefix = s3_settings.landing_uri.split(f"{BUCKET}/", 1)[1]  # type: ignore[union-attr]
    spec = _spec(SOURCE)
    local_settings = Settings(data_dir=s3_settings.data_dir, landing_dir=tmp_path / "local-landing").resolve()
    _write_source(s3_settings)
    results = {}
    for name, settings in (("s3", s3_settings), ("local", local_settings)):
        pull_feed(spec, NIGHT, settings)
        settings = Settings(**{**settings.__dict__, "warehouse_path": tmp_path / f"{name}.duckdb"})
        with open_warehouse(settings.warehouse) as con:
            load_night(con, spec, NIGHT, settings)
            load_night(con, spec, NIGHT, settings)  # reloading changes nothing
            results[name] = (
                con.execute('select * exclude (_arrived_at) from raw.xq__declarations order by _source_line').fetchall(),
                con.execute("select source_line, reason_code from raw.parse_rejects order by 1").fetchall(),
                con.execute("select source_file, sha256, rows_landed, rows_rejected from raw.landed_files").fetchall(),
            )
    assert results["s3"] == results["local"]
    assert len(results["s3"][0]) == 3 and len(results["s3"][1]) == 2

    # A landed object that changed after landing is refused (its checksum no longer matches).
    (landed,) = landed_files(s3_settings, "xq", NIGHT)
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}/{landed.source_file}", Body=b"DECL;DATE\nX;Y\n")
    with open_warehouse(tmp_path / "tampered.duckdb") as con, pytest.raises(RuntimeError, match="does not match"):
        load_night(con, spec, NIGHT, s3_settings)


def test_landing_uri_file_scheme_is_a_local_folder(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path, landing_uri=f"file://{tmp_path}/elsewhere").resolve()
    assert not s.landing_remote and s.landing == (tmp_path / "elsewhere").resolve()
    env = Settings.from_env({"TRADESENTRY_DATA_DIR": str(tmp_path), "TRADESENTRY_LANDING_URI": "s3://c@b/p"})
    assert env.landing_remote and env.landing_uri == "s3://c@b/p"
