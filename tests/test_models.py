"""Models by name: the seed's aliases, torchvision:<name>, hf:<id or architecture>, the user's own model.

Every family loads and runs a forward pass at a small size with a batch of 2 on
the CPU. Nothing is downloaded: without cached weights the models are random,
and the Hugging Face "cached" path is exercised with tiny models saved to a
folder (``hf:<folder>`` goes through the same ``from_pretrained`` calls).
"""
from __future__ import annotations

import doctest

import pytest
import torch

import measure.models
from measure import hf_models, tv_models
from measure.models import (ModelError, ModelInputs, check_model_name, count_flops, count_params, image_batch,
                            load_model, model_help, user_model)
from measure.size_probe import size_range

_LOADED: dict[str, measure.models.LoadedModel] = {}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread: on a shared machine, parallel regions wait on every busy core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def loaded(name: str) -> measure.models.LoadedModel:
    """``load_model(name)``, built once for the whole file."""
    if name not in _LOADED:
        _LOADED[name] = load_model(name)
    return _LOADED[name]


def forward(model, size: int, batch_size: int = 2):
    inputs = model.inputs(size, batch_size, "cpu")
    with torch.inference_mode():
        return inputs, model(inputs)


def one_line_error(call, match: str) -> str:
    with pytest.raises(ModelError, match=match) as caught:
        call()
    assert "\n" not in str(caught.value)
    return str(caught.value)


def assert_weights_recorded(model) -> None:
    assert model.weights in ("pretrained", "random")
    assert (model.weights_notice is None) == (model.weights == "pretrained")


# --- the seed's aliases: same architectures, same inputs --------------------------------------------------------

@pytest.mark.parametrize("name, params, min_size", [("alexnet", 61_100_840, 63), ("resnet50", 25_557_032, 1)])
def test_seed_vision_aliases_are_unchanged(name, params, min_size):
    model = loaded(name)
    assert (model.name, model.task, model.size_unit, model.min_size, model.max_size) == (name, "vision", "px",
                                                                                         min_size, None)
    assert count_params(model) == params
    assert_weights_recorded(model)
    size = max(min_size, 8)
    inputs, logits = forward(model, size)
    (images,) = inputs.args
    expected = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(size))
    assert images.dtype == torch.float32 and torch.equal(images, expected)  # the seed's images, seeded by size
    assert logits.shape == (2, 1000)
    one_line_error(lambda: model.inputs(min_size - 1, 1, "cpu"), rf"{name} needs an input of at least {min_size} px")


def test_seed_bert_is_unchanged():
    model = loaded("bert")
    assert type(model.module).__name__ == "BertForSequenceClassification"
    assert count_params(model) == 109_483_778  # bert-base-uncased with a 2-label head
    assert (model.task, model.size_unit, model.min_size, model.max_size) == ("nlp", "tokens", 1, 510)
    assert_weights_recorded(model)
    inputs, output = forward(model, 5)
    ids = inputs.kwargs["input_ids"]
    assert ids.dtype == torch.int64 and ids.tolist() == [[101] + [2748] * 5 + [102]] * 2  # [CLS] yes … yes [SEP]
    assert torch.equal(inputs.kwargs["attention_mask"], torch.ones_like(ids))
    assert output.logits.shape == (2, 2)
    one_line_error(lambda: model.check_size(511), "bert takes at most 510 tokens, got 511")


# --- torchvision:<name> ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, size, min_size", [("mobilenet_v3_small", 8, 1), ("squeezenet1_0", 21, 21)])
def test_torchvision_classifiers(name, size, min_size):
    import torchvision

    model = loaded(f"torchvision:{name}")
    assert (model.name, model.task, model.min_size, model.max_size) == (f"torchvision:{name}", "vision",
                                                                        min_size, None)
    assert_weights_recorded(model)
    # random weights have the architecture of the pretrained ones
    assert count_params(model) == torchvision.models.get_model_weights(name).DEFAULT.meta["num_params"]
    inputs, logits = forward(model, size)
    assert inputs.shape == [2, 3, size, size] and inputs.args[0].dtype == torch.float32
    assert logits.shape == (2, 1000)
    assert count_flops(model, inputs) > 0


