"""Guess how a partner's sample file is written: wrapper, kind, encoding, delimiter, header, numbers, dates.

Every guess carries how sure it is and why, so `feeds init` can write it as a YAML comment. The
sniffer only proposes a `FormatSpec`; the columns and their values are then read with the pipeline's
own readers (`tradesentry.landing.readers`), so what `init` maps is exactly what the nightly load sees.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import re
import statistics
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

SAMPLE_BYTES = 1 << 20
SAMPLE_LINES = 400
DELIMITERS = (",", ";", "\t", "|")
DATE_FORMATS = (
    "%Y-%m-%d",
    "%d/%m/%Y",
    "%m/%d/%Y",
    "%d.%m.%Y",
    "%Y%m%d",
    "%d-%m-%Y",
    "%Y/%m/%d",
    "%d%m%Y",
    "%d-%b-%Y",
    "%d %b %Y",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%d %H:%M:%S",
    "%d/%m/%y",
    "%y%m%d",
)


@dataclass(frozen=True)
class Guess:
    """One guess: the value, how sure (high | medium | low) and why, in plain words."""

    value: Any
    confidence: str
    why: str


def confidence(share: float) -> str:
    return "high" if share >= 0.95 else "medium" if share >= 0.75 else "low"


@dataclass
class Sniffed:
    """What the sniffer found; `format` holds the keys of a FormatSpec."""

    path: Path
    format: dict[str, Any] = field(default_factory=dict)
    guesses: dict[str, Guess] = field(default_factory=dict)


# --------------------------------------------------------------------------------- bytes and text


def _head_bytes(path: Path) -> tuple[bytes, str, str]:
    """The first bytes of the payload, the compression and the payload's own file name."""
    raw = _read_start(path)
    name = path.name
    if raw[:2] == b"\x1f\x8b" or name.lower().endswith(".gz"):
        with gzip.open(path, "rb") as fh:
            return fh.read(SAMPLE_BYTES), "gzip", name.removesuffix(".gz").removesuffix(".GZ")
    if raw[:4] == b"PK\x03\x04" and not name.lower().endswith((".xlsx", ".xlsm")):
        with zipfile.ZipFile(path) as zf:
            if "[Content_Types].xml" in zf.namelist() and any(n.startswith("xl/") for n in zf.namelist()):
                return raw, "none", name  # an xlsx without its extension
            members = [m for m in zf.infolist() if not m.is_dir() and not m.filename.startswith("__MACOSX/")]
            member = max(members, key=lambda m: m.file_size)
            with zf.open(member) as fh:
                return fh.read(SAMPLE_BYTES), "zip", Path(member.filename).name
    return raw, "none", name


def _read_start(path: Path) -> bytes:
    with path.open("rb") as fh:
        return fh.read(SAMPLE_BYTES)


