"""What the pages, the JSON API and the CSV exports read: one place, so country visibility is applied
the same way everywhere. Snapshot-side filters run in DuckDB; decision-side filters (status, assignee,
views) run on the merged rows (a night holds at most a few hundred anomalies)."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, fields
from typing import Any
from urllib.parse import urlencode

from . import charts
from .auth import CurrentUser
from .snapshot import SnapshotReader, rows, table_columns
from .store import STATUSES, Store

QUEUE_COLUMNS = (
    "anomaly_id, night, kind, level, reporter_country, partner_country, countries, flow, hs6, trader_id, "
    "trader_name, score, rank, reasons, detectors, value_at_stake_usd, unit_value_usd_per_kg, "
    "peer_median_usd_per_kg, peer_count, detector_version, is_audit_pick, primary_key, declaration_keys, "
    "source_file, source_line"
)
SORTS = {
    "score": lambda a: (a["score"] is None, a["score"] or 0),
    "rank": lambda a: a["rank"] or 0,
    "night": lambda a: a["night"],
    "value": lambda a: a["value_at_stake_usd"] or 0,
    "trader": lambda a: (a["trader_name"] or "").lower(),
    "country": lambda a: a["reporter_country"] or "",
    "kind": lambda a: a["kind"] or "",
    "hs6": lambda a: a["hs6"] or "",
    "status": lambda a: STATUSES.index(a["status"]) if a["status"] in STATUSES else 9,
    "assignee": lambda a: a["assignee"] or "",
}
VIEWS = {
    "mine": "Assigned to me",
    "unassigned": "Unassigned & open",
    "escalated": "Escalated",
    "rereview": "Needs re-review",
    "open": "All open",
}
PER_PAGE = (25, 50, 100, 200)


@dataclass
class QueueFilters:
    view: str = ""
    country: str = ""
    flow: str = ""
    kind: str = ""
    chapter: str = ""
    score_min: float | None = None
    score_max: float | None = None
    status: str = ""
    assignee: str = ""
    night: str = ""  # "" = latest night in the snapshot, "all", or YYYY-MM-DD
    audit: str = ""  # "" | only | exclude
    q: str = ""
    sort: str = "score"
    order: str = "desc"
    page: int = 1
    per_page: int = 50

    @classmethod
    def parse(cls, params: Any) -> QueueFilters:
        f = cls()
        g = lambda k: (params.get(k) or "").strip()  # noqa: E731
        f.view = g("view") if g("view") in VIEWS else ""
        f.country = g("country").upper()[:2] if g("country").isalpha() else ""
        f.flow = g("flow")[:20]
        f.kind = g("kind")[:60]
        f.chapter = g("chapter")[:2] if g("chapter").isdigit() else ""
        for k in ("score_min", "score_max"):
            try:
                setattr(f, k, float(g(k)) if g(k) else None)
            except ValueError:
                setattr(f, k, None)
        f.status = g("status") if g("status") in (*STATUSES, "open") else ""
        f.assignee = g("assignee")[:150]
        n = g("night")
        if n == "all":
            f.night = "all"
        else:
            try:
                f.night = dt.date.fromisoformat(n).isoformat() if n else ""
            except ValueError:
                f.night = ""
        f.audit = g("audit") if g("audit") in ("only", "exclude") else ""
        f.q = g("q")[:100]
        f.sort = g("sort") if g("sort") in SORTS else "score"
        f.order = "asc" if g("order") == "asc" else "desc"
        try:
            f.page = max(1, int(g("page") or 1))
        except ValueError:
            f.page = 1
        try:
            pp = int(g("per_page") or 50)
            f.per_page = pp if pp in PER_PAGE else 50
        except ValueError:
            f.per_page = 50
        return f

    def params(self, **override: Any) -> dict[str, str]:
        d = asdict(self)
        d.update(override)
        defaults = asdict(QueueFilters())
        out = {}
        for k, v in d.items():
            if v is None or v == "" or v == defaults.get(k):
                continue
            out[k] = str(v)
        return out

    def qs(self, **override: Any) -> str:
        return urlencode(self.params(**override))

    def active(self) -> bool:
        return any(
            getattr(self, k.name) not in (None, "")
            for k in fields(self)
            if k.name not in ("sort", "order", "page", "per_page", "night", "view")
        )


class NotFound(Exception):
    pass


def _visible_sql(user: CurrentUser) -> tuple[str, list]:
    if user.sees_all:
        return "true", []
    return "list_has_any(countries, ?::VARCHAR[])", [list(user.countries)]


def _jsonish(v: Any) -> Any:
    if isinstance(v, str):
        try:
            return json.loads(v)
        except ValueError:
            return v
    return v


class Review:
    def __init__(self, snapshot: SnapshotReader, store: Store) -> None:
        self.snapshot = snapshot
        self.store = store

    # --- snapshot-wide ---------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        with self.snapshot.cursor() as cur:
            info = rows(cur, "select * from snapshot_info limit 1")
            nights = [
                r[0]
                for r in cur.execute("select distinct night from anomalies order by night desc").fetchall()
            ]
        out = dict(info[0]) if info else {}
        out["snapshot"] = self.snapshot.name
        out["nights"] = nights
        out["latest_night"] = nights[0] if nights else None
        return out

    def run_summary(self) -> list[dict]:
        with self.snapshot.cursor() as cur:
            try:
                return rows(cur, "select * from run_summary")
            except Exception:
                return []

    def facets(self, user: CurrentUser) -> dict[str, list]:
        vis, p = _visible_sql(user)
        with self.snapshot.cursor() as cur:

            def col(sql: str) -> list:
                return [r[0] for r in cur.execute(sql.format(vis=vis), p).fetchall() if r[0] is not None]

            return {
                "kinds": col("select distinct kind from anomalies where {vis} order by 1"),
                "flows": col("select distinct flow from anomalies where {vis} order by 1"),
                "chapters": col("select distinct substr(hs6, 1, 2) from anomalies where {vis} order by 1"),
                "countries": col("select distinct unnest(countries) from anomalies where {vis} order by 1"),
                "nights": col("select distinct night from anomalies where {vis} order by 1 desc"),
            }

    # --- queue -----------------------------------------------------------------------------------

    def _snapshot_rows(self, user: CurrentUser, f: QueueFilters) -> tuple[list[dict], dt.date | None]:
        vis, params = _visible_sql(user)
        where = [vis]
        with self.snapshot.cursor() as cur:
            row = cur.execute(f"select max(night) from anomalies where {vis}", params).fetchone()
            assert row is not None  # an aggregate without group by returns exactly one row
            latest = row[0]
            night = None
            if f.night == "all":
                night = None
            elif f.night:
                night = dt.date.fromisoformat(f.night)
            else:
                night = latest
            if night is not None:
                where.append("night = ?")
                params.append(night)
            if f.country:
                where.append("list_contains(countries, ?)")
                params.append(f.country)
            if f.flow:
                where.append("flow = ?")
                params.append(f.flow)
            if f.kind:
                where.append("kind = ?")
                params.append(f.kind)
            if f.chapter:
                where.append("substr(hs6, 1, 2) = ?")
                params.append(f.chapter)
            if f.score_min is not None:
                where.append("score >= ?")
                params.append(f.score_min)
            if f.score_max is not None:
                where.append("score <= ?")
                params.append(f.score_max)
            if f.audit == "only":
                where.append("coalesce(is_audit_pick, false)")
            elif f.audit == "exclude":
                where.append("not coalesce(is_audit_pick, false)")
            if f.q:
                where.append(
                    "(lower(trader_name) like ? or lower(trader_id) like ? or anomaly_id like ? "
                    "or hs6 like ? or list_contains(declaration_keys, ?))"
                )
                like = f"%{f.q.lower()}%"
                params += [like, like, f"{f.q.lower()}%", f"{f.q}%", f.q]
            out = rows(cur, f"select {QUEUE_COLUMNS} from anomalies where {' and '.join(where)}", params)
        return out, night

    def _merge(self, items: list[dict]) -> list[dict]:
        decs = self.store.decisions_for([a["anomaly_id"] for a in items])
        for a in items:
            d = decs.get(a["anomaly_id"])
            a["decision"] = d
            a["status"] = (d or {}).get("status") or "new"
            a["outcome"] = (d or {}).get("outcome")
            a["assignee"] = (d or {}).get("assignee")
            a["revision"] = (d or {}).get("revision") or 0
            a["rereview"] = bool(
                d
                and d.get("detector_version")
                and a.get("detector_version")
                and d["detector_version"] != a["detector_version"]
                and (d.get("status") != "new" or d.get("outcome"))
            )
        return items

    def queue_all(self, user: CurrentUser, f: QueueFilters) -> tuple[list[dict], dict[str, Any]]:
        items, night = self._snapshot_rows(user, f)
        items = self._merge(items)
        # counts by status and view, before the status / assignee / view filters
        counts: dict[str, Any] = {s: 0 for s in STATUSES}
        views = {v: 0 for v in VIEWS}
        for a in items:
            counts[a["status"]] = counts.get(a["status"], 0) + 1
            for v in VIEWS:
                if _in_view(a, v, user):
                    views[v] += 1
        counts["all"] = len(items)
        counts["audit"] = sum(1 for a in items if a.get("is_audit_pick"))
        if f.view:
            items = [a for a in items if _in_view(a, f.view, user)]
        if f.status == "open":
            items = [a for a in items if a["status"] != "closed"]
        elif f.status:
            items = [a for a in items if a["status"] == f.status]
        if f.assignee == "__none__":
            items = [a for a in items if not a["assignee"]]
        elif f.assignee:
            items = [a for a in items if a["assignee"] == f.assignee]
        key = SORTS[f.sort]
        items.sort(key=lambda a: a["anomaly_id"])
        items.sort(key=key, reverse=(f.order == "desc"))
        return items, {"counts": counts, "views": views, "night": night}

    def queue(self, user: CurrentUser, f: QueueFilters) -> dict[str, Any]:
        items, meta = self.queue_all(user, f)
        total = len(items)
        pages = max(1, (total + f.per_page - 1) // f.per_page)
        page = min(f.page, pages)
        start = (page - 1) * f.per_page
        return {
            "rows": items[start : start + f.per_page],
            "total": total,
            "page": page,
            "pages": pages,
            "first": start + 1 if total else 0,
            "last": min(start + f.per_page, total),
            "ids": [a["anomaly_id"] for a in items],
            **meta,
        }

    # --- one anomaly -----------------------------------------------------------------------------

    def anomaly(self, user: CurrentUser, anomaly_id: str) -> dict:
        """The anomaly row, or NotFound when missing *or not visible* (no existence leak)."""
        vis, p = _visible_sql(user)
        with self.snapshot.cursor() as cur:
            r = rows(cur, f"select * from anomalies where anomaly_id = ? and {vis}", [anomaly_id, *p])
        if not r:
            raise NotFound(anomaly_id)
        a = r[0]
        for k in ("detector_scores", "tail_probabilities"):
            a[k] = _jsonish(a.get(k))
        return self._merge([a])[0]

    def detail(self, user: CurrentUser, anomaly_id: str) -> dict[str, Any]:
        a = self.anomaly(user, anomaly_id)
        vis, vp = _visible_sql(user)
        with self.snapshot.cursor() as cur:
            decls = rows(
                cur,
                "select ad.role, d.* from anomaly_declarations ad join declarations d "
                "on d.declaration_key = ad.declaration_key where ad.anomaly_id = ? "
                "order by case ad.role when 'subject' then 0 else 1 end, d.flow, d.declaration_key",
                [anomaly_id],
            )
            for d in decls:
                d["raw_values"] = _jsonish(d.get("raw_values")) or {}
            primary = next((d for d in decls if d["declaration_key"] == a.get("primary_key")), None) or (
                decls[0] if decls else None
            )
            counterpart = None
            match = None
            # a pattern's declarations are all the same trader's: the counterpart, if any, is the
            # partner's declaration of the primary declaration's own consignment (the match below)
            pattern = a.get("level") == "pattern"
            if primary is not None and not pattern:
                counterpart = next(
                    (
                        d
                        for d in decls
                        if d is not primary and d["reporter_country"] != primary["reporter_country"]
                    ),
                    None,
                )
            if primary is not None:
                m = rows(
                    cur,
                    "select * from consignment_matches where export_key = ? or import_key = ? limit 1",
                    [primary["declaration_key"], primary["declaration_key"]],
                )
                match = m[0] if m else None
                if counterpart is None and match is not None:
                    other = (
                        match["import_key"]
                        if match["export_key"] == primary["declaration_key"]
                        else match["export_key"]
                    )
                    if other:
                        c = rows(
                            cur,
                            "select 'partner' as role, * from declarations where declaration_key = ?",
                            [other],
                        )
                        if c:
                            counterpart = c[0]
                            counterpart["raw_values"] = _jsonish(counterpart.get("raw_values")) or {}
            flow = primary["flow"] if primary else a.get("flow")
            hs6 = primary["hs6"] if primary else a.get("hs6")
            bins = rows(
                cur,
                "select * from peer_distributions where hs6 = ? and flow = ? order by bin_low_usd_per_kg",
                [hs6, flow],
            )
            st = rows(cur, "select * from peer_stats where hs6 = ? and flow = ? limit 1", [hs6, flow])
            stats = st[0] if st else None
            hist = rows(
                cur,
                "select * from trader_history where reporter_country = ? and trader_id = ? order by night",
                [a.get("reporter_country"), a.get("trader_id")],
            )
            same_trader = rows(
                cur,
                f"select {QUEUE_COLUMNS} from anomalies where trader_id = ? and reporter_country = ? "
                f"and anomaly_id <> ? and {vis} order by night desc, score desc limit 25",
                [a.get("trader_id"), a.get("reporter_country"), anomaly_id, *vp],
            )
            keys = [d["declaration_key"] for d in decls] + (
                [counterpart["declaration_key"]] if counterpart else []
            )
            refs = sorted(
                {
                    d["consignment_ref_norm"]
                    for d in [*decls, *([counterpart] if counterpart else [])]
                    if d.get("consignment_ref_norm")
                }
            )
            same_consignment = []
            if keys or refs:
                same_consignment = rows(
                    cur,
                    f"select {QUEUE_COLUMNS} from anomalies where anomaly_id <> ? and {vis} and anomaly_id in ("
                    "select ad.anomaly_id from anomaly_declarations ad join declarations d "
                    "on d.declaration_key = ad.declaration_key "
                    "where ad.declaration_key in (select unnest(?::VARCHAR[])) "
                    "or d.consignment_ref_norm in (select unnest(?::VARCHAR[]))) order by night desc, score desc",
                    [anomaly_id, *vp, keys or [""], refs or [""]],
                )
        marker = a.get("unit_value_usd_per_kg")
        if marker is None and primary is not None:
            marker = primary.get("unit_value_usd_per_kg")
        return {
            "a": a,
            "primary": primary,
            "counterpart": counterpart,
            "match": match,
            "declarations": decls,
            # the declarations that make a pattern-level anomaly (trader over a window), by night
            "pattern_declarations": sorted(
                (d for d in decls if d.get("role") == "subject"),
                key=lambda d: (str(d.get("night")), d["declaration_key"]),
            )
            if pattern
            else [],
            "comparison": compare(primary, counterpart) if primary and counterpart else [],
            "peer_stats": stats,
            "peer_chart": charts.peer_chart(bins, stats, marker),
            "history": hist,
            "history_chart": charts.history_chart(hist, highlight=a.get("night"), marker_uv=marker),
            "same_trader": self._merge(same_trader),
            "same_consignment": self._merge(same_consignment),
            "events": self.store.events(anomaly_id=anomaly_id),
        }


def _in_view(a: dict, view: str, user: CurrentUser) -> bool:
    if view == "mine":
        return a["assignee"] == user.username and a["status"] != "closed"
    if view == "unassigned":
        return not a["assignee"] and a["status"] != "closed"
    if view == "escalated":
        return a["status"] == "escalated"
    if view == "rereview":
        return a["rereview"]
    if view == "open":
        return a["status"] != "closed"
    return True


# --- the side-by-side comparison of a declaration and its partner's mirror declaration ----------------

COMPARE = [
    # label, field, kind: match (should agree), num (should agree within 5 %), info (shown, not judged)
    ("Consignment ref", "consignment_ref_norm", "match"),
    ("Flow", "flow", "info"),
    ("Reporter → partner", None, "mirror"),
    ("Declaration date", "declaration_date", "info"),
    ("HS declared", "hs_code_declared", "info"),
    ("HS6", "hs6", "match"),
    ("Goods description", "goods_description", "matchci"),
    ("Origin", "origin_country", "match"),
    ("Trader", "trader_name", "info"),
    ("Quantity", "quantity", "num"),
    ("Net mass (kg)", "net_mass_kg", "num"),
    ("Customs value (USD)", "customs_value_usd", "info"),
    ("Valuation basis", "valuation_basis", "info"),
    ("Statistical value, FOB (USD)", "statistical_value_usd", "num"),
    ("Unit value (USD/kg)", "unit_value_usd_per_kg", "num"),
    ("Currency", "currency_code", "info"),
    ("Source", None, "source"),
]


def compare(a: dict, b: dict) -> list[dict]:
    out = []
    for label, field, kind in COMPARE:
        row: dict[str, Any] = {"label": label, "kind": kind, "differs": False, "note": ""}
        if kind == "mirror":
            row["a"] = f"{a.get('reporter_country')} → {a.get('partner_country')}"
            row["b"] = f"{b.get('reporter_country')} → {b.get('partner_country')}"
            row["differs"] = not (
                a.get("reporter_country") == b.get("partner_country")
                and a.get("partner_country") == b.get("reporter_country")
            )
            row["note"] = "not mirrored" if row["differs"] else ""
        elif kind == "source":
            row["a"] = f"{a.get('source_file')}:{a.get('source_line')}"
            row["b"] = f"{b.get('source_file')}:{b.get('source_line')}"
        else:
            va, vb = a.get(field), b.get(field)
            row["a"], row["b"], row["num"] = va, vb, kind == "num" or isinstance(va, float)
            if kind == "num" and va is not None and vb is not None:
                try:
                    fa, fb = float(va), float(vb)
                    base = max(abs(fa), abs(fb)) or 1.0
                    rel = (fb - fa) / (abs(fa) or base)
                    row["differs"] = abs(fb - fa) / base > 0.05
                    row["note"] = f"{rel:+.0%}" if row["differs"] else ""
                except (TypeError, ValueError):
                    row["differs"] = va != vb
            elif kind == "match":
                row["differs"] = (va or None) != (vb or None)
            elif kind == "matchci":
                row["differs"] = str(va or "").strip().lower() != str(vb or "").strip().lower()
            elif kind == "num":
                row["differs"] = (va is None) != (vb is None)
        out.append(row)
    return out


HARMONISED_FIELDS = [
    "declaration_key",
    "declaration_date",
    "flow",
    "hs_code_declared",
    "hs6",
    "partner_country",
    "origin_country",
    "trader_id",
    "trader_name",
    "declarant_id",
    "customs_office",
    "quantity",
    "quantity_unit",
    "net_mass_original",
    "mass_unit",
    "net_mass_kg",
    "customs_value_original",
    "currency_code",
    "fx_usd_per_unit",
    "fx_rate_date",
    "customs_value_usd",
    "valuation_basis",
    "statistical_value_usd",
    "unit_value_usd_per_kg",
    "consignment_ref",
    "consignment_ref_norm",
    "goods_description",
]


def anomaly_columns(reader: SnapshotReader) -> set[str]:
    with reader.cursor() as cur:
        return table_columns(cur, "anomalies")
