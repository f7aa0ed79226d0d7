"""Hugging Face models by name: ``load_hf(name)`` for forward passes, ``load_decoder(name)`` for generation.

``name`` is, in this order:

1. a model id in the local Hugging Face cache (``bert-base-uncased``,
   ``openai-community/gpt2``) or a folder holding a saved model: its config,
   and its weights when they are there too (nothing is downloaded);
2. a ``transformers`` architecture (a key of ``transformers.CONFIG_MAPPING``:
   ``bert``, ``distilbert``, ``roberta``, ``gpt2``, ``llama``, ``vit``, ...):
   its default config (``GPT2Config()``) with random weights.

Either may end in ``:key=value,key=value``, fields of its config set to other
values, e.g. ``gpt2:n_layer=2,n_head=4,n_embd=128``: a smaller model of the
same architecture, always with random weights (the overrides are part of the
model's name, so every table says which configuration ran). Values are
integers, decimal numbers, ``true`` or ``false``; a key the config lacks is
refused with one line.

The kind of model, from its config's ``model_type`` and transformers' auto classes:

- ``decoder``: a causal language model that is not a masked one (GPT-2, Llama),
  built with its language-modelling head (``GPT2LMHeadModel``), task ``nlp``;
- ``encoder``: a text model with a sequence-classification head (BERT,
  DistilBERT, RoBERTa), built with that head like the seed's BERT, task ``nlp``;
- ``image``: an image classifier (ViT, DeiT, Swin, ConvNeXt), task ``vision``.

Encoder-decoder models (T5, BART, Whisper) and others are refused with one line.
Weights are float32 whatever the checkpoint holds (a sweep casts them);
random weights are drawn from seed 0.

Generation (``load_decoder``) takes a decoder only: its prompt of ``n`` tokens is
``prefix + [content] * (n - len(prefix))`` (``TokenIds.prompt``): GPT-2's is
``<|endoftext|>`` then ``n - 1`` fillers, with no attention mask (no padding), and the
prompt length goes up to ``max_position_embeddings``.

Text inputs are ``input_ids`` and ``attention_mask``, ``(batch, n + specials)``
int64: ``prefix + [content] * n + suffix`` (``TokenIds``). With a cached
tokenizer, ``content`` is the id of "yes" and the special tokens are those the
tokenizer adds around it (BERT: ``[CLS] yes … yes [SEP]``, as in the seed
study). Without one, ``content`` is ``FILLER_TOKEN_ID`` (1000, or the last id of
a smaller vocabulary) and the specials come from the config: ``bos_token_id``
first, and for encoders ``eos_token_id`` last, where the config sets them. The
input size is ``n`` tokens, at most ``max_position_embeddings`` minus the
specials (minus ``padding_idx + 1`` where positions are numbered after the
padding id, as in RoBERTa).

Image inputs are ``pixel_values``, ``(batch, num_channels, size, size)``
float32 (``models.image_batch``), with ``interpolate_pos_encoding=True`` where
the model's forward takes it, so that a ViT built for 224 px takes any size.
The sizes an image model takes come from shape-only trials
(``size_probe.size_range``, a few seconds at load): e.g. 16 px and up for
ViT-base (one patch), exactly 224 px for CLIP's vision tower.
"""
from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch

from .models import LoadedModel, ModelError, ModelInputs, image_batch, one_line
from .size_probe import size_range

FILLER_TOKEN_ID = 1000
BERT_NAME = "bert-base-uncased"
# bert-base-uncased vocabulary ids: the seed's input is "yes " repeated n times.
CLS_ID, SEP_ID, YES_ID = 101, 102, 2748
KIND_TASKS = {"decoder": "nlp", "encoder": "nlp", "image": "vision"}


