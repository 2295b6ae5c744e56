"""Passwords, sessions (signed cookie), CSRF tokens and who the current user is.

Local mode: users sign in with the app's own login form. Airflow mode (plugin): Airflow's auth manager
identifies the user (its JWT cookie or bearer token); the app's user table maps that name to a role and
countries; anonymous or unmapped users are refused. Both modes keep a signed session cookie that carries
the CSRF token; every POST must echo it in the ``csrf_token`` form field or the ``X-CSRF-Token`` header.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request

from .store import Store, UserRecord

SESSION_COOKIE = "ts_review_session"
SESSION_MAX_AGE = 12 * 3600
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"

# scrypt parameters: about 16 MB and 50 ms per hash
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1


def hash_password(password: str) -> str:
    if len(password) < 10:
        raise ValueError("passwords need at least 10 characters")
    salt = secrets.token_bytes(16)
    h = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P, dklen=32)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${salt.hex()}${h.hex()}"


def verify_password(password: str, stored: str | None) -> bool:
    if not stored:
        return False
    try:
        algo, n, r, p, salt, digest = stored.split("$")
        if algo != "scrypt":
            return False
        h = hashlib.scrypt(
            password.encode("utf-8"),
            salt=bytes.fromhex(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(bytes.fromhex(digest)),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(h.hex(), digest)


_DUMMY_HASH = None


def dummy_verify(password: str) -> None:
    """Spend the same time as a real check, so unknown user names cannot be told apart by timing."""
    global _DUMMY_HASH
    if _DUMMY_HASH is None:
        _DUMMY_HASH = hash_password("not-a-real-password-" + secrets.token_hex(8))
    verify_password(password, _DUMMY_HASH)


@dataclass(frozen=True)
class CurrentUser:
    username: str
    display_name: str
    role: str
    countries: tuple[str, ...]

    @property
    def sees_all(self) -> bool:
        return self.role in ("lead", "admin")

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def may_undo_others(self) -> bool:
        return self.role in ("lead", "admin")

    def can_see(self, countries: Any) -> bool:
        if self.sees_all:
            return True
        return bool(set(self.countries) & {str(c).upper() for c in (countries or [])})

    @property
    def visible_countries(self) -> tuple[str, ...] | None:
        """None: all countries; else the user's countries."""
        return None if self.sees_all else self.countries

    @classmethod
    def from_record(cls, u: UserRecord) -> CurrentUser:
        return cls(
            username=u.username, display_name=u.display_name or u.username, role=u.role, countries=u.countries
        )


class NotAuthenticated(Exception):
    """No (valid) identity: local mode redirects to the login page, APIs answer 401."""

    def __init__(self, detail: str = "Not authenticated") -> None:
        super().__init__(detail)
        self.detail = detail


class Forbidden(Exception):
    def __init__(self, detail: str = "Forbidden") -> None:
        super().__init__(detail)
        self.detail = detail


class Sessions:
    """The signed session cookie: {"u": user or None, "csrf": token, "t": issued}."""

    def __init__(self, secret: str, *, secure: bool = False) -> None:
        self.ser = URLSafeTimedSerializer(secret, salt="tradesentry-review-session")
        self.secure = secure

    def load(self, request: Request) -> dict[str, Any]:
        raw = request.cookies.get(SESSION_COOKIE)
        if not raw:
            return {}
        try:
            data = self.ser.loads(raw, max_age=SESSION_MAX_AGE)
        except BadSignature:
            return {}
        return data if isinstance(data, dict) else {}

    def dump(self, data: dict[str, Any]) -> str:
        return self.ser.dumps(data)

    def new(self, username: str | None) -> dict[str, Any]:
        return {"u": username, "csrf": secrets.token_urlsafe(32), "t": int(time.time())}


class LoginThrottle:
    """At most 5 failed logins per user name per 5 minutes (per process)."""

    def __init__(self, limit: int = 5, window: float = 300.0) -> None:
        self.limit, self.window = limit, window
        self._fails: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def blocked(self, name: str) -> bool:
        now = time.monotonic()
        with self._lock:
            fails = [t for t in self._fails.get(name.lower(), []) if now - t < self.window]
            self._fails[name.lower()] = fails
            return len(fails) >= self.limit

    def fail(self, name: str) -> None:
        with self._lock:
            self._fails.setdefault(name.lower(), []).append(time.monotonic())

    def reset(self, name: str) -> None:
        with self._lock:
            self._fails.pop(name.lower(), None)


AirflowIdentity = Callable[[Request], Awaitable[str]]


async def airflow_identity(request: Request) -> str:
    """The user name Airflow's auth manager gives this request; raises NotAuthenticated if none."""
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi import HTTPException
    from fastapi.security import HTTPBearer

    try:
        creds = await HTTPBearer(auto_error=False)(request)
        user = await get_user(request, None, creds)
    except HTTPException as exc:
        raise NotAuthenticated(str(exc.detail)) from exc
    except Exception as exc:  # e.g. auth manager not initialised: refuse, never let the request through
        import logging

        logging.getLogger(__name__).exception("Airflow could not identify the request")
        raise NotAuthenticated("Airflow could not identify you") from exc
    name = user.get_name() if user is not None else None
    if not name:
        raise NotAuthenticated()
    return str(name)


def resolve_user(store: Store, username: str | None) -> CurrentUser:
    if not username:
        raise NotAuthenticated()
    rec = store.get_user(username)
    if rec is None or not rec.active:
        raise Forbidden(f"{username} has no access to the review app: ask an admin to add you")
    return CurrentUser.from_record(rec)


def check_csrf(session: dict[str, Any], supplied: str | None) -> bool:
    expected = session.get("csrf")
    return bool(expected and supplied and hmac.compare_digest(str(expected), str(supplied)))
