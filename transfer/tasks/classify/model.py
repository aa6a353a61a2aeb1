"""Image classification (single- and multi-label): model, loss and metrics.

The model takes raw uint8 images ``[S, S, 3]``; the family's preprocessing is
a layer inside it, then the backbone, then the head: pooling -> dropout ->
dense (softmax, or sigmoid for multi-label).

The backbone is nested by ``transfer.backbones.nesting`` (its BatchNorm rule is there).

Example:
    >>> from transfer.backbones import get_backbone
    >>> model, info = build_classifier(get_backbone("mobilenet_0.25"), num_classes=5,
    ...                                image_size=128, weights=None)
    >>> model.output_shape
    (None, 5)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from transfer.backbones import BackboneSpec

# Keras is imported inside the functions: the readers, the task and the report import
# MULTI_LABEL_THRESHOLD from here without loading Keras.

HEAD_LAYERS = ("pool", "dropout", "scores")


def build_classifier(
    spec: BackboneSpec,
    num_classes: int,
    image_size: int,
    weights: str | None = "imagenet",
    multi_label: bool = False,
    dropout: float = 0.2,
    freeze_batchnorm: bool | None = None,
):
    """Build the classifier; returns ``(model, weights_info)``.

    ``weights_info`` is the ``transfer.backbones.weights.WeightsInfo`` saying where the
    backbone's weights came from. ``freeze_batchnorm`` (default: unless the
    weights are random) keeps BatchNorm in inference mode (see module doc).
    """
    import keras

    from transfer.backbones.layers import FamilyPreprocessing
    from transfer.backbones.nesting import nested_backbone
    from transfer.backbones.weights import build_backbone

    if num_classes < 2 and not multi_label:
        raise ValueError(f"A classifier needs at least 2 classes. Received: num_classes={num_classes}")
    built, info = build_backbone(spec, weights, image_size)
    backbone = nested_backbone(built, built.output, info, freeze_batchnorm)
    inputs = keras.Input((image_size, image_size, 3), dtype="uint8", name="image")
    x = FamilyPreprocessing(spec.preprocessing, name="preprocess")(inputs)
    x = backbone(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    activation = "sigmoid" if multi_label else "softmax"
    # float32 scores even under mixed precision, so losses and exports stay exact.
    outputs = keras.layers.Dense(num_classes, activation=activation, dtype="float32", name="scores")(x)
    model = keras.Model(inputs, outputs, name=f"{spec.name}_classifier")
    return model, info


# A multi-label class is predicted when its score is >= this (training's F1, evaluate, the
# export and predict alike; the export records it as ``threshold``).
MULTI_LABEL_THRESHOLD = 0.5
# Keras's F1Score counts a label when its score is > threshold; the largest float32
# below 0.5 makes that ">= 0.5", the rule of evaluate, the export and predict.
_F1_THRESHOLD = float(np.nextafter(np.float32(MULTI_LABEL_THRESHOLD), np.float32(0)))


def monitor_for(multi_label: bool) -> str:
    """The validation metric that picks the best epoch (and early stopping watches).

    Single-label: ``val_accuracy``. Multi-label: ``val_macro_f1``, the mean over
    labels of each label's F1 at the threshold 0.5. (Per-label binary accuracy
    would mislead: with 2 of 8 labels per image, predicting no label at all
    scores 0.75.)

    Example:
        >>> monitor_for(False), monitor_for(True)
        ('val_accuracy', 'val_macro_f1')
    """
    return "val_macro_f1" if multi_label else "val_accuracy"


def loss_and_metrics(multi_label: bool, label_smoothing: float = 0.0):
    """The loss and metrics to compile with; targets are one-hot / multi-hot floats.

    Multi-label runs log ``macro_f1`` (see ``monitor_for``), the per-label
    binary ``accuracy`` and ``auc``.
    """
    import keras

    if multi_label:
        loss = keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing)
        metrics = [
            keras.metrics.F1Score(average="macro", threshold=_F1_THRESHOLD, name="macro_f1"),
            keras.metrics.BinaryAccuracy(name="accuracy"),
            keras.metrics.AUC(multi_label=True, name="auc"),
        ]
    else:
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
        metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
    return loss, metrics