@dataclass(frozen=True)
class TokenIds:
    """Token ids of ``n`` content tokens between a model's special tokens: ``prefix + [content_id] * n + suffix``.

    ``source`` says where the ids come from (``tokenizer`` or ``config``).
    """

    content_id: int
    prefix: tuple[int, ...] = ()
    suffix: tuple[int, ...] = ()
    source: str = "config"

    @property
    def specials(self) -> int:
        return len(self.prefix) + len(self.suffix)

    def __call__(self, tokens: int, batch_size: int) -> ModelInputs:
        """``input_ids`` and ``attention_mask`` (all ones), both ``(batch_size, tokens + specials)`` int64."""
        ids = torch.tensor([[*self.prefix, *[self.content_id] * tokens, *self.suffix]]).repeat(batch_size, 1)
        return ModelInputs((), {"input_ids": ids, "attention_mask": torch.ones_like(ids)})

    def prompt(self, tokens: int, batch_size: int) -> ModelInputs:
        """A generation's prompt of exactly ``tokens`` tokens: the prefix, then ``content_id`` to fill
        (``tokens`` at least ``len(prefix) + 1``); ``input_ids`` only, ``(batch_size, tokens)`` int64."""
        fill = tokens - len(self.prefix)
        if fill < 1:
            raise ModelError(f"a prompt needs at least {len(self.prefix) + 1} tokens here, got {tokens}")
        ids = torch.tensor([[*self.prefix, *[self.content_id] * fill]]).repeat(batch_size, 1)
        return ModelInputs((), {"input_ids": ids})

    def describe(self) -> str:
        return f"{list(self.prefix)} + [{self.content_id}] × n + {list(self.suffix)} (from the {self.source})"

    def describe_prompt(self) -> str:
        return f"{list(self.prefix)} + [{self.content_id}] × (n - {len(self.prefix)}) (from the {self.source})"

    @classmethod
    def from_tokenizer(cls, tokenizer, word: str = "yes") -> "TokenIds | None":
        """The ids of ``word`` (its last token) and of the special tokens the tokenizer adds around it;
        None when the tokenizer does not know the word (an empty vocabulary, which transformers builds for
        a model saved without its tokenizer) or its output does not hold the word's ids as they are."""
        plain = tokenizer(word, add_special_tokens=False)["input_ids"]
        full = tokenizer(word)["input_ids"]
        if not plain or tokenizer.unk_token_id in plain:
            return None
        for start in range(len(full) - len(plain) + 1):
            if full[start:start + len(plain)] == plain:
                return cls(plain[-1], tuple(full[:start]), tuple(full[start + len(plain):]), "tokenizer")
        return None

    @classmethod
    def from_config(cls, config, kind: str) -> "TokenIds":
        """``FILLER_TOKEN_ID`` between the special tokens of the config (its text part, for a multimodal
        one): ``bos_token_id`` first, and for an encoder ``eos_token_id`` last, each where it is set and inside
        the vocabulary (a config whose ``vocab_size`` was made smaller may keep ids beyond it)."""
        def first(value):
            return value[0] if isinstance(value, (list, tuple)) else value

        text = config.get_text_config()
        bos, eos = first(getattr(text, "bos_token_id", None)), first(getattr(text, "eos_token_id", None))
        prefix = (bos,) if bos is not None and bos < text.vocab_size else ()
        suffix = (eos,) if eos is not None and eos < text.vocab_size and kind == "encoder" else ()
        return cls(min(FILLER_TOKEN_ID, text.vocab_size - 1), prefix, suffix, "config")


@dataclass
class HFModel:
    """A transformers model built by ``build_hf``: the module (float32, eval mode, CPU), its config, its
    kind (``decoder``, ``encoder``, ``image``), where its weights come from, and for text its ``TokenIds``."""

    module: torch.nn.Module
    config: object
    kind: str
    weights: str  # "pretrained" or "random"
    weights_notice: str | None
    token_ids: TokenIds | None
    source: str  # where the model comes from, for the description


def _auto_names() -> dict[str, dict[str, object]]:
    from transformers.models.auto import modeling_auto as auto

    return {"causal": auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, "masked": auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES,
            "encoder": auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
            "image": auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES}


def kind_of(config, name: str) -> tuple[str, type]:
    """The kind of a config (``decoder``, ``encoder``, ``image``) and the transformers class built for it;
    ``ModelError`` (one line) for a model this package cannot give inputs to."""
    import transformers

    names = _auto_names()
    model_type = getattr(config, "model_type", "")
    if getattr(config, "is_encoder_decoder", False):
        raise ModelError(f"hf:{name} is an encoder-decoder model ({type(config).__name__}); only text encoders, "
                         "text decoders and image classifiers are supported")
    if model_type in names["causal"] and model_type not in names["masked"]:
        kind, class_name = "decoder", names["causal"][model_type]
    elif model_type in names["encoder"]:
        kind, class_name = "encoder", names["encoder"][model_type]
    elif model_type in names["image"]:
        kind, class_name = "image", names["image"][model_type]
    else:
        raise ModelError(f"hf:{name} ({type(config).__name__}) is neither a text encoder, a text decoder nor an "
                         "image classifier among transformers' auto classes; not supported")
    if isinstance(class_name, (list, tuple)):
        class_name = class_name[0]
    return kind, getattr(transformers, class_name)


_OVERRIDE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=[^,=:]+")


