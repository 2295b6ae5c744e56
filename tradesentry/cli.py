"""`tradesentry`: the command line of the pipeline, the feeds and the review app."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path

from tradesentry.settings import Settings, get_settings

SAMPLE_LAST_NIGHT = date(2026, 11, 27)
SAMPLE_NIGHTS = 90


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date like 2026-11-27") from None


def _progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------------------ commands


def cmd_sample(args: argparse.Namespace, settings: Settings) -> int:
    from tradesentry.samplegen import generate

    out = Path(args.out) if args.out else settings.samples
    start = args.last - timedelta(days=args.nights - 1)
    info = generate(out, start=start, nights=args.nights, seed=args.seed, scale=args.scale, salt_bad_rows=args.salt)
    print(f"Synthetic sample feeds written to {out} ({info.start} .. {info.end}, {args.nights} nights).")
    return 0


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from tradesentry.pipeline.stages import run_night
    from tradesentry.pipeline.summary import format_summary

    summary = run_night(settings, args.night)
    print(format_summary(summary))
    return 0


def cmd_backfill(args: argparse.Namespace, settings: Settings) -> int:
    from tradesentry.pipeline.stages import backfill
    from tradesentry.pipeline.summary import format_summary

    _progress(f"Backfilling {args.first} .. {args.last} in one pass")
    summary = backfill(settings, args.first, args.last, score=not args.no_score)
    print(format_summary(summary))
    fails = summary.get("backfill", {}).get("pull_failures", [])
    if fails:
        print(f"\n{len(fails)} feed-nights could not be pulled; first: {fails[0]}")
    return 0


def cmd_summary(args: argparse.Namespace, settings: Settings) -> int:
    from tradesentry.pipeline.summary import format_summary, summary_path

    path = summary_path(settings, args.night)
    if not path.exists():
        print(f"No run summary for night {args.night} at {path}. Run the pipeline for that night first.")
        return 1
    summary = json.loads(path.read_text())
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def cmd_export_scores(args: argparse.Namespace, settings: Settings) -> int:
    from tradesentry.detection.export import export_scores
    from tradesentry.warehouse import open_settings_warehouse

    first = args.first or args.night
    last = args.last or args.night or first
    if first is None:
        print("give --night or --from/--to", file=sys.stderr)
        return 2
    with open_settings_warehouse(settings) as con:
        n = export_scores(con, first, last, Path(args.out))
    print(f"{n} scored declarations written to {args.out}")
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    """The quick start: sample feeds, history in one pass, the last night through the Airflow DAG."""
    from tradesentry.airflow_env import airflow_cli, ensure_airflow_db
    from tradesentry.pipeline.stages import backfill
    from tradesentry.pipeline.summary import format_summary, summary_path
    from tradesentry.samplegen import generate

    last = args.last
    first = last - timedelta(days=args.nights - 1)
    _progress(f"1/4 generating synthetic sample feeds for 7 partner countries ({first} .. {last})")
    generate(settings.samples, start=first, nights=args.nights, seed=args.seed, scale=args.scale)
    _progress(f"2/4 loading the history {first} .. {last - timedelta(days=1)} in one pass (backfill)")
    backfill(settings, first, last - timedelta(days=1), score=not args.fast)
    _progress("3/4 preparing Airflow (embedded SQLite metadata database)")
    ensure_airflow_db(settings)
    _progress(f"4/4 running night {last} through the Airflow DAG: airflow dags test tradesentry_nightly {last}")
    airflow_cli(settings, "dags", "test", "tradesentry_nightly", last.isoformat())
    path = summary_path(settings, last)
    print()
    print(format_summary(json.loads(path.read_text())))
    return 0


def cmd_holds(args: argparse.Namespace, settings: Settings) -> int:
    from tradesentry.warehouse import open_settings_warehouse

    if args.holds_cmd == "lift":
        from tradesentry.quality.gates import lift_hold

        n = lift_hold(settings, args.feed, args.night)
        print(f"lifted {n} hold(s) on {args.feed} {args.night}; the next run harmonises and scores its rows")
        return 0 if n else 1
    with open_settings_warehouse(settings) as con:
        rows = con.execute(
            "select feed, night, reason_code, reason, held_at from ops.feed_holds where lifted_at is null order by night, feed"
        ).fetchall()
    if not rows:
        print("no active holds")
    for feed, night, code, reason, held_at in rows:
        print(f"{feed:<6} {night} {code:<20} {reason} (held {held_at:%Y-%m-%d %H:%M})")
    return 0


def cmd_feeds(args: argparse.Namespace, settings: Settings) -> int:
    from tradesentry.feeds.loader import FeedSpecError, load_all, write_json_schema

    if args.feeds_cmd == "schema":
        print(f"wrote {write_json_schema(settings.feeds_dir)}")
        return 0
    if args.feeds_cmd == "list":
        for s in load_all(settings.feeds_dir, include_disabled=True):
            print(f"{s.feed:<16} {getattr(s, 'country', '-'):<4} {s.dataset:<15} {s.name}")
        return 0
    if args.feeds_cmd == "check":
        try:
            specs = load_all(settings.feeds_dir, include_disabled=True)
        except FeedSpecError as exc:
            print(exc, file=sys.stderr)
            return 1
        print(f"{len(specs)} feed specifications valid in {settings.feeds_dir}")
        return 0
    if args.feeds_cmd == "generate":
        from tradesentry.feeds.loader import load_feeds
        from tradesentry.harmonise.codegen import generate as gen_dbt
        from tradesentry.quality.suites import generate_suites

        paths = gen_dbt(settings.feeds_dir, settings.dbt_project_dir)
        paths += generate_suites(load_feeds(settings.feeds_dir), settings.expectations_dir)
        write_json_schema(settings.feeds_dir)
        for p in paths:
            print(f"wrote {p}")
        return 0
    if args.feeds_cmd in ("init", "validate", "preview", "backfill"):
        from tradesentry.feeds.onboard_cli import run as run_onboarding

        return run_onboarding(args, settings, _progress)
    return 2


# ------------------------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tradesentry", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("sample", help="generate the synthetic sample feeds")
    s.add_argument("--out", help="folder (default: settings sample_dir)")
    s.add_argument("--last", type=_date, default=SAMPLE_LAST_NIGHT)
    s.add_argument("--nights", type=int, default=SAMPLE_NIGHTS)
    s.add_argument("--seed", type=int, default=7)
    s.add_argument("--scale", type=float, default=1.0)
    s.add_argument("--salt", action="store_true", help="add unparseable rows to the last night")
    s.set_defaults(func=cmd_sample)

    s = sub.add_parser("run", help="run the nightly pipeline for one night without Airflow")
    s.add_argument("--night", type=_date, required=True)
    s.set_defaults(func=cmd_run)

    s = sub.add_parser("backfill", help="load a range of nights in one pass")
    s.add_argument("--from", dest="first", type=_date, required=True)
    s.add_argument("--to", dest="last", type=_date, required=True)
    s.add_argument("--no-score", action="store_true", help="load and harmonise only")
    s.set_defaults(func=cmd_backfill)

    s = sub.add_parser("summary", help="print the run summary of a night")
    s.add_argument("--night", type=_date, required=True)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_summary)

    s = sub.add_parser("export-scores", help="write country,declaration_id,item_no,score for scored declarations")
    s.add_argument("--night", type=_date)
    s.add_argument("--from", dest="first", type=_date)
    s.add_argument("--to", dest="last", type=_date)
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_export_scores)

    s = sub.add_parser("demo", help="quick start: sample feeds, history backfill, last night through Airflow")
    s.add_argument("--last", type=_date, default=SAMPLE_LAST_NIGHT)
    s.add_argument("--nights", type=int, default=SAMPLE_NIGHTS)
    s.add_argument("--seed", type=int, default=7)
    s.add_argument("--scale", type=float, default=1.0)
    s.add_argument("--fast", action="store_true", help="do not score the history nights")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("holds", help="feeds held back by the quality gates")
    hs = s.add_subparsers(dest="holds_cmd", required=True)
    hs.add_parser("list", help="active holds")
    lift = hs.add_parser("lift", help="lift a hold: the next run harmonises and scores the rows")
    lift.add_argument("feed")
    lift.add_argument("night", type=_date)
    s.set_defaults(func=cmd_holds)

    s = sub.add_parser("feeds", help="feed specifications")
    fs = s.add_subparsers(dest="feeds_cmd", required=True)
    fs.add_parser("list", help="the feeds and their countries")
    fs.add_parser("check", help="validate every feed YAML against the schema")
    fs.add_parser("schema", help="write feeds/feed.schema.json for editors")
    fs.add_parser("generate", help="write the dbt staging models and GX suites the feeds need")
    from tradesentry.feeds.onboard_cli import register as register_onboarding

    register_onboarding(fs, _date)
    s.set_defaults(func=cmd_feeds)

    try:
        from tradesentry.review.cli import register as register_review
    except ImportError:  # the review app is optional for the pipeline
        pass
    else:
        register_review(sub)
    from tradesentry.evaluation.cli import register as register_evaluation

    register_evaluation(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    settings = get_settings()
    try:
        return int(args.func(args, settings) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
