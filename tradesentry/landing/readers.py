"""Readers that turn one landed file into a staging relation of text columns.

Every reader creates a temporary table `<stage>` with a `__row` column (1-based position of the
record among the records it could read, in file order) followed by the file's own columns as
VARCHAR, and returns the records it could not read as `Reject`s with their 1-based record number
(header excluded). `raw_load` maps positions back to record numbers.

Kinds: csv (DuckDB's CSV reader, rejects with line numbers), fixed_width (lines cut by position),
xlsx (openpyxl, streaming), jsonl (one object per line, nested objects flattened) and parquet. Any of
them may come wrapped in gzip or zip (`format.compression`, `auto` = by the file name).

Blank lines (and empty spreadsheet rows) are not records: they are skipped and not numbered, as the
CSV reader does, so record numbers stay comparable across kinds.
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from tradesentry.feeds.spec import FeedSpec, RatesFeedSpec

AnySpec = FeedSpec | RatesFeedSpec


@dataclass(frozen=True)
class Reject:
    source_line: int
    raw_line: str | None
    error_type: str
    message: str


class ReadError(RuntimeError):
    """The file as a whole cannot be read with the spec's format (wrong sheet, ambiguous zip...)."""


def lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# --------------------------------------------------------------------------------------------- csv


def _csv_options(spec: AnySpec, compression: str = "auto") -> str:
    fmt = spec.format
    delim = "\t" if fmt.delimiter in ("\\t", "tab") else fmt.delimiter
    opts = {
        "delim": lit(delim),
        "quote": lit(fmt.quote),
        "header": "true" if fmt.header else "false",
        "encoding": lit(fmt.encoding),
        "all_varchar": "true",
        "skip": str(fmt.skip_rows),
    }
    if compression != "auto":
        opts["compression"] = lit(compression)
    return ", ".join(f"{k}={v}" for k, v in opts.items())


def read_csv(
    con: duckdb.DuckDBPyConnection, spec: AnySpec, path: str, stage: str, tag: str, compression: str = "auto"
) -> list[Reject]:
    rej_table, rej_scan = f"rej_{tag}", f"scan_{tag}"
    con.execute(
        f"create temp table {stage} as select row_number() over () as __row, * "
        f"from read_csv({lit(path)}, {_csv_options(spec, compression)}, store_rejects=true, "
        f"rejects_table={lit(rej_table)}, rejects_scan={lit(rej_scan)})"
    )
    try:
        # The CSV reader numbers lines from the top of the file, header and skipped rows included.
        offset = (1 if spec.format.header else 0) + spec.format.skip_rows
        rows = con.execute(
            f"select line - {offset}, first(csv_line), first(error_type::varchar), first(error_message) "
            f"from {rej_table} group by line order by line"
        ).fetchall()
    finally:
        con.execute(f"drop table if exists {rej_table}")
        con.execute(f"drop table if exists {rej_scan}")
    return [Reject(int(r[0]), r[1], str(r[2]).lower(), str(r[3]).split(".")[0]) for r in rows]


# ------------------------------------------------------------------------------------- fixed width


def read_fixed_width(
    con: duckdb.DuckDBPyConnection, spec: AnySpec, path: str, stage: str, tag: str
) -> list[Reject]:
    """Lines cut by the spec's `fields` (1-based start, width), values trimmed.

    DuckDB reads the lines (one VARCHAR column, no quoting) so the encoding is decoded natively;
    a line shorter than the layout is a reject rather than a row of silently empty fields.
    """
    fmt = spec.format
    lines = f"lines_{tag}"
    # \x01 never occurs in text exports, so every line is one column.
    con.execute(
        f"create temp table {lines} as select row_number() over () as __pos, line from read_csv("
        f"{lit(path)}, columns={{'line': 'VARCHAR'}}, delim='\x01', quote='', escape='', header=false, "
        f"auto_detect=false, strict_mode=false, encoding={lit(fmt.encoding)})"
    )
    try:
        first = fmt.skip_rows + (1 if fmt.header else 0)
        need = max(f.start + f.width - 1 for f in fmt.fields)
        # Record numbers count the non-blank lines after the header, like the CSV reader's.
        con.execute(
            f"create temp table rec_{tag} as select row_number() over (order by __pos) as rec, line "
            f"from {lines} where __pos > {first} and line is not null and trim(line) <> ''"
        )
        bad = con.execute(
            f"select rec, line, length(line) from rec_{tag} where length(line) < {need} order by rec"
        ).fetchall()
        cut = ", ".join(
            f"nullif(trim(substr(line, {f.start}, {f.width})), '') as {_ident(f.name)}" for f in fmt.fields
        )
        con.execute(
            f"create temp table {stage} as select row_number() over (order by rec) as __row, {cut} "
            f"from rec_{tag} where length(line) >= {need} order by rec"
        )
    finally:
        con.execute(f"drop table if exists {lines}")
        con.execute(f"drop table if exists rec_{tag}")
    return [
        Reject(
            int(rec),
            line,
            "line_too_short",
            f"line is {length} characters long, the fixed-width layout needs {need}",
        )
        for rec, line, length in bad
    ]


