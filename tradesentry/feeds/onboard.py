"""Onboarding a country feed: `feeds init`, `validate`, `preview` and `backfill`.

`init` drafts `feeds/<code>.yaml` from a sample file (every guess commented with its confidence),
`validate` checks the YAML and dry-runs the sample through landing, raw load, the raw quality suite
and dbt staging + intermediate in a throw-away data folder, `preview` shows the first rows in
canonical form beside the raw values, `backfill` loads a range of the feed's history through the
pipeline's own backfill.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from tradesentry.feeds import sniff as S
from tradesentry.feeds.spec import CANONICAL_FIELDS, REQUIRED_FIELDS, FeedSpec, FormatSpec
from tradesentry.settings import Settings

Progress = Callable[[str], None]
SAMPLE_ROWS = 500


def _quiet(msg: str) -> None:
    pass


def _yaml(value: Any) -> str:
    """A YAML scalar: JSON strings are valid YAML and keep %, :, # and spaces safe."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def _comment(g: S.Guess | None, prefix: str = "guessed") -> str:
    if g is None:
        return ""
    return f"  # {prefix}: {g.why} (confidence {g.confidence})"


def _seed_codes(settings: Settings, name: str, column: str) -> set[str]:
    path = settings.dbt_project_dir / "seeds" / name
    if not path.exists():
        return set()
    with path.open(encoding="utf-8") as fh:
        return {row[column] for row in csv.DictReader(fh) if row.get(column)}


def _uri_for(sample: Path, settings: Settings) -> tuple[str, str]:
    """The source.uri template of the sample's location, with its date replaced by {night:...}."""
    name = sample.name
    why = "the sample's own folder and name"
    for pattern, fmt in ((r"\d{4}-\d{2}-\d{2}", "%Y-%m-%d"), (r"\d{8}", "%Y%m%d")):
        m = re.search(pattern, name)
        if m:
            try:
                datetime.strptime(m.group(0), fmt)
            except ValueError:
                continue
            name = name[: m.start()] + "{night:" + fmt + "}" + name[m.end() :]
            why += f"; the date {m.group(0)} in the name became {{night:{fmt}}}"
            break
    folder = sample.resolve().parent
    try:
        rel = folder.relative_to(settings.samples)
        base = "{sample_dir}" + ("/" + str(rel) if str(rel) != "." else "")
    except ValueError:
        base = str(folder)
    return f"file://{base}/{name}", why


def night_of(sample: Path) -> date:
    """The night a sample file covers, from a date in its name; today when it has none."""
    for pattern, fmt in ((r"\d{4}-\d{2}-\d{2}", "%Y-%m-%d"), (r"\d{8}", "%Y%m%d")):
        m = re.search(pattern, sample.name)
        if m:
            try:
                return datetime.strptime(m.group(0), fmt).date()
            except ValueError:
                continue
    return date.today()


def _reading_spec(code: str, fmt: dict[str, Any]) -> Any:
    """Just enough of a spec for the readers (they use feed, format and columns)."""
    return SimpleNamespace(feed=code, format=FormatSpec.model_validate(fmt), columns={})


def read_columns(code: str, fmt: dict[str, Any], sample: Path, limit: int = SAMPLE_ROWS) -> tuple[list[str], list[list[str | None]]]:
    from tradesentry.landing.readers import read_sample

    cols, rows, _ = read_sample(_reading_spec(code, fmt), sample, limit=limit)
    return cols[1:], [list(r[1:]) for r in rows]


# -------------------------------------------------------------------------------------------- init


@dataclass
class Draft:
    path: Path
    text: str
    mapping: S.Mapping
    todos: list[str] = field(default_factory=list)


