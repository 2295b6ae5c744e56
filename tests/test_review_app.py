"""Review app: roles and country visibility, CSRF, escaping, airflow mode, decisions across snapshots."""

from __future__ import annotations

import csv
import io
import re
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # works under any --import-mode
from conftest_review import PASSWORDS, csrf_of, login, make_env
from fastapi.testclient import TestClient

from tradesentry.review.app import create_app
from tradesentry.review.demo_snapshot import HOSTILE_TRADER, write_demo_snapshot
from tradesentry.review.store import Store, StoreError


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return make_env(tmp_path_factory.mktemp("review"))


@pytest.fixture(scope="module")
def app(env):
    return create_app(env.settings)


def client_for(app, user: str | None) -> tuple[TestClient, str]:
    c = TestClient(app)
    token = login(c, user) if user else ""
    return c, token


def all_items(c: TestClient, **params) -> list[dict]:
    r = c.get("/api/anomalies", params={"night": "all", "per_page": 200, **params})
    assert r.status_code == 200, r.text
    return r.json()["items"]


# --- access --------------------------------------------------------------------------------------------


def test_anonymous_is_sent_to_login_and_api_refuses(app):
    c = TestClient(app)
    r = c.get("/", follow_redirects=False)
    assert r.status_code == 303 and "/login" in r.headers["location"]
    for path in ("/api/anomalies", "/export/queue.csv", "/export/audit.csv", "/api/snapshot"):
        assert c.get(path).status_code == 401, path


def test_wrong_password_is_refused(app):
    c = TestClient(app)
    token = csrf_of(c.get("/login").text)
    r = c.post("/login", data={"username": "lead1", "password": "nope-nope-nope", "csrf_token": token})
    assert "/login" in str(r.url) and "Wrong user name or password" in r.text
    assert c.get("/api/anomalies").status_code == 401


def test_analyst_sees_only_own_country_everywhere(app):
    lead, _ = client_for(app, "lead1")
    ana, _ = client_for(app, "ana_xa")
    every = all_items(lead)
    mine = all_items(ana)
    assert mine and len(mine) < len(every)
    assert all("XA" in a["countries"] for a in mine)
    hidden = next(a for a in every if "XA" not in a["countries"])
    # pages, JSON, decisions: an invisible anomaly does not exist for this analyst
    assert ana.get(f"/anomalies/{hidden['anomaly_id']}").status_code == 404
    assert ana.get(f"/api/anomalies/{hidden['anomaly_id']}").status_code == 404
    token = csrf_of(ana.get("/").text)
    r = ana.post(
        f"/api/anomalies/{hidden['anomaly_id']}/decision",
        json={"quick": "confirm"},
        headers={"X-CSRF-Token": token},
    )
    assert r.status_code == 404
    # a filter for another country yields nothing, not the other country's rows
    assert all_items(ana, country="XC") == [] or all(
        "XA" in a["countries"] for a in all_items(ana, country="XC")
    )
    # CSV export holds the same rows as the API
    rows = list(csv.DictReader(io.StringIO(ana.get("/export/queue.csv", params={"night": "all"}).text)))
    assert {r["anomaly_id"] for r in rows} == {a["anomaly_id"] for a in mine}
    # the queue page too
    html = ana.get("/", params={"night": "all", "per_page": 200}).text
    assert set(re.findall(r'data-id="([0-9a-f]{20})"', html)) == {a["anomaly_id"] for a in mine}


def test_only_admins_manage_users(app, env):
    lead, token = client_for(app, "lead1")
    assert token
    assert lead.get("/admin/users").status_code == 403
    r = lead.post("/admin/users", data={"username": "x1", "role": "admin", "csrf_token": token})
    assert r.status_code == 403
    admin, atoken = client_for(app, "admin1")
    assert admin.get("/admin/users").status_code == 200
    r = admin.post(
        "/admin/users",
        data={
            "username": "ana_xc",
            "role": "analyst",
            "countries": "xc",
            "password": "analyst-xc-password",
            "csrf_token": atoken,
        },
    )
    assert r.status_code == 200 and "User created" in r.text
    u = env.store.get_user("ana_xc")
    assert u.countries == ("XC",) and u.password_hash.startswith("scrypt$")
    assert "analyst-xc-password" not in u.password_hash


