"""The invented world the sample lives in: products, member countries, partners and exchange rates.

Everything here is fixed data (no randomness): the generator draws from it. Product prices are
plausible orders of magnitude for the goods, not statistics of any real trade.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

# --------------------------------------------------------------------------------------------------
# Products
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Product:
    """One HS2022 subheading the sample trades."""

    hs6: str
    description: str
    unit_value_usd_per_kg: float  # typical FOB unit value, the median of the lognormal
    sigma: float  # lognormal spread of the unit value around it (peer spread)
    mass_min_kg: float  # typical net mass of one declaration item, drawn log-uniform in [min, max]
    mass_max_kg: float
    sector: str  # traders specialise in one or two sectors
    quantity_unit: str = ""  # supplementary unit; "" when the code has none
    kg_per_unit: float = 0.0  # net mass of one supplementary unit
    hs2017: str | None = None  # the HS2017 code when it differs (the code was split or moved in HS2022)
    cheaper_code: str | None = None  # a lower-duty code the goods are misdeclared under

    @property
    def chapter(self) -> int:
        return int(self.hs6[:2])

    def code_in(self, edition: str) -> str:
        return self.hs2017 if edition == "HS2017" and self.hs2017 else self.hs6


P = Product
PRODUCTS: tuple[Product, ...] = (
    # Food (chapters 08, 09, 10, 17)
    P("080390", "Bananas, fresh or dried", 0.95, 0.25, 2000, 22000, "food"),
    P("080510", "Oranges, fresh or dried", 1.05, 0.30, 1000, 20000, "food"),
    P("080610", "Grapes, fresh", 2.30, 0.35, 500, 15000, "food"),
    P("080132", "Cashew nuts, fresh or dried, shelled", 7.20, 0.30, 200, 16000, "food"),
    P("090111", "Coffee, not roasted, not decaffeinated", 4.60, 0.30, 1000, 19000, "food"),
    P("090121", "Coffee, roasted, not decaffeinated", 11.50, 0.35, 100, 8000, "food", cheaper_code="090111"),
    P("090230", "Black tea (fermented) in immediate packings of a content not exceeding 3 kg", 6.50, 0.40, 50, 5000, "food"),
    P("090411", "Pepper, neither crushed nor ground", 5.20, 0.35, 200, 10000, "food"),
    P("100630", "Rice, semi-milled or wholly milled", 0.62, 0.25, 5000, 25000, "food"),
    P("170199", "Cane or beet sugar, solid, other", 0.55, 0.25, 5000, 25000, "food"),
    # Beverages and tobacco (22, 24)
    P("220421", "Wine of fresh grapes, in containers holding 2 l or less", 5.80, 0.45, 300, 12000, "drinks_tobacco", "l", 1.25),
    P("220830", "Whiskies", 14.00, 0.45, 200, 10000, "drinks_tobacco", "l", 1.30, cheaper_code="220421"),
    P("240120", "Tobacco, partly or wholly stemmed or stripped", 5.50, 0.35, 1000, 18000, "drinks_tobacco"),
    P("240220", "Cigarettes containing tobacco", 48.00, 0.35, 100, 8000, "drinks_tobacco", "1000u", 1.2, cheaper_code="240120"),
    # Chemicals, pharmaceuticals, plastics (29, 30, 33, 39)
    P("290511", "Methanol (methyl alcohol)", 0.45, 0.30, 5000, 25000, "chemicals"),
    P("291736", "Terephthalic acid and its salts", 1.00, 0.25, 5000, 25000, "chemicals"),
    P("294110", "Penicillins and their derivatives; salts thereof", 45.00, 0.40, 10, 2000, "chemicals"),
    P("300490", "Medicaments put up in measured doses, other", 65.00, 0.45, 5, 2000, "chemicals"),
    P("330499", "Beauty or make-up preparations, other", 24.00, 0.40, 20, 3000, "chemicals"),
    P("390110", "Polyethylene having a specific gravity of less than 0.94, in primary forms", 1.35, 0.25, 2000, 25000, "chemicals"),
    P("392330", "Carboys, bottles, flasks and similar articles of plastics", 3.30, 0.35, 100, 8000, "chemicals"),
    # Tyres and vehicles (40, 87)
    P("401110", "New pneumatic tyres, of rubber, of a kind used on motor cars", 4.30, 0.30, 500, 18000, "vehicles", "u", 9.0, cheaper_code="401220"),
    P("401120", "New pneumatic tyres, of rubber, of a kind used on buses or lorries", 3.90, 0.30, 1000, 20000, "vehicles", "u", 55.0),
    P("401220", "Used pneumatic tyres of rubber", 0.85, 0.40, 1000, 18000, "vehicles", "u", 8.0),
    P("870323", "Motor cars, spark-ignition engine, cylinder capacity over 1500 cc but not over 3000 cc", 17.00, 0.35, 1200, 30000, "vehicles", "u", 1450.0, cheaper_code="870899"),
    P("870899", "Parts and accessories of motor vehicles, other", 8.50, 0.40, 50, 10000, "vehicles"),
    # Textiles, apparel, footwear (52, 61, 62, 63, 64)
    P("520100", "Cotton, not carded or combed", 1.85, 0.25, 5000, 22000, "apparel"),
    P("610910", "T-shirts, singlets and other vests, of cotton, knitted or crocheted", 14.50, 0.40, 50, 6000, "apparel", "u", 0.2, cheaper_code="630900"),
    P("611020", "Jerseys, pullovers, cardigans and similar articles, of cotton, knitted", 18.00, 0.40, 50, 5000, "apparel", "u", 0.45),
    P("620342", "Men's or boys' trousers, breeches and shorts, of cotton", 17.00, 0.40, 50, 6000, "apparel", "u", 0.6, cheaper_code="630900"),
    P("620462", "Women's or girls' trousers, breeches and shorts, of cotton", 18.50, 0.40, 50, 6000, "apparel", "u", 0.5),
    P("630900", "Worn clothing and other worn articles", 0.95, 0.40, 1000, 20000, "apparel"),
    P("640399", "Footwear with outer soles of rubber, plastics or leather and uppers of leather, other", 38.00, 0.40, 50, 4000, "apparel", "pair", 1.1),
    P("640411", "Sports footwear with outer soles of rubber or plastics and uppers of textile materials", 22.00, 0.40, 50, 5000, "apparel", "pair", 0.8),
    # Base metals (72, 73, 76)
    P("720851", "Flat-rolled iron or non-alloy steel, hot-rolled, not in coils, thickness exceeding 10 mm", 0.85, 0.25, 10000, 25000, "metals", cheaper_code="720449"),
    P("720449", "Ferrous waste and scrap, other", 0.38, 0.30, 10000, 25000, "metals"),
    P("721420", "Bars and rods of iron or non-alloy steel, with indentations or ribs (rebar)", 0.72, 0.25, 10000, 25000, "metals"),
    P("730890", "Structures and parts of structures, of iron or steel, other", 2.60, 0.40, 500, 20000, "metals"),
    P("760110", "Aluminium, not alloyed, unwrought", 2.60, 0.25, 5000, 25000, "metals"),
    # Machinery (84)
    P("841510", "Air conditioning machines, window or wall types", 11.50, 0.35, 200, 10000, "machinery", "u", 38.0),
    P("841810", "Combined refrigerator-freezers, fitted with separate external doors", 5.60, 0.35, 500, 12000, "machinery", "u", 65.0),
    P("847130", "Portable automatic data-processing machines, weighing not more than 10 kg (laptops)", 260.00, 0.35, 20, 3000, "machinery", "u", 2.2, cheaper_code="847330"),
    P("847150", "Processing units for automatic data-processing machines", 120.00, 0.40, 20, 3000, "machinery", "u", 9.0),
    P("847330", "Parts and accessories of automatic data-processing machines", 70.00, 0.45, 10, 2000, "machinery"),
    P("848180", "Taps, cocks, valves and similar appliances, other", 19.00, 0.40, 50, 6000, "machinery"),
    # Electrical and electronic equipment (85)
    P("850440", "Static converters", 28.00, 0.40, 20, 5000, "electronics"),
    P("850760", "Lithium-ion accumulators", 22.00, 0.35, 50, 8000, "electronics"),
    P("851713", "Smartphones", 420.00, 0.35, 10, 1500, "electronics", "u", 0.4, hs2017="851712", cheaper_code="851779"),
    P("851762", "Machines for the reception, conversion and transmission or regeneration of data", 130.00, 0.40, 10, 2000, "electronics", "u", 1.6),
    P("851779", "Parts of telephone sets and other apparatus for the transmission of voice or data, other", 95.00, 0.45, 5, 1000, "electronics", hs2017="851770"),
    P("852872", "Reception apparatus for television, colour, other", 10.50, 0.35, 300, 12000, "electronics", "u", 16.0),
    P("853952", "Light-emitting diode (LED) lamps", 16.00, 0.40, 50, 4000, "electronics", "u", 0.1, hs2017="853950"),
    P("854143", "Photovoltaic cells assembled in modules or made up into panels", 4.80, 0.30, 500, 18000, "electronics", "u", 22.0, hs2017="854140"),
    P("854231", "Electronic integrated circuits: processors and controllers", 2600.00, 0.45, 0.5, 200, "electronics", "u", 0.002),
    # Instruments, furniture, lighting, toys (90, 94, 95)
    P("901890", "Instruments and appliances used in medical, surgical or veterinary sciences, other", 95.00, 0.45, 5, 2000, "consumer"),
    P("940360", "Wooden furniture, other", 4.20, 0.35, 200, 12000, "consumer"),
    P("940511", "Chandeliers and other ceiling or wall lighting fittings, designed for LED light sources", 18.00, 0.40, 50, 5000, "consumer", "u", 3.0, hs2017="940510"),
    P("950300", "Tricycles, scooters, dolls, other toys, reduced-size models and puzzles", 9.00, 0.40, 100, 8000, "consumer"),
)
del P

PRODUCTS_BY_HS6: dict[str, Product] = {p.hs6: p for p in PRODUCTS}
SECTORS: tuple[str, ...] = tuple(dict.fromkeys(p.sector for p in PRODUCTS))

# HS sections by chapter range (WCO nomenclature), written as roman numerals.
_SECTIONS: tuple[tuple[int, int, str], ...] = (
    (1, 5, "I"), (6, 14, "II"), (15, 15, "III"), (16, 24, "IV"), (25, 27, "V"), (28, 38, "VI"),
    (39, 40, "VII"), (41, 43, "VIII"), (44, 46, "IX"), (47, 49, "X"), (50, 63, "XI"), (64, 67, "XII"),
    (68, 70, "XIII"), (71, 71, "XIV"), (72, 83, "XV"), (84, 85, "XVI"), (86, 89, "XVII"),
    (90, 92, "XVIII"), (93, 93, "XIX"), (94, 96, "XX"), (97, 97, "XXI"),
)


def hs_section(chapter: int) -> str:
    for low, high, roman in _SECTIONS:
        if low <= chapter <= high:
            return roman
    raise ValueError(f"no HS section for chapter {chapter}")


def hs_products_rows() -> list[dict[str, str]]:
    """Rows of dbt_project/seeds/hs_products.csv: every HS2022 code the sample uses."""
    return [
        {"hs6": p.hs6, "hs_edition": "HS2022", "description": p.description, "section": hs_section(p.chapter)}
        for p in sorted(PRODUCTS, key=lambda p: p.hs6)
    ]


def hs_concordance_rows() -> list[dict[str, str]]:
    """Rows of dbt_project/seeds/hs_concordance.csv: HS2017 codes the sample uses that changed in HS2022.

    Real changes: 8517.12 was split into 8517.13 (smartphones) / 8517.14, 8517.70 into 8517.71 / 8517.79,
    8539.50 into 8539.51 / 8539.52 (LED lamps), 8541.40 into 8541.41-8541.49 (8541.43: PV modules) and
    9405.10 into 9405.11 (for LED) / 9405.19. One row per HS2017 code (its main successor for the goods
    the sample trades), so a join on the concordance never multiplies declarations.
    """
    return [
        {"from_edition": "HS2017", "from_hs6": p.hs2017, "to_edition": "HS2022", "to_hs6": p.hs6}
        for p in sorted(PRODUCTS, key=lambda p: p.hs2017 or "")
        if p.hs2017
    ]


def write_seeds(seeds_dir: Path) -> list[Path]:
    """Write the two HS seeds (the files in the repository are produced by this function)."""
    seeds_dir.mkdir(parents=True, exist_ok=True)
    out = []
    for name, header, rows in (
        ("hs_products.csv", ["hs6", "hs_edition", "description", "section"], hs_products_rows()),
        ("hs_concordance.csv", ["from_edition", "from_hs6", "to_edition", "to_hs6"], hs_concordance_rows()),
    ):
        path = seeds_dir / name
        with path.open("w", encoding="utf-8", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=header, lineterminator="\n")
            w.writeheader()
            w.writerows(rows)
        out.append(path)
    return out


# --------------------------------------------------------------------------------------------------
# Countries
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """A member country of the joint operation (user-assigned ISO code, fictitious)."""

    code: str  # alpha-2, user-assigned XA-XZ
    alpha3: str  # user-assigned alpha-3 (XAA-XZZ range) used by the feeds that write alpha-3 codes
    feed: str
    membership: str  # core | supporting
    currency: str  # the member's currency (ISO 4217)
    declarations_per_night: int  # at scale 1.0
    intra_share: float  # share of the member's declarations that are trade with other members
    name_stems: tuple[str, ...]  # invented trader name stems (encodable in the feed's encoding)
    name_forms: tuple[str, ...]  # "{stem}" templates giving the company form


MEMBERS: tuple[Member, ...] = (
    Member(
        "XA", "XAA", "xa", "core", "EUR", 170, 0.36,
        ("Quillmoor", "Bramblewick", "Zentharo", "Fennivale", "Oakrune", "Larkspire", "Dunmere",
         "Velloran", "Corvane", "Thistlegate", "Émeraude Nova", "Brisaval"),
        ("{} Trading B.V.", "{} Logistics", "{} Import-Export N.V.", "{} Supply Co."),
    ),
    Member(
        "XB", "XBB", "xb", "core", "CHF", 150, 0.34,
        # Latin-1 feed: every stem carries a character outside ASCII.
        ("Árvíz", "Mühlenbrück", "Sörenstål", "Grünwaldé", "Fjällholm", "Bärenzahn", "Löwenmarkt",
         "Schnéeberg", "Zürchtal", "Edelweiß", "Kränzli", "Ölmühle Nord"),
        ("Société {} Trading", "{} Handels AG", "{} Import GmbH", "{} Logistique Sàrl"),
    ),
    Member(
        "XC", "XCC", "xc", "core", "JPY", 145, 0.33,
        ("Kanzaki-Orbis", "Hoshimura", "Tsukiyoru", "Aokaze", "Mizuhara Lantern", "Kurogane",
         "Sakuraido", "Yumegawa", "Shirakumo", "Tanekoma"),
        ("{} Shoji K.K.", "{} Trading Co., Ltd.", "{} Bussan K.K."),
    ),
    Member(
        "XD", "XDD", "xd", "core", "USD", 135, 0.35,
        ("Prairiefox", "Bluegill Harbor", "Copperbend", "Redwillow", "Stonejack", "Silverpine",
         "Hartwell, Price & Sons", "Maplecrest", "Gravelrun", "Wolfbarrow"),
        ("{} Imports LLC", "{} Trading Inc.", "{} Distribution Corp."),
    ),
    Member(
        "XE", "XEE", "xe", "core", "GBP", 125, 0.37,
        # Latin-1 feed: every stem carries a character outside ASCII.
        ("Ærøfjord", "Cañamar", "Bølgevik", "Saint-Émeric", "Dúnbeag", "Glenmóra", "Høyvik",
         "Pérignan", "Ashcombe & Évora", "Faolán"),
        ("{} Ltd", "{} Freight PLC", "{} Merchants LLP"),
    ),
    Member(
        "XF", "XFF", "xf", "supporting", "TRY", 110, 0.31,
        # UTF-8 feed with Turkish letters Latin-1 cannot encode (s and g with marks, dotless i, dotted I).
        ("Şimşekova", "Göktaşlı", "Yıldızhan", "Çınarlıdere", "Ağaçkent", "Deniztepe", "Kuzeyyıldız",  # noqa: RUF001
         "İpekova", "Tunçbay", "Güneşpınar"),  # noqa: RUF001
        ("{} Dış Ticaret A.Ş.", "{} Lojistik Ltd. Şti.", "{} İthalat İhracat A.Ş."),  # noqa: RUF001
    ),
    Member(
        "XG", "XGG", "xg", "supporting", "INR", 105, 0.32,
        ("Kalpavriksha", "Suryodaya", "Nilgiri Peakline", "Chandrakiran", "Meghdoot", "Tarangini",
         "Vrindakosh", "Hemalaya Crest", "Sarangpur", "Devyanka"),
        ("{} Exim Pvt Ltd", "{} Tradelinks LLP", "{} Overseas Pvt Ltd"),
    ),
)

MEMBERS_BY_CODE: dict[str, Member] = {m.code: m for m in MEMBERS}
MEMBER_ALPHA3: dict[str, str] = {m.code: m.alpha3 for m in MEMBERS}

# Non-member trading partners: real ISO 3166-1 codes (alpha-2, alpha-3) and a relative weight.
NONMEMBERS: tuple[tuple[str, str, int], ...] = (
    ("CN", "CHN", 24), ("US", "USA", 12), ("DE", "DEU", 10), ("VN", "VNM", 7), ("IN", "IND", 7),
    ("TR", "TUR", 6), ("AE", "ARE", 6), ("BR", "BRA", 5), ("JP", "JPN", 4), ("KR", "KOR", 4),
    ("GB", "GBR", 4), ("FR", "FRA", 4), ("IT", "ITA", 3), ("NL", "NLD", 3), ("TH", "THA", 3),
    ("MX", "MEX", 2), ("ZA", "ZAF", 2), ("NG", "NGA", 2), ("SA", "SAU", 2), ("BD", "BGD", 2),
    ("CL", "CHL", 1), ("EG", "EGY", 1),
)
ALPHA3: dict[str, str] = {a2: a3 for a2, a3, _ in NONMEMBERS} | MEMBER_ALPHA3

# --------------------------------------------------------------------------------------------------
# Exchange rates: starting level (units per USD) and daily volatility of the synthetic random walk.
# --------------------------------------------------------------------------------------------------

RATE_START: dict[str, tuple[float, float, float]] = {
    # currency: (units per USD at the start, daily log volatility, daily log drift)
    "CHF": (0.8650, 0.0045, 0.0),
    "EUR": (0.9230, 0.0040, 0.0),
    "GBP": (0.7810, 0.0042, 0.0),
    "INR": (86.20, 0.0025, 0.0001),
    "JPY": (151.40, 0.0055, 0.0),
    "TRY": (41.80, 0.0050, 0.0009),  # a steadily weakening currency
    "USD": (1.0, 0.0, 0.0),  # published too, so a join never special-cases the dollar
}
CURRENCIES: tuple[str, ...] = tuple(sorted(RATE_START))
KG_PER_LB = 0.45359237
