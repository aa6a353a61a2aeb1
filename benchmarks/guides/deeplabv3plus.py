"""The keras.io DeepLabV3+ example as a panel guide: its model, loss, optimizer, batch and pipeline.

Source: "Multiclass semantic segmentation using DeepLabV3+" (Soumik Rakshit, keras.io,
``examples/vision/deeplabv3_plus.py`` in keras-team/keras-io; ``EXAMPLE`` below). Kept
as the example writes it: ``convolution_block`` (Conv2D + BatchNorm + ReLU, He normal),
``DilatedSpatialPyramidPooling`` (image pooling, 1x1, 3x3 at rates 6/12/18, 256
filters, a 1x1 after the concatenation), the decoder (ASPP output upsampled to the
stride-4 features, 48-filter 1x1 on those, concatenated, two conv blocks, upsampled
to the input, 1x1 to the classes), Adam 1e-3, ``SparseCategoricalCrossentropy(from_logits=True)``,
batch 4 with ``drop_remainder``, no shuffle, no augmentation, no cache, images resized
bilinearly. Changed, each said where it is: the backbone (transfer's, at strides 16
and 4, for ResNet50's ``conv4_block6_2_relu`` / ``conv2_block3_2_relu``), masks resized
nearest (the example resizes them bilinearly, which blends class values), ignored pixels
left out of the loss (``ignore_class``), and the image size and step count, which the panel
sets. Scored by transfer's segmentation evaluation at each mask's own resolution.

Usage (from the repo root). Measured so (mobilenet_0.25, ImageNet weights; 2026-12-07, two CPU cores shared
with other jobs, load ~10): mean IoU 0.679 (background 0.927, balloon 0.431), pixel accuracy 0.931, 100
steps in 7 epochs, 2,243 s (scoring 41 s); benchmarks/results/guides-deeplabv3plus-box_regression-2026-12-07.jsonl.

    python benchmarks/guides/deeplabv3plus.py --data ../shared/fixtures/balloon/train \\
        --val-data ../shared/fixtures/balloon/val --image-size 320 --steps 100 \\
        --weights ../shared/fixtures/weights/mobilenet_2_5_224_tf_no_top.h5 --json out.jsonl

Example:
    >>> split = transfer.load_data("balloon/train", task="segment", val_source="balloon/val")
    >>> run_guide(split, weights="mobilenet.h5", image_size=320, steps=100)["headline"]
    0.6789
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

EXAMPLE = "https://github.com/keras-team/keras-io/blob/master/examples/vision/deeplabv3_plus.py"
GUIDE = {"name": "deeplabv3plus", "task": "segment", "source": "https://keras.io/examples/vision/deeplabv3_plus/"}

BATCH_SIZE = 4  # EXAMPLE: `BATCH_SIZE = 4`
EPOCHS = 25  # EXAMPLE: `model.fit(train_dataset, validation_data=val_dataset, epochs=25)`
LEARNING_RATE = 1e-3  # EXAMPLE: `keras.optimizers.Adam(learning_rate=0.001)`
ASPP_FILTERS = 256  # EXAMPLE: `convolution_block(..., num_filters=256, ...)`, the default of every ASPP block
ASPP_RATES = (1, 6, 12, 18)  # EXAMPLE: DilatedSpatialPyramidPooling's out_1 (1x1), out_6, out_12, out_18 (3x3)
LOW_LEVEL_FILTERS = 48  # EXAMPLE: `convolution_block(input_b, num_filters=48, kernel_size=1)`
# EXAMPLE: `resnet50.get_layer("conv4_block6_2_relu")` (stride 16) feeds the ASPP and
# `resnet50.get_layer("conv2_block3_2_relu")` (stride 4) the decoder; transfer's backbone gives its own
# feature maps at the same strides.
HIGH_STRIDE, LOW_STRIDE = 16, 4
# keras.layers.BatchNormalization's default momentum, which keras.applications' backbones are built with.
KERAS_BN_MOMENTUM = 0.99


# --- the example's model ---------------------------------------------------------------------------
def convolution_block(block_input, num_filters=ASPP_FILTERS, kernel_size=3, dilation_rate=1, use_bias=False):
    """EXAMPLE's ``convolution_block``: Conv2D (same padding, He normal) + BatchNormalization + ReLU."""
    import keras

    x = keras.layers.Conv2D(num_filters, kernel_size=kernel_size, dilation_rate=dilation_rate, padding="same",
                            use_bias=use_bias, kernel_initializer=keras.initializers.HeNormal())(block_input)
    x = keras.layers.BatchNormalization()(x)
    return keras.ops.nn.relu(x)


