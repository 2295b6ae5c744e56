"""How each sample feed writes its file: the "real world" layouts that the YAML specs in feeds/ describe.

Every feed looks different on purpose (delimiter, encoding, decimal mark, date format, currency,
mass unit, tariff code format and edition, country codes, flow codes, identifier formats), because
real national feeds do. ``tests/test_samplegen.py`` checks that feeds/<feed>.yaml describes each
layout here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

MASS_FACTOR_TO_KG: dict[str, float] = {"kg": 1.0, "t": 1000.0, "lb": 0.45359237, "g": 0.001}


@dataclass(frozen=True)
class FeedLayout:
    feed: str
    country: str
    file_pattern: str  # file name with a {night:...} placeholder, inside <out>/<feed>/
    delimiter: str
    encoding: str
    decimal: str
    date_format: str
    hs_format: str  # hs6 | dotted | national8 | national10
    hs_edition: str  # HS2022 | HS2017
    country_code: str  # alpha2 | alpha3
    flow_codes: dict[str, str]  # canonical flow -> the code written in the file
    columns: tuple[tuple[str, str], ...]  # (canonical field, header) in file order
    ref_style: str  # how the feed writes consignment references (see render_ref)
    id_style: str  # how the feed numbers declarations (see declaration_id)
    currency: str | None = None  # None: a per-row currency column
    row_currencies: tuple[tuple[str, float], ...] = ()  # per-row currencies and their shares
    mass_unit: str | None = None  # None: a per-row mass unit column
    value_decimals: int = 2
    valuation: dict[str, str] = field(default_factory=lambda: {"import": "CIF", "export": "FOB"})

    @property
    def headers(self) -> list[str]:
        return [h for _, h in self.columns]

    @property
    def fields(self) -> list[str]:
        return [f for f, _ in self.columns]

    def file_name(self, night: date) -> str:
        return self.file_pattern.format(night=night)

    def declaration_id(self, seq: int, flow: str, night: date) -> str:
        """The feed's own declaration number format; ``seq`` is unique per reporting country."""
        yy = night.strftime("%y")
        imp = flow == "import"
        if self.id_style == "xa":
            return f"{'IM' if imp else 'EX'}{yy}-{seq:06d}"
        if self.id_style == "mrn":  # EU-style movement reference number: yy, country, serial, procedure, check
            return f"{yy}{self.country}{seq:012d}{'J' if imp else 'A'}{seq % 7}"
        if self.id_style == "numeric":
            return f"{(1 if imp else 2)}{seq:010d}"
        if self.id_style == "entry":  # US-style entry number: filer code, serial, check digit
            return f"{self.country}7-{seq:07d}-{seq % 10}"
        if self.id_style == "beyanname":
            return f"{yy}34{'IM' if imp else 'EX'}{seq:08d}"
        if self.id_style == "bill":  # bill of entry (imports) / shipping bill (exports)
            return f"{'BE' if imp else 'SB'}{seq:07d}"
        raise ValueError(f"unknown id_style {self.id_style}")


def _c(*pairs: str) -> tuple[tuple[str, str], ...]:
    """Columns from 'canonical=header' strings, in file order."""
    out = []
    for p in pairs:
        canonical, header = p.split("=")
        out.append((canonical, header))
    return tuple(out)


