"""What transfer.train costs per epoch over a bare ``model.fit`` of the same model on the same pipeline.

Both sides train the same classifier (same backbone, weights, seed, image
size, batch size), with every layer trainable, the same optimizer and
schedule (``transfer.engine.schedules.stage_optimizer``), on the same ``tf.data``
pipelines (``transfer.data.pipelines.images.make_dataset``) with validation each
epoch. The bare side is ``model.fit`` with a timing callback and nothing
else. The transfer side is ``transfer.train`` with a one-stage recipe, whose
``history.csv`` records each epoch's wall time including its validation and
the checkpoint writes (epoch checkpoint, best model, state, history) that
make runs resumable. Epoch 1 (tracing) is left out. The sides run
alternately, ``--rounds`` times, so drift in the machine's load hits both;
the overhead is given on the fastest epochs (least disturbed by other load,
as ``timeit`` does) and on the medians.

Example:
    python benchmarks/train_overhead.py --data ../shared/fixtures/flowers5 --backbone mobilenet_0.25 \\
        --weights ../shared/fixtures/weights/mobilenet_2_5_224_tf_no_top.h5 --image-size 128 --epochs 4
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402

from transfer.backbones import get_backbone  # noqa: E402
from transfer.data import load_data  # noqa: E402
from transfer.data.pipelines.images import make_dataset  # noqa: E402
from transfer.core.recipe import Recipe, Stage  # noqa: E402
from transfer.tasks.classify.model import build_classifier, loss_and_metrics  # noqa: E402
from transfer.data.pipelines.images import steps_per_epoch  # noqa: E402
from transfer.engine.freezing import set_trainable  # noqa: E402
from transfer.engine.schedules import stage_optimizer  # noqa: E402
from transfer.engine.train import train  # noqa: E402


class EpochTimer(keras.callbacks.Callback):
    """Wall time of each epoch, training and validation included."""

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.started)


def bare_fit(split, args, recipe: Recipe) -> list[float]:
    """Plain Keras: build, compile, fit; nothing written."""
    keras.utils.set_random_seed(recipe.seed)
    spec = get_backbone(args.backbone)
    model, info = build_classifier(spec, split.train.num_classes, args.image_size, weights=args.weights,
                                   dropout=recipe.dropout)
    stage = recipe.stages[0]
    set_trainable(model, spec, stage, freeze_batchnorm=info.source != "random")
    steps = steps_per_epoch(split.train, recipe.batch_size)
    loss, metrics = loss_and_metrics(False, recipe.label_smoothing)
    model.compile(optimizer=stage_optimizer(recipe, stage, steps, model), loss=loss, metrics=metrics)
    train_ds = make_dataset(split.train, args.image_size, recipe.batch_size, training=True,
                            augment=recipe.augment, seed=recipe.seed)
    val_ds = make_dataset(split.val, args.image_size, recipe.batch_size, training=False)
    timer = EpochTimer()
    model.fit(train_ds, validation_data=val_ds, epochs=stage.epochs, verbose=0, shuffle=False,
              callbacks=[timer])
    return timer.seconds, model


def bookkeeping_seconds(model, repeats: int = 5) -> float:
    """Median wall time of transfer's end-of-epoch work alone (checkpoint, best model, state, history).

    Timed directly on the trained model, so the machine's load matters far
    less than in whole epochs.
    """
    from transfer.engine.run import RunDir
    from transfer.engine.checkpoints import Progress, RunCheckpoints

    times = []
    with tempfile.TemporaryDirectory(prefix="transfer-bookkeeping-") as scratch:
        callback = RunCheckpoints(RunDir(scratch), Progress())
        callback.set_model(model)
        for epoch in range(repeats):
            logs = {"loss": 1.0, "accuracy": 0.5, "val_loss": 1.0, "val_accuracy": 0.5 + epoch / 100}
            callback.on_epoch_begin(epoch)
            started = time.perf_counter()
            callback.on_epoch_end(epoch, logs)  # every epoch improves: the costliest case
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def transfer_train(split, args, recipe: Recipe) -> list[float]:
    """transfer.train with the same one-stage recipe; epoch times from its history.csv."""
    with tempfile.TemporaryDirectory(prefix="transfer-overhead-") as scratch:
        out = Path(scratch) / "run"
        train(split, out, backbone=args.backbone, weights=args.weights, image_size=args.image_size,
              recipe=recipe, feature_cache=False, verbose=0)
        rows = list(csv.DictReader(open(out / "history.csv")))
    return [float(r["seconds"]) for r in rows]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="folder-per-class data (optionally train/ val/)")
    parser.add_argument("--backbone", default="mobilenet_0.25")
    parser.add_argument("--weights", default="imagenet", help='"imagenet", "none" or a weights file')
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=4, help="epochs per side (the first is not counted)")
    parser.add_argument("--rounds", type=int, default=1, help="bare/transfer pairs to run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be >= 2 (the first epoch is not counted)")
    args.weights = None if args.weights == "none" else args.weights

    split = load_data(args.data, val_fraction=0.2, seed=args.seed)
    recipe = Recipe(stages=(Stage("finetune", "all", 1e-3, args.epochs),), batch_size=args.batch_size,
                    seed=args.seed)
    bare, ours = [], []
    for round_index in range(args.rounds):
        seconds, model = bare_fit(split, args, recipe)
        bare += seconds[1:]
        ours += transfer_train(split, args, recipe)[1:]
        print(f"round {round_index + 1}/{args.rounds}: bare {statistics.median(bare):.2f} s/epoch, "
              f"transfer {statistics.median(ours):.2f} s/epoch", flush=True)
    bare_median, ours_median = statistics.median(bare), statistics.median(ours)
    overhead = min(ours) / min(bare) - 1
    print()
    print(f"{len(split.train)} train / {len(split.val)} val images, {args.backbone} at {args.image_size} px, "
          f"batch {args.batch_size}, every layer trainable")
    print(f"{'':24}{'fastest s/epoch':>16}{'median s/epoch':>16}{'epochs timed':>14}")
    print(f"{'bare model.fit':24}{min(bare):16.3f}{bare_median:16.3f}{len(bare):14d}")
    print(f"{'transfer.train':24}{min(ours):16.3f}{ours_median:16.3f}{len(ours):14d}")
    print(f"transfer's overhead: {overhead:+.1%} on the fastest epochs, "
          f"{ours_median / bare_median - 1:+.1%} on the medians (target <= +5%)")
    bookkeeping = bookkeeping_seconds(model)
    print(f"end-of-epoch bookkeeping timed alone: {bookkeeping:.3f} s = {bookkeeping / min(bare):.1%} "
          f"of the fastest bare epoch")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "bare_seconds": bare, "transfer_seconds": ours, "bare_median": bare_median,
            "transfer_median": ours_median, "overhead_fastest": overhead,
            "overhead_median": ours_median / bare_median - 1, "bookkeeping_seconds": bookkeeping,
            "args": vars(args)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