def dilated_spatial_pyramid_pooling(dspp_input):
    """EXAMPLE's ``DilatedSpatialPyramidPooling``: image pooling + 1x1 + three dilated 3x3, then a 1x1."""
    import keras

    dims = dspp_input.shape
    x = keras.layers.AveragePooling2D(pool_size=(dims[-3], dims[-2]))(dspp_input)
    x = convolution_block(x, kernel_size=1, use_bias=True)
    out_pool = keras.layers.UpSampling2D(size=(dims[-3] // x.shape[1], dims[-2] // x.shape[2]),
                                         interpolation="bilinear")(x)
    branches = [convolution_block(dspp_input, kernel_size=1 if rate == 1 else 3, dilation_rate=rate)
                for rate in ASPP_RATES]
    x = keras.layers.Concatenate(axis=-1)([out_pool, *branches])
    return convolution_block(x, kernel_size=1)


def upsample_to(x, height: int, width: int):
    """``x`` bilinearly upsampled to ``height x width``: the example's ``UpSampling2D`` when the factor is
    a whole number (as at its 512 px on ResNet50), else a bilinear ``Resizing`` to the exact size (a
    backbone with 'same' padding at a size that is not a multiple of 16 gives ``ceil`` feature sizes)."""
    import keras

    if height % x.shape[1] == 0 and width % x.shape[2] == 0:
        return keras.layers.UpSampling2D(size=(height // x.shape[1], width // x.shape[2]),
                                         interpolation="bilinear")(x)
    return keras.layers.Resizing(height, width, interpolation="bilinear")(x)


def build_model(spec, image_size: int, num_classes: int, weights=None):
    """EXAMPLE's ``DeeplabV3Plus`` on transfer's backbone: ``(model, weights_info)``; the model takes uint8
    ``[S, S, 3]`` images and answers logits ``[S, S, num_classes]``.

    Example:
        >>> model, _ = build_model(get_backbone("smallcnn"), 64, 3)
        >>> model.output_shape
        (None, 64, 64, 3)
    """
    import keras

    from transfer.backbones.features import backbone_features
    from transfer.backbones.nesting import BACKBONE_LAYER, leaf_layers

    # The backbone: transfer's (its preprocessing, the same weights as transfer's side) instead of the
    # example's ResNet50. The example trains its whole ResNet50, BatchNorm included (its layers are
    # trainable and fit runs them in training mode), so BatchNorm trains here too, at Keras's default
    # momentum; random weights keep transfer's rule for them (they train, at a faster momentum).
    image, features, info = backbone_features(spec, image_size, weights, (LOW_STRIDE, HIGH_STRIDE),
                                              freeze_batchnorm=False)
    x = dilated_spatial_pyramid_pooling(features[HIGH_STRIDE])
    low = features[LOW_STRIDE]
    input_a = upsample_to(x, low.shape[1], low.shape[2])
    input_b = convolution_block(low, num_filters=LOW_LEVEL_FILTERS, kernel_size=1)
    x = keras.layers.Concatenate(axis=-1)([input_a, input_b])
    x = convolution_block(x)
    x = convolution_block(x)
    x = upsample_to(x, image_size, image_size)
    model_output = keras.layers.Conv2D(num_classes, kernel_size=(1, 1), padding="same")(x)
    model = keras.Model(inputs=image, outputs=model_output, name="deeplabv3plus")
    if info.source != "random":
        for layer in leaf_layers(model.get_layer(BACKBONE_LAYER)):
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = KERAS_BN_MOMENTUM
    return model, info


# --- the example's pipeline ------------------------------------------------------------------------
def guide_image(encoded, image_size: int):
    """EXAMPLE's ``read_image`` for an image: decoded to RGB, ``tf.image.resize`` (bilinear, no antialias)
    to ``S x S``; then rounded to uint8, the input transfer's backbone takes (the example feeds floats)."""
    import tensorflow as tf

    from transfer.core.imageops import decode_image

    # transfer's decoder: any format (the example's decode_png reads PNG only), the frame the masks are in.
    image = tf.image.resize(decode_image(encoded), [image_size, image_size])
    return tf.saturate_cast(tf.round(image), tf.uint8)


def _items(samples):
    import tensorflow as tf

    if samples.encoded is not None:
        return list(samples.encoded), (lambda item: item)
    return list(samples.sources), tf.io.read_file


def image_dataset(samples, image_size: int):
    """Unbatched guide images of ``samples`` in order (what the example's ``infer`` is given)."""
    import tensorflow as tf

    items, read = _items(samples)
    return tf.data.Dataset.from_tensor_slices(items).map(lambda item: guide_image(read(item), image_size),
                                                        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def make_dataset(samples, image_size: int, batch_size: int = BATCH_SIZE):
    """EXAMPLE's ``data_generator``: ``(uint8 images [B, S, S, 3], uint8 masks [B, S, S, 1])`` in file order,
    batched with ``drop_remainder=True``; no shuffle, no augmentation, no cache (as the example).

    Masks come from transfer's ``load_mask`` (files, polygons, RLE; the ignore index as ``IGNORE_VALUE``)
    and are resized NEAREST: the example resizes them bilinearly, which blends neighbouring class values
    into classes that are not there.
    """
    import tensorflow as tf

    from transfer.data.masks import load_mask

    items, read = _items(samples)
    targets, sources = samples.targets, samples.sources

    def read_mask(index) -> np.ndarray:
        return np.asarray(load_mask(targets[int(index)], source=sources[int(index)]), np.uint8)

    def load(item, index):
        image = guide_image(read(item), image_size)
        mask = tf.numpy_function(read_mask, [index], tf.uint8, stateful=False)
        mask = tf.image.resize(tf.ensure_shape(mask, [None, None])[..., tf.newaxis], [image_size, image_size],
                               method="nearest")
        return image, tf.ensure_shape(tf.cast(mask, tf.uint8), [image_size, image_size, 1])

    indices = np.arange(len(samples), dtype=np.int64)
    ds = tf.data.Dataset.from_tensor_slices((items, indices)).map(load, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch_size, drop_remainder=True)  # EXAMPLE: `dataset.batch(BATCH_SIZE, drop_remainder=True)`


def compile_model(model):
    """EXAMPLE's ``model.compile``; the loss leaves out pixels of ``IGNORE_VALUE`` (see below)."""
    import keras

    from transfer.data.samples import IGNORE_VALUE

    # The one change to the example's loss: its data has no ignored pixels, a dataset with an ignore
    # index (CamVid's void) has. Its pixels would crash the sparse cross-entropy (a label past the classes)
    # and must not be learnt as a class, so Keras's own `ignore_class` leaves them out: the loss is the
    # example's mean over the labelled pixels (the same as before on data without ignored pixels).
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=IGNORE_VALUE)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=LEARNING_RATE), loss=loss,
                  metrics=["accuracy"])  # EXAMPLE: `metrics=["accuracy"]`


