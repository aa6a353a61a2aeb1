"""The stage loop of a run: each stage of a recipe, epoch by epoch, then the final evaluation.

``transfer.train`` prepares a run (or reloads one to resume) and hands it
here: per stage this module sets what trains (``transfer.engine.freezing``),
compiles the stage's optimizer and schedule (``transfer.engine.schedules``), fits
with the weight average and checkpoints (``transfer.engine.checkpoints``), says when
a stage lost ground (``transfer.engine.summary``), and at the end evaluates the best
weights and writes metrics.json and run.json.

Example (what ``transfer.engine.train.train`` does after building the model):
    >>> result = run_stages(run, model, config, recipe, data, task, Progress(), started=time.perf_counter(),
    ...                     verbose=1, dist=Distribution("none"), resumed=False)
    >>> result.best_epoch
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras

from transfer.core.atomic import atomic_write_json
from transfer.backbones import get_backbone
from transfer.engine.checkpoints import Progress, RunCheckpoints, remove_epoch_checkpoints, weights_of
from transfer.data.pipelines.cache_policy import choose_image_cache
from transfer.data.pipelines.images import steps_per_epoch
from transfer.engine.distribute import distribute_dataset
from transfer.core.errors import TransferError
from transfer.engine.freezing import set_trainable
from transfer.engine.precision import with_loss_scaling
from transfer.engine.rates import bind_rate_scales, rate_scales
from transfer.core.recipe import Recipe
from transfer.engine.run_config import run_monitor
from transfer.engine.schedules import averaged_epochs, stage_optimizer, uses_ema
from transfer.engine.summary import describe_stage, final_line, metric_label, say, stage_regression, stage_summaries


@dataclass(frozen=True)
class TrainResult:
    """What a finished run produced."""

    run_dir: Path
    best_epoch: int
    best_metrics: dict[str, Any]
    seconds: float


def run_stages(run, model, config, recipe, data, task, progress, started, verbose, dist, *,
               resumed) -> TrainResult:
    """Train ``model`` through ``recipe``'s stages from ``progress`` on, then evaluate its best weights.

    ``config`` is the run's run.json dictionary (updated and rewritten here);
    ``resumed``: the model came from a checkpoint, compiled, mid-stage.
    """
    spec = get_backbone(config["backbone"])
    image_size = int(config["image_size"])
    pretrained = config["weights"] != "random"
    monitor = run_monitor(config)
    mode = config.get("monitor_mode", "max")
    # Decoded images in memory only when train + val fit the budget; else on disk in the run folder.
    image_cache = choose_image_cache(len(data.train) + len(data.val), image_size, cache_dir=run.root)
    say(verbose, f"Image cache: {image_cache.describe()}")
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
            say(verbose, f"Stage {stage.name!r} runs the whole model {stage.epochs} times ({why}, no feature "
                         "cache); a recipe with 5-10 head epochs saves most of that time.")
        if not (resumed and index == progress.stage_index and done > 0):
            trainable_layers = set_trainable(model, spec, stage, freeze_batchnorm=pretrained)
            # A fresh compile per stage: trainable flags are read at compile time.
            objective = task.objective(config, recipe)
            with dist.scope():
                optimizer = with_loss_scaling(stage_optimizer(recipe, stage, steps, model), model)
                model.compile(optimizer=optimizer, loss=objective.loss, metrics=objective.metrics,
                              jit_compile="auto" if config.get("xla") is None else bool(config["xla"]),
                              steps_per_execution=dist.steps_per_execution(steps_per_call(steps)))
            bind_rate_scales(model, rate_scales(model, spec, stage))
            say(verbose, describe_stage(index, len(recipe.stages), stage, trainable_layers,
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
            fit = task.fit_head_on_cached_features(
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
            say(verbose, f"Stage {stage.name!r} stopped early: no better {metric_label(monitor)} "
                         f"for {stage.patience} epochs.")
            # Mark the stage finished so a resume moves on to the next one.
            progress.stage_index, progress.stage_epochs_done = index, stage.epochs
            progress.save(run.state_file)
        note = stage_regression(progress.history, stage.name, monitor, next_lr=stage.learning_rate, mode=mode,
                                num_val=len(data.val))
        if note:
            say(verbose, note)

    if progress.best_epoch == 0:
        raise TransferError("The recipe trained for 0 epochs.", fix="Give at least one stage epochs >= 1.")
    if dist.kind != "none":
        if not dist.is_chief:
            shutil.rmtree(run.root, ignore_errors=True)  # a worker's files were never the run's
            say(verbose, f"Worker {dist.worker_index} done; the chief wrote the run folder.")
            return TrainResult(run.root, progress.best_epoch, {}, time.perf_counter() - started)
        # Evaluated by the chief alone, so outside the strategy (its predict would wait for the others).
        model = keras.saving.load_model(run.best_checkpoint, compile=False)
    else:
        model.set_weights(checkpoints.best_weights or weights_of(run.best_checkpoint))
    report = task.evaluate(model, data.val, image_size, recipe.batch_size, config)
    report.write(run.evaluation_dir)
    seconds = time.perf_counter() - started
    outcome = _outcome(progress, recipe, monitor, mode, num_val=len(data.val))
    metrics = {**report.summary(), **outcome, "train_seconds": round(seconds, 2)}
    atomic_write_json(run.metrics_file, metrics)
    atomic_write_json(run.config_file, {**config, "status": "done", **outcome})
    remove_epoch_checkpoints(run)
    say(verbose, final_line(progress.history, monitor, progress.best_epoch, run.root))
    return TrainResult(run.root, progress.best_epoch, metrics, seconds)


def _outcome(progress: Progress, recipe: Recipe, monitor: str, mode: str = "max",
             num_val: int | None = None) -> dict[str, Any]:
    """Best and last epoch, per-stage summaries and the stages that lost ground, for run.json."""
    last = progress.history[-1] if progress.history else {}
    notes = []
    for index, stage in enumerate(recipe.stages):
        rows = [r for r in progress.history if r["stage"] in {s.name for s in recipe.stages[:index + 1]}]
        note = stage_regression(rows, stage.name, monitor, next_lr=stage.learning_rate, mode=mode, num_val=num_val)
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


def steps_per_call(steps_per_epoch: int) -> int:
    """Training steps Keras runs per compiled call: up to 16, and at least 8 calls an epoch.

    Several steps per call save the per-step Python dispatch: 4% of the CPU
    time and 6-11% of the wall time of a flowers5 fine-tune epoch (MobileNet
    0.25, 128 px, 2 CPU cores). The progress bar and batch-level callbacks
    then move once per call, so an epoch keeps at least 8 of them.

    Example:
        >>> steps_per_call(108), steps_per_call(20), steps_per_call(3)
        (13, 2, 1)
    """
    return max(1, min(16, steps_per_epoch // 8))
