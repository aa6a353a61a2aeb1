"""keras.io's "Object Detection with RetinaNet" as a race entry: its recipe on transfer's data, backbone and scorer.

The guide (https://keras.io/examples/vision/retinanet/, by Srihari Humbarwadi;
file ``examples/vision/retinanet.py`` of keras-team/keras-io) trains a
RetinaNet: FPN P3-P7 on stride 8/16/32 features, 9 anchors per location,
focal + smooth L1 loss, SGD with momentum 0.9 and a piecewise-constant
learning rate, batch size 2, random horizontal flips. Its pieces are in
``benchmarks/guides/retinanet_parts.py``; this module is its data pipeline,
its training and the scoring of the last epoch's model.

Equalised with transfer's side of the race: the backbone (transfer's registry
entry with the same weights, instead of ResNet50), a square input of
``image_size`` (instead of the example's aspect-keeping 640-1024 px resize
with scale jitter), the data (a transfer ``DataSplit``), the number of
optimizer steps (the example trains one demonstration epoch of 100 steps; here
as many steps as transfer's default took), and the scorer (pycocotools through
``transfer.tasks.detect.evaluation.evaluate_detections``, boxes in each
image's original pixels).

Usage (from the repo root):

    python benchmarks/guides/retinanet.py --data ../shared/fixtures/raccoon/train_labels.csv \\
        --val-data ../shared/fixtures/raccoon/test_labels.csv \\
        --weights ../shared/fixtures/weights/mobilenet_2_5_224_tf_no_top.h5 \\
        --image-size 288 --steps 200 --json retinanet.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if __package__ in (None, ""):  # run as a script: the repo root, for `transfer` and `benchmarks.guides`
    sys.path.insert(0, str(ROOT))

from benchmarks.guides.retinanet_parts import SOURCE  # noqa: E402

GUIDE = {"name": "retinanet", "task": "detect", "source": SOURCE}

# Each constant copies examples/vision/retinanet.py of keras-team/keras-io (retinanet_parts.SOURCE_FILE),
# named by where it sits there.
BATCH_SIZE = 2  # the example's "Setting up training parameters": batch_size = 2
SHUFFLE_BUFFER = 8 * BATCH_SIZE  # the example's train pipeline: train_dataset.shuffle(8 * batch_size)
PADDING_VALUES = (0.0, 1e-8, -1)  # the example's padded_batch(padding_values=(0.0, 1e-8, -1))
VAL_BATCH_SIZE = 1  # the example's val pipeline: val_dataset.padded_batch(batch_size=1, ...)
VAL_STEPS = 50  # the example's fit: validation_data=val_dataset.take(50)
# The example's learning_rates / learning_rate_boundaries, kept as written. They are optimizer STEP
# counts: 125 steps at 2.5e-6, then 6.25e-4 to step 250, 1.25e-3 to step 500, the base 2.5e-3 to
# step 240k (its schedule is for 400k COCO steps). A race of a few hundred steps therefore spends
# its first 125 steps nearly still and reaches the base rate only after step 500.
LEARNING_RATES = (2.5e-06, 0.000625, 0.00125, 0.0025, 0.00025, 2.5e-05)
LEARNING_RATE_BOUNDARIES = (125, 250, 500, 240000, 360000)
MOMENTUM = 0.9  # the example's optimizer: tf.optimizers.SGD(learning_rate=learning_rate_fn, momentum=0.9)
SCORE_BATCH = 8  # images per predict call when scoring (no effect on the numbers)


def _box_arrays(samples):
    """Files (or bytes), pixel xyxy boxes ``[N, K, 4]`` and labels ``[N, K]`` (-1 in empty slots)."""
    import numpy as np

    from transfer.core.errors import TransferError
    from transfer.data.samples import Boxes

    slots = max(max((len(t) for t in samples.targets), default=0), 1)
    boxes = np.zeros((len(samples), slots, 4), np.float32)
    labels = np.full((len(samples), slots), -1, np.int32)
    for row, (source, target) in enumerate(zip(samples.sources, samples.targets)):
        if not isinstance(target, Boxes):
            raise TransferError(f"'{source}': its target is {type(target).__name__}, not Boxes.",
                                fix="Load the data with transfer.load_data(..., task='detect').")
        if len(target):
            boxes[row, :len(target)] = np.asarray(target.xyxy, np.float32)
            labels[row, :len(target)] = target.labels
    items = list(samples.encoded) if samples.encoded is not None else list(samples.sources)
    return items, boxes, labels


def _read(samples):
    """How an item of ``samples`` becomes bytes: the file's, or the bytes kept in memory."""
    import tensorflow as tf

    return (lambda item: item) if samples.encoded is not None else tf.io.read_file


