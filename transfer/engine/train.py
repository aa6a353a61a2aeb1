"""Run a recipe's stages on any task's model: the engine. It names no task.

The task (``transfer.tasks``) builds the model and its datasets, says what to
compile with and which metric picks the best epoch, and evaluates; this module
starts a run (the model, the run folder: ``transfer.engine.run_config``) or reloads
a killed one from its checkpoint (``resume``), and hands it to
``transfer.engine.stage_runner``, which runs the stages, the schedules, the weight
average and the checkpoints.

Example:
    >>> from transfer.data import load_data
    >>> result = train(load_data("flowers/"), "runs/flowers", backbone="mobilenet_0.25",
    ...                weights="imagenet", image_size=128)
    >>> result.best_metrics["accuracy"]
"""

from __future__ import annotations

import dataclasses
import functools
import math
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import keras

from transfer.core.atomic import atomic_write_json
from transfer.backbones import get_backbone
from transfer.engine.checkpoints import Progress
from transfer.data.pipelines.images import steps_per_epoch
from transfer.data.samples import Boxes, DataSplit, Mask
from transfer.core.errors import TransferError
from transfer.engine.precision import dtype_policy, resolve_precision
from transfer.engine.rates import bind_rate_scales, rate_scales
from transfer.core.recipe import Recipe
from transfer.engine.run import RunDir
from transfer.engine.run_config import (checked_image_size, feature_cache_dir, prepare_run_dir, reload_split,
                                 split_record, transfer_version)
from transfer.engine.schedules import restore_weight_decay_exclusions, swap_ema_weights, uses_ema
from transfer.engine.stage_runner import TrainResult, run_stages
from transfer.engine.summary import say
from transfer.tasks import DEFAULT_TASK, get_task, task_of_config


def task_of(data: DataSplit, task=None):
    """The task named ``task`` (or ``task`` itself, a ``Task`` with its options); without one,
    classification for data whose targets are labels. Box or mask targets are refused with the
    tasks to choose from (boxes: localize or detect; masks: segment): guessing would train the
    wrong model.

    Example:
        >>> task_of(load_data("flowers/")).name
        'classify'
        >>> task_of(split_of_boxes, "detect").name
        'detect'
    """
    from transfer.tasks.base import Task

    if isinstance(task, Task):
        return task
    if task is not None:
        return get_task(task)
    first = tuple(data.train.targets[:1]) or tuple(data.val.targets[:1])
    target = first[0] if first else None
    if isinstance(target, Boxes):
        raise TransferError("The data's targets are boxes, and train() was given no task.",
                            fix="Pass task='localize' (one box and class per image) or task='detect' "
                                "(every box of every class), the task the data was loaded for.")
    if isinstance(target, Mask):
        raise TransferError("The data's targets are segmentation masks, and train() was given no task.",
                            fix="Pass task='segment' (or the segment task the data was loaded with, "
                                "e.g. transfer.get_task('segment').with_options(ignore_index=11)).")
    return get_task(DEFAULT_TASK)