# --- CSRF ------------------------------------------------------------------------------------------------


def test_every_post_needs_the_csrf_token(app, env):
    c, token = client_for(app, "admin1")
    aid = all_items(c)[0]["anomaly_id"]
    posts = {
        f"/anomalies/{aid}/decision": {"quick": "confirm"},
        f"/anomalies/{aid}/undo": {},
        "/bulk": {"ids": aid, "action": "escalate"},
        "/admin/users": {"username": "evil", "role": "admin", "password": "evil-password-1"},
        "/admin/users/ana_xb": {"role": "admin"},
        "/logout": {},
    }
    for path, data in posts.items():
        assert c.post(path, data=data).status_code == 403, path
        assert c.post(path, data={**data, "csrf_token": "forged"}).status_code == 403, path
    for path in (f"/api/anomalies/{aid}/decision", f"/api/anomalies/{aid}/undo", "/api/bulk"):
        assert c.post(path, json={"quick": "confirm"}).status_code == 403, path
        assert c.post(path, json={"quick": "confirm"}, headers={"X-CSRF-Token": "forged"}).status_code == 403
    assert env.store.decision(aid) is None and env.store.get_user("evil") is None
    assert env.store.get_user("ana_xb").role == "analyst"
    # the same request with the token goes through (the refusals above were the CSRF check)
    assert (
        c.post(f"/anomalies/{aid}/decision", data={"quick": "escalate", "csrf_token": token}).status_code
        == 200
    )
    assert env.store.decision(aid)["status"] == "escalated"
    # the login form is protected too
    fresh = TestClient(app)
    r = fresh.post("/login", data={"username": "lead1", "password": PASSWORDS["lead1"]})
    assert r.status_code == 403
    # every POST route of the app is covered above
    routes = {r.path for r in app.routes if "POST" in getattr(r, "methods", set())}
    assert len(routes) == 10, routes


# --- escaping -------------------------------------------------------------------------------------------


def test_hostile_trader_name_is_escaped(app):
    c, _ = client_for(app, "lead1")
    html = c.get("/", params={"night": "all", "per_page": 200}).text
    assert HOSTILE_TRADER not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    aid = next(a["anomaly_id"] for a in all_items(c) if a["trader_name"] == HOSTILE_TRADER)
    detail = c.get(f"/anomalies/{aid}")
    assert detail.status_code == 200
    assert HOSTILE_TRADER not in detail.text and "&lt;script&gt;" in detail.text
    assert "script-src 'self'" in detail.headers["content-security-policy"]
    # JSON carries it as data; CSV cells that a spreadsheet would evaluate are neutralised
    assert c.get(f"/api/anomalies/{aid}").json()["anomaly"]["trader_name"] == HOSTILE_TRADER


# --- workflow -------------------------------------------------------------------------------------------


