"""Accuracy of energy-per-inference estimators on power traces of exactly known energy.

    python benchmarks/integration_accuracy.py [--reps 400] [--window 30] [--seed 0]

Traces, piecewise constant so that their energy is exact:

- ``constant``: 150 W;
- ``steps``: levels drawn in 50..300 W, each held 0.2..3 s;
- ``bursts``: 2 ms at 300 W every 7 ms over a 60 W baseline, like the kernels
  of an inference loop.

Every repetition measures a window of random start (so every phase of the
bursts and steps occurs) and random duration T in [0.9, 1.1] x ``--window``,
observed the way the recorder observes it:

- power samples: the instantaneous power at the ``start`` edge (t = 0), at the
  ticks k x period (k >= 1, t < T), each late by a uniform 0..0.5 ms wake-up
  delay with its actual time recorded, and at the ``end`` edge T;
- an energy counter like NVML's total-energy counter: whole mJ, updated every
  100 ms at a random phase, so that a read returns the energy at its last
  update, up to 100 ms old.

Estimators of the window's energy (the relative error of energy per inference
is the same, the inference count being exact):

- ``ours``: the trapezoid over the power samples, which span exactly the
  window (``analysis.energy.trapezoid_energy``);
- ``counter`` (ours where a counter exists): what the analysis does with the
  counter's readings at the same instants: aligned on its updates where the
  samples are at least twice as frequent as them
  (``analysis.energy.aligned_counter_energy``), else ``counter(end) -
  counter(start)`` (``analysis.energy.counter_energy``);
- ``aipm``: AIPowerMeter's, the median of the per-interval trapezoids times
  their number (``integrate()`` of its ``concat_power_measure.py``), applied
  to the same samples; AIPowerMeter's own samples are not aligned with the
  inference loop either, an error not counted here;
- ``mean_x_T``: the mean of the samples times T.

The plain counter difference's residual: reading energies up to 100 ms old
at both edges measures [start - a, end - b] with a, b uniform in [0, 100 ms),
an error of about P x (a - b).  Its relative size is at most 0.1 s / T; for
steady power its median is 0.1 x (1 - 1/sqrt 2) = 0.029 s / T and its 95th
percentile 0.1 x (1 - sqrt 0.05) = 0.078 s / T, so 0.1 % needs a window of
29 s (median), 78 s (95 % of windows) or 100 s (always).  Aligned on the
updates, the error is that of placing the first and last update within half
a sampling period each.  Printed: the method x period x trace table of the
median and 95th percentile of |relative error|, the counter's error against
the window's length (plain, and aligned under 0.01 s sampling), the
counter under ticks of which 2 % are put off by up to 0.3 s (as a signal tick
is by a long C call: the analysis must then fall back to the plain difference
rather than misplace an update), and a last line of ``key=value`` pairs.
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.energy import aligned_counter_energy, counter_energy, trapezoid_energy  # noqa: E402

PERIODS_S = (0.01, 0.05, 0.1, 0.5, 1.0, 2.0)
COUNTER_UPDATE_S = 0.1  # NVML's energy counter
COUNTER_RESOLUTION_J = 1e-3  # NVML reports whole mJ
TICK_DELAY_S = 0.5e-3  # the recorder's wake-up delay, uniform 0..this
SWEEP_WINDOWS_S = (1, 3, 10, 30, 100, 300)
ALIGNED_PERIOD_S = 0.01  # sampling of the by-window table's aligned column
STALL_PROBABILITY = 0.02  # share of ticks put off in the stalled-ticks check
STALL_S = 0.3  # a stalled tick is late by up to this
MAX_SAMPLES = 4_000_000  # per simulated batch of windows (memory)
GOAL_PCT = 0.1


@dataclass
class Trace:
    """Piecewise-constant power: ``levels[i]`` watts from ``breaks[i]`` to ``breaks[i + 1]``."""

    name: str
    breaks: np.ndarray  # s, ascending, from 0 to the trace's end
    levels: np.ndarray  # W, one fewer than breaks

    def __post_init__(self):
        self.cum_j = np.r_[0.0, np.cumsum(self.levels * np.diff(self.breaks))]

    def power(self, t: np.ndarray) -> np.ndarray:
        return self.levels[np.searchsorted(self.breaks, t, side="right") - 1]

    def energy(self, t: np.ndarray) -> np.ndarray:
        """Exact energy from 0 to ``t`` (linear between breaks)."""
        return np.interp(t, self.breaks, self.cum_j)


def make_traces(length_s: float, rng: np.random.Generator) -> list[Trace]:
    constant = Trace("constant", np.array([0.0, length_s]), np.array([150.0]))
    holds = rng.uniform(0.2, 3.0, size=int(length_s / 0.2) + 1)
    step_breaks = np.r_[0.0, np.cumsum(holds)]
    step_breaks = np.r_[step_breaks[step_breaks < length_s], length_s]
    steps = Trace("steps", step_breaks, rng.uniform(50.0, 300.0, size=len(step_breaks) - 1))
    cycle, burst = 7e-3, 2e-3
    starts = np.arange(0.0, length_s, cycle)
    burst_breaks = np.r_[np.column_stack([starts, starts + burst]).ravel(), length_s]
    bursts = Trace("bursts", burst_breaks, np.tile([300.0, 60.0], len(starts)))
    return [constant, steps, bursts]


@dataclass
class Windows:
    """Samples of ``n`` windows as flat arrays sorted by window then time (analysis.energy's layout)."""

    n: int
    run: np.ndarray  # window code per sample
    t_s: np.ndarray  # time since the window's start
    power_w: np.ndarray
    counter_j: np.ndarray
    duration_s: np.ndarray  # per window
    truth_j: np.ndarray  # per window


def observe(trace: Trace, window_s: float, period_s: float | None, reps: int, rng: np.random.Generator,
            stall_probability: float = 0.0) -> Windows:
    """``reps`` random windows of ``trace``: edge samples, and ticks every ``period_s`` unless None.

    With ``stall_probability``, each tick is instead put off by up to ``STALL_S`` (as a signal tick is
    by a long C call), and the grid points it passes are skipped."""
    duration = window_s * rng.uniform(0.9, 1.1, size=reps)
    start = rng.uniform(0.0, trace.breaks[-1] - duration)
    ticks = np.arange(1, math.ceil(duration.max() / period_s) + 1) * period_s if period_s else np.empty(0)
    tick_t = ticks + rng.uniform(0.0, TICK_DELAY_S, size=(reps, len(ticks)))
    if stall_probability:
        stalled = rng.random(tick_t.shape) < stall_probability
        tick_t[stalled] += rng.uniform(0.0, STALL_S, size=stalled.sum())
    t = np.column_stack([np.zeros(reps), tick_t, duration])
    keep = np.ones(t.shape, dtype=bool)
    keep[:, 1:-1] = (tick_t < duration[:, None]) & (tick_t >= np.maximum.accumulate(tick_t, axis=1))
    run = np.broadcast_to(np.arange(reps)[:, None], t.shape)[keep]
    t_rel = t[keep]
    t_abs = start[run] + t_rel
    phase = rng.uniform(0.0, COUNTER_UPDATE_S, size=reps)[run]
    last_update = phase + np.floor((t_abs - phase) / COUNTER_UPDATE_S) * COUNTER_UPDATE_S
    counter = np.floor(trace.energy(last_update) / COUNTER_RESOLUTION_J) * COUNTER_RESOLUTION_J
    truth = trace.energy(start + duration) - trace.energy(start)
    return Windows(reps, run, t_rel, trace.power(t_abs), counter, duration, truth)


def aipm_energy(w: Windows) -> np.ndarray:
    """AIPowerMeter: median of the per-interval trapezoids times their number, per window."""
    joined = w.run[1:] == w.run[:-1]
    area = 0.5 * (w.power_w[1:] + w.power_w[:-1]) * np.diff(w.t_s)
    per_run = pd.Series(area[joined]).groupby(w.run[1:][joined]).agg(["median", "count"])
    return (per_run["median"] * per_run["count"]).reindex(range(w.n)).to_numpy()


def mean_power_energy(w: Windows) -> np.ndarray:
    counts = np.bincount(w.run, minlength=w.n)
    return np.bincount(w.run, weights=w.power_w, minlength=w.n) / counts * w.duration_s


def counter_estimate(w: Windows) -> np.ndarray:
    """The plain difference of the counter between the window's edges."""
    energy, _ = counter_energy(w.run, w.counter_j, np.full(w.n, np.nan), w.n)
    return energy


def our_counter_estimate(w: Windows) -> np.ndarray:
    """What the analysis reports: aligned on the counter's updates where it can be, else the plain difference."""
    aligned_j, aligned = aligned_counter_energy(w.run, w.t_s, w.counter_j, w.n)
    return np.where(aligned, aligned_j, counter_estimate(w))


def trapezoid_estimate(w: Windows) -> np.ndarray:
    energy, _ = trapezoid_energy(w.run, w.t_s, w.power_w, w.n)
    return energy


ESTIMATORS = {"ours": trapezoid_estimate, "aipm": aipm_energy, "mean_x_T": mean_power_energy,
              "counter": our_counter_estimate}


def error_pct(estimate: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    """Median and 95th percentile of |relative error|, in %."""
    err = np.abs(estimate / truth - 1) * 100
    return float(np.median(err)), float(np.percentile(err, 95))


def sample_table(traces: list[Trace], window_s: float, reps: int, rng: np.random.Generator) -> pd.DataFrame:
    """Error of each power-sample estimator, per period and trace."""
    rows = []
    for period in PERIODS_S:
        for trace in traces:
            w = observe(trace, window_s, period, reps, rng)
            for method, estimate in ESTIMATORS.items():
                median, p95 = error_pct(estimate(w), w.truth_j)
                rows.append({"period_s": period, "trace": trace.name, "method": method, "median": median, "p95": p95})
    return pd.DataFrame(rows)


def counter_table(traces: list[Trace], windows_s, reps: int, rng: np.random.Generator) -> pd.DataFrame:
    """Error of the plain counter difference (edges only) and of the aligned counter (samples every
    ``ALIGNED_PERIOD_S``, fewer windows where they would not fit in memory) per window length and trace."""
    rows = []
    for window in windows_s:
        for trace in traces:
            w = observe(trace, window, None, reps, rng)
            median, p95 = error_pct(counter_estimate(w), w.truth_j)
            fast = observe(trace, window, ALIGNED_PERIOD_S, max(1, min(reps, int(MAX_SAMPLES * ALIGNED_PERIOD_S / window))), rng)
            aligned_median, aligned_p95 = error_pct(our_counter_estimate(fast), fast.truth_j)
            rows.append({"window_s": window, "trace": trace.name, "median": median, "p95": p95,
                         "aligned_median": aligned_median, "aligned_p95": aligned_p95, "aligned_windows": fast.n})
    return pd.DataFrame(rows)


def stalled_table(traces: list[Trace], window_s: float, reps: int, rng: np.random.Generator) -> pd.DataFrame:
    """The counter under ``ALIGNED_PERIOD_S`` ticks of which ``STALL_PROBABILITY`` are put off by up to
    ``STALL_S``: the plain difference, what the analysis reports, and how often it could align."""
    rows = []
    for trace in traces:
        w = observe(trace, window_s, ALIGNED_PERIOD_S, reps, rng, stall_probability=STALL_PROBABILITY)
        _, aligned = aligned_counter_energy(w.run, w.t_s, w.counter_j, w.n)
        plain, ours = error_pct(counter_estimate(w), w.truth_j), error_pct(our_counter_estimate(w), w.truth_j)
        rows.append({"trace": trace.name, "plain": plain, "ours": ours, "aligned_share": aligned.mean()})
    return pd.DataFrame(rows)


def print_stalled_table(table: pd.DataFrame, window_s: float) -> None:
    print(f"\n|relative error| of the counter, % (median / 95th percentile), {window_s:g} s windows sampled every "
          f"{ALIGNED_PERIOD_S:g} s, {STALL_PROBABILITY:.0%} of the ticks put off by up to {STALL_S:g} s")
    print(f"{'trace':<9} {'plain':>20} {'ours':>20} {'aligned':>8}")
    for row in table.itertuples():
        print(f"{row.trace:<9} {row.plain[0]:>9.3g} / {row.plain[1]:<8.3g} {row.ours[0]:>9.3g} / {row.ours[1]:<8.3g} "
              f"{row.aligned_share:>8.0%}")


def print_sample_table(table: pd.DataFrame) -> None:
    wide = table.pivot_table(index=["period_s", "trace"], columns="method", values=["median", "p95"], sort=False)
    print("\n|relative error| of energy per inference, % (median / 95th percentile over windows): from the power "
          "samples (ours, aipm, mean_x_T) and from the counter read at the same instants (counter)")
    print(f"{'period s':>8} {'trace':<9}" + "".join(f"{m:>22}" for m in ESTIMATORS))
    for (period, trace), row in wide.iterrows():
        cells = "".join(f"{row[('median', m)]:>11.3g} / {row[('p95', m)]:<8.3g}" for m in ESTIMATORS)
        print(f"{period:>8g} {trace:<9}{cells}")


def print_counter_table(table: pd.DataFrame) -> None:
    print("\n|relative error| of the counter, % (median / 95th percentile), by window length:")
    print(f"plain difference read at the edges only (with its steady-power formula), and aligned on the updates "
          f"with samples every {ALIGNED_PERIOD_S:g} s")
    print(f"{'window s':>8} {'trace':<9} {'plain':>20} {'steady-power formula':>24} {'aligned':>20} {'windows':>8}")
    for row in table.itertuples():
        formula = (0.1 * (1 - 2**-0.5) / row.window_s * 100, 0.1 * (1 - 0.05**0.5) / row.window_s * 100)
        print(f"{row.window_s:>8g} {row.trace:<9} {row.median:>9.3g} / {row.p95:<8.3g} "
              f"{formula[0]:>11.3g} / {formula[1]:<8.3g} {row.aligned_median:>9.3g} / {row.aligned_p95:<8.3g} "
              f"{row.aligned_windows:>8d}")


def not_better(ours: pd.Series, aipm: pd.Series, label: str) -> list[str]:
    """``(period, trace)`` cells where ``ours`` is not strictly below ``aipm``, as printable lines."""
    return [f"{label} NOT better at {period:g} s on {trace}: {ours[period, trace]:.3g} % vs aipm {aipm[period, trace]:.3g} %"
            for period, trace in ours.index if not ours[period, trace] < aipm[period, trace]]


def verdicts(samples: pd.DataFrame, counter_at_window: pd.DataFrame) -> dict[str, str]:
    """Key figures; prints every cell where ours is not strictly better than AIPowerMeter's method."""
    aligned = counter_at_window["aligned_median"].max()
    keys = {"counter_error_pct": f"{counter_at_window['median'].max():.3g}",
            "counter_error_p95_pct": f"{counter_at_window['p95'].max():.3g}",
            "counter_window_for_0.1pct_median_s": f"{0.1 * (1 - 2**-0.5) / (GOAL_PCT / 100):.0f}",
            "counter_window_for_0.1pct_p95_s": f"{0.1 * (1 - 0.05**0.5) / (GOAL_PCT / 100):.0f}",
            f"counter_aligned_p{ALIGNED_PERIOD_S:g}_error_pct": f"{aligned:.3g}",
            f"counter_aligned_p{ALIGNED_PERIOD_S:g}_error_p95_pct": f"{counter_at_window['aligned_p95'].max():.3g}",
            "counter_goal_met": str(bool(aligned <= GOAL_PCT and counter_at_window["aligned_p95"].max() <= GOAL_PCT)).lower()}
    medians = samples.pivot_table(index=["period_s", "trace"], columns="method", values="median")
    lines = (not_better(medians["ours"], medians["aipm"], "trapezoid")
             + not_better(medians["counter"], medians["aipm"], "counter"))
    print("\n" + ("\n".join(lines) if lines else "ours is strictly better than aipm in every cell, "
                                                   "from the power samples and from the counter"))
    worst = medians.groupby(level="period_s").max()
    for period, row in worst.iterrows():
        keys[f"ours_p{period:g}_error_pct"] = f"{row['ours']:.3g}"
        keys[f"counter_p{period:g}_error_pct"] = f"{row['counter']:.3g}"
        keys[f"aipm_p{period:g}_error_pct"] = f"{row['aipm']:.3g}"
    keys["ours_beats_aipm_all_periods"] = str(not any(line.startswith("trapezoid") for line in lines)).lower()
    keys["counter_beats_aipm_all_periods"] = str(not any(line.startswith("counter") for line in lines)).lower()
    return keys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=400, help="windows per period and trace (default 400)")
    parser.add_argument("--window", type=float, default=30.0, help="window length, s (default 30: ~5000 GPU inferences)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    traces = make_traces(1.1 * max(args.window, *SWEEP_WINDOWS_S) + 1.0, rng)
    print(f"{args.reps} windows of {args.window:g} s (x 0.9..1.1) per period and trace; "
          f"counter updated every {COUNTER_UPDATE_S * 1e3:g} ms")
    samples = sample_table(traces, args.window, args.reps, rng)
    print_sample_table(samples)
    print_counter_table(counter_table(traces, SWEEP_WINDOWS_S, args.reps, rng))
    at_window = counter_table(traces, [args.window], args.reps, rng)
    print(f"\ncounter at the {args.window:g} s window, worst trace: plain difference median "
          f"{at_window['median'].max():.3g} %, 95th percentile {at_window['p95'].max():.3g} %; aligned on the updates "
          f"(samples every {ALIGNED_PERIOD_S:g} s) median {at_window['aligned_median'].max():.3g} %, 95th percentile "
          f"{at_window['aligned_p95'].max():.3g} % (goal {GOAL_PCT:g} %)")
    stalled = stalled_table(traces, args.window, args.reps, rng)
    print_stalled_table(stalled, args.window)
    keys = verdicts(samples, at_window)
    keys["counter_stalled_error_pct"] = f"{max(row[0] for row in stalled['ours']):.3g}"
    keys["counter_stalled_error_p95_pct"] = f"{max(row[1] for row in stalled['ours']):.3g}"
    keys["counter_stalled_aligned_share"] = f"{stalled['aligned_share'].min():.2f}"
    print(" ".join(f"{k}={v}" for k, v in keys.items()))


if __name__ == "__main__":
    main()
