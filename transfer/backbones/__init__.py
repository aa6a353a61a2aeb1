"""Backbones: the pretrained ``keras.applications`` networks a task builds on.

- ``registry``: one ``BackboneSpec`` per architecture (``get_backbone``,
  ``list_backbones``);
- ``weights``: where weights come from (ImageNet, a file, random) and
  ``weights_import`` for offline use;
- ``layers``: the family's preprocessing as a layer that travels in the model;
- ``nesting``: the backbone as one nested layer of a task's model;
- ``features``: a backbone that answers its named stride features;
- ``scratch_cnn``: a small CNN for training from scratch.

Example:
    >>> from transfer.backbones import get_backbone
    >>> get_backbone("mobilenet_0.25").default_size
    224
"""

from __future__ import annotations

from transfer.backbones.registry import STRIDES, BackboneSpec, get_backbone, list_backbones

__all__ = ["STRIDES", "BackboneSpec", "get_backbone", "list_backbones"]