def test_decide_undo_audit_and_export(app, env):
    c, token = client_for(app, "ana_xa")
    aid = all_items(c)[0]["anomaly_id"]
    h = {"X-CSRF-Token": token}
    r = c.post(f"/api/anomalies/{aid}/decision", json={"quick": "take"}, headers=h)
    assert r.json()["decision"]["status"] == "in_review" and r.json()["decision"]["assignee"] == "ana_xa"
    assert aid in {a["anomaly_id"] for a in all_items(c, view="mine")}
    r = c.post(f"/api/anomalies/{aid}/decision", json={"status": "closed", "outcome": None}, headers=h)
    assert r.status_code == 400  # closing needs an outcome
    r = c.post(f"/api/anomalies/{aid}/decision", json={"quick": "confirm", "revision": 0}, headers=h)
    assert r.status_code == 409  # stale revision
    c.post(f"/api/anomalies/{aid}/decision", json={"quick": "confirm"}, headers=h)
    assert env.store.decision(aid)["outcome"] == "confirmed"
    r = c.post(f"/api/anomalies/{aid}/undo", headers=h)
    assert r.json()["undone"] and env.store.decision(aid)["outcome"] is None
    assert env.store.decision(aid)["assignee"] == "ana_xa"
    # another analyst cannot undo ana_xa's change; a lead can
    lead, ltoken = client_for(app, "lead1")
    assert lead.post(f"/api/anomalies/{aid}/undo", headers={"X-CSRF-Token": ltoken}).json()["undone"]
    assert env.store.decision(aid)["status"] == "new"
    # bulk
    ids = [a["anomaly_id"] for a in all_items(c)[1:4]]
    r = c.post("/api/bulk", json={"ids": ids, "action": "escalate"}, headers=h)
    assert r.json() == {"updated": 3, "skipped": 0}
    assert {a["anomaly_id"] for a in all_items(c, view="escalated")} >= set(ids)
    # audit trail: append-only in the database, exported with visibility
    evs = env.store.events(anomaly_id=aid)
    assert [e["action"] for e in evs] == ["undo", "undo", "decide", "decide"]
    with pytest.raises(Exception, match="append-only"), env.store.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM decision_events")
    text = c.get("/export/audit.csv").text
    assert aid in text and "ana_xa" in text
    xb, _ = client_for(app, "ana_xb")
    assert aid not in xb.get("/export/audit.csv").text


def test_csv_neutralises_formulas():
    from tradesentry.review.app import _cell

    assert _cell("=HYPERLINK(1)") == "'=HYPERLINK(1)" and _cell("@x") == "'@x" and _cell(-3.5) == -3.5


# --- snapshots ------------------------------------------------------------------------------------------


def test_decisions_survive_a_rerun_and_new_detector_flags_rereview(tmp_path):
    env = make_env(tmp_path)
    app = create_app(env.settings)
    c, token = client_for(app, "lead1")
    before = all_items(c)
    aid = before[0]["anomaly_id"]
    c.post(f"/api/anomalies/{aid}/decision", json={"quick": "dismiss"}, headers={"X-CSRF-Token": token})
    # the same night again (a rerun): same ids, decisions still attached, no re-review
    write_demo_snapshot(env.settings.published, "2026-11-27", run_id="run2")
    after = {a["anomaly_id"]: a for a in all_items(c)}
    assert set(after) == {a["anomaly_id"] for a in before}
    assert after[aid]["outcome"] == "dismissed" and not after[aid]["rereview"]
    # a new detector version: flagged for re-review, shown in the view
    write_demo_snapshot(
        env.settings.published, "2026-11-27", run_id="run3", detector_version="detectors-2.0.0"
    )
    after = {a["anomaly_id"]: a for a in all_items(c)}
    assert after[aid]["rereview"] and after[aid]["outcome"] == "dismissed"
    assert [a["anomaly_id"] for a in all_items(c, view="rereview")] == [aid]
    assert "re-review" in c.get(f"/anomalies/{aid}").text


def test_snapshot_switch_while_serving(tmp_path):
    env = make_env(tmp_path)
    app = create_app(env.settings)
    c, _ = client_for(app, "lead1")
    assert c.get("/api/snapshot").json()["night"] == "2026-11-27"
    errors: list[BaseException] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                r = c.get("/api/anomalies")
                assert r.status_code == 200, r.text
            except BaseException as exc:
                errors.append(exc)
                return

    t = threading.Thread(target=hammer)
    t.start()
    try:
        write_demo_snapshot(env.settings.published, "2026-11-28", run_id="run2")
    finally:
        stop.set()
        t.join()
    assert not errors
    info = c.get("/api/snapshot").json()
    assert info["night"] == "2026-11-28" and info["snapshot"] == "2026-11-28--run2.duckdb"
    assert c.get("/api/anomalies").json()["night"] == "2026-11-28"


