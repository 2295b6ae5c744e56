"""The synthetic sample: deterministic, described by the feed specs, mirrored, labelled, salted.

The files are read here only through what feeds/*.yaml says about them (delimiter, encoding,
decimal mark, date format, codes), so a spec that drifts from the generator fails these tests.
"""

from __future__ import annotations

import csv
import io
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from tradesentry.feeds.loader import load_feeds, load_rates_feeds
from tradesentry.feeds.spec import FeedSpec, RatesFeedSpec
from tradesentry.samplegen import generate, normalise_ref
from tradesentry.samplegen.__main__ import main
from tradesentry.samplegen.catalogue import ALPHA3, PRODUCTS, hs_concordance_rows, write_seeds

REPO = Path(__file__).resolve().parents[1]
FEEDS_DIR = REPO / "feeds"
START = date(2026, 11, 20)
NIGHTS = 8
END = START + timedelta(days=NIGHTS - 1)
SCALE = 0.12
MASS_TO_KG = {"kg": 1.0, "t": 1000.0, "lb": 0.45359237, "g": 0.001}
ALPHA3_TO_2 = {a3: a2 for a2, a3 in ALPHA3.items()}
HS2017_TO_2022 = {r["from_hs6"]: r["to_hs6"] for r in hs_concordance_rows()}


# --------------------------------------------------------------------------------------------------
# Reading the files the way the specs describe them
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    feed: str
    file: str
    line: int
    raw: dict[str, str]  # canonical field -> text as written
    reporter: str
    declaration_id: str
    item_no: int
    night: date
    declaration_date: date
    flow: str
    hs6: str  # HS2022 after the concordance
    partner: str  # alpha-2
    mass_kg: float
    value: float
    currency: str


def _uri_path(spec: FeedSpec | RatesFeedSpec, sample_dir: Path, night: date) -> Path:
    uri = spec.source.uri.format(sample_dir=sample_dir, night=night, feed=spec.feed)
    assert uri.startswith("file://")
    return Path(uri.removeprefix("file://"))


def _split(spec: FeedSpec | RatesFeedSpec, path: Path) -> tuple[list[str], list[list[str]]]:
    text = path.read_bytes().decode(spec.format.encoding)
    lines = list(csv.reader(io.StringIO(text, newline=""), delimiter=spec.format.delimiter, quotechar=spec.format.quote))
    return lines[0], lines[1:]


def _number(spec: FeedSpec, text: str) -> float:
    assert spec.format.thousands == ""
    other = "," if spec.format.decimal == "." else "."
    assert other not in text, f"{spec.feed}: {text!r} uses the wrong decimal mark"
    return float(text.replace(spec.format.decimal, "."))


def _country(spec: FeedSpec, text: str) -> str:
    code = spec.value_maps.country.get(text, text)
    if spec.conventions.country_code == "alpha3" and len(code) == 3:
        code = ALPHA3_TO_2[code]
    assert len(code) == 2 and code.isupper(), f"{spec.feed}: country {text!r}"
    return code


def _hs6(spec: FeedSpec, text: str) -> str:
    fmt = spec.conventions.hs_format
    if fmt == "dotted":
        assert len(text) == 7 and text[4] == ".", text
        digits = text.replace(".", "")
    else:
        digits = text
        assert len(digits) == {"hs6": 6, "national8": 8, "national10": 10}[fmt], f"{spec.feed}: {text!r}"
    assert digits.isdigit()
    hs6 = digits[:6]
    return HS2017_TO_2022.get(hs6, hs6) if spec.conventions.hs_edition == "HS2017" else hs6


def _parse(spec: FeedSpec, path: Path, night: date, skip: set[int] | None = None) -> list[Row]:
    header, lines = _split(spec, path)
    skip = skip or set()
    by_header = {h: f for f, h in spec.columns.items()}
    out = []
    for n, values in enumerate(lines, start=1):
        if n in skip:
            continue
        assert len(values) == len(header), f"{path.name}:{n}: {len(values)} fields"
        raw = {by_header[h]: v for h, v in zip(header, values, strict=True)}
        unit = raw.get("mass_unit") or spec.conventions.mass_unit
        assert unit is not None
        out.append(
            Row(
                feed=spec.feed,
                file=path.name,
                line=n,
                raw=raw,
                reporter=spec.country,
                declaration_id=raw["declaration_id"],
                item_no=int(raw.get("item_no", "1")),
                night=night,
                declaration_date=datetime.strptime(raw["declaration_date"], spec.format.date_format).date(),
                flow=spec.value_maps.flow[raw["flow"]],
                hs6=_hs6(spec, raw["hs_code"]),
                partner=_country(spec, raw["partner_country"]),
                mass_kg=_number(spec, raw["net_mass"]) * MASS_TO_KG[unit],
                value=_number(spec, raw["customs_value"]),
                currency=raw.get("currency") or spec.conventions.currency or "",
            )
        )
    return out