def sniff_encoding(data: bytes) -> Guess:
    """utf-8 / latin-1 / utf-16, by byte-order mark first, then by whether the bytes decode."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return Guess("utf-16", "high", "the file starts with a UTF-16 byte-order mark")
    if data.startswith(codecs.BOM_UTF8):
        return Guess("utf-8", "high", "the file starts with a UTF-8 byte-order mark")
    if data[:200].count(b"\x00") > 20:
        return Guess("utf-16", "medium", "every other byte is zero: UTF-16 without a byte-order mark")
    try:
        # A cut in the middle of a multi-byte character at the end of the sample is not an error.
        data.decode("utf-8") if len(data) < SAMPLE_BYTES else data[:-4].decode("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        return Guess("latin-1", "high", f"not valid UTF-8 (byte {data[exc.start]:#x} at {exc.start}); read as Latin-1")
    if any(b > 127 for b in data):
        return Guess("utf-8", "high", "non-ASCII characters decode as UTF-8")
    return Guess("utf-8", "medium", "plain ASCII: UTF-8 reads it")


def decode(data: bytes, encoding: str) -> str:
    codec = {"utf-8": "utf-8-sig", "utf-16": "utf-16", "latin-1": "latin-1"}[encoding]
    return data.decode(codec, errors="replace")


def _lines(text: str) -> list[str]:
    lines = text.splitlines()
    if len(text) >= SAMPLE_BYTES // 2 and lines:
        lines = lines[:-1]  # the sample may cut the last line
    return [ln for ln in lines[:SAMPLE_LINES]]


# ------------------------------------------------------------------------------------ delimited


def sniff_delimiter(lines: list[str]) -> tuple[Guess, int]:
    """The delimiter that splits the most lines into the same number (>= 2) of fields, and the
    number of leading lines (titles, notes) that do not have that shape."""
    body = [ln for ln in lines if ln.strip()]
    best: tuple[float, str, int, int] | None = None
    for d in DELIMITERS:
        counts = [len(row) for row in csv.reader(io.StringIO("\n".join(body)), delimiter=d, quotechar='"')]
        if not counts:
            continue
        mode, n = Counter(counts).most_common(1)[0]
        if mode < 2:
            continue
        share = n / len(counts)
        score = share + 0.01 * min(mode, 20)
        if best is None or score > best[0]:
            skip = next((i for i, c in enumerate(counts) if c == mode), 0)
            best = (score, d, mode, skip)
    if best is None:
        return Guess(None, "low", "no delimiter splits the lines consistently"), 0
    score, d, mode, skip = best
    share = min(score - 0.01 * min(mode, 20), 1.0)
    name = {"\t": "tab", ",": "comma", ";": "semicolon", "|": "pipe"}[d]
    why = f"{share:.0%} of lines split into {mode} fields on {name}"
    # Blank lines before the data count as skipped rows too.
    skip_lines = _nth_nonblank_index(lines, skip)
    return Guess("\\t" if d == "\t" else d, confidence(share), why), skip_lines


def _nth_nonblank_index(lines: list[str], n: int) -> int:
    seen = 0
    for i, ln in enumerate(lines):
        if ln.strip():
            if seen == n:
                return i
            seen += 1
    return 0


def looks_like_header(first: list[str], rest: list[list[str]]) -> Guess:
    """A first row of names: none of its cells is a number or a date while the rows below have some."""
    def numeric(v: str) -> bool:
        return bool(re.fullmatch(r"[-+]?[\d.,' ]*\d[\d.,' ]*", v.strip()))

    first_numeric = sum(numeric(v) for v in first if v.strip())
    below = sum(numeric(v) for row in rest[:50] for v in row if v.strip())
    if first_numeric == 0 and below > 0:
        return Guess(True, "high", "the first row has names where the rows below have numbers")
    if first_numeric == 0:
        return Guess(True, "low", "the first row has no numbers (nor have the rows below)")
    return Guess(False, "medium", f"the first row has {first_numeric} numeric cells: data, not names")


# ---------------------------------------------------------------------------------- fixed width


def sniff_fixed_width(lines: list[str], header: bool) -> list[dict[str, Any]]:
    """Fields of a fixed-width layout from the columns of spaces every data line shares.

    A field starts where, in every line, a space is followed by a character (or at position 1);
    a header line, when present, adds the starts of its names. Each field runs to the next start
    (its trailing blanks are padding, trimmed by the reader); the last one to the longest line.
    """
    body = [ln for ln in lines[1 if header else 0 :] if ln.strip()]
    if not body:
        return []
    width = max(len(ln) for ln in body)
    padded = [ln.ljust(width) for ln in body]
    blank = [all(ln[i] == " " for ln in padded) for i in range(width)]
    starts = {0} | {i for i in range(1, width) if blank[i - 1] and not blank[i]}
    names: dict[int, str] = {}
    if header:
        for m in re.finditer(r"\S+", lines[0]):
            # A header name starts a field when the data has a gutter just before it.
            s = m.start()
            if s < width and (s == 0 or blank[s - 1]):
                starts.add(s)
                names[s] = m.group(0)
    ordered = sorted(s for s in starts if s < width)
    fields = []
    for i, s in enumerate(ordered):
        end = ordered[i + 1] if i + 1 < len(ordered) else width
        fields.append({"name": names.get(s, f"field_{i + 1:02d}"), "start": s + 1, "width": end - s})
    return fields


def _gutter_count(lines: list[str]) -> int:
    body = [ln for ln in lines if ln.strip()]
    if len(body) < 2:
        return 0
    width = max(len(ln) for ln in body)
    padded = [ln.ljust(width) for ln in body]
    blank = [all(ln[i] == " " for ln in padded) for i in range(width)]
    return sum(1 for i in range(1, width) if blank[i - 1] and not blank[i])


# --------------------------------------------------------------------------------------- values


def sniff_numbers(values: list[str]) -> tuple[Guess, Guess]:
    """Decimal and thousands separators from numeric-looking values."""
    votes: Counter[str] = Counter()
    thousands: Counter[str] = Counter()
    numeric = [v.strip() for v in values if v and re.fullmatch(r"[-+]?\d[\d.,' ]*", v.strip())]
    for v in numeric:
        dots, commas = v.count("."), v.count(",")
        if dots and commas and re.fullmatch(r"[-+]?\d{1,3}([.,' ]\d{3})*[.,]\d+", v):
            dec_char = "." if v.rfind(".") > v.rfind(",") else ","
            votes[dec_char] += 1
            thousands["," if dec_char == "." else "."] += 1
        elif commas == 1 and not re.fullmatch(r"[-+]?\d{1,3},\d{3}", v):
            votes[","] += 1
        elif dots == 1 and not re.fullmatch(r"[-+]?\d{1,3}\.\d{3}", v):
            votes["."] += 1
        elif commas > 1 and re.fullmatch(r"[-+]?\d{1,3}(,\d{3})+", v):
            thousands[","] += 1
        elif dots > 1 and re.fullmatch(r"[-+]?\d{1,3}(\.\d{3})+", v):
            thousands["."] += 1
        if re.fullmatch(r"[-+]?\d{1,3}( \d{3})+([.,]\d+)?", v):
            thousands[" "] += 1
        if "'" in v:
            thousands["'"] += 1
    if not votes:
        dec = Guess(".", "low", "no number with a decimal part in the sample")
    else:
        d, n = votes.most_common(1)[0]
        share = n / sum(votes.values())
        dec = Guess(d, confidence(share), f"{n} of {sum(votes.values())} decimal numbers use {d!r}")
    sep = next((t for t, _ in thousands.most_common() if t != dec.value), "")
    if sep:
        th = Guess(sep, "medium", f"{thousands[sep]} numbers group digits with {sep!r}")
    else:
        th = Guess("", "high" if votes else "low", "no digit grouping seen")
    return dec, th


def sniff_date_format(values: list[str]) -> Guess | None:
    """The strftime format most values of a column parse with (>= 90%), or None: not dates."""
    vals = [v.strip() for v in values if v and v.strip()][:300]
    if not vals or not all(re.search(r"\d", v) for v in vals[:20]):
        return None
    scores: list[tuple[float, int, str]] = []
    for i, fmt in enumerate(DATE_FORMATS):
        ok = 0
        for v in vals:
            try:
                d = datetime.strptime(v, fmt)
            except ValueError:
                continue
            if 1980 <= d.year <= 2100:
                ok += 1
        if ok:
            scores.append((ok / len(vals), -i, fmt))
    if not scores:
        return None
    scores.sort(reverse=True)
    share, _, fmt = scores[0]
    if share < 0.9:
        return None
    ties = [f for s, _, f in scores[1:] if s == share]
    why = f"{share:.0%} of values parse as {fmt}"
    if ties:
        why += f" (as do {', '.join(ties)}: days and months are ambiguous in the sample)"
        return Guess(fmt, "low", why)
    return Guess(fmt, confidence(share), why)


# ------------------------------------------------------------------------------------- the file


def kind_of(name: str, data: bytes) -> Guess:
    lower = name.lower()
    if lower.endswith((".xlsx", ".xlsm")) or (data[:4] == b"PK\x03\x04" and b"xl/" in data[:4096]):
        return Guess("xlsx", "high", "an Excel workbook (.xlsx)")
    if lower.endswith((".parquet", ".pq")) or data[:4] == b"PAR1":
        return Guess("parquet", "high", "a Parquet file")
    stripped = data.lstrip(codecs.BOM_UTF8).lstrip()
    if lower.endswith((".jsonl", ".ndjson")) or (stripped[:1] == b"{" and b"}\n" in data[:SAMPLE_BYTES]):
        return Guess("jsonl", "high", "one JSON object per line")
    return Guess("text", "high", "a text file")


def sniff_format(path: Path) -> Sniffed:
    """The FormatSpec keys for a sample file, each with a Guess explaining it."""
    out = Sniffed(path)
    data, compression, name = _head_bytes(path)
    g = out.guesses
    if compression != "none":
        g["compression"] = Guess(compression, "high", f"the sample is {compression}-compressed ({name} inside)")
        out.format["compression"] = compression
    kind = kind_of(name, data)
    if kind.value in ("xlsx", "parquet", "jsonl"):
        g["kind"] = kind
        out.format["kind"] = kind.value
        if kind.value == "jsonl":
            enc = sniff_encoding(data)
            g["encoding"] = enc
            out.format["encoding"] = enc.value
        if kind.value == "xlsx":
            _sniff_xlsx(path, out)
        return out

    enc = sniff_encoding(data)
    g["encoding"] = enc
    out.format["encoding"] = enc.value
    lines = _lines(decode(data, enc.value))
    delim, skip = sniff_delimiter(lines)
    gutters = _gutter_count(lines)
    # Columns of spaces shared by every line, many more than the fields a delimiter gives: the
    # "delimiter" is a character inside values (a decimal comma) of a fixed-width file.
    mode = 0
    if delim.value is not None:
        found = re.search(r"into (\d+) fields", delim.why)
        assert found is not None  # sniff_delimiter's reason always names the field count when it finds one
        mode = int(found.group(1))
    if delim.value is None or (gutters >= 3 and gutters + 1 > 2 * mode):
        g["kind"] = Guess("fixed_width", "medium" if gutters >= 3 else "low", f"no delimiter; {gutters} columns of spaces line up in every line")
        out.format["kind"] = "fixed_width"
        skip = next((i for i, ln in enumerate(lines) if ln.strip()), 0)
        first = lines[skip] if skip < len(lines) else ""
        rest = lines[skip + 1 : skip + 50]
        header = looks_like_header(first.split(), [r.split() for r in rest])
        g["header"] = header
        out.format.update(header=header.value, skip_rows=skip)
        out.format["fields"] = sniff_fixed_width(lines[skip:], header.value)
        return out
    g["kind"] = Guess("csv", delim.confidence, "a delimited text file")
    g["delimiter"] = delim
    out.format.update(kind="csv", delimiter=delim.value)
    d = "\t" if delim.value == "\\t" else delim.value
    rows = list(csv.reader(io.StringIO("\n".join(ln for ln in lines[skip:] if ln.strip())), delimiter=d))
    quoted = sum(ln.count('"') for ln in lines[skip:]) > 0
    g["quote"] = Guess('"', "high" if quoted else "medium", "values are quoted with \"" if quoted else "no quotes seen; the standard \" is kept")
    header = looks_like_header(rows[0] if rows else [], rows[1:])
    g["header"] = header
    out.format.update(header=header.value, skip_rows=skip)
    if skip:
        g["skip_rows"] = Guess(skip, "medium", f"the first {skip} line(s) do not have the data's shape (titles or notes)")
    return out


def _sniff_xlsx(path: Path, out: Sniffed) -> None:
    """Title rows to skip and 1-3 header rows: the header is the text-only rows above the first row
    with a number or a date; rows with far fewer cells than the table above it are titles."""
    import openpyxl

    wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    try:
        ws = wb.worksheets[0]
        rows = [list(r) for _, r in zip(range(30), ws.iter_rows(values_only=True), strict=False)]
        sheet = ws.title
    finally:
        wb.close()
    filled = [sum(v is not None and str(v).strip() != "" for v in r) for r in rows]
    width = max(filled, default=0)
    skip = next((i for i, n in enumerate(filled) if n >= max(2, width // 2)), 0)

    def is_data(r: list[Any]) -> bool:
        return any(isinstance(v, (int, float, datetime)) and not isinstance(v, bool) for v in r)

    first_data = next((i for i in range(skip, len(rows)) if is_data(rows[i])), skip + 1)
    header_rows = max(1, min(3, first_data - skip))
    out.format.update(kind="xlsx", sheet=sheet, skip_rows=skip, header_rows=header_rows, decimal=".", thousands="")
    out.guesses["sheet"] = Guess(sheet, "medium", "the first sheet of the workbook")
    if skip:
        out.guesses["skip_rows"] = Guess(skip, "high", f"{skip} title row(s) above the table")
    out.guesses["header_rows"] = Guess(
        header_rows,
        "high" if header_rows < first_data - skip + 1 else "medium",
        f"{header_rows} row(s) of names above the first row with numbers or dates",
    )
    out.guesses["decimal"] = Guess(".", "high", "Excel numbers are read as numbers, written with '.'")


def column_stats(values: list[str | None]) -> dict[str, Any]:
    """A few facts about a column's values the mapper and the writer share."""
    vals = [v for v in values if v is not None and v.strip() != ""]
    return {
        "n": len(vals),
        "distinct": len(set(vals)),
        "median_len": statistics.median([len(v) for v in vals]) if vals else 0,
    }


