"""The usual box-regression recipe as a panel guide: a frozen backbone, Flatten, Dense 128-64-32-4 sigmoid,
MSE, then the same with the backbone unfrozen.

Source: Adrian Rosebrock, "Object detection: Bounding box regression with Keras, TensorFlow, and
Deep Learning", PyImageSearch, 2020-10-05 (``EXAMPLE`` below; its ``config.py`` and ``train.py``):
VGG16 without its top, frozen (``vgg.trainable = False``), ``Flatten`` of its last feature map,
``Dense(128, relu)``, ``Dense(64, relu)``, ``Dense(32, relu)``, ``Dense(4, sigmoid)`` (the box as
normalized ``xmin, ymin, xmax, ymax``), ``loss="mse"``, ``Adam(lr=INIT_LR)`` with ``INIT_LR = 1e-4``,
``BATCH_SIZE = 32``, ``NUM_EPOCHS = 25``; images read by ``load_img(path, target_size=(224, 224))``
(Keras's default nearest interpolation), all in memory, ``model.fit`` shuffling them every epoch and
validating on the held-out images. Then, as issue 23 asks, "the same with the backbone unfrozen": the
Keras transfer-learning guide's fine-tuning step (``KERAS_GUIDE``: ``base_model.trainable = True``,
BatchNorm kept in inference mode, recompiled with ``keras.optimizers.Adam(1e-5)``), for as many
epochs again. Changed: the backbone (transfer's, with its preprocessing, for VGG16 and the post's
``/ 255.0``), the image size and the step count, which the panel sets. Each image's target is its
largest box (transfer's localization rule). Scored by transfer's localization evaluation: IoU with
the largest true box in each image's own pixels.

Usage (from the repo root). Measured so (mobilenet_0.25, ImageNet weights; 2026-12-07, two CPU cores shared
with other jobs): mean IoU 0.622, IoU >= 0.5 on 0.775 of the 40 test images, 200 steps (20 frozen + 20
unfrozen epochs of 5), 364 s; benchmarks/results/guides-deeplabv3plus-box_regression-2026-12-07.jsonl.

    python benchmarks/guides/box_regression.py --data ../shared/fixtures/raccoon/train_labels.csv \\
        --val-data ../shared/fixtures/raccoon/test_labels.csv --image-size 224 --steps 200 \\
        --weights ../shared/fixtures/weights/mobilenet_2_5_224_tf_no_top.h5 --json out.jsonl

Example:
    >>> split = transfer.load_data("raccoon/train_labels.csv", task="localize", val_source="raccoon/test_labels.csv")
    >>> run_guide(split, weights="mobilenet.h5", image_size=224, steps=200)["headline"]
    0.6215
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

EXAMPLE = ("https://pyimagesearch.com/2020/10/05/"
           "object-detection-bounding-box-regression-with-keras-tensorflow-and-deep-learning/")
KERAS_GUIDE = "https://keras.io/guides/transfer_learning/"  # keras-team/keras-io guides/transfer_learning.py
GUIDE = {"name": "box_regression", "task": "localize", "source": EXAMPLE}

HEAD_UNITS = (128, 64, 32)  # EXAMPLE train.py: `Dense(128, activation="relu")`, then 64 and 32, all relu
LEARNING_RATE = 1e-4  # EXAMPLE config.py: `INIT_LR = 1e-4`, train.py: `opt = Adam(lr=INIT_LR)`
BATCH_SIZE = 32  # EXAMPLE config.py: `BATCH_SIZE = 32`
EPOCHS = 25  # EXAMPLE config.py: `NUM_EPOCHS = 25`; the unfrozen stage runs as many again (issue 23)
# KERAS_GUIDE, "Do a round of fine-tuning of the entire model": `base_model.trainable = True`, then
# `model.compile(optimizer=keras.optimizers.Adam(1e-5),  # Low learning rate`, the same loss.
FINETUNE_LEARNING_RATE = 1e-5
STAGES = ("frozen", "unfrozen")


# --- the recipe's model ------------------------------------------------------------------------------
def build_model(spec, image_size: int, weights=None):
    """EXAMPLE's regressor on transfer's backbone: ``(model, weights_info)``; uint8 ``[S, S, 3]`` images in,
    the box ``[4]`` (normalized ``xmin, ymin, xmax, ymax``, sigmoid) out.

    Example:
        >>> model, _ = build_model(get_backbone("smallcnn"), 64)
        >>> model.output_shape
        (None, 4)
    """
    import keras

    from transfer.backbones.features import backbone_features

    # The backbone: transfer's (its preprocessing, the same weights as transfer's side) instead of the
    # post's VGG16, whose `vgg.output` is its last feature map (block5_pool, stride 32): the deepest
    # stride transfer's backbone answers.
    last = max(spec.feature_layers)
    image, features, info = backbone_features(spec, image_size, weights, (last,))
    flatten = keras.layers.Flatten()(features[last])  # EXAMPLE train.py: `flatten = Flatten()(flatten)`
    head = flatten
    for units in HEAD_UNITS:
        head = keras.layers.Dense(units, activation="relu")(head)
    box = keras.layers.Dense(4, activation="sigmoid")(head)  # EXAMPLE train.py: `Dense(4, activation="sigmoid")`
    return keras.Model(inputs=image, outputs=box, name="box_regression"), info


def set_backbone_trainable(model, trainable: bool, pretrained: bool) -> None:
    """Freeze (EXAMPLE: ``vgg.trainable = False``) or unfreeze (KERAS_GUIDE: ``base_model.trainable = True``)
    the nested backbone. Unfrozen, a pretrained backbone's BatchNorm stays in inference mode, as the
    Keras guide keeps it (in Keras 3 that takes non-trainable BatchNorm layers: see
    ``transfer.backbones.nesting``); random weights keep transfer's rule (their BatchNorm trains)."""
    from transfer.backbones.nesting import BACKBONE_LAYER, freeze_batchnorm_layers

    backbone = model.get_layer(BACKBONE_LAYER)
    backbone.trainable = trainable
    if trainable and pretrained:
        freeze_batchnorm_layers(backbone)


