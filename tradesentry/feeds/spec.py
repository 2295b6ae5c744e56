"""The typed model of a feed specification (one YAML file per country, over shared defaults).

The same model validates the YAML files and produces ``feeds/feed.schema.json``, the JSON Schema
editors use to complete and check the files while they are typed.
"""

from __future__ import annotations

from datetime import date
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

# The canonical fields a feed maps its columns to. Order is the order of the staging models.
CANONICAL_FIELDS: dict[str, str] = {
    "declaration_id": "Declaration number, unique per reporting country (with item_no).",
    "item_no": "Item number within the declaration; 1 when the feed has none.",
    "declaration_date": "Date the declaration was accepted.",
    "flow": "Import or export (mapped through value_maps.flow when the feed uses codes).",
    "hs_code": "Tariff code as declared: 6-digit HS, dotted, or an 8/10-digit national line.",
    "partner_country": "Country of consignment (imports) or destination (exports).",
    "origin_country": "Country of origin of the goods.",
    "trader_id": "Importer or exporter identifier.",
    "trader_name": "Importer or exporter name.",
    "declarant_id": "Declarant or broker identifier.",
    "customs_office": "Customs office or port of clearance.",
    "quantity": "Quantity in the supplementary unit.",
    "quantity_unit": "Supplementary unit of the quantity (e.g. u, pairs, l).",
    "net_mass": "Net mass in the feed's mass unit.",
    "mass_unit": "Mass unit per row, when the feed has a column for it.",
    "customs_value": "Declared customs value in the declaration currency.",
    "currency": "Declaration currency per row, when the feed has a column for it.",
    "valuation_basis": "CIF or FOB per row, when the feed has a column for it.",
    "consignment_ref": "Transport reference: bill of lading, air waybill, container or UCR.",
    "goods_description": "Free-text description of the goods.",
}

REQUIRED_FIELDS = (
    "declaration_id",
    "declaration_date",
    "flow",
    "hs_code",
    "partner_country",
    "net_mass",
    "customs_value",
)