# ------------------------------------------------------------------------------ column -> field

# Words a column name uses for each canonical field, in the languages partners write in. Names are
# compared as lower-case ASCII tokens ("Valeur en douane" -> valeur, en, douane).
NAME_HINTS: dict[str, tuple[str, ...]] = {
    "declaration_id": ("declaration", "decl", "decl no", "declaration number", "entry", "entry no", "mrn",
                       "sad", "dau", "numero declaration", "anmeldung", "anmeldenummer", "dec", "declaracion"),
    "item_no": ("item", "item no", "line", "line no", "position", "pos", "posten", "article", "art", "ligne",
                "item number", "seq"),
    "declaration_date": ("date", "declaration date", "accept date", "acceptance", "datum", "fecha", "dt",
                         "date declaration", "clearance date", "anmeldedatum"),
    "flow": ("flow", "direction", "trade type", "regime", "procedure", "imp exp", "flux", "richtung",
             "verkehrsrichtung", "type", "flujo", "sens"),
    "hs_code": ("hs", "hs code", "tariff", "tarif", "commodity", "cn", "cn8", "nc8", "taric", "stat code",
                "nomenclature", "warennummer", "code marchandise", "sh", "hts", "tariff line", "product code"),
    "partner_country": ("partner", "partner country", "partenaire", "pays partenaire", "partnerland",
                        "consignment country", "destination", "dispatch", "provenance", "country", "pays"),
    "origin_country": ("origin", "origine", "country of origin", "pays origine", "ursprung", "ursprungsland",
                       "origen", "coo"),
    "trader_id": ("trader", "trader id", "importer", "exporter", "importateur", "exportateur", "eori", "tin",
                  "operator", "company id", "firm", "einfuehrer", "ausfuehrer", "trader code", "vat"),
    "trader_name": ("trader name", "importer name", "exporter name", "company", "company name", "raison sociale",
                    "nom", "name", "firma", "firmenname", "razon social"),
    "declarant_id": ("declarant", "broker", "agent", "declarant id", "commissionnaire", "anmelder", "spediteur"),
    "customs_office": ("office", "customs office", "port", "bureau", "zollstelle", "aduana", "office code"),
    "quantity": ("quantity", "qty", "quantite", "menge", "cantidad", "supplementary", "supp qty", "units"),
    "quantity_unit": ("unit", "qty unit", "uom", "unite", "einheit", "supp unit", "quantity unit"),
    "net_mass": ("mass", "net mass", "weight", "net weight", "poids", "poids net", "masse", "masse nette",
                 "gewicht", "eigenmasse", "peso", "kg", "net wt", "netto"),
    "mass_unit": ("mass unit", "weight unit", "unite poids", "gewichtseinheit"),
    "customs_value": ("value", "customs value", "valeur", "valeur douane", "wert", "zollwert", "valor",
                      "amount", "invoice value", "montant", "statistical value"),
    "currency": ("currency", "curr", "ccy", "devise", "monnaie", "waehrung", "moneda", "cur"),
    "valuation_basis": ("valuation", "incoterm", "basis", "cif fob", "valuation basis", "delivery terms"),
    "consignment_ref": ("consignment", "bill of lading", "bl", "awb", "waybill", "container", "ucr",
                        "transport document", "connaissement", "transport ref", "ref", "reference",
                        "consignment ref", "manifest"),
    "goods_description": ("description", "goods", "goods description", "designation", "libelle",
                          "warenbezeichnung", "descripcion", "desc", "marchandise"),
}

