"""The models a sweep can measure, and the inputs of each input size and batch size.

A ``LoadedModel`` is a module (or any callable) in eval mode on the CPU, with an
input factory ``(input_size, batch_size) -> ModelInputs`` and what the size
means (pixels, tokens). ``load_model(name)`` builds the seed's models by name;
``user_model(module, input_factory)`` wraps the user's own.

Pretrained weights are used when they are already in the local torch or
Hugging Face cache (nothing is downloaded); otherwise the same architecture is
randomly initialised and the run's metadata says so. Energy and latency depend
on the architecture and the input size, not on the weight values.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence, Union

import torch

BERT_NAME = "bert-base-uncased"
BERT_MAX_TOKENS = 510  # 512 positions minus [CLS] and [SEP]
# bert-base-uncased vocabulary ids: the input is "yes " repeated n times.
CLS_ID, SEP_ID, YES_ID = 101, 102, 2748


class ModelError(ValueError):
    """A model or input size that cannot be measured (one-line message)."""


@dataclass(frozen=True)
class ModelInputs:
    """The positional and keyword tensors of one forward pass: ``module(*args, **kwargs)``."""

    args: tuple = ()
    kwargs: Mapping[str, object] = field(default_factory=dict)

    @classmethod
    def of(cls, value: object) -> "ModelInputs":
        """Inputs from what an input factory returned: a tensor, a tuple/list (positional), a dict (keyword)."""
        if isinstance(value, ModelInputs):
            return value
        if isinstance(value, torch.Tensor):
            return cls((value,))
        if isinstance(value, Mapping):
            return cls((), dict(value))
        if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
            return cls(tuple(value))
        raise ModelError(f"an input factory must return a tensor, a tuple of tensors or a dict of tensors, "
                         f"got {type(value).__name__}")

    def tensors(self) -> list[torch.Tensor]:
        return [v for v in (*self.args, *self.kwargs.values()) if isinstance(v, torch.Tensor)]

    def to(self, device: torch.device, dtype: torch.dtype | None = None) -> "ModelInputs":
        """On ``device``; floating-point tensors also cast to ``dtype`` when given (integer ids never are)."""
        def move(value):
            if not isinstance(value, torch.Tensor):
                return value
            cast = dtype if dtype is not None and value.is_floating_point() else None
            return value.to(device=device, dtype=cast)

        return ModelInputs(tuple(move(v) for v in self.args), {k: move(v) for k, v in self.kwargs.items()})

    @property
    def shape(self) -> list[int] | None:
        """The shape of the first tensor (the image batch, the token ids), for ``meta.json``."""
        tensors = self.tensors()
        return list(tensors[0].shape) if tensors else None


InputFactory = Callable[[int, int], Union[ModelInputs, torch.Tensor, tuple, list, dict]]


@dataclass
class LoadedModel:
    """A model ready to measure. ``task``: ``vision``, ``nlp`` or ``custom``; ``size_unit``: what
    ``input_size`` counts (``px``: image side; ``tokens``: sequence length)."""

    name: str
    task: str
    module: Callable
    weights: str  # "pretrained", "random", or "user" for a module the user built
    weights_notice: str | None
    make_inputs: InputFactory  # (input_size, batch_size) -> tensors on the CPU
    size_unit: str = "px"
    min_size: int = 1
    max_size: int | None = None

    def check_size(self, size: int) -> None:
        if size < self.min_size:
            raise ModelError(f"{self.name} needs an input of at least {self.min_size} {self.size_unit}, got {size}")
        if self.max_size is not None and size > self.max_size:
            raise ModelError(f"{self.name} takes at most {self.max_size} {self.size_unit}, got {size}")

    def inputs(self, size: int, batch_size: int, device: torch.device,
               dtype: torch.dtype | None = None) -> ModelInputs:
        """The inputs of one forward pass at ``size`` for a batch of ``batch_size``, on ``device``."""
        self.check_size(size)
        return ModelInputs.of(self.make_inputs(size, batch_size)).to(device, dtype)

    def __call__(self, inputs: ModelInputs):
        return self.module(*inputs.args, **inputs.kwargs)


def _image_input(size: int, batch_size: int) -> ModelInputs:
    generator = torch.Generator().manual_seed(size)
    return ModelInputs((torch.randn(batch_size, 3, size, size, generator=generator),))


def _bert_ids(tokens: int, batch_size: int) -> ModelInputs:
    ids = torch.tensor([[CLS_ID] + [YES_ID] * tokens + [SEP_ID]]).repeat(batch_size, 1)
    return ModelInputs((), {"input_ids": ids, "attention_mask": torch.ones_like(ids)})


def _torchvision(name: str, builder, weights_enum, min_size: int) -> LoadedModel:
    weights = weights_enum.DEFAULT
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if cached.exists():
        return LoadedModel(name, "vision", builder(weights=weights), "pretrained", None, _image_input, "px", min_size)
    notice = f"pretrained {name} weights not in the local cache ({cached.name}); using random weights"
    return LoadedModel(name, "vision", builder(weights=None), "random", notice, _image_input, "px", min_size)


def _alexnet() -> LoadedModel:
    from torchvision.models import AlexNet_Weights, alexnet

    return _torchvision("alexnet", alexnet, AlexNet_Weights, min_size=63)


def _resnet50() -> LoadedModel:
    from torchvision.models import ResNet50_Weights, resnet50

    return _torchvision("resnet50", resnet50, ResNet50_Weights, min_size=1)


def _bert() -> LoadedModel:
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    try:
        module = BertForSequenceClassification.from_pretrained(BERT_NAME, local_files_only=True)
        weights, notice = "pretrained", None
    except OSError:
        module = BertForSequenceClassification(BertConfig())  # bert-base-uncased architecture
        weights = "random"
        notice = f"pretrained {BERT_NAME} not in the local Hugging Face cache; using random weights"
    try:
        tokenizer = BertTokenizerFast.from_pretrained(BERT_NAME, local_files_only=True)
    except OSError:
        make_inputs = _bert_ids
    else:
        def make_inputs(tokens: int, batch_size: int) -> ModelInputs:
            encoded = tokenizer([" ".join(["yes"] * tokens)] * batch_size, return_tensors="pt")
            return ModelInputs((), {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]})
    return LoadedModel("bert", "nlp", module, weights, notice, make_inputs, "tokens", 1, BERT_MAX_TOKENS)


BUILDERS: dict[str, Callable[[], LoadedModel]] = {
    "alexnet": _alexnet,
    "resnet50": _resnet50,
    "bert": _bert,
}


def load_model(name: str) -> LoadedModel:
    """Build ``name`` in eval mode on the CPU; raise ``ModelError`` if unknown."""
    try:
        builder = BUILDERS[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; choose from {', '.join(BUILDERS)}") from None
    loaded = builder()
    loaded.module.eval()
    return loaded


def user_model(module: Callable, input_factory: InputFactory, *, name: str | None = None, task: str = "custom",
               size_unit: str = "px", min_size: int = 1, max_size: int | None = None) -> LoadedModel:
    """The user's own model: an ``nn.Module`` (put in eval mode) or any callable, and an input factory
    ``(input_size, batch_size) -> tensor | tuple of tensors | dict of tensors`` building CPU tensors."""
    if not callable(module):
        raise ModelError(f"a model must be an nn.Module or a callable, got {type(module).__name__}")
    if not callable(input_factory):
        raise ModelError("an input factory (input_size, batch_size) -> tensors is needed")
    if isinstance(module, torch.nn.Module):
        module.eval()
    label = name or (type(module).__name__ if isinstance(module, torch.nn.Module) else getattr(module, "__name__",
                                                                                                 "model"))
    return LoadedModel(label, task, module, "user", None, input_factory, size_unit, min_size, max_size)


def count_flops(loaded: LoadedModel, inputs: ModelInputs) -> int | None:
    """FLOPs of one forward pass (a multiply-add counts 2); None where torch cannot count them."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            loaded(inputs)
    except Exception:  # noqa: BLE001 - a callable FlopCounterMode cannot trace: FLOPs unknown, not a failed run
        return None
    return int(counter.get_total_flops())


def count_params(loaded: LoadedModel) -> int | None:
    """Parameters of an ``nn.Module``; None for a plain callable."""
    module = loaded.module
    return sum(p.numel() for p in module.parameters()) if isinstance(module, torch.nn.Module) else None
