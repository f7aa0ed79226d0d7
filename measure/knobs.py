"""A configuration applied to a model: torch threads, dtype (cast or autocast), execution (eager or compiled).

The model as loaded (the *pristine* one) is never cast: a cast works on a deep
copy, so that no configuration leaks into the next, and ``torch.compile`` wraps
the module of its configuration without changing it. Compiled graphs are
dropped (``torch._dynamo.reset()``) when a compiled configuration starts, since
inductor bakes the thread count and the dtype into them. Each input shape is
compiled once, with static shapes, by an untimed call before the warm-up
(``Configured.compile_call``); ``compile_limits`` makes dynamo raise rather
than fall back silently to eager execution when a study has more shapes than
its recompile limit allows, and ``compilations()`` lets the sweep check that no
compilation happened inside a measured window.
"""
from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass, replace
from typing import Callable, Iterator

import torch

from .models import LoadedModel, ModelInputs
from .plan import Config, Plan

TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


class ConfigError(RuntimeError):
    """A configuration that cannot be applied to this model (one line)."""


@dataclass
class Configured:
    """The model as one configuration runs it on ``device``.

    ``model``: what the timed loop calls (compiled or eager); ``eager``: the
    same model uncompiled (FLOPs are counted on it); ``input_dtype``: the
    dtype floating inputs are cast to (None: as made); ``autocast``: the dtype
    of ``torch.autocast`` around every call (None: no autocast).
    """

    config: Config
    model: LoadedModel
    eager: LoadedModel
    device: torch.device
    input_dtype: torch.dtype | None
    autocast: torch.dtype | None

    @property
    def compiled(self) -> bool:
        return self.config.execution == "compiled"

    def inputs(self, size: int) -> ModelInputs:
        """The inputs of one forward pass at ``size``, of the configuration's batch size and dtype, on the device."""
        return self.model.inputs(size, self.config.batch_size, self.device, self.input_dtype)

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Inference mode, and autocast when the configuration asks for it."""
        with torch.inference_mode():
            if self.autocast is None:
                yield
            else:
                with torch.autocast(self.device.type, dtype=self.autocast):
                    yield

    def compile_call(self, inputs: ModelInputs, sync: Callable[[], None]) -> float | None:
        """Compile for the shape of ``inputs`` by calling the model once (inside ``running()``); the call's
        seconds, compilation included (None for eager execution). A shape compiled before is reused, and
        its call then lasts about one inference."""
        if not self.compiled:
            return None
        start = time.perf_counter()
        self.model(inputs)
        sync()
        return time.perf_counter() - start


def set_threads(config: Config) -> None:
    """Set torch's intra-op threads to the configuration's (nothing when it does not set them)."""
    if config.threads is not None:
        torch.set_num_threads(config.threads)


def configure(pristine: LoadedModel, config: Config, dtype_mode: str, device: torch.device) -> Configured:
    """Apply ``config``'s dtype and execution to ``pristine`` (already on ``device``), which stays as it is.

    Raises ``ConfigError`` for a cast of a model that is not an ``nn.Module``;
    whatever ``copy.deepcopy``, ``.to`` or ``torch.compile`` raise otherwise.
    """
    dtype = TORCH_DTYPES[config.dtype]
    lower = dtype != torch.float32
    module = pristine.module
    if lower and dtype_mode == "cast":
        if not isinstance(module, torch.nn.Module):
            raise ConfigError(f"casting to {config.dtype} needs an nn.Module, and {pristine.name} is a "
                              f"{type(module).__name__}; use the autocast dtype mode")
        module = copy.deepcopy(module).to(dtype=dtype)
    eager = replace(pristine, module=module)
    model = eager
    if config.execution == "compiled":
        from torch import _dynamo

        _dynamo.reset()  # graphs of another configuration hold its threads and dtypes
        model = replace(pristine, module=torch.compile(module, dynamic=False))
    return Configured(config, model, eager, device, dtype if lower and dtype_mode == "cast" else None,
                      dtype if lower and dtype_mode == "autocast" else None)


def release(configured: Configured | None) -> None:
    """Drop what a configuration holds beyond the pristine model: compiled graphs, cached device memory."""
    if configured is None:
        return
    if configured.compiled:
        from torch import _dynamo

        _dynamo.reset()
    if configured.device.type == "cuda":
        torch.cuda.empty_cache()


@contextlib.contextmanager
def compile_limits(plan: Plan) -> Iterator[None]:
    """Let dynamo keep a static graph for every input size of a configuration, and raise rather than fall
    back to eager execution beyond that (nothing is changed for a plan without compiled execution)."""
    if "compiled" not in plan.executions:
        yield
        return
    import torch._dynamo.config as dynamo

    limit = max(dynamo.recompile_limit, len(plan.sizes) + 1)
    with dynamo.patch(recompile_limit=limit, fail_on_recompile_limit_hit=True):
        yield


def compilations() -> int:
    """How many frames dynamo has compiled in this process so far."""
    from torch._dynamo.utils import counters

    return int(counters["frames"]["total"])
