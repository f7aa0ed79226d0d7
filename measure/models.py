"""The models a sweep can measure, and the inputs of each input size and batch size.

A ``LoadedModel`` is a module (or any callable) in eval mode on the CPU, with an
input factory ``(input_size, batch_size) -> ModelInputs`` and what the size
means (pixels, tokens). ``load_model(name)`` builds a model by name:

- ``alexnet``, ``resnet50``, ``bert``: the seed study's models;
- ``torchvision:<name>``: any of ``torchvision.models.list_models()`` (``measure.tv_models``);
- ``hf:<id or architecture>``: a Hugging Face model in the local cache, or a
  ``transformers`` architecture with its default configuration, optionally with
  config overrides (``hf:gpt2:n_layer=2,n_head=4,n_embd=128``; ``measure.hf_models``).

``load_model(name, task="generate")`` builds a Hugging Face decoder for the
generate task (``measure.generation``) instead of one forward pass.

``user_model(module, input_factory)`` wraps the user's own. ``model_help()`` is
the text that lists these families.

Pretrained weights are used when they are already in the local torch or
Hugging Face cache (nothing is downloaded); otherwise the same architecture is
randomly initialised (from a fixed seed) and the model's ``weights_notice``
says so. Energy and latency depend on the architecture and the input size, not
on the weight values.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence, Union

import torch

TORCHVISION_PREFIX = "torchvision:"
HF_PREFIX = "hf:"


class ModelError(ValueError):
    """A model or input size that cannot be measured (one-line message)."""


@dataclass(frozen=True)
class ModelInputs:
    """The positional and keyword inputs of one forward pass: ``module(*args, **kwargs)``.

    Values are tensors, lists of tensors (a detection model's images) or plain
    values passed as they are (a flag such as ``interpolate_pos_encoding=True``).
    """

    args: tuple = ()
    kwargs: Mapping[str, object] = field(default_factory=dict)

    @classmethod
    def of(cls, value: object) -> "ModelInputs":
        """Inputs from what an input factory returned: a tensor, a tuple/list (positional), a dict (keyword).

        Raises ``ModelError`` for anything else, or a dict whose keys are not strings.
        """
        if isinstance(value, ModelInputs):
            return value
        if isinstance(value, torch.Tensor):
            return cls((value,))
        if isinstance(value, Mapping):
            if not all(isinstance(key, str) for key in value):
                raise ModelError(f"an input factory's dict must have argument names as keys, got {list(value)!r}")
            return cls((), dict(value))
        if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
            return cls(tuple(value))
        raise ModelError(f"an input factory must return a tensor, a tuple of tensors or a dict of tensors, "
                         f"got {type(value).__name__}")

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor, in argument order (those inside a list or tuple argument included)."""
        found = []
        for value in (*self.args, *self.kwargs.values()):
            if isinstance(value, torch.Tensor):
                found.append(value)
            elif isinstance(value, (list, tuple)):
                found.extend(v for v in value if isinstance(v, torch.Tensor))
        return found

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "ModelInputs":
        """On ``device``; floating-point tensors also cast to ``dtype`` when given (integer ids never are)."""
        def move(value):
            if isinstance(value, (list, tuple)):
                return type(value)(move(v) for v in value)
            if not isinstance(value, torch.Tensor):
                return value
            cast = dtype if dtype is not None and value.is_floating_point() else None
            return value.to(device=device, dtype=cast)

        return ModelInputs(tuple(move(v) for v in self.args), {k: move(v) for k, v in self.kwargs.items()})

    @property
    def shape(self) -> list[int] | None:
        """The shape of the first input, for ``meta.json``: the image batch, the token ids; a list of
        same-shape tensors (a detection model's images) counts as their stack ``[len, *shape]``."""
        for value in (*self.args, *self.kwargs.values()):
            if isinstance(value, torch.Tensor):
                return list(value.shape)
            if isinstance(value, (list, tuple)) and value and all(isinstance(v, torch.Tensor) for v in value):
                shapes = {tuple(v.shape) for v in value}
                return [len(value), *shapes.pop()] if len(shapes) == 1 else None
        return None


InputFactory = Callable[[int, int], Union[ModelInputs, torch.Tensor, tuple, list, dict]]


@dataclass
class LoadedModel:
    """A model ready to measure.

    ``task``: ``vision`` (images), ``video`` (clips), ``nlp`` (tokens) or ``custom``;
    ``size_unit``: what ``input_size`` counts (``px``: image or frame side;
    ``tokens``: sequence length without the special tokens); the sizes it takes
    are ``min_size..max_size`` (``None``: no upper bound) in steps of
    ``size_multiple``; ``description``: one line saying what exactly runs.
    """

    name: str
    task: str
    module: Callable
    weights: str  # "pretrained", "random", or "user" for a module the user built
    weights_notice: str | None
    make_inputs: InputFactory  # (input_size, batch_size) -> inputs on the CPU
    size_unit: str = "px"
    min_size: int = 1
    max_size: int | None = None
    size_multiple: int = 1
    description: str = ""

    def check_size(self, size: int) -> None:
        """Raise ``ModelError`` (one line) if this model cannot take an input of ``size``."""
        if size < self.min_size:
            raise ModelError(f"{self.name} needs an input of at least {self.min_size} {self.size_unit}, got {size}")
        if self.max_size is not None and size > self.max_size:
            raise ModelError(f"{self.name} takes at most {self.max_size} {self.size_unit}, got {size}")
        if size % self.size_multiple:
            raise ModelError(f"{self.name} takes a multiple of {self.size_multiple} {self.size_unit}, got {size}")

    def inputs(self, size: int, batch_size: int, device: torch.device | str,
               dtype: torch.dtype | None = None) -> ModelInputs:
        """The inputs of one forward pass at ``size`` for a batch of ``batch_size``, on ``device``.

        Raises ``ModelError`` (one line) for a size out of range or an input factory that fails.
        """
        self.check_size(size)
        try:
            made = self.make_inputs(size, batch_size)
        except Exception as error:  # noqa: BLE001 - the user's factory: any failure is one line, not a traceback
            raise ModelError(f"the input factory of {self.name} failed at size {size}, batch {batch_size}: "
                             f"{one_line(error)}") from error
        return ModelInputs.of(made).to(device, dtype)

    def __call__(self, inputs: ModelInputs):
        return self.module(*inputs.args, **inputs.kwargs)


def one_line(error: BaseException) -> str:
    """``Type: first line of the message``."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


def image_batch(size: int, batch_size: int, channels: int = 3) -> torch.Tensor:
    """A batch of ``size`` × ``size`` images, shape ``(batch_size, channels, size, size)``, float32,
    standard normal values drawn from a generator seeded by ``size`` (the same images at every run)."""
    generator = torch.Generator().manual_seed(size)
    return torch.randn(batch_size, channels, size, size, generator=generator)


def _alexnet() -> LoadedModel:
    from .tv_models import load_torchvision

    return load_torchvision("alexnet", label="alexnet")


def _resnet50() -> LoadedModel:
    from .tv_models import load_torchvision

    return load_torchvision("resnet50", label="resnet50")


def _bert() -> LoadedModel:
    from .hf_models import load_seed_bert

    return load_seed_bert()


# The seed study's models: torchvision's AlexNet (63 px and up) and ResNet50, and
# BertForSequenceClassification with the bert-base-uncased architecture (1..510 tokens).
BUILDERS: dict[str, Callable[[], LoadedModel]] = {
    "alexnet": _alexnet,
    "resnet50": _resnet50,
    "bert": _bert,
}

FAMILIES = (
    ("alexnet, resnet50, bert", "the seed study's models (torchvision AlexNet and ResNet50 in px; "
                                "BERT-base for sequence classification in tokens, 1..510)"),
    ("torchvision:<name>", "any of torchvision.models.list_models(), e.g. torchvision:mobilenet_v3_small: "
                           "images (classification, segmentation, detection, optical flow) or 16-frame clips "
                           "(video), sized in px"),
    ("hf:<id>", "a Hugging Face model in the local cache (or a saved model's folder), "
                "e.g. hf:bert-base-uncased: text encoders and decoders sized in tokens, image classifiers in px"),
    ("hf:<architecture>", "a transformers architecture with its default config and random weights, "
                          "e.g. hf:gpt2, hf:distilbert, hf:roberta, hf:vit (used when no such id is cached)"),
    ("hf:<name>:<key>=<v>,...", "the same with fields of its config changed (random weights), e.g. a small GPT-2: "
                                "hf:gpt2:n_layer=2,n_head=4,n_embd=128"),
)


SEED_UNITS = {"alexnet": "px", "resnet50": "px", "bert": "tokens"}


def model_help() -> str:
    """The model families, one per line, for the command line's ``--help``."""
    width = max(len(pattern) for pattern, _ in FAMILIES)
    return "\n".join(f"{pattern.ljust(width)}  {meaning}" for pattern, meaning in FAMILIES)


def unknown_model(name: str) -> ModelError:
    return ModelError(f"unknown model {name!r}; use {', '.join(BUILDERS)}, {TORCHVISION_PREFIX}<name> "
                      f"(see torchvision.models.list_models()), or {HF_PREFIX}<id or architecture> "
                      f"(e.g. hf:gpt2, hf:distilbert)")


def load_model(name: str, task: str = "forward") -> LoadedModel:
    """Build ``name`` in eval mode on the CPU (see the module's docstring for the names), for ``task``:
    ``forward`` (one forward pass per inference) or ``generate`` (an ``hf:`` decoder, ``hf_models.load_decoder``).

    Raises ``ModelError`` (one line) for an unknown name, a model whose
    inputs this package cannot make, or one the task cannot run.
    """
    if task == "generate":
        if not name.startswith(HF_PREFIX):
            raise ModelError(f"the generate task runs Hugging Face decoders, named hf:<id or architecture> "
                             f"(e.g. hf:gpt2), got {name!r}")
        from .hf_models import load_decoder

        loaded = load_decoder(name[len(HF_PREFIX):])
        loaded.module.eval()
        return loaded
    if name in BUILDERS:
        loaded = BUILDERS[name]()
    elif name.startswith(TORCHVISION_PREFIX):
        from .tv_models import load_torchvision

        loaded = load_torchvision(name[len(TORCHVISION_PREFIX):])
    elif name.startswith(HF_PREFIX):
        from .hf_models import load_hf

        loaded = load_hf(name[len(HF_PREFIX):])
    else:
        raise unknown_model(name)
    loaded.module.eval()
    return loaded


def check_model_name(name: str) -> str:
    """``name`` if ``load_model`` can build it, checked without building it (for argument parsers).

    Raises ``ModelError`` (one line) otherwise. An ``hf:`` name reads its
    configuration (from the local cache, or transformers' defaults).
    """
    if name in BUILDERS:
        return name
    if name.startswith(TORCHVISION_PREFIX):
        from .tv_models import family_of

        family_of(name[len(TORCHVISION_PREFIX):])
        return name
    if name.startswith(HF_PREFIX):
        from .hf_models import resolve_config

        resolve_config(name[len(HF_PREFIX):])
        return name
    raise unknown_model(name)


def size_unit_of(name: str) -> str:
    """What ``input_size`` counts for model ``name``: ``px`` (image side) or ``tokens``, found without
    building the model; ``ModelError`` (one line) for a name ``load_model`` cannot build."""
    check_model_name(name)
    if name in SEED_UNITS:
        return SEED_UNITS[name]
    if name.startswith(HF_PREFIX):
        from .hf_models import kind_of, resolve_config

        config, _ = resolve_config(name[len(HF_PREFIX):])
        return "px" if kind_of(config, name[len(HF_PREFIX):])[0] == "image" else "tokens"
    return "px"


def user_model(module: Callable, input_factory: InputFactory, *, name: str | None = None, task: str = "custom",
               size_unit: str = "px", min_size: int = 1, max_size: int | None = None) -> LoadedModel:
    """The user's own model: an ``nn.Module`` (put in eval mode) or any callable, and an input factory
    ``(input_size, batch_size) -> tensor | tuple of tensors | dict of tensors`` building CPU tensors
    whose first dimension is the batch. A tensor or a tuple is passed positionally, a dict by keyword.

    The factory is tried once at ``min_size`` for batches of 1 and 2; a factory
    that fails, returns something else or ignores the batch size raises
    ``ModelError`` (one line), as does a module that is not callable.

    >>> import torch
    >>> from measure.models import count_flops, user_model
    >>> mlp = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    >>> loaded = user_model(mlp, lambda size, batch: torch.randn(batch, size), name="mlp", min_size=16, max_size=16)
    >>> inputs = loaded.inputs(16, batch_size=2, device="cpu")
    >>> inputs.shape, loaded(inputs).shape, count_flops(loaded, inputs)
    ([2, 16], torch.Size([2, 4]), 2560)
    >>> def tokens(size, batch):  # keyword inputs
    ...     return {"input_ids": torch.ones(batch, size, dtype=torch.long)}
    >>> embed = user_model(lambda input_ids: input_ids.sum(-1), tokens, name="sum", size_unit="tokens")
    >>> embed(embed.inputs(5, 3, "cpu")).tolist()
    [5, 5, 5]
    """
    if not callable(module):
        raise ModelError(f"a model must be an nn.Module or a callable, got {type(module).__name__}")
    if not callable(input_factory):
        raise ModelError("an input factory (input_size, batch_size) -> tensors is needed")
    if isinstance(module, torch.nn.Module):
        module.eval()
    label = name or (type(module).__name__ if isinstance(module, torch.nn.Module)
                     else getattr(module, "__name__", "model"))
    loaded = LoadedModel(label, task, module, "user", None, input_factory, size_unit, min_size, max_size,
                         description=f"the user's {type(module).__name__}")
    for batch_size in (1, 2):
        inputs = loaded.inputs(min_size, batch_size, "cpu")
        if not inputs.tensors():
            raise ModelError(f"the input factory of {label} returned no tensor")
        if inputs.shape is not None and inputs.shape[:1] != [batch_size]:
            raise ModelError(f"the input factory of {label} must put the batch first: shape "
                             f"{inputs.shape} for a batch of {batch_size}")
    return loaded


def count_flops(loaded: LoadedModel, inputs: ModelInputs) -> int | None:
    """FLOPs of one forward pass on ``inputs`` (the whole batch; a multiply-add counts 2).

    None where torch's ``FlopCounterMode`` cannot trace the model, or counts
    nothing (it counts matrix products, convolutions and attention; quantized
    kernels are not among them).
    """
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            loaded(inputs)
    except Exception:  # noqa: BLE001 - a callable FlopCounterMode cannot trace: FLOPs unknown, not a failed run
        return None
    return int(counter.get_total_flops()) or None


def count_params(loaded: LoadedModel) -> int | None:
    """Parameters of an ``nn.Module``; None for a plain callable, or a quantized model (its weights are
    packed inside quantized kernels, not parameters)."""
    module = loaded.module
    if not isinstance(module, torch.nn.Module):
        return None
    count = sum(p.numel() for p in module.parameters())
    quantized = any(isinstance(t, torch.Tensor) and t.is_quantized for t in module.state_dict().values())
    return None if quantized and not count else count