FLOW_WORDS = {
    "import": {"i", "im", "imp", "import", "imports", "m", "1", "in", "importation", "einfuhr"},
    "export": {"e", "ex", "exp", "export", "exports", "x", "2", "out", "exportation", "ausfuhr"},
}
MASS_UNITS = {"kg": "kg", "kgs": "kg", "kgm": "kg", "kilo": "kg", "kilogram": "kg", "t": "t", "tne": "t",
              "tonne": "t", "tonnes": "t", "tons": "t", "tn": "t", "g": "g", "grm": "g", "lb": "lb", "lbs": "lb"}


def tokens(name: str) -> list[str]:
    import unicodedata

    plain = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    plain = re.sub(r"([a-z])([A-Z])", r"\1 \2", plain)
    return [t for t in re.split(r"[^a-z0-9]+", plain.lower()) if t]


def name_score(column: str, field_name: str) -> tuple[float, str]:
    """How much a column's name says it holds the field (0..1), and which hint matched."""
    import difflib

    col = tokens(column)
    if not col:
        return 0.0, ""
    best = (0.0, "")
    for hint in NAME_HINTS[field_name]:
        ht = hint.split()
        if col == ht:
            score = 1.0
        elif all(t in col for t in ht):
            score = 0.9 if len(ht) > 1 else 0.8
        elif len(ht) == 1 and len(ht[0]) >= 4 and any(t.startswith(ht[0]) for t in col):
            score = 0.7
        else:
            ratio = difflib.SequenceMatcher(None, " ".join(col), hint).ratio()
            score = 0.6 if ratio >= 0.85 else 0.0
        if score > best[0]:
            best = (score, hint)
    return best