FieldName = Literal[
    "declaration_id",
    "item_no",
    "declaration_date",
    "flow",
    "hs_code",
    "partner_country",
    "origin_country",
    "trader_id",
    "trader_name",
    "declarant_id",
    "customs_office",
    "quantity",
    "quantity_unit",
    "net_mass",
    "mass_unit",
    "customs_value",
    "currency",
    "valuation_basis",
    "consignment_ref",
    "goods_description",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceSpec(_Strict):
    """Where the night's file comes from."""

    uri: str = Field(
        description=(
            "Template of the night's file. Schemes: file://, http(s)://, sftp://CONN_ID@/path. "
            "Placeholders: {night:%Y%m%d} (any strftime format), {feed}, {country}, {sample_dir}, "
            "{data_dir}."
        )
    )
    connection_id: str | None = Field(
        default=None,
        description="Airflow connection holding credentials (http/https). Never put secrets here.",
    )
    expected_by_hour: int | None = Field(
        default=None, ge=0, le=47, description="Hours after the night's start by which the file should exist."
    )

    @field_validator("uri")
    @classmethod
    def _scheme(cls, v: str) -> str:
        if not v.startswith(("file://", "http://", "https://", "sftp://")):
            raise ValueError("must start with file://, http://, https:// or sftp://")
        return v


class FixedWidthField(_Strict):
    name: str = Field(description="Column name the mapping refers to.")
    start: int = Field(ge=1, description="1-based position of the first character.")
    width: int = Field(ge=1)


class FormatSpec(_Strict):
    """How to read the file."""

    kind: Literal["csv", "fixed_width", "xlsx", "jsonl", "parquet"] = "csv"
    compression: Literal["auto", "none", "gzip", "zip"] = Field(
        default="auto", description="auto: by the file name (.gz, .zip)."
    )
    delimiter: str = Field(default=",", description="Field separator, e.g. ',', ';', '|' or '\\t' (csv).")
    encoding: Literal["utf-8", "latin-1", "utf-16"] = "utf-8"
    quote: str = '"'
    header: bool = True
    header_rows: int = Field(default=1, ge=1, le=3, description="xlsx: header rows, joined with a space.")
    skip_rows: int = Field(default=0, ge=0, description="Rows before the header (titles, notes).")
    sheet: str | None = Field(default=None, description="xlsx: sheet name (default: the first).")
    fields: list[FixedWidthField] = Field(default_factory=list, description="fixed_width: the columns.")
    decimal: Literal[".", ","] = Field(default=".", description="Decimal separator of numbers.")
    thousands: Literal["", ".", ",", " ", "'"] = Field(default="", description="Thousands separator, if any.")
    date_format: str = Field(default="%Y-%m-%d", description="strftime format of dates, e.g. %d/%m/%Y.")

    @model_validator(mode="after")
    def _consistent(self) -> FormatSpec:
        if self.thousands and self.thousands == self.decimal:
            raise ValueError("thousands and decimal separators must differ")
        if self.kind == "fixed_width" and not self.fields:
            raise ValueError("fixed_width needs fields: [{name, start, width}, ...]")
        return self


def _default_valuation() -> dict[Literal["import", "export"], Literal["CIF", "FOB"]]:
    return {"import": "CIF", "export": "FOB"}


class ConventionsSpec(_Strict):
    """Code conventions that hold for the whole feed unless a column overrides them per row."""

    currency: str | None = Field(default=None, description="ISO 4217 code when the feed has no currency column.")
    mass_unit: Literal["kg", "t", "lb", "g"] | None = Field(
        default=None, description="Mass unit when the feed has no mass unit column."
    )
    hs_format: Literal["hs6", "dotted", "national8", "national10"] = "hs6"
    hs_edition: Literal["HS2017", "HS2022"] = "HS2022"
    country_code: Literal["alpha2", "alpha3", "numeric"] = "alpha2"
    valuation: dict[Literal["import", "export"], Literal["CIF", "FOB"]] = Field(
        default_factory=_default_valuation,
        description="Valuation basis by flow when the feed has no valuation column.",
    )

    @field_validator("currency")
    @classmethod
    def _iso4217(cls, v: str | None) -> str | None:
        if v is not None and (len(v) != 3 or not v.isalpha() or not v.isupper()):
            raise ValueError("must be a three-letter upper-case ISO 4217 code")
        return v


def _default_flow_map() -> dict[str, Literal["import", "export"]]:
    return {"import": "import", "export": "export"}


class ValueMaps(_Strict):
    """Recode values before they are cast: the feed's codes on the left, canonical values on the right."""

    flow: dict[str, Literal["import", "export"]] = Field(default_factory=_default_flow_map)
    country: dict[str, str] = Field(default_factory=dict, description="National country codes to ISO codes.")


Severity = Literal["critical", "warning"]


class QualitySpec(_Strict):
    """Data-quality thresholds and severities for this feed."""

    max_failing_share: float | None = Field(
        default=None, ge=0, le=1, description="Hold the feed when more rows than this share fail (default: settings)."
    )
    min_customs_value: float = 0.0
    max_customs_value: float = 1e10
    min_net_mass: float = 0.0
    max_net_mass: float = 1e9
    severity: dict[str, Severity] = Field(
        default_factory=dict, description="Override the severity of an expectation by its name."
    )


class SchemaContract(_Strict):
    """What the feed does when the file's columns drift from the mapping."""

    on_new_column: Literal["stop", "accept"] = "stop"
    on_missing_column: Literal["stop"] = "stop"


def _override_model(model: type[BaseModel]) -> type[BaseModel]:
    """The same fields as `model`, every one optional and unset by default: a partial override.

    Generated rather than written out so that a field added to the model is overridable at once.
    Constraints are checked when the override is merged into the spec and the result validated.
    """
    fields: dict[str, Any] = {}
    for name, f in model.model_fields.items():
        assert f.annotation is not None  # every field of a declared model class is annotated
        fields[name] = (f.annotation | None, Field(default=None, description=f.description))
    return create_model(
        f"{model.__name__}Override",
        __config__=ConfigDict(extra="forbid", frozen=True),
        __doc__=f"Partial {model.__name__}: only the keys that differ in this version.",
        **fields,
    )


FormatOverride = _override_model(FormatSpec)
ConventionsOverride = _override_model(ConventionsSpec)
ValueMapsOverride = _override_model(ValueMaps)


class SpecVersion(_Strict):
    """An older layout of the feed: how it differed from the current one, from `valid_from` on.

    A version applies to the nights from its `valid_from` up to the next version's (or the feed's
    own `valid_from`, where the current layout starts). Only the keys that differ are written; in
    `columns`, `null` removes a field the older layout did not have.
    """

    valid_from: date = Field(description="First night this older layout applies to.")
    format: FormatOverride | None = None  # type: ignore[valid-type]
    columns: dict[FieldName, str | None] | None = Field(
        default=None,
        description="Canonical field -> the older file's column name (null: not in that layout).",
    )
    conventions: ConventionsOverride | None = None  # type: ignore[valid-type]
    value_maps: ValueMapsOverride | None = None  # type: ignore[valid-type]


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


class FeedSpec(_Strict):
    """One country's declarations feed."""

    dataset: Literal["declarations"] = "declarations"
    feed: str = Field(pattern=r"^[a-z][a-z0-9_]{1,30}$", description="Feed id: lower case, used in table names.")
    country: str = Field(pattern=r"^[A-Z]{2}$", description="Reporting country, ISO 3166-1 alpha-2.")
    name: str = Field(description="Human name of the feed.")
    membership: Literal["core", "supporting", "other"] = "core"
    enabled: bool = True
    timezone: str = "UTC"
    synthetic: bool = Field(default=False, description="True for generated sample data; shown wherever it appears.")
    valid_from: date | None = Field(default=None, description="First night this spec applies to (spec versions).")
    source: SourceSpec
    format: FormatSpec = Field(default_factory=FormatSpec)
    columns: dict[FieldName, str] = Field(description="Canonical field -> the file's column name.")
    conventions: ConventionsSpec = Field(default_factory=ConventionsSpec)
    value_maps: ValueMaps = Field(default_factory=ValueMaps)
    quality: QualitySpec = Field(default_factory=QualitySpec)
    schema_contract: SchemaContract = Field(default_factory=SchemaContract)
    versions: list[SpecVersion] = Field(
        default_factory=list,
        description=(
            "Older layouts with the nights they apply to, so old files still parse. The keys above "
            "describe the current layout (from valid_from); staging is generated from it."
        ),
    )

    def _apply(self, v: SpecVersion) -> FeedSpec:
        base = self.model_dump(exclude={"versions"})
        over = v.model_dump(exclude_none=True, exclude={"columns"})
        merged = _merge(base, over)
        if v.columns is not None:
            cols = {**base["columns"], **v.columns}
            merged["columns"] = {k: c for k, c in cols.items() if c is not None}
        merged["valid_from"] = v.valid_from
        return FeedSpec.model_validate(merged)

    def for_night(self, night: date) -> FeedSpec:
        """The spec in force for a night: the current layout, or the older version covering it.

        Nights before the oldest version get the oldest version: it is the closest known layout.
        """
        if not self.versions or self.valid_from is None or night >= self.valid_from:
            return self
        ordered = sorted(self.versions, key=lambda v: v.valid_from)
        chosen = ordered[0]
        for v in ordered:
            if v.valid_from <= night:
                chosen = v
        return self._apply(chosen)

    def renames_for_night(self, night: date) -> dict[str, str]:
        """Older column name -> current column name for a night's layout, through the canonical field
        both map (fields only the older layout maps keep their names)."""
        old = self.for_night(night)
        return {
            col: self.columns[field]
            for field, col in old.columns.items()
            if field in self.columns and self.columns[field] != col
        }

    @model_validator(mode="after")
    def _complete(self) -> FeedSpec:
        missing = [f for f in REQUIRED_FIELDS if f not in self.columns]
        if missing:
            raise ValueError(f"columns: map the required canonical fields {missing}")
        if "currency" not in self.columns and self.conventions.currency is None:
            raise ValueError("set conventions.currency or map a currency column")
        if "mass_unit" not in self.columns and self.conventions.mass_unit is None:
            raise ValueError("set conventions.mass_unit or map a mass_unit column")
        dupes = {c for c in self.columns.values() if list(self.columns.values()).count(c) > 1}
        if dupes:
            raise ValueError(f"columns: a file column is mapped twice: {sorted(dupes)}")
        return self

    @model_validator(mode="after")
    def _versions(self) -> FeedSpec:
        if not self.versions:
            return self
        if self.valid_from is None:
            raise ValueError(
                "valid_from: set the first night of the current layout when the feed has versions"
            )
        seen: set[date] = set()
        for i, v in enumerate(self.versions):
            if v.valid_from >= self.valid_from:
                raise ValueError(
                    f"versions[{i}].valid_from {v.valid_from} must be before the current layout's "
                    f"valid_from {self.valid_from}"
                )
            if v.valid_from in seen:
                raise ValueError(f"versions[{i}].valid_from {v.valid_from} is given twice")
            seen.add(v.valid_from)
            try:
                self._apply(v)
            except ValidationError as exc:
                why = "; ".join(
                    (".".join(str(p) for p in e["loc"]) + ": " if e["loc"] else "")
                    + e["msg"].removeprefix("Value error, ")
                    for e in exc.errors()
                )
                raise ValueError(f"versions[{i}] (valid_from {v.valid_from}): {why}") from None
        return self

    @property
    def source_columns(self) -> list[str]:
        return list(self.columns.values())

    @property
    def raw_table(self) -> str:
        return f"{self.feed}__declarations"


RatesField = Literal["rate_date", "currency", "rate"]


class RatesFeedSpec(_Strict):
    """The exchange-rates feed: pulled and landed like a declarations feed.

    Layout an official publication maps to: one row per (date, currency) with the rate either as
    units of the currency per US dollar or as US dollars per unit.
    """

    dataset: Literal["exchange_rates"]
    feed: str = Field(pattern=r"^[a-z][a-z0-9_]{1,30}$")
    name: str
    enabled: bool = True
    synthetic: bool = False
    timezone: str = "UTC"
    source: SourceSpec
    format: FormatSpec = Field(default_factory=FormatSpec)
    columns: dict[RatesField, str]
    rate_quote: Literal["units_per_usd", "usd_per_unit"] = "units_per_usd"

    @model_validator(mode="after")
    def _complete(self) -> RatesFeedSpec:
        missing = [f for f in ("rate_date", "currency", "rate") if f not in self.columns]
        if missing:
            raise ValueError(f"columns: map {missing}")
        return self

    @property
    def raw_table(self) -> str:
        return f"{self.feed}__rates"