def compile_stage(model, stage: str) -> None:
    """``loss="mse"`` with Adam at the stage's rate (EXAMPLE's 1e-4 frozen, KERAS_GUIDE's 1e-5 unfrozen)."""
    import keras

    rate = LEARNING_RATE if stage == "frozen" else FINETUNE_LEARNING_RATE
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=rate), loss="mse")  # EXAMPLE: `loss="mse"`


# --- the recipe's data ---------------------------------------------------------------------------------
def box_targets(samples) -> np.ndarray:
    """float32 ``[N, 4]``: each image's largest box divided by its width and height (EXAMPLE:
    ``startX = float(startX) / w`` ...); the largest, as transfer's localizer learns.

    Example:
        >>> box_targets(Samples(("a.png",), (Boxes(((10, 20, 30, 40),), (0,), 100, 50),), ("x",)))
        array([[0.1, 0.4, 0.3, 0.8]], dtype=float32)
    """
    from transfer.data.pipelines.boxes import largest_box

    rows = []
    for target in samples.targets:
        (x0, y0, x1, y1), _ = largest_box(target)
        rows.append((x0 / target.width, y0 / target.height, x1 / target.width, y1 / target.height))
    return np.asarray(rows, np.float32).reshape(-1, 4)


def guide_image(encoded, image_size: int):
    """EXAMPLE's ``load_img(imagePath, target_size=(224, 224))`` at ``S``: decoded to RGB, resized NEAREST
    (``load_img``'s default interpolation), uint8 (transfer's backbone scales it; the post's ``/ 255.0``
    was VGG16's input, replaced by the backbone's own preprocessing)."""
    import tensorflow as tf

    from transfer.core.imageops import decode_image

    return tf.image.resize(decode_image(encoded), [image_size, image_size], method="nearest")