@dataclass
class Sample:
    out: Path
    specs: list[FeedSpec]
    rates_spec: RatesFeedSpec
    rows: list[Row]
    rates: dict[tuple[date, str], float]
    salted: list[dict[str, str]]
    truth: list[dict[str, str]]

    def usd(self, row: Row) -> float:
        # The latest published rate within 7 days, as the harmonisation looks it up.
        for back in range(8):
            rate = self.rates.get((row.declaration_date - timedelta(days=back), row.currency))
            if rate is not None:
                return row.value / rate
        raise AssertionError(f"no rate for {row.currency} on {row.declaration_date}")


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def _load(out: Path) -> Sample:
    specs = load_feeds(FEEDS_DIR)
    (rates_spec,) = load_rates_feeds(FEEDS_DIR)
    salted = _read_csv(out / "salted_rows.csv") if (out / "salted_rows.csv").exists() else []
    skip_by_file: dict[str, set[int]] = defaultdict(set)
    for s in salted:
        skip_by_file[s["source_file"]].add(int(s["source_line"]))
    rows: list[Row] = []
    for spec in specs:
        night = START
        while night <= END:
            path = _uri_path(spec, out, night)
            rows += _parse(spec, path, night, skip_by_file[path.name])
            night += timedelta(days=1)
    rates: dict[tuple[date, str], float] = {}
    night = START
    while night <= END:
        header, lines = _split(rates_spec, _uri_path(rates_spec, out, night))
        col = {f: header.index(h) for f, h in rates_spec.columns.items()}
        for values in lines:
            d = datetime.strptime(values[col["rate_date"]], rates_spec.format.date_format).date()
            assert d <= night, "a rate published before its date"
            rates[(d, values[col["currency"]])] = float(values[col["rate"]])
        night += timedelta(days=1)
    return Sample(out, specs, rates_spec, rows, rates, salted, _read_csv(out / "ground_truth.csv"))


@pytest.fixture(scope="module")
def salted_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("salted")
    generate(out, START, NIGHTS, seed=11, scale=SCALE, salt_bad_rows=True)
    return out


@pytest.fixture(scope="module")
def sample(salted_dir: Path) -> Sample:
    return _load(salted_dir)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes_and_another_seed_does_not(tmp_path: Path, salted_dir: Path) -> None:
    again = tmp_path / "again"
    info = generate(again, START, NIGHTS, seed=11, scale=SCALE, salt_bad_rows=True)
    first, second = _files(salted_dir), _files(again)
    assert sorted(first) == sorted(second)
    assert [k for k in first if first[k] != second[k]] == []
    other = tmp_path / "other"
    generate(other, START, NIGHTS, seed=12, scale=SCALE, salt_bad_rows=True)
    third = _files(other)
    assert first["xa/XA_20261127.csv"] != third["xa/XA_20261127.csv"]
    # The returned summary matches what is on disk.
    assert info.end == END and info.nights == NIGHTS
    assert info.feeds == ["xa", "xb", "xc", "xd", "xe", "xf", "xg", "exchange_rates"]
    for feed in info.feeds[:-1]:
        lines = sum(len(b.splitlines()) - 1 for k, b in second.items() if k.startswith(f"{feed}/"))
        assert info.rows[feed] == lines
    assert info.ground_truth == again / "ground_truth.csv" and info.salted_rows == again / "salted_rows.csv"


