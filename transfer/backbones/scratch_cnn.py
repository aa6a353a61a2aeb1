"""A small plain CNN for training from scratch, in the shape of a ``keras.applications`` backbone.

Every ``keras.applications`` architecture is built for ImageNet-sized data:
with random weights and a few hundred images, even the smallest (MobileNetV3
Small, minimalistic) needs minutes to learn drawn shapes (0.97 after 10 epochs
at 128 px, ~160 s on two cores). Five conv-BN-ReLU blocks of stride 2 learn
them in well under a minute at 64 px. Pooling, not strided convolutions, does
the downsampling (measured on 900 drawn shapes, 10 epochs: strided convs
stayed at 0.5 validation accuracy, max pooling reached 1.0), and BatchNorm
averages its statistics over ~10 steps (momentum 0.9, not Keras's 0.99): a
small dataset has few steps per epoch, and with 0.99 validation lagged
training by 0.1-0.4 for most of the run. This is what the demo trains when no
ImageNet weights can be had, and what ``--backbone smallcnn --weights none``
gives anyone with simple images and no pretrained weights.

It is called like a Keras application (``include_top``, ``weights``,
``input_shape``), so the backbone registry builds it like the others, and its
layers are named per block (``block3_pool`` is the stride-8 feature).

Example:
    >>> model = SmallCNN(include_top=False, weights=None, input_shape=(64, 64, 3))
    >>> model.output_shape
    (None, 2, 2, 256)
"""

from __future__ import annotations

import os

# Channels of blocks 1-5 (strides 2, 4, 8, 16, 32).
WIDTHS = (16, 32, 64, 128, 256)


def SmallCNN(include_top: bool = False, weights: str | os.PathLike | None = None,
             input_shape: tuple = (64, 64, 3), widths: tuple[int, ...] = WIDTHS):  # noqa: N802 (Keras naming)
    """Five blocks of 3x3 conv -> BatchNorm -> ReLU -> 2x2 max pooling; no classifier top.

    ``weights`` is ``None`` (random) or a weights file this architecture saved
    (``model.save_weights``); there are no ImageNet weights for it.
    """
    import keras
    from keras import layers

    if include_top:
        raise ValueError("SmallCNN is a backbone: it has no classifier top. Received: include_top=True")
    if isinstance(weights, str) and weights.strip().lower() == "imagenet":
        raise ValueError("SmallCNN has no ImageNet weights: train it from scratch (weights=None). "
                         "Received: weights='imagenet'")
    inputs = keras.Input(input_shape, name="input_layer")
    x = inputs
    for block, width in enumerate(widths, start=1):
        x = layers.Conv2D(width, 3, padding="same", use_bias=False, name=f"block{block}_conv")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"block{block}_bn")(x)
        x = layers.ReLU(name=f"block{block}_relu")(x)
        x = layers.MaxPooling2D(name=f"block{block}_pool")(x)
    model = keras.Model(inputs, x, name="smallcnn")
    if weights is not None:
        model.load_weights(os.fspath(weights))
    return model
