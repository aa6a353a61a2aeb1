"""The shared feature extractor: a backbone that answers its named stride features.

Tasks whose heads read spatial features (localize, detect, segment) build
their backbone here: the family's preprocessing layer, then the nested
backbone of ``transfer.backbones.nesting.nested_backbone`` (named so the
engine's freezing rules find it, BatchNorm frozen for pretrained weights)
whose outputs are the ``BackboneSpec`` feature layers at the asked strides.

Example:
    >>> from transfer.backbones import get_backbone
    >>> image, features, info = backbone_features(get_backbone("mobilenet_0.25"), 224, None, (16, 32))
    >>> {s: tuple(t.shape[1:3]) for s, t in features.items()}
    {16: (14, 14), 32: (7, 7)}
"""

from __future__ import annotations

from typing import Sequence

import keras

from transfer.backbones import BackboneSpec
from transfer.backbones.layers import FamilyPreprocessing
from transfer.backbones.nesting import nested_backbone


def backbone_features(spec: BackboneSpec, image_size: int, weights, strides: Sequence[int],
                      freeze_batchnorm: bool | None = None):
    """``(image_input, {stride: feature tensor}, weights_info)`` for a task head to build on.

    ``image_input``: uint8 ``[S, S, 3]`` named ``"image"``. The features come
    out of one call of the nested ``"backbone"`` model, in the order of ``strides``.
    """
    from transfer.backbones.weights import build_backbone

    missing = [s for s in strides if s not in spec.feature_layers]
    if missing:
        raise ValueError(f"{spec.name} has no feature layer at stride {missing}. "
                         f"Received: strides={tuple(strides)}; available: {sorted(spec.feature_layers)}")
    built, info = build_backbone(spec, weights, image_size)
    named = spec.features(built)
    backbone = nested_backbone(built, [named[s] for s in strides], info, freeze_batchnorm)
    image = keras.Input((image_size, image_size, 3), dtype="uint8", name="image")
    outputs = backbone(FamilyPreprocessing(spec.preprocessing, name="preprocess")(image))
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return image, dict(zip(strides, outputs)), info
