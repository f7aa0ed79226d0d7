"""The generate task: greedy decoding written out, each token timed, the prefill/decode boundary sampled.

One request of a batch: a prompt of ``N`` tokens for each of ``B`` sequences
(``hf_models.TokenIds.prompt``), exactly ``M`` new tokens each. The loop is
written here rather than left to ``model.generate`` so that the boundary and
every token are timed where they happen:

1. *prefill*: one forward pass over the prompt with the KV cache on
   (``use_cache=True``; only the last position's logits are computed where the
   model takes ``logits_to_keep``, as ``generate`` does), the first token by
   argmax;
2. the *boundary*: a callback (``Recorder.split`` inside a measured window)
   runs right after the first token, synchronised;
3. *decode*: ``M - 1`` steps, each a forward pass of the previous token with
   the cache, then argmax.

Greedy, end of sequence disabled: the end-of-sequence ids of the model's
generation config get ``-inf`` before every argmax, as ``generate`` does under
``min_new_tokens``, so exactly ``M`` tokens come out and the result is
``model.generate(..., do_sample=False, min_new_tokens=M, max_new_tokens=M)``'s.
Every clock read follows a synchronisation of the device (``sync``): a step's
latency is its work, on a GPU included.

What a window holds (``measure_window``): warm-up requests run before it, then
the recorder's ``start`` sample, one request with a ``split`` sample at its
boundary, and the ``end`` sample right after its last token. One request per
window keeps each phase one contiguous interval between two synchronous
samples, so a counter gives each phase's energy the way it gives a window's,
with the same checks, and the two phases add up to the window; runs repeat the
request for medians and confidence intervals. ``meta.json`` names the phases
(``PHASES``), ``latency.csv`` holds the request's latency and ``tokens.csv``
each token's time and step latency (docs/run-tree.md).
"""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from .models import LoadedModel, ModelError, ModelInputs

PHASES = ("prefill", "decode")  # the phases of a generation window, between start, split and end


@dataclass(frozen=True)
class Generated:
    """One request: ``tokens``, the new ids ``(batch, new_tokens)`` int64 on the CPU; per token ``t_s``, seconds
    from the request's start to the token being ready, and ``latency_s``, seconds of the step that made it (the
    prefill's for token 0: the time to first token; one decode step's for the others); and the KV cache at
    the end (``cache_type``, ``cache_mib``: its tensors' size, None where they cannot be found)."""

    tokens: torch.Tensor
    t_s: np.ndarray
    latency_s: np.ndarray
    cache_type: str
    cache_mib: float | None

    @property
    def request_s(self) -> float:
        """Seconds from the request's start to its last token."""
        return float(self.t_s[-1])


class Decoder:
    """A causal language model called step by step: ``prefill(input_ids)`` and ``step(token_ids, cache)``, each
    returning ``(next token ids (batch, 1), cache)``, end of sequence suppressed. ``module``: a transformers
    causal LM (``GPT2LMHeadModel``, ``LlamaForCausalLM``, ...); its cache argument is ``cache`` in recent
    transformers and ``past_key_values`` before."""

    def __init__(self, module: torch.nn.Module):
        self.module = module
        parameters = inspect.signature(module.forward).parameters
        self.cache_argument = "cache" if "cache" in parameters else "past_key_values"
        self.last_only = {"logits_to_keep": 1} if "logits_to_keep" in parameters else {}
        self.eos_ids = end_of_sequence_ids(module)

    def prefill(self, input_ids: torch.Tensor):
        output = self.module(input_ids=input_ids, use_cache=True, **self.last_only)
        return self._next(output), self._cache(output)

    def step(self, token_ids: torch.Tensor, cache):
        output = self.module(input_ids=token_ids, use_cache=True, **{self.cache_argument: cache})
        return self._next(output), self._cache(output)

    def _next(self, output) -> torch.Tensor:
        logits = output.logits[:, -1, :]
        if self.eos_ids:
            logits[:, self.eos_ids] = float("-inf")
        return logits.argmax(dim=-1, keepdim=True)

    @staticmethod
    def _cache(output):
        return output.cache if hasattr(output, "cache") else output.past_key_values


