"""Deterministic synthetic customs declarations for the seven sample feeds, with labelled anomalies.

How the sample is made (see the package docstring for the public API):

1. A fixed world (``catalogue``): products with typical unit values, member countries, traders,
   offices, brokers, non-member partners; exchange rates as random walks.
2. Night by night, each member files declarations: exports and imports with non-members, and
   exports to other members. An export to a member creates the matching import in the partner's
   feed 1-10 days later (transit by transport mode), with the CIF/FOB margin on the value, the
   mass within 1 %, the same consignment reference written in the partner's own style.
   Simulation starts ``MAX_TRANSIT`` days before the first night so the first nights already carry
   imports of consignments exported earlier (whose export files are outside the sample).
3. Anomalies are injected at fixed rates with sizes from fixed ranges and written to
   ``ground_truth.csv``; legitimate oddities (free samples, returns) are labelled too.
4. Each feed writes its night's file in its own layout (``layouts``); values are generated in USD
   and converted to the declaration currency with the published rate the harmonisation will use
   (latest business day on or before the declaration date), so conversions recover them.

Randomness comes from ``random.Random`` streams seeded with strings (hashed with SHA-512 by Python,
so independent of PYTHONHASHSEED): the same seed gives byte-identical files.
"""

from __future__ import annotations

import csv
import io
import math
import os
import random
import zlib
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from tradesentry.samplegen.catalogue import (
    ALPHA3,
    CURRENCIES,
    MEMBERS,
    NONMEMBERS,
    PRODUCTS,
    PRODUCTS_BY_HS6,
    RATE_START,
    SECTORS,
    Member,
    Product,
)
from tradesentry.samplegen.layouts import (
    LAYOUTS_BY_FEED,
    MASS_FACTOR_TO_KG,
    RATES_FILE_PATTERN,
    RATES_HEADER,
    FeedLayout,
    render_ref,
)

MAX_TRANSIT = 10
DEFAULT_END = date(2026, 11, 27)
RATES_FEED = "exchange_rates"
RATES_BACKFILL_DAYS = 7  # the first rates file also carries the week before, so night 1 has a rate

# Anomaly rates per declaration, by the kind of declaration. Sizes are drawn from the ranges below.
NONMEMBER_IMPORT_RATES = {
    "undervaluation": 0.007,
    "overvaluation": 0.002,
    "misclassification": 0.005,
    "weight_manipulation": 0.004,
    "free_sample": 0.004,
    "return": 0.003,
}
NONMEMBER_EXPORT_RATES = {
    "overvaluation": 0.008,
    "undervaluation": 0.003,
    "misclassification": 0.002,
    "weight_manipulation": 0.004,
}
INTRA_RATES = {  # per consignment between two members
    "phantom_export": 0.015,
    "subtle_undervaluation": 0.022,
    "undervaluation": 0.005,
    "misclassification": 0.005,
    "overvaluation": 0.005,
    "weight_manipulation": 0.005,
}
UNDERVALUATION = (0.15, 0.40)
OVERVALUATION = (3.0, 8.0)
WEIGHT_UP = (3.0, 6.0)
WEIGHT_DOWN = (0.15, 0.30)
SUBTLE = (0.6, 0.8)

# Named anomaly proportions: a multiplier per kind on the rates above (kinds not named keep theirs).
# "default" is the sample as always; "heldout" is a sample with other proportions, for evaluating a
# detector tuned on the default one (tradesentry evaluate).
PROFILES: dict[str, dict[str, float]] = {
    "default": {},
    "heldout": {
        "undervaluation": 0.6,
        "overvaluation": 1.8,
        "misclassification": 1.5,
        "weight_manipulation": 0.7,
        "phantom_export": 1.6,
        "subtle_undervaluation": 0.6,
        "free_sample": 2.0,
        "return": 2.0,
    },
}


def anomaly_multipliers(proportions: str | Mapping[str, float] | None) -> dict[str, float]:
    """Kind -> multiplier on the default rates, from a profile name or a mapping (None: all 1)."""
    if proportions is None:
        return {}
    if isinstance(proportions, str):
        if proportions not in PROFILES:
            raise ValueError(f"unknown anomaly profile {proportions!r}; known: {sorted(PROFILES)}")
        return dict(PROFILES[proportions])
    known = set(KIND_FIELD)
    unknown = sorted(set(proportions) - known)
    if unknown:
        raise ValueError(f"unknown anomaly kinds {unknown}; known: {sorted(known)}")
    if any(float(v) < 0 for v in proportions.values()):
        raise ValueError("anomaly multipliers must be >= 0")
    return {k: float(v) for k, v in proportions.items()}


def _scaled(rates: dict[str, float], mult: dict[str, float]) -> dict[str, float]:
    out = {k: p * mult.get(k, 1.0) for k, p in rates.items()}
    if sum(out.values()) >= 1.0:
        raise ValueError("anomaly rates after the multipliers must sum to less than 1")
    return out