def test_torchvision_detection_takes_a_list_of_images():
    import torchvision

    name = "ssdlite320_mobilenet_v3_large"
    model = loaded(f"torchvision:{name}")
    assert count_params(model) == torchvision.models.get_model_weights(name).DEFAULT.meta["num_params"]
    inputs, detections = forward(model, 16)
    (images,) = inputs.args
    assert isinstance(images, list) and len(images) == 2 and images[0].shape == (3, 16, 16)
    assert inputs.shape == [2, 3, 16, 16]
    assert len(detections) == 2 and {"boxes", "scores", "labels"} <= set(detections[0])
    assert count_flops(model, inputs) > 0


def test_torchvision_detectors_with_frozen_backbone_norms_keep_the_pretrained_architecture():
    import torchvision

    name = "fasterrcnn_mobilenet_v3_large_320_fpn"
    model = loaded(f"torchvision:{name}")
    assert count_params(model) == torchvision.models.get_model_weights(name).DEFAULT.meta["num_params"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torchvision quantizes through torch.ao.quantization,
@pytest.mark.filterwarnings("ignore:torch.quantize_per_tensor:UserWarning")  # whose quantized tensors are deprecated
def test_torchvision_quantized_models_run_on_the_cpu():
    model = loaded("torchvision:quantized_shufflenet_v2_x0_5")
    assert_weights_recorded(model)
    inputs, logits = forward(model, 64)
    assert inputs.shape == [2, 3, 64, 64] and logits.shape == (2, 1000)
    assert count_flops(model, inputs) is None  # quantized kernels are not counted: unknown, not 0
    assert count_params(model) is None  # packed weights, not parameters


def test_frozen_batch_norms_keep_the_arithmetic_and_move_parameters_to_buffers():
    from torchvision.ops.misc import FrozenBatchNorm2d

    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).eval()
    images = image_batch(8, 2)
    with torch.no_grad():
        before = net(images)
        tv_models.freeze_batch_norms(net)
        after = net(images)
    assert isinstance(net[1], FrozenBatchNorm2d)
    assert sum(p.numel() for p in net.parameters()) == 3 * 4 * 9 + 4  # the convolution's only
    torch.testing.assert_close(after, before)
    assert tv_models.freezes_backbone_norms("detection", "fasterrcnn_resnet50_fpn")
    assert not tv_models.freezes_backbone_norms("detection", "fasterrcnn_resnet50_fpn_v2")


def test_torchvision_video_takes_a_clip_of_16_frames():
    model = loaded("torchvision:r3d_18")
    assert (model.task, model.size_unit) == ("video", "px")
    inputs, logits = forward(model, 8)
    assert inputs.shape == [2, 3, tv_models.VIDEO_FRAMES, 8, 8]
    assert logits.shape == (2, 400)


def test_torchvision_optical_flow_takes_a_frame_pair_in_multiples_of_8():
    model = loaded("torchvision:raft_small")
    assert (model.min_size, model.size_multiple) == (128, 8)
    one_line_error(lambda: model.check_size(132), "takes a multiple of 8 px, got 132")
    one_line_error(lambda: model.check_size(120), "at least 128 px")
    inputs = model.inputs(128, 2, "cpu")
    first, second = inputs.args
    assert first.shape == second.shape == (2, 3, 128, 128) and not torch.equal(first, second)


def test_unknown_torchvision_name_suggests_close_ones():
    message = one_line_error(lambda: load_model("torchvision:mobilenet_v3_smal"), "unknown torchvision model")
    assert "mobilenet_v3_small" in message and "torchvision.models.list_models()" in message


# --- size probe ------------------------------------------------------------------------------------------------

