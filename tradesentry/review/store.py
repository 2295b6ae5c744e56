"""The decisions store: analysts' decisions, their append-only audit trail, and the app's users.

SQLAlchemy Core over any URL (SQLite by default: ``settings.review_db_url``). It lives apart from the
warehouse and the published snapshot. Decisions are keyed by the stable ``anomaly_id``; the detector
version an analyst saw is kept so an anomaly re-scored by a newer detector is flagged for re-review.

Schema changes go through the small versioned migration runner below (``upgrade``), run on start.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

STATUSES = ("new", "in_review", "escalated", "closed")
OUTCOMES = ("confirmed", "dismissed", "data_error", "inconclusive")
ROLES = ("analyst", "lead", "admin")
DECISION_FIELDS = ("status", "outcome", "assignee", "notes")

metadata = sa.MetaData()

schema_migrations = sa.Table(
    "schema_migrations",
    metadata,
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("applied_at", sa.DateTime(timezone=True), nullable=False),
)

app_kv = sa.Table(
    "app_kv",
    metadata,
    sa.Column("key", sa.String(100), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

users = sa.Table(
    "users",
    metadata,
    sa.Column("username", sa.String(150), primary_key=True),
    sa.Column("display_name", sa.String(200), nullable=True),
    # NULL: the account can only sign in through Airflow (plugin mode)
    sa.Column("password_hash", sa.String(300), nullable=True),
    sa.Column("role", sa.String(20), nullable=False),
    # comma-separated ISO codes, e.g. "XA,XB"; empty for leads and admins (they see all)
    sa.Column("countries", sa.String(500), nullable=False, server_default=""),
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

decisions = sa.Table(
    "decisions",
    metadata,
    sa.Column("anomaly_id", sa.String(64), primary_key=True),
    sa.Column("status", sa.String(20), nullable=False, server_default="new"),
    sa.Column("outcome", sa.String(20), nullable=True),
    sa.Column("assignee", sa.String(150), nullable=True),
    sa.Column("notes", sa.Text, nullable=True),
    sa.Column("decided_by", sa.String(150), nullable=True),  # the user of the last change
    sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),  # the time of the last change
    sa.Column("detector_version", sa.String(100), nullable=True),  # the version the user saw
    sa.Column("night", sa.Date, nullable=True),
    sa.Column("countries", sa.String(500), nullable=False, server_default=""),  # ",XA,XB,"
    sa.Column("revision", sa.Integer, nullable=False, server_default="0"),
)

decision_events = sa.Table(
    "decision_events",
    metadata,
    sa.Column("event_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("anomaly_id", sa.String(64), nullable=False, index=True),
    sa.Column("time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("user", sa.String(150), nullable=False),
    sa.Column("action", sa.String(20), nullable=False),  # decide | bulk | undo
    sa.Column("before", sa.Text, nullable=True),  # JSON of the decision fields before
    sa.Column("after", sa.Text, nullable=False),  # JSON of the decision fields after
    sa.Column("undo_of", sa.Integer, nullable=True),
    sa.Column("detector_version", sa.String(100), nullable=True),
    sa.Column("night", sa.Date, nullable=True),
    sa.Column("countries", sa.String(500), nullable=False, server_default=""),
)


# --- migrations -------------------------------------------------------------------------------------


def _m1_initial(conn: Connection) -> None:
    for t in (app_kv, users, decisions, decision_events):
        t.create(conn, checkfirst=True)


def _m2_append_only(conn: Connection) -> None:
    """Refuse UPDATE and DELETE on decision_events in the database itself (SQLite, PostgreSQL)."""
    name = conn.dialect.name
    if name == "sqlite":
        for op in ("UPDATE", "DELETE"):
            conn.exec_driver_sql(
                f"CREATE TRIGGER IF NOT EXISTS decision_events_no_{op.lower()} BEFORE {op} ON decision_events "
                "BEGIN SELECT RAISE(ABORT, 'decision_events is append-only'); END"
            )
    elif name == "postgresql":
        conn.exec_driver_sql(
            "CREATE OR REPLACE FUNCTION decision_events_append_only() RETURNS trigger AS $$ "
            "BEGIN RAISE EXCEPTION 'decision_events is append-only'; END $$ LANGUAGE plpgsql"
        )
        conn.exec_driver_sql(
            "CREATE TRIGGER decision_events_append_only BEFORE UPDATE OR DELETE ON decision_events "
            "FOR EACH ROW EXECUTE FUNCTION decision_events_append_only()"
        )


def _m3_indexes(conn: Connection) -> None:
    # plain DDL: Index objects would attach to the shared metadata and leak into migration 1
    conn.exec_driver_sql("CREATE INDEX IF NOT EXISTS ix_decisions_assignee ON decisions (assignee)")
    conn.exec_driver_sql('CREATE INDEX IF NOT EXISTS ix_decision_events_time ON decision_events ("time")')


MIGRATIONS: list[tuple[int, str, Any]] = [
    (1, "initial tables: app_kv, users, decisions, decision_events", _m1_initial),
    (2, "decision_events append-only triggers", _m2_append_only),
    (3, "indexes on assignee and event time", _m3_indexes),
]


def upgrade(engine: Engine) -> list[int]:
    """Apply the migrations not yet applied; returns the versions applied now."""
    schema_migrations.create(engine, checkfirst=True)
    applied_now = []
    with engine.connect() as conn:
        done = {r[0] for r in conn.execute(sa.select(schema_migrations.c.version))}
    for version, name, fn in MIGRATIONS:
        if version in done:
            continue
        try:
            with engine.begin() as conn:
                fn(conn)
                conn.execute(schema_migrations.insert().values(version=version, name=name, applied_at=_now()))
            applied_now.append(version)
        except sa.exc.IntegrityError:  # another process applied it at the same time
            continue
    return applied_now


def current_version(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.max(schema_migrations.c.version))).scalar() or 0


# --- helpers ------------------------------------------------------------------------------------------


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _countries_key(countries: Iterable[str]) -> str:
    cs = sorted({c.strip().upper() for c in countries if c and c.strip()})
    return ("," + ",".join(cs) + ",") if cs else ""


def parse_countries(text: str | Iterable[str] | None) -> tuple[str, ...]:
    if text is None:
        return ()
    items = text.split(",") if isinstance(text, str) else list(text)
    return tuple(sorted({c.strip().upper() for c in items if c and c.strip()}))


@dataclass(frozen=True)
class UserRecord:
    username: str
    display_name: str | None
    password_hash: str | None
    role: str
    countries: tuple[str, ...]
    active: bool

    @property
    def sees_all(self) -> bool:
        return self.role in ("lead", "admin")


class StoreError(Exception):
    pass


class ConflictError(StoreError):
    """The decision changed since the client read it (optimistic concurrency)."""


class Store:
    """All reads and writes of the review store."""

    def __init__(self, url: str, *, engine: Engine | None = None) -> None:
        self.url = url
        if engine is None:
            kwargs: dict[str, Any] = {"future": True, "pool_pre_ping": True}
            if url.startswith("sqlite"):
                path = url.split("///", 1)[-1] if "///" in url else ""
                if path and path != ":memory:":
                    from pathlib import Path

                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                kwargs["connect_args"] = {"check_same_thread": False, "timeout": 15}
                if path in ("", ":memory:"):
                    kwargs["poolclass"] = sa.pool.StaticPool
            engine = sa.create_engine(url, **kwargs)
            if url.startswith("sqlite"):
                sa.event.listen(engine, "connect", _sqlite_pragmas)
        self.engine = engine

    def upgrade(self) -> list[int]:
        return upgrade(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()

    # --- key/value (secret key) ---------------------------------------------------------------------

    def secret_key(self) -> str:
        """The app's signing key: env TRADESENTRY_REVIEW_SECRET_KEY if set, else one kept in the store."""
        import os

        env = os.environ.get("TRADESENTRY_REVIEW_SECRET_KEY")
        if env:
            return env
        with self.engine.connect() as conn:
            v = conn.execute(sa.select(app_kv.c.value).where(app_kv.c.key == "secret_key")).scalar()
        if v:
            return v
        # another process may insert first: then its key wins (read back below)
        with contextlib.suppress(sa.exc.IntegrityError), self.engine.begin() as conn:
            conn.execute(app_kv.insert().values(key="secret_key", value=secrets.token_urlsafe(48)))
        with self.engine.connect() as conn:
            return conn.execute(sa.select(app_kv.c.value).where(app_kv.c.key == "secret_key")).scalar_one()

    # --- users ----------------------------------------------------------------------------------------

    def get_user(self, username: str) -> UserRecord | None:
        with self.engine.connect() as conn:
            r = conn.execute(sa.select(users).where(users.c.username == username)).mappings().first()
        return _user(r) if r else None

    def list_users(self) -> list[UserRecord]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(users).order_by(users.c.username)).mappings().all()
        return [_user(r) for r in rows]

    def count_users(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(users)).scalar_one()

    def create_user(
        self,
        username: str,
        *,
        role: str,
        countries: Iterable[str] | str = (),
        password_hash: str | None,
        display_name: str | None = None,
    ) -> UserRecord:
        username = username.strip()
        _check_username(username)
        if role not in ROLES:
            raise StoreError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
        cs = parse_countries(countries)
        if role == "analyst" and not cs:
            raise StoreError("an analyst needs at least one country (--countries XA,XB)")
        now = _now()
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    users.insert().values(
                        username=username,
                        display_name=display_name,
                        password_hash=password_hash,
                        role=role,
                        countries=",".join(cs),
                        active=True,
                        created_at=now,
                        updated_at=now,
                    )
                )
        except sa.exc.IntegrityError as exc:
            raise StoreError(f"user {username!r} exists already") from exc
        u = self.get_user(username)
        assert u is not None
        return u

    def update_user(self, username: str, **values: Any) -> UserRecord:
        allowed = {"display_name", "password_hash", "role", "countries", "active"}
        bad = set(values) - allowed
        if bad:
            raise StoreError(f"cannot update {sorted(bad)}")
        if "role" in values and values["role"] not in ROLES:
            raise StoreError(f"role must be one of {', '.join(ROLES)}")
        if "countries" in values:
            values["countries"] = ",".join(parse_countries(values["countries"]))
        with self.engine.begin() as conn:
            res = conn.execute(
                users.update().where(users.c.username == username).values(**values, updated_at=_now())
            )
            if res.rowcount == 0:
                raise StoreError(f"no user {username!r}")
        u = self.get_user(username)
        assert u is not None
        if u.role == "analyst" and not u.countries:
            raise StoreError("an analyst needs at least one country")
        return u

    # --- decisions ------------------------------------------------------------------------------------

    def decisions_for(self, anomaly_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        ids = list(dict.fromkeys(anomaly_ids))
        with self.engine.connect() as conn:
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                for r in conn.execute(
                    sa.select(decisions).where(decisions.c.anomaly_id.in_(chunk))
                ).mappings():
                    out[r["anomaly_id"]] = dict(r)
        return out

    def decision(self, anomaly_id: str) -> dict[str, Any] | None:
        return self.decisions_for([anomaly_id]).get(anomaly_id)

    def decide(
        self,
        anomaly_id: str,
        *,
        user: str,
        changes: dict[str, Any],
        detector_version: str | None,
        night: dt.date | None,
        countries: Iterable[str],
        action: str = "decide",
        expected_revision: int | None = None,
    ) -> dict[str, Any]:
        """Apply ``changes`` (status, outcome, assignee, notes) and append one event. Returns the decision."""
        changes = {k: v for k, v in changes.items() if k in DECISION_FIELDS}
        _validate(changes)
        ckey = _countries_key(countries)
        with self.engine.begin() as conn:
            cur = (
                conn.execute(sa.select(decisions).where(decisions.c.anomaly_id == anomaly_id))
                .mappings()
                .first()
            )
            before = {k: cur[k] for k in DECISION_FIELDS} if cur else None
            revision = cur["revision"] if cur else 0
            if expected_revision is not None and expected_revision != revision:
                raise ConflictError(
                    f"this anomaly was changed by {cur['decided_by'] if cur else 'someone'} meanwhile; reload"
                )
            after = dict(before or {"status": "new", "outcome": None, "assignee": None, "notes": None})
            after.update(changes)
            if after.get("status") == "closed" and not after.get("outcome"):
                raise StoreError(
                    "closing needs an outcome (confirmed, dismissed, data error or inconclusive)"
                )
            now = _now()
            values = dict(
                after,
                decided_by=user,
                decided_at=now,
                detector_version=detector_version,
                night=night,
                countries=ckey,
                revision=revision + 1,
            )
            if cur:
                res = conn.execute(
                    decisions.update()
                    .where((decisions.c.anomaly_id == anomaly_id) & (decisions.c.revision == revision))
                    .values(**values)
                )
                if res.rowcount != 1:
                    raise ConflictError("this anomaly was changed meanwhile; reload")
            else:
                try:
                    conn.execute(decisions.insert().values(anomaly_id=anomaly_id, **values))
                except sa.exc.IntegrityError as exc:
                    raise ConflictError("this anomaly was changed meanwhile; reload") from exc
            conn.execute(
                decision_events.insert().values(
                    anomaly_id=anomaly_id,
                    time=now,
                    user=user,
                    action=action,
                    before=json.dumps(before) if before is not None else None,
                    after=json.dumps(after),
                    detector_version=detector_version,
                    night=night,
                    countries=ckey,
                )
            )
            return dict(anomaly_id=anomaly_id, **values)

    def undo(self, anomaly_id: str, *, user: str, may_undo_others: bool) -> dict[str, Any] | None:
        """Undo the latest change of this anomaly not undone yet, by appending an 'undo' event.

        Returns the decision after the undo, or None when there is nothing to undo.
        """
        with self.engine.begin() as conn:
            evs = (
                conn.execute(
                    sa.select(decision_events)
                    .where(decision_events.c.anomaly_id == anomaly_id)
                    .order_by(decision_events.c.event_id.desc())
                )
                .mappings()
                .all()
            )
            undone = {e["undo_of"] for e in evs if e["undo_of"] is not None}
            # an undo event is itself undone by nothing: walk back over undo events and undone changes
            target = next((e for e in evs if e["action"] != "undo" and e["event_id"] not in undone), None)
            if target is None:
                return None
            if target["user"] != user and not may_undo_others:
                raise StoreError(
                    f"the last change was made by {target['user']}; only they or a lead can undo it"
                )
            cur = (
                conn.execute(sa.select(decisions).where(decisions.c.anomaly_id == anomaly_id))
                .mappings()
                .first()
            )
            before = {k: cur[k] for k in DECISION_FIELDS} if cur else None
            restored = (
                json.loads(target["before"])
                if target["before"]
                else {"status": "new", "outcome": None, "assignee": None, "notes": None}
            )
            now = _now()
            revision = (cur["revision"] if cur else 0) + 1
            values = dict(restored, decided_by=user, decided_at=now, revision=revision)
            conn.execute(decisions.update().where(decisions.c.anomaly_id == anomaly_id).values(**values))
            conn.execute(
                decision_events.insert().values(
                    anomaly_id=anomaly_id,
                    time=now,
                    user=user,
                    action="undo",
                    before=json.dumps(before) if before is not None else None,
                    after=json.dumps(restored),
                    undo_of=target["event_id"],
                    detector_version=target["detector_version"],
                    night=target["night"],
                    countries=target["countries"],
                )
            )
            out = dict(cur or {})
            out.update(values)
            return out

    def events(
        self,
        *,
        anomaly_id: str | None = None,
        countries: Sequence[str] | None = None,
        user: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Audit trail, newest first. ``countries`` (for analysts) keeps events touching any of them."""
        q = sa.select(decision_events).order_by(decision_events.c.event_id.desc())
        if anomaly_id:
            q = q.where(decision_events.c.anomaly_id == anomaly_id)
        if countries is not None:
            if not countries:
                return []
            q = q.where(sa.or_(*[decision_events.c.countries.like(f"%,{c},%") for c in countries]))
        if user:
            q = q.where(decision_events.c.user == user)
        if since:
            q = q.where(decision_events.c.time >= since)
        if until:
            q = q.where(decision_events.c.time < until)
        if limit:
            q = q.limit(limit)
        with self.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(q).mappings()]
        for r in rows:
            r["before"] = json.loads(r["before"]) if r["before"] else None
            r["after"] = json.loads(r["after"]) if r["after"] else None
        return rows

    def reviewed_outcomes(self, outcomes: Sequence[str] = ("confirmed", "dismissed")) -> dict[str, str]:
        """anomaly_id -> outcome, for the detection stage (labels from the analysts)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(decisions.c.anomaly_id, decisions.c.outcome).where(
                    decisions.c.outcome.in_(list(outcomes))
                )
            )
            return {a: o for a, o in rows}


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=15000")
    cur.close()


def _user(r: Any) -> UserRecord:
    return UserRecord(
        username=r["username"],
        display_name=r["display_name"],
        password_hash=r["password_hash"],
        role=r["role"],
        countries=parse_countries(r["countries"]),
        active=bool(r["active"]),
    )


def _check_username(name: str) -> None:
    import re

    if not re.fullmatch(r"[A-Za-z0-9_.@-]{1,150}", name):
        raise StoreError("user names are 1-150 letters, digits, '_', '.', '@' or '-'")


def _validate(changes: dict[str, Any]) -> None:
    if "status" in changes and changes["status"] not in STATUSES:
        raise StoreError(f"status must be one of {', '.join(STATUSES)}")
    if "outcome" in changes and changes["outcome"] not in (None, *OUTCOMES):
        raise StoreError(f"outcome must be one of {', '.join(OUTCOMES)}")
    if changes.get("notes") is not None and len(changes["notes"]) > 20000:
        raise StoreError("notes are limited to 20000 characters")
