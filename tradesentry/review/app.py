"""The review app: ``create_app(settings, auth_mode='local'|'airflow')``.

Pages (server-rendered Jinja2, autoescaped), a JSON API under /api and CSV exports under /export, all
reading through ``queries.Review`` so country visibility is the same everywhere.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, select_autoescape

from . import charts
from .auth import (
    CSRF_FIELD,
    CSRF_HEADER,
    SESSION_COOKIE,
    SESSION_MAX_AGE,
    AirflowIdentity,
    CurrentUser,
    Forbidden,
    LoginThrottle,
    NotAuthenticated,
    Sessions,
    airflow_identity,
    check_csrf,
    dummy_verify,
    hash_password,
    resolve_user,
    verify_password,
)
from .queries import HARMONISED_FIELDS, PER_PAGE, SORTS, VIEWS, NotFound, QueueFilters, Review
from .snapshot import NoSnapshotError, SnapshotReader
from .store import OUTCOMES, ROLES, STATUSES, ConflictError, Store, StoreError

HERE = Path(__file__).parent
ANOMALY_ID = re.compile(r"^[0-9a-fA-F]{8,64}$")
STATUS_LABELS = {"new": "New", "in_review": "In review", "escalated": "Escalated", "closed": "Closed"}
OUTCOME_LABELS = {
    "confirmed": "Confirmed",
    "dismissed": "Dismissed",
    "data_error": "Data error",
    "inconclusive": "Inconclusive",
}
QUICK_ACTIONS: dict[str, dict[str, str | None]] = {
    "confirm": {"outcome": "confirmed", "status": "closed"},
    "dismiss": {"outcome": "dismissed", "status": "closed"},
    "data_error": {"outcome": "data_error", "status": "closed"},
    "inconclusive": {"outcome": "inconclusive", "status": "closed"},
    "escalate": {"status": "escalated"},
    "in_review": {"status": "in_review"},
    "reopen": {"status": "in_review", "outcome": None},
}
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; object-src 'none'; frame-ancestors 'self'"
)


class CSRFError(Exception):
    pass


@dataclass
class Ctx:
    user: CurrentUser
    session: dict[str, Any]
    set_cookie: bool = False

    @property
    def csrf(self) -> str:
        return str(self.session.get("csrf", ""))


class ReviewState:
    def __init__(
        self,
        settings: Any,
        auth_mode: str,
        store: Store,
        identity: AirflowIdentity | None,
        secure_cookies: bool,
    ) -> None:
        self.settings = settings
        self.auth_mode = auth_mode
        self.store = store
        self.snapshot = SnapshotReader(settings.published)
        self.review = Review(self.snapshot, store)
        self.sessions = Sessions(store.secret_key(), secure=secure_cookies)
        self.identity = identity or airflow_identity
        self.throttle = LoginThrottle()


async def get_ctx(request: Request) -> Ctx:
    """The signed-in user (local: session cookie; airflow: Airflow's identity mapped through users)."""
    state: ReviewState = request.app.state.review
    sess = state.sessions.load(request)
    if state.auth_mode == "airflow":
        name = await state.identity(request)
        user = resolve_user(state.store, name)
        if sess.get("u") != name or not sess.get("csrf"):
            return Ctx(user, state.sessions.new(name), set_cookie=True)
        return Ctx(user, sess)
    session_user = sess.get("u")
    if not session_user:
        raise NotAuthenticated()
    return Ctx(resolve_user(state.store, session_user), sess)


CtxDep = Annotated[Ctx, Depends(get_ctx)]


async def post_ctx(request: Request, ctx: CtxDep) -> Ctx:
    """get_ctx plus the CSRF check: header X-CSRF-Token or form field csrf_token."""
    supplied = request.headers.get(CSRF_HEADER)
    if not supplied and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()
        supplied = str(form.get(CSRF_FIELD) or "")
    if not check_csrf(ctx.session, supplied):
        raise CSRFError()
    return ctx


PostCtxDep = Annotated[Ctx, Depends(post_ctx)]


def admin_ctx(ctx: CtxDep) -> Ctx:
    if not ctx.user.is_admin:
        raise Forbidden("only admins manage users")
    return ctx


def admin_post_ctx(ctx: PostCtxDep) -> Ctx:
    if not ctx.user.is_admin:
        raise Forbidden("only admins manage users")
    return ctx


AdminCtxDep = Annotated[Ctx, Depends(admin_ctx)]
AdminPostCtxDep = Annotated[Ctx, Depends(admin_post_ctx)]


def create_app(
    settings: Any = None,
    auth_mode: str = "local",
    *,
    store: Store | None = None,
    identity: AirflowIdentity | None = None,
    secure_cookies: bool = False,
) -> FastAPI:
    """Build the app. ``auth_mode='airflow'`` takes the identity from Airflow's auth manager
    (``identity`` overrides the resolver, for tests) and has no login form of its own."""
    if auth_mode not in ("local", "airflow"):
        raise ValueError("auth_mode must be 'local' or 'airflow'")
    if settings is None:
        from tradesentry.settings import get_settings

        settings = get_settings()
    store = store or Store(settings.review_db)
    store.upgrade()
    state = ReviewState(settings, auth_mode, store, identity, secure_cookies)

    app = FastAPI(title="Tradesentry review", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.review = state
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = charts.fmt_num
    env.filters["kind"] = kind_label
    env.filters["version"] = short_version
    env.filters["pct"] = lambda v: "\u2013" if v is None else f"{float(v):.0%}"
    env.filters["dtfmt"] = lambda v: (
        "\u2013" if v is None else (v.strftime("%Y-%m-%d %H:%M") if isinstance(v, dt.datetime) else str(v))
    )
    env.globals.update(
        STATUSES=STATUSES,
        OUTCOMES=OUTCOMES,
        ROLES=ROLES,
        STATUS_LABELS=STATUS_LABELS,
        OUTCOME_LABELS=OUTCOME_LABELS,
        VIEWS=VIEWS,
        PER_PAGE=PER_PAGE,
        SORTS=SORTS,
        HARMONISED_FIELDS=HARMONISED_FIELDS,
        AUTH_MODE=auth_mode,
    )
    templates = Jinja2Templates(env=env)

    # --- plumbing ----------------------------------------------------------------------------------

    def url(request: Request, path: str, params: dict | str | None = None) -> str:
        root = request.scope.get("root_path", "") or ""
        q = ""
        if params:
            q = "?" + (params if isinstance(params, str) else urlencode(params))
        return root + path + q

    def cookie_path(request: Request) -> str:
        return (request.scope.get("root_path") or "") + "/"

    def set_session(request: Request, resp: Response, data: dict[str, Any]) -> None:
        resp.set_cookie(
            SESSION_COOKIE,
            state.sessions.dump(data),
            max_age=SESSION_MAX_AGE,
            httponly=True,
            samesite="strict" if auth_mode == "local" else "lax",
            secure=state.sessions.secure,
            path=cookie_path(request),
        )

    def render(
        request: Request, ctx: Ctx | None, name: str, status_code: int = 200, **kw: Any
    ) -> HTMLResponse:
        info = None
        try:
            info = state.review.info() if ctx is not None else None
        except NoSnapshotError:
            info = None
        kw.setdefault("info", info)
        resp = templates.TemplateResponse(
            request,
            name,
            {
                "ctx": ctx,
                "user": ctx.user if ctx else None,
                "csrf": ctx.csrf if ctx else kw.get("csrf", ""),
                "u": lambda p, params=None: url(request, p, params),
                **kw,
            },
            status_code=status_code,
        )
        if ctx is not None and ctx.set_cookie:
            set_session(request, resp, ctx.session)
        return resp

    def wants_json(request: Request) -> bool:
        p = (
            request.url.path[len(request.scope.get("root_path", "") or "") :]
            if request.url.path.startswith(request.scope.get("root_path", "") or "")
            else request.url.path
        )
        return p.startswith(("/api/", "/export/")) or "application/json" in request.headers.get("accept", "")

    def error(request: Request, status: int, title: str, detail: str) -> Response:
        if wants_json(request):
            return JSONResponse({"detail": detail}, status_code=status)
        return render(request, None, "error.html", status_code=status, title=title, detail=detail, info=None)

    @app.exception_handler(NotAuthenticated)
    async def _not_auth(request: Request, exc: NotAuthenticated) -> Response:
        if auth_mode == "local" and not wants_json(request) and request.method == "GET":
            path = request.url.path
            root = request.scope.get("root_path", "") or ""
            nxt = path[len(root) :] if path.startswith(root) else path
            if request.url.query:
                nxt += "?" + request.url.query
            return RedirectResponse(url(request, "/login", {"next": nxt}), status_code=303)
        return error(
            request, 401, "Sign in needed", exc.detail if auth_mode == "airflow" else "Not authenticated"
        )

    @app.exception_handler(Forbidden)
    async def _forbidden(request: Request, exc: Forbidden) -> Response:
        return error(request, 403, "Not allowed", exc.detail)

    @app.exception_handler(CSRFError)
    async def _csrf(request: Request, exc: CSRFError) -> Response:
        return error(
            request,
            403,
            "Form expired",
            "The form's security token is missing or stale: reload the page and try again.",
        )

    @app.exception_handler(NotFound)
    async def _nf(request: Request, exc: NotFound) -> Response:
        return error(
            request,
            404,
            "Not found",
            "No such anomaly in the current snapshot, or not one of your countries.",
        )

    @app.exception_handler(NoSnapshotError)
    async def _nosnap(request: Request, exc: NoSnapshotError) -> Response:
        return error(
            request,
            503,
            "No snapshot published yet",
            "The nightly run has not published a snapshot yet. Try again after the next run.",
        )

    @app.exception_handler(ConflictError)
    async def _conflict(request: Request, exc: ConflictError) -> Response:
        return error(request, 409, "Changed meanwhile", str(exc))

    @app.exception_handler(StoreError)
    async def _storeerr(request: Request, exc: StoreError) -> Response:
        return error(request, 400, "Not saved", str(exc))

    @app.middleware("http")
    async def _headers(request: Request, call_next: Any) -> Response:
        resp = await call_next(request)
        resp.headers.setdefault("Content-Security-Policy", CSP)
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Referrer-Policy", "same-origin")
        if not request.url.path.startswith((request.scope.get("root_path", "") or "") + "/static"):
            resp.headers.setdefault("Cache-Control", "no-store")
        return resp

    def check_id(anomaly_id: str) -> str:
        if not ANOMALY_ID.match(anomaly_id):
            raise NotFound(anomaly_id)
        return anomaly_id.lower()

    # --- login ---------------------------------------------------------------------------------------

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict:
        return {"ok": True}

    def safe_next(nxt: str | None) -> str:
        if not nxt or not nxt.startswith("/") or nxt.startswith("//") or "\\" in nxt:
            return "/"
        return nxt

    @app.get("/login", response_class=HTMLResponse)
    def login_page(request: Request, next: str = "/", failed: int = 0) -> Response:
        if auth_mode == "airflow":
            return RedirectResponse(url(request, "/"), status_code=303)
        sess = state.sessions.load(request)
        if sess.get("u") and state.store.get_user(sess["u"]):
            return RedirectResponse(url(request, safe_next(next)), status_code=303)
        pre = state.sessions.new(None)
        resp = render(
            request,
            None,
            "login.html",
            csrf=pre["csrf"],
            next=safe_next(next),
            failed=failed,
            no_users=state.store.count_users() == 0,
        )
        set_session(request, resp, pre)
        return resp

    @app.post("/login")
    async def login(request: Request) -> Response:
        if auth_mode == "airflow":
            raise Forbidden("sign in through Airflow")
        form = await request.form()
        pre = state.sessions.load(request)
        if not check_csrf(pre, str(form.get(CSRF_FIELD) or "")):
            raise CSRFError()
        name = str(form.get("username") or "").strip()[:150]
        password = str(form.get("password") or "")
        nxt = safe_next(str(form.get("next") or "/"))
        if state.throttle.blocked(name):
            return RedirectResponse(url(request, "/login", {"next": nxt, "failed": 2}), status_code=303)
        rec = state.store.get_user(name) if name else None
        ok = False
        if rec is None or not rec.password_hash:
            dummy_verify(password)
        else:
            ok = rec.active and verify_password(password, rec.password_hash)
        if not ok:
            state.throttle.fail(name)
            return RedirectResponse(url(request, "/login", {"next": nxt, "failed": 1}), status_code=303)
        assert rec is not None  # ok is only True for an existing user whose password matched
        state.throttle.reset(name)
        resp = RedirectResponse(url(request, nxt), status_code=303)
        set_session(request, resp, state.sessions.new(rec.username))  # new token: no session fixation
        return resp

    @app.post("/logout")
    def logout(request: Request, ctx: PostCtxDep) -> Response:
        resp = RedirectResponse(url(request, "/login" if auth_mode == "local" else "/"), status_code=303)
        resp.delete_cookie(SESSION_COOKIE, path=cookie_path(request))
        return resp

    # --- queue ---------------------------------------------------------------------------------------

    def assignable_users(anomaly_countries: Any = None) -> list[str]:
        out = []
        for u in state.store.list_users():
            if not u.active:
                continue
            cu = CurrentUser.from_record(u)
            if anomaly_countries is None or cu.can_see(anomaly_countries):
                out.append(u.username)
        return out

    def feed_status(user: CurrentUser) -> list[dict]:
        """The run summary's per-feed lines the user may see (country column), for the queue's header."""
        out = []
        for r in state.review.run_summary():
            country = r.get("country") or r.get("reporter_country")
            if not user.sees_all and country not in user.countries:
                continue
            out.append(
                {
                    "feed": r.get("feed") or country,
                    "country": country,
                    "status": r.get("status") or "?",
                    "landed": r.get("landed"),
                    "quarantined": r.get("quarantined"),
                    "held": r.get("held"),
                    "error": r.get("error"),
                }
            )
        return out

    @app.get("/", response_class=HTMLResponse)
    def queue_page(request: Request, ctx: CtxDep) -> Response:
        f = QueueFilters.parse(request.query_params)
        q = state.review.queue(ctx.user, f)
        return render(
            request,
            ctx,
            "queue.html",
            f=f,
            q=q,
            facets=state.review.facets(ctx.user),
            users=assignable_users(),
            flash=_flash(request),
            feeds=feed_status(ctx.user),
        )

    @app.get("/api/anomalies")
    def api_queue(request: Request, ctx: CtxDep) -> Response:
        f = QueueFilters.parse(request.query_params)
        q = state.review.queue(ctx.user, f)
        return JSONResponse(
            jsonable_encoder(
                {
                    "total": q["total"],
                    "page": q["page"],
                    "pages": q["pages"],
                    "night": q["night"],
                    "counts": q["counts"],
                    "views": q["views"],
                    "items": [_api_item(a) for a in q["rows"]],
                }
            )
        )

    @app.get("/export/queue.csv")
    def export_queue(request: Request, ctx: CtxDep) -> Response:
        f = QueueFilters.parse(request.query_params)
        items, meta = state.review.queue_all(ctx.user, f)
        cols = [
            "anomaly_id",
            "night",
            "kind",
            "level",
            "reporter_country",
            "partner_country",
            "countries",
            "flow",
            "hs6",
            "trader_id",
            "trader_name",
            "score",
            "rank",
            "value_at_stake_usd",
            "unit_value_usd_per_kg",
            "peer_median_usd_per_kg",
            "is_audit_pick",
            "detector_version",
            "status",
            "outcome",
            "assignee",
            "needs_rereview",
            "decided_by",
            "decided_at",
            "notes",
            "reasons",
        ]
        out = io.StringIO()
        w = csv.writer(out)
        w.writerow(cols)
        for a in items:
            d = a.get("decision") or {}
            w.writerow(
                [
                    _cell(v)
                    for v in [
                        a["anomaly_id"],
                        a["night"],
                        a["kind"],
                        a["level"],
                        a["reporter_country"],
                        a["partner_country"],
                        " ".join(a["countries"] or []),
                        a["flow"],
                        a["hs6"],
                        a["trader_id"],
                        a["trader_name"],
                        a["score"],
                        a["rank"],
                        a["value_at_stake_usd"],
                        a["unit_value_usd_per_kg"],
                        a["peer_median_usd_per_kg"],
                        a["is_audit_pick"],
                        a["detector_version"],
                        a["status"],
                        a["outcome"],
                        a["assignee"],
                        a["rereview"],
                        d.get("decided_by"),
                        d.get("decided_at"),
                        d.get("notes"),
                        " | ".join(a["reasons"] or []),
                    ]
                ]
            )
        night = meta["night"].isoformat() if meta["night"] else "all-nights"
        return _csv_response(out.getvalue(), f"tradesentry-queue-{night}.csv")

    # --- detail --------------------------------------------------------------------------------------

    @app.get("/anomalies/{anomaly_id}", response_class=HTMLResponse)
    def detail_page(request: Request, anomaly_id: str, ctx: CtxDep) -> Response:
        anomaly_id = check_id(anomaly_id)
        d = state.review.detail(ctx.user, anomaly_id)
        back = request.query_params.get("back", "")
        f = QueueFilters.parse(_parse_qs(back))
        ids, _ = state.review.queue_all(ctx.user, f)
        order = [a["anomaly_id"] for a in ids]
        pos = order.index(anomaly_id) if anomaly_id in order else None
        nav = {
            "pos": pos,
            "total": len(order),
            "prev": order[pos - 1] if pos is not None and pos > 0 else None,
            "next": order[pos + 1] if pos is not None and pos + 1 < len(order) else None,
            "back": back,
        }
        return render(
            request,
            ctx,
            "detail.html",
            d=d,
            a=d["a"],
            nav=nav,
            users=assignable_users(d["a"]["countries"]),
            flash=_flash(request),
        )

    @app.get("/api/anomalies/{anomaly_id}")
    def api_detail(anomaly_id: str, ctx: CtxDep) -> Response:
        d = state.review.detail(ctx.user, check_id(anomaly_id))
        d.pop("peer_chart", None)
        d.pop("history_chart", None)
        d["a"] = _api_item(d["a"], full=True)
        d["same_trader"] = [_api_item(x) for x in d["same_trader"]]
        d["same_consignment"] = [_api_item(x) for x in d["same_consignment"]]
        d["anomaly"] = d.pop("a")
        return JSONResponse(jsonable_encoder(d))

    # --- decisions -----------------------------------------------------------------------------------

    def apply(
        ctx: Ctx,
        anomaly_id: str,
        changes: dict[str, Any],
        *,
        action: str = "decide",
        expected_revision: int | None = None,
    ) -> dict:
        a = state.review.anomaly(ctx.user, anomaly_id)  # NotFound when not visible
        if "assignee" in changes:
            who = (changes["assignee"] or "").strip() or None
            if who == "__me__":
                who = ctx.user.username
            if who is not None and who not in assignable_users(a["countries"]):
                raise StoreError(
                    f"{who} cannot be assigned: unknown, inactive, or without access to these countries"
                )
            changes["assignee"] = who
        if "notes" in changes:
            changes["notes"] = (changes["notes"] or "").strip() or None
        if changes.get("outcome") == "":
            changes["outcome"] = None
        # taking a new anomaly into review
        if changes.get("assignee") and a["status"] == "new" and "status" not in changes:
            changes["status"] = "in_review"
        return state.store.decide(
            anomaly_id,
            user=ctx.user.username,
            changes=changes,
            detector_version=a.get("detector_version"),
            night=a.get("night"),
            countries=a.get("countries") or [],
            action=action,
            expected_revision=expected_revision,
        )

    def form_changes(form: Any) -> dict[str, Any]:
        quick = str(form.get("quick") or "")
        if quick == "take":
            return {"assignee": "__me__"}
        if quick in QUICK_ACTIONS:
            return dict(QUICK_ACTIONS[quick])
        changes: dict[str, Any] = {}
        for k in ("status", "outcome", "assignee", "notes"):
            if k in form:
                changes[k] = str(form.get(k) or "")
        return changes

    @app.post("/anomalies/{anomaly_id}/decision")
    async def decide_form(request: Request, anomaly_id: str, ctx: PostCtxDep) -> Response:
        anomaly_id = check_id(anomaly_id)
        form = await request.form()
        rev = str(form.get("revision") or "")
        apply(ctx, anomaly_id, form_changes(form), expected_revision=int(rev) if rev.isdigit() else None)
        back = str(form.get("back") or "")
        nxt = str(form.get("goto") or "")
        target = check_id(nxt) if nxt and str(form.get("advance") or "") == "1" else anomaly_id
        return RedirectResponse(
            url(
                request,
                f"/anomalies/{target}",
                {"back": back, "flash": "saved"} if back else {"flash": "saved"},
            ),
            status_code=303,
        )

    @app.post("/anomalies/{anomaly_id}/undo")
    async def undo_form(request: Request, anomaly_id: str, ctx: PostCtxDep) -> Response:
        anomaly_id = check_id(anomaly_id)
        state.review.anomaly(ctx.user, anomaly_id)
        form = await request.form()
        r = state.store.undo(anomaly_id, user=ctx.user.username, may_undo_others=ctx.user.may_undo_others)
        back = str(form.get("back") or "")
        params = {"flash": "undone" if r else "nothing"}
        if back:
            params["back"] = back
        return RedirectResponse(url(request, f"/anomalies/{anomaly_id}", params), status_code=303)

    @app.post("/api/anomalies/{anomaly_id}/decision")
    async def api_decide(request: Request, anomaly_id: str, ctx: PostCtxDep) -> Response:
        anomaly_id = check_id(anomaly_id)
        body = await request.json()
        if not isinstance(body, dict):
            raise StoreError("a JSON object is expected")
        if body.get("quick"):
            changes = form_changes({"quick": body["quick"]})
        else:
            changes = {k: body[k] for k in ("status", "outcome", "assignee", "notes") if k in body}
        rev = body.get("revision")
        d = apply(ctx, anomaly_id, changes, expected_revision=int(rev) if isinstance(rev, int) else None)
        return JSONResponse(jsonable_encoder({"decision": d}))

    @app.post("/api/anomalies/{anomaly_id}/undo")
    def api_undo(anomaly_id: str, ctx: PostCtxDep) -> Response:
        anomaly_id = check_id(anomaly_id)
        state.review.anomaly(ctx.user, anomaly_id)
        r = state.store.undo(anomaly_id, user=ctx.user.username, may_undo_others=ctx.user.may_undo_others)
        return JSONResponse(jsonable_encoder({"undone": r is not None, "decision": r}))

    def bulk(ctx: Ctx, ids: list[str], action: str, value: str) -> tuple[int, int]:
        changes: dict[str, Any]
        if action == "assign":
            changes = {"assignee": value or None}
        elif action == "assign_me":
            changes = {"assignee": "__me__"}
        elif action == "status":
            changes = {"status": value}
        elif action in QUICK_ACTIONS:
            changes = dict(QUICK_ACTIONS[action])
        else:
            raise StoreError(f"unknown bulk action {action!r}")
        done = skipped = 0
        for i in dict.fromkeys(ids):
            if not ANOMALY_ID.match(i):
                skipped += 1
                continue
            try:
                apply(ctx, i.lower(), dict(changes), action="bulk")
                done += 1
            except (NotFound, StoreError):
                skipped += 1
        return done, skipped

    @app.post("/bulk")
    async def bulk_form(request: Request, ctx: PostCtxDep) -> Response:
        form = await request.form()
        ids = [str(x) for x in form.getlist("ids")][:1000]
        done, skipped = bulk(ctx, ids, str(form.get("action") or ""), str(form.get("value") or ""))
        back = str(form.get("back") or "")
        params = _parse_qs(back)
        params.update({"flash": "bulk", "n": str(done), "skipped": str(skipped)})
        return RedirectResponse(url(request, "/", params), status_code=303)

    @app.post("/api/bulk")
    async def api_bulk(request: Request, ctx: PostCtxDep) -> Response:
        body = await request.json()
        ids = [str(x) for x in (body.get("ids") or [])][:1000]
        done, skipped = bulk(ctx, ids, str(body.get("action") or ""), str(body.get("value") or ""))
        return JSONResponse({"updated": done, "skipped": skipped})

    # --- audit trail ---------------------------------------------------------------------------------

    def audit_events(ctx: Ctx, request: Request, limit: int | None) -> list[dict]:
        qp = request.query_params
        since = until = None
        try:
            if qp.get("since"):
                since = dt.datetime.combine(dt.date.fromisoformat(qp["since"]), dt.time(), tzinfo=dt.UTC)
            if qp.get("until"):
                until = dt.datetime.combine(
                    dt.date.fromisoformat(qp["until"]) + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC
                )
        except ValueError:
            pass
        aid = qp.get("anomaly_id") or None
        if aid and not ANOMALY_ID.match(aid):
            aid = None
        return state.store.events(
            anomaly_id=aid,
            countries=ctx.user.visible_countries,
            user=(qp.get("user") or None),
            since=since,
            until=until,
            limit=limit,
        )

    @app.get("/audit", response_class=HTMLResponse)
    def audit_page(request: Request, ctx: CtxDep) -> Response:
        evs = audit_events(ctx, request, 500)
        return render(
            request,
            ctx,
            "audit.html",
            events=evs,
            qp=dict(request.query_params),
            export_qs=urlencode(
                {
                    k: v
                    for k, v in request.query_params.items()
                    if k in ("since", "until", "user", "anomaly_id")
                }
            ),
        )

    @app.get("/export/audit.csv")
    def export_audit(request: Request, ctx: CtxDep) -> Response:
        evs = audit_events(ctx, request, None)
        out = io.StringIO()
        w = csv.writer(out)
        w.writerow(
            [
                "event_id",
                "time",
                "user",
                "action",
                "anomaly_id",
                "night",
                "countries",
                "detector_version",
                "undo_of",
                "status_before",
                "status_after",
                "outcome_before",
                "outcome_after",
                "assignee_before",
                "assignee_after",
                "notes_after",
            ]
        )
        for e in evs:
            b, a = e["before"] or {}, e["after"] or {}
            w.writerow(
                [
                    _cell(v)
                    for v in [
                        e["event_id"],
                        e["time"],
                        e["user"],
                        e["action"],
                        e["anomaly_id"],
                        e["night"],
                        (e["countries"] or "").strip(",").replace(",", " "),
                        e["detector_version"],
                        e["undo_of"],
                        b.get("status"),
                        a.get("status"),
                        b.get("outcome"),
                        a.get("outcome"),
                        b.get("assignee"),
                        a.get("assignee"),
                        a.get("notes"),
                    ]
                ]
            )
        return _csv_response(out.getvalue(), f"tradesentry-audit-{dt.date.today().isoformat()}.csv")

    # --- misc API ------------------------------------------------------------------------------------

    @app.get("/api/me")
    def api_me(ctx: CtxDep) -> Response:
        return JSONResponse(
            {
                "username": ctx.user.username,
                "role": ctx.user.role,
                "countries": list(ctx.user.countries),
                "csrf_token": ctx.csrf,
            }
        )

    @app.get("/api/snapshot")
    def api_snapshot(ctx: CtxDep) -> Response:
        info = state.review.info()
        info["run_summary"] = (
            state.review.run_summary()
            if ctx.user.sees_all
            else [r for r in state.review.run_summary() if r.get("country") in ctx.user.countries]
        )
        return JSONResponse(jsonable_encoder(info))

    # --- users (admin) -------------------------------------------------------------------------------

    @app.get("/admin/users", response_class=HTMLResponse)
    def users_page(request: Request, ctx: AdminCtxDep) -> Response:
        return render(
            request,
            ctx,
            "admin_users.html",
            users=state.store.list_users(),
            flash=_flash(request),
            error_msg=None,
        )

    @app.post("/admin/users")
    async def users_create(request: Request, ctx: AdminPostCtxDep) -> Response:
        form = await request.form()
        pw = str(form.get("password") or "")
        try:
            state.store.create_user(
                str(form.get("username") or ""),
                role=str(form.get("role") or ""),
                countries=str(form.get("countries") or ""),
                password_hash=hash_password(pw) if pw else None,
                display_name=str(form.get("display_name") or "") or None,
            )
        except (StoreError, ValueError) as exc:
            return render(
                request,
                ctx,
                "admin_users.html",
                status_code=400,
                users=state.store.list_users(),
                flash=None,
                error_msg=str(exc),
            )
        return RedirectResponse(url(request, "/admin/users", {"flash": "user_created"}), status_code=303)

    @app.post("/admin/users/{username}")
    async def users_update(request: Request, username: str, ctx: AdminPostCtxDep) -> Response:
        form = await request.form()
        values: dict[str, Any] = {}
        for k in ("role", "countries", "display_name"):
            if k in form:
                values[k] = str(form.get(k) or "")
        if "active" in form:
            values["active"] = str(form.get("active")) == "1"
        if form.get("password"):
            try:
                values["password_hash"] = hash_password(str(form.get("password")))
            except ValueError as exc:
                raise StoreError(str(exc)) from exc
        if username == ctx.user.username and (
            values.get("active") is False or values.get("role", "admin") != "admin"
        ):
            raise StoreError("you cannot demote or deactivate yourself")
        state.store.update_user(username, **values)
        return RedirectResponse(url(request, "/admin/users", {"flash": "user_updated"}), status_code=303)

    return app


# --- helpers -----------------------------------------------------------------------------------------


FLASHES = {
    "saved": "Decision saved.",
    "undone": "Last change undone.",
    "nothing": "Nothing to undo.",
    "user_created": "User created.",
    "user_updated": "User updated.",
}


def kind_label(kind: str | None) -> str:
    """unit_value_low -> "Unit value low", hs_mismatch -> "HS mismatch"."""
    text = (kind or "").replace("_", " ").strip()
    text = text[:1].upper() + text[1:]
    return re.sub(r"\bhs\b", "HS", text, flags=re.IGNORECASE)


def _flash(request: Request) -> str | None:
    code = request.query_params.get("flash")
    if code == "bulk":
        n = request.query_params.get("n", "0")
        s = request.query_params.get("skipped", "0")
        if n.isdigit() and s.isdigit():
            return f"Updated {n} anomalies" + (
                f"; {s} skipped (not visible or not allowed)." if s != "0" else "."
            )
        return None
    return FLASHES.get(code or "")


def _parse_qs(qs: str) -> dict[str, str]:
    from urllib.parse import parse_qsl

    return dict(parse_qsl(qs.lstrip("?"), keep_blank_values=False))


def short_version(v: object) -> str:
    """The detector version as analysts see it: the engine's config digest (the full string, one
    version per detector, goes into the tooltip)."""
    text = "" if v is None else str(v)
    m = re.search(r"config=([0-9a-f]+)", text)
    return f"detectors {m.group(1)}" if m else text


def _api_item(a: dict, full: bool = False) -> dict:
    keys = [
        "anomaly_id",
        "night",
        "kind",
        "level",
        "reporter_country",
        "partner_country",
        "countries",
        "flow",
        "hs6",
        "trader_id",
        "trader_name",
        "score",
        "rank",
        "reasons",
        "value_at_stake_usd",
        "unit_value_usd_per_kg",
        "peer_median_usd_per_kg",
        "detector_version",
        "is_audit_pick",
        "status",
        "outcome",
        "assignee",
        "revision",
        "rereview",
    ]
    out = {k: a.get(k) for k in keys}
    if full:
        out.update({k: v for k, v in a.items() if k not in out and k != "decision"})
        out["decision"] = a.get("decision")
    return out


_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _cell(v: Any) -> Any:
    """CSV cell; strings that a spreadsheet would run as a formula get a leading apostrophe."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, dt.datetime):
        return v.isoformat(timespec="seconds")
    if isinstance(v, str) and v.startswith(_FORMULA):
        return "'" + v
    return v


def _csv_response(text: str, filename: str) -> Response:
    return Response(
        text,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{quote(filename)}"'},
    )