def end_of_sequence_ids(module: torch.nn.Module) -> list[int]:
    """The end-of-sequence token ids of a transformers model (its generation config's, else its config's) that
    its vocabulary holds (an id beyond it can never come out)."""
    vocab = getattr(getattr(module, "config", None), "vocab_size", None)
    for config in (getattr(module, "generation_config", None), getattr(module, "config", None)):
        value = getattr(config, "eos_token_id", None)
        if value is not None:
            ids = [int(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
            return [i for i in ids if vocab is None or 0 <= i < vocab]
    return []


def generate(decoder: Decoder, input_ids: torch.Tensor, new_tokens: int, sync: Callable[[], None],
             boundary: Callable[[], object] = lambda: None, end: Callable[[], object] = lambda: None,
             between: Callable[[], object] = lambda: None) -> Generated:
    """Generate ``new_tokens`` (at least 1) tokens greedily for ``input_ids`` ``(batch, prompt)``, timing each.

    ``sync`` waits for the device (``torch.cuda.synchronize`` on a GPU) and
    runs before every clock read; ``boundary`` runs after the first token, its
    synchronisation and its clock read, before the first decode step (its own
    time is in no token's latency, and in the request's); ``end`` runs right
    after the last token's clock read, before anything else; ``between`` runs
    after each decode step's clock read but the last (``Recorder.poll``: a
    loop tick, in no token's latency). Call inside
    ``torch.inference_mode()``.
    """
    clock = time.perf_counter
    t_s, latency_s = np.empty(new_tokens), np.empty(new_tokens)
    tokens = []
    start = clock()
    token, cache = decoder.prefill(input_ids)
    sync()
    t_s[0] = latency_s[0] = clock() - start
    tokens.append(token)
    boundary()
    for k in range(1, new_tokens):
        began = clock()
        token, cache = decoder.step(token, cache)
        sync()
        ended = clock()
        t_s[k], latency_s[k] = ended - start, ended - began
        tokens.append(token)
        if k < new_tokens - 1:
            between()
    end()
    return Generated(torch.cat(tokens, dim=1).cpu(), t_s, latency_s, type(cache).__name__, cache_mib(cache))


def cache_mib(cache) -> float | None:
    """MiB held by the key and value tensors of a transformers KV cache (a ``DynamicCache``'s layers, or the
    legacy tuples of tuples); None when no tensor is found in it."""
    layers = getattr(cache, "layers", None)
    if layers is not None:
        tensors = [t for layer in layers for t in (getattr(layer, "keys", None), getattr(layer, "values", None))]
    elif hasattr(cache, "key_cache"):
        tensors = [*cache.key_cache, *cache.value_cache]
    elif isinstance(cache, (list, tuple)):
        tensors = [t for layer in cache for t in layer]
    else:
        tensors = []
    tensors = [t for t in tensors if isinstance(t, torch.Tensor)]
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20 if tensors else None


def check_lengths(loaded: LoadedModel, sizes: Sequence[int], new_tokens: Sequence[int]) -> None:
    """Raise ``ModelError`` (one line) unless every prompt length of ``sizes`` with every count of
    ``new_tokens`` fits the model's positions: a prompt of N tokens and M new tokens take N + M - 1 (the
    last token is never fed back)."""
    if loaded.task != "generate":
        raise ModelError(f"{loaded.name} was not loaded for generation; use "
                         f"measure.models.load_model({loaded.name!r}, task='generate')")
    for size in sizes:
        loaded.check_size(size)
    if loaded.max_size is None:
        return
    longest = max(sizes) + max(new_tokens) - 1
    if longest > loaded.max_size:
        raise ModelError(f"{loaded.name} has {loaded.max_size} positions: a prompt of {max(sizes)} tokens and "
                         f"{max(new_tokens)} new tokens need {longest}")


@dataclass(frozen=True)
class Window:
    """What ``measure_window`` measured: the request (``Generated``), the recorder's window and the ``t_s`` of
    its ``split`` sample (s since the ``start`` sample)."""

    generated: Generated
    window: object
    split_s: float


def measure_window(decoder: Decoder, inputs: ModelInputs, new_tokens: int, warmup: int, sync: Callable[[], None],
                   recorder) -> Window:
    """Run ``warmup`` untimed requests, then one request inside ``recorder``'s window (``start`` before it,
    ``split`` at its boundary, ``end`` after its last token). Call inside ``torch.inference_mode()``; the
    recorder is stopped whatever happens."""
    input_ids = inputs.kwargs["input_ids"]
    for _ in range(warmup):
        generate(decoder, input_ids, new_tokens, sync)
    sync()
    split, windows, stopping = [], [], []

    def stop() -> None:
        stopping.append(True)  # before stop(), which may raise: never called twice
        windows.append(recorder.stop())

    recorder.start()
    try:
        generated = generate(decoder, input_ids, new_tokens, sync, lambda: split.append(recorder.split()), stop,
                             recorder.poll)
    finally:
        if not stopping:
            recorder.stop()
    return Window(generated, windows[0], split[0])


def count_flops(decoder: Decoder, inputs: ModelInputs, new_tokens: int) -> int | None:
    """FLOPs of one whole request (the prefill and every decode step, the batch included; a multiply-add
    counts 2), from ``torch.utils.flop_counter.FlopCounterMode``; None where it counts nothing."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            generate(decoder, inputs.kwargs["input_ids"], new_tokens, lambda: None)
    except Exception:  # noqa: BLE001 - a model FlopCounterMode cannot trace: FLOPs unknown, not a failed run
        return None
    return int(counter.get_total_flops()) or None