def init_feed(
    code: str,
    sample: Path,
    settings: Settings,
    country: str | None = None,
    force: bool = False,
    progress: Progress = _quiet,
) -> Draft:
    """Sniff the sample and write the draft `feeds/<code>.yaml`; never overwrites without `force`."""
    target = settings.feeds_dir / f"{code}.yaml"
    if target.exists() and not force:
        raise FileExistsError(f"{target} exists; pass --force to replace it (its edits would be lost)")
    if not re.fullmatch(r"[a-z][a-z0-9_]{1,30}", code):
        raise ValueError(f"feed code {code!r}: use lower case letters, digits and _ (e.g. xh), 2-31 characters")
    country = (country or (code.upper() if re.fullmatch(r"[a-z]{2}", code) else "")).upper()
    if not re.fullmatch(r"[A-Z]{2}", country):
        raise ValueError("give --country XX (the reporting country's ISO 3166-1 alpha-2 code)")

    progress(f"sniffing {sample.name}: wrapper, kind, encoding, delimiter, header")
    sniffed = S.sniff_format(sample)
    fmt = dict(sniffed.format)
    g = dict(sniffed.guesses)
    progress(f"reading up to {SAMPLE_ROWS} rows as {fmt.get('kind', 'csv')} to look at the values")
    names, rows = read_columns(code, fmt, sample)
    values = {n: [r[i] for r in rows if r[i] not in (None, "")] for i, n in enumerate(names)}

    if fmt.get("kind", "csv") in ("csv", "fixed_width", "jsonl"):
        dec, th = S.sniff_numbers([v for vs in values.values() for v in vs if isinstance(v, str)])
        fmt["decimal"], fmt["thousands"] = dec.value, th.value
        g["decimal"], g["thousands"] = dec, th
    facts = [S.ColumnFacts(n, [str(v) for v in values[n]]) for n in names]
    date_guesses = [(f, S.sniff_date_format(f.values)) for f in facts]
    for f, dg in date_guesses:
        f.date = dg
    dated = [(f, dg) for f, dg in date_guesses if dg is not None]
    if dated:
        best = max(dated, key=lambda p: (S.name_score(p[0].name, "declaration_date")[0], p[1].confidence == "high"))
        fmt["date_format"] = best[1].value
        g["date_format"] = S.Guess(best[1].value, best[1].confidence, f"column {best[0].name!r}: {best[1].why}")

    progress(f"proposing a mapping of {len(names)} columns to {len(CANONICAL_FIELDS)} canonical fields")
    countries = _seed_codes(settings, "countries.csv", "alpha2") | _seed_codes(settings, "countries.csv", "alpha3")
    currencies = _seed_codes(settings, "currencies.csv", "currency_code") or {"USD", "EUR", "GBP", "JPY", "CNY", "CHF"}
    mapping = S.propose_mapping(facts, fmt.get("decimal", "."), fmt.get("thousands", ""), countries, currencies)
    by_name = {f.name: f for f in facts}

    conventions: dict[str, tuple[Any, str]] = {}
    todos: list[str] = []
    hs_col = mapping.columns.get("hs_code")
    if hs_col:
        digits = [re.sub(r"[.\s]", "", v) for v in by_name[hs_col].values]
        n = max(set(map(len, digits)), key=[len(d) for d in digits].count) if digits else 6
        dotted = any("." in v for v in by_name[hs_col].values)
        hs_format = "dotted" if dotted else {6: "hs6", 8: "national8", 10: "national10"}.get(n, "hs6")
        share = sum(len(d) == n for d in digits) / max(len(digits), 1)
        conventions["hs_format"] = (hs_format, _comment(S.Guess(hs_format, S.confidence(share), f"{share:.0%} of {hs_col!r} values have {n} digits{' and dots' if dotted else ''}")))
    pc = mapping.columns.get("partner_country")
    if pc:
        vs = by_name[pc].values
        kind = "alpha3" if vs and all(len(v) == 3 and v.isalpha() for v in vs) else "numeric" if vs and all(v.isdigit() for v in vs) else "alpha2"
        conventions["country_code"] = (kind, _comment(S.Guess(kind, "high", f"values of {pc!r} like {vs[0] if vs else '?'}")))
    if "mass_unit" not in mapping.columns:
        unit = S.mass_unit_from_name(mapping.columns.get("net_mass", ""))
        if unit:
            conventions["mass_unit"] = (unit, f"  # guessed from the column name {mapping.columns['net_mass']!r} (confidence medium)")
        else:
            conventions["mass_unit"] = ("kg", "  # TODO: the unit of the net mass column (guessed kg: nothing in the file says)")
            todos.append("conventions.mass_unit")
    if "currency" not in mapping.columns:
        cur = S.currency_from_name(mapping.columns.get("customs_value", ""), currencies)
        if cur:
            conventions["currency"] = (cur, f"  # guessed from the column name {mapping.columns['customs_value']!r} (confidence medium)")
        else:
            conventions["currency"] = (None, "  # TODO: ISO 4217 code of the values (the file has no currency column)")
            todos.append("conventions.currency")

    flow_lines: list[str] = []
    flow_col = mapping.columns.get("flow")
    if flow_col:
        fm, fg = S.flow_map(by_name[flow_col].distinct)
        if set(fm) != {"import", "export"}:
            flow_lines = [f"    {_yaml(k)}: {v}" for k, v in fm.items()]
            flow_lines[0] += _comment(fg)
            if fg.confidence == "low":
                todos.append("value_maps.flow")

    uri, uri_why = _uri_for(sample, settings)
    text = _render_yaml(code, country, sample, uri, uri_why, fmt, g, mapping, conventions, flow_lines, facts)
    missing = [f for f in REQUIRED_FIELDS if f not in mapping.columns]
    todos += [f"columns.{f}" for f in missing]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    progress(f"wrote {target}")
    return Draft(target, text, mapping, todos)