def test_specs_load_and_describe_every_file(sample: Sample) -> None:
    specs = {s.feed: s for s in sample.specs}
    assert sorted(specs) == ["xa", "xb", "xc", "xd", "xe", "xf", "xg"]
    assert {s.country for s in specs.values()} == {"XA", "XB", "XC", "XD", "XE", "XF", "XG"}
    assert all(s.synthetic for s in specs.values()) and sample.rates_spec.synthetic
    assert [f for f, s in sorted(specs.items()) if s.membership == "supporting"] == ["xf", "xg"]
    night = START
    while night <= END:
        for spec in sample.specs:
            path = _uri_path(spec, sample.out, night)
            assert night.strftime("%Y%m%d") in path.name
            header, _ = _split(spec, path)
            assert header == list(spec.columns.values()), f"{path.name}: header differs from {spec.feed}.yaml"
        header, _ = _split(sample.rates_spec, _uri_path(sample.rates_spec, sample.out, night))
        assert header == list(sample.rates_spec.columns.values())
        night += timedelta(days=1)
    # Every row parsed with its spec's conventions (the parse itself asserts field counts, codes,
    # decimal marks, date formats and flow codes); dates are the file's night.
    assert sample.rows and all(r.declaration_date == r.night for r in sample.rows)
    per_feed = Counter(r.feed for r in sample.rows)
    assert set(per_feed) == set(specs)
    # The layouts really differ: all four delimiters, both decimal marks, five date formats,
    # seven currencies, three mass units, four HS formats, two editions.
    assert {s.format.delimiter for s in specs.values()} == {",", ";", "|", "\t"}
    assert {s.format.decimal for s in specs.values()} == {".", ","}
    assert {s.format.encoding for s in specs.values()} == {"utf-8", "latin-1"}
    assert len({s.format.date_format for s in specs.values()}) == 5
    assert {s.conventions.hs_format for s in specs.values()} == {"hs6", "dotted", "national8", "national10"}
    assert {s.conventions.hs_edition for s in specs.values()} == {"HS2017", "HS2022"}
    assert {s.conventions.country_code for s in specs.values()} == {"alpha2", "alpha3"}
    currencies = {r.currency for r in sample.rows}
    assert {"EUR", "CHF", "JPY", "USD", "GBP", "TRY", "INR"} <= currencies
    assert len({r.currency for r in sample.rows if r.feed == "xg"}) > 1, "xg has a currency per row"
    assert {r.raw["mass_unit"] for r in sample.rows if r.feed == "xe"} == {"kg", "t"}
    assert all("item_no" not in specs[f].columns for f in ("xd",))
    # Every currency used has a published rate no older than 7 days for every declaration.
    assert all(sample.usd(r) > 0 for r in sample.rows)


def test_encodings_really_differ(sample: Sample) -> None:
    for spec in sample.specs:
        data = _uri_path(spec, sample.out, END).read_bytes()
        if spec.format.encoding == "latin-1":
            assert any(b >= 0x80 for b in data)
            with pytest.raises(UnicodeDecodeError):
                data.decode("utf-8")
        else:
            text = data.decode("utf-8")
            if spec.feed == "xf":  # letters Latin-1 cannot hold
                with pytest.raises(UnicodeEncodeError):
                    text.encode("latin-1")
    names = {r.raw.get("trader_name", "") for r in sample.rows if r.feed == "xb"}
    assert any(not n.isascii() for n in names)


def test_hs_codes_follow_the_edition_and_the_seeds(sample: Sample, tmp_path: Path) -> None:
    # The committed seeds are exactly what the catalogue writes.
    for path in write_seeds(tmp_path):
        assert path.read_bytes() == (REPO / "dbt_project" / "seeds" / path.name).read_bytes()
    products = {r["hs6"] for r in _read_csv(REPO / "dbt_project" / "seeds" / "hs_products.csv")}
    concordance = _read_csv(REPO / "dbt_project" / "seeds" / "hs_concordance.csv")
    assert len(concordance) >= 4 and len({r["from_hs6"] for r in concordance}) == len(concordance)
    assert all(r["to_hs6"] in products and r["from_hs6"] not in products for r in concordance)
    assert {r.hs6 for r in sample.rows} <= products
    old_codes = {p.hs2017 for p in PRODUCTS if p.hs2017}
    new_only = {p.hs6 for p in PRODUCTS if p.hs2017}
    specs = {s.feed: s for s in sample.specs}
    for row in sample.rows:
        digits = row.raw["hs_code"].replace(".", "")[:6]
        if specs[row.feed].conventions.hs_edition == "HS2017":
            assert digits not in new_only, f"{row.feed} is HS2017 but declares {digits}"
        else:
            assert digits not in old_codes, f"{row.feed} is HS2022 but declares {digits}"


def _mirror_pairs(sample: Sample) -> list[tuple[Row, Row]]:
    members = {s.country for s in sample.specs}
    imports: dict[tuple[str, str, int], Row] = {}
    for r in sample.rows:
        if r.flow == "import" and r.partner in members:
            imports[(normalise_ref(r.raw["consignment_ref"]), r.reporter, r.item_no)] = r
    pairs = []
    for r in sample.rows:
        if r.flow == "export" and r.partner in members:
            imp = imports.get((normalise_ref(r.raw["consignment_ref"]), r.partner, r.item_no))
            if imp is not None:
                pairs.append((r, imp))
    return pairs


