"""Image classification (single- and multi-label): model, loss and metrics.

The model takes raw uint8 images ``[S, S, 3]``; the family's preprocessing is
a layer inside it, the backbone is always called with ``training=False`` (so
BatchNorm keeps its ImageNet statistics even when its weights train), and the
head is pooling -> dropout -> dense (softmax, or sigmoid for multi-label).

Example:
    >>> from transfer.backbones import get_backbone
    >>> model, info = build_classifier(get_backbone("mobilenet_0.25"), num_classes=5,
    ...                                image_size=128, weights=None)
    >>> model.output_shape
    (None, 5)
"""

from __future__ import annotations

import keras

from transfer.backbones import BackboneSpec
from transfer.layers import FamilyPreprocessing

BACKBONE_LAYER = "backbone"
HEAD_LAYERS = ("pool", "dropout", "scores")


def build_classifier(
    spec: BackboneSpec,
    num_classes: int,
    image_size: int,
    weights: str | None = "imagenet",
    multi_label: bool = False,
    dropout: float = 0.2,
):
    """Build the classifier; returns ``(model, weights_info)``.

    ``weights_info`` is the ``transfer.weights.WeightsInfo`` saying where the
    backbone's weights came from.
    """
    from transfer.weights import build_backbone

    if num_classes < 2 and not multi_label:
        raise ValueError(f"A classifier needs at least 2 classes. Received: num_classes={num_classes}")
    backbone, info = build_backbone(spec, weights, image_size)
    inputs = keras.Input((image_size, image_size, 3), dtype="uint8", name="image")
    x = FamilyPreprocessing(spec.preprocessing, name="preprocess")(inputs)
    x = backbone(x, training=False)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    activation = "sigmoid" if multi_label else "softmax"
    # float32 scores even under mixed precision, so losses and exports stay exact.
    outputs = keras.layers.Dense(num_classes, activation=activation, dtype="float32", name="scores")(x)
    model = keras.Model(inputs, outputs, name=f"{spec.name}_classifier")
    return model, info


def loss_and_metrics(multi_label: bool, label_smoothing: float = 0.0):
    """The loss and metrics to compile with; targets are one-hot / multi-hot floats."""
    if multi_label:
        loss = keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing)
        metrics = [
            keras.metrics.BinaryAccuracy(name="accuracy"),
            keras.metrics.AUC(multi_label=True, name="auc"),
        ]
    else:
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
        metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
    return loss, metrics