LAYOUTS: tuple[FeedLayout, ...] = (
    FeedLayout(
        feed="xa", country="XA", file_pattern="XA_{night:%Y%m%d}.csv",
        delimiter=",", encoding="utf-8", decimal=".", date_format="%Y-%m-%d",
        hs_format="hs6", hs_edition="HS2022", country_code="alpha2",
        flow_codes={"import": "import", "export": "export"},
        columns=_c("declaration_id=decl_id", "item_no=item_no", "declaration_date=decl_date", "flow=flow",
                   "hs_code=hs_code", "partner_country=partner", "origin_country=origin",
                   "trader_id=trader_eori", "trader_name=trader_name", "declarant_id=declarant",
                   "customs_office=office", "quantity=qty", "quantity_unit=qty_unit",
                   "net_mass=net_mass_kg", "customs_value=value_eur", "consignment_ref=transport_ref",
                   "goods_description=description"),
        ref_style="upper", id_style="xa", currency="EUR", mass_unit="kg",
    ),
    FeedLayout(
        feed="xb", country="XB", file_pattern="XB_Zollanmeldungen_{night:%Y%m%d}.csv",
        delimiter=";", encoding="latin-1", decimal=",", date_format="%d.%m.%Y",
        hs_format="national8", hs_edition="HS2022", country_code="alpha2",
        flow_codes={"import": "E", "export": "A"},  # Einfuhr / Ausfuhr
        columns=_c("declaration_id=Anmeldung", "item_no=Position", "declaration_date=Annahmedatum",
                   "flow=Verkehrsrichtung", "hs_code=Tarifnummer", "partner_country=Partnerland",
                   "origin_country=Ursprungsland", "trader_id=UID", "trader_name=Firma",
                   "declarant_id=Spediteur", "customs_office=Zollstelle", "quantity=Zusatzmenge",
                   "quantity_unit=Zusatzeinheit", "net_mass=Eigenmasse", "customs_value=Zollwert",
                   "consignment_ref=Sendungsnummer", "goods_description=Warenbezeichnung"),
        ref_style="lower_dash4", id_style="mrn", currency="CHF", mass_unit="kg",
    ),
    FeedLayout(
        feed="xc", country="XC", file_pattern="XC_DECL_{night:%Y%m%d}.txt",
        delimiter="|", encoding="utf-8", decimal=".", date_format="%Y%m%d",
        hs_format="national10", hs_edition="HS2022", country_code="alpha3",
        flow_codes={"import": "1", "export": "2"},
        columns=_c("declaration_id=DECL_NO", "item_no=ITEM_NO", "declaration_date=ACCEPT_DATE",
                   "flow=TRADE_TYPE", "hs_code=STAT_CODE", "partner_country=PARTNER_CTY",
                   "origin_country=ORIGIN_CTY", "trader_id=TRADER_CODE", "declarant_id=BROKER_CODE",
                   "customs_office=OFFICE_CODE", "quantity=QTY", "quantity_unit=QTY_UNIT",
                   "net_mass=NET_WT_T", "customs_value=VALUE_JPY", "valuation_basis=VAL_BASIS",
                   "consignment_ref=BL_NO"),
        ref_style="space_prefix", id_style="numeric", currency="JPY", mass_unit="t", value_decimals=0,
    ),
    FeedLayout(
        feed="xd", country="XD", file_pattern="XD_entries_{night:%Y%m%d}.tsv",
        delimiter="\t", encoding="utf-8", decimal=".", date_format="%m/%d/%Y",
        hs_format="dotted", hs_edition="HS2017", country_code="alpha2",
        flow_codes={"import": "IMPORT", "export": "EXPORT"},
        # No item numbers: every entry is one line.
        columns=_c("declaration_id=entry_number", "declaration_date=entry_date", "flow=direction",
                   "hs_code=hts_code", "partner_country=country", "origin_country=country_of_origin",
                   "trader_id=ior_number", "trader_name=ior_name", "declarant_id=filer_code",
                   "customs_office=port_code", "quantity=quantity", "quantity_unit=unit",
                   "net_mass=net_weight_lb", "customs_value=value_usd", "consignment_ref=bill_of_lading",
                   "goods_description=commodity_description"),
        ref_style="dash_prefix", id_style="entry", currency="USD", mass_unit="lb",
    ),
    FeedLayout(
        feed="xe", country="XE", file_pattern="XE_CDS_{night:%Y%m%d}.csv",
        delimiter=";", encoding="latin-1", decimal=",", date_format="%d/%m/%Y",
        hs_format="hs6", hs_edition="HS2022", country_code="alpha3",
        flow_codes={"import": "IM", "export": "EX"},
        columns=_c("declaration_id=DeclarationRef", "item_no=ItemNumber", "declaration_date=AcceptanceDate",
                   "flow=FlowCode", "hs_code=CommodityCode", "partner_country=PartnerCountry",
                   "origin_country=OriginCountry", "trader_id=TraderEORI", "trader_name=TraderName",
                   "declarant_id=AgentId", "customs_office=OfficeCode", "quantity=SupplementaryUnits",
                   "quantity_unit=SupplementaryUnitCode", "net_mass=NetMass", "mass_unit=MassUnit",
                   "customs_value=CustomsValueGBP", "consignment_ref=ConsignmentUCR",
                   "goods_description=GoodsDescription"),
        ref_style="spaced4", id_style="mrn", currency="GBP", mass_unit=None,
    ),
    FeedLayout(
        feed="xf", country="XF", file_pattern="XF_beyanname_{night:%Y%m%d}.csv",
        delimiter=",", encoding="utf-8", decimal=".", date_format="%d.%m.%Y",
        hs_format="national8", hs_edition="HS2017", country_code="alpha2",
        flow_codes={"import": "4000", "export": "1000"},  # customs procedure codes: release / export
        columns=_c("declaration_id=beyanname_no", "item_no=kalem_no", "declaration_date=tescil_tarihi",
                   "flow=rejim", "hs_code=gtip", "partner_country=ulke", "origin_country=mense",
                   "trader_id=vergi_no", "trader_name=firma_unvani", "declarant_id=musavir",
                   "customs_office=gumruk_idaresi", "quantity=miktar", "quantity_unit=olcu_birimi",
                   "net_mass=net_kg", "customs_value=kiymet_try", "consignment_ref=tasima_belgesi",
                   "goods_description=esya_tanimi"),
        ref_style="lower_dot_prefix", id_style="beyanname", currency="TRY", mass_unit="kg",
    ),
    FeedLayout(
        feed="xg", country="XG", file_pattern="XG_BE_{night:%Y%m%d}.txt",
        delimiter="|", encoding="utf-8", decimal=".", date_format="%Y-%m-%d",
        hs_format="hs6", hs_edition="HS2022", country_code="alpha2",
        flow_codes={"import": "Import", "export": "Export"},
        columns=_c("declaration_id=be_sb_no", "item_no=item_sl", "declaration_date=be_sb_date",
                   "flow=trade_flow", "hs_code=hs_code", "partner_country=partner_country",
                   "trader_id=iec", "trader_name=trader", "declarant_id=cha_code",
                   "customs_office=port", "quantity=qty", "quantity_unit=uqc", "net_mass=net_wt_kg",
                   "customs_value=assessable_value", "currency=invoice_currency",
                   "consignment_ref=mawb_bl_no"),
        ref_style="slash_prefix", id_style="bill", currency=None,
        row_currencies=(("INR", 0.65), ("USD", 0.28), ("EUR", 0.07)), mass_unit="kg",
    ),
)