def test_size_probe_finds_the_smallest_size_and_a_single_size():
    def images(size, batch_size):
        return image_batch(size, batch_size)

    convolutions = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 5), torch.nn.MaxPool2d(3), torch.nn.Flatten()).eval()
    assert size_range(convolutions, images, 64) == (7, None)  # 5x5 convolution, then a 3x3 pool
    assert size_range(convolutions, images, 64, bisect=False) == (64, None)
    one_size = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 12 * 12, 2)).eval()
    assert size_range(one_size, images, 12) == (12, 12)
    assert size_range(one_size, images, 13) is None  # the reference itself does not fit: nothing known
    before = [p.clone() for p in convolutions.parameters()]
    assert all(torch.equal(a, b) and not b.is_meta for a, b in zip(before, convolutions.parameters()))


# --- hf:<architecture> and hf:<id> -----------------------------------------------------------------------------

def test_hf_encoder_architecture_with_random_weights():
    model = loaded("hf:distilbert")
    assert type(model.module).__name__ == "DistilBertForSequenceClassification"
    assert (model.task, model.size_unit, model.min_size, model.max_size) == ("nlp", "tokens", 1, 512)
    assert model.weights == "random" and "DistilBertConfig()" in model.weights_notice
    inputs, output = forward(model, 8)
    ids = inputs.kwargs["input_ids"]
    assert ids.dtype == torch.int64 and ids.shape == (2, 8)  # DistilBertConfig sets no bos/eos: no specials
    assert (ids == hf_models.FILLER_TOKEN_ID).all()
    assert output.logits.shape == (2, 2)
    one_line_error(lambda: model.check_size(513), "hf:distilbert takes at most 512 tokens")


def test_hf_decoder_architecture_with_its_language_modelling_head():
    model = loaded("hf:gpt2")
    assert type(model.module).__name__ == "GPT2LMHeadModel"
    assert (model.task, model.max_size) == ("nlp", 1023)  # 1024 positions minus <|endoftext|> first
    assert model.weights == "random" and "GPT2Config()" in model.weights_notice
    inputs, output = forward(model, 8)
    ids = inputs.kwargs["input_ids"]
    assert ids.shape == (2, 9) and ids[:, 0].tolist() == [50256, 50256]
    assert output.logits.shape == (2, 9, 50257)
    assert count_flops(model, inputs) > 2 * 2 * 9 * 768 * 50257  # the head's projection alone