def _num(v: str, decimal: str, thousands: str) -> float | None:
    t = v.strip().replace(" ", "")
    if thousands:
        t = t.replace(thousands, "")
    if decimal == ",":
        t = t.replace(",", ".")
    try:
        return float(t)
    except ValueError:
        return None


@dataclass
class ColumnFacts:
    name: str
    values: list[str]
    date: Guess | None = None

    @property
    def distinct(self) -> set[str]:
        return set(self.values)


def content_scores(
    col: ColumnFacts, decimal: str, thousands: str, countries: set[str], currencies: set[str]
) -> dict[str, tuple[float, str]]:
    """Scores (0..1) with reasons for the fields a column's values look like."""
    vals = col.values
    n = len(vals)
    out: dict[str, tuple[float, str]] = {}
    if n == 0:
        return out

    def share(pred: Any) -> float:
        return sum(1 for v in vals if pred(v)) / n

    if col.date is not None:
        out["declaration_date"] = (0.9 * (1.0 if col.date.confidence != "low" else 0.8), col.date.why)
        return out
    digits = [re.sub(r"[.\s]", "", v) for v in vals]
    hs_share = sum(
        1 for v, d in zip(vals, digits, strict=True)
        if re.fullmatch(r"\d[\d.\s]*", v) and len(d) in (6, 8, 10) and 1 <= int(d[:2]) <= 97
    ) / n
    if hs_share >= 0.8:
        lengths = Counter(len(d) for d in digits)
        n_digits = lengths.most_common(1)[0][0]
        dotted = any("." in v for v in vals)
        unique = len(col.distinct) / n
        score = hs_share * (0.6 if unique > 0.97 and n >= 20 else 0.95)
        out["hs_code"] = (score, f"{hs_share:.0%} of values look like {n_digits}-digit tariff lines"
                          + (" with dots" if dotted else ""))
    upper2 = share(lambda v: bool(re.fullmatch(r"[A-Z]{2}", v)))
    upper3 = share(lambda v: bool(re.fullmatch(r"[A-Z]{3}", v)))
    if upper3 >= 0.9 and currencies:
        cur = share(lambda v: v in currencies)
        if cur >= 0.9:
            out["currency"] = (0.95 * cur, f"{cur:.0%} of values are ISO 4217 currency codes")
    if upper2 >= 0.9:
        known = share(lambda v: v in countries or v.startswith("X")) if countries else upper2
        out["partner_country"] = (0.85 * known, f"{upper2:.0%} of values are 2-letter country codes")
        out["origin_country"] = (0.8 * known, out["partner_country"][1])
    elif upper3 >= 0.9 and "currency" not in out:
        out["partner_country"] = (0.75, f"{upper3:.0%} of values are 3-letter country codes")
        out["origin_country"] = (0.7, out["partner_country"][1])
    lowered = {v.lower() for v in col.distinct}
    if len(col.distinct) == 2 and n >= 4 and all(len(v) <= 12 for v in col.distinct):
        words = all(any(v in FLOW_WORDS[f] for f in FLOW_WORDS) for v in lowered)
        out["flow"] = (0.95 if words else 0.7, f"exactly 2 distinct values {sorted(col.distinct)}")
    if lowered and lowered <= set(MASS_UNITS):
        out["mass_unit"] = (0.95, f"values are mass units {sorted(col.distinct)}")
    if lowered and lowered <= {"cif", "fob"}:
        out["valuation_basis"] = (0.95, "values are CIF / FOB")
    nums = [_num(v, decimal, thousands) for v in vals]
    num_share = sum(x is not None for x in nums) / n
    if num_share >= 0.95 and "hs_code" not in out:
        xs = [x for x in nums if x is not None]
        integers = all(float(x).is_integer() for x in xs)
        med = statistics.median(xs)
        if integers and max(xs) <= 999 and min(xs) >= 1 and xs.count(1) / len(xs) >= 0.3:
            out["item_no"] = (0.7, "small whole numbers, mostly 1")
        elif not integers or med >= 10:
            has_dec = not integers
            out["customs_value"] = (0.55 if has_dec and med > 100 else 0.4,
                                    f"numbers (median {med:,.2f}){' with decimals' if has_dec else ''}")
            out["net_mass"] = (0.45, f"numbers (median {med:,.2f})")
            out["quantity"] = (0.3, f"numbers (median {med:,.2f})")
    unique = len(col.distinct) / n
    if unique >= 0.5 and share(lambda v: bool(re.search(r"\d", v))) >= 0.9 and "customs_value" not in out \
            and "hs_code" not in out and "item_no" not in out:
        out["declaration_id"] = (0.45, f"{unique:.0%} distinct identifiers")
    if share(lambda v: bool(re.fullmatch(r"(BL|AWB|MBL|HBL|UCR)[-\w/]*|[A-Z]{4}\d{7}", v))) >= 0.8:
        out["consignment_ref"] = (0.8, "values look like transport references (BL, AWB, containers)")
    med_len = statistics.median(len(v) for v in vals)
    if share(lambda v: v.startswith(("[", "{"))) >= 0.5:
        return {}  # JSON lists or objects: not one field's values
    letters = share(lambda v: sum(c.isalpha() for c in v) > len(v) / 2 and " " in v.strip())
    if letters >= 0.7:
        out["goods_description" if med_len > 20 else "trader_name"] = (0.4, "free text")
    return out


