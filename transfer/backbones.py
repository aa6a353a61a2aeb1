"""Registry of pretrained backbones from ``keras.applications``.

One frozen ``BackboneSpec`` per architecture (and width), named by the
lowercase Keras name with the width as suffix where Keras has several:
``vgg16``, ``resnet50``, ``mobilenet_0.25``, ``mobilenetv2_0.35``, ...

Example:
    >>> spec = get_backbone("mobilenet_0.25")
    >>> spec.default_size, spec.preprocessing, spec.feature_layers[32]
    (224, 'tf', 'conv_pw_13_relu')
    >>> [s.name for s in list_backbones()][:3]
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

from transfer.errors import TransferError

STRIDES = (4, 8, 16, 32)


@dataclass(frozen=True)
class BackboneSpec:
    """What ``transfer`` needs to know about one ``keras.applications`` architecture.

    Attributes:
        name: registry name, e.g. ``"resnet50"`` or ``"mobilenet_0.25"``.
        constructor: the ``keras.applications`` attribute, e.g. ``"ResNet50"``.
        kwargs: extra constructor arguments (``{"alpha": 0.25}``).
        default_size: the input size the ImageNet weights were trained at.
        preprocessing: ``"caffe" | "tf" | "torch" | "none"`` (see ``transfer.layers``).
        feature_layers: output stride (4, 8, 16, 32) -> layer name, for
            detection and segmentation heads. Names, never indices.
        block_pattern: regex whose group 1 names the block a layer belongs to;
            used to unfreeze "the top N blocks". Layers that do not match join
            the block before them.
        min_size: smallest input side the architecture accepts.
    """

    name: str
    constructor: str
    default_size: int
    preprocessing: str
    feature_layers: Mapping[int, str]
    block_pattern: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    min_size: int = 32

    def __post_init__(self):
        object.__setattr__(self, "kwargs", MappingProxyType(dict(self.kwargs)))
        object.__setattr__(self, "feature_layers", MappingProxyType(dict(self.feature_layers)))

    def instantiate(self, weights: str | None, input_shape: tuple) -> "keras.Model":  # noqa: F821
        """Call the ``keras.applications`` constructor without its classifier top.

        ``weights`` is passed to Keras as is (``"imagenet"``, ``None`` or a file
        path); ``transfer.weights.build_backbone`` is the user-facing entry that
        adds clear errors and logging around this.
        """
        import keras

        constructor = getattr(keras.applications, self.constructor)
        return constructor(include_top=False, weights=weights, input_shape=input_shape, **self.kwargs)

    def blocks(self, model) -> list[list[str]]:
        """Group the backbone's layer names into blocks, bottom to top."""
        pattern = re.compile(self.block_pattern)
        blocks: list[list[str]] = []
        current_key = None
        for layer in model.layers:
            match = pattern.search(layer.name)
            key = match.group(1) if match else current_key
            if key != current_key or not blocks:
                blocks.append([])
                current_key = key
            blocks[-1].append(layer.name)
        return blocks



# fmt: off
_SPECS: tuple[BackboneSpec, ...] = (
    BackboneSpec("mobilenet_0.25", "MobileNet", 224, "tf",
                 {4: "conv_pw_3_relu", 8: "conv_pw_5_relu", 16: "conv_pw_11_relu", 32: "conv_pw_13_relu"},
                 r"^conv_(?:dw_|pw_)?(\d+)", {"alpha": 0.25}),
)
# fmt: on

_BY_NAME = {spec.name: spec for spec in _SPECS}


def list_backbones() -> list[BackboneSpec]:
    """All registered backbones, in registry order."""
    return list(_SPECS)


def get_backbone(name: str) -> BackboneSpec:
    """The spec registered as ``name``; a ``TransferError`` naming close matches otherwise."""
    key = str(name).strip().lower()
    if key in _BY_NAME:
        return _BY_NAME[key]
    close = difflib.get_close_matches(key, list(_BY_NAME), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise TransferError(
        f"Unknown backbone {name!r}.{hint}",
        fix="Run `transfer backbones` to list the available names.",
    )