# --- transfer's scoring ------------------------------------------------------------------------------
def predicted_masks(model, samples, image_size: int, batch_size: int = BATCH_SIZE):
    """``(index, uint8 mask at the image's own resolution)`` per sample: the model run on the guide's own
    input pixels, its logits mapped back by transfer's ``masks_at_original`` (softmax, bilinear to the
    image's height and width, argmax: what transfer's evaluation and export do)."""
    import tensorflow as tf

    from transfer.tasks.segment.masks import masks_at_original

    index = 0
    for images in image_dataset(samples, image_size).batch(batch_size):
        logits = model(images, training=False)
        for row in range(int(images.shape[0])):
            target = samples.targets[index]
            size = tf.constant([[target.height, target.width]], tf.int32)
            yield index, masks_at_original(logits[row:row + 1], size)["mask"][0].numpy()
            index += 1


def score_masks(samples, masks, class_names):
    """transfer's ``SegmentReport`` from ``(index, predicted mask)`` pairs at each image's own resolution,
    counted by transfer's ``confusion_matrix`` against ``load_mask`` (``IGNORE_VALUE`` pixels count
    nowhere), as ``transfer.tasks.segment.evaluation.evaluate_segmenter`` counts.

    Example:
        >>> truths = ((i, load_mask(t)) for i, t in enumerate(samples.targets))
        >>> score_masks(samples, truths, samples.class_names).to_dict()["mean_iou"]
        1.0
    """
    from transfer.data.masks import load_mask
    from transfer.data.samples import IGNORE_VALUE
    from transfer.tasks.segment.evaluation import SegmentReport
    from transfer.tasks.segment.metrics import confusion_matrix, segmentation_scores

    names = tuple(class_names)
    total = np.zeros((len(names), len(names)), np.int64)
    image_ious: list[float | None] = []
    for index, predicted in masks:
        truth = np.asarray(load_mask(samples.targets[index], source=samples.sources[index]))
        confusion = np.asarray(confusion_matrix(truth, predicted, len(names), ignore_value=IGNORE_VALUE), np.int64)
        total += confusion
        image_ious.append(segmentation_scores(confusion, list(names))["mean_iou"] if confusion.sum() else None)
    return SegmentReport(names, total, tuple(samples.sources), tuple(image_ious))


