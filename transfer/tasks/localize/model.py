"""The localizer's model, box loss and box metrics.

The head reads the backbone's stride-16 and stride-32 features: each is
reduced by a 1x1 conv, the stride-16 map brought to stride 32 by a strided
3x3 conv, the two concatenated and mixed by a 3x3 conv; the map is then
flattened (a box needs *where*, which global pooling throws away), goes
through a dense layer, and answers a box's center and size (normalized by
the image's sides) turned into ``(xmin, ymin, xmax, ymax)`` by plain Keras
layers (no custom layer to register). With several classes a
softmax ``"class"`` output shares the dense layer.

Losses are registered Keras objects (package "transfer"), so checkpoints
holding a compiled model load back.

Example:
    >>> from transfer.backbones import get_backbone
    >>> model, info = build_localizer(get_backbone("mobilenet_0.25"), num_classes=3, image_size=128,
    ...                               weights=None)
    >>> {k: v.shape for k, v in model.output.items()}
    {'box': (None, 4), 'class': (None, 3)}
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import keras

from transfer.backbones import BackboneSpec
from transfer.core.boxops import box_ciou, box_giou, box_iou
from transfer.backbones.features import backbone_features


POOLINGS = ("flatten", "average", "softargmax")


@dataclass(frozen=True)
class HeadShape:
    """The localizer head's sizes (run.json keeps them, so a run rebuilds the same model).

    ``strides``: backbone features fused; ``channels``: width of the conv
    layers; ``hidden``: the dense layer; ``pooling``: "flatten" (keeps where
    things are) or "average".
    """

    strides: tuple[int, ...] = (16, 32)
    channels: int = 64
    hidden: int = 256
    pooling: str = "flatten"

    def to_dict(self) -> dict:
        return {**asdict(self), "strides": list(self.strides)}

    @classmethod
    def from_dict(cls, data) -> "HeadShape":
        data = dict(data or {})
        if "strides" in data:
            data["strides"] = tuple(int(s) for s in data["strides"])
        return cls(**data)


def build_localizer(spec: BackboneSpec, num_classes: int, image_size: int, weights=None, *,
                    head: HeadShape = HeadShape(), dropout: float = 0.2,
                    freeze_batchnorm: bool | None = None):
    """The localizer ``(model, weights_info)``: uint8 ``[S, S, 3]`` in, ``{"box", "class"}`` out.

    ``"box"``: float32 ``[N, 4]`` normalized ``xyxy``; ``"class"``: float32
    ``[N, C]`` softmax, only when ``num_classes > 1``. Every layer outside the
    nested ``"backbone"`` model is head (what ``transfer.engine.freezing.set_trainable`` assumes).
    """
    if head.pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}. Received: pooling={head.pooling!r}")
    image, features, info = backbone_features(spec, image_size, weights, head.strides, freeze_batchnorm)
    if head.pooling == "softargmax":
        return _soft_argmax_localizer(spec, image, features, info, num_classes, head, dropout)
    top = max(head.strides)
    maps = []
    for stride, tensor in sorted(features.items()):
        x = keras.layers.Conv2D(head.channels, 1, activation="relu", name=f"box_lateral{stride}")(tensor)
        # Strided 3x3 convs bring finer maps to the top stride: ceil(ceil(S/16)/2) == ceil(S/32)
        # for any S, where upsampling the coarse map could miss by one pixel.
        step = stride
        while step < top:
            step *= 2
            x = keras.layers.Conv2D(head.channels, 3, strides=2, padding="same", activation="relu",
                                    name=f"box_down{stride}_to{step}")(x)
        maps.append(x)
    x = maps[0] if len(maps) == 1 else keras.layers.Concatenate(name="box_fuse")(maps)
    x = keras.layers.Conv2D(head.channels, 3, padding="same", activation="relu", name="box_mix")(x)
    if head.pooling == "flatten":
        x = keras.layers.Flatten(name="box_flatten")(x)
    else:
        x = keras.layers.GlobalAveragePooling2D(name="box_pool")(x)
    x = keras.layers.Dropout(dropout, name="box_dropout")(x)
    x = keras.layers.Dense(head.hidden, activation="relu", name="box_hidden")(x)
    outputs = {"box": _box_output(x)}
    if num_classes > 1:
        # float32 scores even under mixed precision, so losses and exports stay exact.
        outputs["class"] = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="class")(x)
    model = keras.Model(image, outputs, name=f"{spec.name}_localizer")
    return model, info


def _soft_argmax_localizer(spec, image, features, info, num_classes: int, head: HeadShape, dropout: float):
    """Every cell of the finest fused map proposes a box around itself and a score; the box is
    the softmax-weighted mean of the proposals (``SoftArgmaxBox``)."""
    finest = min(features)
    height, width = features[finest].shape[1:3]
    maps = []
    for stride, tensor in sorted(features.items()):
        x = keras.layers.Conv2D(head.channels, 1, activation="relu", name=f"box_lateral{stride}")(tensor)
        if stride != finest:
            # A fixed target size: ceil(S/16) is not always 2 * ceil(S/32).
            x = keras.layers.Resizing(height, width, interpolation="bilinear", name=f"box_up{stride}")(x)
        maps.append(x)
    x = maps[0] if len(maps) == 1 else keras.layers.Concatenate(name="box_fuse")(maps)
    x = keras.layers.Conv2D(head.channels, 3, padding="same", activation="relu", name="box_mix")(x)
    x = keras.layers.SpatialDropout2D(dropout, name="box_dropout")(x)
    x = keras.layers.Conv2D(head.channels, 3, padding="same", activation="relu", name="box_mix2")(x)
    f32 = {"dtype": "float32"}
    scores = keras.layers.Conv2D(1, 1, kernel_initializer="zeros", name="box_scores", **f32)(x)
    # softplus(-1.26) = 0.25: each cell starts with a box reaching a quarter of the image each way.
    distances = keras.layers.Conv2D(4, 1, kernel_initializer="zeros",
                                    bias_initializer=keras.initializers.Constant(-1.26),
                                    name="box_distances", **f32)(x)
    outputs = {"box": SoftArgmaxBox(name="box", **f32)([scores, distances])}
    if num_classes > 1:
        pooled = keras.layers.GlobalAveragePooling2D(name="class_pool")(x)
        outputs["class"] = keras.layers.Dense(num_classes, activation="softmax", name="class", **f32)(pooled)
    return keras.Model(image, outputs, name=f"{spec.name}_localizer"), info


@keras.saving.register_keras_serializable(package="transfer")
class SoftArgmaxBox(keras.layers.Layer):
    """``[scores [N, H, W, 1], distances [N, H, W, 4]]`` -> the box ``[N, 4]`` (normalized ``xyxy``).

    Cell ``(i, j)`` proposes the box reaching ``softplus(distances)`` (left, top,
    right, bottom; in image widths/heights) from its center; the answer is the
    mean of the proposals weighted by the softmax of the scores over all cells.
    Translation-equivariant, unlike a dense layer on flattened features, so
    160 training images teach it more.

    Example:
        >>> SoftArgmaxBox()([tf.zeros([1, 2, 2, 1]), tf.fill([1, 2, 2, 4], -50.0)])  # points: [[0.5, 0.5, 0.5, 0.5]]
    """

    def call(self, inputs):
        scores, distances = inputs
        ops = keras.ops
        scores = ops.cast(scores, "float32")
        distances = ops.softplus(ops.cast(distances, "float32"))
        height, width = ops.shape(scores)[1], ops.shape(scores)[2]
        ys = (ops.cast(ops.arange(height), "float32") + 0.5) / ops.cast(height, "float32")
        xs = (ops.cast(ops.arange(width), "float32") + 0.5) / ops.cast(width, "float32")
        cx = ops.broadcast_to(xs[None, :], (height, width))
        cy = ops.broadcast_to(ys[:, None], (height, width))
        boxes = ops.stack([cx - distances[..., 0], cy - distances[..., 1],
                           cx + distances[..., 2], cy + distances[..., 3]], axis=-1)
        weights = ops.softmax(ops.reshape(scores, (-1, height * width)), axis=-1)
        return ops.einsum("nk,nkc->nc", weights, ops.reshape(boxes, (-1, height * width, 4)))

    def compute_output_shape(self, input_shapes):
        return (input_shapes[0][0], 4)


def _box_output(x):
    """Center and size (linear, starting at the image's middle and half its size) ->
    ``(xmin, ymin, xmax, ymax)``, in float32.

    Linear, not sigmoid: Adam's first steps move every weight of the wide dense
    layers at once, which drove sigmoid outputs into saturation (raccoon: the
    loss rose and froze within 10 steps). A box that comes out inverted or
    outside the image is clipped by the export; the L1 loss pulls it back in training.
    """
    f32 = {"dtype": "float32"}
    # Zero kernels: every image starts at the middle box, not at a random one far outside.
    start = {"kernel_initializer": "zeros", "bias_initializer": keras.initializers.Constant(0.5), **f32}
    center = keras.layers.Dense(2, name="box_center", **start)(x)
    size = keras.layers.Dense(2, name="box_size", **start)(x)
    half = keras.layers.Rescaling(0.5, name="box_half_size", **f32)(size)
    corner_min = keras.layers.Subtract(name="box_min", **f32)([center, half])
    corner_max = keras.layers.Add(name="box_max", **f32)([center, half])
    return keras.layers.Concatenate(name="box", **f32)([corner_min, corner_max])


@keras.saving.register_keras_serializable(package="transfer")
class BoxLoss(keras.losses.Loss):
    """``iou_weight * (1 - GIoU or CIoU) + l1_weight * sum |box - target|`` per image.

    Boxes are normalized ``xyxy`` ``[N, 4]``. The IoU term is scale-free and
    keeps a gradient for boxes that do not overlap (GIoU); the L1 term pulls
    the corners directly. The weights 1 : 2.5 are DETR's 2 : 5.

    Example:
        >>> BoxLoss()(tf.constant([[0.1, 0.1, 0.5, 0.5]]), tf.constant([[0.1, 0.1, 0.5, 0.5]]))  # 0.0
    """

    def __init__(self, kind: str = "giou", iou_weight: float = 1.0, l1_weight: float = 2.5,
                 name: str = "box_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        if kind not in ("giou", "ciou"):
            raise ValueError(f"kind must be 'giou' or 'ciou'. Received: kind={kind!r}")
        self.kind = kind
        self.iou_weight = float(iou_weight)
        self.l1_weight = float(l1_weight)

    def call(self, y_true, y_pred):
        y_true = keras.ops.cast(y_true, "float32")
        y_pred = keras.ops.cast(y_pred, "float32")
        overlap = box_giou(y_true, y_pred) if self.kind == "giou" else box_ciou(y_true, y_pred)
        l1 = keras.ops.sum(keras.ops.abs(y_pred - y_true), axis=-1)
        return self.iou_weight * (1.0 - overlap) + self.l1_weight * l1

    def get_config(self):
        return {**super().get_config(), "kind": self.kind, "iou_weight": self.iou_weight,
                "l1_weight": self.l1_weight}


@keras.saving.register_keras_serializable(package="transfer")
class BoxIoU(keras.metrics.Mean):
    """Mean IoU of predicted and true normalized boxes; with ``threshold``, the share of
    images whose IoU is at least that (IoU@0.5 accuracy).

    Example:
        >>> metric = BoxIoU(threshold=0.5, name="iou50")
    """

    def __init__(self, threshold: float | None = None, name: str = "iou", **kwargs):
        super().__init__(name=name, **kwargs)
        self.threshold = None if threshold is None else float(threshold)

    def update_state(self, y_true, y_pred, sample_weight=None):
        iou = box_iou(keras.ops.cast(y_true, "float32"), keras.ops.cast(y_pred, "float32"))
        if self.threshold is not None:
            iou = keras.ops.cast(iou >= self.threshold, "float32")
        return super().update_state(iou, sample_weight=sample_weight)

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}