@dataclass
class Mapping:
    columns: dict[str, str]  # canonical field -> column
    guesses: dict[str, Guess]  # canonical field -> why
    unmapped: list[str]


def propose_mapping(
    facts: list[ColumnFacts], decimal: str, thousands: str, countries: set[str], currencies: set[str]
) -> Mapping:
    """Columns to canonical fields by name and content together; each column and field used once."""
    candidates: list[tuple[float, int, str, str, str]] = []
    for order, col in enumerate(facts):
        if col.values and sum(v.startswith(("[", "{")) for v in col.values) >= len(col.values) / 2:
            continue  # lists (JSON text) are kept in raw_values, never a canonical field
        content = content_scores(col, decimal, thousands, countries, currencies)
        for f in NAME_HINTS:
            ns, hint = name_score(col.name, f)
            cs, cwhy = content.get(f, (0.0, ""))
            if max(ns, cs) < 0.4:
                continue
            score = min(1.0, max(ns, cs) + 0.25 * min(ns, cs))
            parts = []
            if ns:
                parts.append(f"name matches '{hint}'")
            if cs:
                parts.append(f"content: {cwhy}")
            if ns and cs and cs < 0.3:
                score = ns
            candidates.append((score, -order, f, col.name, "; ".join(parts)))
    candidates.sort(reverse=True)
    columns: dict[str, str] = {}
    guesses: dict[str, Guess] = {}
    used: set[str] = set()
    for score, _, f, col_name, why in candidates:
        if f in columns or col_name in used or score < 0.5:
            continue
        columns[f] = col_name
        used.add(col_name)
        guesses[f] = Guess(col_name, "high" if score >= 0.85 else "medium" if score >= 0.65 else "low", why)
    ordered = {f: columns[f] for f in NAME_HINTS if f in columns}
    return Mapping(ordered, guesses, [c.name for c in facts if c.name not in used])


