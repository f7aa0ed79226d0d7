"""Execute the study notebooks top to bottom and write them, their HTML and figures to a results folder.

    python scripts/run_study.py [--profile quick|full] [--results DIR] [--device auto|cpu|cuda] [--threads N]

Each notebook reads the committed results in ``data/<study>/``, measures its
study again through the package (in the chosen profile), writes the fresh run
tree, its summary and per-run CSVs, the comparison with the committed summary,
``key_numbers.json`` and the figures (``figures/*.png``) under ``DIR/<study>/``,
and is saved executed (``DIR/<study>.ipynb``) and as HTML (``DIR/<study>.html``).
A notebook that fails is saved as far as it ran, and the exit status is 1.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbconvert import HTMLExporter

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ("alexnet", "resnet50", "bert", "generation")


def execute(name: str, results: Path, timeout_s: int) -> str | None:
    """Run one notebook, save it executed and as HTML; the error's first line if a cell failed."""
    notebook = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    error = None
    try:
        NotebookClient(notebook, timeout=timeout_s, kernel_name="python3",
                       resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    except CellExecutionError as failure:
        error = str(failure).strip().splitlines()[-1]
    nbformat.write(notebook, results / f"{name}.ipynb")
    html, _ = HTMLExporter().from_notebook_node(notebook)
    (results / f"{name}.html").write_text(html, encoding="utf-8")
    return error


def shown(path: Path) -> str:
    """``path`` relative to the working folder when it is inside it."""
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=("quick", "full"), default=os.environ.get("STUDY_PROFILE"))
    parser.add_argument("--results", type=Path, default=ROOT / "results")
    parser.add_argument("--device", default=os.environ.get("STUDY_DEVICE", "auto"))
    parser.add_argument("--threads", type=int, default=os.environ.get("STUDY_THREADS"),
                        help="torch threads of the fresh runs (default: 1 in the quick profile, else torch's; 0: torch's)")
    parser.add_argument("--studies", nargs="+", choices=STUDIES, default=list(STUDIES))
    parser.add_argument("--timeout", type=int, default=24 * 3600, help="seconds per notebook cell")
    args = parser.parse_args()

    results = args.results.resolve()
    results.mkdir(parents=True, exist_ok=True)
    os.environ["STUDY_RESULTS"] = str(results)
    os.environ["STUDY_DEVICE"] = args.device
    if args.profile:
        os.environ["STUDY_PROFILE"] = args.profile
    if args.threads is not None:
        os.environ["STUDY_THREADS"] = str(args.threads)
    failed, began = [], time.perf_counter()
    for name in args.studies:
        started = time.perf_counter()
        print(f"running the {name} study ({os.environ.get('STUDY_PROFILE') or 'default'} profile) ...", flush=True)
        error = execute(name, results, args.timeout)
        print(f"  {shown(results / name)}.ipynb and .html, with the run tree, CSVs and figures in "
              f"{shown(results / name)}/, in {time.perf_counter() - started:.0f} s", flush=True)
        if error:
            failed.append(name)
            print(f"  FAILED: {error}", flush=True)
    print(f"results written to {shown(results)}/ in {time.perf_counter() - began:.0f} s"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
