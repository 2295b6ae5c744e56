"""Pull one feed's file for one night and land it unchanged, content addressed, with a manifest.

Landing is immutable: `landing/<feed>/<night>/<sha256[:16]>/<file name>` is written once through a
temporary name and never overwritten. Pulling the same bytes again is a no-op; a resend with other
bytes lands beside the first with a later `arrived_at`, and the harmonisation lets it win.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import unquote, urlparse

from tradesentry.feeds.spec import FeedSpec, RatesFeedSpec
from tradesentry.settings import Settings

AnySpec = FeedSpec | RatesFeedSpec
CHUNK = 1 << 20


class PullError(RuntimeError):
    """The night's file could not be fetched; the message names the feed, night, source and what to do."""


@dataclass(frozen=True)
class LandedFile:
    feed: str
    night: str
    source_uri: str
    source_file: str  # relative to the landing folder
    sha256: str
    bytes: int
    rows: int
    arrived_at: str
    already_landed: bool = False

    def path(self, settings: Settings) -> Path:
        return settings.landing / self.source_file


def render_uri(spec: AnySpec, night: date, settings: Settings) -> str:
    """The source URI of one night: placeholders {night:%Y%m%d}, {feed}, {country}, {sample_dir}, {data_dir}."""
    values: dict[str, Any] = {
        "night": night,
        "feed": spec.feed,
        "country": getattr(spec, "country", ""),
        "sample_dir": str(settings.samples),
        "data_dir": str(settings.data_dir),
    }
    try:
        return spec.source.uri.format(**values)
    except (KeyError, ValueError) as exc:
        raise PullError(
            f"feed {spec.feed}: source.uri {spec.source.uri!r} has a placeholder that cannot be filled ({exc}); "
            "use {night:%Y%m%d}, {feed}, {country}, {sample_dir} or {data_dir}"
        ) from exc


def _open_source(uri: str, spec: AnySpec, night: date, settings: Settings) -> tuple[BinaryIO, str]:
    """An open binary stream of the source and the file name to land it under."""
    parsed = urlparse(uri)
    name = Path(unquote(parsed.path)).name or f"{spec.feed}_{night:%Y%m%d}"
    where = f"feed {spec.feed}, night {night}: {uri}"
    if parsed.scheme == "file":
        path = Path(unquote(parsed.netloc + parsed.path))
        if not path.exists():
            raise PullError(
                f"{where}: file {path} does not exist. The partner has not delivered this night's file, "
                "or source.uri in the feed spec points to the wrong place."
            )
        return path.open("rb"), name
    if parsed.scheme in ("http", "https"):
        return _open_http(uri, spec, where, settings), name
    if parsed.scheme == "sftp":
        return _open_sftp(uri, where), name
    raise PullError(f"{where}: unsupported scheme {parsed.scheme!r}")


def _open_http(uri: str, spec: AnySpec, where: str, settings: Settings) -> BinaryIO:
    import requests

    auth = None
    headers: dict[str, str] = {}
    if spec.source.connection_id:
        # Secrets stay in Airflow Connections: the spec only names the connection.
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection(spec.source.connection_id)
        if conn.login:
            auth = (conn.login, conn.password or "")
        extra = conn.extra_dejson or {}
        headers.update({str(k): str(v) for k, v in (extra.get("headers") or {}).items()})
    try:
        resp = requests.get(uri, auth=auth, headers=headers, stream=True, timeout=settings.http_timeout_seconds)
    except requests.RequestException as exc:
        raise PullError(f"{where}: request failed: {exc}") from exc
    if resp.status_code == 404:
        raise PullError(f"{where}: HTTP 404, the night's file is not published (yet).")
    if resp.status_code >= 400:
        raise PullError(f"{where}: HTTP {resp.status_code} {resp.reason}")
    resp.raw.decode_content = True
    return resp.raw  # type: ignore[no-any-return]


