"""Semantic segmentation: a class for every pixel, a U-Net (or FCN) decoder on any backbone.

Data: image + mask sources read by ``transfer.data.masks`` (mask folders,
VIA/COCO polygons, RLE, TFDS); class names from ``classes.txt`` or
``--class-names``; an unlabelled value (``--ignore-index N`` or the recipe's
``ignore_index``) becomes ``IGNORE_VALUE`` (255) and is left out of the loss
and the metrics. Images and masks are resized to ``S x S`` by the run's
``transfer.core.resize.ResizePolicy`` (the mask NEAREST, letterbox padding
ignored) for training (``transfer.data.pipelines.masks``); the model is
``transfer.tasks.segment.model.build_segmenter`` (logits ``[N, S, S, C]``),
trained with ``SegmentationLoss`` (cross-entropy + Dice), its best epoch the
highest validation mean IoU.

Evaluation and the export answer at each image's ORIGINAL resolution: the
softmax of the logits is mapped back by the same policy (bilinear) to the
image's own height and width, then argmax (``masks_at_original``, one function for both).

Example:
    >>> task = get_task("segment").with_options(ignore_index=11)
    >>> data = task.load_data("camvid/train", val_source="camvid/val")
    >>> task.describe_data(data)
    '367 train / 101 val images, 11 classes (Sky, Building, Pole, Road, Pavement, ...), mask value 11 ignored ...'
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping

from transfer.data.samples import IGNORE_VALUE, DataSplit, Mask, Samples
from transfer.core.errors import TransferError
from transfer.core.resize import ResizePolicy
from transfer.tasks.base import Objective, Task, classes_phrase, refuse_augment_and_class_weight, scaled_image_size
from transfer.tasks.segment.masks import masks_at_original

# Imported for their registrations: checkpoints and exports hold a segmenter compiled with a
# SegmentationLoss and SegmentIoU/PixelAccuracy, and transfer.tasks.custom_objects imports this module
# so Keras can load them.
from transfer.tasks.segment import loss as _segment_loss  # noqa: F401,E402
from transfer.tasks.segment import metrics as _segment_metrics  # noqa: F401,E402

DECODERS = ("unet", "fcn")
DEFAULT_DECODER = "unet"
DECODER_STRIDES = (1, 2, 4)
# The U-Net's finest stage. Stride 4 (logits upsampled x4, as DeepLabV3+ does) makes a CPU step 3 to 7x
# shorter (benchmarks/profile_tasks.py): its full-resolution stages hold most of the work. Measured with the
# default recipe: balloon's IoU rose (0.801 -> 0.842) but membrane's pixel accuracy fell 0.921 -> 0.917, under
# its 0.92 target, so the default stays at full resolution until the panel (benchmarks/task_panel.py)
# chooses one on every entry. Runs without the field used 1 too.
DEFAULT_DECODER_STRIDE = 1
LOSS = "ce+dice"
# Inputs larger than the backbone's ImageNet size: 224 -> 320 (see SegmentTask.default_image_size).
SEGMENT_SIZE_SCALE = 10 / 7
PROBABILITIES_SIGNATURE = "serving_probabilities"


class SegmentTask(Task):
    """``--task segment``: see the module docstring.

    Options (``with_options``, the CLI's flags): ``class_names`` (a list, or
    ``"a,b,c"``), ``ignore_index`` (the mask value of unlabelled pixels, 0-65535),
    ``decoder`` (``"unet"`` or ``"fcn"``), ``decoder_stride`` (the U-Net's
    finest stage: 1, 2 or 4, the default ``DEFAULT_DECODER_STRIDE``) and ``loss``
    (``"ce"``, ``"dice"``, ``"focal"`` or a sum such as the default ``"ce+dice"``).
    """

    name = "segment"
    title = "segmentation"
    reader = "transfer.tasks.segment.reader:ExportedSegmenter"
    uses_feature_cache = False  # the decoder reads spatial features at every stride, not pooled ones

    def __init__(self, *, class_names=None, ignore_index: int | None = None, decoder: str | None = None,
                 loss: str | None = None, decoder_stride: int | None = None):
        self.class_names = _class_names(class_names)
        self.ignore_index = _ignore_index(ignore_index, "--ignore-index")
        if decoder is not None and decoder not in DECODERS:
            raise TransferError(f"--decoder {decoder!r} is not a segmentation decoder.",
                                fix=f"Use one of {', '.join(DECODERS)}.")
        if decoder_stride is not None and decoder_stride not in DECODER_STRIDES:
            raise TransferError(f"--decoder-stride {decoder_stride!r} is not a U-Net stage stride.",
                                fix=f"Use one of {', '.join(map(str, DECODER_STRIDES))} (1: full resolution, "
                                    "the default; 4: several times faster on a CPU).")
        self.decoder = decoder
        self.decoder_stride = decoder_stride
        self.loss = _loss_kind(loss)

    def with_options(self, *, class_names=None, ignore_index=None, decoder=None, loss=None, decoder_stride=None,
                     **others) -> "SegmentTask":
        super().with_options(**others)  # refuses what segmentation does not take
        return SegmentTask(class_names=class_names if class_names is not None else self.class_names,
                           ignore_index=ignore_index if ignore_index is not None else self.ignore_index,
                           decoder=decoder or self.decoder, loss=loss or self.loss,
                           decoder_stride=decoder_stride or self.decoder_stride)

    def for_run(self, config: Mapping[str, Any]) -> "SegmentTask":
        return self.with_options(class_names=config.get("class_names"), ignore_index=config.get("ignore_index"),
                                 decoder=config.get("decoder"), loss=config.get("loss"),
                                 decoder_stride=run_decoder_stride(config))

    # --- data -------------------------------------------------------------------------------
    def load_data(self, source, *, val_source=None, val_fraction=0.2, seed=0, allow_outside_root=False,
                  echo: Callable[[str], None] | None = None) -> DataSplit:
        from transfer.data.masks import load_mask_data

        data = load_mask_data(source, val_source=val_source, val_fraction=val_fraction, seed=seed,
                              class_names=self.class_names, ignore_index=self.ignore_index,
                              allow_outside_root=allow_outside_root)
        if echo is not None:
            for line in data.warnings():
                echo(line)
        return data.split

    def describe_data(self, data: DataSplit) -> str:
        classes = classes_phrase(data.class_names)
        ignored = (f"mask value {self.ignore_index} ignored (loss and metrics skip it)"
                   if self.ignore_index is not None else "no ignored mask value")
        origin = f" ({data.origin})" if data.origin else ""
        return f"{len(data.train)} train / {len(data.val)} val images, {classes}, {ignored}{origin}"

    def training_notes(self, data: DataSplit, config: Mapping[str, Any]) -> list[str]:
        decoder = config["decoder"]
        if decoder == "unet":
            decoder += f" to stride {run_decoder_stride(config)}"
        return [f"Decoder {decoder}, loss {config['loss']}; the best epoch is the highest val mean IoU "
                "(at the model's resolution); evaluation measures each image at its own resolution."]

    def target_to_json(self, target: Mask) -> dict[str, Any]:
        value: dict[str, Any] = {"width": int(target.width), "height": int(target.height)}
        if target.path is not None:
            value["path"] = target.path
        if target.polygons:
            value["polygons"] = [[int(c), [float(v) for v in points]] for c, points in target.polygons]
        if target.rle:
            value["rle"] = [[int(c), _rle_to_json(rle)] for c, rle in target.rle]
        if target.values is not None:
            value["values"] = [[int(a), int(b)] for a, b in target.values]
        if target.threshold:
            value["threshold"] = True
        if target.orientation != 1:  # a mask file drawn on an EXIF-rotated photo as displayed
            value["orientation"] = int(target.orientation)
        extra = {f.name for f in dataclasses.fields(target)} - {f.name for f in dataclasses.fields(Mask)}
        if extra:  # a Mask subclass the data layer made (TFDS's in-memory masks): not a file record
            raise TransferError(f"A {type(target).__name__} mask has no split.json form.",
                                fix="Such data is reloaded from its source (data_source in run.json).")
        return value

    def target_from_json(self, value, config: Mapping[str, Any]) -> Mask:
        return Mask(
            width=int(value["width"]), height=int(value["height"]), path=value.get("path"),
            polygons=tuple((int(c), tuple(float(v) for v in points)) for c, points in value.get("polygons", ())),
            rle=tuple((int(c), _rle_from_json(rle)) for c, rle in value.get("rle", ())),
            values=None if value.get("values") is None else tuple((int(a), int(b)) for a, b in value["values"]),
            threshold=bool(value.get("threshold", False)), orientation=int(value.get("orientation", 1)),
        )

    def evaluation_samples(self, data: str, config: Mapping[str, Any]) -> Samples:
        """Masks read from ``data`` with the run's class names and ignored value."""
        from transfer.data.masks import read_masks

        run_names = tuple(config["class_names"])
        samples, _ = read_masks(data, class_names=list(run_names), ignore_index=config.get("ignore_index"))
        if tuple(samples.class_names) != run_names:
            raise TransferError(
                f"{data}: its classes {list(samples.class_names)} are not the run's {list(run_names)}.",
                fix="Evaluate on masks with the run's classes (in the run's value order).")
        return samples

    def data_class_names(self, data: str, config: Mapping[str, Any]):
        """A mask folder's ``classes.txt``, or the classes its polygons name (see
        ``transfer.data.masks.source_classes``)."""
        from transfer.data.masks.source_classes import mask_source_classes

        return mask_source_classes(data, config.get("ignore_index"))

    # --- recipe -----------------------------------------------------------------------------
    def default_recipe(self):
        """Localize's shape: a short head stage (backbone frozen: the randomly initialized decoder
        settles before the encoder's weights move), then the whole network, the backbone at 0.3x;
        batch 8, flip + zoom + color, no feature cache (the decoder reads spatial features). The
        stages train at least 100 and 600 optimizer steps (``min_steps``): on a small set 5 and
        30 epochs are too few steps for a fresh decoder.

        Measured with mobilenet_0.25 and the fixture's ImageNet weights (two CPU cores; each
        scored at the masks' own resolution by ``transfer evaluate``):

        ==========================================  ==========  ========================
        data, recipe                                 figure      training
        ==========================================  ==========  ========================
        camvid 367/101, 320 px, this recipe          mIoU 0.563  1139 s (46 steps/epoch:
                                                                 the floor does not act)
        balloon 61/13, 320 px, this recipe (13+75)   IoU 0.801   423 s (balloon class)
        membrane 25/5, 512 px, 5 + 30, no floor      acc 0.910   176 s
        membrane 25/5, 512 px, floor 600 only (5+150)  acc 0.919  749 s
        membrane 25/5, 512 px, this recipe (25+150)  acc 0.921   824 s (last epoch 0.921)
        membrane 25/5, 512 px, batch 4, 5 + 100      acc 0.921   551 s
        membrane 25/5, 512 px, this + rotate         (stopped at epoch 100: val IoU 0.773
                                                      against 0.788 without rotate)
        ==========================================  ==========  ========================

        ``transfer.core.recipe.Stage.min_steps`` does the raising; ``--epochs N`` sets exact epochs.
        """
        from transfer.core.recipe import Recipe, Stage

        return Recipe(
            stages=(Stage("head", trainable="head", learning_rate=1e-3, epochs=5, min_steps=100),
                    Stage("finetune", trainable="all", learning_rate=1e-3, epochs=30, backbone_lr_scale=0.3,
                          min_steps=600)),
            batch_size=8, dropout=0.0, label_smoothing=0.0, augment=("flip", "zoom", "color"),
            head_cache_views=0, warmup_epochs=1.0, ema_epochs=1.0,
            ema_min_steps=0,  # measured without the 100-step floor of the classification default
        )

    def default_image_size(self, spec) -> int:
        """The backbone's ImageNet size scaled by 10/7 and rounded to a multiple of 32 (320 for 224).

        A mask is only as fine as the input: at 224 a 480x360 CamVid frame loses
        half its rows and a 2048 px balloon photo 9/10; 320 keeps thin classes
        (poles, membranes) a few pixels wide at ~2x the cost of 224. A multiple
        of 32 keeps every U-Net skip (strides 2-32) aligned with the decoder's
        upsampling.

        Example:
            >>> SegmentTask().default_image_size(get_backbone("mobilenet_0.25"))
            320
        """
        return scaled_image_size(spec, SEGMENT_SIZE_SCALE)

    def check_recipe(self, recipe) -> None:
        from transfer.data.pipelines.masks import MASK_AUGMENTATIONS

        refuse_augment_and_class_weight(
            recipe, self.name, MASK_AUGMENTATIONS, "not a mask augmentation",
            "the Dice part of the loss already balances rare classes")
        if (recipe.ignore_index is not None and self.ignore_index is not None
                and recipe.ignore_index != self.ignore_index):
            raise TransferError(
                f"--ignore-index {self.ignore_index} and the recipe's ignore_index = {recipe.ignore_index} differ.",
                fix="Give the ignored mask value once (or twice the same).")

    # --- model ------------------------------------------------------------------------------
    def run_config(self, data: DataSplit, recipe) -> dict[str, Any]:
        ignore_index = self.ignore_index if self.ignore_index is not None else recipe.ignore_index
        return {
            **self.common_run_config(data, recipe),
            "ignore_index": ignore_index,  # the user's mask value; masks hold IGNORE_VALUE there once read
            "ignore_value": IGNORE_VALUE,
            "decoder": self.decoder or DEFAULT_DECODER,
            "decoder_stride": self.decoder_stride or DEFAULT_DECODER_STRIDE,
            "loss": self.loss or LOSS,
            "monitor": "val_iou",
        }

    def build_model(self, spec, config: Mapping[str, Any], image_size: int, weights, recipe):
        from transfer.tasks.segment.model import build_segmenter

        decoder = config.get("decoder", DEFAULT_DECODER)
        return build_segmenter(spec, int(config["num_classes"]), image_size, weights, decoder=decoder,
                               dropout=recipe.dropout,
                               finest_stride=run_decoder_stride(config) if decoder == "unet" else 1)

    def objective(self, config: Mapping[str, Any], recipe) -> Objective:
        from transfer.tasks.segment.loss import SegmentationLoss
        from transfer.tasks.segment.metrics import PixelAccuracy, SegmentIoU

        ignore = int(config.get("ignore_value", IGNORE_VALUE))
        loss = SegmentationLoss(kind=config.get("loss", LOSS), ignore_value=ignore)
        metrics = [SegmentIoU(int(config["num_classes"]), ignore_value=ignore, name="iou"),
                   PixelAccuracy(ignore_value=ignore, name="pixel_accuracy")]
        return Objective(loss, metrics, monitor="val_iou", mode="max")

    def make_dataset(self, samples, image_size: int, batch_size: int, *, training: bool, recipe, cache,
                     config: Mapping[str, Any]):
        from transfer.data.pipelines.masks import make_mask_dataset

        return make_mask_dataset(samples, image_size, batch_size,
                                 **self.pipeline_options(training=training, recipe=recipe, cache=cache, config=config))

    # --- evaluation -------------------------------------------------------------------------
    def evaluate(self, model, samples, image_size: int, batch_size: int, config: Mapping[str, Any]):
        from transfer.tasks.segment.evaluation import evaluate_segmenter

        return evaluate_segmenter(model, samples, image_size, batch_size, tuple(config["class_names"]),
                                  ResizePolicy.from_config(config))

    # --- export -----------------------------------------------------------------------------
    def serving_outputs(self, config: Mapping[str, Any]) -> dict[str, str]:
        """The export's outputs. A batch of images of different sizes is padded to its largest
        height and width (with 0); ``height``/``width`` say where each image's mask ends."""
        return {
            "mask": "uint8 [N, H, W] (class index of each pixel at the image's original resolution; H, W the "
                    "batch's largest height and width, padded with 0 beyond height x width; 255 never appears)",
            "height": "int32 [N] (the image's original height: crop mask[i, :height[i], :width[i]])",
            "width": "int32 [N] (the image's original width)",
            "class_names": "string [N, C] (the class of each mask value, the same row for every image)",
        }

    def extra_signatures(self, config: Mapping[str, Any]) -> dict[str, dict[str, str]]:
        """``serving_probabilities`` (image bytes in): the outputs above plus ``probabilities``.

        Kept out of ``serving_default`` because it is C float32 values a pixel: 4 x C times the
        mask's memory (a 2048 x 2048 image with 11 classes: 185 MB).
        """
        return {PROBABILITIES_SIGNATURE: {
            **self.serving_outputs(config),
            "probabilities": "float32 [N, H, W, C] (softmax per pixel at the original resolution; 0 in padding)",
        }}

    def postprocess(self, raw, original_sizes, image_size: int, config: Mapping[str, Any],
                    signature: str | None = None) -> dict[str, Any]:
        import tensorflow as tf

        logits = raw["mask"] if isinstance(raw, Mapping) else raw
        out = masks_at_original(logits, original_sizes, probabilities=signature == PROBABILITIES_SIGNATURE,
                                resize=ResizePolicy.from_config(config))
        names = tf.constant(list(config["class_names"]), dtype=tf.string)
        out["class_names"] = tf.tile(names[tf.newaxis], [tf.shape(logits)[0], 1])
        return out

    def parity_error(self, raw, served: Mapping[str, Any], image_size: int,
                     config: Mapping[str, Any] | None = None) -> float:
        """On ``S x S`` images (no resize): the most probability the served class loses to the Keras
        model's best class at any pixel (0 when they agree; a near-tie flipped by float noise
        costs less than the 1e-4 tolerance, a wrong class much more), and the largest
        difference of the served probabilities (``serving_probabilities``)."""
        import numpy as np

        logits = np.asarray(raw["mask"] if isinstance(raw, Mapping) else raw, np.float64)
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        n, s = probs.shape[0], probs.shape[1]
        mask = np.asarray(served["mask"])
        if mask.shape != (n, s, s) or not (np.asarray(served["height"]) == s).all() \
                or not (np.asarray(served["width"]) == s).all():
            return 1.0
        best = probs.max(-1)
        given = np.take_along_axis(probs, mask[..., None].astype(np.int64), axis=-1)[..., 0] \
            if mask.max(initial=0) < probs.shape[-1] else np.zeros_like(best)
        error = float(np.max(best - given, initial=0.0))
        if "probabilities" in served:
            error = max(error, float(np.max(np.abs(probs - np.asarray(served["probabilities"], np.float64)),
                                            initial=0.0)))
        return error

    def export_metadata(self, config: Mapping[str, Any]) -> dict[str, Any]:
        return {"mask_mapping": ResizePolicy.from_config(config).mode, "decoder": config.get("decoder", DEFAULT_DECODER),
                "decoder_stride": run_decoder_stride(config), "ignore_index": config.get("ignore_index"), "mask_padding": 0,
                "probabilities_signature": PROBABILITIES_SIGNATURE}


