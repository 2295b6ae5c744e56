"""A small, synthetic published snapshot with exactly the documented tables and columns.

Used by the review app's tests and for demos (``tradesentry review demo-snapshot``). The same night
always yields the same anomaly ids (ids hash the kind and declaration keys, as the contract says), so a
rewrite of the same night models a rerun. All data is synthetic; traders are fictitious and one of them
carries a hostile name to prove the app escapes feed strings.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import random
from pathlib import Path

import duckdb

from tradesentry.anomaly_ids import anomaly_id

HOSTILE_TRADER = "<script>alert(1)</script>"

DECLARATION_COLUMNS: list[tuple[str, str]] = [
    ("declaration_key", "VARCHAR"),
    ("reporter_country", "VARCHAR"),
    ("declaration_id", "VARCHAR"),
    ("item_no", "INTEGER"),
    ("feed", "VARCHAR"),
    ("night", "DATE"),
    ("declaration_date", "DATE"),
    ("flow", "VARCHAR"),
    ("hs_code_declared", "VARCHAR"),
    ("hs_edition", "VARCHAR"),
    ("hs6", "VARCHAR"),
    ("hs4", "VARCHAR"),
    ("hs2", "VARCHAR"),
    ("partner_country", "VARCHAR"),
    ("origin_country", "VARCHAR"),
    ("trader_id", "VARCHAR"),
    ("trader_name", "VARCHAR"),
    ("declarant_id", "VARCHAR"),
    ("customs_office", "VARCHAR"),
    ("quantity", "DOUBLE"),
    ("quantity_unit", "VARCHAR"),
    ("net_mass_original", "DOUBLE"),
    ("mass_unit", "VARCHAR"),
    ("net_mass_kg", "DOUBLE"),
    ("customs_value_original", "DOUBLE"),
    ("currency_code", "VARCHAR"),
    ("fx_usd_per_unit", "DOUBLE"),
    ("fx_rate_date", "DATE"),
    ("customs_value_usd", "DOUBLE"),
    ("valuation_basis", "VARCHAR"),
    ("statistical_value_usd", "DOUBLE"),
    ("unit_value_usd_per_kg", "DOUBLE"),
    ("consignment_ref", "VARCHAR"),
    ("consignment_ref_norm", "VARCHAR"),
    ("goods_description", "VARCHAR"),
    ("source_file", "VARCHAR"),
    ("source_line", "INTEGER"),
    ("arrived_at", "TIMESTAMP"),
    ("raw_values", "JSON"),
]

DDL = f"""
create table snapshot_info (night date, run_id varchar, published_at timestamp, detector_version varchar,
    nights_covered integer, synthetic boolean, note varchar);
create table run_summary (night date, run_id varchar, feed varchar, country varchar, status varchar,
    error varchar, landed integer, harmonised integer, quarantined integer, held integer);
create table anomalies (anomaly_id varchar, night date, kind varchar, level varchar,
    declaration_keys varchar[], primary_key varchar, reporter_country varchar, partner_country varchar,
    countries varchar[], flow varchar, hs6 varchar, trader_id varchar, trader_name varchar, score double,
    rank integer, detectors varchar[], detector_scores json, tail_probabilities json, reasons varchar[],
    peer_median_usd_per_kg double, peer_count integer, unit_value_usd_per_kg double,
    value_at_stake_usd double, detector_version varchar, is_audit_pick boolean, source_file varchar,
    source_line integer);
create table anomaly_declarations (anomaly_id varchar, declaration_key varchar, role varchar);
create table declarations ({", ".join(f"{n} {t}" for n, t in DECLARATION_COLUMNS)});
create table consignment_matches (consignment_ref_norm varchar, export_key varchar, import_key varchar,
    exporter_country varchar, importer_country varchar, match_method varchar, status varchar,
    export_night date, import_night date, export_hs6 varchar, import_hs6 varchar, hs_mismatch boolean,
    value_ratio double, mass_ratio double, transit_days integer, export_value_usd double,
    import_value_usd double);