def _render_yaml(
    code: str,
    country: str,
    sample: Path,
    uri: str,
    uri_why: str,
    fmt: dict[str, Any],
    g: dict[str, S.Guess],
    mapping: S.Mapping,
    conventions: dict[str, tuple[Any, str]],
    flow_lines: list[str],
    facts: list[S.ColumnFacts],
) -> str:
    today = date.today().isoformat()
    out = [
        "# yaml-language-server: $schema=feed.schema.json",
        f"# DRAFT written by `tradesentry feeds init {code}` on {today} from a sample file.",
        f"# sample: {sample.resolve()}",
        "# Every guess says why and how sure it is; fix the TODOs, then run",
        f"#   tradesentry feeds validate {code} --enable && tradesentry feeds generate",
        f"feed: {code}",
        f"country: {country}",
        f"name: {_yaml(f'{country} customs declarations')}",
        "# Disabled until `feeds validate --enable` passes: the nightly run skips disabled feeds.",
        "enabled: false",
        "source:",
        f"  uri: {_yaml(uri)}  # TODO: where the partner delivers the file; guessed from {uri_why}",
        "format:",
    ]
    order = ("kind", "compression", "encoding", "delimiter", "quote", "header", "header_rows", "skip_rows",
             "sheet", "decimal", "thousands", "date_format")
    for key in order:
        if key in fmt:
            out.append(f"  {key}: {_yaml(fmt[key])}{_comment(g.get(key))}")
    if fmt.get("fields"):
        out.append("  fields:  # guessed from the columns of spaces the lines share: check the widths")
        for f in fmt["fields"]:
            out.append(f"    - {{name: {_yaml(f['name'])}, start: {f['start']}, width: {f['width']}}}")
    out.append("columns:")
    examples = {f.name: f.values[:3] for f in facts}
    for f, col in mapping.columns.items():
        ex = ", ".join(examples.get(col, []))
        guess = mapping.guesses[f]
        out.append(f"  {f}: {_yaml(col)}  # {guess.why} (confidence {guess.confidence}); e.g. {ex}"[:230])
    for f in REQUIRED_FIELDS:
        if f not in mapping.columns:
            out.append(f"  # TODO {f}: no column looks like it; candidates: {', '.join(mapping.unmapped) or '-'}")
    if mapping.unmapped:
        out.append(f"  # not mapped (kept in raw_values): {', '.join(mapping.unmapped)}")
    out.append("conventions:")
    for key, (value, comment) in conventions.items():
        out.append(f"  {key}: {'null' if value is None else _yaml(value)}{comment}")
    if flow_lines:
        out += ["value_maps:", "  flow:", *flow_lines]
    if mapping.unmapped:
        # The raw gate counts a column the spec does not map as new when the feed has no earlier
        # file, so with `stop` the feed's first night would be held for the sample's own columns.
        out += [
            "schema_contract:",
            f"  on_new_column: accept  # the sample has {len(mapping.unmapped)} unmapped column(s); "
            "set stop after the first night has landed",
        ]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------- validate


