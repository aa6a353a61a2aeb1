"""The segmenter's model: backbone -> U-Net or FCN-8s decoder -> per-pixel class logits.

The backbone's named stride features (``transfer.backbones.features``)
feed one of two decoders:

- ``"unet"`` (Ronneberger et al. 2015, with a pretrained encoder as in the
  segmentation_models "Unet"): from the stride-32 map up, each stage (16, 8,
  4, 2, 1) upsamples x2 (bilinear: transposed convs leave checkerboard
  artifacts, Odena et al. 2016), concatenates the encoder's map at that stride
  when the backbone names one, and applies two 3x3 conv + BatchNorm + ReLU.
  A 1x1 conv gives the logits at full resolution.
- ``"fcn"`` (FCN-8s, Long et al. 2015): 1x1 class-score convs on the stride
  8/16/32 maps, summed coarse to fine after x2 upsampling, then upsampled x8.

Output: ONE float32 tensor (even under mixed precision) ``[N, S, S, C]`` of
softmax logits, from a layer named ``"mask"``; the input is the uint8
``[S, S, 3]`` ``"image"``. ``C >= 2`` (a binary task is background +
foreground). Backbones without a stride-2/4 layer (Inception: neither;
ConvNeXt: no 2) just get no skip at those stages; 'valid'-stem backbones
(Inception, Xception, NASNet), whose maps are a pixel or two short, are
resized to ``ceil(S / stride)`` first, as the detector does.

Example:
    >>> from transfer.backbones import get_backbone
    >>> model, info = build_segmenter(get_backbone("mobilenet_0.25"), num_classes=3, image_size=64)
    >>> model.output_shape, model.output_names
    ((None, 64, 64, 3), ['mask'])
"""

from __future__ import annotations

import math
from typing import Sequence

import keras

from transfer.backbones import BackboneSpec
from transfer.backbones.features import backbone_features
from transfer.backbones.nesting import RANDOM_BATCHNORM_MOMENTUM

DECODERS = ("unet", "fcn")
# U-Net stages, deepest first: each doubles the resolution of the one before.
UNET_STAGES = (16, 8, 4, 2, 1)
# Widths of the U-Net stages above. segmentation_models uses (256, 128, 64, 32, 16);
# the three coarse stages are halved here: their first conv reads the upsampled map
# concatenated with a wide skip (1024 + 2048 channels on ResNet-50), so they hold
# most of the decoder's weights (~4x fewer with half the width), while the fine
# stages, which cost the most per image on 2 CPU cores, are already at 16.
UNET_WIDTHS = (128, 64, 32, 16, 16)
FCN_STRIDES = (8, 16, 32)
OUTPUT_NAME = "mask"


def build_segmenter(spec: BackboneSpec, num_classes: int, image_size: int, weights=None, *,
                    decoder: str = "unet", dropout: float = 0.0, widths: Sequence[int] | None = None,
                    freeze_batchnorm: bool | None = None, finest_stride: int = 1):
    """The segmenter ``(model, weights_info)``: uint8 ``[S, S, 3]`` in, float32 logits ``[S, S, C]`` out.

    ``decoder``: ``"unet"`` or ``"fcn"``; ``dropout``: spatial dropout on the
    decoder's last map (U-Net) or the stride-32 map (FCN); ``widths``: the five
    U-Net stage widths (strides 16, 8, 4, 2, 1; default ``UNET_WIDTHS``), not
    used by FCN; ``finest_stride``: the U-Net's last stage (1, 2 or 4): its
    logits are upsampled bilinearly from there to the input size, as
    DeepLabV3+ does from stride 4 (the full-resolution stages cost most of a
    CPU step: thin convolutions and BatchNorm over every pixel). Encoder
    BatchNorm follows ``backbone_features``' rule, decoder BatchNorm trains with momentum 0.9. Every layer outside the nested
    ``"backbone"`` model is head (what ``transfer.engine.freezing.set_trainable`` assumes).

    Example:
        >>> model, info = build_segmenter(get_backbone("smallcnn"), 2, 64, decoder="fcn")
        >>> model(np.zeros((1, 64, 64, 3), "uint8")).shape
        TensorShape([1, 64, 64, 2])
    """
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}. Received: decoder={decoder!r}")
    if num_classes < 2:
        raise ValueError("num_classes must be at least 2 (a binary task is background + foreground). "
                         f"Received: num_classes={num_classes}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1). Received: dropout={dropout}")
    if widths is not None:
        if decoder != "unet":
            raise ValueError(f"widths sets the U-Net decoder's stages. Received: widths={widths!r} "
                             f"with decoder={decoder!r}")
        widths = tuple(int(w) for w in widths)
        if len(widths) != len(UNET_STAGES) or min(widths) < 1:
            raise ValueError(f"widths must be {len(UNET_STAGES)} positive widths, for strides {UNET_STAGES}. "
                             f"Received: widths={widths!r}")
    if finest_stride not in UNET_STAGES[-3:]:
        raise ValueError(f"finest_stride must be one of {UNET_STAGES[-3:]}. Received: finest_stride={finest_stride!r}")
    if decoder == "unet":
        # Only the skips the decoder reaches: a stage below finest_stride is never built.
        strides = [s for s in (*UNET_STAGES[:-1], 32) if s in spec.feature_layers and s >= finest_stride]
    else:
        strides = list(FCN_STRIDES)
    image, features, info = backbone_features(spec, image_size, weights, strides, freeze_batchnorm)
    features = {s: _on_grid(t, _side(image_size, s), f"grid{s}") for s, t in features.items()}
    if decoder == "unet":
        logits = _unet(features, image_size, num_classes, widths or UNET_WIDTHS, dropout, finest_stride)
    else:
        logits = _fcn(features, image_size, num_classes, dropout)
    return keras.Model(image, logits, name=f"{spec.name}_segmenter"), info