# --- the run -------------------------------------------------------------------------------------------
def run_guide(data, *, backbone="mobilenet_0.25", weights=None, image_size: int, steps: int | None = None,
              epochs: int | None = None, seed: int = 0, score_samples=None, echo=print) -> dict:
    """Train the example's recipe on ``data`` (a segmentation ``DataSplit``) for ``steps`` optimizer steps
    (or ``epochs``), then score the last epoch's model on ``score_samples`` (default ``data.val``) at
    each mask's own resolution; the guide contract's JSON-ready dict, headline the mean IoU.

    Example:
        >>> run_guide(split, backbone="smallcnn", image_size=64, steps=3)["steps"]
        3
    """
    import keras

    from benchmarks.guides.fit_budget import epoch_logger, plan_epochs, result
    from transfer.backbones import get_backbone
    from transfer.core.errors import TransferError

    started = time.perf_counter()
    keras.utils.set_random_seed(seed)
    if len(data.train) < BATCH_SIZE:
        raise TransferError(f"The DeepLabV3+ guide needs {BATCH_SIZE} training images or more (its batches drop "
                            f"the remainder). Received: {len(data.train)}.", fix="Give it more training images.")
    plan = plan_epochs(steps, epochs, len(data.train) // BATCH_SIZE)
    model, _ = build_model(get_backbone(backbone), image_size, len(data.class_names), weights)
    compile_model(model)
    # EXAMPLE: `model.fit(train_dataset, validation_data=val_dataset, ...)`; a set too small for one whole
    # batch has no validation loss.
    val = make_dataset(data.val, image_size) if len(data.val) >= BATCH_SIZE else None
    history: list[dict] = []
    model.fit(make_dataset(data.train, image_size), validation_data=val, epochs=plan.epochs, shuffle=False,
              verbose=0, callbacks=[epoch_logger(plan.steps, echo, history)])
    trained = time.perf_counter()
    samples = data.val if score_samples is None else score_samples
    report = score_masks(samples, predicted_masks(model, samples, image_size), data.class_names)
    steps_run = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    return result(GUIDE, plan_epochs_run=len(history), steps=steps_run, started=started, trained=trained,
                  report=report, headline_key="mean_iou", history=history)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a segmentation source transfer reads (mask folders, VIA, COCO)")
    parser.add_argument("--val-data", default=None, help="validation source (default: a split of --data)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps in all (default: --epochs)")
    parser.add_argument("--epochs", type=int, default=None, help=f"when --steps is not given (default {EPOCHS})")
    parser.add_argument("--image-size", type=int, default=320)
    parser.add_argument("--backbone", default="mobilenet_0.25")
    parser.add_argument("--weights", default=None, help="imagenet, a weights file, or none (default)")
    parser.add_argument("--ignore-index", type=int, default=None, help="the mask value of unlabelled pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="append the result as one JSON line to this file")
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import transfer

    args = parse_args(argv)
    options = {} if args.ignore_index is None else {"ignore_index": args.ignore_index}
    data = transfer.load_data(args.data, task="segment", val_source=args.val_data, seed=args.seed, **options)
    epochs = args.epochs if args.epochs is not None or args.steps is not None else EPOCHS
    out = run_guide(data, backbone=args.backbone, weights=args.weights, image_size=args.image_size,
                    steps=args.steps, epochs=epochs, seed=args.seed)
    print(json.dumps({k: v for k, v in out.items() if k not in ("history", "score")}))
    if args.json:
        with open(args.json, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(out) + "\n")
    return out


if __name__ == "__main__":
    main()
