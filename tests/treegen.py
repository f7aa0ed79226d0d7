"""Synthetic run trees in the measuring side's format, with exactly known energies.

``write_run`` writes one ``input_<size>/run_<k>/`` folder (``power_metrics.json``,
``latency.csv``, ``meta.json``) as ``python -m measure run`` would: in the
current format (schema 2, ``meta.json`` built by ``measure.runtree.Meta``) or,
with ``schema=1``, as the package's first release did.  Every domain
draws a constant power, so its energy over the window is exactly
``power_w[domain] * duration_s``; counters (``gpu<i>``, ``package-<s>``,
``dram-<s>``) start at ``counter_start_j`` and wrap at ``WRAP_J``.
``write_tree`` writes ``root/<model>/input_<size>/run_<k>/`` for a whole grid.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from measure import runtree

POWER_W = {"gpu0": 100.0, "package-0": 40.0, "dram-0": 5.0, "cpu_estimated": 30.0}
WRAP_J = {"package": 262143.328850, "dram": 65712.999613}  # RAPL max_energy_range_uj / 1e6
COUNTER_START_J = 1000.0
GPU_EXTRA = {"sm_util_pct": 90.0, "mem_used_mib": 2000.0, "proc_mem_mib": 1500.0,
             "sm_clock_mhz": 1980.0, "temp_c": 55.0}
PROCESS = {"process.cpu_share": 1.0, "process.rss_mib": 1000.0, "process.uss_mib": 900.0}
SCHEMA_1_NAMES = {"mem_used_mib": "mem_used_mb", "proc_mem_mib": "proc_mem_mb", "rss_mib": "rss_mb",
                  "uss_mib": "uss_mb"}
T0 = datetime(2025, 1, 1, 12, 0, 0, tzinfo=timezone.utc)


def kind(domain: str) -> str:
    """``gpu``, ``package``, ``dram`` or ``cpu_estimated``."""
    return "gpu" if domain.startswith("gpu") else domain.split("-")[0]


def channels_of(domain: str, gpu_counter: bool = True, gpu_extra: Sequence[str] = tuple(GPU_EXTRA)) -> list[str]:
    if kind(domain) == "gpu":
        metrics = (["energy_j"] if gpu_counter else []) + ["power_w", *gpu_extra]
    elif kind(domain) == "cpu_estimated":
        metrics = ["power_w", "load"]
    else:
        metrics = ["energy_j"]
    return [f"{domain}.{metric}" for metric in metrics]


def sensor_meta(domain: str, gpu_counter: bool = True, gpu_extra: Sequence[str] = tuple(GPU_EXTRA)) -> dict:
    sensor = {"gpu": "nvml", "package": "rapl", "dram": "rapl", "cpu_estimated": "estimate"}[kind(domain)]
    return {"sensor": sensor, "source": "estimated" if sensor == "estimate" else "measured",
            "channels": channels_of(domain, gpu_counter, gpu_extra), "counter_wrap_j": WRAP_J.get(kind(domain))}


def sample_lines(power_w: Mapping[str, float], t_s: np.ndarray, *, counter_start_j: Mapping[str, float],
                 gpu_counter: bool = True, gpu_extra: Sequence[str] = tuple(GPU_EXTRA)) -> list[str]:
    """The JSON lines of a window sampled at ``t_s`` (first ``start``, last ``end``)."""
    lines = []
    for i, t in enumerate(t_s):
        mark = "start" if i == 0 else "end" if i == len(t_s) - 1 else "tick"
        utc = (T0 + timedelta(seconds=float(t))).isoformat(timespec="microseconds").replace("+00:00", "Z")
        line: dict[str, object] = {"t_s": round(float(t), 6), "utc": utc, "mark": mark, "gap": ""}
        for domain, watts in power_w.items():
            for channel in channels_of(domain, gpu_counter, gpu_extra):
                metric = channel.split(".")[1]
                if metric == "energy_j":
                    counter = counter_start_j.get(domain, COUNTER_START_J) + watts * float(t)
                    wrap = WRAP_J.get(kind(domain))
                    line[channel] = counter % wrap if wrap else counter
                elif metric == "power_w":
                    line[channel] = watts
                elif metric == "load":
                    line[channel] = 0.5
                else:
                    line[channel] = GPU_EXTRA[metric]
        line.update(PROCESS)
        lines.append(json.dumps(line) + "\n")
    return lines


def write_run(root: str | Path, model: str = "resnet50", input_size: int = 64, run: int = 0, *,
              power_w: Mapping[str, float] = POWER_W, iterations: int = 100, duration_s: float = 2.0,
              samples: int = 21, latency_s: float | Sequence[float] | None = None,
              counter_start_j: Mapping[str, float] | None = None, gpu_counter: bool = True,
              gpu_extra: Sequence[str] = tuple(GPU_EXTRA),
              idle_power_w: Mapping[str, float] | None = None, status: str = "complete",
              device: str = "cuda:0", gpu_domain: str | None = "auto", flops_per_inference: float | None = 4.0e9,
              params: int = 25_557_032, batch_size: int = 1, dtype: str = "fp32", execution: str = "eager",
              threads: int = 8, schema: int = runtree.SCHEMA, identity: Mapping[str, object] | None = None) -> Path:
    """Write ``root/input_<size>/run_<k>/`` and return that folder.

    Each domain of ``power_w`` draws that constant power (W) during ``duration_s``
    seconds sampled ``samples`` times; ``latency_s`` defaults to
    ``duration_s / iterations`` for every inference.  GPU domains carry an
    energy counter unless ``gpu_counter`` is false, and the ``gpu_extra`` metrics.
    ``gpu_domain`` (default: ``gpu<i>`` of a ``cuda:<i>`` device) names the GPU the
    model ran on. ``idle_power_w`` gives an idle baseline per sensor domain: in
    schema 2 an idle recording ``root/idle/idle_synthetic.json`` of those
    constant powers, named in ``meta.json``; in schema 1 the values themselves.
    ``identity`` adds dimensions (or overrides them) in schema 2.
    """
    folder = Path(root) / f"input_{input_size}" / f"run_{run}"
    folder.mkdir(parents=True, exist_ok=True)
    t_s = np.linspace(0.0, duration_s, samples)
    lines = sample_lines(power_w, t_s, counter_start_j=counter_start_j or {}, gpu_counter=gpu_counter,
                         gpu_extra=gpu_extra)
    if schema == 1:
        lines = [_schema_1_names(line) for line in lines]
    (folder / "power_metrics.json").write_text("".join(lines), encoding="utf-8")
    latencies = np.broadcast_to(duration_s / iterations if latency_s is None else latency_s, (iterations,))
    (folder / "latency.csv").write_text("latency_s\n" + "".join(f"{v:.9f}\n" for v in latencies), encoding="utf-8")
    end_utc = (T0 + timedelta(seconds=duration_s)).isoformat().replace("+00:00", "Z")
    if gpu_domain == "auto":
        gpu_domain = f"gpu{device.partition(':')[2] or 0}" if device.startswith("cuda") else None
    sensors = {domain: sensor_meta(domain, gpu_counter, gpu_extra) for domain in power_w}
    fields = {
        "input_shape": [batch_size, 3, input_size, input_size], "warmup": 10, "gpu_domain": gpu_domain,
        "weights": "random", "weights_notice": None, "params": params, "flops_per_inference": flops_per_inference,
        "period_s": duration_s / max(samples - 1, 1), "sensors": sensors, "unavailable": {},
        "window": {"start_utc": T0.isoformat().replace("+00:00", "Z"), "end_utc": end_utc,
                   "duration_s": duration_s, "samples": samples, "gap_samples": 0, "first_error": None},
        "host": {"hostname": "synthetic", "platform": "Linux", "python": "3.12", "cpu_model": "Synthetic CPU",
                 "logical_cpus": 8, "torch_threads": threads,
                 "gpus": [{"domain": "gpu0", "name": "Synthetic GPU", "driver": "550", "uuid": "GPU-0"}],
                 "torch": "2", "torchvision": "0", "transformers": "4"},
        "stop_reason": "fixed protocol",
    }
    reason = None if status == "complete" else "synthetic failure"
    if schema == 1:
        for about in sensors.values():
            about["channels"] = [_schema_1_channel(c) for c in about["channels"]]
        idle = {d: {"value": v, "source": "estimated" if d == "cpu_estimated" else "measured"}
                for d, v in (idle_power_w or {}).items()}
        document = {"schema": 1, "status": status, "reason": reason, "model": model, "task": "vision",
                    "input_size": input_size, "batch_size": 1, "run": run, "iterations": iterations,
                    "device": device, **fields, "idle_power_w": idle}
        if gpu_domain is None or device.startswith("cpu"):
            document.pop("gpu_domain")
    else:
        dimensions = {"model": model, "task": "vision", "input_size": input_size, "batch_size": batch_size,
                      "dtype": dtype, "execution": execution, "threads": threads, "device": device,
                      **(identity or {})}
        if idle_power_w:
            fields["idle"] = {"recording": write_idle(root, idle_power_w)}
        if not (Path(root) / runtree.STUDY_FILE).exists():  # the tree's root, as a sweep marks it
            runtree.write_json(Path(root) / runtree.STUDY_FILE, {"schema": runtree.SCHEMA, "plan": {"model": model}})
        document = runtree.Meta(runtree.SCHEMA, status, reason, dimensions, run, iterations, fields).to_document()
    (folder / "meta.json").write_text(json.dumps(document, indent=1), encoding="utf-8")
    return folder


def write_idle(root: str | Path, power_w: Mapping[str, float], duration_s: float = 1.0, samples: int = 11,
               name: str = "idle_synthetic.json", extra: Mapping[str, Sequence[float]] | None = None) -> str:
    """An idle recording of constant powers under ``root/idle/``; its path relative to ``root``.
    ``extra`` adds channels with one value per sample (e.g. ``host.busy_cpu_s``)."""
    lines = sample_lines(power_w, np.linspace(0.0, duration_s, samples), counter_start_j={})
    if extra:
        lines = [json.dumps({**json.loads(line), **{k: v[i] for k, v in extra.items()}}) + "\n"
                 for i, line in enumerate(lines)]
    (Path(root) / "idle").mkdir(parents=True, exist_ok=True)
    (Path(root) / "idle" / name).write_text("".join(lines), encoding="utf-8")
    return f"idle/{name}"


def _schema_1_channel(channel: str) -> str:
    domain, _, metric = channel.rpartition(".")
    return f"{domain}.{SCHEMA_1_NAMES.get(metric, metric)}"


def _schema_1_names(line: str) -> str:
    return json.dumps({_schema_1_channel(k) if "." in k else k: v for k, v in json.loads(line).items()}) + "\n"


def write_tree(root: str | Path, models: Sequence[str] = ("resnet50",), input_sizes: Sequence[int] = (32, 64),
               runs: int = 3, *, power_w: Callable[[str, int, int], Mapping[str, float]] | None = None,
               **run_options) -> list[Path]:
    """Write ``root/<model>/input_<size>/run_<k>/`` for every cell; return the run folders.

    ``power_w(model, input_size, run)`` gives each run's powers (default ``POWER_W``);
    ``run_options`` go to ``write_run`` unchanged.
    """
    return [
        write_run(Path(root) / model, model, size, run, power_w=power_w(model, size, run) if power_w else POWER_W,
                  **run_options)
        for model in models for size in input_sizes for run in range(runs)
    ]


PHASE_POWER_W = {"prefill": {"gpu0": 300.0, "package-0": 60.0, "cpu_estimated": 20.0},
                 "decode": {"gpu0": 150.0, "package-0": 30.0, "cpu_estimated": 20.0}}


def write_generation_run(root: str | Path, input_size: int = 32, run: int = 0, *,
                         phase_power_w: Mapping[str, Mapping[str, float]] = PHASE_POWER_W,
                         phase_s: Mapping[str, float] = {"prefill": 0.4, "decode": 1.6}, period_s: float = 0.1,
                         batch_size: int = 2, new_tokens: int = 8, gpu_power: bool = True, split: bool = True,
                         token_latency_s: Sequence[float] | None = None, tokens: bool = True,
                         counter_start_j: float = COUNTER_START_J, model: str = "hf:gpt2") -> Path:
    """Write ``root/input_<size>/run_<k>/`` of a generation run, as the generate task would, and return it.

    Each domain draws a constant power per phase (``phase_power_w[phase][domain]``, W) for ``phase_s[phase]``
    seconds: ``start`` at 0, a ``split`` sample at the end of the prefill (unless ``split`` is false), ``end``
    after the decode, ticks every ``period_s`` between. Counters (``gpu<i>``, ``package-<s>``) hold exactly the
    energy drawn since the start plus ``counter_start_j``; a power reading is the power of the phase its time
    falls in (the prefill's at the split). ``gpu_power=False`` leaves the GPU without its power channel.
    ``tokens.csv`` holds ``new_tokens`` tokens of ``token_latency_s`` each (default: the prefill's duration for
    token 0, the decode's spread evenly over the others), unless ``tokens`` is false.
    """
    folder = Path(root) / f"input_{input_size}" / f"run_{run}"
    folder.mkdir(parents=True, exist_ok=True)
    prefill_s, decode_s = phase_s["prefill"], phase_s["decode"]
    window_s = prefill_s + decode_s
    grid = period_s * np.arange(1, int(window_s / period_s) + 1)
    ticks = [(t, "tick") for t in grid if min(abs(t - prefill_s), window_s - t) > 1e-6]
    samples = sorted([(0.0, "start"), *ticks, *([(prefill_s, "split")] if split else []), (window_s, "end")])
    domains = list(phase_power_w["prefill"])
    lines = []
    for t, mark in samples:
        line: dict[str, object] = {"t_s": round(float(t), 6), "utc": "2025-01-01T12:00:00.000000Z", "mark": mark,
                                   "gap": ""}
        for domain in domains:
            p_prefill, p_decode = phase_power_w["prefill"][domain], phase_power_w["decode"][domain]
            drawn_j = p_prefill * min(t, prefill_s) + p_decode * max(t - prefill_s, 0.0)
            for channel in channels_of(domain, gpu_extra=()):
                metric = channel.split(".")[1]
                if metric == "energy_j":
                    line[channel] = counter_start_j + drawn_j
                elif metric == "power_w" and (gpu_power or kind(domain) != "gpu"):
                    line[channel] = p_prefill if t <= prefill_s else p_decode
                elif metric == "load":
                    line[channel] = 0.5
        line.update(PROCESS)
        lines.append(json.dumps(line) + "\n")
    (folder / "power_metrics.json").write_text("".join(lines), encoding="utf-8")
    latency = np.asarray(token_latency_s if token_latency_s is not None
                         else [prefill_s] + [decode_s / (new_tokens - 1)] * (new_tokens - 1), dtype=float)
    if tokens:
        runtree.write_tokens(folder / runtree.TOKENS_FILE, np.cumsum(latency), latency)
    runtree.write_latencies(folder / runtree.LATENCY_FILE, [float(np.sum(latency))])
    sensors = {domain: sensor_meta(domain, gpu_extra=()) for domain in domains}
    if not gpu_power:
        for about in sensors.values():
            about["channels"] = [c for c in about["channels"] if not (c.startswith("gpu") and c.endswith("power_w"))]
    identity = {"model": model, "task": "generate", "input_size": input_size, "batch_size": batch_size,
                "dtype": "fp32", "execution": "eager", "threads": 8, "device": "cuda:0", "new_tokens": new_tokens}
    fields = {"warmup": 1, "gpu_domain": "gpu0", "weights": "random", "period_s": period_s, "sensors": sensors,
              "unavailable": {}, "window": {"duration_s": window_s, "samples": len(lines), "gap_samples": 0},
              "host": {"hostname": "synthetic", "cpu_model": "Synthetic CPU", "logical_cpus": 8,
                       "gpus": [{"domain": "gpu0", "name": "Synthetic GPU", "driver": "550", "uuid": "GPU-0"}]},
              "phases": ["prefill", "decode"],
              "generation": {"prompt_tokens": input_size, "new_tokens": new_tokens, "split_s": prefill_s}}
    if not (Path(root) / runtree.STUDY_FILE).exists():
        runtree.write_json(Path(root) / runtree.STUDY_FILE, {"schema": runtree.SCHEMA, "plan": {"model": model}})
    runtree.write_meta(folder, runtree.Meta(runtree.SCHEMA, "complete", None, identity, run, 1, fields))
    return folder
