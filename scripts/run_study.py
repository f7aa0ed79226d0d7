"""Execute the study notebooks top to bottom and write them, their HTML and figures to a results folder.

    python scripts/run_study.py [--profile quick|full] [--fresh 0|1] [--results DIR] [--device auto|cpu|cuda]
                                [--threads N] [--studies NAME ...] [--into-notebooks]

Each notebook (``notebooks/<study>.ipynb``: alexnet, resnet50, bert, batch_precision, generation) reads the
committed results in ``data/<study>/`` and, when fresh (the default in the ``quick`` profile only: a ``full``
measurement takes hours and needs ``--fresh 1``), measures its study again through the package. Under
``DIR/<study>/`` it writes the fresh run tree(s) with their summary and per-run CSVs, the comparison with
the committed runs (``*comparison.csv``), ``key_numbers.json`` (key numbers and the rendered prose) and
the figures (``figures/*.{png,svg,pdf}``); the notebook is saved executed (``DIR/<study>.ipynb``) and as
HTML (``DIR/<study>.html``). A notebook that fails is saved as far as it ran, and the exit status is 1.

``--into-notebooks`` also writes each executed notebook back to ``notebooks/`` with its outputs
normalised (no execution timings), as committed.

The kernel talks to this process over IPC sockets in a temporary folder, not over TCP, so that no
"running over TCP without encryption" warning is printed.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from nbconvert import HTMLExporter

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ("alexnet", "resnet50", "bert", "batch_precision", "generation")


def execute(name: str, results: Path, timeout_s: int, into_notebooks: bool) -> str | None:
    """Run one notebook, save it executed and as HTML (and into ``notebooks/``); the error's last line if a
    cell failed."""
    path = ROOT / "notebooks" / f"{name}.ipynb"
    notebook = nbformat.read(path, as_version=4)
    error = None
    with tempfile.TemporaryDirectory() as sockets:
        kernel = KernelManager(kernel_name="python3", transport="ipc", ip=os.path.join(sockets, "kernel"))
        try:
            NotebookClient(notebook, km=kernel, timeout=timeout_s, record_timing=False,
                           resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
        except CellExecutionError as failure:
            error = str(failure).strip().splitlines()[-1]
        finally:  # a kernel manager given to nbclient is the caller's to stop
            if kernel.has_kernel:
                kernel.shutdown_kernel(now=True)
    nbformat.write(notebook, results / f"{name}.ipynb")
    html, _ = HTMLExporter().from_notebook_node(notebook)
    (results / f"{name}.html").write_text(html, encoding="utf-8")
    if into_notebooks and error is None:
        nbformat.write(notebook, path)
    return error


def shown(path: Path) -> str:
    """``path`` relative to the working folder when it is inside it."""
    return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=("quick", "full"), default=os.environ.get("STUDY_PROFILE"),
                        help="quick (default: about a minute per study on a CPU) or full (the seed's protocol)")
    parser.add_argument("--fresh", choices=("0", "1"), default=os.environ.get("STUDY_FRESH"),
                        help="measure again (1) or read the committed results only (0); default: 1 in the quick "
                             "profile, 0 in the full one")
    parser.add_argument("--results", type=Path, default=ROOT / "results")
    parser.add_argument("--device", default=os.environ.get("STUDY_DEVICE", "auto"))
    parser.add_argument("--threads", type=int, default=os.environ.get("STUDY_THREADS"),
                        help="torch threads of the fresh runs (default: 1 in the quick profile, else torch's; 0: torch's)")
    parser.add_argument("--studies", nargs="+", choices=STUDIES, default=list(STUDIES))
    parser.add_argument("--timeout", type=int, default=24 * 3600, help="seconds per notebook cell")
    parser.add_argument("--into-notebooks", action="store_true",
                        help="also write each executed notebook back to notebooks/ (outputs normalised)")
    args = parser.parse_args()

    results = args.results.resolve()
    results.mkdir(parents=True, exist_ok=True)
    os.environ["STUDY_RESULTS"] = str(results)
    os.environ["STUDY_DEVICE"] = args.device
    for name, value in (("STUDY_PROFILE", args.profile), ("STUDY_FRESH", args.fresh), ("STUDY_THREADS", args.threads)):
        if value is not None:
            os.environ[name] = str(value)
    failed, began = [], time.perf_counter()
    for name in args.studies:
        started = time.perf_counter()
        print(f"running the {name} study ({os.environ.get('STUDY_PROFILE') or 'quick'} profile) ...", flush=True)
        error = execute(name, results, args.timeout, args.into_notebooks)
        print(f"  {shown(results / name)}.ipynb and .html, with the run trees, CSVs and figures in "
              f"{shown(results / name)}/, in {time.perf_counter() - started:.0f} s", flush=True)
        if error:
            failed.append(name)
            print(f"  FAILED: {error}", flush=True)
    print(f"results written to {shown(results)}/ in {time.perf_counter() - began:.0f} s"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
