"""``python -m analysis summarize TREE... [-o CSV] [--runs-csv CSV] [--long] [--by DIM...]``.

``summarize`` prints a table to read on a terminal, and writes CSV when given
``-o`` or when its output is piped: by default the seed's per-model CSV (one
row per point, ``<domain>_<quantity>_<statistic>`` columns), with ``--long``
the long summary (one row per point, domain and quantity).

Problems in the input are reported as one ``warning:`` line each on stderr;
every failure ends with one ``error:`` line: exit status 1 for a tree with
nothing usable or a file that cannot be written, 2 for bad options, 130 when
interrupted.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import pandas as pd

from . import export, metadata
from .problems import AnalysisWarning, NoUsableRuns
from .stats import summarize
from .tables import load_study


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="python -m analysis", description="Analyse run trees.")
    commands = main.add_subparsers(dest="command", required=True)
    summary = commands.add_parser(
        "summarize", help="medians over runs per point, with IQR and 95 %% CIs",
        description="Medians over runs per point (model, input size and every other dimension that varies), "
                    "with IQR, bootstrap 95 %% CIs of the median and the number of runs behind each figure.")
    summary.add_argument("trees", type=Path, nargs="+", metavar="TREE",
                         help="run tree(s) or folder(s) of trees (ours or AIPowerMeter's), at any depth")
    summary.add_argument("-o", "--output", type=Path, metavar="CSV",
                         help="write the summary as CSV here (default: a table on a terminal, CSV when piped)")
    summary.add_argument("--long", action="store_true",
                         help="the long summary: one row per point, domain and quantity")
    summary.add_argument("--by", nargs="+", metavar="DIM",
                         help="group by these dimensions (default: model, input_size and every dimension that varies)")
    summary.add_argument("--labels", nargs="+", metavar="LABEL", help="one label per TREE (default: folder names)")
    summary.add_argument("--runs-csv", type=Path, metavar="CSV", help="also write the per-run table (wide) here")
    summary.add_argument("--model", help="model name of AIPowerMeter runs (default: from their path)")
    summary.add_argument("--include-incomplete", action="store_true", help="keep runs not marked complete")
    return main


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
    except SystemExit as exit_:  # argparse has printed its one error line
        return int(exit_.code or 0)
    with warnings.catch_warnings():
        warnings.simplefilter("always", AnalysisWarning)
        warnings.showwarning = _one_line
        try:
            return _summarize(args)
        except (NoUsableRuns, ValueError) as error:
            return _error(error, 1)
        except OSError as error:
            where = f"{error.filename}: " if error.filename else ""
            return _error(f"{where}{error.strerror or error}", 1)
        except KeyboardInterrupt:
            return _error("interrupted", 130)


def _summarize(args: argparse.Namespace) -> int:
    study = load_study(args.trees, args.labels, model=args.model, include_incomplete=args.include_incomplete)
    summary = summarize(study, by=args.by)
    if args.runs_csv:
        study.wide().to_csv(args.runs_csv, index=False)
    if args.output is None and sys.stdout.isatty():
        print(_readable(study, summary))
        return 0
    table = summary if args.long else export.wide_summary(summary, study)
    table.to_csv(args.output if args.output else sys.stdout, index=False)
    return 0


def _readable(study, summary: pd.DataFrame) -> str:
    """The headline table: runs, latency and each reported energy domain with CI and source."""
    table = export.headline(summary, metadata.headline_domains(study))
    return table.to_string(index=False)


def _one_line(message, category, *args, **kwargs) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _error(message: object, status: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
