"""Pull one feed's file for one night and land it unchanged, content addressed, with a manifest.

Landing is immutable: `landing/<feed>/<night>/<sha256[:16]>/<file name>` is written once through a
temporary name and never overwritten. Pulling the same bytes again is a no-op; a resend with other
bytes lands beside the first with a later `arrived_at`, and the harmonisation lets it win.

The landing root is a local folder (`landing_dir`) or object storage (`landing_uri`, e.g.
`s3://CONN_ID@bucket/landing`, through Airflow's `ObjectStoragePath`): same layout, checksums and
manifests. On object storage an object appears whole when its upload completes, so the file is
uploaded under its final name and the manifest, written last, still marks a complete landing;
immutability is "never written twice" (the manifest is checked first). Readers take a verified local
copy (`local_copy`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import IO, Any, BinaryIO, cast
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
    # When the source says the file was last modified (file mtime, HTTP Last-Modified, SFTP mtime), UTC
    # without zone; None when it does not say. Freshness judges delivery by it: a file pulled days
    # after its night (a backfill) is not late when the partner delivered it on time.
    source_modified_at: str | None = None

    def path(self, settings: Settings) -> Path:
        """The landed file on local disk (local landing only; see `location` and `local_copy`)."""
        return settings.landing / self.source_file

    def location(self, settings: Settings) -> Any:
        """The landed file under the landing root: a Path, or an ObjectStoragePath on object storage."""
        return landing_root(settings) / self.source_file


def landing_root(settings: Settings) -> Any:
    """The landing root: `settings.landing` (a Path), or an ObjectStoragePath for `landing_uri`."""
    if settings.landing_remote:
        from airflow.sdk import ObjectStoragePath

        return ObjectStoragePath(str(settings.landing_uri))
    return settings.landing


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


def _utc_naive(value: Any) -> str | None:
    """A source's modification time (epoch seconds, datetime or HTTP date) as naive UTC ISO text."""
    try:
        if isinstance(value, (int, float)):
            when = datetime.fromtimestamp(value, UTC)
        elif isinstance(value, datetime):
            when = value if value.tzinfo else value.replace(tzinfo=UTC)
        elif isinstance(value, str) and value:
            when = parsedate_to_datetime(value)
        else:
            return None
    except (TypeError, ValueError, OverflowError, OSError):
        return None
    return when.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds")


def _open_source(uri: str, spec: AnySpec, night: date, settings: Settings) -> tuple[BinaryIO, str, str | None]:
    """An open binary stream of the source, the file name to land it under and the source's
    modification time (None when the source does not tell)."""
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
        return path.open("rb"), name, _utc_naive(path.stat().st_mtime)
    if parsed.scheme in ("http", "https"):
        stream, modified = _open_http(uri, spec, where, settings)
        return stream, name, modified
    if parsed.scheme == "sftp":
        stream, modified = _open_sftp(uri, where)
        return stream, name, modified
    raise PullError(f"{where}: unsupported scheme {parsed.scheme!r}")


def _open_http(uri: str, spec: AnySpec, where: str, settings: Settings) -> tuple[BinaryIO, str | None]:
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
    return cast(BinaryIO, resp.raw), _utc_naive(resp.headers.get("Last-Modified"))


def _open_sftp(uri: str, where: str) -> tuple[BinaryIO, str | None]:
    # sftp://CONN_ID@/path: the user part is the Airflow connection id (ObjectStoragePath convention).
    from airflow.sdk import ObjectStoragePath

    path = ObjectStoragePath(uri)
    try:
        if not path.exists():
            raise PullError(f"{where}: no such file on the SFTP server.")
        return path.open("rb"), _sftp_mtime(path)
    except PullError:
        raise
    except Exception as exc:
        raise PullError(f"{where}: SFTP failed: {type(exc).__name__}: {exc}") from exc


def _sftp_mtime(path: Any) -> str | None:
    """The remote file's modification time, when the filesystem reports one (sshfs: ``mtime``)."""
    try:
        info = path.stat()
    except Exception:
        return None
    if not isinstance(info, dict):
        info = {"mtime": getattr(info, "st_mtime", None)}
    return _utc_naive(info.get("mtime") or info.get("modified") or info.get("LastModified"))


def _copy_hashing(src: BinaryIO, dst: IO[bytes]) -> tuple[str, int, int]:
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
    if settings.landing_remote:
        return _land_remote(spec, night, settings, uri)
    target_dir = night_dir(settings, spec.feed, night)
    target_dir.mkdir(parents=True, exist_ok=True)
    src, name, modified = _open_source(uri, spec, night, settings)
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
    landed = _new_landed(spec, night, uri, str(final.relative_to(settings.landing)), sha, size, lines, modified)
    tmp_manifest = final_dir / ".manifest.json.tmp"
    tmp_manifest.write_text(_manifest_text(landed))
    # The manifest is written last and atomically: its presence means the landing is complete.
    os.replace(tmp_manifest, manifest_path)
    return landed


