"""Geometry for the two server-side SVG charts. Templates draw the shapes; no markup is built here,
so every label still goes through Jinja's autoescape."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any


def fmt_num(v: Any, digits: int = 3) -> str:
    """Compact, readable numbers: 1,234 / 12.3 / 0.0123 / 1.2M."""
    if v is None:
        return "\u2013"
    try:
        x = float(v)
    except (TypeError, ValueError):
        return str(v)
    if math.isnan(x):
        return "\u2013"
    a = abs(x)
    if a >= 1e9:
        return f"{x / 1e9:.{max(digits - 2, 1)}f}B"
    if a >= 1e6:
        return f"{x / 1e6:.{max(digits - 2, 1)}f}M"
    if a >= 1e4:
        return f"{x:,.0f}"
    if a >= 100:
        return f"{x:,.0f}" if a >= 1000 or x == int(x) else f"{x:,.1f}"
    if a >= 1:
        return f"{x:.0f}" if x == int(x) else f"{x:.2f}"
    if a == 0:
        return "0"
    return f"{x:.{digits}g}"


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=10 * mag)
    start = math.ceil(lo / step) * step
    out, v = [], start
    while v <= hi + 1e-9 * step:
        out.append(round(v, 10))
        v += step
    return out


def peer_chart(
    bins: list[dict],
    stats: dict | None,
    marker: float | None,
    *,
    marker_label: str = "this declaration",
    width: int = 560,
    height: int = 210,
) -> dict | None:
    """Histogram of the HS6 peer unit values (USD/kg) on a log axis, with the declaration marked."""
    bins = [
        b
        for b in bins
        if b.get("bin_low_usd_per_kg") is not None and b.get("bin_high_usd_per_kg") is not None
    ]
    if not bins:
        return None
    bins.sort(key=lambda b: b["bin_low_usd_per_kg"])
    ml, mr, mt, mb = 48, 14, 26, 34
    pw, ph = width - ml - mr, height - mt - mb
    lows = [float(b["bin_low_usd_per_kg"]) for b in bins]
    highs = [float(b["bin_high_usd_per_kg"]) for b in bins]
    xmin, xmax = min(lows), max(highs)
    use_log = xmin > 0 and xmax / xmin > 20
    vals = [v for v in (marker, *(stats or {}).get("_marks", [])) if v is not None and (v > 0 or not use_log)]
    if vals:
        xmin, xmax = min(xmin, *vals), max(xmax, *vals)
    if use_log:
        lx0, lx1 = math.log10(xmin) - 0.05, math.log10(xmax) + 0.05

        def sx(v: float) -> float:
            return ml + (math.log10(max(v, 1e-12)) - lx0) / (lx1 - lx0) * pw
    else:
        pad = (xmax - xmin) * 0.03 or 1.0
        lx0, lx1 = xmin - pad, xmax + pad

        def sx(v: float) -> float:
            return ml + (v - lx0) / (lx1 - lx0) * pw

    ymax = max((int(b.get("declarations") or 0) for b in bins), default=1) or 1
    yt = _nice_ticks(0, ymax, 4)
    ytop = max(yt[-1], ymax)

    def sy(v: float) -> float:
        return mt + ph - v / ytop * ph

    bars = []
    for b in bins:
        x0, x1 = sx(float(b["bin_low_usd_per_kg"])), sx(float(b["bin_high_usd_per_kg"]))
        n = int(b.get("declarations") or 0)
        bars.append(
            {
                "x": round(x0 + 0.5, 1),
                "w": round(max(x1 - x0 - 1, 0.5), 1),
                "y": round(sy(n), 1),
                "h": round(mt + ph - sy(n), 1),
                "title": f"USD {fmt_num(b['bin_low_usd_per_kg'])}\u2013{fmt_num(b['bin_high_usd_per_kg'])}/kg: "
                f"{n} declarations",
            }
        )
    if use_log:
        xticks = []
        for e in range(math.floor(lx0), math.ceil(lx1) + 1):
            for m in (1, 2, 5):
                v = m * 10**e
                if lx0 <= math.log10(v) <= lx1:
                    xticks.append({"x": round(sx(v), 1), "label": fmt_num(v)})
    else:
        xticks = [{"x": round(sx(v), 1), "label": fmt_num(v)} for v in _nice_ticks(lx0, lx1, 6)]
    out: dict[str, Any] = {
        "width": width,
        "height": height,
        "ml": ml,
        "mt": mt,
        "pw": pw,
        "ph": ph,
        "bars": bars,
        "xticks": xticks,
        "yticks": [{"y": round(sy(v), 1), "label": fmt_num(v)} for v in yt],
        "log": use_log,
        "x_axis_y": mt + ph,
        "band": None,
        "iqr": None,
        "median": None,
        "marker": None,
    }
    if stats:
        if stats.get("p05") and stats.get("p95"):
            out["band"] = {
                "x": round(sx(stats["p05"]), 1),
                "w": round(sx(stats["p95"]) - sx(stats["p05"]), 1),
                "label": f"p05\u2013p95: USD {fmt_num(stats['p05'])}\u2013{fmt_num(stats['p95'])}/kg",
            }
        if stats.get("p25") and stats.get("p75"):
            out["iqr"] = {"x": round(sx(stats["p25"]), 1), "w": round(sx(stats["p75"]) - sx(stats["p25"]), 1)}
        if stats.get("median_usd_per_kg"):
            out["median"] = {
                "x": round(sx(stats["median_usd_per_kg"]), 1),
                "label": f"peer median USD {fmt_num(stats['median_usd_per_kg'])}/kg",
            }
    if marker is not None and (marker > 0 or not use_log):
        mx = round(sx(marker), 1)
        anchor = "end" if mx > ml + pw * 0.7 else "start"
        out["marker"] = {
            "x": mx,
            "label": f"{marker_label}: USD {fmt_num(marker)}/kg",
            "anchor": anchor,
            "tx": mx - 4 if anchor == "end" else mx + 4,
        }
    return out


def history_chart(
    hist: list[dict],
    *,
    highlight: dt.date | None,
    marker_uv: float | None = None,
    width: int = 560,
    height: int = 190,
) -> dict | None:
    """Trader's recent nights: declared value (bars, left axis) and median unit value (line, right axis)."""
    hist = [h for h in hist if h.get("night") is not None]
    if not hist:
        return None
    hist.sort(key=lambda h: h["night"])
    first = hist[0]["night"]
    last = max(hist[-1]["night"], highlight or hist[-1]["night"])
    days = (last - first).days + 1
    ml, mr, mt, mb = 52, 52, 14, 30
    pw, ph = width - ml - mr, height - mt - mb
    slot = pw / max(days, 1)
    vmax = max(float(h.get("customs_value_usd") or 0) for h in hist) or 1.0
    vt = _nice_ticks(0, vmax, 4)
    vtop = max(vt[-1], vmax)
    uvs = [float(h["median_usd_per_kg"]) for h in hist if h.get("median_usd_per_kg") is not None]
    if marker_uv is not None:
        uvs.append(float(marker_uv))
    umax = max(uvs) if uvs else 1.0
    ut = _nice_ticks(0, umax, 4)
    utop = max(ut[-1], umax) or 1.0

    def x(d: dt.date) -> float:
        return ml + ((d - first).days + 0.5) * slot

    bars, pts = [], []
    for h in hist:
        v = float(h.get("customs_value_usd") or 0)
        bh = v / vtop * ph
        is_hl = highlight is not None and h["night"] == highlight
        bars.append(
            {
                "x": round(x(h["night"]) - slot * 0.38, 1),
                "w": round(max(slot * 0.76, 1), 1),
                "y": round(mt + ph - bh, 1),
                "h": round(bh, 1),
                "hl": is_hl,
                "title": f"{h['night']}: {h.get('declarations') or 0} declarations, USD {fmt_num(v)}"
                + (
                    f", median USD {fmt_num(h['median_usd_per_kg'])}/kg"
                    if h.get("median_usd_per_kg") is not None
                    else ""
                ),
            }
        )
        if h.get("median_usd_per_kg") is not None:
            pts.append(f"{x(h['night']):.1f},{mt + ph - float(h['median_usd_per_kg']) / utop * ph:.1f}")
    xticks = []
    step = max(1, days // 6)
    for k in range(0, days, step):
        d = first + dt.timedelta(days=k)
        xticks.append({"x": round(x(d), 1), "label": d.strftime("%d %b")})
    out: dict[str, Any] = {
        "width": width,
        "height": height,
        "ml": ml,
        "mt": mt,
        "pw": pw,
        "ph": ph,
        "bars": bars,
        "line": " ".join(pts),
        "xticks": xticks,
        "x_axis_y": mt + ph,
        "right_x": ml + pw,
        "vticks": [{"y": round(mt + ph - v / vtop * ph, 1), "label": fmt_num(v)} for v in vt],
        "uticks": [{"y": round(mt + ph - v / utop * ph, 1), "label": fmt_num(v)} for v in ut],
        "hl": None,
        "marker": None,
    }
    if highlight is not None and first <= highlight <= last:
        out["hl"] = {
            "x": round(x(highlight) - slot / 2, 1),
            "w": round(slot, 1),
            "label": highlight.strftime("%d %b"),
        }
        if marker_uv is not None:
            out["marker"] = {
                "x": round(x(highlight), 1),
                "y": round(mt + ph - float(marker_uv) / utop * ph, 1),
                "label": f"this declaration USD {fmt_num(marker_uv)}/kg",
            }
    return out
