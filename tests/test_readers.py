"""Readers for every format kind and wrapper, and spec versions (older layouts renamed on raw load)."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import zipfile
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tradesentry.feeds.loader import FeedSpecError, load_feed_file
from tradesentry.feeds.spec import FeedSpec
from tradesentry.landing.pull import pull_feed
from tradesentry.landing.raw_load import load_night
from tradesentry.landing.readers import ReadError, cell_text, header_names, read_sample
from tradesentry.settings import Settings
from tradesentry.warehouse import open_warehouse

COLUMNS = {
    "declaration_id": "DECL",
    "declaration_date": "DATE",
    "flow": "FLOW",
    "hs_code": "HS",
    "partner_country": "PARTNER",
    "net_mass": "MASS",
    "customs_value": "VALUE",
}


def _spec(fmt: dict[str, Any] | None = None, columns: dict[str, str] | None = None, **extra: Any) -> FeedSpec:
    return FeedSpec.model_validate(
        {
            "feed": "xq",
            "country": "XQ",
            "name": "Test feed",
            "source": {"uri": "file:///nowhere/{night:%Y%m%d}.csv"},
            "format": fmt or {},
            "columns": columns or COLUMNS,
            "conventions": {"currency": "EUR", "mass_unit": "kg"},
            **extra,
        }
    )


def _read(spec: FeedSpec, path: Path) -> tuple[list[str], list[tuple[Any, ...]], list[Any]]:
    return read_sample(spec, path)


# ----------------------------------------------------------------------------------------- csv


def test_csv_keeps_its_behaviour_and_reads_gzip(tmp_path: Path) -> None:
    text = "DECL;HS\nD1;0101\nD2;0202;extra\nD3;0303\n"
    plain = tmp_path / "f.csv"
    plain.write_text(text, encoding="latin-1")
    gz = tmp_path / "f.csv.gz"
    gz.write_bytes(gzip.compress(text.encode()))
    spec = _spec({"delimiter": ";"})
    for path in (plain, gz):
        cols, rows, rejects = _read(spec, path)
        assert cols == ["__row", "DECL", "HS"]
        assert rows == [(1, "D1", "0101"), (2, "D3", "0303")]
        assert [r.source_line for r in rejects] == [2]


# --------------------------------------------------------------------------------- fixed width

FW_FIELDS = [
    {"name": "DECL", "start": 1, "width": 6},
    {"name": "HS", "start": 7, "width": 10},
    {"name": "NAME", "start": 17, "width": 8},
]


def test_fixed_width_cuts_trims_and_rejects_short_lines(tmp_path: Path) -> None:
    lines = ["D1    6109100010Café    ", "", "D2    8517620000Zoë Ltd ", "D3    85", "D4    0901110000X       "]
    path = tmp_path / "f.txt"
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("latin-1"))
    spec = _spec({"kind": "fixed_width", "header": False, "encoding": "latin-1", "fields": FW_FIELDS})
    cols, rows, rejects = _read(spec, path)
    assert cols == ["__row", "DECL", "HS", "NAME"]
    assert rows == [(1, "D1", "6109100010", "Café"), (2, "D2", "8517620000", "Zoë Ltd"), (3, "D4", "0901110000", "X")]
    # Blank lines are not records: D3 is the third record.
    assert [(r.source_line, r.error_type) for r in rejects] == [(3, "line_too_short")]
    assert "needs 24" in rejects[0].message


def test_fixed_width_header_and_skip_rows_gz(tmp_path: Path) -> None:
    body = "TITLE LINE\nDECL  HS        NAME    \nD1    6109100010Cafe    \n"
    path = tmp_path / "f.txt.gz"
    path.write_bytes(gzip.compress(body.encode()))
    spec = _spec({"kind": "fixed_width", "skip_rows": 1, "fields": FW_FIELDS})
    _, rows, rejects = _read(spec, path)
    assert rows == [(1, "D1", "6109100010", "Cafe")] and rejects == []


# ---------------------------------------------------------------------------------------- xlsx


def _workbook(path: Path, rows: list[list[Any]], title: str = "Data") -> None:
    import openpyxl

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = title
    for r in rows:
        ws.append(r)
    wb.save(path)


def test_cell_text_shows_values_as_a_person_reads_them() -> None:
    assert cell_text(0.1 + 0.2) == "0.3"
    assert cell_text(1234.0) == "1234"
    assert cell_text(1e16) == "10000000000000000"
    assert cell_text(12.50) == "12.5"
    assert cell_text(dt.datetime(2026, 11, 27)) == "2026-11-27"
    assert cell_text(dt.datetime(2026, 11, 27, 8, 30)) == "2026-11-27 08:30:00"
    assert cell_text("  ") is None and cell_text(None) is None


def test_header_names_join_rows_and_carry_merged_titles_forward() -> None:
    names = header_names([("Declaration", None, "Value", None, None), ("number", "date", "amount", "currency", None)])
    assert names == ["Declaration number", "Declaration date", "Value amount", "Value currency"]
    assert header_names([("a", "a", None, "b")]) == ["a", "a 2", "column_3", "b"]


def test_xlsx_two_header_rows_skip_rows_and_sheet(tmp_path: Path) -> None:
    path = tmp_path / "f.xlsx"
    _workbook(
        path,
        [
            ["Customs statistics, synthetic"],
            [],
            ["Declaration", None, "Goods", "Value"],
            ["number", "date", "tariff line", "EUR"],
            ["D1", dt.datetime(2026, 11, 27), "61091000", 100.1 + 0.2],
            [None, None, None, None],
            ["D2", dt.datetime(2026, 11, 26), "85176200", 7, "stray"],
            ["D3", "27/11/2026", 9011100, 1234.5],
        ],
    )
    spec = _spec({"kind": "xlsx", "skip_rows": 2, "header_rows": 2, "sheet": "Data"})
    cols, rows, rejects = _read(spec, path)
    assert cols == ["__row", "Declaration number", "Declaration date", "Goods tariff line", "Value EUR"]
    assert rows == [(1, "D1", "2026-11-27", "61091000", "100.3"), (2, "D3", "27/11/2026", "9011100", "1234.5")]
    assert [(r.source_line, r.error_type) for r in rejects] == [(2, "too_many_columns")]
    with pytest.raises(ReadError, match="no sheet 'Other'"):
        _read(_spec({"kind": "xlsx", "sheet": "Other"}), path)


# --------------------------------------------------------------------------------------- jsonl


def test_jsonl_flattens_nested_objects_and_rejects_bad_lines(tmp_path: Path) -> None:
    lines = [
        json.dumps({"id": "D1", "consignment": {"ref": "BL-1", "port": {"code": "XQ01"}}, "items": [1, 2], "v": 1.5}),
        "{not json",
        "",
        json.dumps({"id": "D2", "extra": True, "v": 10}),
        "[1, 2]",
    ]
    path = tmp_path / "f.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    cols, rows, rejects = _read(_spec({"kind": "jsonl"}), path)
    assert cols == ["__row", "id", "consignment.ref", "consignment.port.code", "items", "v", "extra"]
    assert rows == [(1, "D1", "BL-1", "XQ01", "[1, 2]", "1.5", None), (2, "D2", None, None, None, "10", "true")]
    assert [(r.source_line, r.error_type) for r in rejects] == [(2, "invalid_json"), (4, "not_an_object")]


# ------------------------------------------------------------------------------------- parquet


def test_parquet_every_column_as_text_and_zip_member(tmp_path: Path) -> None:
    path = tmp_path / "f.parquet"
    duckdb.execute(
        f"copy (select 'D1' as DECL, '0101' as HS, 12.5::double as VALUE, date '2026-11-27' as DATE, "
        f"{{'ref': 'BL-1'}} as cons) to '{path}' (format parquet)"
    )
    cols, rows, _ = _read(_spec({"kind": "parquet"}), path)
    assert cols == ["__row", "DECL", "HS", "VALUE", "DATE", "cons"]
    assert rows == [(1, "D1", "0101", "12.5", "2026-11-27", '{"ref":"BL-1"}')]
    # A zip with a readme and the data: the member of the spec's kind is read.
    zpath = tmp_path / "f.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.write(path, "export/f.parquet")
        zf.writestr("README.txt", "hello")
    assert _read(_spec({"kind": "parquet"}), zpath)[1] == rows


def test_zip_with_several_candidates_is_an_error(tmp_path: Path) -> None:
    zpath = tmp_path / "f.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("a.csv", "X,Y\n1,2\n")
        zf.writestr("b.csv", "P,Q\n1,2\n")
    with pytest.raises(ReadError, match="holds 2 files"):
        _read(_spec({"delimiter": ","}), zpath)
    # ...unless one member's header names the mapped columns.
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("notes.csv", "X,Y\n1,2\n")
        zf.writestr("data.csv", "DECL,DATE,FLOW,HS,PARTNER,MASS,VALUE\nD1,2026-11-27,import,0101,CN,1,2\n")
    assert _read(_spec({"delimiter": ","}), zpath)[1][0][1] == "D1"


# ---------------------------------------------------------------------------------- versions

OLD = {
    "valid_from": "2025-01-01",
    "format": {"delimiter": ";", "decimal": ","},
    "columns": {"net_mass": "POIDS", "customs_value": "VALEUR", "hs_code": "NC8"},
}


def test_for_night_returns_the_layout_in_force() -> None:
    spec = _spec({"delimiter": ","}, valid_from="2026-06-01", versions=[OLD])
    assert spec.for_night(date(2026, 6, 1)) is spec
    old = spec.for_night(date(2025, 3, 1))
    assert old.format.delimiter == ";" and old.format.decimal == ","
    assert old.columns["net_mass"] == "POIDS" and old.columns["declaration_id"] == "DECL"
    assert old.for_night(date(2025, 3, 1)).versions == []
    assert spec.for_night(date(2020, 1, 1)).columns["net_mass"] == "POIDS"  # before any: the oldest
    assert spec.renames_for_night(date(2025, 3, 1)) == {"POIDS": "MASS", "VALEUR": "VALUE", "NC8": "HS"}
    assert spec.renames_for_night(date(2026, 7, 1)) == {}


def test_versions_are_validated_with_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "xq.yaml"
    path.write_text(
        "feed: xq\ncountry: XQ\nname: T\nsource: {uri: 'file:///x'}\n"
        "columns: {declaration_id: D, declaration_date: DT, flow: F, hs_code: H, partner_country: P, "
        "net_mass: M, customs_value: V}\n"
        "conventions: {currency: EUR, mass_unit: kg}\n"
        "valid_from: 2026-01-01\n"
        "versions:\n"
        "  - valid_from: 2025-01-01\n"
        "    columns: {flow: null}\n"
        "  - valid_from: 2025-06-01\n"
        "    format: {kind: exotic}\n"
    )
    with pytest.raises(FeedSpecError) as err:
        load_feed_file(path)
    msg = str(err.value)
    assert f"{path}:12: versions.1.format.kind" in msg
    path.write_text(path.read_text().replace("    format: {kind: exotic}\n", ""))
    with pytest.raises(FeedSpecError, match=r":9: .*versions\[0\].*required canonical fields \['flow'\]"):
        load_feed_file(path)


def test_raw_load_renames_an_older_layout_to_current_names(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data").resolve()
    incoming = tmp_path / "in"
    incoming.mkdir()
    (incoming / "20250301.csv").write_text("DECL;DATE;FLOW;NC8;PARTNER;POIDS;VALEUR;MASS\nD1;x;import;0101;CN;1,5;2;old\n")
    (incoming / "20260701.csv").write_text("DECL,DATE,FLOW,HS,PARTNER,MASS,VALUE\nD2,x,export,0202,US,3,4\n")
    spec = _spec({"delimiter": ","}, valid_from="2026-06-01", versions=[OLD])
    spec = spec.model_copy(update={"source": spec.source.model_copy(update={"uri": f"file://{incoming}/{{night:%Y%m%d}}.csv"})})
    with open_warehouse(settings.warehouse) as con:
        for night in (date(2025, 3, 1), date(2026, 7, 1)):
            pull_feed(spec, night, settings)
            load_night(con, spec, night, settings)
        rows = con.execute(
            'select _night::varchar, DECL, HS, MASS, VALUE, "MASS (old)" from raw.xq__declarations order by 1'
        ).fetchall()
    assert rows == [("2025-03-01", "D1", "0101", "1,5", "2", "old"), ("2026-07-01", "D2", "0202", "3", "4", None)]
