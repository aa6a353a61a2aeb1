"""Which layers train in a stage. The freezing rules live here and only here.

A stage's ``trainable`` is ``"head"`` (backbone frozen), ``"all"``, ``"top:N"``
(the top N backbone blocks) or ``"from:LAYER"``; every layer outside the
backbone (the task's head) always trains. A pretrained backbone's BatchNorm
layers never train (see ``transfer.tasks.classify.model``).

Example:
    >>> set_trainable(model, get_backbone("mobilenet_0.25"), Stage("ft", "top:2", 1e-4, 3))
    12
"""

from __future__ import annotations

from transfer.backbones import BackboneSpec
from transfer.core.errors import TransferError
from transfer.core.recipe import Stage
from transfer.backbones.nesting import BACKBONE_LAYER, freeze_batchnorm_layers


def set_trainable(model, spec: BackboneSpec, stage: Stage, *, freeze_batchnorm: bool = True) -> int:
    """Make exactly the stage's layers trainable; returns how many backbone layers train.

    With ``freeze_batchnorm`` (any pretrained backbone) BatchNorm layers stay
    non-trainable whatever the stage, which keeps them in inference mode with
    their ImageNet statistics (see ``transfer.tasks.classify.model``).
    """
    backbone = model.get_layer(BACKBONE_LAYER)
    # Set every layer explicitly: the flags a previous stage left must not leak.
    backbone.trainable = stage.trainable != "head"
    for layer in backbone.layers:
        layer.trainable = backbone.trainable
    if stage.top_blocks is not None or stage.from_layer is not None:
        blocks = spec.blocks(backbone)
        first = max(len(blocks) - stage.top_blocks, 0) if stage.top_blocks else _block_of(blocks, stage.from_layer)
        frozen = {name for block in blocks[:first] for name in block}
        for layer in backbone.layers:
            if layer.name in frozen:
                layer.trainable = False
    if freeze_batchnorm:
        freeze_batchnorm_layers(backbone)
    return sum(1 for layer in backbone.layers if layer.trainable and layer.weights)


def _block_of(blocks: list[list[str]], name: str) -> int:
    """Index of the block holding the layer ``name`` (or the first layer starting with it)."""
    for exact in (True, False):
        for index, block in enumerate(blocks):
            if any(layer == name if exact else layer.startswith(name) for layer in block):
                return index
    starts = ", ".join(block[0] for block in blocks)
    raise TransferError(
        f"No backbone layer is called {name!r} (trainable = \"from:{name}\").",
        fix=f"Use a layer name of the backbone; its blocks start at: {starts}.",
    )
