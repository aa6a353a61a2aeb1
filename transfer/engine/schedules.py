"""Learning-rate schedules and optimizers for fine-tuning.

``warmup_cosine`` ramps the rate up linearly, then decays it along a cosine
to a small floor. The warmup matters most when pretrained layers start to
train: a freshly unfrozen backbone hit by the full rate on its first steps
(Adam's first updates are ~lr per weight whatever the gradient) loses
features it cannot get back in a short run.

``make_optimizer`` builds Adam, AdamW or SGD around such a schedule; AdamW's
decoupled weight decay is applied to kernels only, never to BatchNorm
scales/offsets or biases (decaying those just shifts activations and hurts).
With ``ema_momentum`` the optimizer also keeps a moving average of the
weights (``ema_momentum`` / ``swap_ema_weights`` convert and move it).
``stage_optimizer`` puts these together for one stage of a recipe.

Example:
    >>> schedule = warmup_cosine(1e-3, total_steps=1000, warmup_steps=100)
    >>> optimizer = make_optimizer("adamw", schedule, weight_decay=1e-4, model=model)
    >>> model.compile(optimizer=optimizer, loss="categorical_crossentropy")
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from transfer.core.errors import TransferError

if TYPE_CHECKING:
    from transfer.core.recipe import Recipe, Stage

OPTIMIZERS = ("adam", "adamw", "sgd")


def warmup_cosine(
    peak_lr: float,
    total_steps: int,
    warmup_steps: int = 0,
    final_fraction: float = 0.01,
):
    """A linear warmup to ``peak_lr`` then cosine decay to ``final_fraction * peak_lr``.

    ``total_steps`` counts the warmup too. The rate is 0 at step 0, ``peak_lr``
    at step ``warmup_steps`` and ``final_fraction * peak_lr`` from step
    ``total_steps`` on. It is Keras's own ``CosineDecay`` (with its warmup
    arguments), so a model saved with its optimizer reloads without
    ``transfer`` being imported.

    Example:
        >>> s = warmup_cosine(1e-3, total_steps=100, warmup_steps=10)
        >>> [round(float(s(step)), 6) for step in (0, 5, 10, 100)]
        [0.0, 0.0005, 0.001, 1e-05]
    """
    import keras

    if not (isinstance(peak_lr, (int, float)) and peak_lr > 0):
        raise TransferError(f"Learning rate {peak_lr!r} is not a positive number.", fix="Use e.g. 0.001.")
    total_steps = max(int(total_steps), 1)
    warmup_steps = min(max(int(warmup_steps), 0), total_steps - 1)
    if not 0.0 <= final_fraction <= 1.0:
        raise ValueError(f"final_fraction must be in [0, 1]. Received: final_fraction={final_fraction!r}")
    if warmup_steps == 0:
        return keras.optimizers.schedules.CosineDecay(
            float(peak_lr), decay_steps=total_steps, alpha=float(final_fraction)
        )
    return keras.optimizers.schedules.CosineDecay(
        0.0,
        decay_steps=total_steps - warmup_steps,
        alpha=float(final_fraction),
        warmup_target=float(peak_lr),
        warmup_steps=warmup_steps,
    )


def warmup_steps_for(steps_per_epoch: int, warmup_epochs: float, total_steps: int) -> int:
    """Steps of warmup for ``warmup_epochs`` (fractions allowed), leaving at least one decay step.

    Example:
        >>> warmup_steps_for(108, 0.5, 108 * 6)
        54
    """
    return max(0, min(int(math.ceil(steps_per_epoch * max(warmup_epochs, 0.0))), max(total_steps - 1, 0)))


def no_decay_variables(model) -> list:
    """The variables of ``model`` that weight decay must not touch: every variable with fewer than 2 dims.

    That is biases and BatchNorm/LayerNorm scales, offsets and statistics
    (the rule of nanoGPT and timm): a kernel has 2+ dims, everything else
    is an offset or a scale.

    Example:
        >>> {v.name for v in no_decay_variables(model)} >= {"bias", "gamma", "beta"}
        True
    """
    return [v for v in model.variables if len(v.shape) < 2]


def make_optimizer(name: str, learning_rate, *, weight_decay: float = 0.0, model=None,
                   per_layer_rates: bool = False, ema_momentum: float | None = None):
    """``"adam"``, ``"adamw"`` or ``"sgd"`` (momentum 0.9) with ``learning_rate`` (a number or schedule).

    For ``"adamw"`` pass ``model`` so exactly its bias and normalization
    variables are kept out of the decay; without it they are recognised by
    name (``bias``, ``gamma``, ``beta``). ``per_layer_rates``: the
    ``transfer.engine.rates`` class, whose per-variable scales are bound after
    compiling (``transfer.engine.rates.bind_rate_scales``). ``ema_momentum``: keep an
    exponential moving average of the weights (Keras's ``use_ema``).

    Example:
        >>> opt = make_optimizer("adamw", warmup_cosine(1e-3, 500, 50), weight_decay=0.05, model=model)
    """
    import keras

    from transfer.engine import rates

    ema = {"use_ema": True, "ema_momentum": float(ema_momentum)} if ema_momentum else {}
    if name == "sgd":
        return (rates.ScaledSGD if per_layer_rates else keras.optimizers.SGD)(learning_rate, momentum=0.9, **ema)
    if name == "adam":
        return (rates.ScaledAdam if per_layer_rates else keras.optimizers.Adam)(learning_rate, **ema)
    if name == "adamw":
        optimizer = (rates.ScaledAdamW if per_layer_rates else keras.optimizers.AdamW)(
            learning_rate, weight_decay=float(weight_decay), **ema)
        if model is not None:
            optimizer.exclude_from_weight_decay(var_list=no_decay_variables(model))
        else:
            optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
        return optimizer
    raise TransferError(f"Unknown optimizer {name!r}.", fix=f"Use one of {OPTIMIZERS}.")


def ema_momentum(ema_epochs: float, steps_per_epoch: int) -> float | None:
    """The per-step momentum of a weight average over about ``ema_epochs`` epochs (None: off).

    Example:
        >>> round(ema_momentum(1.0, 100), 4)
        0.99
    """
    if ema_epochs <= 0:
        return None
    return min(max(1.0 - 1.0 / (ema_epochs * max(steps_per_epoch, 1)), 0.5), 0.9999)


def uses_ema(model) -> bool:
    optimizer = getattr(model, "optimizer", None)
    return bool(getattr(getattr(optimizer, "inner_optimizer", optimizer), "use_ema", False))


def swap_ema_weights(model) -> None:
    """Swap the model's weights with its optimizer's moving averages.

    A checkpoint is written while the averages are in the model (that is what
    validation and the best model use); a resume swaps them back so training
    goes on from the raw weights, as if never stopped.
    """
    optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)
    for variable, average in zip(optimizer._trainable_variables, optimizer._model_variables_moving_average):
        raw = variable.numpy()
        variable.assign(average)
        average.assign(raw)


def stage_optimizer(recipe: Recipe, stage: Stage, steps_per_epoch: int, model):
    """The stage's optimizer: warmup (stages that train backbone layers) then cosine decay.

    A new head has nothing to protect, so ``"head"`` stages skip the warmup
    and the weight average; a freshly unfrozen backbone hit by the full rate
    at once loses features. AdamW's decay skips ``model``'s biases and
    normalization weights. Per-layer rates are bound after compiling
    (``transfer.engine.rates.bind_rate_scales``).
    """
    total = steps_per_epoch * stage.epochs
    head_only = stage.trainable == "head"
    warmup = 0 if head_only else warmup_steps_for(steps_per_epoch, recipe.warmup_epochs, total)
    return make_optimizer(recipe.optimizer, warmup_cosine(stage.learning_rate, total, warmup),
                          weight_decay=recipe.weight_decay, model=model,
                          per_layer_rates=(stage.backbone_lr_scale, stage.layer_decay) != (1.0, 1.0),
                          ema_momentum=None if head_only else ema_momentum(averaged_epochs(recipe, steps_per_epoch),
                                                                             steps_per_epoch))


def averaged_epochs(recipe: Recipe, steps_per_epoch: int) -> float:
    """How many epochs the weight average spans (0: none): ``ema_epochs``, or ``ema_min_steps`` steps if more.

    Example:
        >>> averaged_epochs(Recipe(ema_epochs=1.0, ema_min_steps=100), steps_per_epoch=20)
        5.0
    """
    if recipe.ema_epochs <= 0:
        return 0.0
    return max(recipe.ema_epochs, recipe.ema_min_steps / max(steps_per_epoch, 1))


def restore_weight_decay_exclusions(model) -> None:
    """Keep AdamW's decay off biases and normalization weights after a checkpoint reload.

    Keras saves neither the exclusion list nor lets it be set on a built
    optimizer (``exclude_from_weight_decay`` refuses), so the list is put back
    the way that method stores it.
    """
    import keras

    optimizer = getattr(model, "optimizer", None)
    inner = getattr(optimizer, "inner_optimizer", optimizer)  # under a LossScaleOptimizer
    if isinstance(inner, keras.optimizers.AdamW):
        inner._exclude_from_weight_decay = {inner._var_key(v) for v in no_decay_variables(model)}
        inner._exclude_from_weight_decay_cache = {}