CIF_MARGIN = (1.02, 1.10)
MIRROR_MASS = (0.99, 1.01)

KIND_FIELD = {
    "undervaluation": "customs_value",
    "overvaluation": "customs_value",
    "subtle_undervaluation": "customs_value",
    "misclassification": "hs_code",
    "weight_manipulation": "net_mass",
    "phantom_export": "consignment",
    "free_sample": "customs_value",
    "return": "origin_country",
}
GROUND_TRUTH_HEADER = (
    "reporter_country", "declaration_id", "item_no", "night", "kind", "manipulated_field", "is_anomaly",
)
SALTED_HEADER = ("feed", "source_file", "source_line", "defect")

README = """SYNTHETIC DATA - NOT REAL CUSTOMS DECLARATIONS

Every file in this folder was generated by tradesentry.samplegen (seed {seed}, scale {scale}) for
nights {start} to {end}. Member countries use user-assigned ISO codes (XA-XG), traders and their
identifiers are invented, non-member partners use real ISO codes. Prices, masses and exchange rates
are random draws around plausible levels and describe no real trade.

Folders: one per feed (xa .. xg, exchange_rates), one file per night.
ground_truth.csv: the declarations carrying injected anomalies (is_anomaly=true) and legitimate
oddities (is_anomaly=false).{salted}
"""


# --------------------------------------------------------------------------------------------------
# Public result
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleInfo:
    """What ``generate`` wrote."""

    out_dir: Path
    start: date
    end: date
    nights: int
    feeds: list[str]  # declarations feeds, then the exchange-rates feed
    rows: dict[str, int]  # data lines written per feed (header excluded, salted lines included)
    ground_truth: Path
    salted_rows: Path | None = None
    declarations: int = 0  # declarations written (all feeds, salted excluded)
    anomalous_declarations: int = 0  # declarations with at least one anomalous item


# --------------------------------------------------------------------------------------------------
# The simulated world
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trader:
    trader_id: str
    name: str
    sectors: tuple[str, ...]
    weight: float  # a few large traders file most declarations
    price_factor: float  # a trader's prices sit consistently above or below the market
    declarants: tuple[str, ...]


@dataclass
class Item:
    product: Product  # the goods really shipped
    declared: Product  # the code declared (differs under misclassification)
    mass_kg: float
    value_usd: float  # customs value in USD on the declaration's basis (CIF imports, FOB exports)
    quantity: int | None
    origin: str
    description: str
    kind: str | None = None
    manipulated_field: str = ""
    is_anomaly: bool = False

    def mark(self, kind: str) -> None:
        self.kind = kind
        self.manipulated_field = KIND_FIELD[kind]
        self.is_anomaly = kind not in ("free_sample", "return")


@dataclass
class Declaration:
    member: Member
    night: date
    flow: str  # import | export
    partner: str  # alpha-2
    trader: Trader
    declarant: str
    office: str
    ref: str  # canonical consignment reference
    items: list[Item]
    currency: str
    mass_unit: str
    defect: str | None = None  # salted unparseable row
    declaration_id: str = ""


@dataclass
class _MemberWorld:
    member: Member
    layout: FeedLayout
    traders: list[Trader]
    trader_weights: list[float]
    offices: list[str]
    hs_suffixes: dict[str, list[str]]  # hs6 -> national digits the feed uses for it


_OFFICES: dict[str, tuple[str, ...]] = {
    "xa": ("XAANT01", "XAROT02", "XAAIR01", "XAZEE03", "XALIE04"),
    "xb": ("XB1401", "XB2112", "XB3305", "XB4420"),
    "xc": ("1AW01", "2KB03", "4TK11", "5OS02", "7NG05"),
    "xd": ("5301", "2704", "1001", "3901", "4601"),
    "xe": ("XEFXT001", "XESOU001", "XELHR002", "XEIMM001"),
    "xf": ("340100", "341300", "350300", "060400"),
    "xg": ("INNSA1", "INMAA1", "INDEL4", "INBOM4", "INMUN1"),
}
_CARRIERS = ("MAEU", "MSCU", "CMDU", "HLCU", "ONEY", "EGLV", "COSU", "ZIMU")
_CONTAINER_OWNERS = ("MSKU", "TGHU", "CAIU", "TCLU", "SEGU", "GESU", "FCIU", "TRHU")
_AIRLINES = ("176", "157", "618", "020", "235", "074", "125")