def _open_sftp(uri: str, where: str) -> BinaryIO:
    # sftp://CONN_ID@/path: the user part is the Airflow connection id (ObjectStoragePath convention).
    from airflow.sdk import ObjectStoragePath

    path = ObjectStoragePath(uri)
    try:
        if not path.exists():
            raise PullError(f"{where}: no such file on the SFTP server.")
        return path.open("rb")  # type: ignore[no-any-return]
    except PullError:
        raise
    except Exception as exc:
        raise PullError(f"{where}: SFTP failed: {type(exc).__name__}: {exc}") from exc


def _copy_hashing(src: BinaryIO, dst: BinaryIO) -> tuple[str, int, int]:
    h = hashlib.sha256()
    size = 0
    newlines = 0
    last = b""
    while True:
        chunk = src.read(CHUNK)
        if not chunk:
            break
        h.update(chunk)
        size += len(chunk)
        newlines += chunk.count(b"\n")
        last = chunk[-1:]
        dst.write(chunk)
    lines = newlines + (1 if size and last != b"\n" else 0)
    return h.hexdigest(), size, lines


def night_dir(settings: Settings, feed: str, night: date) -> Path:
    return settings.landing / feed / night.isoformat()


def pull_feed(spec: AnySpec, night: date, settings: Settings) -> LandedFile:
    """Fetch the night's file and land it. Raises PullError (the Airflow task fails, others go on)."""
    uri = render_uri(spec, night, settings)
    target_dir = night_dir(settings, spec.feed, night)
    target_dir.mkdir(parents=True, exist_ok=True)
    src, name = _open_source(uri, spec, night, settings)
    with src, tempfile.NamedTemporaryFile(dir=target_dir, prefix=".incoming-", delete=False) as tmp:
        try:
            sha, size, lines = _copy_hashing(src, tmp)
        except Exception as exc:
            Path(tmp.name).unlink(missing_ok=True)
            raise PullError(f"feed {spec.feed}, night {night}: reading {uri} failed: {exc}") from exc
    tmp_path = Path(tmp.name)
    if size == 0:
        tmp_path.unlink(missing_ok=True)
        raise PullError(f"feed {spec.feed}, night {night}: {uri} is empty (0 bytes). Ask the partner to resend.")
    final_dir = target_dir / sha[:16]
    final = final_dir / name
    manifest_path = final_dir / "manifest.json"
    if manifest_path.exists():
        tmp_path.unlink(missing_ok=True)
        data = json.loads(manifest_path.read_text())
        return LandedFile(**{**data, "already_landed": True})
    final_dir.mkdir(exist_ok=True)
    os.replace(tmp_path, final)
    final.chmod(0o444)
    rows = max(lines - (1 if getattr(spec.format, "header", True) else 0), 0)
    landed = LandedFile(
        feed=spec.feed,
        night=night.isoformat(),
        source_uri=uri,
        source_file=str(final.relative_to(settings.landing)),
        sha256=sha,
        bytes=size,
        rows=rows,
        arrived_at=datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="microseconds"),
    )
    record = asdict(landed)
    record.pop("already_landed")
    tmp_manifest = final_dir / ".manifest.json.tmp"
    tmp_manifest.write_text(json.dumps(record, indent=2, sort_keys=True))
    # The manifest is written last and atomically: its presence means the landing is complete.
    os.replace(tmp_manifest, manifest_path)
    return landed


def landed_files(settings: Settings, feed: str, night: date) -> list[LandedFile]:
    """Completed landings of one feed and night, oldest arrival first."""
    out = []
    for manifest in night_dir(settings, feed, night).glob("*/manifest.json"):
        data = json.loads(manifest.read_text())
        out.append(LandedFile(**data))
    return sorted(out, key=lambda f: (f.arrived_at, f.source_file))


def iter_landed_nights(settings: Settings, feed: str) -> Iterator[date]:
    base = settings.landing / feed
    if not base.exists():
        return
    for d in sorted(base.iterdir()):
        if d.is_dir() and any(d.glob("*/manifest.json")):
            yield date.fromisoformat(d.name)
