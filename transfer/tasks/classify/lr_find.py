"""The learning-rate finder set up for a classifier (``transfer lr-find``): data, model, stage.

The sweep itself is the engine's (``transfer.engine.lr_find.find_learning_rate``);
this module builds what it sweeps, as ``transfer train`` would train it.

Example:
    >>> sweep = prepare_lr_find("flowers/", image_size=128, stage="finetune", steps=100)
    >>> f"{sweep.run().suggestion:.2g}"
    '0.0003'
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Callable

from transfer.core.recipe import Recipe, Stage
from transfer.core.resize import ResizePolicy
from transfer.data.samples import DataSplit
from transfer.engine.lr_find import SweepResult, check_sweep, find_learning_rate
from transfer.tasks.classify.model import build_classifier, loss_and_metrics
from transfer.tasks.classify.task import class_weights

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedSweep:
    """A sweep set up for one recipe stage: the model and training data, and ``find_learning_rate``'s settings."""

    model: Any
    dataset: Any
    stage: Stage
    settings: dict[str, Any]

    def run(self, progress: Callable[[int, int, float, float], None] | None = None) -> SweepResult:
        """Run the sweep (``progress`` as in ``find_learning_rate``); the model's weights are restored after."""
        lrs, losses, suggestion = find_learning_rate(self.model, self.dataset, **self.settings, progress=progress)
        return SweepResult(lrs, losses, suggestion, self.stage.name, self.settings["steps"])


def prepare_lr_find(
    data: str | os.PathLike | DataSplit,
    *,
    backbone: str = "mobilenet_0.25",
    weights: str | None = "imagenet",
    image_size: int | None = None,
    recipe: Recipe | str | os.PathLike | None = None,
    stage: str | None = None,
    min_lr: float = 1e-6,
    max_lr: float = 1.0,
    steps: int = 100,
    val_fraction: float = 0.2,
    allow_outside_root: bool = False,
    echo: Callable[[str], None] | None = None,
) -> PreparedSweep:
    """Set up a learning-rate sweep for one stage of ``recipe``, as ``transfer train`` would train it.

    ``data`` is a source for ``load_data`` (split with the recipe's seed) or a
    loaded ``DataSplit``; unreadable images are left out, each named.
    ``recipe`` is a ``Recipe`` or a TOML file (default: ``Recipe()``);
    ``stage`` names or numbers (from 1) the stage whose layers train (default:
    the first). The head is untrained, so for a later stage the suggestion is
    an upper bound. Everything cheap (range, recipe, stage, backbone, image
    size) is checked before data is read or a model is built. What is done is
    said through ``echo`` (default: ``logging`` at INFO).

    Example:
        >>> sweep = prepare_lr_find("flowers/", image_size=128, recipe="recipe.toml", stage="finetune", steps=100)
        >>> result = sweep.run()
        >>> plot_lr_find(result.learning_rates, result.losses, result.suggestion, "lr_find.png")
        >>> f"{result.suggestion:.2g}"
        '0.0003'
    """
    from transfer.backbones import get_backbone
    from transfer.data.pipelines.images import make_dataset
    from transfer.engine.run_config import checked_image_size

    say = _sayer(echo)
    check_sweep(min_lr, max_lr, steps)
    chosen = recipe if isinstance(recipe, Recipe) else Recipe.load(recipe) if recipe else Recipe()
    index = chosen.stage_index(stage)
    chosen_stage = chosen.stages[index]
    spec = get_backbone(backbone)
    image_size = checked_image_size(spec, image_size)

    split = _sweep_data(data, chosen.seed, val_fraction, allow_outside_root, say, echo)
    model, trainable_layers = _sweep_model(spec, split, image_size, weights, chosen, chosen_stage, say)
    say(f"Stage {index + 1}/{len(chosen.stages)} {chosen_stage.name!r}: trainable={chosen_stage.trainable} "
        f"({trainable_layers} backbone layers), optimizer {chosen.optimizer}, batch size {chosen.batch_size}; "
        f"{steps} steps from lr {min_lr:g} to {max_lr:g}")
    if index > 0:
        say("Note: the sweep starts from an untrained head, not from where the earlier stages leave the model; "
            "read its suggestion as an upper bound for this stage.")
    train_ds = make_dataset(split.train, image_size, chosen.batch_size, training=True, augment=chosen.augment,
                            seed=chosen.seed, resize=ResizePolicy(chosen.resize))  # the pixels a run would train on
    settings = dict(
        min_lr=min_lr, max_lr=max_lr, steps=steps, optimizer=chosen.optimizer, weight_decay=chosen.weight_decay,
        loss=loss_and_metrics(split.multi_label, chosen.label_smoothing)[0],
        class_weight=class_weights(split.train, chosen.class_weight),
    )
    return PreparedSweep(model, train_ds, chosen_stage, settings)


def _sayer(echo: Callable[[str], None] | None) -> Callable[[str], None]:
    """``echo``, or ``logging`` at INFO when there is none."""

    def say(message: str) -> None:
        if echo is not None:
            echo(message)
        else:
            log.info("%s", message)

    return say


def _sweep_data(data, seed: int, val_fraction: float, allow_outside_root: bool, say: Callable[[str], None],
                echo: Callable[[str], None] | None) -> DataSplit:
    """``data`` read (a source) or taken as is (a ``DataSplit``), its unreadable images left out."""
    from transfer.data import load_data
    from transfer.data.doctor.quarantine import drop_unreadable

    if isinstance(data, (str, os.PathLike)):
        split = load_data(data, val_fraction=val_fraction, seed=seed, allow_outside_root=allow_outside_root)
    else:
        split = data
    say(f"Data: {len(split.train)} train images, {len(split.class_names)} classes ({split.origin})")
    return drop_unreadable(split, echo=echo)


def _sweep_model(spec, split: DataSplit, image_size: int, weights, recipe: Recipe, stage: Stage,
                 say: Callable[[str], None]) -> tuple[Any, int]:
    """A fresh classifier for ``split`` with ``stage``'s layers trainable, and how many backbone layers train."""
    import keras

    from transfer.engine.freezing import set_trainable

    keras.utils.set_random_seed(recipe.seed)
    model, weights_info = build_classifier(
        spec, split.train.num_classes, image_size, weights=weights, multi_label=split.multi_label,
        dropout=recipe.dropout,
    )
    say(f"Backbone {spec.name}: {weights_info.message}")
    trainable_layers = set_trainable(model, spec, stage, freeze_batchnorm=weights_info.source != "random")
    return model, trainable_layers