@dataclass
class DryRun:
    ok: bool
    lines: list[str] = field(default_factory=list)
    landed: int = 0
    rejected: int = 0
    harmonised: int | None = None
    quarantined: int | None = None
    held: int | None = None


def _sample_from_spec(path: Path) -> Path | None:
    for line in path.read_text(encoding="utf-8").splitlines()[:10]:
        if line.startswith("# sample: "):
            return Path(line.removeprefix("# sample: ").strip())
    return None


def validate_feed(
    code: str, settings: Settings, sample: Path | None = None, progress: Progress = _quiet, dbt: bool = True
) -> DryRun:
    """Check the YAML (errors name file:line), then dry-run the sample in a temporary data folder."""
    from tradesentry.feeds.loader import FeedSpecError, load_defaults, load_feed_file

    path = settings.feeds_dir / f"{code}.yaml"
    run = DryRun(ok=False)
    if not path.exists():
        run.lines.append(f"{path}: no such feed; write it with `tradesentry feeds init {code} --sample FILE`")
        return run
    progress(f"1/5 checking {path.name} against the schema")
    try:
        spec = load_feed_file(path, load_defaults(settings.feeds_dir))
    except FeedSpecError as exc:
        run.lines += ["The specification does not validate:", *[f"  {ln}" for ln in str(exc).splitlines()]]
        return run
    if not isinstance(spec, FeedSpec):
        run.lines.append(f"{path}: valid (an exchange-rates feed: no declarations dry run)")
        run.ok = True
        return run
    run.lines.append(f"{path.name}: valid against the schema")
    sample = sample or _sample_from_spec(path)
    if sample is None or not sample.exists():
        run.lines.append(f"no sample to dry-run ({sample or 'none recorded'}): give --sample FILE")
        return run
    night = night_of(sample)
    with tempfile.TemporaryDirectory(prefix=f"ts-validate-{code}-") as tmp:
        _dry_run(spec, sample, night, settings, Path(tmp), run, progress, dbt)
    return run