def _trader_id(rng: random.Random, layout: FeedLayout) -> str:
    c = layout.country
    style = layout.feed
    if style in ("xa", "xe"):  # EORI-like
        return f"{c}{rng.randrange(10**11, 10**12)}"
    if style == "xb":  # UID-like
        return f"{c}E-{rng.randrange(100, 999)}.{rng.randrange(100, 999)}.{rng.randrange(100, 999)}"
    if style == "xc":  # corporate number, 13 digits
        return str(rng.randrange(10**12, 10**13))
    if style == "xd":  # importer of record number
        return f"{rng.randrange(10, 99)}-{rng.randrange(10**6, 10**7)}00"
    if style == "xf":  # tax number, 10 digits
        return str(rng.randrange(10**9, 10**10))
    letters = "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(5))
    return f"{letters}{rng.randrange(1000, 9999)}{rng.choice('ABCDEFGHJK')}"  # IEC-like


def _build_world(seed: int) -> dict[str, _MemberWorld]:
    rng = random.Random(f"tradesentry-samplegen:{seed}:world")
    worlds: dict[str, _MemberWorld] = {}
    for m in MEMBERS:
        layout = LAYOUTS_BY_FEED[m.feed]
        traders: list[Trader] = []
        used_ids: set[str] = set()
        names = [form.format(stem) for stem in m.name_stems for form in m.name_forms]
        rng.shuffle(names)
        declarants = [f"{m.code}BR{n:03d}" for n in rng.sample(range(1, 999), 8)]
        for rank, name in enumerate(names[:30], start=1):
            tid = _trader_id(rng, layout)
            while tid in used_ids:
                tid = _trader_id(rng, layout)
            used_ids.add(tid)
            sectors = tuple(rng.sample(SECTORS, rng.choice((1, 1, 2))))
            traders.append(
                Trader(
                    trader_id=tid,
                    name=name,
                    sectors=sectors,
                    weight=1.0 / rank**0.8,
                    price_factor=math.exp(rng.gauss(0.0, 0.12)),
                    declarants=tuple(rng.sample(declarants, rng.choice((1, 2)))),
                )
            )
        suffixes: dict[str, list[str]] = {}
        for p in PRODUCTS:
            if layout.hs_format == "national8":
                pool = ["00", "10", "11", "19", "90", "99"]
            elif layout.hs_format == "national10":
                pool = ["0000", "1000", "1010", "9000", "9010", "0090"]
            else:
                pool = [""]
            suffixes[p.hs6] = sorted(rng.sample(pool, min(len(pool), rng.choice((1, 2)))))
        worlds[m.code] = _MemberWorld(m, layout, traders, [t.weight for t in traders],
                                      list(_OFFICES[m.feed]), suffixes)
    return worlds


def _business_day_on_or_before(d: date) -> date:
    while d.weekday() >= 5:
        d -= timedelta(days=1)
    return d


def _rates(seed: int, first: date, last: date) -> dict[date, dict[str, float]]:
    """Published rates (units per USD, rounded to 6 decimals) for every business day in [first, last]."""
    rng = random.Random(f"tradesentry-samplegen:{seed}:rates")
    level = {c: math.log(RATE_START[c][0]) for c in CURRENCIES}
    out: dict[date, dict[str, float]] = {}
    d = first
    while d <= last:
        if d.weekday() < 5:
            day: dict[str, float] = {}
            for c in CURRENCIES:
                _, vol, drift = RATE_START[c]
                level[c] += drift + rng.gauss(0.0, vol)
                day[c] = round(math.exp(level[c]), 6)
            out[d] = day
        d += timedelta(days=1)
    return out


# --------------------------------------------------------------------------------------------------
# The simulation
# --------------------------------------------------------------------------------------------------


