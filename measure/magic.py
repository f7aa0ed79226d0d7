"""The notebook entry point: the ``%%energy`` cell magic, and the energies of a measuring window.

    %load_ext measure

    %%energy resnet18 batch 8 --inferences 20 --save runs/resnet18-cell
    for _ in range(20):
        model(x)

Like ``measure/__main__.py`` for the command line, this module is an entry
point: the one place in ``measure/`` besides it that imports the analysis.
``window.window`` records a block and computes nothing; ``report`` is the
function passed to it, which reads the window's run folder with
``analysis.load_study`` (counters checked, wrap-aware and aligned;
trapezoids) and returns a ``Report``. ``measure.window`` (the package's) and
``%%energy`` both pass it.
"""
from __future__ import annotations

import html
import keyword
import linecache
import shlex
import warnings
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.display import display

from analysis import AnalysisWarning, load_study
from analysis.export import round_sig
from analysis.tables import ENERGY_QUANTITIES

from . import runtree
from .sensors.base import ESTIMATED
from .sensors.estimate import TDP_ENV
from .window import Measurement, window

ENERGY_COLUMNS = ["domain", "energy_j", "energy_per_inference_j", "mean_power_w", "source", "method", "hardware",
                  "note"]
ACTIVITY_COLUMNS = ["domain", "quantity", "value", "unit"]
DEFAULT_NAME = "_energy"
CELL_NAME = "<%%energy cell>"  # the file name of the cell's code in tracebacks


@dataclass(frozen=True, repr=False)
class Report:
    """The energies of a window, as the analysis computes them from its run folder.

    ``energy``: one row per energy domain (``ENERGY_COLUMNS``): the energy over
    the window (J), per inference (J; NaN unless the window was told its
    inferences), the mean power (W), its ``source`` (``measured`` or
    ``estimated``), ``method`` (``counter``, ``counter_aligned``,
    ``trapezoid``, ...), the ``hardware`` and, where a figure is NaN or not
    computed as usual (a counter that did not resolve the window), the ``note``
    saying why. ``activity``: the window's other quantities in long form
    (``ACTIVITY_COLUMNS``): this process tree's CPU share and memory, the other
    work on the machine, GPU utilisation. ``notes``: one line each, what is
    estimated and from what, the sensors missing, the analysis's warnings that
    no ``note`` gives.
    ``folder``: the saved run folder, or None. Shown as HTML in Jupyter, as
    text elsewhere (``str``).
    """

    label: str
    duration_s: float
    inferences: int | None
    device: str
    energy: pd.DataFrame
    activity: pd.DataFrame
    notes: tuple[str, ...]
    folder: Path | None

    def heading(self) -> str:
        inferences = f", {self.inferences} inferences" if self.inferences else ""
        saved = f", saved in {self.folder}" if self.folder else ""
        return f"{self.label}: {round_sig(self.duration_s):,g} s{inferences} on {self.device}{saved}"

    def shown(self) -> pd.DataFrame:
        """The energy table to read: values to 3 significant digits, columns with nothing to say left out."""
        table = self.energy.copy()
        for column in ("energy_j", "energy_per_inference_j", "mean_power_w"):
            table[column] = table[column].map(round_sig)
        drop = ["energy_per_inference_j"] if not self.inferences else []
        return table.drop(columns=drop + (["note"] if table["note"].isna().all() else []))

    def activity_line(self) -> str:
        """``process: cpu_share_mean 0.5 CPUs, ...; host: ...``, or empty."""
        parts = [f"{domain}: " + ", ".join(f"{r.quantity} {round_sig(r.value):,g} {r.unit}" for r in rows.itertuples())
                 for domain, rows in self.activity.groupby("domain", sort=False)]
        return "; ".join(parts)

    def __str__(self) -> str:
        body = self.shown().to_string(index=False) if len(self.energy) else "no energy domain was sampled"
        lines = [self.heading(), body, self.activity_line(), *self.notes]
        return "\n".join(line for line in lines if line)

    __repr__ = __str__

    def _repr_pretty_(self, printer, cycle: bool) -> None:
        printer.text(str(self))

    def _repr_html_(self) -> str:
        table = self.shown().to_html(index=False, na_rep="") if len(self.energy) else "<p>no energy domain</p>"
        lines = [self.activity_line(), *self.notes]
        return (f"<p><b>{html.escape(self.heading())}</b></p>{table}"
                + "".join(f"<p><small>{html.escape(line)}</small></p>" for line in lines if line))


def report(measurement: Measurement) -> Report:
    """The energies of a complete window, from its run folder (a ``window.Reporter``)."""
    folder = measurement.folder
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AnalysisWarning)
        study = load_study(folder)
    quantities = study.quantities[study.quantities["domain"] != "clock"]
    energy = quantities[quantities["quantity"].isin(ENERGY_QUANTITIES)]
    energy_table = _energy_table(energy, study)
    activity = quantities[~quantities["quantity"].isin(ENERGY_QUANTITIES)]
    activity = activity[activity["value"].notna()][ACTIVITY_COLUMNS].astype({"domain": str, "quantity": str,
                                                                              "unit": str}).reset_index(drop=True)
    for other in (w for w in caught if not issubclass(w.category, AnalysisWarning)):
        warnings.showwarning(other.message, other.category, other.filename, other.lineno)
    notes = (*_estimated(measurement.sensors), *_missing(measurement.unavailable),
             *_warned(caught, folder, energy_table["note"]))
    return Report(measurement.label, measurement.duration_s, measurement.inferences, measurement.device,
                  energy_table, activity, notes, folder if measurement.saved else None)