def _dry_run(
    spec: FeedSpec, sample: Path, night: date, settings: Settings, tmp: Path, run: DryRun, progress: Progress, dbt: bool
) -> None:
    from tradesentry.landing.pull import pull_feed
    from tradesentry.landing.raw_load import load_night
    from tradesentry.warehouse import open_settings_warehouse

    feeds_dir = tmp / "feeds"
    feeds_dir.mkdir()
    dry = spec.model_copy(update={"source": spec.source.model_copy(update={"uri": f"file://{sample.resolve()}"}), "enabled": True})
    tmp_settings = Settings(
        data_dir=tmp / "data",
        feeds_dir=feeds_dir,
        dbt_project_dir=tmp / "dbt_project",
        expectations_dir=tmp / "expectations",
        max_failing_share=settings.max_failing_share,
        max_rate_age_days=settings.max_rate_age_days,
        cif_fob_factor=settings.cif_fob_factor,
    ).resolve()
    progress(f"2/5 landing and loading {sample.name} as night {night} in a temporary warehouse")
    landed = pull_feed(dry, night, tmp_settings)
    with open_settings_warehouse(tmp_settings) as con:
        try:
            results = load_night(con, dry, night, tmp_settings)
        except RuntimeError as exc:
            run.lines.append(f"raw load failed: {exc}")
            return
        run.landed = sum(r.rows_landed for r in results)
        run.rejected = sum(r.rows_rejected for r in results)
        columns = list(results[0].columns) if results else []
        run.lines.append(f"raw load: {run.landed} rows landed, {run.rejected} lines rejected by the reader")
        for reason, n, line, raw in con.execute(
            "select reason, count(*) over (), source_line, raw_line from raw.parse_rejects order by source_line limit 3"
        ).fetchall():
            run.lines.append(f"  rejected line {line}: {reason} | {str(raw)[:100]}")
            del n
    missing = [c for c in spec.columns.values() if c not in columns]
    if missing:
        run.lines.append(f"the file has no column {missing}; it has {columns}")
        return
    if run.landed == 0:
        run.lines.append("no row could be read: check format (delimiter, encoding, header, fields)")
        return

    _raw_suite(dry, night, tmp_settings, run, progress)
    if dbt:
        _dbt_dry_run(dry, landed.night, settings, tmp_settings, run, progress)
    else:
        run.lines.append("harmonisation dry run skipped (--no-dbt)")
    # Rows held for a missing exchange rate are fine (rates come); rows the spec cannot read are not.
    limit = tmp_settings.max_failing_share
    bad = run.rejected + (run.quarantined or 0)
    total = run.landed + run.rejected
    run.ok = run.landed > 0 and bad <= limit * total and (run.harmonised is None or run.harmonised + (run.held or 0) > 0)
    if not run.ok and run.landed > 0:
        run.lines.append(f"{bad} of {total} rows unreadable or quarantined: more than the {limit:.0%} allowed")


def _raw_suite(spec: FeedSpec, night: date, tmp_settings: Settings, run: DryRun, progress: Progress) -> None:
    """The GX raw suite generated from the spec, on the dry run's raw rows."""
    try:
        from tradesentry.quality.gates import validate_raw
        from tradesentry.quality.suites import generate_suites
    except ImportError as exc:
        run.lines.append(f"raw quality suite skipped: tradesentry.quality is not available ({exc})")
        return
    progress("3/5 running the raw Great Expectations suite generated from the spec")
    generate_suites([spec], tmp_settings.expectations_dir)
    try:
        result = validate_raw(tmp_settings, night, [spec])
    except Exception as exc:  # a gate crash must not hide the rest of the dry run
        run.lines.append(f"raw quality suite could not run: {type(exc).__name__}: {exc}")
        return
    fq = result.feeds.get(spec.feed)
    if fq is None:
        return
    failed = fq.expectations_failed
    # Volume and freshness need a history a dry run has not got: the suite and the drift check count.
    run.lines.append(
        f"raw quality suite: {fq.expectations_evaluated - len(failed)} of {fq.expectations_evaluated} "
        f"expectations pass; {fq.quarantined_rows} rows would be quarantined by it"
    )
    for e in failed[:8]:
        run.lines.append(f"  {e.severity}: {e.name}: {e.message[:160]}")
    for d in fq.drift:
        run.lines.append(f"  {d.severity}: {d.message}")
    if fq.status == "held" and fq.hold_reason_code not in ("volume_drop", "missing_night", "late_file"):
        run.lines.append(f"  the feed would be held: {fq.hold_reason}")


