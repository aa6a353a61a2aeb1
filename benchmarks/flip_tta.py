"""Does left-right flip test-time augmentation lift a classification run?

For each run folder, the run's best checkpoint is evaluated on the run's own
validation split three ways: the images as they are, mirrored left-right,
and the average of both predictions (flip TTA, as fastai's ``tta()`` does).
TTA doubles the serving cost, so it is only worth exporting when it gains.

Example:

    transfer train --data $F/flowers5 --image-size 128 --recipe seed1.toml --out runs/s1
    python benchmarks/flip_tta.py runs/s1 --json-out tta.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from transfer.data.pipelines.images import make_dataset, targets_array  # noqa: E402
from transfer.engine.run import RunDir  # noqa: E402
from transfer.engine.run_config import samples_from_record  # noqa: E402
from transfer.tasks import get_task  # noqa: E402


def flip_accuracies(run_dir: Path, batch_size: int = 64) -> dict:
    """Validation accuracy of ``run_dir``'s best model: plain, mirrored, and the two averaged."""
    run = RunDir(run_dir).require()
    config = run.config()
    if config.get("task", "classify") != "classify" or config.get("multi_label"):
        raise SystemExit(f"{run_dir}: flip TTA here is for single-label classification runs, "
                         f"this one is task {config.get('task')!r} (multi_label={config.get('multi_label')}).")
    task = get_task("classify").for_run(config)
    record = run.split().get("val")
    if record is None:
        raise SystemExit(f"{run.split_file}: no validation files recorded; flip TTA needs the run's own val split.")
    samples = samples_from_record(record, config, task)
    model = run.load_model()
    # Cached: the mirrored pass reads the decoded images instead of decoding every file again.
    ds = make_dataset(samples, int(config["image_size"]), batch_size, training=False, cache="auto")
    images = ds.map(lambda x, y: x)
    plain = model.predict(images, verbose=0)
    mirrored = model.predict(images.map(tf.image.flip_left_right), verbose=0)
    truth = targets_array(samples)
    truth = truth.argmax(1) if truth.ndim > 1 else truth

    def accuracy(scores):
        return float(np.mean(np.argmax(scores, 1) == truth))

    return {"run": str(run_dir), "num_val": len(samples), "plain": accuracy(plain),
            "mirrored": accuracy(mirrored), "flip_tta": accuracy(plain + mirrored)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="classification run folders (transfer train --out)")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    from transfer.tasks.custom_objects import register_custom_objects

    register_custom_objects()
    from transfer.core.errors import TransferError

    try:
        for run in args.runs:  # every folder checked before the first one is evaluated
            RunDir(run).require()
        rows = [flip_accuracies(run) for run in args.runs]
    except TransferError as error:
        print(f"flip_tta.py: {error}", file=sys.stderr)
        return 2
    print(f"{'run':40s} {'val':>5s} {'plain':>7s} {'mirrored':>9s} {'flip TTA':>9s} {'TTA - plain':>12s}")
    for r in rows:
        print(f"{r['run']:40s} {r['num_val']:5d} {r['plain']:7.4f} {r['mirrored']:9.4f} {r['flip_tta']:9.4f} "
              f"{r['flip_tta'] - r['plain']:+12.4f}")
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