# ------------------------------------------------------- records from Python (xlsx, jsonl) to stage


def _stage_records(
    con: duckdb.DuckDBPyConnection, stage: str, tag: str, records: Iterable[dict[str, str | None]]
) -> list[str]:
    """Write records to a temporary JSON-lines file and let DuckDB read it with every column VARCHAR.

    Streaming through a file keeps memory flat for large workbooks; the columns are collected in
    first-seen order while writing, then given to read_json explicitly so nothing is type-sniffed.
    """
    columns: dict[str, None] = {}
    with tempfile.TemporaryDirectory(prefix="ts-read-") as tmp:
        out = Path(tmp) / f"{tag}.jsonl"
        n = 0
        with out.open("w", encoding="utf-8") as fh:
            for rec in records:
                n += 1
                for k in rec:
                    columns.setdefault(k, None)
                fh.write(json.dumps({"__row": n, **rec}, ensure_ascii=False) + "\n")
        if not columns:
            columns["value"] = None
        if n == 0:
            cols = ", ".join(f"null::varchar as {_ident(c)}" for c in columns)
            con.execute(f"create temp table {stage} as select null::bigint as __row, {cols} where false")
            return list(columns)
        spec_cols = ", ".join(f"{lit(c)}: 'VARCHAR'" for c in columns)
        con.execute(
            f"create temp table {stage} as select * from read_json({lit(str(out))}, "
            f"format='newline_delimited', columns={{'__row': 'BIGINT', {spec_cols}}}) order by __row"
        )
    return list(columns)


# -------------------------------------------------------------------------------------------- xlsx


