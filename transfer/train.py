"""Run a recipe's stages on any task's model: the engine. It names no task.

The task (``transfer.tasks``) builds the model and its datasets, says what to
compile with and which metric picks the best epoch, and evaluates; this module
runs the stages (``transfer.freezing``), the schedules, the weight average,
checkpoints and resume (``transfer.checkpoints``) and the run folder
(``transfer.run_config``).

Example:
    >>> from transfer.data import load_data
    >>> result = train(load_data("flowers/"), "runs/flowers", backbone="mobilenet_0.25",
    ...                weights="imagenet", image_size=128)
    >>> result.best_metrics["accuracy"]
"""

from __future__ import annotations

import logging
import math
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras

from transfer.atomic import atomic_write_json
from transfer.backbones import get_backbone
from transfer.checkpoints import MONITOR, Progress, RunCheckpoints, remove_epoch_checkpoints, weights_of
from transfer.data.cache_policy import choose_image_cache
from transfer.data.pipeline import steps_per_epoch
from transfer.data.samples import Boxes, DataSplit, Samples
from transfer.distribute import distribute_dataset
from transfer.errors import TransferError
from transfer.freezing import set_trainable
from transfer.precision import dtype_policy, resolve_precision, with_loss_scaling
from transfer.rates import bind_rate_scales, rate_scales
from transfer.recipe import Recipe
from transfer.run import RunDir
from transfer.run_config import (check_out_dir, checked_image_size, feature_cache_dir, image_size_line,  # noqa: F401
                                 prepare_run_dir, reload_split, run_monitor, split_record, transfer_version,
                                 upsampling_warning)
from transfer.schedules import (averaged_epochs, restore_weight_decay_exclusions, stage_optimizer,  # noqa: F401
                                 swap_ema_weights, uses_ema)
from transfer.summary import describe_stage, final_line, metric_label, stage_regression, stage_summaries
from transfer.tasks import get_task

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class TrainResult:
    """What a finished run produced."""

    run_dir: Path
    best_epoch: int
    best_metrics: dict[str, Any]
    seconds: float


def class_weights(samples: Samples, mode: str) -> dict[int, float] | None:
    """``{class: N / (C * count)}`` for ``mode == "balanced"``; None otherwise (classification)."""
    from transfer.tasks.classify_task import ClassifyTask

    class _Mode:
        class_weight = mode

    return ClassifyTask().class_weight(samples, _Mode)