def train(
    data: DataSplit,
    out_dir: str | Path,
    *,
    backbone: str = "mobilenet_0.25",
    weights: str | None = "imagenet",
    image_size: int | None = None,
    recipe: Recipe | None = None,
    data_source: str | None = None,
    verbose: int = 1,
    precision: str = "float32",
    xla: bool | None = None,
    feature_cache: str | Path | bool = True,
    distribution=None,
    task=None,
    val_data_source: str | None = None,
    checkpoint_every: float = 30.0,
    finetune_check: bool = True,
) -> TrainResult:
    """Train a model for ``task`` on ``data`` by ``recipe`` and write a run folder at ``out_dir``.

    ``task``: ``"classify"``, ``"localize"``, ``"detect"``, ``"segment"`` (see
    ``transfer.tasks``), or a task with options
    (``get_task("segment").with_options(decoder="fcn")``); without one, labels
    train a classifier and box or mask data is refused (see ``task_of``).
    ``recipe``: by default the task's own (``task.default_recipe()``).

    ``data_source`` (the ``--data`` string) is recorded to reload TFDS data.
    ``checkpoint_every``: seconds of training between resumable checkpoints
    (written after an epoch, and after a stage's last one; 0: every epoch), so
    a killed run continues with ``resume``, losing at most that much.
    ``verbose``: 0 silent, 1 progress bars, 2 one line per epoch (for logs). ``precision``:
    ``"float32"``, ``"mixed"``, ``"float16"`` or ``"bfloat16"``. ``xla``: compile training
    steps with XLA (None: Keras's choice, on for GPUs, off on CPUs).
    ``feature_cache``: where head stages cache backbone features (True: the
    user cache, ``transfer.engine.feature_cache.default_cache_dir()``; False: memory only).
    ``distribution``: a ``transfer.engine.distribute.Distribution`` (from
    ``choose_distribution()``, created before anything else touches
    TensorFlow) to train on several GPUs or machines; only its chief writes
    ``out_dir``, the other workers keep their files in a temporary folder.
    ``recipe.batch_size`` is then the global batch, split over the replicas.
    ``val_data_source``: the ``--val-data`` string, recorded like ``data_source``.
    ``finetune_check``: False skips the small-data check (``transfer.engine.stage_choice``).
    """
    started = time.perf_counter()
    _check_checkpoint_every(checkpoint_every)
    task, recipe = _task_and_recipe(data, task, recipe)
    spec = get_backbone(backbone)
    choice = resolve_precision(precision)
    image_size = checked_image_size(spec, image_size, task)
    dist = _distribution(distribution)
    data, floored, head_fit = _readable_data_and_step_floor(data, recipe, task, dist, verbose)
    run = RunDir(out_dir if dist.is_chief else tempfile.mkdtemp(prefix="transfer-worker-"))
    prepare_run_dir(run, (data_source, val_data_source))  # never inside, over or around the data
    recipe, check = _checked_stages(data, recipe, floored, task, dist, verbose, finetune_check, backbone=spec.name,
                                    weights=weights, image_size=image_size, precision=precision, xla=xla,
                                    feature_cache=feature_cache)
    keras.utils.set_random_seed(recipe.seed)
    if dist.kind != "none":
        say(verbose, dist.describe())

    task_config = task.run_config(data, recipe)
    model, weights_info, objective = _model_and_objective(task, spec, task_config, image_size, weights, recipe,
                                                          dist, choice, verbose)
    config = {
        "task": task.name, "backbone": spec.name, **_weights_entries(weights_info), "image_size": image_size,
        **task_config, "monitor": objective.monitor, "monitor_mode": objective.mode,
        **_data_entries(data, data_source, val_data_source),
        "precision": choice.policy, "xla": xla, "checkpoint_every": float(checkpoint_every),
        "feature_cache": feature_cache_dir(feature_cache) if task.uses_feature_cache else None,
        **_versions(), "status": "training",
        **head_fit, **({"stage_choice": check.record()} if check else {}),
    }
    atomic_write_json(run.config_file, config)
    recipe.save(run.recipe_file)
    atomic_write_json(run.split_file, split_record(data, task))
    for line in task.training_notes(data, config):
        say(verbose, line)
    return run_stages(run, model, config, recipe, data, task, Progress(), started, verbose, dist, resumed=False)


def _task_and_recipe(data: DataSplit, task, recipe: Recipe | None):
    """The task to train and its recipe (the task's default without one), checked for the task."""
    task = task_of(data, task)
    recipe = recipe or task.default_recipe()
    task.check_recipe(recipe)
    return task, recipe


def _checked_stages(data: DataSplit, recipe: Recipe, floored: Recipe, task, dist, verbose: int, enabled: bool,
                    **settings):
    """``floored`` (the recipe with its step floor), or its head stages alone when the fine-tune check
    (``transfer.engine.stage_choice``, small training sets) finds the fine-tune no better; and the check's
    outcome (None when there was no check). ``settings``: ``train``'s backbone, weights, image size and
    the like, for the check's own run."""
    from transfer.engine.stage_choice import choose_stages, head_stage_count, wants_check

    if not (enabled and wants_check(recipe, task, len(data.train))):
        return floored, None
    if dist.kind != "none":
        say(verbose, "Fine-tune check skipped: it runs on one machine (recipe small_data_max_images).")
        return floored, None
    inner_train = functools.partial(_train_silently, task=task, **settings)
    _, choice = choose_stages(data, recipe, task, inner_train, verbose=verbose)
    if choice.keep_finetune:
        return floored, choice
    return dataclasses.replace(floored, stages=floored.stages[:head_stage_count(floored)]), choice


def _train_silently(split: DataSplit, out_dir: Path, recipe: Recipe, **settings) -> TrainResult:
    """``train`` with no output and no resumable checkpoints mid-stage (the fine-tune check's inner run)."""
    return train(split, out_dir, recipe=recipe, verbose=0, checkpoint_every=1e9, finetune_check=False, **settings)


def _model_and_objective(task, spec, task_config: dict[str, Any], image_size: int, weights, recipe: Recipe,
                         dist, choice, verbose: int):
    """The task's model (built in the strategy's scope and the precision's policy), where its
    weights came from, and its objective; says which weights and precision."""
    with dist.scope(), dtype_policy(choice.policy):
        model, weights_info = task.build_model(spec, task_config, image_size, weights, recipe)
    # The objective may depend on the input side (a detection loss lays its locations out by it).
    objective = task.objective({**task_config, "image_size": image_size}, recipe)
    say(verbose, f"Backbone {spec.name}: {weights_info.message}")
    if choice.requested != "float32":
        say(verbose, f"Precision {choice.requested}: {choice.policy} ({choice.reason})")
    return model, weights_info, objective


def _check_checkpoint_every(checkpoint_every) -> None:
    """A ``TransferError`` unless ``checkpoint_every`` is a finite number of seconds >= 0."""
    if not (isinstance(checkpoint_every, (int, float)) and math.isfinite(checkpoint_every) and checkpoint_every >= 0):
        raise TransferError(f"checkpoint_every={checkpoint_every!r}.",
                            fix="Use seconds >= 0, e.g. 30 (0: a checkpoint after every epoch).")


