"""The input sizes a model takes, found by shape-only trial forwards.

Each trial runs a fresh twin of the module whose parameters and buffers are
meta tensors (a shape, no data), on meta inputs: it costs no arithmetic and no
memory, a few milliseconds per layer whatever the size, and neither the module
nor the next trial sees what a forward pass may change in module state (some
adapt it to the input size, e.g. a Swin's window size in transformers).
"""
from __future__ import annotations

import copy
from itertools import chain
from typing import Callable

import torch

from .models import ModelInputs


def meta_twin(module: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of ``module`` whose parameters and buffers are meta tensors (no data is copied)."""
    memo: dict[int, torch.Tensor] = {}
    for tensor in chain(module.parameters(), module.buffers()):
        twin = torch.empty_like(tensor, device="meta")
        memo[id(tensor)] = (torch.nn.Parameter(twin, requires_grad=tensor.requires_grad)
                            if isinstance(tensor, torch.nn.Parameter) else twin)
    return copy.deepcopy(module, memo)


def size_range(module: torch.nn.Module, make_inputs: Callable[[int, int], object], reference: int, *,
               bisect: bool = True) -> tuple[int, int | None] | None:
    """``(smallest size, largest size or None)`` that ``module`` (in eval mode) takes, from trials at batch 1.

    ``make_inputs(size, batch_size)`` makes the inputs (as a ``LoadedModel``'s
    factory does); ``reference`` is a size the architecture is built for (e.g.
    torchvision's declared minimum, a ViT's ``image_size``). The sizes that fit
    are assumed to be one interval around it: the smallest is found by
    bisection below it (about log2(reference) trials; with ``bisect=False`` it
    is ``reference`` itself, a known minimum), and the interval is taken to end
    at ``reference`` when twice that does not fit (a model built for one size,
    such as a ViT without interpolated position embeddings). None when the
    trial at ``reference`` itself fails: the model cannot run on meta tensors
    (data-dependent code, quantized kernels) and nothing is known.
    """
    def fits(size: int) -> bool:
        inputs = ModelInputs.of(make_inputs(size, 1)).to("meta")
        try:
            with torch.no_grad():
                meta_twin(module)(*inputs.args, **inputs.kwargs)
        except Exception:  # noqa: BLE001 - any failure of the trial means this size does not fit
            return False
        return True

    if not fits(reference):
        return None
    low, high = (0 if bisect else reference - 1), reference  # high fits; low is taken not to
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if fits(middle) else (middle, high)
    return high, None if fits(2 * reference) else reference
