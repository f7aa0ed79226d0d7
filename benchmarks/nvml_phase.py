"""Does NVML's energy counter see all of a GPU's work, whatever its phase? A square-wave load at several phases.

    python benchmarks/nvml_phase.py --out results/   # on a machine with an NVIDIA GPU

Published measurements found that on A100 and H100 GPUs the power NVML
reports covers only about 25 ms of every 100 ms, so short bursts of work can
be missed or counted several times depending on when they fall. This script
finds when the total-energy counter updates (it polls it every millisecond),
then runs a square-wave load, ``busy_ms`` of back-to-back matrix products then
idle for the rest of each period, with the busy part starting at several
offsets (phases) from the counter's updates, for ``cycles`` periods each. The
energy per cycle is the counter's difference over the whole train of cycles
(and two idle periods after it) divided by their number: the counter's reads
cover updates that lie the same offset before the train's start and its end,
so the window is equally long, and holds the same idle time, at every phase.
If the counter integrated all of the power, every phase would give the same
energy per cycle; the spread between phases (``max_over_min``) says
how much a short window's energy can depend on its phase. Nothing is changed
on the GPU: no clock, power limit or persistence setting.

The last line holds ``key=value`` pairs; ``--out`` gets ``nvml_phase.json``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

POLL_S = 0.001


def update_times(times_s: np.ndarray, readings_j: np.ndarray) -> np.ndarray:
    """The times at which a polled counter changed (the first poll that saw each new value)."""
    changed = np.flatnonzero(np.diff(readings_j) != 0) + 1
    return times_s[changed]


def update_period(updates_s: np.ndarray) -> float:
    """The counter's update period: the median interval between its updates (s)."""
    if len(updates_s) < 3:
        raise ValueError("the counter updated fewer than 3 times while polled: cannot find its period")
    return float(np.median(np.diff(updates_s)))


def next_start(last_update_s: float, period_s: float, phase: float, now_s: float) -> float:
    """The first time after ``now_s`` that lies ``phase`` of a period after an update (updates every
    ``period_s`` from ``last_update_s``)."""
    k = np.ceil((now_s - last_update_s - phase * period_s) / period_s)
    return float(last_update_s + (k + phase) * period_s)


def phase_table(energies_j: dict[float, float], cycles: int) -> dict:
    """Energy per cycle per phase, and the spread between phases."""
    per_cycle = {phase: joules / cycles for phase, joules in energies_j.items()}
    values = np.array(list(per_cycle.values()))
    return {"energy_per_cycle_j": {f"{phase:.2f}": value for phase, value in per_cycle.items()},
            "max_over_min": float(values.max() / values.min()) if values.min() > 0 else float("nan"),
            "phase_dependent": bool(values.min() > 0 and values.max() / values.min() > 1.10)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", type=int, default=0, help="CUDA device index (default 0)")
    parser.add_argument("--busy-ms", type=float, default=25.0, help="busy part of each period (default 25 ms)")
    parser.add_argument("--cycles", type=int, default=60, help="periods of load per phase (default 60)")
    parser.add_argument("--phases", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75],
                        help="offsets of the busy part from a counter update, in periods")
    parser.add_argument("--out", type=Path, help="folder for nvml_phase.json")
    args = parser.parse_args()

    import pynvml
    import torch

    device = torch.device("cuda", args.device)
    uuid = str(torch.cuda.get_device_properties(device).uuid)
    pynvml.nvmlInit()
    handle = next(h for h in map(pynvml.nvmlDeviceGetHandleByIndex, range(pynvml.nvmlDeviceGetCount()))
                  if uuid in str(pynvml.nvmlDeviceGetUUID(h)))

    def counter_j() -> float:
        return pynvml.nvmlDeviceGetTotalEnergyConsumption(handle) / 1000

    a = torch.randn(4096, 4096, device=device)
    b = torch.randn(4096, 4096, device=device)

    def busy(seconds: float) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            torch.mm(a, b)
            torch.cuda.synchronize(device)

    busy(1.0)  # warm-up
    polled_t, polled = [], []
    start = time.perf_counter()
    while time.perf_counter() - start < 1.5:
        polled_t.append(time.perf_counter())
        polled.append(counter_j())
        time.sleep(POLL_S)
    updates = update_times(np.array(polled_t), np.array(polled))
    period = update_period(updates)
    energies = {}
    for phase in args.phases:
        first = next_start(updates[-1], period, phase, time.perf_counter() + period)
        time.sleep(max(0.0, first - time.perf_counter()))
        before = counter_j()
        for cycle in range(args.cycles):
            busy(args.busy_ms / 1000)
            time.sleep(max(0.0, first + (cycle + 1) * period - time.perf_counter()))
        time.sleep(2 * period)  # let the counter catch up with the last cycle
        energies[phase] = counter_j() - before
    result = {"gpu": pynvml.nvmlDeviceGetName(handle), "driver": pynvml.nvmlSystemGetDriverVersion(),
              "update_period_s": period, "busy_ms": args.busy_ms, "cycles": args.cycles,
              **phase_table(energies, args.cycles)}
    pynvml.nvmlShutdown()
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "nvml_phase.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    print(f"update_period_s={period:.4f} max_over_min={result['max_over_min']:.3f} "
          f"phase_dependent={str(result['phase_dependent']).lower()}")


if __name__ == "__main__":
    main()