class _Simulation:
    def __init__(self, seed: int, scale: float, start: date, end: date,
                 multipliers: dict[str, float] | None = None) -> None:
        mult = multipliers or {}
        self.rates_import = _scaled(NONMEMBER_IMPORT_RATES, mult)
        self.rates_export = _scaled(NONMEMBER_EXPORT_RATES, mult)
        self.rates_intra = _scaled(INTRA_RATES, mult)
        self.seed = seed
        self.scale = scale
        self.start = start
        self.end = end
        self.rng = random.Random(f"tradesentry-samplegen:{seed}:declarations")
        self.worlds = _build_world(seed)
        self.refs: set[str] = set()
        self.decls: dict[tuple[str, date], list[Declaration]] = defaultdict(list)
        self.by_sector = {s: [p for p in PRODUCTS if p.sector == s] for s in SECTORS}
        self.nonmember_codes = [a2 for a2, _, _ in NONMEMBERS]
        self.nonmember_weights = [w for _, _, w in NONMEMBERS]

    # -- helpers -----------------------------------------------------------------------------------

    def in_window(self, night: date) -> bool:
        return self.start <= night <= self.end

    def _nonmember(self) -> str:
        return self.rng.choices(self.nonmember_codes, self.nonmember_weights)[0]

    def _trader(self, w: _MemberWorld, sector: str | None = None) -> Trader:
        if sector is not None:
            cands = [t for t in w.traders if sector in t.sectors]
            if cands:
                return self.rng.choices(cands, [t.weight for t in cands])[0]
        return self.rng.choices(w.traders, w.trader_weights)[0]

    def _new_ref(self, exporter: str) -> tuple[str, int]:
        """A unique canonical consignment reference and the transit days its transport mode takes."""
        rng = self.rng
        while True:
            mode = rng.choices(("bl", "container", "ucr", "awb"), (0.4, 0.3, 0.2, 0.1))[0]
            if mode == "bl":
                ref, transit = f"{rng.choice(_CARRIERS)}{rng.randrange(10**8, 10**9)}", rng.randint(4, MAX_TRANSIT)
            elif mode == "container":
                ref, transit = f"{rng.choice(_CONTAINER_OWNERS)}{rng.randrange(10**6, 10**7)}", rng.randint(4, MAX_TRANSIT)
            elif mode == "ucr":  # WCO UCR: year digit, exporter country, serial (road traffic here)
                ref, transit = f"6{exporter}{rng.randrange(10**11, 10**12)}", rng.randint(1, 4)
            else:
                ref, transit = f"{rng.choice(_AIRLINES)}{rng.randrange(10**7, 10**8)}", rng.randint(1, 2)
            if ref not in self.refs:
                self.refs.add(ref)
                return ref, transit

    def _n_items(self, w: _MemberWorld, *others: _MemberWorld) -> int:
        if "item_no" not in w.layout.fields or any("item_no" not in o.layout.fields for o in others):
            return 1  # a feed without item numbers files one item per declaration
        return self.rng.choices((1, 2, 3), (0.7, 0.2, 0.1))[0]

    def _item(self, trader: Trader, flow: str, reporter: str, partner: str, product: Product | None = None) -> Item:
        rng = self.rng
        if product is None:
            product = rng.choice(self.by_sector[rng.choice(trader.sectors)])
        mass = math.exp(rng.uniform(math.log(product.mass_min_kg), math.log(product.mass_max_kg)))
        unit_value = product.unit_value_usd_per_kg * trader.price_factor * math.exp(rng.gauss(0.0, product.sigma * 0.85))
        value = mass * unit_value
        if flow == "import":
            value *= rng.uniform(*CIF_MARGIN)
            origin = partner if rng.random() < 0.85 else self._nonmember()
        else:
            origin = reporter if rng.random() < 0.88 else self._nonmember()  # some re-exports
        quantity = None
        if product.quantity_unit:
            quantity = max(1, round(mass / product.kg_per_unit * rng.uniform(0.95, 1.05)))
        return Item(product, product, mass, value, quantity, origin, product.description)

    def _items(self, trader: Trader, flow: str, reporter: str, partner: str, n: int, misclassify: bool) -> list[Item]:
        """``n`` items; with ``misclassify``, at least one is goods that have a cheaper code to hide under."""
        items = [self._item(trader, flow, reporter, partner) for _ in range(n)]
        if misclassify and not any(i.product.cheaper_code for i in items):
            eligible = [p for p in PRODUCTS if p.cheaper_code]
            own = [p for p in eligible if p.sector in trader.sectors]
            items[0] = self._item(trader, flow, reporter, partner, self.rng.choice(own or eligible))
        return items

    def _declaration(self, w: _MemberWorld, night: date, flow: str, partner: str, trader: Trader,
                     ref: str, items: list[Item]) -> Declaration:
        rng = self.rng
        layout = w.layout
        if layout.currency is None:
            cur = rng.choices([c for c, _ in layout.row_currencies], [s for _, s in layout.row_currencies])[0]
        else:
            cur = layout.currency
        if layout.mass_unit is None:  # bulk goods mostly in tonnes, the rest in kilograms
            heavy = max(i.mass_kg for i in items) >= 5000
            unit = "t" if (heavy and rng.random() < 0.85) or (not heavy and rng.random() < 0.05) else "kg"
        else:
            unit = layout.mass_unit
        return Declaration(
            member=w.member, night=night, flow=flow, partner=partner, trader=trader,
            declarant=rng.choice(trader.declarants), office=rng.choice(w.offices), ref=ref,
            items=items, currency=cur, mass_unit=unit,
        )

    # -- anomalies ---------------------------------------------------------------------------------

    def _draw_kind(self, rates: dict[str, float]) -> str | None:
        u = self.rng.random()
        for kind, p in rates.items():
            if u < p:
                return kind
            u -= p
        return None

    def _apply(self, kind: str, items: list[Item]) -> bool:
        """Manipulate one item (the whole declaration for subtle undervaluation); False if not applicable."""
        rng = self.rng
        if kind == "misclassification":
            eligible = [i for i in items if i.product.cheaper_code]
            if not eligible:
                return False
            item = rng.choice(eligible)
            cheaper = PRODUCTS_BY_HS6[item.product.cheaper_code or ""]
            # The value stays that of the real goods: implausibly high for the declared code.
            item.declared = cheaper
            item.description = cheaper.description
            if not cheaper.quantity_unit:
                item.quantity = None
            item.mark(kind)
            return True
        if kind == "subtle_undervaluation":
            factor = rng.uniform(*SUBTLE)
            for item in items:
                item.value_usd *= factor
                item.mark(kind)
            return True
        item = rng.choice(items)
        if kind == "undervaluation":
            item.value_usd *= rng.uniform(*UNDERVALUATION)
        elif kind == "overvaluation":
            item.value_usd *= rng.uniform(*OVERVALUATION)
        elif kind == "weight_manipulation":
            item.mass_kg *= rng.uniform(*(WEIGHT_UP if rng.random() < 0.5 else WEIGHT_DOWN))
        else:
            raise ValueError(kind)
        item.mark(kind)
        return True

    # -- declarations ------------------------------------------------------------------------------

    def _nonmember_trade(self, w: _MemberWorld, night: date, flow: str) -> None:
        rng = self.rng
        partner = self._nonmember()
        trader = self._trader(w)
        exporter = w.member.code if flow == "export" else partner
        ref, _ = self._new_ref(exporter)
        rates = self.rates_import if flow == "import" else self.rates_export
        kind = self._draw_kind(rates)
        if kind == "free_sample":
            product = rng.choice(PRODUCTS)
            item = Item(product, product, rng.uniform(0.05, 2.0), rng.uniform(1.0, 30.0),
                        rng.randint(1, 5) if product.quantity_unit else None, partner,
                        f"{product.description} - free sample, no commercial value")
            item.mark(kind)
            items = [item]
        else:
            n = self._n_items(w)
            items = self._items(trader, flow, w.member.code, partner, n, kind == "misclassification")
            if kind == "return":  # goods the reporter exported earlier, coming back
                for item in items:
                    item.origin = w.member.code
                    item.description = f"Returned goods: {item.description}"
                    item.mark(kind)
            elif kind is not None:
                self._apply(kind, items)
        self.decls[(w.member.code, night)].append(self._declaration(w, night, flow, partner, trader, ref, items))

    def _intra_trade(self, wa: _MemberWorld, night: date) -> None:
        """A consignment from member A to member B: A's export now, B's import after transit."""
        rng = self.rng
        others = [m for m in MEMBERS if m.code != wa.member.code]
        b = rng.choices(others, [m.declarations_per_night for m in others])[0]
        wb = self.worlds[b.code]
        ref, transit = self._new_ref(wa.member.code)
        import_night = night + timedelta(days=transit)
        exp_trader = self._trader(wa)
        kind = self._draw_kind(self.rates_intra)
        n = self._n_items(wa, wb)
        exp_items = self._items(exp_trader, "export", wa.member.code, b.code, n, kind == "misclassification")
        imp_items = [
            Item(i.product, i.declared, i.mass_kg * rng.uniform(*MIRROR_MASS), i.value_usd * rng.uniform(*CIF_MARGIN),
                 i.quantity, i.origin, i.description)
            for i in exp_items
        ]
        imp_trader = self._trader(wb, exp_items[0].product.sector)
        export_seen, import_seen = self.in_window(night), self.in_window(import_night)
        phantom = kind == "phantom_export" and export_seen
        if phantom:
            for item in exp_items:
                item.mark("phantom_export")
        elif kind == "subtle_undervaluation" and export_seen and import_seen:
            # Inside the HS6 peer spread: only the partner's export declaration reveals it.
            self._apply(kind, imp_items)
        elif kind in ("undervaluation", "misclassification") and import_seen:
            self._apply(kind, imp_items)
        elif kind == "overvaluation" and export_seen:
            self._apply(kind, exp_items)
        elif kind == "weight_manipulation":
            if rng.random() < 0.5 and export_seen:
                self._apply(kind, exp_items)
            elif import_seen:
                self._apply(kind, imp_items)
        if export_seen:
            self.decls[(wa.member.code, night)].append(
                self._declaration(wa, night, "export", b.code, exp_trader, ref, exp_items))
        if import_seen and not phantom:
            self.decls[(b.code, import_night)].append(
                self._declaration(wb, import_night, "import", wa.member.code, imp_trader, ref, imp_items))

    def run(self) -> None:
        rng = self.rng
        night = self.start - timedelta(days=MAX_TRANSIT)
        while night <= self.end:
            seen = self.in_window(night)
            for m in MEMBERS:
                w = self.worlds[m.code]
                n = max(1, round(m.declarations_per_night * self.scale * rng.uniform(0.85, 1.15)))
                # Intra trade in both directions is about m.intra_share of a member's declarations;
                # the member itself originates the exports half of it.
                half = m.intra_share / 2
                n_own = max(1, round(n * (1 - half)))
                p_intra = half / (1 - half)
                for _ in range(n_own):
                    u = rng.random()
                    if u < p_intra:
                        self._intra_trade(w, night)
                    elif seen:
                        self._nonmember_trade(w, night, "export" if u < p_intra + (1 - p_intra) / 2 else "import")
            night += timedelta(days=1)

    def salt(self) -> None:
        """Add unparseable rows to the last night's file of every feed (own random stream)."""
        saved, self.rng = self.rng, random.Random(f"tradesentry-samplegen:{self.seed}:salt")
        try:
            for m in MEMBERS:
                w = self.worlds[m.code]
                fields = w.layout.fields
                defects = ["bad_number", "bad_date", "bad_hs_code", "unknown_country", "too_few_fields"]
                defects.append("unknown_currency" if "currency" in fields else "unknown_flow")
                if "mass_unit" in fields:
                    defects.append("unknown_mass_unit")
                for defect in defects:
                    flow = self.rng.choice(("import", "export"))
                    partner = self._nonmember()
                    trader = self._trader(w)
                    ref, _ = self._new_ref(m.code if flow == "export" else partner)
                    items = [self._item(trader, flow, m.code, partner)]
                    d = self._declaration(w, self.end, flow, partner, trader, ref, items)
                    d.defect = defect
                    self.decls[(m.code, self.end)].append(d)
        finally:
            self.rng = saved


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------