def task_of(data: DataSplit, task=None):
    """The task named ``task`` (or ``task`` itself, a ``Task`` with its options), or the one
    ``data``'s targets belong to (boxes: localize)."""
    from transfer.tasks.base import Task

    if isinstance(task, Task):
        return task
    if task is not None:
        return get_task(task)
    targets = data.train.targets[:1]
    return get_task("localize" if targets and isinstance(targets[0], Boxes) else "classify")


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
) -> TrainResult:
    """Train a model for ``task`` on ``data`` by ``recipe`` and write a run folder at ``out_dir``.

    ``task``: ``"classify"``, ``"localize"`` (see ``transfer.tasks``), or a
    task with options (``get_task("segment").with_options(decoder="fcn")``); by
    default the one ``data``'s targets belong to. ``recipe``: by default the
    task's own (``task.default_recipe()``).

    ``data_source`` (the ``--data`` string) is recorded so TFDS data can be
    reloaded; file-based data is recorded file by file in split.json.
    ``checkpoint_every``: seconds of training between resumable checkpoints
    (each written after an epoch, and always after a stage's last one; 0:
    after every epoch), so a killed run continues with ``resume``, losing at
    most that much. A checkpoint of a small model takes ~0.1-0.4 s, as long
    as a whole epoch of a head on cached features.
    ``verbose``: 0 silent, 1 progress bars, 2 one line per epoch (for logs).
    ``precision``: ``"float32"``, ``"mixed"``, ``"float16"`` or
    ``"bfloat16"`` (see ``transfer.precision``). ``xla``: compile training
    steps with XLA (None: Keras's choice, on for GPUs, off on CPUs).
    ``feature_cache``: where head stages cache backbone features (True: the
    user cache, ``transfer.features.default_cache_dir()``; False: memory only).
    ``distribution``: a ``transfer.distribute.Distribution`` (from
    ``choose_distribution()``, created before anything else touches
    TensorFlow) to train on several GPUs or machines; only its chief writes
    ``out_dir``, the other workers keep their files in a temporary folder.
    ``recipe.batch_size`` is then the global batch, split over the replicas.
    ``val_data_source``: the ``--val-data`` string, recorded like ``data_source``.
    """
    started = time.perf_counter()
    if not (isinstance(checkpoint_every, (int, float)) and math.isfinite(checkpoint_every) and checkpoint_every >= 0):
        raise TransferError(f"checkpoint_every={checkpoint_every!r}.",
                            fix="Use seconds >= 0, e.g. 30 (0: a checkpoint after every epoch).")
    task = task_of(data, task)
    recipe = recipe or task.default_recipe()
    task.check_recipe(recipe)
    spec = get_backbone(backbone)
    choice = resolve_precision(precision)
    image_size = checked_image_size(spec, image_size, task)
    from transfer.data.check import drop_unreadable

    # Unreadable images are left out (each named) instead of crashing the run mid-epoch.
    data = drop_unreadable(data, echo=(lambda message: _say(verbose, message)) if verbose else None)
    recipe, floor_notes = recipe.with_step_floor(steps_per_epoch(data.train, recipe.batch_size))
    for line in floor_notes:
        _say(verbose, line)
    dist = _distribution(distribution)
    run = RunDir(out_dir if dist.is_chief else tempfile.mkdtemp(prefix="transfer-worker-"))
    prepare_run_dir(run)
    keras.utils.set_random_seed(recipe.seed)
    if dist.kind != "none":
        _say(verbose, dist.describe())

    task_config = task.run_config(data, recipe)
    with dist.scope(), dtype_policy(choice.policy):
        model, weights_info = task.build_model(spec, task_config, image_size, weights, recipe)
    # The objective may depend on the input side (a detection loss lays its locations out by it).
    objective = task.objective({**task_config, "image_size": image_size}, recipe)
    _say(verbose, f"Backbone {spec.name}: {weights_info.message}")
    if choice.requested != "float32":
        _say(verbose, f"Precision {choice.requested}: {choice.policy} ({choice.reason})")
    pretrained = weights_info.source != "random"
    config = {
        "task": task.name,
        "backbone": spec.name,
        "weights": weights_info.source,
        "weights_path": weights_info.path,
        "batchnorm": "frozen (inference mode)" if pretrained else "trained (random init)",
        "image_size": image_size,
        **task_config,
        "monitor": objective.monitor,
        "monitor_mode": objective.mode,
        "data_source": data_source,
        "val_data_source": val_data_source,
        "split": data.origin,
        "num_train": len(data.train),
        "num_val": len(data.val),
        "precision": choice.policy,
        "xla": xla,
        "checkpoint_every": float(checkpoint_every),
        "feature_cache": feature_cache_dir(feature_cache) if task.uses_feature_cache else None,
        "transfer_version": transfer_version(),
        "keras_version": keras.__version__,
        "python": platform.python_version(),
        "status": "training",
    }
    atomic_write_json(run.config_file, config)
    recipe.save(run.recipe_file)
    atomic_write_json(run.split_file, split_record(data, task))
    for line in task.training_notes(data, config):
        _say(verbose, line)
    return _run_stages(run, model, config, recipe, data, task, Progress(), started, verbose, dist, resumed=False)


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
    task = get_task(config.get("task", "classify")).for_run(config)
    data = reload_split(run, config, recipe, task)
    # The compiled model comes back with its optimizer state and step count, so
    # a stage resumed mid-way keeps its learning-rate schedule.
    from transfer.custom_objects import register_custom_objects

    register_custom_objects()
    with dist.scope():
        model = keras.saving.load_model(run.root / "checkpoints" / progress.checkpoint)
    restore_weight_decay_exclusions(model)
    bind_rate_scales(model, rate_scales(model, get_backbone(config["backbone"]),
                                        recipe.stages[min(progress.stage_index, len(recipe.stages) - 1)]))
    if uses_ema(model):
        swap_ema_weights(model)
    _say(verbose, f"Resuming {run.root} after epoch {progress.epoch} (stage {progress.stage_index + 1}).")
    return _run_stages(run, model, config, recipe, data, task, progress, started, verbose, dist, resumed=True)