LAYOUTS_BY_FEED: dict[str, FeedLayout] = {la.feed: la for la in LAYOUTS}

RATES_FILE_PATTERN = "rates_{night:%Y%m%d}.csv"
RATES_HEADER = ("date", "currency", "units_per_usd")


def _split_prefix(ref: str) -> tuple[str, str]:
    """The carrier / owner prefix of a reference and the rest (letters first, else 3 digits)."""
    i = 0
    while i < len(ref) and ref[i].isalpha():
        i += 1
    if i >= 2:
        return ref[:i], ref[i:]
    return ref[:3], ref[3:]


def render_ref(canonical: str, style: str) -> str:
    """Write a canonical reference (upper-case letters and digits) the way a feed does.

    Styles only change case and insert spaces, dashes, dots or slashes, so upper-casing and keeping
    only letters and digits (``normalise_ref``) gives the canonical reference back on every side. No
    two styles write the same text, even for references made of digits only (air waybills).
    """
    if style == "upper":
        return canonical
    if style == "lower_dash4":
        return "-".join(canonical[i : i + 4] for i in range(0, len(canonical), 4)).lower()
    if style == "spaced4":
        return " ".join(canonical[i : i + 4] for i in range(0, len(canonical), 4))
    prefix, rest = _split_prefix(canonical)
    if style == "space_prefix":
        return f"{prefix} {rest}"
    if style == "dash_prefix":
        return f"{prefix}-{rest}"
    if style == "lower_dot_prefix":
        return f"{prefix}.{rest}".lower()
    if style == "slash_prefix":
        return f"{prefix.lower()}/{rest}"
    raise ValueError(f"unknown ref style {style}")


def normalise_ref(ref: str) -> str:
    """The matching key of a consignment reference: upper case, letters and digits only."""
    return "".join(ch for ch in ref.upper() if ch.isalnum())