def _new_landed(
    spec: AnySpec, night: date, uri: str, source_file: str, sha: str, size: int, lines: int, modified: str | None
) -> LandedFile:
    return LandedFile(
        feed=spec.feed,
        night=night.isoformat(),
        source_uri=uri,
        source_file=source_file,
        sha256=sha,
        bytes=size,
        rows=max(lines - (1 if getattr(spec.format, "header", True) else 0), 0),
        arrived_at=datetime.now(UTC).replace(tzinfo=None).isoformat(timespec="microseconds"),
        source_modified_at=modified,
    )


def _manifest_text(landed: LandedFile) -> str:
    record = asdict(landed)
    record.pop("already_landed")
    return json.dumps(record, indent=2, sort_keys=True)


def _land_remote(spec: AnySpec, night: date, settings: Settings, uri: str) -> LandedFile:
    """pull_feed onto object storage: hash into a local temporary file, then upload under the final
    content-addressed name and write the manifest last. A landing whose manifest exists is a no-op."""
    root = landing_root(settings)
    src, name, modified = _open_source(uri, spec, night, settings)
    with src, tempfile.NamedTemporaryFile(prefix="ts-landing-") as tmp:
        try:
            sha, size, lines = _copy_hashing(src, tmp)
        except Exception as exc:
            raise PullError(f"feed {spec.feed}, night {night}: reading {uri} failed: {exc}") from exc
        if size == 0:
            raise PullError(f"feed {spec.feed}, night {night}: {uri} is empty (0 bytes). Ask the partner to resend.")
        rel_dir = f"{spec.feed}/{night.isoformat()}/{sha[:16]}"
        final_dir = root / rel_dir
        manifest_path = final_dir / "manifest.json"
        try:
            _forget_listings(root)
            if manifest_path.exists():
                return LandedFile(**{**json.loads(manifest_path.read_text()), "already_landed": True})
            tmp.flush()
            tmp.seek(0)
            with (final_dir / name).open("wb") as dst:
                shutil.copyfileobj(tmp, dst, CHUNK)
            landed = _new_landed(spec, night, uri, f"{rel_dir}/{name}", sha, size, lines, modified)
            # The manifest is written last: its presence means the landing is complete.
            manifest_path.write_text(_manifest_text(landed))
        except Exception as exc:
            raise PullError(
                f"feed {spec.feed}, night {night}: landing {uri} on {settings.landing_uri} failed: "
                f"{type(exc).__name__}: {exc}. Check the landing bucket and its Airflow connection."
            ) from exc
    return landed


def _forget_listings(root: Any) -> None:
    # s3fs caches directory listings per filesystem instance; another worker may have landed since.
    fs = getattr(root, "fs", None)
    if fs is not None and hasattr(fs, "invalidate_cache"):
        fs.invalidate_cache()


def _remote_subdirs(base: Any) -> list[str]:
    try:
        return sorted(p.name for p in base.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def landed_files(settings: Settings, feed: str, night: date) -> list[LandedFile]:
    """Completed landings of one feed and night, oldest arrival first."""
    out = []
    if settings.landing_remote:
        base = landing_root(settings) / feed / night.isoformat()
        _forget_listings(base)
        for sub in _remote_subdirs(base):
            manifest = base / sub / "manifest.json"
            if manifest.exists():
                out.append(LandedFile(**json.loads(manifest.read_text())))
    else:
        for manifest in night_dir(settings, feed, night).glob("*/manifest.json"):
            data = json.loads(manifest.read_text())
            out.append(LandedFile(**data))
    return sorted(out, key=lambda f: (f.arrived_at, f.source_file))


@contextmanager
def local_copy(landed: LandedFile, settings: Settings) -> Iterator[Path]:
    """A local path to read a landed file from. Local landing: the landed file itself. Object
    storage: a temporary copy under the file's own name (readers look at its suffix), whose sha256 is
    checked against the manifest; removed afterwards."""
    if not settings.landing_remote:
        yield landed.path(settings)
        return
    with tempfile.TemporaryDirectory(prefix="ts-landed-") as tmp:
        local = Path(tmp) / Path(landed.source_file).name
        with landed.location(settings).open("rb") as src, local.open("wb") as dst:
            sha, size, _ = _copy_hashing(src, dst)
        if sha != landed.sha256 or size != landed.bytes:
            raise RuntimeError(
                f"feed {landed.feed}, file {landed.source_file} on {settings.landing_uri}: content does not match "
                f"its manifest (sha256 {sha[:16]}, {size} bytes; manifest {landed.sha256[:16]}, {landed.bytes} bytes). "
                "Landed files must never change: restore it from the source or land the night again."
            )
        yield local
