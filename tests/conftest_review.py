"""Helpers for the review app tests (imported by tests/test_review_*.py; not a conftest plugin)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from tradesentry.review.auth import hash_password
from tradesentry.review.demo_snapshot import write_demo_snapshot
from tradesentry.review.store import Store
from tradesentry.settings import Settings

NIGHT = "2026-11-27"
PASSWORDS = {
    "lead1": "lead-password-1",
    "ana_xa": "analyst-xa-password",
    "ana_xb": "analyst-xb-password",
    "admin1": "admin-password-1",
}


@dataclass
class ReviewEnv:
    settings: Settings
    store: Store


def make_env(tmp_path: Path, *, night: str = NIGHT, n_anomalies: int = 36) -> ReviewEnv:
    settings = Settings(data_dir=tmp_path / "data").resolve()
    write_demo_snapshot(settings.published, night, run_id="run1", n_anomalies=n_anomalies)
    store = Store(settings.review_db)
    store.upgrade()
    store.create_user(
        "lead1", role="lead", password_hash=hash_password(PASSWORDS["lead1"]), display_name="Lead One"
    )
    store.create_user(
        "ana_xa",
        role="analyst",
        countries="XA",
        password_hash=hash_password(PASSWORDS["ana_xa"]),
        display_name="Ana (XA)",
    )
    store.create_user(
        "ana_xb", role="analyst", countries="XB", password_hash=hash_password(PASSWORDS["ana_xb"])
    )
    store.create_user("admin1", role="admin", password_hash=hash_password(PASSWORDS["admin1"]))
    return ReviewEnv(settings, store)


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf-token" content="([^"]*)"', html) or re.search(
        r'name="csrf_token" value="([^"]+)"', html
    )
    assert m, "no CSRF token in the page"
    return m.group(1)


def login(client, username: str, password: str | None = None) -> str:
    """Sign in through the form; returns the session's CSRF token."""
    r = client.get("/login")
    token = csrf_of(r.text)
    r = client.post(
        "/login",
        data={
            "username": username,
            "password": password or PASSWORDS[username],
            "csrf_token": token,
            "next": "/",
        },
    )
    assert r.status_code == 200 and "/login" not in str(r.url), f"login of {username} failed"
    return csrf_of(r.text)