def preprocess(image, pixel_xyxy, labels, image_size: int):
    """One sample as the example's preprocess_data gives it: random horizontal flip, resize,
    boxes as xywh pixels of the resized image, class ids int32.

    Equalised: the example's resize_and_pad_image (shorter side jittered in 640-1024 px, aspect
    kept, padded to a multiple of 128) becomes a square resize to ``image_size``, with the same
    ``tf.image.resize`` (bilinear, float32 out).
    """
    import tensorflow as tf

    from benchmarks.guides.retinanet_parts import corners_to_xywh

    keep = labels >= 0
    pixel_xyxy, labels = tf.boolean_mask(pixel_xyxy, keep), tf.boolean_mask(labels, keep)
    height, width = tf.cast(tf.shape(image)[0], tf.float32), tf.cast(tf.shape(image)[1], tf.float32)
    boxes = pixel_xyxy / tf.stack([width, height, width, height])  # the example's boxes are normalized
    # random_flip_horizontal: flip image and boxes when uniform(()) > 0.5.
    flip = tf.random.uniform(()) > 0.5
    image = tf.cond(flip, lambda: tf.image.flip_left_right(image), lambda: image)
    boxes = tf.cond(flip, lambda: tf.stack([1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0], boxes[:, 3]], axis=-1),
                    lambda: boxes)
    image = tf.image.resize(image, (image_size, image_size))
    return image, corners_to_xywh(boxes * float(image_size)), tf.cast(labels, tf.int32)


