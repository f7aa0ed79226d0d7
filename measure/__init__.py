"""Energy and latency of deep-learning inference, measured (README.md, docs/architecture.md).

Two entry points for notebooks, which load ``measure.magic`` (and with it the
analysis) on first use only: importing ``measure``, as the analysis does to
read run trees through ``measure.runtree``, loads neither, nor torch.

- ``measure.window(label, ...)``: a context manager measuring its block (the
  module ``measure/window.py``'s ``window`` with ``report=measure.magic.report``);
  after the block, ``w.result`` is the ``measure.magic.Report`` of its energies.
  ``measure.window`` is this function, not the module: reach the module's
  names with ``from measure.window import window, Measurement``.
- ``%load_ext measure``: the ``%%energy`` cell magic (``load_ipython_extension``).
"""
from __future__ import annotations

from pathlib import Path
from typing import ContextManager

# Imported first so that ``measure.window`` stays the function below: importing the submodule later, for the
# first time, would rebind the package's attribute to it.
from .window import Measurement, Reporter, window as _window


def window(label: str, *, inferences: int | None = None, save: str | Path | None = None, device: str | None = None,
           period_s: float = 0.1, report: Reporter | None = None) -> ContextManager[Measurement]:
    """``with measure.window("label", inferences=N, save=DIR, device=..., period_s=0.1) as w: ...``: measure
    the block; ``w.result`` then holds its energies (``measure.magic.Report``: per domain, J and W, with their
    source and hardware). The options are those of ``window`` in ``measure/window.py``, whose ``report``
    defaults here to ``measure.magic.report``; a bad one raises ``ValueError`` (one line)."""
    if report is None:
        from .magic import report
    return _window(label, inferences=inferences, save=save, device=device, period_s=period_s, report=report)


def load_ipython_extension(ipython) -> None:
    """``%load_ext measure``: register the ``%%energy`` cell magic (``measure.magic``)."""
    from .magic import load_ipython_extension as load

    load(ipython)
