"""A tiny synthetic world for the detection tests: ``marts.fct_declarations`` and
``marts.fct_consignment_matches`` with exactly the documented columns, known injected anomalies.

Members XA-XD trade with each other (export in one feed, the import in the partner's feed 1-6 nights
later, matched by consignment reference) and with non-members. Prices are log-normal around a
median per HS6 (spread 0.25); some HS codes carry a supplementary quantity in units.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

import duckdb
import numpy as np
import pandas as pd

MEMBERS = ["XA", "XB", "XC", "XD"]
OUTSIDE = ["CN", "US", "DE", "TR"]
# hs6: (median USD/kg, quantity unit or None, kg per unit)
PRODUCTS: dict[str, tuple[float, str | None, float]] = {
    "610910": (20.0, "u", 0.2),
    "610990": (26.0, "u", 0.25),
    "620342": (18.0, "u", 0.6),
    "851712": (400.0, "u", 0.2),
    "851770": (60.0, None, 0.0),
    "240110": (6.0, None, 0.0),
    "240220": (250.0, None, 0.0),
    "401110": (4.0, "u", 9.0),
    "401220": (1.5, "u", 9.0),
    "090111": (3.5, None, 0.0),
    "847130": (250.0, "u", 2.0),
    "870323": (15.0, "u", 1300.0),
}

DECL_COLUMNS = [
    "declaration_key", "reporter_country", "declaration_id", "item_no", "feed", "night",
    "declaration_date", "flow", "hs_code_declared", "hs_edition", "hs6", "hs4", "hs2",
    "partner_country", "origin_country", "trader_id", "trader_name", "declarant_id", "customs_office",
    "quantity", "quantity_unit", "net_mass_original", "mass_unit", "net_mass_kg",
    "customs_value_original", "currency_code", "fx_usd_per_unit", "fx_rate_date", "customs_value_usd",
    "valuation_basis", "statistical_value_usd", "unit_value_usd_per_kg", "consignment_ref",
    "consignment_ref_norm", "goods_description", "source_file", "source_line", "arrived_at", "raw_values",
]  # fmt: skip
MATCH_COLUMNS = [
    "consignment_ref_norm", "export_key", "import_key", "exporter_country", "importer_country",
    "match_method", "status", "export_night", "import_night", "export_hs6", "import_hs6", "hs_mismatch",
    "value_ratio", "mass_ratio", "transit_days", "export_value_usd", "import_value_usd",
]  # fmt: skip

DECL_DDL = """
create schema if not exists marts;
create or replace table marts.fct_declarations (
    declaration_key varchar, reporter_country varchar, declaration_id varchar, item_no integer,
    feed varchar, night date, declaration_date date, flow varchar, hs_code_declared varchar,
    hs_edition varchar, hs6 varchar, hs4 varchar, hs2 varchar, partner_country varchar,
    origin_country varchar, trader_id varchar, trader_name varchar, declarant_id varchar,
    customs_office varchar, quantity double, quantity_unit varchar, net_mass_original double,
    mass_unit varchar, net_mass_kg double, customs_value_original double, currency_code varchar,
    fx_usd_per_unit double, fx_rate_date date, customs_value_usd double, valuation_basis varchar,
    statistical_value_usd double, unit_value_usd_per_kg double, consignment_ref varchar,
    consignment_ref_norm varchar, goods_description varchar, source_file varchar, source_line integer,
    arrived_at timestamp, raw_values json
);
create or replace table marts.fct_consignment_matches (
    consignment_ref_norm varchar, export_key varchar, import_key varchar, exporter_country varchar,
    importer_country varchar, match_method varchar, status varchar, export_night date, import_night date,
    export_hs6 varchar, import_hs6 varchar, hs_mismatch boolean, value_ratio double, mass_ratio double,
    transit_days integer, export_value_usd double, import_value_usd double
);
"""


@dataclass
class World:
    decl: pd.DataFrame
    matches: pd.DataFrame
    night: date  # the scored night, where anomalies are injected
    injected: dict[str, list[str]] = field(default_factory=dict)  # kind -> declaration keys


def _decl(
    rng: np.random.Generator,
    country: str,
    seq: int,
    night: date,
    flow: str,
    hs6: str,
    partner: str,
    mass: float,
    value_usd: float,
    quantity: float | None,
    ref: str,
    trader: str,
) -> dict:
    unit = PRODUCTS[hs6][1]
    basis = "CIF" if flow == "import" else "FOB"
    did = f"{'IM' if flow == 'import' else 'EX'}-{seq:06d}"
    return {
        "declaration_key": f"{country}|{did}|1",
        "reporter_country": country,
        "declaration_id": did,
        "item_no": 1,
        "feed": country.lower(),
        "night": night,
        "declaration_date": night,
        "flow": flow,
        "hs_code_declared": hs6,
        "hs_edition": "HS2022",
        "hs6": hs6,
        "hs4": hs6[:4],
        "hs2": hs6[:2],
        "partner_country": partner,
        "origin_country": partner if flow == "import" else country,
        "trader_id": trader,
        "trader_name": f"Synthetic Trader {trader}",
        "declarant_id": "D1",
        "customs_office": f"{country}01",
        "quantity": quantity if unit else None,
        "quantity_unit": unit,
        "net_mass_original": mass,
        "mass_unit": "kg",
        "net_mass_kg": mass,
        "customs_value_original": value_usd,
        "currency_code": "USD",
        "fx_usd_per_unit": 1.0,
        "fx_rate_date": night,
        "customs_value_usd": value_usd,
        "valuation_basis": basis,
        "statistical_value_usd": value_usd / 1.06 if basis == "CIF" else value_usd,
        "unit_value_usd_per_kg": value_usd / mass,
        "consignment_ref": ref,
        "consignment_ref_norm": ref,
        "goods_description": "synthetic goods",
        "source_file": f"{country.lower()}/{night.isoformat()}/abc/{country.lower()}.csv",
        "source_line": seq,
        "arrived_at": pd.Timestamp(night) + pd.Timedelta(hours=6),
        "raw_values": "{}",
    }


def make_world(
    night: date = date(2026, 3, 1),
    history_nights: int = 20,
    consignments_per_night: int = 60,
    transit_window_days: int = 10,
    later_nights: int = 0,
    seed: int = 7,
    inject: bool = True,
) -> World:
    """History nights [night - history_nights, night - 1], the scored night, and ``later_nights``
    after it. Anomalies are injected on ``night`` (and a phantom export on night - transit)."""
    rng = np.random.default_rng(seed)
    hs_list = list(PRODUCTS)
    rows: list[dict] = []
    matches: list[dict] = []
    seq = {c: 0 for c in MEMBERS}
    first = night - timedelta(days=history_nights + 8)
    last = night + timedelta(days=later_nights)
    d = first
    while d <= last:
        for _ in range(consignments_per_night):
            hs6 = hs_list[int(rng.integers(len(hs_list)))]
            med, unit, kgpu = PRODUCTS[hs6]
            mass = float(np.round(rng.lognormal(np.log(500), 1.0), 1)) + 1.0
            value = float(np.round(med * mass * rng.lognormal(0, 0.25), 2))
            qty = float(max(1, round(mass / kgpu * rng.lognormal(0, 0.05)))) if unit else None
            a = MEMBERS[int(rng.integers(len(MEMBERS)))]
            trader = f"T{a}{int(rng.integers(15)):02d}"
            kind = rng.random()
            seq[a] += 1
            if kind < 0.5:  # intra-member consignment
                b = [m for m in MEMBERS if m != a][int(rng.integers(3))]
                ref = f"REF{a}{seq[a]:06d}"
                ex = _decl(rng, a, seq[a], d, "export", hs6, b, mass, value, qty, ref, trader)
                rows.append(ex)
                t = int(rng.integers(1, 7))
                imp_night = d + timedelta(days=t)
                if imp_night <= last:
                    seq[b] += 1
                    imp = _decl(
                        rng, b, seq[b], imp_night, "import", hs6, a,
                        round(mass * rng.lognormal(0, 0.004), 1),
                        round(value * 1.06 * rng.lognormal(0, 0.02), 2), qty, ref,
                        f"T{b}{int(rng.integers(15)):02d}",
                    )  # fmt: skip
                    rows.append(imp)
                    matches.append(_match(ex, imp))
                else:
                    matches.append(_match(ex, None))
            else:
                flow = "import" if kind < 0.75 else "export"
                partner = OUTSIDE[int(rng.integers(len(OUTSIDE)))]
                rows.append(
                    _decl(rng, a, seq[a], d, flow, hs6, partner, mass, value, qty, f"X{a}{seq[a]}", trader)
                )
        d += timedelta(days=1)
    decl = pd.DataFrame(rows, columns=DECL_COLUMNS)
    m = pd.DataFrame(matches, columns=MATCH_COLUMNS)
    world = World(decl, m, night)
    if inject:
        _inject(world, rng, transit_window_days)
    return world


def _match(ex: dict, imp: dict | None) -> dict:
    return {
        "consignment_ref_norm": ex["consignment_ref_norm"],
        "export_key": ex["declaration_key"],
        "import_key": imp["declaration_key"] if imp else None,
        "exporter_country": ex["reporter_country"],
        "importer_country": ex["partner_country"],
        "match_method": "reference",
        "status": "matched" if imp else "pending",
        "export_night": ex["night"],
        "import_night": imp["night"] if imp else None,
        "export_hs6": ex["hs6"],
        "import_hs6": imp["hs6"] if imp else None,
        "hs_mismatch": (imp["hs6"] != ex["hs6"]) if imp else None,
        "value_ratio": (imp["statistical_value_usd"] / ex["statistical_value_usd"]) if imp else None,
        "mass_ratio": (imp["net_mass_kg"] / ex["net_mass_kg"]) if imp else None,
        "transit_days": (imp["night"] - ex["night"]).days if imp else None,
        "export_value_usd": ex["customs_value_usd"],
        "import_value_usd": imp["customs_value_usd"] if imp else None,
    }


def _set_value(df: pd.DataFrame, i: int, value: float) -> None:
    df.loc[i, "customs_value_usd"] = value
    df.loc[i, "customs_value_original"] = value
    df.loc[i, "statistical_value_usd"] = value / 1.06 if df.loc[i, "valuation_basis"] == "CIF" else value
    df.loc[i, "unit_value_usd_per_kg"] = value / df.loc[i, "net_mass_kg"]


def _inject(w: World, rng: np.random.Generator, transit: int) -> None:
    df = w.decl
    paired = set(w.matches["export_key"]) | set(w.matches["import_key"].dropna())
    tonight = df[(df["night"] == w.night)]
    solo = tonight[~tonight["declaration_key"].isin(paired)]
    used: set[int] = set()

    def pick(frame: pd.DataFrame, cond) -> int:
        for i in frame.index:
            if i not in used and cond(frame.loc[i]):
                used.add(i)
                return int(i)
        raise AssertionError("no candidate row for injection")

    inj: dict[str, list[str]] = {}
    i = pick(solo, lambda r: r["flow"] == "import" and r["hs6"] in ("851712", "847130", "610910"))
    _set_value(df, i, df.loc[i, "customs_value_usd"] * 0.25)
    inj["undervaluation"] = [df.loc[i, "declaration_key"]]
    i = pick(solo, lambda r: r["flow"] == "export" and pd.isna(r["quantity_unit"]))
    _set_value(df, i, df.loc[i, "customs_value_usd"] * 5)
    inj["overvaluation"] = [df.loc[i, "declaration_key"]]
    i = pick(solo, lambda r: r["quantity_unit"] == "u" and r["hs6"] != "870323")
    df.loc[i, "net_mass_kg"] *= 4
    df.loc[i, "net_mass_original"] = df.loc[i, "net_mass_kg"]
    inj["weight"] = [df.loc[i, "declaration_key"]]
    # misclassification: cigarettes (250 USD/kg) declared as raw tobacco (6 USD/kg) at their real value
    i = pick(solo, lambda r: r["flow"] == "import")
    mass = float(df.loc[i, "net_mass_kg"])
    for col, v in (("hs6", "240110"), ("hs4", "2401"), ("hs2", "24"), ("hs_code_declared", "240110")):
        df.loc[i, col] = v
    df.loc[i, "quantity"] = None
    df.loc[i, "quantity_unit"] = None
    _set_value(df, i, round(250.0 * mass * 1.05, 2))
    inj["misclassification"] = [df.loc[i, "declaration_key"]]

    # pairs whose import lands tonight
    m = w.matches
    tonight_pairs = m[(m["import_night"] == w.night)].sort_values("export_key")
    key_index = {k: idx for idx, k in df["declaration_key"].items()}
    pair_rows = [(key_index[r.export_key], key_index[r.import_key]) for r in tonight_pairs.itertuples()]
    pair_rows = [(e, im) for e, im in pair_rows if e not in used and im not in used]
    # subtle undervaluation: import at 0.65 x the partner's export (inside the peer spread)
    e, im = pair_rows[0]
    used.update((e, im))
    _set_value(df, im, round(df.loc[e, "customs_value_usd"] * 1.06 * 0.65, 2))
    inj["subtle_undervaluation"] = [df.loc[im, "declaration_key"]]
    # HS mismatch: the import declares a cheaper code of the same chapter at the real value
    e, im = next((e, im) for e, im in pair_rows[1:] if df.loc[e, "hs6"] in ("851712", "847130", "610990"))
    used.update((e, im))
    cheap = {"851712": "851770", "847130": "851770", "610990": "610910"}[df.loc[e, "hs6"]]
    cheap = "240110" if cheap == "851770" else cheap
    for col, v in (("hs6", cheap), ("hs4", cheap[:4]), ("hs2", cheap[:2]), ("hs_code_declared", cheap)):
        df.loc[im, col] = v
    df.loc[im, "quantity"] = None if PRODUCTS[cheap][1] is None else df.loc[im, "quantity"]
    df.loc[im, "quantity_unit"] = PRODUCTS[cheap][1]
    inj["hs_mismatch"] = [df.loc[im, "declaration_key"]]
    # mirror mass: the import declares 3x the exported mass
    e, im = next((e, im) for e, im in pair_rows[2:] if e not in used)
    used.update((e, im))
    df.loc[im, "net_mass_kg"] *= 3
    df.loc[im, "net_mass_original"] = df.loc[im, "net_mass_kg"]
    inj["mirror_mass"] = [df.loc[im, "declaration_key"]]
    # phantom export: an export to a member on night - transit whose import never comes
    ex_night = w.night - timedelta(days=transit)
    cand = m[(m["export_night"] == ex_night) & m["import_key"].notna()].sort_values("export_key")
    r = cand.iloc[0]
    df = df.drop(index=key_index[r.import_key])
    m.loc[cand.index[0], ["import_key", "status", "import_night", "import_hs6"]] = [
        None,
        "orphan",
        None,
        None,
    ]
    inj["phantom_export"] = [r.export_key]
    # refresh the match mart's derived columns for the touched pairs
    w.matches = _rematch(df, m)
    w.decl = df.reset_index(drop=True)
    w.injected = inj


def _rematch(df: pd.DataFrame, m: pd.DataFrame) -> pd.DataFrame:
    by_key = df.set_index("declaration_key")
    out = []
    for r in m.to_dict("records"):
        ex = by_key.loc[r["export_key"]].to_dict() | {"declaration_key": r["export_key"]}
        imp = None
        if r["import_key"] is not None and r["import_key"] in by_key.index:
            imp = by_key.loc[r["import_key"]].to_dict() | {"declaration_key": r["import_key"]}
        out.append(_match(ex, imp) | ({"status": r["status"]} if imp is None else {}))
    return pd.DataFrame(out, columns=MATCH_COLUMNS)


def load_world(con: duckdb.DuckDBPyConnection, world: World, up_to: date | None = None) -> None:
    """(Re)create the two marts from the world, keeping nights <= ``up_to``; the match mart then only
    knows the imports loaded by then."""
    con.execute(DECL_DDL)
    decl = world.decl if up_to is None else world.decl[world.decl["night"] <= up_to]
    m = world.matches.copy()
    if up_to is not None:
        late = m["import_night"].notna() & (pd.to_datetime(m["import_night"]) > pd.Timestamp(up_to))
        m.loc[late, ["import_key", "import_night", "import_hs6", "value_ratio", "mass_ratio"]] = None
        m.loc[late, "status"] = "pending"
        m = m[pd.to_datetime(m["export_night"]) <= pd.Timestamp(up_to)]
    con.register("_w_decl", decl)
    con.register("_w_match", m)
    con.execute(f"insert into marts.fct_declarations select {', '.join(DECL_COLUMNS)} from _w_decl")
    con.execute(f"insert into marts.fct_consignment_matches select {', '.join(MATCH_COLUMNS)} from _w_match")
    con.unregister("_w_decl")
    con.unregister("_w_match")


def test_world_has_the_documented_columns(tmp_path):
    con = duckdb.connect(str(tmp_path / "w.duckdb"))
    w = make_world(history_nights=12)
    load_world(con, w)
    cols = [r[0] for r in con.execute("describe marts.fct_declarations").fetchall()]
    assert cols == DECL_COLUMNS
    cols = [r[0] for r in con.execute("describe marts.fct_consignment_matches").fetchall()]
    assert cols == MATCH_COLUMNS
    assert set(w.injected) >= {"undervaluation", "phantom_export", "hs_mismatch"}