def test_consignments_between_members_appear_in_both_feeds(sample: Sample) -> None:
    truth = {(t["reporter_country"], t["declaration_id"], int(t["item_no"])) for t in sample.truth}
    pairs = _mirror_pairs(sample)
    assert len(pairs) >= 30
    assert len({(e.feed, i.feed) for e, i in pairs}) >= 10
    assert sum(e.raw["consignment_ref"] != i.raw["consignment_ref"] for e, i in pairs) == len(pairs), (
        "each side writes the reference in its own style, so matching must normalise"
    )
    clean = 0
    for exp, imp in pairs:
        assert imp.partner == exp.reporter and exp.partner == imp.reporter
        assert 1 <= (imp.declaration_date - exp.declaration_date).days <= 10
        if (exp.reporter, exp.declaration_id, exp.item_no) in truth or (imp.reporter, imp.declaration_id, imp.item_no) in truth:
            continue
        clean += 1
        assert imp.hs6 == exp.hs6
        assert 1.02 - 0.005 <= sample.usd(imp) / sample.usd(exp) <= 1.10 + 0.005
        assert 0.99 - 0.002 <= imp.mass_kg / exp.mass_kg <= 1.01 + 0.002
    assert clean >= 0.9 * len(pairs)


def test_intra_member_share_and_volume(tmp_path: Path) -> None:
    start = date(2026, 10, 1)
    info = generate(tmp_path, start, 14, seed=3, scale=1.0)
    specs = load_feeds(FEEDS_DIR)
    all_rows = {
        spec.feed: [_parse(spec, _uri_path(spec, tmp_path, start + timedelta(days=k)), start + timedelta(days=k))
                    for k in range(14)]
        for spec in specs
    }
    exports = {normalise_ref(r.raw["consignment_ref"]) for nights in all_rows.values() for rows in nights
               for r in rows if r.flow == "export"}
    for spec in specs:
        rows: list[Row] = []
        decls = 0
        for parsed in all_rows[spec.feed][10:]:  # four nights after the transit window has filled
            rows += parsed
            decls += len({r.declaration_id for r in parsed})
        # Their imports from members were all exported inside the sample: every one has its export.
        assert all(normalise_ref(r.raw["consignment_ref"]) in exports
                   for r in rows if r.flow == "import" and r.partner.startswith("X"))
        assert 100 <= decls / 4 <= 250, f"{spec.feed}: {decls / 4} declarations a night"
        share = sum(r.partner.startswith("X") for r in rows) / len(rows)
        assert 0.25 <= share <= 0.45, f"{spec.feed}: intra-member share {share:.2f}"
    assert 0.01 <= info.anomalous_declarations / info.declarations <= 0.035


def test_ground_truth_points_at_declarations_in_the_files(sample: Sample) -> None:
    assert list(sample.truth[0]) == [
        "reporter_country", "declaration_id", "item_no", "night", "kind", "manipulated_field", "is_anomaly",
    ]
    by_key = {(r.reporter, r.declaration_id, r.item_no, r.night.isoformat()): r for r in sample.rows}
    kinds = Counter(t["kind"] for t in sample.truth)
    assert set(kinds) <= {
        "undervaluation", "overvaluation", "misclassification", "weight_manipulation", "phantom_export",
        "subtle_undervaluation", "free_sample", "return",
    }
    members = {s.country for s in sample.specs}
    import_refs = {normalise_ref(r.raw["consignment_ref"]) for r in sample.rows if r.flow == "import"}
    exports_by_ref = {
        (normalise_ref(r.raw["consignment_ref"]), r.item_no): r
        for r in sample.rows if r.flow == "export" and r.partner in members
    }
    for t in sample.truth:
        row = by_key[(t["reporter_country"], t["declaration_id"], int(t["item_no"]), t["night"])]
        assert t["is_anomaly"] == ("false" if t["kind"] in ("free_sample", "return") else "true")
        ref = normalise_ref(row.raw["consignment_ref"])
        if t["kind"] == "phantom_export":
            assert row.flow == "export" and row.partner in members and t["manipulated_field"] == "consignment"
            assert ref not in import_refs
        elif t["kind"] == "subtle_undervaluation":
            assert row.flow == "import" and row.partner in members
            exp = exports_by_ref[(ref, row.item_no)]
            assert 0.6 * 1.02 - 0.01 <= sample.usd(row) / sample.usd(exp) <= 0.8 * 1.10 + 0.01
        elif t["kind"] == "free_sample":
            assert row.mass_kg <= 2.0 and sample.usd(row) <= 30.5
        elif t["kind"] == "return":
            assert row.flow == "import" and t["manipulated_field"] == "origin_country"
            if "origin_country" in row.raw:  # goods coming back to where they came from
                spec = next(s for s in sample.specs if s.feed == row.feed)
                assert _country(spec, row.raw["origin_country"]) == row.reporter
        else:
            assert t["manipulated_field"] in ("customs_value", "hs_code", "net_mass")
    anomalous = {(t["reporter_country"], t["declaration_id"]) for t in sample.truth if t["is_anomaly"] == "true"}
    declarations = {(r.reporter, r.declaration_id) for r in sample.rows}
    assert 0.005 <= len(anomalous) / len(declarations) <= 0.06


