"""Onboarding a country feed with the CLI only: `feeds init` on three layouts the sample feeds do not
use, at most two YAML edits, then `feeds validate` (dry run through raw load, the GX raw suite and dbt
staging + intermediate). Plus unit tests of the sniffer."""

from __future__ import annotations

import codecs
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from onboarding_samples import excel_two_headers, fixed_width, jsonl_nested

from tradesentry.cli import main
from tradesentry.feeds import sniff
from tradesentry.feeds.loader import load_feed_file
from tradesentry.settings import REPO_ROOT

# Each layout: the sample writer, the file name, and the hand edits (old text -> new text) a person
# makes to the draft. The acceptance is at most two.
LAYOUTS: dict[str, tuple[Callable[[Path], Path], str, list[tuple[str, str]]]] = {
    # Fixed width, Latin-1, header line, 10-digit national tariff lines, dd.mm.yyyy, decimal comma, no
    # currency anywhere in the file: the one thing init cannot know.
    "xh": (fixed_width, "XH_DECL_20261127.txt", [("  currency: null", "  currency: EUR  #")]),
    # Excel: a title, a blank row, two header rows with merged group titles, dotted 8-digit codes.
    "xi": (excel_two_headers, "xi_2026-11-27.xlsx", []),
    # JSON lines with nested objects and a list.
    "xj": (jsonl_nested, "xj_20261127.jsonl", []),
}


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A feeds folder of its own (with the repo's defaults) and a data folder, through the environment
    the CLI reads its settings from."""
    feeds = tmp_path / "feeds"
    feeds.mkdir()
    shutil.copy(REPO_ROOT / "feeds" / "_defaults.yaml", feeds / "_defaults.yaml")
    monkeypatch.setenv("TRADESENTRY_FEEDS_DIR", str(feeds))
    monkeypatch.setenv("TRADESENTRY_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TRADESENTRY_SAMPLE_DIR", str(tmp_path / "samples"))
    return tmp_path


def _edit(path: Path, edits: list[tuple[str, str]]) -> int:
    text = path.read_text(encoding="utf-8")
    for old, new in edits:
        assert old in text, f"the draft has no {old!r}:\n{text}"
        text = text.replace(old, new, 1)
    path.write_text(text, encoding="utf-8")
    return len(edits)


@pytest.mark.parametrize("code", sorted(LAYOUTS))
def test_init_then_at_most_two_edits_then_validate(code: str, env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write, name, edits = LAYOUTS[code]
    samples = env / "samples" / code
    samples.mkdir(parents=True)
    sample = write(samples / name)

    assert main(["feeds", "init", code, "--sample", str(sample)]) == 0
    draft = env / "feeds" / f"{code}.yaml"
    text = draft.read_text(encoding="utf-8")
    assert text.startswith("# yaml-language-server: $schema=feed.schema.json")
    assert "confidence high" in text and "enabled: false" in text
    assert "{sample_dir}/" + code in text and "{night:" in text
    # Never overwritten without --force.
    assert main(["feeds", "init", code, "--sample", str(sample)]) == 1
    assert "--force" in capsys.readouterr().err

    assert _edit(draft, edits) <= 2
    spec = load_feed_file(draft, yaml.safe_load((env / "feeds" / "_defaults.yaml").read_text()))
    mapped = spec.columns  # type: ignore[union-attr]
    for field in ("declaration_id", "declaration_date", "flow", "hs_code", "partner_country", "net_mass", "customs_value"):
        assert field in mapped

    capsys.readouterr()
    assert main(["feeds", "validate", code, "--enable"]) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert "40 rows landed, 0 lines rejected" in out
    assert "raw quality suite:" in out and "0 would be quarantined" in out
    assert "enabled: true" in draft.read_text(encoding="utf-8")

    assert main(["feeds", "preview", code, "-n", "2"]) == 0
    out = capsys.readouterr().out
    assert "record 1" in out and "hs_code" in out and "??" not in out


def test_layout_specific_guesses(env: Path) -> None:
    samples = env / "samples"
    samples.mkdir()
    from tradesentry.feeds.onboard import init_feed
    from tradesentry.settings import get_settings

    settings = get_settings()
    xh = init_feed("xh", fixed_width(samples / "XH_DECL_20261127.txt"), settings)
    assert "kind: \"fixed_width\"" in xh.text and "hs_format: \"national10\"" in xh.text
    assert "decimal: \",\"" in xh.text and "date_format: \"%d.%m.%Y\"" in xh.text
    assert xh.mapping.columns["hs_code"] == "WARENNR" and xh.todos == ["conventions.currency"]
    xi = init_feed("xi", excel_two_headers(samples / "xi.xlsx"), settings)
    assert "header_rows: 2" in xi.text and "skip_rows: 2" in xi.text and "hs_format: \"dotted\"" in xi.text
    assert xi.mapping.columns["net_mass"] == "Marchandise Poids net (kg)"
    assert xi.mapping.columns["currency"] == "Valeur Devise"
    xj = init_feed("xj", jsonl_nested(samples / "xj.jsonl"), settings)
    assert xj.mapping.columns["consignment_ref"] == "consignment.ref"
    assert "goods.tags" in xj.mapping.unmapped


def test_validate_points_at_the_line(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (env / "feeds" / "xq.yaml").write_text(
        "feed: xq\ncountry: XQ\nname: T\nsource: {uri: 'file:///x'}\nformat:\n  kind: excel\n"
        "columns: {declaration_id: D}\n"
    )
    assert main(["feeds", "validate", "xq"]) == 1
    out = capsys.readouterr().out
    assert "xq.yaml:6: format.kind" in out and "NOT VALID" in out


# ---------------------------------------------------------------------------------- sniffing


def test_sniff_encoding() -> None:
    assert sniff.sniff_encoding(codecs.BOM_UTF16_LE + "a;b".encode("utf-16-le")).value == "utf-16"
    assert sniff.sniff_encoding("Zoë;Café".encode()).value == "utf-8"
    latin = sniff.sniff_encoding("Zoë;Café".encode("latin-1"))
    assert latin.value == "latin-1" and latin.confidence == "high"
    assert sniff.sniff_encoding(codecs.BOM_UTF8 + b"a,b").value == "utf-8"


@pytest.mark.parametrize("delim", [",", ";", "\t", "|"])
def test_sniff_delimiter_with_title_lines(delim: str) -> None:
    lines = ["Customs export, synthetic", "", delim.join(["ID", "DATE", "VALUE"])]
    lines += [delim.join([f"D{i}", "2026-11-27", f'"{i},5"' if delim == "," else f"{i},5"]) for i in range(20)]
    guess, skip = sniff.sniff_delimiter(lines)
    assert guess.value == ("\\t" if delim == "\t" else delim)
    assert skip == 2 and guess.confidence == "high"


def test_sniff_decimal_comma_and_thousands() -> None:
    dec, th = sniff.sniff_numbers(["1.234,56", "12,5", "3", "100.000,00", "7,25"])
    assert (dec.value, th.value) == (",", ".")
    dec, th = sniff.sniff_numbers(["1,234.56", "12.5", "0.25"])
    assert (dec.value, th.value) == (".", ",")
    dec, th = sniff.sniff_numbers(["1 234,5", "12,75"])
    assert (dec.value, th.value) == (",", " ")
    # Dates are not numbers with thousands separators.
    assert sniff.sniff_numbers(["26.11.2026", "12,5"])[1].value == ""


@pytest.mark.parametrize(
    ("values", "fmt"),
    [
        (["2026-11-27", "2026-01-05"], "%Y-%m-%d"),
        (["27/11/2026", "05/01/2026"], "%d/%m/%Y"),
        (["11/27/2026", "01/05/2026"], "%m/%d/%Y"),
        (["27.11.2026"], "%d.%m.%Y"),
        (["20261127", "20260105"], "%Y%m%d"),
        (["27-Nov-2026"], "%d-%b-%Y"),
    ],
)
def test_sniff_date_formats(values: list[str], fmt: str) -> None:
    guess = sniff.sniff_date_format(values)
    assert guess is not None and guess.value == fmt


def test_ambiguous_dates_are_low_confidence_and_tariff_codes_are_not_dates() -> None:
    guess = sniff.sniff_date_format(["05/01/2026", "06/02/2026"])
    assert guess is not None and guess.confidence == "low" and "ambiguous" in guess.why
    assert sniff.sniff_date_format(["61091000", "85176200", "09011100"]) is None


def test_name_hints_are_multilingual() -> None:
    assert sniff.name_score("Valeur en douane", "customs_value")[0] >= 0.8
    assert sniff.name_score("Zollwert", "customs_value")[0] >= 0.7
    assert sniff.name_score("POIDS_NET", "net_mass")[0] >= 0.9
    assert sniff.name_score("Pays d'origine", "origin_country")[0] >= 0.8
    assert sniff.name_score("Importateur", "trader_id")[0] >= 0.8
    assert sniff.name_score("TarifNr", "hs_code")[0] >= 0.7


# ------------------------------------------------------------------------------ end to end


# The end-to-end part (the new feed in the next dag.test() run) lives in test_pipeline_e2e.py, which
# has the sample history it needs.
