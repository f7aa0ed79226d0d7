"""torchvision's models by name: ``load_torchvision(name)`` for any of ``torchvision.models.list_models()``.

Inputs by family (sizes in px, the side of square images or frames):

- classification, segmentation, quantization: an image batch ``(batch, 3, size, size)``;
- detection: a list of ``batch`` images ``(3, size, size)``, torchvision's
  convention; these models resize every image to their own working size inside
  the forward pass (e.g. 800 px for Faster R-CNN, 320 px for SSDlite), so the
  input size mostly moves the cost of that resize and of the post-processing;
- video: a clip batch ``(batch, 3, 16, size, size)``, 16 frames (the clip length
  of torchvision's Kinetics-400 weights);
- optical flow: two image batches ``(batch, 3, size, size)``, the frame pair, in
  multiples of 8 px.

Images are standard normal values seeded by the size (``models.image_batch``).
Quantized models run on the CPU only, with torch's quantized kernels.

The sizes a model takes start at torchvision's declared minimum
(``weights.meta["min_size"]``: AlexNet needs 63 px, Inception v3 75 px); a
shape-only trial at twice that (``size_probe.size_range``) finds the models
built for one size (a ViT takes exactly its ``image_size``, 224 px).
"""
from __future__ import annotations

import difflib
from pathlib import Path

import torch

from .models import LoadedModel, ModelError, ModelInputs, image_batch
from .size_probe import size_range

VIDEO_FRAMES = 16
FLOW_MULTIPLE = 8  # RAFT's feature maps are 1/8 of the frame


def _modules() -> dict[str, object]:
    import torchvision.models as models

    return {"classification": models, "detection": models.detection, "segmentation": models.segmentation,
            "video": models.video, "optical_flow": models.optical_flow, "quantization": models.quantization}


def family_of(name: str) -> str:
    """The torchvision family of ``name`` (``classification``, ``detection``, ...); ``ModelError`` if none."""
    import torchvision.models as models

    for family, module in _modules().items():
        if name in models.list_models(module=module):
            return family
    close = difflib.get_close_matches(name, models.list_models(), n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise ModelError(f"unknown torchvision model {name!r}; {hint}see torchvision.models.list_models()")


def architecture_kwargs(family: str, name: str, weights) -> dict:
    """The builder arguments that give random weights the architecture of ``weights`` (torchvision's
    builders set them when they are given the weights): class count, a ViT's image size, auxiliary heads."""
    meta = weights.meta
    kwargs = {"num_classes": len(meta["categories"])} if "categories" in meta else {}
    if family in ("detection", "segmentation"):
        kwargs["weights_backbone"] = None  # the backbone's own weights would be downloaded
    if family == "segmentation" and not name.startswith("lraspp"):
        kwargs["aux_loss"] = True
    if name.startswith("vit_"):
        kwargs["image_size"] = meta["min_size"][0]
    if name == "maxvit_t":
        kwargs["input_size"] = meta["min_size"]
    if name.endswith("googlenet"):
        kwargs.update(transform_input=True, aux_logits=False, init_weights=False)  # its weights drop the aux heads
    if name.endswith("inception_v3"):
        kwargs.update(transform_input=True, aux_logits=True, init_weights=False)
    if family == "quantization":
        kwargs["backend"] = meta["backend"]
    return kwargs


def freezes_backbone_norms(family: str, name: str) -> bool:
    """Whether torchvision builds ``name``'s backbone with frozen batch norms when it is given weights
    (the first R-CNN, RetinaNet and FCOS detectors; not the ``_v2`` ones, nor SSD)."""
    return family == "detection" and not name.endswith("_v2") and not name.startswith("ssd")


def freeze_batch_norms(module: torch.nn.Module) -> None:
    """Replace every ``BatchNorm2d`` in ``module`` by torchvision's ``FrozenBatchNorm2d`` (the same
    arithmetic in eval mode, with its statistics and affine terms as buffers rather than parameters)."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    norms = [(parent, child_name, child) for parent in module.modules()
             for child_name, child in parent.named_children() if isinstance(child, torch.nn.BatchNorm2d)]
    for parent, child_name, child in norms:  # a fresh BatchNorm2d and a fresh FrozenBatchNorm2d hold the same values
        setattr(parent, child_name, FrozenBatchNorm2d(child.num_features, child.eps))


def _image_inputs(size: int, batch_size: int) -> ModelInputs:
    return ModelInputs((image_batch(size, batch_size),))


def _detection_inputs(size: int, batch_size: int) -> ModelInputs:
    return ModelInputs((list(image_batch(size, batch_size)),))


def _video_inputs(size: int, batch_size: int) -> ModelInputs:
    frames = image_batch(size, batch_size * VIDEO_FRAMES).reshape(batch_size, VIDEO_FRAMES, 3, size, size)
    return ModelInputs((frames.transpose(1, 2).contiguous(),))


def _flow_inputs(size: int, batch_size: int) -> ModelInputs:
    pair = image_batch(size, 2 * batch_size)
    return ModelInputs((pair[:batch_size], pair[batch_size:]))


INPUTS = {"classification": _image_inputs, "segmentation": _image_inputs, "quantization": _image_inputs,
          "detection": _detection_inputs, "video": _video_inputs, "optical_flow": _flow_inputs}


def load_torchvision(name: str, label: str | None = None) -> LoadedModel:
    """torchvision's ``name`` (e.g. ``mobilenet_v3_small``) in eval mode on the CPU, called ``label``
    (default ``torchvision:<name>``); raises ``ModelError`` for a name torchvision does not list.

    Pretrained when the default weights' file is in the torch hub cache
    (``torch.hub.get_dir()/checkpoints``), else random weights drawn from seed 0
    with the same architecture (``weights_notice`` says so).
    """
    import torchvision.models as models

    family = family_of(name)
    label = label or f"torchvision:{name}"
    weights = models.get_model_weights(name).DEFAULT
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    kwargs = {"quantize": True} if family == "quantization" else {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if cached.exists():
            module = models.get_model(name, weights=weights, **kwargs)
            weights_kind, notice = "pretrained", None
        else:
            module = models.get_model(name, weights=None, **architecture_kwargs(family, name, weights), **kwargs)
            if freezes_backbone_norms(family, name):
                freeze_batch_norms(module.backbone)
            weights_kind = "random"
            notice = f"pretrained {name} weights not in the local cache ({cached.name}); using random weights"
    module.eval()
    make_inputs = INPUTS[family]
    declared = weights.meta.get("min_size", (1, 1))[0]
    task = "video" if family == "video" else "vision"
    if family == "optical_flow":
        sizes, multiple = (declared, None), FLOW_MULTIPLE
    else:
        # detectors' post-processing depends on values and quantized kernels have no meta version: no trial
        probed = (None if family in ("detection", "quantization")
                  else size_range(module, make_inputs, declared, bisect=False))
        sizes, multiple = probed or (declared, None), 1
    description = f"torchvision {type(module).__name__} ({name}, {family})"
    return LoadedModel(label, task, module, weights_kind, notice, make_inputs, "px", sizes[0], sizes[1], multiple,
                       description)