def _readable_data_and_step_floor(data: DataSplit, recipe: Recipe, task, dist,
                                  verbose: int) -> tuple[DataSplit, Recipe, dict[str, Any]]:
    """``data`` without its unreadable images (each named); ``recipe`` as the task runs it on a small
    training set (``Task.small_data_recipe``), with its stages' step floor; run.json's entries for it."""
    from transfer.data.doctor import drop_unreadable

    # Unreadable images are left out (each named) instead of crashing the run mid-epoch.
    data = drop_unreadable(data, echo=(lambda message: say(verbose, message)) if verbose else None)
    small_data = {}
    if dist.kind == "none":  # under a strategy the head stage runs the whole model (no cached features)
        recipe, notes, small_data = task.small_data_recipe(data, recipe)
        for line in notes:
            say(verbose, line)
    recipe, floor_notes = recipe.with_step_floor(steps_per_epoch(data.train, recipe.batch_size))
    for line in floor_notes:
        say(verbose, line)
    return data, recipe, small_data


def _weights_entries(weights_info) -> dict[str, Any]:
    """run.json's say on the backbone's weights: where they came from and what BatchNorm does."""
    pretrained = weights_info.source != "random"
    return {"weights": weights_info.source, "weights_path": weights_info.path,
            "batchnorm": "frozen (inference mode)" if pretrained else "trained (random init)"}


def _data_entries(data: DataSplit, data_source: str | None, val_data_source: str | None) -> dict[str, Any]:
    """run.json's say on the data: its sources, how it was split and how many images each side has."""
    return {"data_source": data_source, "val_data_source": val_data_source, "split": data.origin,
            "num_train": len(data.train), "num_val": len(data.val)}


def _versions() -> dict[str, str]:
    """The versions a run was trained with (run.json)."""
    return {"transfer_version": transfer_version(), "keras_version": keras.__version__,
            "python": platform.python_version()}


def resume(run_dir: str | Path, *, verbose: int = 1, distribution=None) -> TrainResult:
    """Continue a killed or interrupted run from its last finished epoch.

    The run's own recipe, data split and settings are used; what ran after the
    last checkpoint (at most ``checkpoint_every`` seconds, see ``train``) is
    the only work lost.

    ``distribution``: as for ``train``; one machine only (a multi-worker run
    resumes on its chief's machine, or on all GPUs of one machine).

    Example:
        >>> resume("runs/flowers")
    """
    started = time.perf_counter()
    dist = _distribution(distribution)
    if dist.kind == "multi_worker":
        raise TransferError(
            "Resuming runs on one machine (its run folder is the chief's).",
            fix=f"Run `transfer train --resume {run_dir}` on the chief's machine without TF_CONFIG "
                "(or with --distribute mirrored for its GPUs).",
        )
    run = RunDir(run_dir)
    if not run.config_file.is_file():
        raise TransferError(f"{run.root} holds no training run to resume.",
                            fix="Pass the --out folder of an earlier `transfer train`.")
    config = run.config()
    if config.get("status") == "done":
        raise TransferError(f"{run.root} finished training already.",
                            fix="Evaluate or export it; train into a new --out folder to train again.")
    progress = Progress.load(run.state_file)
    if progress is None:
        raise TransferError(
            f"{run.root} stopped before its first checkpoint was written (one is written after each stage "
            f"and every {config.get('checkpoint_every', 0.0):g} s of training), so there is nothing to resume.",
            fix=f"Delete {run.root} and start the run again.",
        )
    recipe = Recipe.load(run.recipe_file)
    task = get_task(task_of_config(config)).for_run(config)
    data = reload_split(run, config, recipe, task)
    # The compiled model comes back with its optimizer state and step count, so
    # a stage resumed mid-way keeps its learning-rate schedule.
    from transfer.engine.artifact_loading import checkpoint_fix, load_keras_file

    checkpoint = run.root / "checkpoints" / progress.checkpoint
    with dist.scope():  # a damaged checkpoint: a TransferError naming it
        model = load_keras_file(checkpoint, fix=checkpoint_fix(run.root, checkpoint), compile=True)
    restore_weight_decay_exclusions(model)
    # The checkpoint's compile config keeps its steps per call; a run resumed on several
    # replicas needs 1 (transfer.engine.distribute.Distribution.steps_per_execution).
    model.steps_per_execution = dist.steps_per_execution(model.steps_per_execution)
    bind_rate_scales(model, rate_scales(model, get_backbone(config["backbone"]),
                                        recipe.stages[min(progress.stage_index, len(recipe.stages) - 1)]))
    if uses_ema(model):
        swap_ema_weights(model)
    say(verbose, f"Resuming {run.root} after epoch {progress.epoch} (stage {progress.stage_index + 1}).")
    return run_stages(run, model, config, recipe, data, task, progress, started, verbose, dist, resumed=True)


def _distribution(distribution):
    if distribution is not None:
        return distribution
    from transfer.engine.distribute import Distribution

    return Distribution("none")
