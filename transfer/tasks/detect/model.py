"""The detector's model: backbone -> FPN/PAN neck -> one anchor-free head shared by the levels.

The backbone's stride-8/16/32 features (``transfer.backbones.features``)
go through a feature pyramid: 1x1 lateral convs, a top-down pass (FPN, Lin
et al. 2017) and, for ``neck="pan"``, a bottom-up pass (PANet, Liu et al.
2018) that brings the fine, well-localized maps back up to the coarse levels.
Every level then goes through the same head (FCOS, Tian et al. 2019; ATSS,
Zhang et al. 2020): a classification tower and a box tower of 3x3 conv +
GroupNorm + ReLU (GroupNorm as in FCOS: the head is shared by maps of
different statistics, and detection batches are small), then per location
``C`` class logits and 4 box distances.

Outputs (float32 even under mixed precision), locations of all levels in
``anchor_points`` order (level by level, row-major inside a level):

- ``"class_logits"`` ``[N, L, C]``: sigmoid logits, one binary classifier per
  class (no background class); trained as an IoU-aware score (GFL's quality
  focal loss), so they rank boxes for NMS without a centerness branch.
- ``"box"`` ``[N, L, 4]``: distances ``(left, top, right, bottom)`` from the
  location's center to the box's sides, in units of the level's stride,
  ``>= 0`` (softplus). Plain distances rather than GFL's distribution bins:
  ``encode_boxes``/``decode_boxes`` invert them exactly, so the assigner, the
  loss and the NMS are tested on hand-made boxes; stride units keep the
  targets of all levels in the same range (FCOS's normalized regression), so
  one head serves them all.

``L = sum(ceil(S / stride) ** 2)``. A backbone whose stem uses 'valid'
padding (Inception, Xception) gives slightly smaller maps; they are resized to
``ceil(S / stride)`` so every backbone's locations are ``anchor_points``'.

Example:
    >>> from transfer.backbones import get_backbone
    >>> model, info = build_detector(get_backbone("mobilenet_0.25"), num_classes=3, image_size=64)
    >>> {k: tuple(v.shape) for k, v in model.output.items()}
    {'class_logits': (None, 84, 3), 'box': (None, 84, 4)}
"""

from __future__ import annotations

import math
from typing import Sequence

import keras
import numpy as np

from transfer.backbones import BackboneSpec
from transfer.backbones.features import backbone_features

DETECTION_STRIDES = (8, 16, 32)
NECKS = ("fpn", "pan")
# RetinaNet (Lin et al. 2017, section 4.1): every location starts as background
# with probability 0.99, so the many easy negatives do not swamp the first steps.
CLASS_PRIOR = 0.01
# The box output starts at softplus(bias) = 2 strides each way: a 4-stride box,
# inside the sizes ATSS assigns to a level (its anchor is 8 strides wide).
INITIAL_DISTANCE = 2.0


def level_sizes(image_size: int, strides: Sequence[int] = DETECTION_STRIDES) -> list[int]:
    """Side of each level's map: ``ceil(image_size / stride)`` ('same' padding's rule).

    Example:
        >>> level_sizes(100)
        [13, 7, 4]
    """
    return [math.ceil(image_size / s) for s in strides]


def anchor_points(image_size: int, strides: Sequence[int] = DETECTION_STRIDES) -> tuple[np.ndarray, np.ndarray]:
    """Centers ``[L, 2]`` (x, y in input pixels) and strides ``[L]`` of the detector's locations.

    Cell ``(i, j)`` of the stride-``s`` map is centered at ``((j + 0.5) s, (i + 0.5) s)``;
    levels follow ``strides``, cells are row-major, as in the model's outputs.

    Example:
        >>> points, point_strides = anchor_points(64)
        >>> points.shape, points[0], points[1], point_strides[-1]
        ((84, 2), array([4., 4.], dtype=float32), array([12., 4.], dtype=float32), 32.0)
    """
    centers, per_point = [], []
    for stride, size in zip(strides, level_sizes(image_size, strides)):
        ys, xs = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
        centers.append(np.stack([xs.ravel(), ys.ravel()], axis=-1) * stride + stride / 2)
        per_point.append(np.full(size * size, stride))
    return np.concatenate(centers).astype("float32"), np.concatenate(per_point).astype("float32")


