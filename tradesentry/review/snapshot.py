"""Read access to the published snapshot named in ``<publish_dir>/CURRENT``.

The file is opened read-only with DuckDB (read-only holders coexist; the warehouse is never opened).
Every access checks CURRENT (one ``stat``); when the publish stage has switched it, the new file is
opened and the old one closed a little later, so a new night is picked up without restart and requests
already running on the old file finish on it.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb


class NoSnapshotError(RuntimeError):
    """Nothing published yet (no CURRENT, or it names a missing file)."""


@dataclass
class _Open:
    name: str
    path: Path
    con: duckdb.DuckDBPyConnection
    stamp: tuple[int, int, int]


class SnapshotReader:
    def __init__(self, publish_dir: Path | str) -> None:
        self.publish_dir = Path(publish_dir)
        self._lock = threading.Lock()
        self._open: _Open | None = None
        self._retired: list[_Open] = []

    @property
    def current_file(self) -> Path:
        return self.publish_dir / "CURRENT"

    def _stamp(self) -> tuple[int, int, int]:
        try:
            st = os.stat(self.current_file)
        except FileNotFoundError as exc:
            raise NoSnapshotError(f"no snapshot published yet ({self.current_file} is missing)") from exc
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _refresh(self) -> _Open:
        stamp = self._stamp()
        o = self._open
        if o is not None and o.stamp == stamp:
            return o
        with self._lock:
            o = self._open
            if o is not None and o.stamp == stamp:
                return o
            # CURRENT holds the file's name (a "snapshots/" prefix is tolerated); never a path elsewhere
            name = Path(self.current_file.read_text(encoding="utf-8").strip()).name
            if not name.endswith(".duckdb") or name.startswith("."):
                raise NoSnapshotError(f"CURRENT names no valid snapshot: {name!r}")
            path = self.publish_dir / "snapshots" / name
            if not path.exists():
                raise NoSnapshotError(f"CURRENT names {name}, which does not exist")
            if o is not None and o.name == name:
                o.stamp = stamp
                return o
            con = duckdb.connect(str(path), read_only=True, config={"threads": 1})
            new = _Open(name=name, path=path, con=con, stamp=stamp)
            if o is not None:
                self._retired.append(o)
            # keep the previous file open for requests still running on it; close older ones
            while len(self._retired) > 1:
                old = self._retired.pop(0)
                with contextlib.suppress(Exception):
                    old.con.close()
            self._open = new
            return new

    @property
    def name(self) -> str:
        return self._refresh().name

    @contextmanager
    def cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor on the current snapshot, for one request (cursors are per-thread)."""
        cur = self._refresh().con.cursor()
        try:
            yield cur
        finally:
            cur.close()

    def close(self) -> None:
        with self._lock:
            for o in [*self._retired, *([self._open] if self._open else [])]:
                with contextlib.suppress(Exception):
                    o.con.close()
            self._retired.clear()
            self._open = None


def rows(cur: duckdb.DuckDBPyConnection, sql: str, params: list | tuple = ()) -> list[dict]:
    res = cur.execute(sql, list(params))
    cols = [d[0] for d in res.description]
    return [dict(zip(cols, r, strict=True)) for r in res.fetchall()]


def table_columns(cur: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    return {
        r[0]
        for r in cur.execute(
            "select column_name from information_schema.columns where table_name = ?", [table]
        ).fetchall()
    }
