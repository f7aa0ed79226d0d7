"""``python -m analysis summarize|compare|export TREE... [options]``.

``summarize`` prints a table to read on a terminal, and writes CSV when given
``-o`` or when its output is piped: by default the seed's per-model CSV (one
row per point, ``<domain>_<quantity>_<statistic>`` columns), with ``--long``
the long summary (one row per point, domain and quantity). ``compare`` prints
each configuration against the baseline (ratio of medians, its 95 % CI, the
verdict) the same way: a table to read on a terminal, the long comparison as
CSV with ``-o`` or when piped. ``export`` writes the tidy tables (runs,
quantities, long summary) into a folder as CSV or parquet.

Problems in the input are reported as one ``warning:`` line each on stderr;
every failure ends with one ``error:`` line: exit status 1 for a tree with
nothing usable, an unknown dimension or baseline, a missing library or a file
that cannot be written, 2 for bad options, 130 when interrupted.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import pandas as pd

from . import export, metadata
from .comparison import DEFAULT_QUANTITIES, compare
from .problems import AnalysisWarning, NoUsableRuns
from .stats import summarize
from .tables import load_study


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="python -m analysis", description="Analyse run trees.")
    commands = main.add_subparsers(dest="command", required=True)
    trees = argparse.ArgumentParser(add_help=False)
    trees.add_argument("trees", type=Path, nargs="+", metavar="TREE",
                       help="run tree(s) or folder(s) of trees (ours or AIPowerMeter's), at any depth")
    trees.add_argument("--labels", nargs="+", metavar="LABEL",
                       help="one label per TREE (default: each tree's folder name)")
    trees.add_argument("--model", help="model name of AIPowerMeter runs (default: from their path)")
    trees.add_argument("--include-incomplete", action="store_true", help="keep runs not marked complete")

    summary = commands.add_parser(
        "summarize", parents=[trees], help="medians over runs per point, with IQR and 95 %% CIs",
        description="Medians over runs per point (model, input size and every other dimension that varies), "
                    "with IQR, bootstrap 95 % CIs of the median and the number of runs behind each figure.")
    summary.add_argument("-o", "--output", type=Path, metavar="CSV",
                         help="write the summary as CSV here (default: a table on a terminal, CSV when piped)")
    summary.add_argument("--long", action="store_true",
                         help="the long summary: one row per point, domain and quantity")
    summary.add_argument("--by", nargs="+", metavar="DIM",
                         help="group by these dimensions (default: model, input_size and every dimension that varies)")
    summary.add_argument("--runs-csv", type=Path, metavar="CSV", help="also write the per-run table (wide) here")

    comparison = commands.add_parser(
        "compare", parents=[trees], help="each configuration against a baseline: ratio of medians, 95 %% CI",
        description="Each configuration against the baseline of its group (same model, same input size, ...): "
                    "the ratio of medians with a percentile bootstrap 95 % CI (paired where the runs were "
                    "interleaved) and a verdict: lower, higher, or no difference shown (the CI contains 1).")
    comparison.add_argument("--baseline", nargs="+", metavar="LABEL|DIM=VALUE",
                            help="a label, or dimension values such as dtype=fp32 (default: the first TREE's "
                                 "configuration)")
    comparison.add_argument("--by", nargs="+", metavar="DIM",
                            help="the dimensions compared (default: every dimension that varies but model, task and "
                                 "input_size; model when nothing else varies)")
    comparison.add_argument("--within", nargs="+", metavar="DIM",
                            help="the grouping dimensions (default: model, input_size and every other dimension "
                                 "that varies)")
    comparison.add_argument("--quantities", nargs="+", metavar="Q", default=list(DEFAULT_QUANTITIES),
                            help="quantities to compare (default: %(default)s)")
    comparison.add_argument("--domains", nargs="+", metavar="D",
                            help="domains to compare them in (default: the headline energy domains and clock)")
    pairing = comparison.add_mutually_exclusive_group()
    pairing.add_argument("--paired", dest="paired", action="store_true", default=None,
                         help="pair run k of each side (default: only runs of one interleaved sweep)")
    pairing.add_argument("--unpaired", dest="paired", action="store_false", help="never pair runs")
    comparison.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default: 0)")
    comparison.add_argument("-o", "--output", type=Path, metavar="CSV",
                            help="write the comparison as CSV here (default: a table on a terminal, CSV when piped)")

    exporting = commands.add_parser(
        "export", parents=[trees], help="the tidy tables as CSV or parquet files",
        description="Write the tidy tables of the TREEs into a folder: runs, quantities and summary "
                    "(the long summary), one file each: FOLDER/{runs,quantities,summary}.{csv,parquet}.")
    exporting.add_argument("--format", choices=export.FORMATS, default="csv", help="file format (default: csv)")
    exporting.add_argument("-o", "--output", type=Path, metavar="FOLDER", required=True,
                           help="the folder to write the files into (made if absent; their files are replaced)")
    exporting.add_argument("--by", nargs="+", metavar="DIM", help="group the summary by these dimensions")
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
            if args.command == "export" and args.format == "parquet":
                export.require_pyarrow()  # before the trees are read
            study = load_study(args.trees, args.labels, model=args.model, include_incomplete=args.include_incomplete)
            return COMMANDS[args.command](study, args)
        except (NoUsableRuns, ValueError, ImportError) as error:
            return _error(error, 1)
        except OSError as error:
            where = f"{error.filename}: " if error.filename else ""
            return _error(f"{where}{error.strerror or error}", 1)
        except KeyboardInterrupt:
            return _error("interrupted", 130)


def _summarize(study, args: argparse.Namespace) -> int:
    summary = summarize(study, by=args.by)
    if args.runs_csv:
        study.wide().to_csv(args.runs_csv, index=False)
    if args.output is None and sys.stdout.isatty():  # generation runs: their figures per token and request
        print(export.headline(summary, metadata.headline_domains(study), **export.headline_quantities(study))
              .to_string(index=False))
        return 0
    table = summary if args.long else export.wide_summary(summary, study, quantities=export.summary_quantities(study))
    table.to_csv(args.output if args.output else sys.stdout, index=False)
    return 0


def _compare(study, args: argparse.Namespace) -> int:
    table = compare(study, _baseline(args.baseline), args.by, within=args.within, quantities=args.quantities,
                    domains=args.domains, paired=args.paired, seed=args.seed)
    if args.output is None and sys.stdout.isatty():
        print(export.comparison_text(table))
        return 0
    table.to_csv(args.output if args.output else sys.stdout, index=False)
    return 0


def _baseline(tokens: list[str] | None) -> str | dict[str, str] | None:
    """``--baseline``: a label alone, or ``DIM=VALUE`` tokens."""
    if tokens is None:
        return None
    values = dict(token.split("=", 1) for token in tokens if "=" in token)
    if len(values) == len(tokens):
        return values
    if len(tokens) == 1:
        return tokens[0]
    raise ValueError(f"--baseline {' '.join(tokens)}: give one label, or DIM=VALUE pairs")


def _export(study, args: argparse.Namespace) -> int:
    for path in export.write_tables(study, args.output, args.format, by=args.by):
        print(path)
    return 0


COMMANDS = {"summarize": _summarize, "compare": _compare, "export": _export}


def _one_line(message, category, *args, **kwargs) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _error(message: object, status: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
