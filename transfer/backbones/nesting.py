"""A backbone nested as one layer of a task's model, and the BatchNorm rule every task follows.

A pretrained backbone's BatchNorm layers are made non-trainable, which in
Keras 3 is what keeps them in inference mode (their ImageNet statistics stay)
even while the rest of the backbone trains. Calling the backbone with
``training=False``, as the Keras guide does, is not enough in Keras 3:
``fit`` overrides a nested ``training=False`` (keras-team/keras#20285).

A backbone with random weights is the exception: it has no statistics to
keep, and in inference mode its untrained BatchNorm layers shrink the
features to ~1e-17, so nothing could learn. Its BatchNorm trains normally.

Example:
    >>> built, info = build_backbone(get_backbone("mobilenet_0.25"), None, 128)
    >>> nested_backbone(built, built.output, info).name
    'backbone'
"""

from __future__ import annotations

import keras

BACKBONE_LAYER = "backbone"
# Random BatchNorm statistics must catch up within a short run: the default
# momentum (0.99) needs ~500 steps, leaving validation at chance.
RANDOM_BATCHNORM_MOMENTUM = 0.9


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