def _num(x: float, decimals: int, mark: str, strip: bool = False) -> str:
    s = f"{x:.{decimals}f}"
    if strip and "." in s:
        s = s.rstrip("0").rstrip(".")
    return s.replace(".", mark) if mark != "." else s


def _hs(layout: FeedLayout, product: Product, suffix: str) -> str:
    code = product.code_in(layout.hs_edition)
    if layout.hs_format == "dotted":
        return f"{code[:4]}.{code[4:]}"
    if layout.hs_format in ("national8", "national10"):
        return code + suffix
    return code


def _country(layout: FeedLayout, code: str) -> str:
    return ALPHA3[code] if layout.country_code == "alpha3" else code


# When a partner delivers the file of a night: 01:00 UTC the morning after (the nightly run pulls at
# 03:00). Written as the file's modification time, which the pipeline's freshness check judges.
DELIVERY_HOURS_AFTER_NIGHT = 25


def _write_delivered(path: Path, data: bytes, night: date) -> None:
    path.write_bytes(data)
    at = datetime(night.year, night.month, night.day, tzinfo=UTC) + timedelta(hours=DELIVERY_HOURS_AFTER_NIGHT)
    os.utime(path, (at.timestamp(), at.timestamp()))


def _bad_date(fmt: str, year: int) -> str:
    return fmt.replace("%Y", str(year)).replace("%m", "13").replace("%d", "45").replace("%y", str(year)[2:])