def test_no_snapshot_yet(tmp_path):
    from tradesentry.settings import Settings

    settings = Settings(data_dir=tmp_path / "d").resolve()
    app = create_app(settings)
    Store(settings.review_db).create_user("l", role="lead", password_hash=None)
    c = TestClient(app)
    assert c.get("/login").status_code == 200


# --- airflow mode -------------------------------------------------------------------------------------


def test_airflow_mode_refuses_anonymous_with_the_real_airflow_dependency(env):
    app = create_app(env.settings, auth_mode="airflow")  # Airflow's own get_user resolves identity
    c = TestClient(app)
    for path in ("/", "/api/anomalies", "/export/queue.csv", "/anomalies/0123456789abcdef0123", "/audit"):
        assert c.get(path).status_code == 401, path
    assert c.post("/api/bulk", json={}).status_code == 401
    assert c.get("/", headers={"Authorization": "Bearer not-a-jwt"}).status_code in (401, 403)


def test_airflow_mode_maps_identity_through_the_user_table(env):
    async def identity(request):
        from tradesentry.review.auth import NotAuthenticated

        name = request.headers.get("x-test-user")
        if not name:
            raise NotAuthenticated()
        return name

    app = create_app(env.settings, auth_mode="airflow", identity=identity)
    c = TestClient(app)
    assert c.get("/api/anomalies").status_code == 401
    assert c.get("/api/anomalies", headers={"x-test-user": "stranger"}).status_code == 403
    r = c.get("/", headers={"x-test-user": "ana_xb"})
    assert r.status_code == 200 and "ana_xb" in r.text
    token = csrf_of(r.text)
    items = c.get("/api/anomalies", params={"night": "all"}, headers={"x-test-user": "ana_xb"}).json()[
        "items"
    ]
    assert items and all("XB" in a["countries"] for a in items)
    aid = items[0]["anomaly_id"]
    h = {"x-test-user": "ana_xb"}
    assert c.post(f"/api/anomalies/{aid}/decision", json={"quick": "escalate"}, headers=h).status_code == 403
    r = c.post(
        f"/api/anomalies/{aid}/decision", json={"quick": "escalate"}, headers={**h, "X-CSRF-Token": token}
    )
    assert r.status_code == 200
    # the CSRF token is bound to the user: another Airflow user cannot reuse it
    r = c.post(f"/api/anomalies/{aid}/undo", headers={"x-test-user": "lead1", "X-CSRF-Token": token})
    assert r.status_code == 403


def test_mounted_under_a_prefix_links_stay_inside_it(env):
    from fastapi import FastAPI

    async def identity(request):
        return "lead1"

    parent = FastAPI()
    parent.mount("/tradesentry-review", create_app(env.settings, auth_mode="airflow", identity=identity))
    c = TestClient(parent)
    html = c.get("/tradesentry-review/").text
    links = re.findall(r'(?:href|action|src)="([^"]+)"', html)
    assert links and all(x.startswith("/tradesentry-review/") for x in links), links[:5]
    aid = re.search(r'data-id="([0-9a-f]{20})"', html).group(1)
    assert c.get(f"/tradesentry-review/anomalies/{aid}").status_code == 200
    assert c.get("/tradesentry-review/static/app.css").status_code == 200


def test_plugin_mounts_lazily():
    from tradesentry.review.airflow_plugin import URL_PREFIX, LazyReviewApp, TradesentryReviewPlugin

    spec = TradesentryReviewPlugin.fastapi_apps[0]
    assert spec["url_prefix"] == URL_PREFIX and isinstance(spec["app"], LazyReviewApp)
    assert spec["app"]._app is None


# --- store ----------------------------------------------------------------------------------------------