def _class_names(value) -> tuple[str, ...] | None:
    """``--class-names a,b,c`` (or a list) -> names; None when not given."""
    if value is None:
        return None
    names = [n.strip() for n in (value.split(",") if isinstance(value, str) else value)]
    if not names or any(not n for n in names) or len(set(names)) != len(names):
        raise TransferError(f"--class-names {value!r} needs distinct, non-empty names.",
                            fix="Pass the class of each mask value in value order, e.g. --class-names background,cell")
    if len(names) > IGNORE_VALUE:
        raise TransferError(f"--class-names lists {len(names)} classes; masks hold at most {IGNORE_VALUE}.",
                            fix="Merge classes, or ignore some (--ignore-index).")
    return tuple(names)


def _loss_kind(value) -> str | None:
    """``--loss ce+dice`` (any case and spacing) -> ``"ce+dice"``; None when not given."""
    if value is None:
        return None
    try:  # the loss module is imported above already (for its Keras registration)
        return "+".join(_segment_loss.parse_kind(value))
    except ValueError:
        raise TransferError(f"--loss {value!r} is not a segmentation loss.",
                            fix=f"Use one of {', '.join(_segment_loss.TERMS)}, or a sum such as ce+dice (the default) "
                                "or focal+dice.") from None


def _ignore_index(value, where: str) -> int | None:
    """The one rule of train and check-data (``transfer.data.masks.values.check_ignore_index``): 0..65535."""
    from transfer.data.masks.values import check_ignore_index

    return check_ignore_index(value, where)


def _rle_to_json(rle):
    """A COCO RLE dict (``counts`` a list or compressed bytes/str) as JSON."""
    if isinstance(rle, Mapping):
        out = {k: v for k, v in rle.items()}
        if isinstance(out.get("counts"), bytes):
            out["counts"] = out["counts"].decode("ascii")
            out["counts_bytes"] = True
        if "size" in out:
            out["size"] = [int(v) for v in out["size"]]
        return out
    return rle


def _rle_from_json(value):
    if isinstance(value, Mapping):
        out = dict(value)
        if out.pop("counts_bytes", False):
            out["counts"] = out["counts"].encode("ascii")
        return out
    return value


def run_decoder_stride(config: Mapping[str, Any]) -> int:
    """The U-Net's finest stride a run recorded; 1 for runs made before the field existed (their
    decoder went to full resolution).

    Example:
        >>> run_decoder_stride({"decoder": "unet"}), run_decoder_stride({"decoder_stride": 4})
        (1, 4)
    """
    return int(config.get("decoder_stride") or 1)
