"""Models for tests that behave like pretrained ones without downloading anything.

A backbone with random weights and untrained BatchNorm statistics produces
features of ~1e-17 in inference mode; ``calibrate_batchnorm`` sets every
BatchNorm layer's moving statistics from real images, as pretraining would,
so features (and gradients through a frozen backbone) are meaningful.
"""

import keras
import numpy as np

from transfer.backbones import get_backbone
from transfer.backbones.nesting import BACKBONE_LAYER
from transfer.tasks.classify.model import build_classifier


def calibrate_batchnorm(model, images) -> None:
    """Set the moving mean/variance of the backbone's BatchNorm layers from ``images``."""
    backbone = model.get_layer(BACKBONE_LAYER)
    layers = [l for l in backbone.layers if isinstance(l, keras.layers.BatchNormalization)]
    saved = [l.momentum for l in layers]
    trainable = [l.trainable for l in layers]
    for layer in layers:
        layer.momentum = 0.0  # one training-mode call copies the batch statistics
        layer.trainable = True  # a non-trainable BatchNorm ignores training=True
    backbone(model.get_layer("preprocess")(images), training=True)
    for layer, momentum, was_trainable in zip(layers, saved, trainable):
        layer.momentum = momentum
        layer.trainable = was_trainable


def pretrained_like_classifier(num_classes=3, image_size=32, backbone="mobilenet_0.25", seed=0):
    """A classifier whose frozen backbone gives non-trivial features (see module doc)."""
    keras.utils.set_random_seed(seed)
    model, _ = build_classifier(get_backbone(backbone), num_classes, image_size, weights=None,
                                freeze_batchnorm=True)
    images = np.random.default_rng(seed).integers(0, 256, (16, image_size, image_size, 3), dtype=np.uint8)
    calibrate_batchnorm(model, images)
    return model
