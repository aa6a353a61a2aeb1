"""Per-layer learning rates: a slower backbone than head, and layer-wise decay.

Fine-tuning a pretrained backbone at the head's rate undoes what it learnt on
ImageNet: Adam moves every weight by about the learning rate whatever its
gradient, and behind a frozen BatchNorm a small move of a low-variance
channel is a large change of its output. So backbone layers train at
``backbone_lr_scale`` times the stage's rate, and with ``layer_decay < 1``
each block further down at ``layer_decay`` times the block above it (the
discriminative rates of ULMFiT / BEiT / ConvNeXt fine-tuning). AdamW's weight
decay is scaled the same way, so a slowly trained layer is also slowly
decayed.

Keras has no per-variable rate, so ``ScaledAdam``, ``ScaledAdamW`` and ``ScaledSGD`` scale
the rate passed to ``update_step``. The scales are bound to the variables of
one model (``bind_rate_scales``) and, like AdamW's decay exclusions, are not
saved with a checkpoint: ``transfer.train`` binds them again on resume.

Example:
    >>> scales = rate_scales(model, spec, Stage("ft", "all", 1e-3, 8, backbone_lr_scale=0.1))
    >>> model.compile(optimizer=make_optimizer("adamw", 1e-3, weight_decay=0.05, model=model,
    ...                                        per_layer_rates=True), loss="categorical_crossentropy")
    >>> bind_rate_scales(model, scales)
"""

from __future__ import annotations

import keras
import tensorflow as tf

from transfer.backbones import BackboneSpec


def rate_scales(model, spec: BackboneSpec, stage, backbone_layer: str = "backbone") -> dict[int, float]:
    """``{id(variable): scale}`` for the backbone variables of ``model`` whose rate is not the stage's.

    The top backbone block trains at ``stage.backbone_lr_scale``, the one
    below it at that times ``stage.layer_decay``, and so on down; head
    variables are absent (scale 1).

    Example:
        >>> scales = rate_scales(model, get_backbone("mobilenet_0.25"), Stage("ft", "all", backbone_lr_scale=0.1))
        >>> max(scales.values())
        0.1
    """
    base, decay = float(stage.backbone_lr_scale), float(stage.layer_decay)
    if base == 1.0 and decay == 1.0:
        return {}
    backbone = model.get_layer(backbone_layer)
    blocks = spec.blocks(backbone)
    depth_of = {name: len(blocks) - 1 - index for index, block in enumerate(blocks) for name in block}
    scales = {}
    for layer in backbone.layers:
        scale = base * decay ** depth_of.get(layer.name, 0)
        for variable in layer.weights:
            scales[id(variable)] = scale
    return scales


class _RateScaling:
    """Mixin: the rate (and decoupled weight decay) of each variable times its bound scale."""

    _rate_scales: dict

    def bind_scales(self, scales: dict[int, float], variables) -> None:
        """Bind ``{id(keras_variable): scale}`` to this optimizer's keys for ``variables``."""
        self._rate_scales = {self._var_key(v): s for v in variables if (s := scales.get(id(v))) is not None}

    def _scale_of(self, variable) -> float:
        return getattr(self, "_rate_scales", {}).get(self._var_key(variable), 1.0)

    def update_step(self, gradient, variable, learning_rate):
        scale = self._scale_of(variable)
        if scale != 1.0:
            learning_rate = learning_rate * scale
        return super().update_step(gradient, variable, learning_rate)

    def _apply_weight_decay(self, variables):
        if not getattr(self, "_rate_scales", None) or self.weight_decay is None:
            return super()._apply_weight_decay(variables)

        # As Keras's TensorFlow optimizer does it, with the variable's scale on the rate.
        def apply(distribution, variables, **kwargs):
            def decay(variable, scale):
                if self._use_weight_decay(variable):
                    lr = tf.cast(self.learning_rate, variable.dtype) * scale
                    variable.assign_sub(variable * tf.cast(self.weight_decay, variable.dtype) * lr)

            for variable in variables:
                scale = self._scale_of(variable)
                if isinstance(variable, keras.Variable):
                    variable = variable.value
                distribution.extended.update(variable, decay, args=(scale,), group=False)

        tf.__internal__.distribute.interim.maybe_merge_call(apply, self._distribution_strategy, variables)


@keras.saving.register_keras_serializable(package="transfer")
class ScaledAdam(_RateScaling, keras.optimizers.Adam):
    """Adam with per-variable rate scales (see the module doc)."""


@keras.saving.register_keras_serializable(package="transfer")
class ScaledAdamW(_RateScaling, keras.optimizers.AdamW):
    """AdamW with per-variable rate scales (see the module doc)."""


@keras.saving.register_keras_serializable(package="transfer")
class ScaledSGD(_RateScaling, keras.optimizers.SGD):
    """SGD with per-variable rate scales (see the module doc)."""


def bind_rate_scales(model, scales: dict[int, float]) -> None:
    """Bind ``scales`` (from ``rate_scales``) to ``model``'s compiled optimizer, under loss scaling too."""
    optimizer = getattr(model, "optimizer", None)
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    if isinstance(inner, _RateScaling):
        inner.bind_scales(scales, model.variables)
    elif scales:
        raise TypeError(f"Per-layer rates need a Scaled* optimizer of transfer.engine.rates optimizer. Received: {type(inner).__name__}")