@keras.saving.register_keras_serializable(package="transfer")
class Detector(keras.Model):
    """A functional detector whose ``compile(loss=...)`` takes one loss for all its outputs.

    Keras applies compiled losses output by output, but assigning targets
    needs both outputs at once (the classification target is the IoU of the
    predicted box). Compiled with a loss whose ``takes_all_outputs`` is true
    (``transfer.tasks.detect.loss.DetectionLoss``), ``fit``/``evaluate`` call
    it with the whole target dict and the whole output dict; any other loss
    goes through Keras as usual. Saves and loads as a ``.keras`` file like a
    functional model.

    Example:
        >>> model.compile(optimizer="adam", loss=DetectionLoss(image_size=64))
        >>> model.fit(dataset)  # dataset yields (image, {"boxes": [B, M, 4], "labels": [B, M]})
    """

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if getattr(self.loss, "takes_all_outputs", False):
            total = self.loss(y, y_pred)
            # Weight regularizers and add_loss terms, as Keras's own compute_loss adds them.
            extra = self.losses
            return total + keras.ops.sum(keras.ops.stack(extra)) if extra else total
        return super().compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)


def build_detector(spec: BackboneSpec, num_classes: int, image_size: int, weights=None, *,
                   neck: str = "pan", neck_channels: int = 64, head_convs: int = 2,
                   freeze_batchnorm: bool | None = None):
    """The detector ``(model, weights_info)``: uint8 ``[S, S, 3]`` in, ``{"class_logits", "box"}`` out.

    ``neck``: "fpn" (top-down) or "pan" (top-down + bottom-up);
    ``neck_channels``: width of the neck and head; ``head_convs``: conv layers
    in each head tower. Every layer outside the nested ``"backbone"`` model
    is head (what ``transfer.engine.freezing.set_trainable`` assumes). The model is a
    ``Detector`` (compile it with ``DetectionLoss``).

    Example:
        >>> model, info = build_detector(get_backbone("smallcnn"), 2, 64, neck="fpn")
        >>> model(np.zeros((1, 64, 64, 3), "uint8"))["box"].shape
        TensorShape([1, 84, 4])
    """
    if neck not in NECKS:
        raise ValueError(f"neck must be one of {NECKS}. Received: neck={neck!r}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be at least 1. Received: num_classes={num_classes}")
    if head_convs < 0 or neck_channels < 1:
        raise ValueError("head_convs must be >= 0 and neck_channels >= 1. "
                         f"Received: head_convs={head_convs}, neck_channels={neck_channels}")
    strides = DETECTION_STRIDES
    image, features, info = backbone_features(spec, image_size, weights, strides, freeze_batchnorm)
    sizes = dict(zip(strides, level_sizes(image_size, strides)))
    levels = _pyramid(features, sizes, neck, neck_channels)
    towers = _SharedHead(num_classes, neck_channels, head_convs)
    logits, distances = [], []
    for stride in strides:
        level_logits, level_distances = towers(levels[stride], stride)
        count = sizes[stride] ** 2
        f32 = {"dtype": "float32"}
        logits.append(keras.layers.Reshape((count, num_classes), name=f"class_flat{stride}", **f32)(level_logits))
        distances.append(keras.layers.Reshape((count, 4), name=f"box_flat{stride}", **f32)(level_distances))
    outputs = {
        "class_logits": keras.layers.Concatenate(axis=1, name="class_logits", dtype="float32")(logits),
        "box": keras.layers.Concatenate(axis=1, name="box", dtype="float32")(distances),
    }
    return Detector(image, outputs, name=f"{spec.name}_detector"), info


def _conv_norm_relu(channels: int, name: str, strides: int = 1) -> list:
    # FCOS uses 32 groups at 256 channels; 16 suits the narrower heads here, and gcd keeps
    # it a divisor of the width, so any neck_channels works.
    groups = math.gcd(channels, 16)
    return [keras.layers.Conv2D(channels, 3, strides=strides, padding="same", use_bias=False, name=name),
            keras.layers.GroupNormalization(groups, name=f"{name}_gn"),
            keras.layers.ReLU(name=f"{name}_relu")]


