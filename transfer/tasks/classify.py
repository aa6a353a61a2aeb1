"""Image classification (single- and multi-label): model, loss and metrics.

The model takes raw uint8 images ``[S, S, 3]``; the family's preprocessing is
a layer inside it, then the backbone, then the head: pooling -> dropout ->
dense (softmax, or sigmoid for multi-label).

A pretrained backbone's BatchNorm layers are made non-trainable, which in
Keras 3 is what keeps them in inference mode (their ImageNet statistics stay)
even while the rest of the backbone trains. Calling the backbone with
``training=False``, as the Keras guide does, is not enough in Keras 3:
``fit`` overrides a nested ``training=False`` (keras-team/keras#20285).

A backbone with random weights is the exception: it has no statistics to
keep, and in inference mode its untrained BatchNorm layers shrink the
features to ~1e-17, so nothing could learn. Its BatchNorm trains normally.

Example:
    >>> from transfer.backbones import get_backbone
    >>> model, info = build_classifier(get_backbone("mobilenet_0.25"), num_classes=5,
    ...                                image_size=128, weights=None)
    >>> model.output_shape
    (None, 5)
"""

from __future__ import annotations

import keras
import numpy as np

from transfer.backbones import BackboneSpec
from transfer.layers import FamilyPreprocessing

BACKBONE_LAYER = "backbone"
# Random BatchNorm statistics must catch up within a short run: the default
# momentum (0.99) needs ~500 steps, leaving validation at chance.
RANDOM_BATCHNORM_MOMENTUM = 0.9
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

    ``weights_info`` is the ``transfer.weights.WeightsInfo`` saying where the
    backbone's weights came from. ``freeze_batchnorm`` (default: unless the
    weights are random) keeps BatchNorm in inference mode (see module doc).
    """
    from transfer.weights import build_backbone

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


def nested_backbone(built, outputs, info, freeze_batchnorm: bool | None = None):
    """``built`` (a ``keras.applications`` model) as a model named ``BACKBONE_LAYER`` answering
    ``outputs``, its BatchNorm set by the rule of this module's doc: frozen for pretrained
    weights (``freeze_batchnorm`` None: unless ``info.source`` is "random"), else momentum
    ``RANDOM_BATCHNORM_MOMENTUM``. Every task's model nests its backbone this way.

    Example:
        >>> built, info = build_backbone(get_backbone("mobilenet_0.25"), None, 128)
        >>> nested_backbone(built, built.output, info).name
        'backbone'
    """
    # A fixed name, so training and reports find the backbone whatever Keras called it.
    backbone = keras.Model(built.input, outputs, name=BACKBONE_LAYER)
    if freeze_batchnorm is None:
        freeze_batchnorm = info.source != "random"
    if freeze_batchnorm:
        freeze_batchnorm_layers(backbone)
    else:
        for layer in _all_layers(backbone):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = RANDOM_BATCHNORM_MOMENTUM
    return backbone


def freeze_batchnorm_layers(backbone) -> None:
    """Make every BatchNormalization layer non-trainable, i.e. always in inference mode."""
    for layer in _all_layers(backbone):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):  # a nested model
            yield from _all_layers(layer)


def leaf_layers(model):
    """Every layer of ``model`` that is not itself a model, nested models walked through.

    Example:
        >>> {layer.name for layer in leaf_layers(classifier)} >= {"conv1", "scores"}
        True
    """
    for layer in model.layers:
        if hasattr(layer, "layers"):
            yield from leaf_layers(layer)
        else:
            yield layer


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