def _energy_table(rows: pd.DataFrame, study) -> pd.DataFrame:
    """One row per energy domain (``ENERGY_COLUMNS``) from the long rows of the energy quantities."""
    rows = rows.astype({"domain": str, "quantity": str})
    energy = rows[rows["quantity"] == "energy_j"].set_index("domain")
    values = rows.set_index(["domain", "quantity"])["value"].unstack()
    table = pd.DataFrame({"domain": energy.index})
    for quantity in ("energy_j", "energy_per_inference_j", "mean_power_w"):
        table[quantity] = values[quantity].reindex(energy.index).to_numpy(dtype=float)
    for column in ("source", "method", "note"):
        table[column] = energy[column].astype(object).to_numpy()
    table["hardware"] = [_hardware(domain, study) for domain in energy.index]
    return table[ENERGY_COLUMNS]


def _hardware(domain: str, study) -> str | None:
    """The hardware behind a domain: the run's GPU (``gpu``), another GPU of the node by its domain, every GPU
    (``gpu_node``), else the CPU."""
    run = study.runs.iloc[0]
    if domain == "gpu":
        return run["hardware_gpu"]
    gpus = {g.get("domain"): g.get("name") for g in study.info.iloc[0]["host"].get("gpus") or []}
    if domain == "gpu_node":
        return " + ".join(str(name) for name in gpus.values())
    return gpus.get(domain) if domain.startswith("gpu") else run["hardware_cpu"]


def _warned(caught: list[warnings.WarningMessage], folder: Path, notes: pd.Series) -> list[str]:
    """``warning: ...`` lines of the analysis's warnings, the folder's path taken out, except the one every window
    gets (no ``latency.csv``) and those repeating a note of the energy table (which gives it beside its figure)."""
    expected = f"{folder}: no {runtree.LATENCY_FILE}"
    noted = [note for note in notes.dropna() if note]
    texts = [str(w.message) for w in caught if issubclass(w.category, AnalysisWarning)]
    return [f"warning: {text.replace(f'{folder}/', '').removeprefix(f'{folder}: ')}" for text in texts
            if not text.startswith(expected) and not any(note in text for note in noted)]


def _estimated(sensors: dict[str, dict]) -> list[str]:
    """One line per estimated domain: what it is estimated from, and how to correct it."""
    return [f"estimated: {domain} is modelled, not measured: TDP {about['tdp_w']:g} W ({about.get('tdp_source')}) "
            f"x machine-wide CPU load; set {TDP_ENV} to this CPU's TDP in watts"
            for domain, about in sensors.items() if about.get("source") == ESTIMATED and "tdp_w" in about]


def _missing(unavailable: dict[str, str]) -> list[str]:
    return ["not measured: " + "; ".join(f"{name} ({reason})" for name, reason in unavailable.items())] \
        if unavailable else []


@magics_class
class EnergyMagics(Magics):
    """``%%energy``: measure a cell's energy (``load_ipython_extension`` registers it)."""

    @magic_arguments()
    @argument("label", nargs="*", help="what the cell does (default: cell)")
    @argument("-n", "--inferences", type=int, metavar="N",
              help="inferences the cell runs: adds the energy per inference")
    @argument("--save", metavar="DIR", help="keep the window as a run folder there (absent, empty or an earlier "
                                            "window's), for the analysis")
    @argument("--device", metavar="DEVICE", help="cpu, cuda or cuda:<i>: the device synchronised at the edges "
                                                 "(default: every CUDA device this process uses)")
    @argument("--period", type=float, default=0.1, metavar="S", help="seconds between samples (default 0.1)")
    @argument("--name", default=DEFAULT_NAME, help=f"variable receiving the Report (default {DEFAULT_NAME})")
    @cell_magic
    def energy(self, line: str, cell: str) -> None:
        """Run the cell inside a measuring window, then show its energy per domain with its source and
        hardware (``Report``), and store the report in the user's namespace."""
        args = _arguments(self.energy, line)
        if not args.name.isidentifier() or keyword.iskeyword(args.name):
            raise UsageError(f"--name must be a Python name, got {args.name!r}")
        try:
            measuring = window(" ".join(args.label) or "cell", inferences=args.inferences, save=args.save,
                               device=args.device, period_s=args.period, report=report)
        except ValueError as error:
            raise UsageError(str(error)) from None
        # compiled before the window opens: it measures the cell's work, not IPython's
        source = self.shell.transform_cell(cell)
        linecache.cache[CELL_NAME] = (len(source), None, source.splitlines(keepends=True), CELL_NAME)  # tracebacks
        tree = self.shell.transform_ast(self.shell.compile.ast_parse(source, CELL_NAME))
        code = self.shell.compile(tree, CELL_NAME, "exec")
        with ExitStack() as stack:
            try:  # a save folder that cannot be created, a MEASURE_CPU_TDP_W that is not a number: one line
                measurement = stack.enter_context(measuring)
            except ValueError as error:
                raise UsageError(str(error)) from None
            exec(code, self.shell.user_ns)
        self.shell.user_ns[args.name] = measurement.result
        display(measurement.result)


def _arguments(magic, line: str):
    """``%%energy``'s options parsed from its line, split as a shell would (``--save "runs/my cell"``: quotes
    removed); ``UsageError`` (one line) for a bad one."""
    try:
        words = shlex.split(line)
    except ValueError as error:  # an unclosed quote
        raise UsageError(f"cannot split the options: {error}") from None
    return magic.parser.parse_args(words)


def load_ipython_extension(ipython) -> None:
    """``%load_ext measure``: register ``%%energy``."""
    ipython.register_magics(EnergyMagics)