def flow_map(values: set[str]) -> tuple[dict[str, str], Guess]:
    """value_maps.flow for a flow column's two values."""
    pairs = {
        frozenset({"e", "a"}): ({"e": "import", "a": "export"}, "E / A read as Einfuhr / Ausfuhr (German)"),
        frozenset({"i", "e"}): ({"i": "import", "e": "export"}, "I / E read as import / export"),
        frozenset({"i", "x"}): ({"i": "import", "x": "export"}, "I / X read as import / export"),
    }
    known = pairs.get(frozenset(v.lower() for v in values))
    if known is not None:
        m = {v: known[0][v.lower()] for v in sorted(values)}
        return m, Guess(m, "medium", known[1])
    m = {}
    for v in sorted(values):
        for f, words in FLOW_WORDS.items():
            if v.lower() in words and f not in m.values():
                m[v] = f
    if len(m) == len(values) == 2:
        return m, Guess(m, "medium" if {v.lower() for v in values} & {"e", "a"} else "high",
                        "the two values read as import / export")
    ordered = sorted(values)
    m = {ordered[0]: "import", ordered[-1]: "export"} if ordered else {}
    return m, Guess(m, "low", f"values {ordered} are not known flow words: check which is which")


def mass_unit_from_name(name: str) -> str | None:
    for t in tokens(name):
        if t in MASS_UNITS and t not in ("g",):
            return MASS_UNITS[t]
    return None


def currency_from_name(name: str, currencies: set[str]) -> str | None:
    for t in tokens(name):
        if t.upper() in currencies:
            return t.upper()
    return None