def _apply(layers, x):
    for layer in layers:
        x = layer(x)
    return x


def _pyramid(features: dict, sizes: dict, neck: str, channels: int) -> dict:
    """``{stride: backbone map}`` -> ``{stride: neck map of side sizes[stride], channels wide}``."""
    strides = sorted(features)
    lateral = {}
    for stride in strides:
        x = keras.layers.Conv2D(channels, 1, name=f"neck_lateral{stride}")(features[stride])
        if tuple(x.shape[1:3]) != (sizes[stride], sizes[stride]):
            # 'valid'-padded stems (Inception, Xception): bring the map to the anchor grid.
            x = keras.layers.Resizing(sizes[stride], sizes[stride], interpolation="bilinear",
                                      name=f"neck_grid{stride}")(x)
        lateral[stride] = x
    # Top-down (FPN): each finer map adds the coarser one, upsampled to its exact side
    # (ceil(S/8) is not always 2 * ceil(S/16), so Resizing, not UpSampling2D).
    top_down = {strides[-1]: lateral[strides[-1]]}
    for finer, coarser in zip(strides[-2::-1], strides[:0:-1]):
        up = keras.layers.Resizing(sizes[finer], sizes[finer], interpolation="nearest",
                                   name=f"neck_up{coarser}_to{finer}")(top_down[coarser])
        top_down[finer] = keras.layers.Add(name=f"neck_topdown{finer}")([lateral[finer], up])
    # 3x3 smoothing of the sums (FPN's anti-aliasing conv after upsampling).
    levels = {s: _apply(_conv_norm_relu(channels, f"neck_smooth{s}"), top_down[s]) for s in strides}
    if neck == "fpn":
        return levels
    # Bottom-up (PANet): a strided 3x3 conv takes each map to the next coarser level;
    # ceil(ceil(S/8) / 2) == ceil(S/16), so the sides match exactly.
    bottom_up = {strides[0]: levels[strides[0]]}
    for finer, coarser in zip(strides[:-1], strides[1:]):
        down = _apply(_conv_norm_relu(channels, f"neck_down{finer}_to{coarser}", strides=2), bottom_up[finer])
        merged = keras.layers.Add(name=f"neck_bottomup{coarser}")([levels[coarser], down])
        bottom_up[coarser] = _apply(_conv_norm_relu(channels, f"neck_pan{coarser}"), merged)
    return bottom_up


class _SharedHead:
    """The towers and output convs, built once and called on every level (shared weights)."""

    def __init__(self, num_classes: int, channels: int, convs: int):
        f32 = {"dtype": "float32"}
        self.class_tower = [layer for i in range(convs) for layer in _conv_norm_relu(channels, f"head_class{i}")]
        self.box_tower = [layer for i in range(convs) for layer in _conv_norm_relu(channels, f"head_box{i}")]
        prior_bias = -math.log((1 - CLASS_PRIOR) / CLASS_PRIOR)
        small = keras.initializers.RandomNormal(stddev=0.01)  # RetinaNet's head init
        self.class_out = keras.layers.Conv2D(num_classes, 3, padding="same", kernel_initializer=small,
                                             bias_initializer=keras.initializers.Constant(prior_bias),
                                             name="head_class_logits", **f32)
        softplus_inverse = math.log(math.expm1(INITIAL_DISTANCE))
        self.box_out = keras.layers.Conv2D(4, 3, padding="same", kernel_initializer=small,
                                           bias_initializer=keras.initializers.Constant(softplus_inverse),
                                           name="head_box_raw", **f32)

    def __call__(self, x, stride: int):
        logits = self.class_out(_apply(self.class_tower, x))
        raw = self.box_out(_apply(self.box_tower, x))
        # A softplus layer per level keeps the graph's names unique (it has no weights to share).
        distances = keras.layers.Activation("softplus", name=f"head_box_distances{stride}", dtype="float32")(raw)
        return logits, distances