create table peer_stats (hs6 varchar, flow varchar, peer_count integer, median_usd_per_kg double,
    p05 double, p25 double, p75 double, p95 double);
create table peer_distributions (hs6 varchar, flow varchar, bin_low_usd_per_kg double,
    bin_high_usd_per_kg double, declarations integer);
create table trader_history (reporter_country varchar, trader_id varchar, night date, declarations integer,
    customs_value_usd double, median_usd_per_kg double);
"""

COUNTRIES = ["XA", "XB", "XC"]
CURRENCY = {"XA": ("EUR", 1.08), "XB": ("XBD", 0.25), "XC": ("USD", 1.0)}
PRODUCTS = [
    ("847130", "Portable computers, weighing not more than 10 kg", 180.0),
    ("610910", "T-shirts, knitted, of cotton", 14.0),
    ("080390", "Bananas, fresh", 0.9),
    ("300490", "Medicaments, packaged for retail sale", 95.0),
    ("870323", "Motor cars, spark-ignition, 1500-3000 cc", 16.0),
    ("271019", "Medium oils and preparations", 0.8),
    ("940360", "Wooden furniture", 6.5),
    ("854231", "Electronic integrated circuits: processors", 2400.0),
]
TRADERS = [
    "Northwind Freight Ltd",
    "Harbour & Sons Trading",
    "Lumen Components SA",
    HOSTILE_TRADER,
    "Caspian Agro Export",
    'Delta Textiles "Premium" GmbH',
    "Orion Pharma Distribution",
    "Kestrel Motors",
]
KINDS_DECL = ["unit_value_low", "unit_value_high"]
KINDS_CONS = ["mirror_value_gap", "hs_mismatch", "mirror_mass_gap"]


def _decl(
    rng: random.Random,
    *,
    country: str,
    partner: str,
    flow: str,
    night: dt.date,
    seq: int,
    hs6: str,
    desc: str,
    trader_idx: int,
    mass: float,
    uv: float,
    cref: str,
) -> dict:
    cur, fx = CURRENCY[country]
    value_usd = round(mass * uv, 2)
    original = round(value_usd / fx, 2)
    prefix = "EX" if flow == "export" else "IM"
    decl_id = f"{prefix}-{night:%m%d}{seq:04d}"
    trader_name = TRADERS[trader_idx]
    trader_id = f"{country}T{trader_idx:04d}"
    source_file = f"{country.lower()}_declarations/{night.isoformat()}/{country.lower()}_{night:%Y%m%d}.csv"
    line = seq + 1
    mass_unit = "kg" if country != "XB" else "t"
    mass_original = mass if mass_unit == "kg" else round(mass / 1000, 4)
    hs_declared = hs6 + ("0000" if country == "XA" else "00")
    raw = {
        "XA": {
            "DECL_NO": decl_id,
            "ITEM": "1",
            "HS_CODE": hs_declared,
            "PARTNER": partner,
            "TRADER_ID": trader_id,
            "TRADER": trader_name,
            "NET_KG": f"{mass_original:.3f}".replace(".", ","),
            "VALUE": f"{original:,.2f}".replace(",", " ").replace(".", ","),
            "CURRENCY": cur,
            "REF": cref,
            "DESCRIPTION": desc,
        },
        "XB": {
            "declaration": decl_id,
            "hs": hs_declared,
            "partner_iso": partner,
            "trader_code": trader_id,
            "trader_name": trader_name,
            "net_mass_t": f"{mass_original}",
            "value_local": f"{original:.2f}",
            "ccy": cur,
            "transport_doc": cref.replace("-", "/"),
            "goods": desc.upper(),
        },
        "XC": {
            "id": decl_id,
            "item": "1",
            "commodity": hs_declared,
            "partner": partner,
            "trader": trader_id,
            "trader_nm": trader_name,
            "kg": f"{mass_original:.1f}",
            "value_usd": f"{original:.2f}",
            "consignment": cref.lower(),
            "descr": desc,
        },
    }[country]
    return {
        "declaration_key": f"{country}|{decl_id}|1",
        "reporter_country": country,
        "declaration_id": decl_id,
        "item_no": 1,
        "feed": f"{country.lower()}_declarations",
        "night": night,
        "declaration_date": night - dt.timedelta(days=rng.randint(0, 2)),
        "flow": flow,
        "hs_code_declared": hs_declared,
        "hs_edition": "HS2022",
        "hs6": hs6,
        "hs4": hs6[:4],
        "hs2": hs6[:2],
        "partner_country": partner,
        "origin_country": country if flow == "export" else partner,
        "trader_id": trader_id,
        "trader_name": trader_name,
        "declarant_id": f"D{rng.randint(100, 999)}",
        "customs_office": f"{country}{rng.randint(1, 9):03d}",
        "quantity": float(max(1, round(mass / 10))),
        "quantity_unit": "u",
        "net_mass_original": mass_original,
        "mass_unit": mass_unit,
        "net_mass_kg": mass,
        "customs_value_original": original,
        "currency_code": cur,
        "fx_usd_per_unit": fx,
        "fx_rate_date": night - dt.timedelta(days=1),
        "customs_value_usd": value_usd,
        "valuation_basis": "FOB" if flow == "export" else "CIF",
        "statistical_value_usd": value_usd if flow == "export" else round(value_usd / 1.06, 2),
        "unit_value_usd_per_kg": round(uv, 4),
        "consignment_ref": cref,
        "consignment_ref_norm": cref.replace("-", "").upper(),
        "goods_description": desc,
        "source_file": source_file,
        "source_line": line,
        "arrived_at": dt.datetime.combine(night + dt.timedelta(days=1), dt.time(2, rng.randint(0, 59))),
        "raw_values": json.dumps(raw),
    }


def _night_rows(night: dt.date, n: int, detector_version: str) -> dict[str, list[dict]]:
    rng = random.Random(f"tradesentry-demo-{night.isoformat()}")
    out: dict[str, list[dict]] = {
        "anomalies": [],
        "anomaly_declarations": [],
        "declarations": [],
        "consignment_matches": [],
    }
    seq = 0
    for i in range(n):
        hs6, desc, median = PRODUCTS[i % len(PRODUCTS)]
        exporter = COUNTRIES[i % 3]
        importer = COUNTRIES[(i + 1 + (i // 3) % 2) % 3]
        if importer == exporter:
            importer = COUNTRIES[(COUNTRIES.index(exporter) + 1) % 3]
        trader_idx = (i * 5 + 3) % len(TRADERS) if i % 7 else 3  # the hostile trader shows up often
        mass = round(rng.uniform(200, 20000), 1)
        cref = f"CN-{night:%y%m%d}-{i:04d}"
        audit = i % 17 == 5
        consignment_level = i % 3 == 2 and not audit
        if audit:
            kind = "unit_value_high"
            factor = rng.uniform(0.8, 1.3)
        elif consignment_level:
            kind = KINDS_CONS[(i // 3) % len(KINDS_CONS)]
            factor = rng.uniform(0.7, 1.4)
        else:
            kind = KINDS_DECL[i % 2]
            factor = rng.uniform(0.05, 0.3) if kind == "unit_value_low" else rng.uniform(4, 12)
        uv_exp = median * factor
        seq += 1
        exp = _decl(
            rng,
            country=exporter,
            partner=importer,
            flow="export",
            night=night,
            seq=seq,
            hs6=hs6,
            desc=desc,
            trader_idx=trader_idx,
            mass=mass,
            uv=uv_exp,
            cref=cref,
        )
        # the importer's mirror declaration: differences where the kind says so
        imp_mass = mass * (rng.uniform(1.6, 2.5) if kind == "mirror_mass_gap" else rng.uniform(0.98, 1.02))
        imp_uv = uv_exp * (rng.uniform(2.0, 4.0) if kind == "mirror_value_gap" else rng.uniform(0.97, 1.1))
        imp_uv = imp_uv * mass / imp_mass
        imp_hs6 = PRODUCTS[(i + 3) % len(PRODUCTS)][0] if kind == "hs_mismatch" else hs6
        imp_desc = PRODUCTS[(i + 3) % len(PRODUCTS)][1] if kind == "hs_mismatch" else desc
        seq += 1
        imp = _decl(
            rng,
            country=importer,
            partner=exporter,
            flow="import",
            night=night + dt.timedelta(days=0),
            seq=seq,
            hs6=imp_hs6,
            desc=imp_desc,
            trader_idx=(trader_idx + 1) % len(TRADERS),
            mass=round(imp_mass, 1),
            uv=imp_uv,
            cref=cref,
        )
        out["declarations"] += [exp, imp]
        keys = (
            [exp["declaration_key"], imp["declaration_key"]]
            if consignment_level
            else [exp["declaration_key"]]
        )
        aid = anomaly_id(kind, keys)
        score = round(rng.uniform(0.1, 0.45), 4) if audit else round(rng.uniform(0.55, 0.99), 4)
        ratio = uv_exp / median
        if consignment_level:
            vr = imp["statistical_value_usd"] / max(exp["statistical_value_usd"], 0.01)
            mr = imp["net_mass_kg"] / max(exp["net_mass_kg"], 0.01)
            reasons = {
                "mirror_value_gap": [
                    f"Importer declares {vr:.1f}x the exporter's FOB value "
                    f"(USD {imp['statistical_value_usd']:,.0f} vs USD {exp['statistical_value_usd']:,.0f})",
                    f"Net mass agrees within {abs(mr - 1) * 100:.0f}%",
                    f"Value gap of this size is beyond the 99th percentile for HS {hs6}",
                ],
                "hs_mismatch": [
                    f"Exporter declares HS {hs6}, importer declares HS {imp_hs6}",
                    f"Chapters differ ({hs6[:2]} vs {imp_hs6[:2]})",
                    f"Value ratio importer/exporter {vr:.2f}",
                ],
                "mirror_mass_gap": [
                    f"Importer declares {mr:.1f}x the exporter's net mass "
                    f"({imp['net_mass_kg']:,.0f} kg vs {exp['net_mass_kg']:,.0f} kg)",
                    f"Value ratio importer/exporter {vr:.2f}",
                    f"Transit time {rng.randint(2, 14)} days",
                ],
            }[kind]
        else:
            if ratio < 1:
                reasons = [
                    f"Unit value USD {uv_exp:,.2f}/kg is {1 / ratio:.1f}x below the HS6 peer median "
                    f"(USD {median:,.2f}/kg, {120 + i} peers)"
                ]
            else:
                reasons = [
                    f"Unit value USD {uv_exp:,.2f}/kg is {ratio:.1f}x the HS6 peer median "
                    f"(USD {median:,.2f}/kg, {120 + i} peers)"
                ]
            reasons += [
                f"Tail probability {rng.uniform(0.0001, 0.004):.4f} (HBOS, IForest agree)",
                f"Trader's median over 60 nights: USD {median * rng.uniform(0.8, 1.2):,.2f}/kg",
            ]
        if audit:
            reasons = [
                "Random audit pick: sampled for quality control, not flagged by the detectors",
                f"Unit value USD {uv_exp:,.2f}/kg vs peer median USD {median:,.2f}/kg",
            ]
        countries = sorted({exporter, importer}) if consignment_level else [exporter]
        dscores = {
            "hbos": round(rng.random(), 3),
            "iforest": round(rng.random(), 3),
            "robust_z": round(math.log(max(ratio, 1e-6)) / 0.4, 2),
        }
        out["anomalies"].append(
            {
                "anomaly_id": aid,
                "night": night,
                "kind": kind,
                "level": "consignment" if consignment_level else "declaration",
                "declaration_keys": keys,
                "primary_key": exp["declaration_key"],
                "reporter_country": exporter,
                "partner_country": importer,
                "countries": countries,
                "flow": "export",
                "hs6": hs6,
                "trader_id": exp["trader_id"],
                "trader_name": exp["trader_name"],
                "score": score,
                "rank": 0,
                "detectors": ["audit"] if audit else sorted(dscores),
                "detector_scores": json.dumps(dscores),
                "tail_probabilities": json.dumps({k: round(rng.uniform(0.0001, 0.01), 5) for k in dscores}),
                "reasons": reasons,
                "peer_median_usd_per_kg": median,
                "peer_count": 120 + i,
                "unit_value_usd_per_kg": round(uv_exp, 4),
                "value_at_stake_usd": round(abs(exp["customs_value_usd"] - mass * median), 2),
                "detector_version": detector_version,
                "is_audit_pick": audit,
                "source_file": exp["source_file"],
                "source_line": exp["source_line"],
            }
        )
        out["anomaly_declarations"].append(
            {"anomaly_id": aid, "declaration_key": exp["declaration_key"], "role": "subject"}
        )
        out["anomaly_declarations"].append(
            {
                "anomaly_id": aid,
                "declaration_key": imp["declaration_key"],
                "role": "subject" if consignment_level else "partner",
            }
        )
        vr = imp["statistical_value_usd"] / max(exp["statistical_value_usd"], 0.01)
        out["consignment_matches"].append(
            {
                "consignment_ref_norm": exp["consignment_ref_norm"],
                "export_key": exp["declaration_key"],
                "import_key": imp["declaration_key"],
                "exporter_country": exporter,
                "importer_country": importer,
                "match_method": "reference",
                "status": "matched",
                "export_night": night,
                "import_night": night,
                "export_hs6": hs6,
                "import_hs6": imp_hs6,
                "hs_mismatch": imp_hs6 != hs6,
                "value_ratio": round(vr, 4),
                "mass_ratio": round(imp["net_mass_kg"] / exp["net_mass_kg"], 4),
                "transit_days": rng.randint(2, 14),
                "export_value_usd": exp["statistical_value_usd"],
                "import_value_usd": imp["statistical_value_usd"],
            }
        )
    out["anomalies"].sort(key=lambda a: -a["score"])
    for r, a in enumerate(out["anomalies"], 1):
        a["rank"] = r
    return out


def _insert(con: duckdb.DuckDBPyConnection, table: str, rows: list[dict]) -> None:
    if not rows:
        return
    import pandas as pd  # executemany is slow in DuckDB: go through a data frame

    cols = list(rows[0])
    frame = pd.DataFrame([[r[c] for c in cols] for r in rows], columns=cols, dtype=object)
    con.register("_rows", frame)
    try:
        con.execute(f"insert into {table} ({', '.join(cols)}) select {', '.join(cols)} from _rows")
    finally:
        con.unregister("_rows")


def write_demo_snapshot(
    publish_dir: Path | str,
    night: dt.date | str,
    *,
    run_id: str | None = None,
    n_anomalies: int = 36,
    nights: int = 2,
    detector_version: str = "detectors-1.0.0",
    switch: bool = True,
) -> Path:
    """Write ``snapshots/<night>--<run_id>.duckdb`` under ``publish_dir`` and point CURRENT at it.

    ``nights`` earlier nights' anomalies are included too (the snapshot covers recent nights). The
    switch of CURRENT is atomic: a temporary file, then ``os.replace``.
    """
    publish_dir = Path(publish_dir)
    night = dt.date.fromisoformat(night) if isinstance(night, str) else night
    run_id = run_id or dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
    snaps = publish_dir / "snapshots"
    snaps.mkdir(parents=True, exist_ok=True)
    name = f"{night.isoformat()}--{run_id}.duckdb"
    path = snaps / name
    tmp = snaps / (name + ".tmp")
    if tmp.exists():
        tmp.unlink()
    con = duckdb.connect(str(tmp))
    try:
        con.execute(DDL)
        all_rows: dict[str, list[dict]] = {}
        nights_list = [night - dt.timedelta(days=k) for k in range(nights)]
        for k, nt in enumerate(nights_list):
            part = _night_rows(nt, n_anomalies if k == 0 else max(6, n_anomalies // 3), detector_version)
            for t, rows in part.items():
                all_rows.setdefault(t, []).extend(rows)
        for t, rows in all_rows.items():
            _insert(con, t, rows)
        # peer statistics and distributions, per (hs6, flow), log-spaced bins around the median
        rng = random.Random(f"peers-{night.isoformat()}")
        stats, dists = [], []
        for hs6, _desc, median in PRODUCTS:
            for flow in ("export", "import"):
                edges = [median * math.exp(-2.5 + 0.25 * b) for b in range(21)]
                counts = [
                    max(0, round(400 * math.exp(-(((b + 0.5) - 10) ** 2) / 12) + rng.uniform(-6, 6)))
                    for b in range(20)
                ]
                for b in range(20):
                    dists.append(
                        {
                            "hs6": hs6,
                            "flow": flow,
                            "bin_low_usd_per_kg": round(edges[b], 4),
                            "bin_high_usd_per_kg": round(edges[b + 1], 4),
                            "declarations": counts[b],
                        }
                    )
                stats.append(
                    {
                        "hs6": hs6,
                        "flow": flow,
                        "peer_count": sum(counts),
                        "median_usd_per_kg": median,
                        "p05": round(median * 0.35, 4),
                        "p25": round(median * 0.7, 4),
                        "p75": round(median * 1.4, 4),
                        "p95": round(median * 2.8, 4),
                    }
                )
        _insert(con, "peer_stats", stats)
        _insert(con, "peer_distributions", dists)
        # trader history: the 30 nights before, for every trader seen
        hist = []
        traders = {(d["reporter_country"], d["trader_id"]) for d in all_rows["declarations"]}
        for country, tid in sorted(traders):
            trng = random.Random(f"{country}{tid}")
            base = trng.uniform(20_000, 400_000)
            uv = trng.uniform(2, 200)
            for k in range(30, 0, -1):
                nt = night - dt.timedelta(days=k - 1)
                if trng.random() < 0.25:
                    continue
                hist.append(
                    {
                        "reporter_country": country,
                        "trader_id": tid,
                        "night": nt,
                        "declarations": trng.randint(1, 40),
                        "customs_value_usd": round(base * trng.uniform(0.4, 1.6), 2),
                        "median_usd_per_kg": round(uv * trng.uniform(0.8, 1.25), 3),
                    }
                )
        _insert(con, "trader_history", hist)
        _insert(
            con,
            "run_summary",
            [
                {
                    "night": night,
                    "run_id": run_id,
                    "feed": f"{c.lower()}_declarations",
                    "country": c,
                    "status": "ok",
                    "error": None,
                    "landed": 1200 + 37 * j,
                    "harmonised": 1180 + 37 * j,
                    "quarantined": 14 - j,
                    "held": 6 + j,
                }
                for j, c in enumerate(COUNTRIES)
            ],
        )
        _insert(
            con,
            "snapshot_info",
            [
                {
                    "night": night,
                    "run_id": run_id,
                    "published_at": dt.datetime.now(dt.UTC).replace(tzinfo=None),
                    "detector_version": detector_version,
                    "nights_covered": nights,
                    "synthetic": True,
                    "note": "Synthetic demonstration data: fictitious traders, user-assigned country codes XA-XC.",
                }
            ],
        )
        con.execute("checkpoint")
    finally:
        con.close()
    os.replace(tmp, path)
    if switch:
        switch_current(publish_dir, name)
    return path


def switch_current(publish_dir: Path | str, snapshot_name: str) -> None:
    """Point ``<publish_dir>/CURRENT`` at ``snapshots/<snapshot_name>`` atomically."""
    publish_dir = Path(publish_dir)
    tmp = publish_dir / f".CURRENT.{os.getpid()}.tmp"
    tmp.write_text(snapshot_name + "\n", encoding="utf-8")
    os.replace(tmp, publish_dir / "CURRENT")
