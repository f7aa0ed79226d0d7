"""``python -m analysis summarize RUN_TREE [-o CSV] [--runs-csv CSV]``: the summary table as CSV.

Problems in the input are reported as one ``warning:`` line each on stderr; a
tree with nothing usable ends with one ``error:`` line and exit status 1.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from .load import AnalysisWarning, NoUsableRuns, load_study
from .stats import summarize


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="python -m analysis", description="Analyse run trees.")
    commands = main.add_subparsers(dest="command", required=True)
    summary = commands.add_parser("summarize", help="one row per (model, input size): medians, IQR, 95 %% CIs")
    summary.add_argument("tree", type=Path, metavar="RUN_TREE",
                         help="folder holding run trees (ours or AIPowerMeter's), at any depth")
    summary.add_argument("-o", "--output", type=Path, metavar="CSV", help="write the summary here (default: stdout)")
    summary.add_argument("--runs-csv", type=Path, metavar="CSV", help="also write the per-run table here")
    summary.add_argument("--model", help="model name of AIPowerMeter runs (default: from their path)")
    summary.add_argument("--include-incomplete", action="store_true", help="keep runs not marked complete")
    return main


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("always", AnalysisWarning)
        warnings.showwarning = lambda message, *_: print(f"warning: {message}", file=sys.stderr)
        try:
            study = load_study(args.tree, model=args.model, include_incomplete=args.include_incomplete)
            table = summarize(study)
            if args.runs_csv:
                study.runs.to_csv(args.runs_csv, index=False)
            table.to_csv(args.output if args.output else sys.stdout, index=False)
        except (NoUsableRuns, OSError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