def _side(image_size: int, stride: int) -> int:
    # 'same' padding's rule, and what every registered backbone gives at multiples of 32.
    return math.ceil(image_size / stride)


def _on_grid(x, side: int, name: str):
    """``x`` resized to ``side x side`` when a 'valid'-padded stem left it a pixel or two short."""
    if tuple(x.shape[1:3]) == (side, side):
        return x
    return keras.layers.Resizing(side, side, interpolation="bilinear", name=name)(x)


def _upsample(x, side: int, name: str, dtype=None):
    # Resizing to the exact side, not UpSampling2D: ceil(S/8) is not always 2 * ceil(S/16).
    extra = {"dtype": dtype} if dtype else {}
    return keras.layers.Resizing(side, side, interpolation="bilinear", name=name, **extra)(x)


def _conv_bn_relu(x, width: int, name: str):
    x = keras.layers.Conv2D(width, 3, padding="same", use_bias=False, name=name)(x)
    # Decoder BatchNorm starts from nothing: momentum 0.9, like randomly initialized backbones.
    x = keras.layers.BatchNormalization(momentum=RANDOM_BATCHNORM_MOMENTUM, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def _unet(features: dict, image_size: int, num_classes: int, widths: Sequence[int], dropout: float,
          finest_stride: int = 1):
    x = features[32]
    for stride, width in zip(UNET_STAGES, widths):
        if stride < finest_stride:
            break
        prefix = f"decoder{stride}"
        x = _upsample(x, _side(image_size, stride), f"{prefix}_up")
        if stride in features:  # no skip where the backbone names no layer (Inception 2/4, ConvNeXt 2)
            x = keras.layers.Concatenate(name=f"{prefix}_concat")([x, features[stride]])
        x = _conv_bn_relu(x, width, f"{prefix}_conv1")
        x = _conv_bn_relu(x, width, f"{prefix}_conv2")
    if dropout > 0:
        x = keras.layers.SpatialDropout2D(dropout, name="decoder_dropout")(x)
    # float32 logits even under mixed precision: the loss's log-softmax and exports stay exact.
    if finest_stride == 1:
        return keras.layers.Conv2D(num_classes, 1, dtype="float32", name=OUTPUT_NAME)(x)
    logits = keras.layers.Conv2D(num_classes, 1, dtype="float32", name="logits")(x)
    return _upsample(logits, image_size, OUTPUT_NAME, "float32")


def _fcn(features: dict, image_size: int, num_classes: int, dropout: float):
    f32 = {"dtype": "float32"}  # the score maps are C channels wide: float32 costs nothing
    top = features[32]
    if dropout > 0:
        top = keras.layers.SpatialDropout2D(dropout, name="fcn_dropout")(top)
    x = keras.layers.Conv2D(num_classes, 1, name="fcn_score32", **f32)(top)
    for stride in (16, 8):
        # Long et al. 2015, section 4.2: the skip score layers start at zero, so the
        # net starts as FCN-32s and the finer maps add detail as they learn.
        score = keras.layers.Conv2D(num_classes, 1, kernel_initializer="zeros", name=f"fcn_score{stride}",
                                    **f32)(features[stride])
        up = _upsample(x, _side(image_size, stride), f"fcn_up{stride}", "float32")
        x = keras.layers.Add(name=f"fcn_add{stride}", **f32)([up, score])
    # The final x8 is a fixed bilinear upsampling (FCN's own choice for its last layer).
    return _upsample(x, image_size, OUTPUT_NAME, "float32")
