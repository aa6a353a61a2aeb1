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
    loop = _StageLoop(run, model, config, recipe, data, task, progress, verbose, dist)
    for index in range(progress.stage_index, len(recipe.stages)):
        loop.run_stage(index, resumed=resumed)
    return loop.finish(started)


class _StageLoop:
    """One run's stage loop: what every stage shares (datasets, checkpoints, monitor), a stage
    at a time (``run_stage``), then the best weights evaluated and written (``finish``)."""

    def __init__(self, run, model, config, recipe, data, task, progress, verbose, dist):
        self.run, self.model, self.config, self.recipe, self.data = run, model, config, recipe, data
        self.task, self.progress, self.verbose, self.dist = task, progress, verbose, dist
        self.spec = get_backbone(config["backbone"])
        self.image_size = int(config["image_size"])
        self.monitor = run_monitor(config)
        self.mode = config.get("monitor_mode", "max")
        self.train_ds, self.val_ds = self._datasets()
        self.steps = steps_per_epoch(data.train, recipe.batch_size)
        self.checkpoints = RunCheckpoints(run, progress, monitor=self.monitor, mode=self.mode)
        self.weights_per_class = task.class_weight(data.train, recipe)

    def _datasets(self):
        """The distributed training and validation datasets over one image cache, recorded in run.json."""
        data, recipe, config = self.data, self.recipe, self.config
        # Decoded images in memory only when train + val fit the budget; else on disk in the run folder.
        image_cache = choose_image_cache(len(data.train) + len(data.val), self.image_size, cache_dir=self.run.root)
        say(self.verbose, f"Image cache: {image_cache.describe()}")
        config["image_cache"] = image_cache.to_dict()
        atomic_write_json(self.run.config_file, config)
        return tuple(
            distribute_dataset(
                self.task.make_dataset(samples, self.image_size, recipe.batch_size, training=training,
                                       recipe=recipe, cache=image_cache, config=config),
                self.dist, batch_size=recipe.batch_size, num_examples=len(samples),
            )
            for samples, training in ((data.train, True), (data.val, False))
        )

    def run_stage(self, index: int, *, resumed: bool) -> None:
        """Stage ``index`` from where ``progress`` stands: set up (unless resumed mid-stage), fit, report."""
        stage = self.recipe.stages[index]
        done = self.progress.stage_epochs_done if index == self.progress.stage_index else 0
        if done >= stage.epochs:
            return
        on_cached_features = self._on_cached_features(stage)
        if not (resumed and index == self.progress.stage_index and done > 0):
            self._compile_stage(index, stage, on_cached_features)
        callbacks = self._callbacks(index, stage, done, on_cached_features)
        fit = self._fit(stage, done, on_cached_features, callbacks)
        if len(fit.epoch) < stage.epochs - done:
            say(self.verbose, f"Stage {stage.name!r} stopped early: no better {metric_label(self.monitor)} "
                              f"for {stage.patience} epochs.")
            # Mark the stage finished so a resume moves on to the next one.
            self.progress.stage_index, self.progress.stage_epochs_done = index, stage.epochs
            self.progress.save(self.run.state_file)
        note = stage_regression(self.progress.history, stage.name, self.monitor, next_lr=stage.learning_rate,
                                mode=self.mode, num_val=len(self.data.val))
        if note:
            say(self.verbose, note)

    def _on_cached_features(self, stage) -> bool:
        """Whether ``stage`` trains the head on cached backbone features; says when a long head
        stage runs the whole model instead."""
        recipe, dist, task = self.recipe, self.dist, self.task
        # Under a strategy the head stage runs the whole model: every worker
        # must take part in the same collective steps.
        on_cached_features = (stage.trainable == "head" and recipe.head_cache_views > 0 and dist.kind == "none"
                              and task.uses_feature_cache)
        # (Not when the epochs come from the stage's own min_steps floor: the recipe asked for them.)
        if stage.trainable == "head" and not on_cached_features and stage.epochs > 10 and not stage.min_steps:
            why = ("under a distribution strategy" if dist.kind != "none" else "head_cache_views = 0"
                   if task.uses_feature_cache else f"the {task.name} head reads spatial features")
            say(self.verbose, f"Stage {stage.name!r} runs the whole model {stage.epochs} times ({why}, no feature "
                              "cache); a recipe with 5-10 head epochs saves most of that time.")
        return on_cached_features

    def _compile_stage(self, index: int, stage, on_cached_features: bool) -> None:
        """Set what trains in ``stage``, compile its optimizer and objective, and say so."""
        model, recipe, config, steps = self.model, self.recipe, self.config, self.steps
        trainable_layers = set_trainable(model, self.spec, stage, freeze_batchnorm=config["weights"] != "random")
        # A fresh compile per stage: trainable flags are read at compile time.
        with self.dist.scope():
            # In the scope: metric objects create their variables when built, and only variables made
            # under a strategy are summed over its replicas (outside, each worker logged its own IoU,
            # so the workers' monitors, and their early-stopping decisions, could differ).
            objective = self.task.objective(config, recipe)
            optimizer = with_loss_scaling(stage_optimizer(recipe, stage, steps, model), model)
            model.compile(optimizer=optimizer, loss=objective.loss, metrics=objective.metrics,
                          jit_compile="auto" if config.get("xla") is None else bool(config["xla"]),
                          steps_per_execution=self.dist.steps_per_execution(steps_per_call(steps)))
        bind_rate_scales(model, rate_scales(model, self.spec, stage))
        say(self.verbose, describe_stage(index, len(recipe.stages), stage, trainable_layers,
                                         cached=on_cached_features, ema_epochs=averaged_epochs(recipe, steps)))

    def _callbacks(self, index: int, stage, done: int, on_cached_features: bool) -> list:
        """The stage's checkpoints, TensorBoard log, weight-average swap and early stopping."""
        # Early stopping can end a stage after any epoch, and Keras then swaps the raw
        # weights back in for the average: such a stage writes every epoch's checkpoint.
        interval = (0.0 if stage.patience and not on_cached_features
                    else float(self.config.get("checkpoint_every", 0.0)))
        self.checkpoints.stage(index, stage.name, stage_start=self.progress.epoch - done, save_interval=interval)
        callbacks = [self.checkpoints,
                     keras.callbacks.TensorBoard(log_dir=str(self.run.logs_dir / stage.name), write_graph=False)]
        if uses_ema(self.model) and not on_cached_features:
            # First, so validation, checkpoints and the best model all see the averaged weights.
            callbacks.insert(0, keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
        if stage.patience:
            callbacks.append(keras.callbacks.EarlyStopping(monitor=self.monitor, mode=self.mode,
                                                           patience=stage.patience))
        return callbacks

    def _fit(self, stage, done: int, on_cached_features: bool, callbacks: list):
        """The stage's remaining epochs, on cached features or through the whole model; Keras's history."""
        progress = self.progress
        if on_cached_features:
            return self.task.fit_head_on_cached_features(
                self.model, self.data, self.image_size, self.recipe, self.config, callbacks,
                initial_epoch=progress.epoch, epochs=stage.epochs - done,
                class_weight=self.weights_per_class, verbose=self.verbose,
            )
        return self.model.fit(
            self.train_ds,
            validation_data=self.val_ds,
            initial_epoch=progress.epoch,
            epochs=progress.epoch - done + stage.epochs,
            verbose=self.verbose,
            shuffle=False,  # the tf.data pipeline shuffles
            class_weight=self.weights_per_class,
            callbacks=callbacks,
        )

    def finish(self, started: float) -> TrainResult:
        """Evaluate the best weights and write the report, metrics.json and run.json (a worker
        of a distributed run removes its folder instead)."""
        run, progress, recipe, data, verbose = self.run, self.progress, self.recipe, self.data, self.verbose
        if progress.best_epoch == 0:
            raise TransferError("The recipe trained for 0 epochs.", fix="Give at least one stage epochs >= 1.")
        model = self.model
        if self.dist.kind != "none":
            if not self.dist.is_chief:
                shutil.rmtree(run.root, ignore_errors=True)  # a worker's files were never the run's
                say(verbose, f"Worker {self.dist.worker_index} done; the chief wrote the run folder.")
                return TrainResult(run.root, progress.best_epoch, {}, time.perf_counter() - started)
            # Evaluated by the chief alone, so outside the strategy (its predict would wait for the others).
            model = keras.saving.load_model(run.best_checkpoint, compile=False)
        else:
            model.set_weights(self.checkpoints.best_weights or weights_of(run.best_checkpoint))
        report = self.task.evaluate(model, data.val, self.image_size, recipe.batch_size, self.config)
        report.write(run.evaluation_dir)
        seconds = time.perf_counter() - started
        outcome = _outcome(progress, recipe, self.monitor, self.mode, num_val=len(data.val))
        metrics = {**report.summary(), **outcome, "train_seconds": round(seconds, 2)}
        atomic_write_json(run.metrics_file, metrics)
        atomic_write_json(run.config_file, {**self.config, "status": "done", **outcome})
        remove_epoch_checkpoints(run)
        say(verbose, final_line(progress.history, self.monitor, progress.best_epoch, run.root))
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
