"""The studied architectures and the inputs of each input size.

Pretrained weights are used when they are already in the local torch or
Hugging Face cache (nothing is downloaded); otherwise the same architecture is
randomly initialised and the run's metadata says so. Energy and latency depend
on the architecture and the input size, not on the weight values.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

BERT_NAME = "bert-base-uncased"
BERT_MAX_TOKENS = 510  # 512 positions minus [CLS] and [SEP]
# bert-base-uncased vocabulary ids: the input is "yes " repeated n times.
CLS_ID, SEP_ID, YES_ID = 101, 102, 2748


class ModelError(ValueError):
    """A model or input size that cannot be measured (one-line message)."""


@dataclass
class LoadedModel:
    name: str
    task: str  # "vision" or "nlp"
    module: torch.nn.Module
    weights: str  # "pretrained" or "random"
    weights_notice: str | None
    make_input: Callable[[int], dict[str, torch.Tensor]]
    min_size: int
    max_size: int | None

    def check_size(self, size: int) -> None:
        unit = "px" if self.task == "vision" else "tokens"
        if size < self.min_size:
            raise ModelError(f"{self.name} needs an input of at least {self.min_size} {unit}, got {size}")
        if self.max_size is not None and size > self.max_size:
            raise ModelError(f"{self.name} takes at most {self.max_size} {unit}, got {size}")

    def inputs(self, size: int, device: torch.device) -> dict[str, torch.Tensor]:
        self.check_size(size)
        return {k: v.to(device) for k, v in self.make_input(size).items()}


def _image_input(size: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(size)
    return {"x": torch.randn(1, 3, size, size, generator=generator)}


def _bert_input(tokens: int) -> dict[str, torch.Tensor]:
    ids = torch.tensor([[CLS_ID] + [YES_ID] * tokens + [SEP_ID]])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _torchvision(name: str, builder, weights_enum, min_size: int) -> LoadedModel:
    weights = weights_enum.DEFAULT
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if cached.exists():
        module = builder(weights=weights)
        return LoadedModel(name, "vision", module, "pretrained", None, _image_input, min_size, None)
    notice = f"pretrained {name} weights not in the local cache ({cached.name}); using random weights"
    return LoadedModel(name, "vision", builder(weights=None), "random", notice, _image_input, min_size, None)


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
        make_input = _bert_input
    else:
        def make_input(tokens: int) -> dict[str, torch.Tensor]:
            encoded = tokenizer(" ".join(["yes"] * tokens), return_tensors="pt")
            return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
    return LoadedModel("bert", "nlp", module, weights, notice, make_input, 1, BERT_MAX_TOKENS)


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


def count_flops(module: torch.nn.Module, inputs: dict[str, torch.Tensor]) -> int:
    """FLOPs of one forward pass (a multiply-add counts 2)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        module(**inputs)
    return int(counter.get_total_flops())


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