def split_name(name: str) -> tuple[str, dict[str, int | float | bool]]:
    """``gpt2:n_layer=2,n_embd=128`` -> ``("gpt2", {"n_layer": 2, "n_embd": 128})``; a name without
    config overrides -> ``(name, {})``. ``ModelError`` (one line) for a value that is not an integer, a
    decimal number, ``true`` or ``false``."""
    base, colon, spec = name.rpartition(":")
    items = spec.split(",")
    if not colon or not base or not all(_OVERRIDE.fullmatch(item) for item in items):
        return name, {}
    overrides: dict[str, int | float | bool] = {}
    for item in items:
        key, _, text = item.partition("=")
        overrides[key] = _config_value(name, key, text)
    return base, overrides


def _config_value(name: str, key: str, text: str) -> int | float | bool:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    raise ModelError(f"hf:{name}: {key}={text} is not an integer, a decimal number, true or false")


def resolve_config(name: str, fallback=None) -> tuple[object, bool]:
    """The config of ``name`` and whether it was found in the local cache (or a folder), with the config
    overrides the name ends with (``split_name``) applied.

    Not cached: ``fallback`` when given, else the default config of the
    transformers architecture ``name``; ``ModelError`` (one line) when it is
    neither, when an override names a key the config lacks, or when it names a
    model whose kind is not supported (``kind_of``).
    """
    from transformers import CONFIG_MAPPING, AutoConfig

    _quiet_transformers()
    base, overrides = split_name(name)
    try:
        config, cached = AutoConfig.from_pretrained(base, local_files_only=True), True
    except OSError:
        if fallback is not None:
            config, cached = fallback, False
        elif base in CONFIG_MAPPING:
            config, cached = CONFIG_MAPPING[base](), False
        else:
            raise ModelError(f"hf:{name}: no {base!r} in the local Hugging Face cache (nothing is downloaded) and "
                             "no transformers architecture of that name (e.g. bert, distilbert, roberta, gpt2, vit; "
                             "see transformers.CONFIG_MAPPING)") from None
    for key, value in overrides.items():
        if not hasattr(config, key):
            raise ModelError(f"hf:{name}: {type(config).__name__} has no {key!r} to set")
        setattr(config, key, value)
    kind_of(config, name)
    return config, cached


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # a head initialised on a pretrained body is expected, not news
    hf_logging.disable_progress_bar()  # loading local files needs no progress bar