def cell_text(value: Any) -> str | None:
    """A cell value as text, the way a person reads it: dates ISO, numbers without float noise."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dt.datetime):
        if value.time() == dt.time(0, 0):
            return value.date().isoformat()
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dt.time):
        return value.isoformat(timespec="seconds")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return None
        # Excel keeps 15 significant digits: 0.1 + 0.2 shows as 0.3, and so should we.
        text = format(Decimal(f"{value:.15g}"), "f")
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return text
    text = str(value).strip()
    return text or None


def header_names(rows: list[tuple[Any, ...]]) -> list[str]:
    """One name per column from 1-3 header rows, joined with a space.

    In the upper rows a blank cell takes the value on its left: a merged group title ("Value",
    spanning "amount" and "currency") is only stored in its first cell.
    """
    width = max((len(r) for r in rows), default=0)
    grid = [[cell_text(r[i]) if i < len(r) else None for i in range(width)] for r in rows]
    # Trailing columns with no header at all are not columns.
    while width and all(row[width - 1] is None for row in grid):
        width -= 1
    for r, row in enumerate(grid[:-1]):
        for i in range(1, width):
            # Only under a title that spans: a column named in a lower row.
            if row[i] is None and any(lower[i] is not None for lower in grid[r + 1 :]):
                row[i] = row[i - 1]
    names: list[str] = []
    seen: dict[str, int] = {}
    for i in range(width):
        parts: list[str] = []
        for row in grid:
            part = row[i]
            if part and (not parts or parts[-1] != part):
                parts.append(part)
        name = " ".join(" ".join(parts).split()) or f"column_{i + 1}"
        if name in seen:
            seen[name] += 1
            name = f"{name} {seen[name]}"
        else:
            seen[name] = 1
        names.append(name)
    return names


def read_xlsx(con: duckdb.DuckDBPyConnection, spec: AnySpec, path: str, stage: str, tag: str) -> list[Reject]:
    import openpyxl

    fmt = spec.format
    rejects: list[Reject] = []
    try:
        wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises zipfile/KeyError/InvalidFileException alike
        raise ReadError(f"not an .xlsx workbook: {exc}") from exc
    try:
        if fmt.sheet is not None:
            if fmt.sheet not in wb.sheetnames:
                raise ReadError(f"no sheet {fmt.sheet!r} in the workbook; it has {wb.sheetnames}")
            ws = wb[fmt.sheet]
        else:
            ws = wb.worksheets[0]
        rows = ws.iter_rows(values_only=True)
        for _ in range(fmt.skip_rows):
            next(rows, None)
        n_header = fmt.header_rows if fmt.header else 0
        header = [next(rows, ()) for _ in range(n_header)]
        names = header_names(header) if header else []

        def records() -> Iterator[dict[str, str | None]]:
            rec = 0
            for row in rows:
                values = [cell_text(v) for v in row]
                if all(v is None for v in values):
                    continue
                rec += 1
                if not names:
                    names.extend(f"column_{i + 1}" for i in range(len(values)))
                extra = [v for v in values[len(names) :] if v is not None]
                if extra:
                    rejects.append(
                        Reject(
                            rec,
                            "\t".join(v or "" for v in values),
                            "too_many_columns",
                            f"row has {len(names) + len(extra)} filled cells, the header names {len(names)}",
                        )
                    )
                    continue
                yield {n: (values[i] if i < len(values) else None) for i, n in enumerate(names)}

        cols = _stage_records(con, stage, tag, records())
        _ensure_columns(con, stage, names, cols)
    finally:
        wb.close()
    return rejects


def _ensure_columns(con: duckdb.DuckDBPyConnection, stage: str, names: list[str], have: list[str]) -> None:
    """A header column with no value in any record still exists in the stage (as NULLs)."""
    for n in names:
        if n not in have:
            con.execute(f"alter table {stage} add column {_ident(n)} varchar")
    if "value" in have and "value" not in names and names:
        con.execute(f"alter table {stage} drop column value")


# ------------------------------------------------------------------------------------------- jsonl


def flatten(obj: dict[str, Any], prefix: str = "") -> dict[str, str | None]:
    """Nested objects become dotted names (`consignment.ref`); lists stay JSON text; scalars text."""
    out: dict[str, str | None] = {}
    for k, v in obj.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, f"{name}."))
        elif isinstance(v, list):
            out[name] = json.dumps(v, ensure_ascii=False)
        elif v is None:
            out[name] = None
        elif isinstance(v, bool):
            out[name] = "true" if v else "false"
        elif isinstance(v, float):
            out[name] = repr(v)
        else:
            out[name] = str(v)
    return out


def read_jsonl(
    con: duckdb.DuckDBPyConnection, spec: AnySpec, path: str, stage: str, tag: str
) -> list[Reject]:
    fmt = spec.format
    rejects: list[Reject] = []

    def records() -> Iterator[dict[str, str | None]]:
        rec = 0
        # utf-8-sig: a BOM on the first line is not part of the JSON.
        encoding = "utf-8-sig" if fmt.encoding == "utf-8" else fmt.encoding
        with open(path, encoding=encoding, errors="replace", newline=None) as fh:
            for i, line in enumerate(fh):
                if i < fmt.skip_rows or not line.strip():
                    continue
                rec += 1
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    rejects.append(Reject(rec, line.rstrip("\n"), "invalid_json", f"not JSON: {exc.msg}"))
                    continue
                if not isinstance(obj, dict):
                    rejects.append(
                        Reject(
                            rec,
                            line.rstrip("\n"),
                            "not_an_object",
                            f"a JSON {type(obj).__name__}, not an object",
                        )
                    )
                    continue
                yield flatten(obj)

    _stage_records(con, stage, tag, records())
    return rejects


# ----------------------------------------------------------------------------------------- parquet


def read_parquet(
    con: duckdb.DuckDBPyConnection, spec: AnySpec, path: str, stage: str, tag: str
) -> list[Reject]:
    types = con.execute(
        f"select column_name, column_type from (describe select * from read_parquet({lit(path)}))"
    ).fetchall()
    cols = []
    for name, typ in types:
        q = _ident(name)
        # Nested values as JSON text (like jsonl's lists), everything else DuckDB's own text form.
        expr = (
            f"to_json({q})::varchar"
            if typ.upper().startswith(("STRUCT", "MAP")) or typ.endswith("]")
            else f"{q}::varchar"
        )
        cols.append(f"{expr} as {q}")
    con.execute(
        f"create temp table {stage} as select row_number() over () as __row, {', '.join(cols)} "
        f"from read_parquet({lit(path)})"
    )
    return []


# ------------------------------------------------------------------------------------- compression

KIND_EXTENSIONS = {
    "csv": (".csv", ".txt", ".tsv", ".dat"),
    "fixed_width": (".txt", ".dat", ".fw", ".prn"),
    "xlsx": (".xlsx", ".xlsm"),
    "jsonl": (".jsonl", ".ndjson", ".json"),
    "parquet": (".parquet", ".pq"),
}


def compression_of(spec: AnySpec, path: str) -> str:
    comp = spec.format.compression
    if comp != "auto":
        return comp
    lower = path.lower()
    if lower.endswith(".gz"):
        return "gzip"
    if lower.endswith(".zip"):
        return "zip"
    return "none"


def _zip_member(spec: AnySpec, zf: zipfile.ZipFile) -> zipfile.ZipInfo:
    members = [
        m
        for m in zf.infolist()
        if not m.is_dir()
        and not m.filename.startswith("__MACOSX/")
        and not Path(m.filename).name.startswith(".")
    ]
    if len(members) == 1:
        return members[0]
    exts = KIND_EXTENSIONS[spec.format.kind]
    by_kind = [m for m in members if m.filename.lower().endswith(exts)]
    if len(by_kind) == 1:
        return by_kind[0]
    # Several candidates: the one whose first line names the most mapped columns.
    if spec.format.kind in ("csv", "jsonl") and by_kind:

        def score(m: zipfile.ZipInfo) -> int:
            with zf.open(m) as fh:
                head = fh.read(65536).decode(spec.format.encoding, errors="replace")
            return sum(1 for c in spec.columns.values() if c in head)

        ranked = sorted(by_kind, key=score, reverse=True)
        if score(ranked[0]) > score(ranked[1]):
            return ranked[0]
    names = [m.filename for m in members]
    raise ReadError(
        f"the zip holds {len(members)} files {names}; none is the single {spec.format.kind} file the spec describes"
    )


def unwrap(spec: AnySpec, path: str, workdir: Path) -> tuple[str, str]:
    """The path to read and the compression left for the reader (gzip CSV stays compressed: DuckDB
    reads it natively; everything else is decompressed into `workdir`)."""
    comp = compression_of(spec, path)
    if comp == "none":
        return path, "none"
    if comp == "gzip":
        if spec.format.kind == "csv":
            return path, "gzip"
        target = workdir / Path(path).name.removesuffix(".gz")
        with gzip.open(path, "rb") as src, target.open("wb") as dst:
            shutil.copyfileobj(src, dst)
        return str(target), "none"
    with zipfile.ZipFile(path) as zf:
        member = _zip_member(spec, zf)
        target = workdir / Path(member.filename).name
        with zf.open(member) as src, target.open("wb") as dst:
            shutil.copyfileobj(src, dst)
    if target.name.lower().endswith(".gz"):
        return unwrap(spec, str(target), workdir)
    return str(target), "none"


Reader = Callable[[duckdb.DuckDBPyConnection, AnySpec, str, str, str], list[Reject]]

READERS: dict[str, Reader] = {
    "csv": read_csv,
    "fixed_width": read_fixed_width,
    "xlsx": read_xlsx,
    "jsonl": read_jsonl,
    "parquet": read_parquet,
}


def read_to_stage(
    con: duckdb.DuckDBPyConnection, spec: AnySpec, path: str, stage: str, tag: str
) -> list[Reject]:
    try:
        reader = READERS[spec.format.kind]
    except KeyError:
        raise NotImplementedError(
            f"feed {spec.feed}: format.kind {spec.format.kind!r} has no reader yet"
        ) from None
    with tempfile.TemporaryDirectory(prefix="ts-unwrap-") as tmp:
        try:
            target, comp = unwrap(spec, path, Path(tmp))
        except (OSError, zipfile.BadZipFile, EOFError) as exc:
            raise ReadError(f"cannot decompress ({compression_of(spec, path)}): {exc}") from exc
        if spec.format.kind == "csv":
            return read_csv(con, spec, target, stage, tag, compression="gzip" if comp == "gzip" else "auto")
        return reader(con, spec, target, stage, tag)


def read_sample(
    spec: AnySpec, path: str | Path, limit: int | None = None
) -> tuple[list[str], list[tuple[Any, ...]], list[Reject]]:
    """Columns, rows (with __row first) and rejects of a file read with `spec`: for previews."""
    con = duckdb.connect()
    try:
        rejects = read_to_stage(con, spec, str(path), "sample_stage", "sample")
        cols = [r[0] for r in con.execute("select column_name from (describe sample_stage)").fetchall()]
        sql = "select * from sample_stage order by __row" + (f" limit {int(limit)}" if limit else "")
        return cols, con.execute(sql).fetchall(), rejects
    finally:
        con.close()
