"""Execute the study notebooks top to bottom and write them, their HTML and figures to a results folder.

    python scripts/run_study.py [--profile quick|full] [--results DIR] [--device auto|cpu|cuda]

Each notebook measures its study through the package (in the chosen profile),
writes its run tree, summary CSV and figures under ``DIR/<study>/``, and is
saved executed (``DIR/<study>.ipynb``) and as HTML (``DIR/<study>.html``).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbconvert import HTMLExporter

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ("alexnet", "resnet50", "bert")


def execute(name: str, results: Path, timeout_s: int) -> Path:
    notebook = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
    NotebookClient(notebook, timeout=timeout_s, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    executed = results / f"{name}.ipynb"
    nbformat.write(notebook, executed)
    html, _ = HTMLExporter().from_notebook_node(notebook)
    (results / f"{name}.html").write_text(html, encoding="utf-8")
    return executed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=("quick", "full"), default=os.environ.get("STUDY_PROFILE"))
    parser.add_argument("--results", type=Path, default=ROOT / "results")
    parser.add_argument("--device", default=os.environ.get("STUDY_DEVICE", "auto"))
    parser.add_argument("--studies", nargs="+", choices=STUDIES, default=list(STUDIES))
    parser.add_argument("--timeout", type=int, default=24 * 3600, help="seconds per notebook cell")
    args = parser.parse_args()

    results = args.results.resolve()
    results.mkdir(parents=True, exist_ok=True)
    os.environ["STUDY_RESULTS"] = str(results)
    os.environ["STUDY_DEVICE"] = args.device
    if args.profile:
        os.environ["STUDY_PROFILE"] = args.profile
    for name in args.studies:
        started = time.perf_counter()
        print(f"running the {name} study ...", flush=True)
        executed = execute(name, results, args.timeout)
        print(f"  {executed.relative_to(Path.cwd()) if executed.is_relative_to(Path.cwd()) else executed} "
              f"(+ .html, figures and run tree in {name}/) in {time.perf_counter() - started:.0f} s", flush=True)
    print(f"results written to {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