def test_hf_kinds_and_config_token_ids():
    from transformers import CONFIG_MAPPING

    kinds = {name: hf_models.kind_of(CONFIG_MAPPING[name](), name) for name in ("gpt2", "llama", "roberta", "vit")}
    assert {name: (kind, cls.__name__) for name, (kind, cls) in kinds.items()} == {
        "gpt2": ("decoder", "GPT2LMHeadModel"), "llama": ("decoder", "LlamaForCausalLM"),
        "roberta": ("encoder", "RobertaForSequenceClassification"), "vit": ("image", "ViTForImageClassification")}
    roberta = hf_models.TokenIds.from_config(CONFIG_MAPPING["roberta"](), "encoder")  # <s> … </s>
    assert roberta(2, 1).kwargs["input_ids"].tolist() == [[0, 1000, 1000, 2]]
    llama = hf_models.TokenIds.from_config(CONFIG_MAPPING["llama"](), "decoder")  # <s> first; no </s> for a decoder
    assert llama(2, 1).kwargs["input_ids"].tolist() == [[1, 1000, 1000]]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """``saved(name, model, tokenizer=None)``: a folder holding a tiny saved model, as the cache would."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    def save(name, module, tokenizer=None):
        folder = tmp_path_factory.mktemp(name)
        module.save_pretrained(folder)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)
        return str(folder)

    return save


def tiny_bert(**overrides):
    from transformers import BertConfig

    settings = dict(vocab_size=7, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                    max_position_embeddings=24)
    settings.update(overrides)
    return BertConfig(**settings)


def test_hf_cached_model_with_its_tokenizer(saved):
    from transformers import BertForSequenceClassification, BertTokenizer

    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4, "yes": 5, "no": 6}
    folder = saved("bert", BertForSequenceClassification(tiny_bert()), BertTokenizer(vocab=vocab))
    model = load_model(f"hf:{folder}")
    assert (model.weights, model.weights_notice) == ("pretrained", None)
    assert model.max_size == 22  # 24 positions minus [CLS] and [SEP]
    inputs, output = forward(model, 3)
    assert inputs.kwargs["input_ids"].tolist() == [[2, 5, 5, 5, 3]] * 2  # [CLS] yes yes yes [SEP]
    assert output.logits.shape == (2, 2)
    assert "from the tokenizer" in model.description


def test_hf_weights_are_float32_whatever_the_checkpoint_holds(saved):
    from transformers import BertForSequenceClassification

    folder = saved("bert16", BertForSequenceClassification(tiny_bert()).to(torch.bfloat16))
    model = load_model(f"hf:{folder}")
    assert {p.dtype for p in model.module.parameters()} == {torch.float32}
    assert "from the config" in model.description  # no tokenizer saved


def test_hf_cached_config_without_weights_gets_random_weights(tmp_path):
    tiny_bert().save_pretrained(tmp_path)
    model = load_model(f"hf:{tmp_path}")
    assert model.weights == "random"
    assert model.weights_notice == (f"the weights of {tmp_path} are not in the local Hugging Face cache "
                                    "(its config is); using random weights")
    assert forward(model, 2)[1].logits.shape == (2, 2)


def test_hf_positions_numbered_after_padding_shorten_the_input(saved):
    from transformers import RobertaConfig, RobertaForSequenceClassification

    config = RobertaConfig(vocab_size=1200, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=32, max_position_embeddings=20)
    model = load_model(f"hf:{saved('roberta', RobertaForSequenceClassification(config))}")
    assert model.max_size == 20 - 2 - 2  # <s> and </s>, and positions counted from padding_idx + 1 = 2
    inputs, output = forward(model, model.max_size)
    assert inputs.kwargs["input_ids"][0, [0, -1]].tolist() == [0, 2]
    too_long = hf_models.TokenIds(1000, (0,), (2,))(model.max_size + 1, 1)
    with pytest.raises((IndexError, RuntimeError)), torch.inference_mode():  # one more token: positions run out
        model(too_long)


def test_hf_image_classifier_interpolates_position_embeddings(saved):
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=16, num_hidden_layers=1,
                       num_attention_heads=2, intermediate_size=32)
    model = load_model(f"hf:{saved('vit', ViTForImageClassification(config))}")
    assert (model.task, model.size_unit, model.min_size, model.max_size) == ("vision", "px", 8, None)  # one patch
    inputs, output = forward(model, 48)
    assert inputs.shape == [2, 3, 48, 48] and inputs.kwargs["interpolate_pos_encoding"] is True
    assert output.logits.shape == (2, 2)
    half = model.inputs(48, 2, "cpu", dtype=torch.float16)
    assert half.kwargs["pixel_values"].dtype == torch.float16


@pytest.mark.parametrize("name, match", [
    ("hf:t5", "hf:t5 is an encoder-decoder model"),
    ("hf:no-such-model-here", "no 'no-such-model-here' in the local Hugging Face cache"),
])
def test_hf_refusals_are_one_line(name, match):
    one_line_error(lambda: load_model(name), match)
    one_line_error(lambda: check_model_name(name), match)


# --- names -----------------------------------------------------------------------------------------------------

def test_unknown_name_says_how_to_find_valid_ones():
    message = one_line_error(lambda: load_model("foo"), "unknown model 'foo'")
    for family in ("alexnet", "resnet50", "bert", "torchvision:<name>", "list_models()", "hf:<id or architecture>"):
        assert family in message
    one_line_error(lambda: check_model_name("foo"), "unknown model 'foo'")


def test_check_model_name_builds_nothing():
    assert check_model_name("resnet50") == "resnet50"
    assert check_model_name("torchvision:vit_h_14") == "torchvision:vit_h_14"
    assert check_model_name("hf:llama") == "hf:llama"


def test_model_help_lists_every_family():
    lines = model_help().splitlines()
    assert [line.split()[0] for line in lines] == ["alexnet,", "torchvision:<name>", "hf:<id>", "hf:<architecture>",
                                                   "hf:<name>:<key>=<v>,..."]


# --- the user's own model --------------------------------------------------------------------------------------

def test_user_model_docstring_example_runs():
    runner = doctest.DocTestRunner(verbose=False)
    for test in doctest.DocTestFinder().find(measure.models.user_model, "user_model", globs={}):
        runner.run(test)
    assert runner.tries > 0 and runner.failures == 0


class Pair(torch.nn.Module):
    def forward(self, left, right):
        return left + right


def test_user_model_positional_and_keyword_inputs():
    def pair(size, batch):
        return torch.ones(batch, size), torch.full((batch, size), 2.0)

    model = user_model(Pair(), pair, name="pair")
    assert (model.name, model.task, model.weights, model.weights_notice) == ("pair", "custom", "user", None)
    inputs, out = forward(model, 4)
    assert len(inputs.args) == 2 and (out == 3).all() and out.shape == (2, 4)

    def named(size, batch):
        return {"right": torch.ones(batch, size), "left": torch.zeros(batch, size)}

    inputs, out = forward(user_model(Pair(), named), 3)
    assert set(inputs.kwargs) == {"left", "right"} and (out == 1).all()
    assert count_flops(user_model(Pair(), named), inputs) is None  # an addition: nothing FlopCounterMode counts

    def images(size, batch):  # a list of images, as torchvision's detectors take them
        return ([torch.ones(3, size, size) for _ in range(batch)],)

    inputs, out = forward(user_model(lambda images: torch.stack(images).sum(), images, name="list"), 4)
    assert inputs.shape == [2, 3, 4, 4] and out.item() == 2 * 3 * 4 * 4


@pytest.mark.parametrize("factory, match", [
    (lambda size, batch: "images", "must return a tensor, a tuple of tensors or a dict of tensors, got str"),
    (lambda size: torch.ones(1, size), "failed at size 1, batch 1: TypeError"),
    (lambda size, batch: torch.ones(3, size), r"must put the batch first: shape \[3, 1\] for a batch of 1"),
    (lambda size, batch: (1, 2), "returned no tensor"),
    (lambda size, batch: {0: torch.ones(batch, size)}, "must have argument names as keys"),
])
def test_bad_input_factories_are_one_line(factory, match):
    one_line_error(lambda: user_model(torch.nn.Identity(), factory, name="bad"), match)


def test_user_model_refuses_what_cannot_be_called():
    one_line_error(lambda: user_model("resnet", lambda size, batch: torch.ones(batch)), "got str")
    one_line_error(lambda: user_model(torch.nn.Identity(), None), "an input factory")


def test_sizes_out_of_range_are_one_line():
    model = user_model(torch.nn.Identity(), lambda size, batch: torch.ones(batch, size), name="id", size_unit="tokens",
                       min_size=2, max_size=4)
    one_line_error(lambda: model.inputs(1, 1, "cpu"), "id needs an input of at least 2 tokens, got 1")
    one_line_error(lambda: model.inputs(5, 1, "cpu"), "id takes at most 4 tokens, got 5")


def test_inputs_of_lists_move_and_cast():
    images = ModelInputs(([torch.ones(3, 2, 2), torch.ones(3, 2, 2)], torch.arange(3)))
    moved = images.to("meta", torch.float16)
    assert [t.dtype for t in moved.args[0]] == [torch.float16] * 2 and moved.args[1].dtype == torch.int64
    assert all(t.is_meta for t in moved.tensors()) and len(moved.tensors()) == 3
    assert moved.shape == [2, 3, 2, 2]