def test_store_users_and_migrations(tmp_path):
    from tradesentry.review.auth import hash_password, verify_password
    from tradesentry.review.store import MIGRATIONS, current_version

    s = Store(f"sqlite:///{tmp_path / 'r.sqlite'}")
    s.upgrade()
    assert s.upgrade() == [] and current_version(s.engine) == MIGRATIONS[-1][0]
    with pytest.raises(StoreError):
        s.create_user("a", role="analyst", password_hash=None)  # analysts need countries
    with pytest.raises(StoreError):
        s.create_user("bad name!", role="lead", password_hash=None)
    h = hash_password("correct horse battery")
    assert verify_password("correct horse battery", h) and not verify_password("wrong", h)
    with pytest.raises(ValueError):
        hash_password("short")


def test_cli_create_user_reads_password_from_stdin(tmp_path, monkeypatch):
    import sys

    from tradesentry.review import cli

    monkeypatch.setenv("TRADESENTRY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setattr(sys, "stdin", io.StringIO("a-long-password-1\n"))
    assert cli.main(["create-user", "boss", "--role", "admin", "--password-stdin"]) == 0
    from tradesentry.settings import get_settings

    u = Store(get_settings().review_db).get_user("boss")
    assert u.role == "admin" and u.password_hash.startswith("scrypt$")


@pytest.mark.parametrize("kind", ["trader_pattern", "route_pattern"])
def test_pattern_anomaly_detail_lists_its_declarations(tmp_path, kind):
    """A pattern-level anomaly (one trader's, or one route's, declarations over a window) shows all
    its declarations and no unrelated consignment as its mirror."""
    import duckdb

    from tradesentry.publish import current_snapshot

    env = make_env(tmp_path)
    snap = current_snapshot(env.settings.published)
    assert snap is not None
    con = duckdb.connect(str(snap))
    try:
        country, first = con.execute(
            "select reporter_country, anomaly_id from anomalies where not is_audit_pick "
            "order by anomaly_id limit 1"
        ).fetchone()
        keys = [
            k
            for (k,) in con.execute(
                "select declaration_key from declarations where reporter_country = ? "
                "order by declaration_key limit 4",
                [country],
            ).fetchall()
        ]
        assert len(keys) >= 2
        route = kind == "route_pattern"
        subject = "route XA imports from BD (origin BD), 3 traders" if route else "trader XA|T1"
        con.execute(
            "insert into anomalies select * replace ('ffffffffffffffffffff' as anomaly_id, "
            "? as kind, 'pattern' as level, ?::varchar[] as declaration_keys, "
            "? as primary_key, [? || ': 4 imports of HS 610910 over 30 nights, median 38% below']::varchar[] "
            "as reasons, "
            "case when ? then null else trader_id end as trader_id, "
            "case when ? then null else trader_name end as trader_name, "
            "case when ? then 'BD' else partner_country end as partner_country) "
            "from anomalies where anomaly_id = ?",
            [kind, keys, keys[0], f"Value pattern: {subject}", route, route, route, first],
        )
        con.execute(
            "insert into anomaly_declarations select 'ffffffffffffffffffff', k, 'subject' "
            "from unnest(?::varchar[]) t(k)",
            [keys],
        )
    finally:
        con.close()
    c, _ = client_for(create_app(env.settings), "lead1")
    r = c.get("/anomalies/ffffffffffffffffffff")
    assert r.status_code == 200, r.text
    assert (
        "Route pattern" if route else "Trader pattern"
    ) in r.text and "Declarations in the pattern" in r.text
    if route:
        assert "route from BD" in r.text and "None" not in r.text.split('id="pattern-declarations"')[1][:400]
    for k in keys:
        assert k in r.text
    api = c.get("/api/anomalies/ffffffffffffffffffff").json()
    assert sorted(d["declaration_key"] for d in api["pattern_declarations"]) == sorted(keys)
    assert api["counterpart"] is None or api["counterpart"]["declaration_key"] != keys[1]