def _dbt_dry_run(
    spec: FeedSpec, night: str, settings: Settings, tmp_settings: Settings, run: DryRun, progress: Progress
) -> None:
    """Staging + intermediate for this feed alone, in a copy of the dbt project on the temp warehouse."""
    try:
        from tradesentry.harmonise.codegen import generate
        from tradesentry.harmonise.dbt_runner import DbtRunError, run_dbt
    except ImportError as exc:
        run.lines.append(f"harmonisation dry run skipped: tradesentry.harmonise is not available ({exc})")
        return
    progress("4/5 copying the dbt project and generating this feed's staging model")
    shutil.copytree(
        settings.dbt_project_dir,
        tmp_settings.dbt_project_dir,
        ignore=shutil.ignore_patterns("target", "logs", "dbt_packages", ".user.yml", "*.duckdb"),
    )
    (tmp_settings.feeds_dir / f"{spec.feed}.yaml").write_text(
        json.dumps(spec.model_dump(mode="json", exclude={"versions"}) | {"enabled": True}), encoding="utf-8"
    )
    _copy_rates(settings, tmp_settings, date.fromisoformat(night), run)
    generate(tmp_settings.feeds_dir, tmp_settings.dbt_project_dir)
    progress("5/5 dbt seed + run of staging and intermediate (about a minute)")
    import inspect

    # In a child process when the runner offers it: dbt's in-process logging would flood the report.
    quiet: dict[str, Any] = {"in_process": False} if "in_process" in inspect.signature(run_dbt).parameters else {}
    try:
        run_dbt(["seed"], tmp_settings, **quiet)
        run_dbt(["run", "--exclude", "marts"], tmp_settings, **quiet)
    except DbtRunError as exc:
        run.lines.append(f"dbt failed on the dry run:\n{exc}")
        run.harmonised = 0
        return
    from tradesentry.warehouse import open_settings_warehouse

    with open_settings_warehouse(tmp_settings) as con:
        counts = dict(
            con.execute(
                "select row_status, count(*) from intermediate.int_declarations_converted where feed = ? group by 1",
                [spec.feed],
            ).fetchall()
        )
        run.harmonised = counts.get("ok", 0)
        run.quarantined = counts.get("quarantine", 0)
        run.held = counts.get("held", 0)
        total = sum(counts.values())
        run.lines.append(
            f"harmonisation: {run.harmonised} of {total} rows would harmonise, {run.quarantined} would be "
            f"quarantined, {run.held} held (waiting for exchange rates)"
        )
        reasons = con.execute(
            "select reason_code, count(*) n, min_by(source_line, source_line), min_by(reason, source_line) "
            "from intermediate.int_declarations_converted where feed = ? and row_status <> 'ok' "
            "group by 1 order by n desc limit 5",
            [spec.feed],
        ).fetchall()
        for code, n, line, reason in reasons:
            run.lines.append(f"  {n:>6} x {code}: e.g. line {line}: {reason}")


def _copy_rates(settings: Settings, tmp_settings: Settings, night: date, run: DryRun) -> None:
    """Exchange rates for the dry run: the real warehouse's, when it can be read without waiting."""
    import duckdb

    from tradesentry.warehouse import open_settings_warehouse

    if not settings.warehouse.exists():
        run.lines.append("no exchange rates (no warehouse yet): rows not in USD are held as rate_missing")
        return
    try:
        src = duckdb.connect(str(settings.warehouse), read_only=True)
    except duckdb.Error:
        run.lines.append("the warehouse is busy (a run is writing it): rows not in USD are held as rate_missing")
        return
    try:
        tables = [r[0] for r in src.execute(
            "select table_name from information_schema.tables where table_schema = 'raw' and table_name like '%\\_\\_rates' escape '\\'"
        ).fetchall()]
        for t in tables:
            df = src.execute(f'select * from raw."{t}"').df()
            with open_settings_warehouse(tmp_settings) as con:
                con.register("rates_df", df)
                con.execute(f'create or replace table raw."{t}" as select * from rates_df')
        for rates_spec in (settings.feeds_dir).glob("*.yaml"):
            if rates_spec.name.startswith("_"):
                continue
            head = rates_spec.read_text(encoding="utf-8")
            if "dataset: exchange_rates" in head:
                shutil.copy(rates_spec, tmp_settings.feeds_dir / rates_spec.name)
        if tables:
            run.lines.append(f"exchange rates: copied {', '.join(tables)} from {settings.warehouse}")
    finally:
        src.close()
    defaults = settings.feeds_dir / "_defaults.yaml"
    if defaults.exists():
        shutil.copy(defaults, tmp_settings.feeds_dir / defaults.name)


