"""Load feed YAML files over shared defaults and validate them with errors that point at the line."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tradesentry.feeds.spec import FeedSpec, RatesFeedSpec

AnySpec = FeedSpec | RatesFeedSpec

DEFAULTS_NAME = "_defaults.yaml"
SCHEMA_NAME = "feed.schema.json"


class FeedSpecError(ValueError):
    """A feed specification that does not validate; the message names file, line and field."""


@dataclass(frozen=True)
class _Located:
    data: Any
    lines: dict[tuple[str | int, ...], int]


def _load_with_lines(path: Path) -> _Located:
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise FeedSpecError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    lines: dict[tuple[str | int, ...], int] = {}

    def walk(n: yaml.Node | None, p: tuple[str | int, ...]) -> None:
        if n is None:
            return
        lines[p] = n.start_mark.line + 1
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                key = k.value
                lines[(*p, key)] = k.start_mark.line + 1
                walk(v, (*p, key))
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                walk(v, (*p, i))

    walk(node, ())
    return _Located(data if data is not None else {}, lines)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _line_for(loc: tuple[str | int, ...], located: _Located) -> int | None:
    # The deepest path that exists in this file: an error on a missing key points at its parent.
    for i in range(len(loc), -1, -1):
        line = located.lines.get(tuple(loc[:i]))
        if line is not None:
            return line
    return None


_MESSAGE_LOC = re.compile(r"\b([a-z_]+)(?:\[(\d+)\])?(?:\.([a-z_]+))?\b")


def _loc_from_message(msg: str) -> tuple[str | int, ...]:
    """Whole-spec checks (raised with no location) name the key they are about, e.g. "versions[1] ..."
    or "set conventions.currency ...": point the error at that key's line, not the top of the file."""
    keys = set(FeedSpec.model_fields)
    for m in _MESSAGE_LOC.finditer(msg.removeprefix("Value error, ")):
        if m.group(1) not in keys:
            continue
        loc: list[str | int] = [m.group(1)]
        if m.group(2) is not None:
            loc.append(int(m.group(2)))
        if m.group(3) is not None:
            loc.append(m.group(3))
        return tuple(loc)
    return ()


def load_feed_file(path: Path, defaults: dict[str, Any] | None = None) -> AnySpec:
    """Validate one feed file (merged over the defaults); raise FeedSpecError naming file:line and field."""
    located = _load_with_lines(path)
    if not isinstance(located.data, dict):
        raise FeedSpecError(f"{path}:1: a feed specification is a mapping of keys to values")
    data = dict(located.data)
    data.pop("inherit_from", None)
    model: type[FeedSpec] | type[RatesFeedSpec]
    if data.get("dataset") == "exchange_rates":
        # Rates feeds share only the format defaults: columns and conventions are declaration things.
        model = RatesFeedSpec
        merged = _deep_merge({"format": (defaults or {}).get("format", {})}, data)
    else:
        model = FeedSpec
        merged = _deep_merge(defaults or {}, data)
    try:
        return model.model_validate(merged)
    except ValidationError as exc:
        messages = []
        for err in exc.errors():
            loc = tuple(err["loc"]) or _loc_from_message(str(err["msg"]))
            line = _line_for(loc, located)
            field = ".".join(str(p) for p in loc) or "(top level)"
            where = f"{path}:{line}" if line else str(path)
            messages.append(f"{where}: {field}: {err['msg']}")
        raise FeedSpecError("\n".join(messages)) from None


def load_defaults(feeds_dir: Path) -> dict[str, Any]:
    path = feeds_dir / DEFAULTS_NAME
    if not path.exists():
        return {}
    data = _load_with_lines(path).data
    return data if isinstance(data, dict) else {}


def feed_files(feeds_dir: Path) -> list[Path]:
    return sorted(p for p in feeds_dir.glob("*.yaml") if not p.name.startswith("_"))


def load_all(feeds_dir: Path, include_disabled: bool = False) -> list[AnySpec]:
    """Every spec in a folder (declarations and exchange rates), sorted by feed id."""
    return _load(feeds_dir, None, include_disabled)


def load_feeds(feeds_dir: Path, only: Iterable[str] | None = None, include_disabled: bool = False) -> list[FeedSpec]:
    """The declarations feeds in a folder, sorted by feed id. Every invalid file is reported at once."""
    return [s for s in _load(feeds_dir, only, include_disabled) if isinstance(s, FeedSpec)]


def load_rates_feeds(feeds_dir: Path) -> list[RatesFeedSpec]:
    return [s for s in _load(feeds_dir, None, False) if isinstance(s, RatesFeedSpec)]


def _load(feeds_dir: Path, only: Iterable[str] | None, include_disabled: bool) -> list[AnySpec]:
    defaults = load_defaults(feeds_dir)
    specs: list[AnySpec] = []
    errors: list[str] = []
    wanted = set(only) if only is not None else None
    for path in feed_files(feeds_dir):
        try:
            spec = load_feed_file(path, defaults)
        except FeedSpecError as exc:
            errors.append(str(exc))
            continue
        if path.stem != spec.feed:
            errors.append(f"{path}: feed: the file must be named after its feed id ({spec.feed}.yaml)")
            continue
        if (wanted is None or spec.feed in wanted) and (spec.enabled or include_disabled):
            specs.append(spec)
    if errors:
        raise FeedSpecError("\n".join(errors))
    if wanted is not None:
        unknown = wanted - {s.feed for s in specs}
        if unknown:
            raise FeedSpecError(f"{feeds_dir}: no enabled feed named {sorted(unknown)}")
    return sorted(specs, key=lambda s: s.feed)


def load_feed(feeds_dir: Path, feed: str) -> AnySpec:
    return _load(feeds_dir, [feed], include_disabled=True)[0]


def json_schema() -> dict[str, Any]:
    from pydantic import TypeAdapter

    schema = TypeAdapter(AnySpec).json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Tradesentry feed specification"
    return schema


def write_json_schema(feeds_dir: Path) -> Path:
    path = feeds_dir / SCHEMA_NAME
    path.write_text(json.dumps(json_schema(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path
