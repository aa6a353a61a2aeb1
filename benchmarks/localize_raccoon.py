"""Localization on raccoon: train with LocalizeTask's pieces, report the test split's figures.

Runs the task's own methods (load_data, run_config, build_model, objective,
make_dataset, evaluate) with the engine's freezing and optimizer rules
(``transfer.engine.freezing.set_trainable``, ``stage_optimizer``, per-layer rates, the
weight average), one compile per stage, as the engine does. Prints every
epoch's validation IoU and, at the end, ``evaluate`` on the test split for
the best epoch (by the task's monitor) and for the last.

Usage (from the repo root; the issue's targets: iou50_accuracy >= 0.90, mean_iou >= 0.75):

    python benchmarks/localize_raccoon.py --json benchmarks/results/localize_raccoon-DATE.jsonl
    python benchmarks/localize_raccoon.py --image-size 224 --head-epochs 5 --ft-epochs 15 --batch-size 16

Without options it runs ``LocalizeTask().default_recipe()`` at ``default_image_size`` (288 px):
measured 0.756 mean IoU, 0.975 IoU@0.5 (best epoch), 0.753 / 0.975 (last), 528 s.
Every run measured is in benchmarks/results/localize_raccoon-2026-11-29.jsonl.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("TRANSFER_FIXTURES", ROOT.parent / "shared" / "fixtures"))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=None, help="default: the task's default_image_size")
    parser.add_argument("--head-epochs", type=int, default=None)
    parser.add_argument("--head-lr", type=float, default=None)
    parser.add_argument("--ft-epochs", type=int, default=None)
    parser.add_argument("--ft-lr", type=float, default=None)
    parser.add_argument("--backbone-scale", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--augment", default=None, help="comma separated, e.g. flip,zoom,color ('' for none)")
    parser.add_argument("--channels", type=int, default=None)
    parser.add_argument("--hidden", type=int, default=None)
    parser.add_argument("--pooling", default=None, choices=("flatten", "average", "softargmax"))
    parser.add_argument("--strides", default=None, help="e.g. 16,32 or 32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="append the result as one JSON line to this file")
    return parser.parse_args(argv)


def recipe_from(args, task):
    from transfer.core.recipe import Stage

    recipe = task.default_recipe()
    head, finetune = recipe.stages
    head = dataclasses.replace(head, epochs=args.head_epochs if args.head_epochs is not None else head.epochs,
                               learning_rate=args.head_lr or head.learning_rate)
    finetune = dataclasses.replace(
        finetune, epochs=args.ft_epochs if args.ft_epochs is not None else finetune.epochs,
        learning_rate=args.ft_lr or finetune.learning_rate,
        backbone_lr_scale=args.backbone_scale or finetune.backbone_lr_scale)
    stages = tuple(s for s in (head, finetune) if s.epochs > 0) or (Stage("head", "head", 1e-3, 1),)
    augment = recipe.augment if args.augment is None else tuple(a for a in args.augment.split(",") if a)
    return dataclasses.replace(recipe, stages=stages, augment=augment, seed=args.seed,
                               batch_size=args.batch_size or recipe.batch_size)


def main(argv=None) -> dict:
    args = parse_args(argv)
    import keras

    from transfer.backbones import get_backbone
    from transfer.engine.rates import bind_rate_scales, rate_scales
    from transfer.engine.schedules import uses_ema
    from transfer.tasks import get_task
    from transfer.engine.freezing import set_trainable
    from transfer.engine.schedules import stage_optimizer

    keras.utils.set_random_seed(args.seed)
    task = get_task("localize")
    recipe = recipe_from(args, task)
    task.check_recipe(recipe)
    raccoon = FIXTURES / "raccoon"
    data = task.load_data(str(raccoon / "train_labels.csv"), val_source=str(raccoon / "test_labels.csv"),
                          echo=print)
    print(task.describe_data(data))
    config = task.run_config(data, recipe)
    head = dict(config["head"])
    for key in ("channels", "hidden", "pooling"):
        if getattr(args, key) is not None:
            head[key] = getattr(args, key)
    if args.strides:
        head["strides"] = [int(s) for s in args.strides.split(",")]
    config["head"] = head
    spec = get_backbone("mobilenet_0.25")
    weights = str(FIXTURES / "weights" / "mobilenet_2_5_224_tf_no_top.h5")
    size = args.image_size or task.default_image_size(spec)
    model, info = task.build_model(spec, config, size, weights, recipe)
    objective = task.objective(config, recipe)
    train_ds = task.make_dataset(data.train, size, recipe.batch_size, training=True, recipe=recipe,
                                 cache="memory", config=config)
    val_ds = task.make_dataset(data.val, size, recipe.batch_size, training=False, recipe=recipe,
                               cache="memory", config=config)
    steps = -(-len(data.train) // recipe.batch_size)
    print(f"recipe: {recipe.to_dict()}\nhead: {head}, image size {size}, weights {info.source}")

    best = {"value": -1.0, "weights": None, "epoch": 0}
    history, epoch, started = [], 0, time.perf_counter()

    class KeepBest(keras.callbacks.Callback):
        def on_epoch_end(self, index, logs=None):
            value = float(logs[objective.monitor])
            history.append({"epoch": index + 1, **{k: round(float(v), 4) for k, v in logs.items()}})
            if value > best["value"]:
                best.update(value=value, weights=self.model.get_weights(), epoch=index + 1)

    for stage in recipe.stages:
        set_trainable(model, spec, stage, freeze_batchnorm=info.source != "random")
        model.compile(optimizer=stage_optimizer(recipe, stage, steps, model), loss=objective.loss,
                      metrics=objective.metrics)
        bind_rate_scales(model, rate_scales(model, spec, stage))
        callbacks = [KeepBest()]
        if uses_ema(model):
            callbacks.insert(0, keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
        model.fit(train_ds, validation_data=val_ds, initial_epoch=epoch, epochs=epoch + stage.epochs,
                  verbose=2, callbacks=callbacks)
        epoch += stage.epochs
    seconds = time.perf_counter() - started
    # With the weight average the model holds the raw weights after fit; the last epoch was
    # validated with the averaged ones, so those are evaluated as "last".
    if uses_ema(model):
        model.optimizer.finalize_variable_values(model.trainable_variables)
    last = task.evaluate(model, data.val, size, recipe.batch_size, config).summary()
    model.set_weights(best["weights"])
    best_report = task.evaluate(model, data.val, size, recipe.batch_size, config).summary()
    result = {
        "image_size": size, "head": head, "recipe": recipe.to_dict(), "train_seconds": round(seconds, 1),
        "best_epoch": best["epoch"], "monitor": objective.monitor,
        "best": {k: best_report[k] for k in ("mean_iou", "iou50_accuracy")},
        "last": {k: last[k] for k in ("mean_iou", "iou50_accuracy")},
        "worst": best_report["worst"][:6],
        "history": [{k: r[k] for k in r if k in ("epoch", "loss", objective.monitor[4:], objective.monitor,
                                                 "val_iou50", "val_box_iou50")} for r in history],
    }
    print(json.dumps({k: v for k, v in result.items() if k != "history"}, indent=1))
    if args.json:
        with open(args.json, "a", encoding="utf-8") as f:
            f.write(json.dumps(result) + "\n")
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
