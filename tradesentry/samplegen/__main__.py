"""Command line: ``python -m tradesentry.samplegen --out DIR [--start D] [--end D] [--nights N]``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path

from tradesentry.samplegen.generator import DEFAULT_END, generate


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tradesentry.samplegen",
        description="Write the synthetic sample feeds, exchange rates and ground truth.",
    )
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: settings sample_dir)")
    parser.add_argument("--start", type=date.fromisoformat, default=None, help="first night, YYYY-MM-DD")
    parser.add_argument("--end", type=date.fromisoformat, default=None,
                        help=f"last night, YYYY-MM-DD (default {DEFAULT_END} unless --start and --nights fix it)")
    parser.add_argument("--nights", type=int, default=None, help="number of nights (default 90)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--scale", type=float, default=1.0, help="volume multiplier (1.0: ~100-250 declarations per feed and night)")
    parser.add_argument("--salt-bad-rows", action="store_true", help="add unparseable lines to the last night")
    parser.add_argument("--proportions", default=None,
                        help="anomaly proportions profile (default: the default rates; 'heldout': other ones)")
    args = parser.parse_args(argv)

    if args.start is not None and args.end is not None:
        if args.nights is not None:
            parser.error("give at most two of --start, --end, --nights")
        start, nights = args.start, (args.end - args.start).days + 1
    elif args.start is not None:
        start, nights = args.start, args.nights or ((DEFAULT_END - args.start).days + 1)
    else:
        end = args.end or DEFAULT_END
        nights = args.nights or 90
        start = end - timedelta(days=nights - 1)
    if nights < 1:
        parser.error("the window must hold at least one night")

    out = args.out
    if out is None:
        from tradesentry.settings import get_settings

        out = get_settings().samples
    info = generate(out, start, nights, seed=args.seed, scale=args.scale, salt_bad_rows=args.salt_bad_rows,
                    proportions=args.proportions)
    print(f"SYNTHETIC sample written to {info.out_dir}: nights {info.start} to {info.end}")
    for feed, rows in info.rows.items():
        print(f"  {feed:<15} {rows:>8} rows")
    print(f"  declarations {info.declarations}, anomalous {info.anomalous_declarations} "
          f"({info.anomalous_declarations / max(1, info.declarations):.1%})")
    print(f"  ground truth: {info.ground_truth}")
    if info.salted_rows is not None:
        print(f"  salted rows:  {info.salted_rows}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