def make_dataset(samples, image_size: int, *, training: bool, seed: int = 0, batch_size: int = BATCH_SIZE):
    """``(uint8 images [B, S, S, 3], float32 boxes [B, 4])``: decoded once and kept (the post loads every
    image into one array), reshuffled every epoch when ``training`` (``model.fit``'s ``shuffle=True``
    on arrays), batches of 32 with the last one partial (as ``fit`` batches arrays)."""
    import tensorflow as tf

    items = list(samples.encoded) if samples.encoded is not None else list(samples.sources)
    read = (lambda item: item) if samples.encoded is not None else tf.io.read_file
    ds = tf.data.Dataset.from_tensor_slices((items, box_targets(samples))).map(
        lambda item, box: (guide_image(read(item), image_size), box),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).cache()
    if training:
        ds = ds.shuffle(len(samples), seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


# --- transfer's scoring ------------------------------------------------------------------------------
def predict_boxes(model, samples, image_size: int, batch_size: int = BATCH_SIZE) -> np.ndarray:
    """The model's normalized boxes ``[N, 4]`` for ``samples``, in order, from the guide's own input pixels."""
    import tensorflow as tf

    items = list(samples.encoded) if samples.encoded is not None else list(samples.sources)
    read = (lambda item: item) if samples.encoded is not None else tf.io.read_file
    images = tf.data.Dataset.from_tensor_slices(items).map(
        lambda item: guide_image(read(item), image_size), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return np.asarray(model.predict(images.batch(batch_size), verbose=0), np.float64).reshape(-1, 4)


def score_boxes(samples, normalized: np.ndarray):
    """transfer's ``LocalizeReport`` for normalized boxes ``[N, 4]``: stretched back to each image's own
    pixels (``boxes_in_pixels``, the inverse of the guide's resize) and measured by ``report_from_pixels``
    against each image's largest true box.

    Example:
        >>> score_boxes(samples, box_targets(samples)).mean_iou
        1.0
    """
    from transfer.tasks.localize.evaluation import boxes_in_pixels, report_from_pixels

    return report_from_pixels(samples, boxes_in_pixels(samples, normalized))


# --- the run -------------------------------------------------------------------------------------------
def stage_plans(steps: int | None, epochs: int | None, steps_per_epoch: int):
    """``[(stage, Plan)]``: ``steps`` (else ``epochs``) split between the frozen and the unfrozen stage in
    the ratio of the recipe's epochs (25 : 25, the odd one to the frozen stage); a stage left with
    nothing is not run.

    Example:
        >>> [(stage, plan.steps) for stage, plan in stage_plans(7, None, 5)]
        [('frozen', 4), ('unfrozen', 3)]
    """
    from benchmarks.guides.fit_budget import plan_epochs

    total = steps if steps is not None else epochs
    if total is None or total < 1:
        raise ValueError(f"Give steps or epochs (at least 1). Received: steps={steps}, epochs={epochs}")
    parts = (total - total // 2, total // 2)
    return [(stage, plan_epochs(part, None, steps_per_epoch) if steps is not None
             else plan_epochs(None, part, steps_per_epoch)) for stage, part in zip(STAGES, parts) if part > 0]


def run_guide(data, *, backbone="mobilenet_0.25", weights=None, image_size: int, steps: int | None = None,
              epochs: int | None = None, seed: int = 0, score_samples=None, echo=print) -> dict:
    """Train the recipe on ``data`` (a localization ``DataSplit``) for ``steps`` optimizer steps in all (or
    ``epochs``), half frozen and half unfrozen, then score the last epoch's model on ``score_samples``
    (default ``data.val``); the guide contract's JSON-ready dict, headline the mean IoU.

    Example:
        >>> run_guide(split, backbone="smallcnn", image_size=64, steps=5)["steps"]
        5
    """
    import math

    import keras

    from benchmarks.guides.fit_budget import epoch_logger, result
    from transfer.backbones import get_backbone

    started = time.perf_counter()
    keras.utils.set_random_seed(seed)
    plans = stage_plans(steps, epochs, math.ceil(len(data.train) / BATCH_SIZE))
    model, info = build_model(get_backbone(backbone), image_size, weights)
    train = make_dataset(data.train, image_size, training=True, seed=seed)
    # EXAMPLE train.py: `validation_data=(testImages, testTargets)`: a validation loss every epoch.
    val = make_dataset(data.val, image_size, training=False) if len(data.val) else None
    history: list[dict] = []
    steps_run = 0
    for stage, plan in plans:
        set_backbone_trainable(model, stage == "unfrozen", info.source != "random")
        compile_stage(model, stage)
        model.fit(train, validation_data=val, epochs=plan.epochs, shuffle=False, verbose=0,
                  callbacks=[epoch_logger(plan.steps, echo, history, stage, len(history) + 1)])
        steps_run += int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    trained = time.perf_counter()
    samples = data.val if score_samples is None else score_samples
    report = score_boxes(samples, predict_boxes(model, samples, image_size))
    return result(GUIDE, plan_epochs_run=len(history), steps=steps_run, started=started, trained=trained,
                  report=report, headline_key="mean_iou", history=history)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a box source transfer reads (CSV, Pascal VOC, COCO)")
    parser.add_argument("--val-data", default=None, help="validation source (default: a split of --data)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps in all, half per stage")
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"epochs in all when --steps is not given (default {2 * EPOCHS}: {EPOCHS} per stage)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--backbone", default="mobilenet_0.25")
    parser.add_argument("--weights", default=None, help="imagenet, a weights file, or none (default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="append the result as one JSON line to this file")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import transfer

    args = parse_args(argv)
    data = transfer.load_data(args.data, task="localize", val_source=args.val_data, seed=args.seed)
    epochs = args.epochs if args.epochs is not None or args.steps is not None else 2 * EPOCHS
    out = run_guide(data, backbone=args.backbone, weights=args.weights, image_size=args.image_size,
                    steps=args.steps, epochs=epochs, seed=args.seed)
    print(json.dumps({k: v for k, v in out.items() if k not in ("history", "score")}))
    if args.json:
        with open(args.json, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(out) + "\n")
    return out


if __name__ == "__main__":
    main()