def build_hf(name: str, fallback=None) -> HFModel:
    """Build ``name`` (see the module's docstring) in float32, eval mode, on the CPU.

    ``fallback``: the config to use, with random weights, when ``name`` is not
    cached (default: the architecture ``name``'s default config). A name with
    config overrides always gets random weights. Raises ``ModelError`` (one
    line) for an unknown or unsupported name, or overrides the architecture
    cannot be built with.
    """
    config, cached = resolve_config(name, fallback)
    base, overrides = split_name(name)
    kind, model_class = kind_of(config, name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = _cached_model(model_class, base) if cached and not overrides else None
        weights = "pretrained" if module is not None else "random"
        if module is None:
            try:
                module = model_class(config).to(torch.float32)
            except (ValueError, TypeError, AssertionError, RuntimeError) as error:
                raise ModelError(f"hf:{name}: {type(config).__name__} cannot be built with "
                                 f"{_listed(overrides)}: {one_line(error)}") from None
    module.eval()
    changed = f" with {_listed(overrides)}" if overrides else ""
    if not cached:
        source = f"default {type(config).__name__}(){changed}"
        notice = (f"pretrained {base} not in the local Hugging Face cache; "
                  f"using random weights with transformers' {source}")
    elif weights == "random":
        source = f"{base}'s cached config{changed}"
        notice = (f"config overrides given ({_listed(overrides)}); using random weights" if overrides else
                  f"the weights of {base} are not in the local Hugging Face cache (its config is); "
                  "using random weights")
    else:
        source, notice = f"{base} from the local cache", None
    token_ids = None
    if kind != "image":
        tokenizer = _cached_tokenizer(base) if cached else None
        token_ids = (TokenIds.from_tokenizer(tokenizer) if tokenizer is not None else None)
        vocab = config.get_text_config().vocab_size
        if token_ids is None or max(token_ids.content_id, *token_ids.prefix, *token_ids.suffix) >= vocab:
            token_ids = TokenIds.from_config(config, kind)
    return HFModel(module, config, kind, weights, notice, token_ids, source)


def _listed(overrides: dict) -> str:
    return ", ".join(f"{key}={value}" for key, value in overrides.items())


def _cached_model(model_class: type, name: str) -> torch.nn.Module | None:
    try:
        return model_class.from_pretrained(name, local_files_only=True, dtype=torch.float32)
    except OSError:  # the config is cached, the weights are not
        return None


def _cached_tokenizer(name: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError, ImportError):  # none cached, or one this installation cannot read
        return None


def max_tokens(model: HFModel) -> int | None:
    """The most content tokens ``model`` takes: its position table minus the special tokens and, where
    positions are numbered after the padding id (RoBERTa), ``padding_idx + 1``; None without a table."""
    positions = getattr(model.config.get_text_config(), "max_position_embeddings", None)
    if positions is None:
        return None
    offset = next((sub.padding_idx + 1 for path, sub in model.module.named_modules()
                   if path.endswith("position_embeddings") and isinstance(sub, torch.nn.Embedding)
                   and sub.padding_idx is not None), 0)
    return positions - model.token_ids.specials - offset


def _pixel_inputs(channels: int, interpolate: bool, size: int, batch_size: int) -> ModelInputs:
    kwargs: dict[str, object] = {"pixel_values": image_batch(size, batch_size, channels)}
    if interpolate:
        kwargs["interpolate_pos_encoding"] = True
    return ModelInputs((), kwargs)


def loaded_hf(label: str, model: HFModel) -> LoadedModel:
    """``model`` as a ``LoadedModel`` called ``label``: a forward pass on ``TokenIds`` or pixels."""
    task = KIND_TASKS[model.kind]
    description = f"{type(model.module).__name__} ({model.source})"
    if model.kind != "image":
        return LoadedModel(label, task, model.module, model.weights, model.weights_notice, model.token_ids,
                           "tokens", 1, max_tokens(model), description=f"{description}; input ids "
                                                                      f"{model.token_ids.describe()}")
    vision = getattr(model.config, "vision_config", None) or model.config
    channels = getattr(vision, "num_channels", 3)
    reference = getattr(vision, "image_size", 224)
    reference = reference[0] if isinstance(reference, (list, tuple)) else reference
    interpolate = "interpolate_pos_encoding" in inspect.signature(model.module.forward).parameters
    make_inputs: Callable[[int, int], ModelInputs] = partial(_pixel_inputs, channels, interpolate)
    low, high = size_range(model.module, make_inputs, reference) or (1, None)
    return LoadedModel(label, task, model.module, model.weights, model.weights_notice, make_inputs, "px", low, high,
                       description=f"{description}; pixel_values with {channels} channels"
                                   f"{', interpolate_pos_encoding=True' if interpolate else ''}")


def load_hf(name: str) -> LoadedModel:
    """``hf:<name>`` as a ``LoadedModel`` (see the module's docstring); ``ModelError`` (one line) if unknown."""
    return loaded_hf(f"hf:{name}", build_hf(name))


def load_decoder(name: str) -> LoadedModel:
    """``hf:<name>`` for the generate task (``measure.generation``): a decoder with its language-modelling head,
    task ``generate``, whose input of ``n`` tokens is a prompt of exactly ``n`` tokens (``TokenIds.prompt``), up
    to ``max_position_embeddings`` (the new tokens need positions too: ``generation.check_lengths``).
    ``ModelError`` (one line) for an unknown name or a model that is not a decoder."""
    model = build_hf(name)
    if model.kind != "decoder":
        raise ModelError(f"hf:{name} is an {model.kind} model ({type(model.module).__name__}); the generate task "
                         "needs a text decoder (a causal language model such as gpt2 or llama)")
    positions = getattr(model.config.get_text_config(), "max_position_embeddings", None)
    return LoadedModel(f"hf:{name}", "generate", model.module, model.weights, model.weights_notice,
                       model.token_ids.prompt, "tokens", len(model.token_ids.prefix) + 1, positions,
                       description=f"{type(model.module).__name__} ({model.source}); prompt ids "
                                   f"{model.token_ids.describe_prompt()}")


def load_seed_bert() -> LoadedModel:
    """The seed study's ``bert``: BertForSequenceClassification, bert-base-uncased's weights when cached
    (else its architecture, ``BertConfig()``, with random weights), on ``[CLS] + yes × n + [SEP]``, 1..510 tokens."""
    from transformers import BertConfig

    model = build_hf(BERT_NAME, fallback=BertConfig())
    if model.token_ids.source != "tokenizer":
        model.token_ids = TokenIds(YES_ID, (CLS_ID,), (SEP_ID,), "bert-base-uncased vocabulary")
    return loaded_hf("bert", model)
