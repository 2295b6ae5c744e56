"""The `tradesentry feeds init | validate | preview | backfill` sub-commands (argparse and printing).

Kept apart from `tradesentry.cli` so the onboarding commands are registered in one call there.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from tradesentry.settings import Settings

INIT_HELP = """Sniff a partner's sample file and write a draft feeds/<code>.yaml: format (wrapper, kind,
encoding, delimiter, quoting, header, numbers, dates), a mapping of its columns to the canonical fields
(by name, in several languages, and by content) and conventions. Every guess is commented with why and
how sure; TODOs mark what the file cannot tell. The draft is disabled until `feeds validate --enable`."""

VALIDATE_HELP = """Check feeds/<code>.yaml against the schema (errors name the line), then dry-run the sample
in a temporary data folder: land it, raw load, the raw quality suite, and dbt staging + intermediate
for this feed alone. Reports how many rows would harmonise and what would be quarantined and why."""


def register(fs: Any, date_type: Callable[[str], date]) -> None:
    """Add the onboarding sub-commands to the `feeds` sub-parsers."""
    p = fs.add_parser("init", help="draft a feed spec from a sample file", description=INIT_HELP)
    p.add_argument("code", help="feed id, lower case (e.g. xh); the file is feeds/<code>.yaml")
    p.add_argument("--sample", required=True, type=Path, help="a sample file from the partner")
    p.add_argument("--country", help="reporting country, ISO alpha-2 (default: the code, when 2 letters)")
    p.add_argument("--force", action="store_true", help="replace an existing feeds/<code>.yaml")

    p = fs.add_parser("validate", help="check a feed spec and dry-run its sample", description=VALIDATE_HELP)
    p.add_argument("code")
    p.add_argument("--sample", type=Path, help="sample file (default: the one `init` recorded)")
    p.add_argument("--enable", action="store_true", help="set enabled: true when the validation passes")
    p.add_argument("--no-dbt", action="store_true", help="skip the dbt staging + intermediate dry run")

    p = fs.add_parser(
        "preview",
        help="the first rows in canonical form beside the raw values",
        description="Read the sample with the spec and show each mapped field, its file column, the raw "
        "value and what staging makes of it.",
    )
    p.add_argument("code")
    p.add_argument("--sample", type=Path, help="sample file (default: the one `init` recorded)")
    p.add_argument("-n", type=int, default=10, help="rows to show (default 10)")

    p = fs.add_parser(
        "backfill",
        help="load a date range of one feed's history",
        description="Pull the feed's files for every night of the range, then run the pipeline's backfill "
        "(load, quality gates, one dbt build, scoring per night). Safe beside the nightly run: "
        "landing is content addressed and every stage replaces what it wrote for its nights.",
    )
    p.add_argument("code")
    p.add_argument("--from", dest="first", type=date_type, required=True)
    p.add_argument("--to", dest="last", type=date_type, required=True)
    p.add_argument("--no-score", action="store_true", help="load and harmonise only")


def run(args: argparse.Namespace, settings: Settings, progress: Callable[[str], None]) -> int:
    from tradesentry.feeds import onboard

    if args.feeds_cmd == "init":
        try:
            draft = onboard.init_feed(args.code, args.sample, settings, args.country, args.force, progress)
        except (FileExistsError, ValueError, FileNotFoundError) as exc:
            print(exc, file=sys.stderr)
            return 1
        print()
        print(f"Proposed mapping ({len(draft.mapping.columns)} fields):")
        for f, col in draft.mapping.columns.items():
            g = draft.mapping.guesses[f]
            print(f"  {f:<18} <- {col:<24} {g.confidence:<6} {g.why}")
        if draft.mapping.unmapped:
            print(f"  not mapped: {', '.join(draft.mapping.unmapped)}")
        if draft.todos:
            print(f"\nTo do in {draft.path}: {', '.join(draft.todos)}")
        print(f"\nNext: edit {draft.path} (see the comments), then  tradesentry feeds validate {args.code}")
        return 0
    if args.feeds_cmd == "validate":
        result = onboard.validate_feed(args.code, settings, args.sample, progress, dbt=not args.no_dbt)
        print()
        print("\n".join(result.lines))
        if not result.ok:
            print(f"\nNOT VALID: fix feeds/{args.code}.yaml and run this again.")
            return 1
        path = settings.feeds_dir / f"{args.code}.yaml"
        if args.enable and onboard.enable(path):
            print(f"\nVALID. {path.name}: enabled: true. Next: tradesentry feeds generate")
        else:
            print("\nVALID." + ("" if args.enable else " Run again with --enable to switch the feed on."))
        return 0
    if args.feeds_cmd == "preview":
        try:
            print(onboard.preview(args.code, settings, args.sample, args.n))
        except Exception as exc:
            print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        return 0
    if args.feeds_cmd == "backfill":
        from tradesentry.pipeline.summary import format_summary

        progress(f"backfilling {args.code} {args.first} .. {args.last}: pull, load, gates, dbt, scoring")
        try:
            summary = onboard.backfill_feed(args.code, args.first, args.last, settings, score=not args.no_score)
        except (KeyError, ValueError) as exc:
            print(exc, file=sys.stderr)
            return 1
        print(format_summary(summary))
        fails = summary.get("backfill", {}).get("pull_failures", [])
        if fails:
            print(f"\n{len(fails)} night(s) of {args.code} could not be pulled; first: {fails[0]}")
        return 0
    return 2