class _Writer:
    def __init__(self, sim: _Simulation, out_dir: Path, rates: dict[date, dict[str, float]]) -> None:
        self.sim = sim
        self.out = out_dir
        self.rates = rates
        self.rng = random.Random(f"tradesentry-samplegen:{sim.seed}:files")
        self.salt_rng = random.Random(f"tradesentry-samplegen:{sim.seed}:salt-positions")
        self.ground_truth: list[tuple[str, ...]] = []
        # Every written item of a consignment between two members: the true export/import pairs.
        self.consignment_items: list[tuple[str, str, str, str, str]] = []
        self.salted: list[tuple[str, ...]] = []
        self.rows: dict[str, int] = {}
        self.declarations = 0
        self.anomalous = 0

    def rate(self, currency: str, d: date) -> float:
        return self.rates[_business_day_on_or_before(d)][currency]

    def _row(self, w: _MemberWorld, d: Declaration, item_no: int, item: Item) -> list[str]:
        la = w.layout
        fx = self.rate(d.currency, d.night)
        value_dec = 0 if d.currency == "JPY" else la.value_decimals
        unit = d.mass_unit
        mass = item.mass_kg / MASS_FACTOR_TO_KG[unit]
        suffixes = w.hs_suffixes[item.declared.hs6]
        # A stable choice among the feed's national lines for this code (no hash(): it is salted).
        suffix = suffixes[zlib.crc32(f"{d.declaration_id}/{item_no}".encode()) % len(suffixes)]
        values = {
            "declaration_id": d.declaration_id,
            "item_no": str(item_no),
            "declaration_date": d.night.strftime(la.date_format),
            "flow": la.flow_codes[d.flow],
            "hs_code": _hs(la, item.declared, suffix),
            "partner_country": _country(la, d.partner),
            "origin_country": _country(la, item.origin),
            "trader_id": d.trader.trader_id,
            "trader_name": d.trader.name,
            "declarant_id": d.declarant,
            "customs_office": d.office,
            "quantity": "" if item.quantity is None else str(item.quantity),
            "quantity_unit": item.declared.quantity_unit if item.quantity is not None else "",
            "net_mass": _num(mass, 6 if unit == "t" else 3, la.decimal, strip=True),
            "mass_unit": unit,
            "customs_value": _num(item.value_usd * fx, value_dec, la.decimal),
            "currency": d.currency,
            "valuation_basis": la.valuation[d.flow],
            "consignment_ref": render_ref(d.ref, la.ref_style),
            "goods_description": item.description,
        }
        row = [values[f] for f in la.fields]
        if d.defect is not None:
            row = self._break(la, row, d.defect)
        return row

    @staticmethod
    def _break(la: FeedLayout, row: list[str], defect: str) -> list[str]:
        idx = {f: i for i, f in enumerate(la.fields)}
        if defect == "too_few_fields":
            return row[:3]
        row = list(row)
        if defect == "bad_number":
            row[idx["customs_value"]] = "1O5" + (f"{la.decimal}20" if la.value_decimals else "20")
        elif defect == "bad_date":
            row[idx["declaration_date"]] = _bad_date(la.date_format, 2026)
        elif defect == "bad_hs_code":
            row[idx["hs_code"]] = "ABCDEF"
        elif defect == "unknown_country":
            row[idx["partner_country"]] = "YYY" if la.country_code == "alpha3" else "YY"
        elif defect == "unknown_currency":
            row[idx["currency"]] = "ZZD"
        elif defect == "unknown_flow":
            row[idx["flow"]] = "Z"
        elif defect == "unknown_mass_unit":
            row[idx["mass_unit"]] = "oz"
        else:
            raise ValueError(defect)
        return row

    def write_feed(self, w: _MemberWorld) -> None:
        la = w.layout
        folder = self.out / la.feed
        folder.mkdir(parents=True, exist_ok=True)
        seq = self.rng.randrange(10_000, 90_000)  # numbering continues from before the sample
        total = 0
        night = self.sim.start
        while night <= self.sim.end:
            decls = self.sim.decls.get((w.member.code, night), [])
            normal = [d for d in decls if d.defect is None]
            salted = [d for d in decls if d.defect is not None]
            self.rng.shuffle(normal)  # filing order mixes imports, exports and arrivals
            # Salted declarations are numbered after the night's others so that salting a sample
            # leaves every other declaration (and the ground truth) unchanged.
            for d in normal + salted:
                seq += 1
                d.declaration_id = la.declaration_id(seq, d.flow, night)
            lines: list[tuple[Declaration, int, Item, list[str]]] = []
            for d in normal:
                for k, item in enumerate(d.items, start=1):
                    lines.append((d, k, item, self._row(w, d, k, item)))
            for d in salted:
                pos = self.salt_rng.randint(0, len(lines))
                lines.insert(pos, (d, 1, d.items[0], self._row(w, d, 1, d.items[0])))
            name = la.file_name(night)
            buf = io.StringIO()
            writer = csv.writer(buf, delimiter=la.delimiter, quotechar='"', lineterminator="\n")
            writer.writerow(la.headers)
            for line_no, (d, k, item, row) in enumerate(lines, start=1):
                writer.writerow(row)
                if d.defect is None and d.partner in MEMBER_CODES:
                    self.consignment_items.append((d.ref, d.flow, d.member.code, d.declaration_id, str(k)))
                if d.defect is not None:
                    self.salted.append((la.feed, name, str(line_no), d.defect))
                elif item.kind is not None:
                    self.ground_truth.append((
                        d.member.code, d.declaration_id, str(k), night.isoformat(), item.kind,
                        item.manipulated_field, "true" if item.is_anomaly else "false",
                    ))
            self.declarations += len(normal)
            self.anomalous += sum(1 for d in normal if any(i.is_anomaly for i in d.items))
            _write_delivered(folder / name, buf.getvalue().encode(la.encoding), night)
            total += len(lines)
            night += timedelta(days=1)
        self.rows[la.feed] = total

    def write_rates(self) -> None:
        folder = self.out / RATES_FEED
        folder.mkdir(parents=True, exist_ok=True)
        total = 0
        night = self.sim.start
        while night <= self.sim.end:
            days: list[date] = []
            if night == self.sim.start:  # back-fill so the first nights (a weekend, say) have a rate
                days += [night - timedelta(days=k) for k in range(RATES_BACKFILL_DAYS, 0, -1)]
            days.append(night)
            buf = io.StringIO()
            writer = csv.writer(buf, lineterminator="\n")
            writer.writerow(RATES_HEADER)
            for d in days:
                if d.weekday() >= 5:
                    continue  # published on business days only: weekend files are header-only
                for cur in CURRENCIES:
                    writer.writerow((d.isoformat(), cur, f"{self.rates[d][cur]:.6f}"))
                    total += 1
            _write_delivered(folder / RATES_FILE_PATTERN.format(night=night), buf.getvalue().encode("utf-8"), night)
            night += timedelta(days=1)
        self.rows[RATES_FEED] = total