def test_salted_rows_are_listed_and_leave_the_rest_unchanged(sample: Sample, tmp_path: Path) -> None:
    assert {s["feed"] for s in sample.salted} == {"xa", "xb", "xc", "xd", "xe", "xf", "xg"}
    specs = {s.feed: s for s in sample.specs}
    defects: dict[str, set[str]] = defaultdict(set)
    for s in sample.salted:
        spec = specs[s["feed"]]
        assert s["source_file"] == _uri_path(spec, sample.out, END).name
        header, lines = _split(spec, _uri_path(spec, sample.out, END))
        values = lines[int(s["source_line"]) - 1]
        raw = dict(zip(spec.columns, values, strict=False))
        defect = s["defect"]
        defects[s["feed"]].add(defect)
        if defect == "too_few_fields":
            assert len(values) < len(header)
            continue
        assert len(values) == len(header)
        if defect == "bad_hs_code":
            assert raw["hs_code"] == "ABCDEF"
        elif defect == "bad_number":
            with pytest.raises(ValueError):
                _number(spec, raw["customs_value"])
        elif defect == "bad_date":
            with pytest.raises(ValueError):
                datetime.strptime(raw["declaration_date"], spec.format.date_format)
        elif defect == "unknown_country":
            assert raw["partner_country"] not in ALPHA3 and raw["partner_country"] not in ALPHA3_TO_2
        elif defect == "unknown_currency":
            assert raw["currency"] not in {c for _, c in sample.rates}
        elif defect == "unknown_flow":
            assert raw["flow"] not in spec.value_maps.flow
        elif defect == "unknown_mass_unit":
            assert raw["mass_unit"] not in MASS_TO_KG
    for feed, found in defects.items():
        assert {"bad_number", "bad_date", "bad_hs_code", "unknown_country", "too_few_fields"} <= found, feed
    assert "unknown_currency" in defects["xg"]
    # Without salting: the same files minus the salted lines, and the same ground truth.
    generate(tmp_path, START, NIGHTS, seed=11, scale=SCALE, salt_bad_rows=False)
    assert not (tmp_path / "salted_rows.csv").exists()
    assert (tmp_path / "ground_truth.csv").read_bytes() == (sample.out / "ground_truth.csv").read_bytes()
    for spec in sample.specs:
        salted_lines = (_uri_path(spec, sample.out, END).read_bytes()).split(b"\n")
        bad = {int(s["source_line"]) for s in sample.salted if s["feed"] == spec.feed}
        kept = [line for n, line in enumerate(salted_lines) if n not in bad]  # line 0 is the header
        assert b"\n".join(kept) == _uri_path(spec, tmp_path, END).read_bytes()


def test_readme_says_synthetic_and_cli_defaults_to_the_end_night(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--out", str(tmp_path), "--nights", "2", "--scale", "0.05", "--seed", "5"]) == 0
    assert "SYNTHETIC" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "xa").iterdir()) == ["XA_20261126.csv", "XA_20261127.csv"]
    assert "SYNTHETIC" in (tmp_path / "README.txt").read_text(encoding="utf-8")
    rates = sorted(p.name for p in (tmp_path / "exchange_rates").iterdir())
    assert rates == ["rates_20261126.csv", "rates_20261127.csv"]
    assert main(["--out", str(tmp_path / "b"), "--start", "2026-11-25", "--scale", "0.05"]) == 0
    assert sorted(p.name for p in (tmp_path / "b" / "xd").iterdir())[-1] == "XD_entries_20261127.tsv"
    assert len(list((tmp_path / "b" / "xd").iterdir())) == 3