def guide_dataset(samples, image_size: int, *, training: bool):
    """The example's tf.data pipeline: map(preprocess_data), shuffle(8 * batch) when ``training``,
    padded_batch (batch 2, or 1 for validation, remainder dropped), map(encode_batch), ignore_errors,
    prefetch. Training repeats, so ``fit`` can take any step count; validation is the first 50
    batches, as the example's ``val_dataset.take(50)``, and flips too (its preprocess_data)."""
    import tensorflow as tf

    from benchmarks.guides.retinanet_parts import anchor_boxes, encode_batch

    batch_size = BATCH_SIZE if training else VAL_BATCH_SIZE
    items, pixel_boxes, labels = _box_arrays(samples)
    if training and not (labels >= 0).any():
        from transfer.core.errors import TransferError

        # Batches without any box fail to encode and are skipped (the example's ignore_errors): none would be left.
        raise TransferError(f"The RetinaNet guide's training split holds {len(samples)} images and no box.",
                            fix="Train on box data with at least one box.")
    read = _read(samples)
    anchors = tf.constant(anchor_boxes(image_size))

    def load(item, boxes, box_labels):
        from transfer.core.imageops import decode_image  # transfer's decoder: the pixels its Boxes are in

        return preprocess(decode_image(read(item)), boxes, box_labels, image_size)

    def encode(images, boxes, class_ids):
        # The example's encode_batch ends with resnet.preprocess_input; here the family's preprocessing
        # is the model's first layer (equalised), and the model takes the uint8 pixels it expects.
        images = tf.saturate_cast(tf.round(images), tf.uint8)
        return images, encode_batch(anchors, boxes, class_ids, batch_size)

    ds = tf.data.Dataset.from_tensor_slices((items, pixel_boxes, labels))
    ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE)
    if training:
        ds = ds.shuffle(SHUFFLE_BUFFER)
    ds = ds.padded_batch(batch_size, padding_values=PADDING_VALUES, drop_remainder=True)
    ds = ds.map(encode, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
    # Validation repeats its first 50 batches, so fit's validation_steps (below) reads them each epoch
    # without running a stream of unknown length dry (Keras warns then).
    ds = ds.repeat() if training else ds.take(VAL_STEPS).repeat()
    return ds.prefetch(tf.data.AUTOTUNE)


def build_training(data, backbone: str, weights, image_size: int):
    """The compiled model: RetinaNet on transfer's backbone, RetinaNetLoss, SGD with the example's schedule."""
    import keras

    from benchmarks.guides.retinanet_parts import RetinaNetLoss, build_retinanet
    from transfer.backbones import get_backbone

    model = build_retinanet(get_backbone(backbone), image_size, weights, data.train.num_classes)
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay(
        boundaries=list(LEARNING_RATE_BOUNDARIES), values=list(LEARNING_RATES))
    model.compile(loss=RetinaNetLoss(data.train.num_classes),
                  optimizer=keras.optimizers.SGD(learning_rate=schedule, momentum=MOMENTUM))
    return model


def steps_per_epoch(num_train: int) -> int:
    """Batches of 2 per epoch, the remainder dropped (the example's padded_batch(drop_remainder=True)).

    Example:
        >>> steps_per_epoch(161)
        80
    """
    from transfer.core.errors import TransferError

    if num_train < BATCH_SIZE:
        raise TransferError(f"The RetinaNet guide trains on batches of {BATCH_SIZE} images, and the training "
                            f"split holds {num_train}.", fix="Give it at least 2 training images.")
    return num_train // BATCH_SIZE


def score_images(samples, image_size: int):
    """Batched uint8 ``[B, S, S, 3]`` inputs of ``samples`` in order (the example's prepare_image,
    its aspect-keeping resize equalised to the square one) and each image's ``(width, height)``."""
    import tensorflow as tf

    from transfer.core.imageops import decode_image

    items, _, _ = _box_arrays(samples)
    read = _read(samples)

    def load(item):
        image = decode_image(read(item))
        size = tf.shape(image)[1::-1]  # (width, height)
        return tf.saturate_cast(tf.round(tf.image.resize(image, (image_size, image_size))), tf.uint8), size

    return tf.data.Dataset.from_tensor_slices(items).map(load, num_parallel_calls=tf.data.AUTOTUNE) \
        .batch(SCORE_BATCH).prefetch(tf.data.AUTOTUNE)


def detections_in_original_pixels(raw, sizes, image_size: int):
    """Decode raw ``[B, A, 4 + C]`` predictions (the example's DecodePredictions) and stretch each
    image's boxes back to its own pixels (x * width / S, y * height / S): ``(boxes, scores, labels)`` each.

    Example:
        >>> detections_in_original_pixels(model.predict(images), [(640, 480)], 288)[0][0][:1]
        array([[ 81.2,  88.0, 522.1, 408.3]])
    """
    import numpy as np

    from benchmarks.guides.retinanet_parts import anchor_boxes, decode_predictions

    boxes, scores, classes, valid = (np.asarray(t) for t in decode_predictions(raw, anchor_boxes(image_size)))
    found = []
    for k, (width, height) in enumerate(sizes):
        n = int(valid[k])
        scale = np.array([width, height, width, height], np.float64) / image_size
        found.append((boxes[k, :n].astype(np.float64) * scale, scores[k, :n].astype(np.float64),
                      classes[k, :n].astype(np.int64)))
    return found


def score_model(model, samples, image_size: int, class_names):
    """The DetectionReport of ``model`` on ``samples``: transfer's COCO evaluation, original pixels."""
    from transfer.tasks.detect.evaluation import evaluate_detections

    predictions = []
    for images, sizes in score_images(samples, image_size):
        raw = model(images, training=False)
        predictions.extend(detections_in_original_pixels(raw, sizes.numpy().tolist(), image_size))
    return evaluate_detections(samples, predictions, class_names)


def run_guide(data, *, backbone="mobilenet_0.25", weights=None, image_size: int, steps: int | None = None,
              epochs: int | None = None, seed: int = 0, score_samples=None, echo=print) -> dict:
    """Train the RetinaNet example's recipe on ``data`` (a detection ``DataSplit``) for ``steps``
    optimizer steps (or ``epochs``), then score the last epoch's model on ``score_samples``
    (default ``data.val``) with ``evaluate_detections``.

    Example:
        >>> data = transfer.load_data("raccoon/train_labels.csv", task="detect", val_source="raccoon/test_labels.csv")
        >>> result = run_guide(data, weights="mobilenet_2_5_224_tf_no_top.h5", image_size=288, steps=200)
        >>> result["headline"] == result["score"]["map"]
        True
    """
    import keras

    from benchmarks.guides.fit_budget import epoch_logger, plan_epochs, result

    keras.utils.set_random_seed(seed)
    plan = plan_epochs(steps, epochs, steps_per_epoch(len(data.train)))
    score_samples = data.val if score_samples is None else score_samples
    started = time.perf_counter()
    model = build_training(data, backbone, weights, image_size)
    history: list[dict] = []
    model.fit(
        guide_dataset(data.train, image_size, training=True), epochs=plan.epochs,
        steps_per_epoch=plan.steps_per_epoch,
        validation_data=guide_dataset(data.val, image_size, training=False) if len(data.val) else None,
        validation_steps=min(VAL_STEPS, len(data.val)) or None,
        callbacks=[epoch_logger(plan.steps, echo, history)],
        shuffle=False, verbose=0)  # shuffled by the pipeline, as the example's
    trained = time.perf_counter()
    report = score_model(model, score_samples, image_size, data.train.class_names)
    return result(GUIDE, plan_epochs_run=len(history), steps=int(model.optimizer.iterations.numpy()),
                  started=started, trained=trained, report=report, headline_key="map", history=history)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="detection source (box CSV, VOC, COCO, VIA) for training")
    parser.add_argument("--val-data", default=None, help="validation and scoring source (default: a 20%% split)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (the race's)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs, when --steps is not given")
    parser.add_argument("--image-size", type=int, required=True)
    parser.add_argument("--backbone", default="mobilenet_0.25")
    parser.add_argument("--weights", default=None, help="'imagenet', a weights file, or 'none'")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the result to this JSON file")
    args = parser.parse_args(argv)

    import transfer

    data = transfer.load_data(args.data, task="detect", val_source=args.val_data, seed=args.seed)
    result = run_guide(data, backbone=args.backbone, weights=args.weights, image_size=args.image_size,
                       steps=args.steps, epochs=args.epochs, seed=args.seed)
    print(f"retinanet: mAP {result['score']['map']}, mAP@0.5 {result['score']['map50']}, {result['steps']} steps, "
          f"{result['seconds']:.1f} s ({result['train_seconds']:.1f} s training)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