def _write_csv(path: Path, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    path.write_bytes(buf.getvalue().encode("utf-8"))


CONSIGNMENT_PAIRS_HEADER = (
    "consignment_ref",
    "export_country",
    "export_declaration_id",
    "export_item_no",
    "import_country",
    "import_declaration_id",
    "import_item_no",
)
MEMBER_CODES = frozenset(m.code for m in MEMBERS)


def _consignment_pairs(items: list[tuple[str, str, str, str, str]]) -> list[tuple[str, ...]]:
    """The truth for mirror matching: the export item and the import item of one consignment, paired
    by their position in the consignment; consignments seen on one side only have no pair."""
    sides: dict[str, dict[str, list[tuple[str, str, str]]]] = {}
    for ref, flow, country, decl_id, item_no in items:
        sides.setdefault(ref, {}).setdefault(flow, []).append((country, decl_id, item_no))
    rows: list[tuple[str, ...]] = []
    for ref in sorted(sides):
        exp, imp = sides[ref].get("export", []), sides[ref].get("import", [])
        for e, i in zip(exp, imp, strict=False):
            rows.append((ref, *e, *i))
    return rows


def generate(
    out_dir: Path,
    start: date,
    nights: int,
    seed: int = 7,
    scale: float = 1.0,
    salt_bad_rows: bool = False,
    proportions: str | Mapping[str, float] | None = None,
) -> SampleInfo:
    """Write the synthetic sample for ``nights`` nights from ``start`` into ``out_dir``.

    Layout: ``<out>/<feed>/<file per night>`` for the seven declarations feeds (xa..xg) and
    ``<out>/exchange_rates/rates_<YYYYMMDD>.csv``; ``<out>/ground_truth.csv``; ``<out>/README.txt``;
    with ``salt_bad_rows``, unparseable lines in the last night's file of every feed, listed in
    ``<out>/salted_rows.csv``. ``proportions``: a profile name of ``PROFILES`` or a mapping kind ->
    multiplier on the default anomaly rates (None, the default: today's rates). The same arguments
    give byte-identical files.
    """
    multipliers = anomaly_multipliers(proportions)
    if nights < 1:
        raise ValueError("nights must be at least 1")
    if scale <= 0:
        raise ValueError("scale must be positive")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    end = start + timedelta(days=nights - 1)
    sim = _Simulation(seed, scale, start, end, multipliers)
    sim.run()
    if salt_bad_rows:
        sim.salt()
    rates = _rates(seed, start - timedelta(days=MAX_TRANSIT + RATES_BACKFILL_DAYS + 14), end)
    writer = _Writer(sim, out_dir, rates)
    for m in MEMBERS:
        writer.write_feed(sim.worlds[m.code])
    writer.write_rates()

    gt_path = out_dir / "ground_truth.csv"
    _write_csv(gt_path, GROUND_TRUTH_HEADER, sorted(writer.ground_truth, key=lambda r: (r[3], r[0], r[1], int(r[2]))))
    pairs_path = out_dir / "consignment_pairs.csv"
    _write_csv(pairs_path, CONSIGNMENT_PAIRS_HEADER, _consignment_pairs(writer.consignment_items))
    salted_path = None
    if salt_bad_rows:
        salted_path = out_dir / "salted_rows.csv"
        _write_csv(salted_path, SALTED_HEADER, writer.salted)
    elif (out_dir / "salted_rows.csv").exists():
        (out_dir / "salted_rows.csv").unlink()  # a stale list from an earlier salted run would mislead
    salted_note = "\nsalted_rows.csv: lines deliberately made unparseable, by feed, file and line." if salt_bad_rows else ""
    readme = README.format(seed=seed, scale=scale, start=start, end=end, salted=salted_note)
    if multipliers:
        name = proportions if isinstance(proportions, str) else "custom"
        mults = ", ".join(f"{k} x{v:g}" for k, v in sorted(multipliers.items()))
        readme += f"Anomaly proportions: profile {name} ({mults}).\n"
    (out_dir / "README.txt").write_bytes(readme.encode("utf-8"))
    return SampleInfo(
        out_dir=out_dir,
        start=start,
        end=end,
        nights=nights,
        feeds=[m.feed for m in MEMBERS] + [RATES_FEED],
        rows=dict(writer.rows),
        ground_truth=gt_path,
        salted_rows=salted_path,
        declarations=writer.declarations,
        anomalous_declarations=writer.anomalous,
    )