def _run_stages(run, model, config, recipe, data, task, progress, started, verbose, dist, *,
                resumed) -> TrainResult:
    spec = get_backbone(config["backbone"])
    image_size = int(config["image_size"])
    pretrained = config["weights"] != "random"
    monitor = run_monitor(config)
    mode = config.get("monitor_mode", "max")
    # Decoded images in memory only when train + val fit the budget; else on disk in the run folder.
    image_cache = choose_image_cache(len(data.train) + len(data.val), image_size, cache_dir=run.root)
    _say(verbose, f"Image cache: {image_cache.describe()}")
    config["image_cache"] = image_cache.to_dict()
    atomic_write_json(run.config_file, config)
    train_ds = distribute_dataset(
        task.make_dataset(data.train, image_size, recipe.batch_size, training=True, recipe=recipe,
                          cache=image_cache, config=config),
        dist, batch_size=recipe.batch_size, num_examples=len(data.train),
    )
    val_ds = distribute_dataset(task.make_dataset(data.val, image_size, recipe.batch_size, training=False,
                                                  recipe=recipe, cache=image_cache, config=config),
                                dist, batch_size=recipe.batch_size, num_examples=len(data.val))
    steps = steps_per_epoch(data.train, recipe.batch_size)
    checkpoints = RunCheckpoints(run, progress, monitor=monitor, mode=mode)
    weights_per_class = task.class_weight(data.train, recipe)

    for index in range(progress.stage_index, len(recipe.stages)):
        stage = recipe.stages[index]
        done = progress.stage_epochs_done if index == progress.stage_index else 0
        if done >= stage.epochs:
            continue
        # Under a strategy the head stage runs the whole model: every worker
        # must take part in the same collective steps.
        on_cached_features = (stage.trainable == "head" and recipe.head_cache_views > 0 and dist.kind == "none"
                              and task.uses_feature_cache)
        # (Not when the epochs come from the stage's own min_steps floor: the recipe asked for them.)
        if stage.trainable == "head" and not on_cached_features and stage.epochs > 10 and not stage.min_steps:
            why = ("under a distribution strategy" if dist.kind != "none" else "head_cache_views = 0"
                   if task.uses_feature_cache else f"the {task.name} head reads spatial features")
            _say(verbose, f"Stage {stage.name!r} runs the whole model {stage.epochs} times ({why}, no feature "
                          "cache); a recipe with 5-10 head epochs saves most of that time.")
        if not (resumed and index == progress.stage_index and done > 0):
            trainable_layers = set_trainable(model, spec, stage, freeze_batchnorm=pretrained)
            # A fresh compile per stage: trainable flags are read at compile time.
            objective = task.objective(config, recipe)
            with dist.scope():
                optimizer = with_loss_scaling(stage_optimizer(recipe, stage, steps, model), model)
                model.compile(optimizer=optimizer, loss=objective.loss, metrics=objective.metrics,
                              jit_compile="auto" if config.get("xla") is None else bool(config["xla"]))
            bind_rate_scales(model, rate_scales(model, spec, stage))
            _say(verbose, describe_stage(index, len(recipe.stages), stage, trainable_layers,
                                         cached=on_cached_features,
                                         ema_epochs=averaged_epochs(recipe, steps)))
        # Early stopping can end a stage after any epoch, and Keras then swaps the raw
        # weights back in for the average: such a stage writes every epoch's checkpoint.
        interval = 0.0 if stage.patience and not on_cached_features else float(config.get("checkpoint_every", 0.0))
        checkpoints.stage(index, stage.name, stage_start=progress.epoch - done, save_interval=interval)
        callbacks = [checkpoints,
                     keras.callbacks.TensorBoard(log_dir=str(run.logs_dir / stage.name), write_graph=False)]
        if uses_ema(model) and not on_cached_features:
            # First, so validation, checkpoints and the best model all see the averaged weights.
            callbacks.insert(0, keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
        if stage.patience:
            callbacks.append(keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=stage.patience))
        if on_cached_features:
            fit = _fit_head_on_cached_features(
                model, data, image_size, recipe, config, callbacks,
                initial_epoch=progress.epoch, epochs=stage.epochs - done,
                class_weight=weights_per_class, verbose=verbose,
            )
        else:
            fit = model.fit(
                train_ds,
                validation_data=val_ds,
                initial_epoch=progress.epoch,
                epochs=progress.epoch - done + stage.epochs,
                verbose=verbose,
                shuffle=False,  # the tf.data pipeline shuffles
                class_weight=weights_per_class,
                callbacks=callbacks,
            )
        if len(fit.epoch) < stage.epochs - done:
            _say(verbose, f"Stage {stage.name!r} stopped early: no better {metric_label(monitor)} "
                          f"for {stage.patience} epochs.")
            # Mark the stage finished so a resume moves on to the next one.
            progress.stage_index, progress.stage_epochs_done = index, stage.epochs
            progress.save(run.state_file)
        note = stage_regression(progress.history, stage.name, monitor, next_lr=stage.learning_rate, mode=mode)
        if note:
            _say(verbose, note)

    if progress.best_epoch == 0:
        raise TransferError("The recipe trained for 0 epochs.", fix="Give at least one stage epochs >= 1.")
    if dist.kind != "none":
        if not dist.is_chief:
            shutil.rmtree(run.root, ignore_errors=True)  # a worker's files were never the run's
            _say(verbose, f"Worker {dist.worker_index} done; the chief wrote the run folder.")
            return TrainResult(run.root, progress.best_epoch, {}, time.perf_counter() - started)
        # Evaluated by the chief alone, so outside the strategy (its predict would wait for the others).
        model = keras.saving.load_model(run.best_checkpoint, compile=False)
    else:
        model.set_weights(checkpoints.best_weights or weights_of(run.best_checkpoint))
    report = task.evaluate(model, data.val, image_size, recipe.batch_size, config)
    report.write(run.evaluation_dir)
    seconds = time.perf_counter() - started
    outcome = _outcome(progress, recipe, monitor, mode)
    metrics = {**report.summary(), **outcome, "train_seconds": round(seconds, 2)}
    atomic_write_json(run.metrics_file, metrics)
    atomic_write_json(run.config_file, {**config, "status": "done", **outcome})
    remove_epoch_checkpoints(run)
    _say(verbose, final_line(progress.history, monitor, progress.best_epoch, run.root))
    return TrainResult(run.root, progress.best_epoch, metrics, seconds)


