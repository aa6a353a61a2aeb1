"""Registry of pretrained backbones from ``keras.applications``.

One frozen ``BackboneSpec`` per architecture (and width), named by the
lowercase Keras name with the width as suffix where Keras has several:
``vgg16``, ``resnet50``, ``mobilenet_0.25``, ``mobilenetv2_0.35``, ...
Every entry is an architecture Keras publishes ImageNet weights for.

Importing this module does not import Keras or TensorFlow; building does.

Example:
    >>> spec = get_backbone("mobilenet_0.25")
    >>> spec.default_size, spec.preprocessing, spec.feature_layers[32]
    (224, 'tf', 'conv_pw_13_relu')
    >>> [s.name for s in list_backbones()][:3]
    ['vgg16', 'vgg19', 'resnet50']

How the table was made (re-check after a Keras upgrade; ``tests/test_backbones.py``
guards all of it): every entry was built with ``weights=None`` at 96 and 160 px
and its layers listed. A layer's stride is ``64 / (size at 160 - size at 96)``,
which is exact even for the families whose stem uses 'valid' padding
(Inception, Xception), where ``input / size`` is not. ``feature_layers[s]`` is
the last layer at stride ``s`` that has a stable name (see
``BackboneSpec.feature_layers``).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from transfer.core.errors import TransferError

STRIDES = (2, 4, 8, 16, 32)
PREPROCESSING_MODES = ("caffe", "tf", "torch", "none")

# Feature references that are not plain layer names (see BackboneSpec).
OUTPUT_REF = "@output"
INPUT_SUFFIX = ":input"

# keras.applications submodule of each constructor: where its preprocess_input lives.
_FAMILIES = {
    "VGG16": "vgg16",
    "VGG19": "vgg19",
    "ResNet50": "resnet",
    "ResNet101": "resnet",
    "ResNet152": "resnet",
    "ResNet50V2": "resnet_v2",
    "ResNet101V2": "resnet_v2",
    "ResNet152V2": "resnet_v2",
    "InceptionV3": "inception_v3",
    "InceptionResNetV2": "inception_resnet_v2",
    "Xception": "xception",
    "MobileNet": "mobilenet",
    "MobileNetV2": "mobilenet_v2",
    "MobileNetV3Small": "mobilenet_v3",
    "MobileNetV3Large": "mobilenet_v3",
    "DenseNet121": "densenet",
    "DenseNet169": "densenet",
    "DenseNet201": "densenet",
    "NASNetMobile": "nasnet",
    "NASNetLarge": "nasnet",
    **{f"EfficientNetB{i}": "efficientnet" for i in range(8)},
    **{f"EfficientNetV2{v}": "efficientnet_v2" for v in ("B0", "B1", "B2", "B3", "S", "M", "L")},
    **{f"ConvNeXt{v}": "convnext" for v in ("Tiny", "Small", "Base", "Large", "XLarge")},
    "SmallCNN": "scratch",  # transfer.backbones.scratch_cnn: no ImageNet weights, for training from scratch
}


@dataclass(frozen=True)
class BackboneSpec:
    """What ``transfer`` needs to know about one ``keras.applications`` architecture.

    Attributes:
        name: registry name, e.g. ``"resnet50"`` or ``"mobilenet_0.25"``.
        constructor: the ``keras.applications`` attribute, e.g. ``"ResNet50"``.
        default_size: the input size the ImageNet weights were trained at.
        preprocessing: ``"caffe" | "tf" | "torch" | "none"`` (see ``transfer.backbones.layers``).
        feature_layers: output stride (2, 4, 8, 16, 32) -> feature reference,
            for detection heads and segmentation decoders (U-Net skips). Names, never indices. A reference
            is a layer name (that layer's output), ``"<layer>:input"`` (the
            tensor going into that layer) or ``"@output"`` (the model's output).
            The last two exist because Keras leaves some layers without a
            stable name: unnamed layers are called ``add_3``, ``activation_17``
            ... with a counter that depends on how many models were built
            before. Use ``features(model)`` to resolve them. Strides without a
            stably named layer are left out: Inception V3 and
            Inception-ResNet-V2 have neither stride 2 nor 4 (their whole stem
            is unnamed); ConvNeXt has no stride 2 (its 4x4 stem patchifies
            straight to stride 4). Xception's and NASNet's stride-2 maps come
            from 'valid'-padded stems and are a pixel smaller than ``S / 2``.
        block_pattern: regex grouping layers into blocks, used to unfreeze
            "the top N blocks". By default group 1 names the block a layer
            belongs to, and layers that do not match join the block before them.
        kwargs: extra constructor arguments (``{"alpha": 0.25}``).
        min_size: smallest input side the architecture accepts.
        family: the ``keras.applications`` submodule (``"resnet_v2"``), where
            ``preprocess_input`` lives; derived from ``constructor``.
        feature_dim: channels of the backbone's output (the pooled feature width).
        block_end: when True, ``block_pattern`` matches the *last* layer of each
            block instead (Inception's ``mixedN`` concatenations, NASNet's cell
            outputs), whose other layers carry no block name.
        module: where ``constructor`` lives: ``keras.applications`` for all but
            ``smallcnn`` (``transfer.backbones.scratch_cnn``).
        pretrained: whether ImageNet weights exist for it.
    """

    name: str
    constructor: str
    default_size: int
    preprocessing: str
    feature_layers: Mapping[int, str]
    block_pattern: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    min_size: int = 32
    family: str = ""
    feature_dim: int = 0
    block_end: bool = False
    module: str = "keras.applications"
    pretrained: bool = True

    def __post_init__(self):
        object.__setattr__(self, "kwargs", MappingProxyType(dict(self.kwargs)))
        object.__setattr__(self, "feature_layers", MappingProxyType(dict(self.feature_layers)))
        if not self.family:
            object.__setattr__(self, "family", _FAMILIES[self.constructor])
        if self.preprocessing not in PREPROCESSING_MODES:
            raise ValueError(
                f"Unknown preprocessing mode. Expected one of {PREPROCESSING_MODES}. "
                f"Received: preprocessing={self.preprocessing!r}"
            )

    def instantiate(self, weights: str | None, input_shape: tuple) -> "keras.Model":  # noqa: F821
        """Call the constructor (``keras.applications``) without its classifier top.

        ``weights`` is passed to Keras as is (``"imagenet"``, ``None`` or a file
        path); ``transfer.backbones.weights.build_backbone`` is the user-facing entry that
        adds clear errors and logging around this.

        Example:
            >>> model = get_backbone("mobilenet_0.25").instantiate(None, (128, 128, 3))
            >>> model.output_shape
            (None, 4, 4, 256)
        """
        import importlib

        constructor = getattr(importlib.import_module(self.module), self.constructor)
        return constructor(include_top=False, weights=weights, input_shape=input_shape, **self.kwargs)

    def features(self, model) -> dict[int, Any]:
        """Stride -> symbolic feature tensor of a backbone built from this spec.

        Example:
            >>> spec = get_backbone("resnet50")
            >>> model = spec.instantiate(None, (64, 64, 3))
            >>> {s: t.shape[1] for s, t in spec.features(model).items()}
            {2: 32, 4: 16, 8: 8, 16: 4, 32: 2}
        """
        return {stride: _resolve(model, ref) for stride, ref in self.feature_layers.items()}

    def blocks(self, model) -> list[list[str]]:
        """Group the backbone's layer names into blocks, bottom to top.

        Example:
            >>> spec = get_backbone("vgg16")
            >>> [b[-1] for b in spec.blocks(spec.instantiate(None, (64, 64, 3)))][-2:]
            ['block4_pool', 'block5_pool']
        """
        pattern = re.compile(self.block_pattern)
        if self.block_end:
            blocks: list[list[str]] = [[]]
            for layer in model.layers:
                blocks[-1].append(layer.name)
                if pattern.search(layer.name):
                    blocks.append([])
            # Layers after the last marker (e.g. a final activation) close the top block.
            if not blocks[-1]:
                blocks.pop()
            elif len(blocks) > 1:
                blocks[-2].extend(blocks.pop())
            return blocks
        blocks = []
        current_key = None
        for layer in model.layers:
            match = pattern.search(layer.name)
            key = match.group(1) if match else current_key
            if key != current_key or not blocks:
                blocks.append([])
                current_key = key
            blocks[-1].append(layer.name)
        return blocks


def _resolve(model, ref: str):
    if ref == OUTPUT_REF:
        return model.outputs[0]
    if ref.endswith(INPUT_SUFFIX):
        return model.get_layer(ref[: -len(INPUT_SUFFIX)]).input
    return model.get_layer(ref).output


def _mobilenet(alpha: float) -> BackboneSpec:
    return BackboneSpec(
        f"mobilenet_{alpha}", "MobileNet", 224, "tf",
        {2: "conv_pw_1_relu", 4: "conv_pw_3_relu", 8: "conv_pw_5_relu", 16: "conv_pw_11_relu", 32: "conv_pw_13_relu"},
        r"^conv_(?:dw_|pw_|pad_)?(\d+)", {"alpha": alpha}, feature_dim=int(1024 * alpha),
    )


def _mobilenet_v2(alpha: float, dim: int) -> BackboneSpec:
    # The last layer at strides 2/4/8/16 is the expansion of the first block of
    # the next stage (wide, post-activation), as in segmentation_models.
    return BackboneSpec(
        f"mobilenetv2_{alpha}", "MobileNetV2", 224, "tf",
        {2: "block_1_expand_relu", 4: "block_3_expand_relu", 8: "block_6_expand_relu",
         16: "block_13_expand_relu", 32: "out_relu"},
        r"^(expanded_conv|block_\d+)_", {"alpha": alpha}, feature_dim=dim,
    )


def _mobilenet_v3(size: str, suffix: str, kwargs: dict, dim: int) -> BackboneSpec:
    # Keras leaves MobileNetV3's activations unnamed, so the post-activation
    # feature at a stride is named as the input of the next stride-2 padding.
    # Block 0 is "expanded_conv" (no index); Small downsamples in it, Large in block 1.
    pads = {"small": ("", "_1", "_3", "_8"), "large": ("_1", "_3", "_6", "_12")}[size]
    layers = {s: f"expanded_conv{i}_depthwise_pad{INPUT_SUFFIX}" for s, i in zip((2, 4, 8, 16), pads)}
    return BackboneSpec(
        f"mobilenetv3{size}{suffix}", f"MobileNetV3{size.capitalize()}", 224, "none",
        {**layers, 32: OUTPUT_REF}, r"^(expanded_conv(?:_\d+)?)_", kwargs, feature_dim=dim,
    )


def _densenet(depth: int, dim: int) -> BackboneSpec:
    return BackboneSpec(
        f"densenet{depth}", f"DenseNet{depth}", 224, "torch",
        {2: "conv1_relu", 4: "pool2_conv", 8: "pool3_conv", 16: "pool4_conv", 32: "relu"},
        r"^(conv\d_block\d+|pool\d)_", feature_dim=dim,
    )


def _efficientnet(variant: int, size: int, dim: int) -> BackboneSpec:
    return BackboneSpec(
        f"efficientnetb{variant}", f"EfficientNetB{variant}", size, "none",
        {2: "block2a_expand_activation", 4: "block3a_expand_activation", 8: "block4a_expand_activation",
         16: "block6a_expand_activation", 32: "top_activation"},
        r"^(block\d[a-z])_", feature_dim=dim,
    )


def _efficientnet_v2(variant: str, size: int, dim: int, last_stage1_block: str,
                     last_stage2_block: str) -> BackboneSpec:
    # Stages 2 and 3 start with a fused block that downsamples at once, so the
    # last stride-2/4 layer is the final residual add of stage 1/2. B0's stage 1
    # is a single block without a residual (32 -> 16 channels): its projection.
    stride2 = "block1a_project_activation" if last_stage1_block == "a" else f"block1{last_stage1_block}_add"
    return BackboneSpec(
        f"efficientnetv2{variant}", f"EfficientNetV2{variant.upper()}", size, "none",
        {2: stride2, 4: f"block2{last_stage2_block}_add", 8: "block4a_expand_activation",
         16: "block6a_expand_activation", 32: "top_activation"},
        r"^(block\d[a-z])_", feature_dim=dim,
    )


def _convnext(variant: str, dim: int) -> BackboneSpec:
    # Stage outputs are unnamed residual adds; each one is the input of the
    # next downsampling block. The model output is layer-normalized stage 4.
    # No stride 2: the stem is a 4x4 stride-4 patchify conv.
    prefix = f"convnext_{variant}"
    layers = {s: f"{prefix}_downsampling_block_{i}{INPUT_SUFFIX}" for i, s in enumerate((4, 8, 16))}
    constructor = "ConvNeXtXLarge" if variant == "xlarge" else f"ConvNeXt{variant.capitalize()}"
    return BackboneSpec(
        prefix, constructor, 224, "none", {**layers, 32: OUTPUT_REF},
        rf"^{prefix}_(stage_\d+_block_\d+|downsampling_block_\d+)", feature_dim=dim,
    )


# fmt: off
_SPECS: tuple[BackboneSpec, ...] = (
    BackboneSpec("vgg16", "VGG16", 224, "caffe",
                 {2: "block2_conv2", 4: "block3_conv3", 8: "block4_conv3", 16: "block5_conv3", 32: "block5_pool"},
                 r"^(block\d)_", feature_dim=512),
    BackboneSpec("vgg19", "VGG19", 224, "caffe",
                 {2: "block2_conv2", 4: "block3_conv4", 8: "block4_conv4", 16: "block5_conv4", 32: "block5_pool"},
                 r"^(block\d)_", feature_dim=512),
    *(BackboneSpec(f"resnet{depth}", f"ResNet{depth}", 224, "caffe",
                   {2: "conv1_relu", 4: "conv2_block3_out", 8: f"conv3_block{b3}_out", 16: f"conv4_block{b4}_out",
                    32: "conv5_block3_out"},
                   r"^(conv\d_block\d+)_", feature_dim=2048)
      for depth, b3, b4 in ((50, 4, 6), (101, 4, 23), (152, 8, 36))),
    # ResNet v2 downsamples in the *last* block of each stage; the last
    # full-width activation at the stage's stride is that block's pre-activation.
    # Its stem has no BatchNorm/ReLU (block 1 pre-activates): stride 2 is the raw conv.
    *(BackboneSpec(f"resnet{depth}v2", f"ResNet{depth}V2", 224, "tf",
                   {2: "conv1_conv", 4: "conv2_block3_preact_relu", 8: f"conv3_block{b3}_preact_relu",
                    16: f"conv4_block{b4}_preact_relu", 32: "post_relu"},
                   r"^(conv\d_block\d+)_", feature_dim=2048)
      for depth, b3, b4 in ((50, 4, 6), (101, 4, 23), (152, 8, 36))),
    BackboneSpec("inceptionv3", "InceptionV3", 299, "tf",
                 {8: "mixed2", 16: "mixed7", 32: "mixed10"},
                 r"^mixed\d+$", min_size=75, feature_dim=2048, block_end=True),
    BackboneSpec("inceptionresnetv2", "InceptionResNetV2", 299, "tf",
                 {8: "block35_10_ac", 16: "block17_20_ac", 32: "conv_7b_ac"},
                 r"^(mixed_\d[a-z]|block\d+_\d+_ac|conv_7b_ac)$", min_size=75, feature_dim=1536,
                 block_end=True),
    BackboneSpec("xception", "Xception", 299, "tf",
                 {2: "block2_sepconv2_bn", 4: "block3_sepconv2_bn", 8: "block4_sepconv2_bn", 16: "block13_sepconv2_bn",
                  32: "block14_sepconv2_act"},
                 r"^(block\d+)_", min_size=71, feature_dim=2048),
    *(_mobilenet(alpha) for alpha in (0.25, 0.5, 0.75, 1.0)),
    *(_mobilenet_v2(alpha, dim) for alpha, dim in
      ((0.35, 1280), (0.5, 1280), (0.75, 1280), (1.0, 1280), (1.3, 1664), (1.4, 1792))),
    _mobilenet_v3("small", "", {}, 576),
    _mobilenet_v3("small", "_0.75", {"alpha": 0.75}, 432),
    _mobilenet_v3("small", "_minimalistic", {"minimalistic": True}, 576),
    _mobilenet_v3("large", "", {}, 960),
    _mobilenet_v3("large", "_0.75", {"alpha": 0.75}, 720),
    _mobilenet_v3("large", "_minimalistic", {"minimalistic": True}, 960),
    _densenet(121, 1024), _densenet(169, 1664), _densenet(201, 1920),
    # NASNet cells take the two previous cells as inputs, so nothing is a single
    # trunk; the cell outputs (concatenations) are the features and block ends.
    # Stride 2 is the stem's activation, named only by the second reduction cell's
    # adjust block (relu of stem_bn1; the stem's own ReLU is unnamed).
    BackboneSpec("nasnetmobile", "NASNetMobile", 224, "tf",
                 {2: "adjust_relu_1_stem_2", 4: "reduction_concat_stem_1", 8: "normal_concat_3", 16: "normal_concat_8",
                  32: "normal_concat_12"},
                 r"^(normal|reduction)_concat_", feature_dim=1056, block_end=True),
    BackboneSpec("nasnetlarge", "NASNetLarge", 331, "tf",
                 {2: "adjust_relu_1_stem_2", 4: "reduction_concat_stem_1", 8: "normal_concat_5", 16: "normal_concat_12",
                  32: "normal_concat_18"},
                 r"^(normal|reduction)_concat_", feature_dim=4032, block_end=True),
    *(_efficientnet(i, size, dim) for i, size, dim in
      ((0, 224, 1280), (1, 240, 1280), (2, 260, 1408), (3, 300, 1536),
       (4, 380, 1792), (5, 456, 2048), (6, 528, 2304), (7, 600, 2560))),
    *(_efficientnet_v2(v, size, dim, last1, last2) for v, size, dim, last1, last2 in
      (("b0", 224, 1280, "a", "b"), ("b1", 240, 1280, "b", "c"), ("b2", 260, 1408, "b", "c"),
       ("b3", 300, 1536, "b", "c"), ("s", 384, 1280, "b", "d"), ("m", 480, 1280, "c", "e"),
       ("l", 480, 1280, "d", "g"))),
    *(_convnext(v, dim) for v, dim in
      (("tiny", 768), ("small", 768), ("base", 1024), ("large", 1536), ("xlarge", 2048))),
    # Not a Keras application and never pretrained: five conv + pooling blocks that
    # learn simple images from scratch in seconds (transfer.backbones.scratch_cnn).
    BackboneSpec("smallcnn", "SmallCNN", 64, "tf",
                 {2: "block1_pool", 4: "block2_pool", 8: "block3_pool", 16: "block4_pool", 32: "block5_pool"},
                 r"^block(\d+)_", feature_dim=256, module="transfer.backbones.scratch_cnn", pretrained=False),
)
# fmt: on

_BY_NAME = {spec.name: spec for spec in _SPECS}


def list_backbones() -> list[BackboneSpec]:
    """All registered backbones, in registry order.

    Example:
        >>> "resnet50" in [s.name for s in list_backbones()]
        True
    """
    return list(_SPECS)


def get_backbone(name: str) -> BackboneSpec:
    """The spec registered as ``name`` (any case); a ``TransferError`` naming close matches otherwise.

    Example:
        >>> get_backbone("ResNet50").constructor
        'ResNet50'
    """
    key = str(name).strip().lower()
    if key in _BY_NAME:
        return _BY_NAME[key]
    close = difflib.get_close_matches(key, list(_BY_NAME), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise TransferError(
        f"Unknown backbone {name!r}.{hint}",
        fix="Run `transfer backbones` to list the available names.",
    )