def enable(path: Path) -> bool:
    """Flip `enabled: false` to true in the YAML text (comments kept)."""
    text = path.read_text(encoding="utf-8")
    new = re.sub(r"(?m)^enabled:\s*false\b", "enabled: true", text, count=1)
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


# ----------------------------------------------------------------------------------------- preview


def preview(code: str, settings: Settings, sample: Path | None = None, n: int = 10) -> str:
    """The first rows in canonical form (field: raw value) as a terminal table."""
    from tradesentry.feeds.loader import load_defaults, load_feed_file
    from tradesentry.landing.readers import read_sample

    path = settings.feeds_dir / f"{code}.yaml"
    spec = load_feed_file(path, load_defaults(settings.feeds_dir))
    if not isinstance(spec, FeedSpec):
        raise ValueError(f"{code} is not a declarations feed")
    sample = sample or _sample_from_spec(path)
    if sample is None:
        raise ValueError("give --sample FILE")
    spec = spec.for_night(night_of(sample))
    cols, rows, rejects = read_sample(spec, sample, limit=n)
    index = {c: i for i, c in enumerate(cols)}
    out = [f"{code}: first {len(rows)} rows of {sample.name} (canonical field <- file column: value)"]
    for r in rows:
        out.append(f"-- record {r[0]}")
        for f, c in spec.columns.items():
            raw = r[index[c]] if c in index else "(column missing)"
            canon = _canonical(spec, f, raw)
            shown = f"{raw!s:<28}" + (f" -> {canon}" if canon is not None and canon != raw else "")
            out.append(f"  {f:<18} <- {c[:22]:<22} {shown}")
    if rejects:
        out.append(f"{len(rejects)} unreadable record(s) among them, first: {rejects[0].source_line}: {rejects[0].message}")
    return "\n".join(out)


def _canonical(spec: FeedSpec, f: str, raw: Any) -> Any:
    """The value the staging model makes of a raw value, for the preview (same rules, in Python)."""
    if raw is None or not isinstance(raw, str):
        return None
    fmt = spec.format
    try:
        if f == "declaration_date":
            return datetime.strptime(raw.strip(), fmt.date_format).date().isoformat()
        if f in ("net_mass", "customs_value", "quantity"):
            t = raw.strip()
            if fmt.thousands:
                t = t.replace(fmt.thousands, "")
            if fmt.decimal == ",":
                t = t.replace(",", ".")
            v = float(t)
            unit = spec.conventions.mass_unit if f == "net_mass" else spec.conventions.currency if f == "customs_value" else None
            return f"{v:,.2f}" + (f" {unit}" if unit else "")
        if f == "flow":
            return spec.value_maps.flow.get(raw.strip(), f"?? not in value_maps.flow {sorted(spec.value_maps.flow)}")
        if f == "hs_code":
            d = re.sub(r"\D", "", raw)
            return f"HS6 {d[:6]}" if len(d) >= 6 else f"?? {len(d)} digits"
        if f in ("partner_country", "origin_country"):
            return spec.value_maps.country.get(raw.strip(), raw.strip())
    except ValueError as exc:
        return f"?? {exc}"
    return None


# ---------------------------------------------------------------------------------------- backfill


def backfill_feed(code: str, first: date, last: date, settings: Settings, score: bool = True) -> dict[str, Any]:
    """Load a range of one feed's history through the pipeline's backfill (same stages as nightly)."""
    from tradesentry.pipeline.stages import backfill

    return backfill(settings, first, last, score=score, feeds=[code])