def _outcome(progress: Progress, recipe: Recipe, monitor: str, mode: str = "max") -> dict[str, Any]:
    """Best and last epoch, per-stage summaries and the stages that lost ground, for run.json."""
    last = progress.history[-1] if progress.history else {}
    notes = []
    for index, stage in enumerate(recipe.stages):
        rows = [r for r in progress.history if r["stage"] in {s.name for s in recipe.stages[:index + 1]}]
        note = stage_regression(rows, stage.name, monitor, next_lr=stage.learning_rate, mode=mode)
        if note:
            notes.append(note)
    return {
        "monitor": monitor,
        "best_epoch": progress.best_epoch,
        "best_value": progress.best_value,
        "last_epoch": int(last.get("epoch", 0)),
        "last_value": float(last[monitor]) if monitor in last else None,
        "stages": stage_summaries(progress.history, monitor, mode),
        "notes": notes,
    }


def _fit_head_on_cached_features(model, data, image_size, recipe, config, callbacks, *,
                                 initial_epoch, epochs, class_weight, verbose):
    """A ``"head"`` stage on backbone features computed once (``transfer.features``).

    The frozen backbone gives the same features every epoch, so it runs once
    (per view) instead of once per epoch; the classifier's own head layers
    train, with the compiled optimizer, and the callbacks see the classifier.
    """
    from transfer.data.pipeline import targets_array
    from transfer.features import extract_features
    from transfer.head_fit import fit_head_on_features

    # Only tasks with uses_feature_cache get here (classification): pooled features, one-hot targets.
    cache_dir = config.get("feature_cache")
    _say(verbose, f"Backbone features of {len(data.train)} + {len(data.val)} images "
                  f"({recipe.head_cache_views} view(s) per training image)"
                  + (f", cached in {cache_dir}" if cache_dir else ""))
    train_features = extract_features(
        model, data.train, image_size, views=recipe.head_cache_views, augment=recipe.augment,
        seed=recipe.seed, cache_dir=cache_dir, verbose=1 if verbose == 1 else 0,
    )
    val_features = extract_features(model, data.val, image_size, cache_dir=cache_dir,
                                    verbose=1 if verbose == 1 else 0)
    return fit_head_on_features(
        model, train_features, targets_array(data.train), epochs=epochs, optimizer=model.optimizer,
        batch_size=recipe.batch_size, label_smoothing=recipe.label_smoothing,
        validation=(val_features, targets_array(data.val)), callbacks=callbacks,
        initial_epoch=initial_epoch, seed=recipe.seed, verbose=verbose, class_weight=class_weight,
    )


def _distribution(distribution):
    if distribution is not None:
        return distribution
    from transfer.distribute import Distribution

    return Distribution("none")


def _say(verbose: int, message: str) -> None:
    if verbose:
        print(message, flush=True)
