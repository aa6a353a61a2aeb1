"""Multi-object detection: every box of every class, an anchor-free head on a feature pyramid.

The model is ``transfer.tasks.detect.model.build_detector`` (backbone ->
FPN/PAN neck -> shared head), trained with ``DetectionLoss`` (ATSS
assignment, quality focal + GIoU + L1) on ``detect_data`` batches. Every box
is kept; images without boxes are kept as background (they teach the head
where nothing is) and counted. Evaluation is pycocotools' COCO AP
(``detect_eval``); the export decodes and runs per-class NMS inside the
graph (``detect_decode``) and answers boxes in the original image's pixels.

Example:
    >>> task = DetectTask()
    >>> data = task.load_data("bccd/", val_source="bccd/ImageSets/Main/test.txt")
    >>> task.describe_data(data)
    '205 train / 72 val images, 3 classes (Platelets, RBC, WBC), 2,827 train boxes (at most 40 per image)'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Mapping

from transfer.data.samples import Boxes, DataSplit, Samples
from transfer.core.errors import TransferError
from transfer.core.resize import ResizePolicy
from transfer.tasks.base import (Objective, Task, classes_phrase, raise_unknown_serving_options,
                                 refuse_augment_and_class_weight, scaled_image_size)

# Imported for their registrations: checkpoints and exports hold a Detector compiled with a
# DetectionLoss, and transfer.tasks.custom_objects imports this module so Keras can load them.
from transfer.tasks.detect import loss as _detect_loss  # noqa: F401,E402
from transfer.tasks.detect import model as _detect_model  # noqa: F401,E402

# Inputs larger than the backbone's ImageNet size: 224 -> 288 (see DetectTask.default_recipe).
DETECT_SIZE_SCALE = 9 / 7
# Evaluation keeps low-scored boxes: COCO AP integrates precision over all recall levels, so a
# high threshold would cut the tail of the curve (0.01 as mmdetection's and YOLO's val runs use
# 0.001-0.05); at most COCO's 100 boxes per image.
EVAL_SCORE_THRESHOLD = 0.01
EVAL_MAX_DETECTIONS = 100


@dataclass(frozen=True)
class DetectHead:
    """The neck and head's shape (run.json ``"head"``): see ``build_detector``."""

    neck: str = "pan"
    neck_channels: int = 64
    head_convs: int = 2

    @classmethod
    def from_dict(cls, value: Mapping[str, Any] | None) -> "DetectHead":
        return cls(**dict(value or {}))


@dataclass(frozen=True)
class ServingThresholds:
    """What the export keeps (run.json ``"serving"``, transfer.json); ``transfer export
    --score-threshold/--iou-threshold/--max-detections`` override them for one export.

    ``score_threshold``: boxes scored under it are not answered; ``iou_threshold``: a box
    overlapping a better one of its class by more is suppressed; ``max_detections``: slots
    per image.
    """

    score_threshold: float = 0.3
    iou_threshold: float = 0.5
    max_detections: int = 100

    def __post_init__(self):
        checks = (("score_threshold", self.score_threshold, 0.0 <= _number(self.score_threshold) < 1.0, "in [0, 1)"),
                  ("iou_threshold", self.iou_threshold, 0.0 < _number(self.iou_threshold) <= 1.0, "in (0, 1]"),
                  ("max_detections", self.max_detections,
                   isinstance(self.max_detections, int) and not isinstance(self.max_detections, bool)
                   and 1 <= self.max_detections <= 10_000, "a whole number from 1 to 10000"))
        for name, value, ok, expected in checks:
            if not ok:
                raise TransferError(f"Detection {name} = {value!r} is not {expected}.",
                                    fix=f"Give --{name.replace('_', '-')} a value {expected} "
                                        "(defaults: score 0.3, IoU 0.5, 100 detections).")

    @classmethod
    def from_dict(cls, value: Mapping[str, Any] | None) -> "ServingThresholds":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value or {}) - known)
        if unknown:
            raise TransferError(f"Detection serving settings {unknown} are unknown.",
                                fix=f"Use only {sorted(known)} (run.json \"serving\").")
        return cls(**dict(value or {}))


def _number(value) -> float:
    """``value`` as a float for a range check; NaN (fails every comparison) for anything else."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return float("nan")
    return float(value)


class DetectTask(Task):
    """``--task detect``: see the module docstring."""

    name = "detect"
    title = "detection"
    reader = "transfer.tasks.detect.reader:ExportedDetector"
    uses_feature_cache = False  # the head reads the pyramid of spatial features, not pooled ones

    # --- data -------------------------------------------------------------------------------
    def load_data(self, source, *, val_source=None, val_fraction=0.2, seed=0, allow_outside_root=False,
                  echo: Callable[[str], None] | None = None) -> DataSplit:
        from transfer.data.boxes import load_box_data
        from transfer.data.boxes.detection_checks import detection_findings, nothing_to_score

        data = load_box_data(source, val_source=val_source, val_fraction=val_fraction, seed=seed,
                             allow_outside_root=allow_outside_root)
        empty = nothing_to_score(data.split)
        if empty:  # all background: loss from padding alone, and an undefined mAP
            sources = f"{source}, {val_source}" if val_source else str(source)
            raise TransferError(f"{empty[0].detail[0].upper()}{empty[0].detail[1:]} ({sources}).",
                                fix="Annotate the objects, or check the annotation files and --val-data.")
        if echo is not None:
            for line in data.warnings():
                echo(line)
            for finding in detection_findings(data.split):
                echo(f"{finding.where()}: {finding.detail}")
        return data.split

    def describe_data(self, data: DataSplit) -> str:
        from transfer.tasks.detect.data import max_boxes_for

        classes = classes_phrase(data.class_names)
        boxes = sum(len(t) for t in data.train.targets)
        line = (f"{len(data.train)} train / {len(data.val)} val images, {classes}, {boxes:,} train boxes "
                f"(at most {max_boxes_for(data.train)} per image)")
        background = {side: sum(1 for t in s.targets if len(t) == 0) for side, s in
                      (("train", data.train), ("val", data.val))}
        if any(background.values()):
            line += f"; background images kept: {background['train']} train, {background['val']} val"
        return line

    def target_to_json(self, target: Boxes) -> dict[str, Any]:
        return target.to_json()

    def target_from_json(self, value, config: Mapping[str, Any]) -> Boxes:
        return Boxes.from_json(value)

    def evaluation_samples(self, data: str, config: Mapping[str, Any]) -> Samples:
        """Boxes read from ``data`` (any box source, or a VOC list such as
        ``bccd/ImageSets/Main/test.txt``), classes mapped to the run's order; images without
        boxes stay (their detections are false positives). A class the run never learnt is refused."""
        from transfer.data.boxes.run_classes import read_boxes_in_run_classes

        return read_boxes_in_run_classes(data, config["class_names"])

    def data_class_names(self, data: str, config: Mapping[str, Any]):
        """The classes of ``data``'s boxes (see ``transfer.data.boxes.source_classes``)."""
        from transfer.data.boxes.source_classes import box_source_classes

        return box_source_classes(data)

    # --- recipe -----------------------------------------------------------------------------
    def default_recipe(self):
        """The recipe measured on raccoon (mobilenet_0.25, fixture ImageNet weights, two shared CPU cores).

        The head stage cannot train on the pooled-feature cache (the head reads the
        stride-8/16/32 maps, not one pooled vector): it runs the whole model with the
        backbone frozen, for 3 epochs only, so the randomly initialized neck and head
        settle before the backbone's weights move; then everything trains, the backbone
        at half the rate. Zoom 1/1.5-1.5x with crops, flips and color jitter.

        Measured with ``transfer train --task detect`` then ``transfer evaluate --json``
        (pycocotools, mobilenet_0.25 with the fixture's ImageNet weights, batch 16, two CPU
        cores shared with one other training); best epoch by validation loss:

        ===========  =====  ===========  =====  =====  =====  ==============================
        data         size   epochs       map    map50  map75  training
        ===========  =====  ===========  =====  =====  =====  ==============================
        raccoon      224    3 + 22       0.335  0.825  0.182  10.1 min, best = last epoch
        raccoon      288    3 + 30       0.433  0.885  0.385  19.6 min (load 5), best = last
        raccoon      288    3 + 40       0.454  0.893  0.437  18.7 min, best epoch 36 of 43
        bccd         288    2 + 18       0.485  0.830  0.512  12.3 min, best epoch 19 of 20
        ===========  =====  ===========  =====  =====  =====  ==============================

        raccoon: train_labels.csv (160 images), validated and reported on test_labels.csv (40;
        the fixture has no separate validation list). bccd: trained on ImageSets/Main/train.txt
        (205), validated on val.txt (87), reported on test.txt (72); AP Platelets 0.242, RBC
        0.547, WBC 0.667. The default is the last raccoon row, with ``default_image_size``.
        Larger inputs and a longer fine-tune help most (the validation loss was still
        falling at 3 + 30).
        """
        from transfer.core.recipe import Recipe, Stage

        return Recipe(
            stages=(Stage("head", trainable="head", learning_rate=2e-3, epochs=3),
                    Stage("finetune", trainable="all", learning_rate=2e-3, epochs=40, backbone_lr_scale=0.5)),
            batch_size=16, dropout=0.0, label_smoothing=0.0, weight_decay=0.0005,
            augment=("flip", "zoom", "color"), head_cache_views=0, warmup_epochs=1.0, ema_epochs=1.0,
            ema_min_steps=0,  # measured without the 100-step floor of the classification default
        )

    def default_image_size(self, spec) -> int:
        """The backbone's ImageNet size scaled by 9/7 (288 for 224): raccoon's map rose from
        0.335 at 224 to 0.433 at 288 (see ``default_recipe``), at ~1.65x the time per epoch.

        Example:
            >>> DetectTask().default_image_size(get_backbone("mobilenet_0.25"))
            288
        """
        return scaled_image_size(spec, DETECT_SIZE_SCALE)

    def check_recipe(self, recipe) -> None:
        from transfer.tasks.detect.data import DETECT_AUGMENTATIONS

        refuse_augment_and_class_weight(
            recipe, self.name, DETECT_AUGMENTATIONS, "a rotated box is no longer the tight box of its object",
            "the focal loss already balances the many background locations")

    # --- model ------------------------------------------------------------------------------
    def run_config(self, data: DataSplit, recipe) -> dict[str, Any]:
        """``max_boxes``: the most boxes a training image holds, capped at 100 (see ``max_boxes_for``)."""
        from transfer.tasks.detect.data import max_boxes_for

        return {
            **self.common_run_config(data, recipe),
            "max_boxes": max_boxes_for(data.train),
            "background_images": {"train": sum(1 for t in data.train.targets if len(t) == 0),
                                  "val": sum(1 for t in data.val.targets if len(t) == 0)},
            "head": asdict(DetectHead()),
            "serving": asdict(ServingThresholds()),
            "monitor": "val_loss",
        }

    def build_model(self, spec, config: Mapping[str, Any], image_size: int, weights, recipe):
        from transfer.tasks.detect.model import build_detector

        head = DetectHead.from_dict(config.get("head"))
        return build_detector(spec, int(config["num_classes"]), image_size, weights, neck=head.neck,
                              neck_channels=head.neck_channels, head_convs=head.head_convs)

    def objective(self, config: Mapping[str, Any], recipe) -> Objective:
        """The detection loss; the best epoch is the lowest validation loss (Keras logs it every
        epoch for free; pycocotools' AP is measured once, on the best checkpoint)."""
        from transfer.tasks.detect.loss import DetectionLoss

        return Objective(DetectionLoss(image_size=int(config["image_size"])), None, monitor="val_loss", mode="min")

    def make_dataset(self, samples, image_size: int, batch_size: int, *, training: bool, recipe, cache,
                     config: Mapping[str, Any]):
        from transfer.tasks.detect.data import make_detection_dataset, max_boxes_for

        # Training pads to the run's slots (the most in a training image, capped); validation keeps every
        # box of its images, so its loss (the best-epoch monitor) counts the objects a cap would hide.
        slots = int(config["max_boxes"]) if training else max(int(config["max_boxes"]), max_boxes_for(samples, None))
        return make_detection_dataset(samples, image_size, batch_size, max_boxes=slots,
                                      **self.pipeline_options(training=training, recipe=recipe, cache=cache,
                                                              config=config))

    def training_notes(self, data: DataSplit, config: Mapping[str, Any]) -> list[str]:
        notes = [f"Up to {config['max_boxes']} boxes per image are trained on (the most in a training image, "
                 "capped at 100). The best epoch is the lowest val_loss; COCO AP is measured on it at the end."]
        background = config.get("background_images") or {}
        if any(background.values()):
            notes.append(f"Background images (no box) kept: {background.get('train', 0)} train, "
                         f"{background.get('val', 0)} val.")
        return notes

    # --- evaluation -------------------------------------------------------------------------
    def evaluate(self, model, samples, image_size: int, batch_size: int, config: Mapping[str, Any]):
        """pycocotools AP of the model's detections (score >= 0.01, top 100, per-class NMS at the
        export's IoU threshold), boxes mapped back to each image's original pixels by the run's policy."""
        from transfer.tasks.detect.evaluation import evaluate_detections

        predictions = detections_in_pixels(model, samples, image_size, batch_size, config)
        return evaluate_detections(samples, predictions, tuple(config["class_names"]))

    # --- export -----------------------------------------------------------------------------
    def serving_outputs(self, config: Mapping[str, Any]) -> dict[str, str]:
        serving = ServingThresholds.from_dict(config.get("serving"))
        slots = f"D = {serving.max_detections} slots per image, best first"
        return {
            "boxes": f"float32 [N, D, 4] (xmin, ymin, xmax, ymax) in the original image's pixels; {slots}",
            "scores": f"float32 [N, D] (the box's class score, >= {serving.score_threshold}; 0 in empty slots)",
            "class_names": "string [N, D] (the box's class; '' in empty slots)",
            "count": "int32 [N] (filled slots per image)",
        }

    def postprocess(self, raw, original_sizes, image_size: int, config: Mapping[str, Any]) -> dict[str, Any]:
        import tensorflow as tf

        from transfer.tasks.detect.decode import decode_detections

        serving = ServingThresholds.from_dict(config.get("serving"))
        found = decode_detections(raw["class_logits"], raw["box"], image_size,
                                  score_threshold=serving.score_threshold, iou_threshold=serving.iou_threshold,
                                  max_detections=serving.max_detections)
        sizes = tf.cast(original_sizes, tf.float32)
        boxes = ResizePolicy.from_config(config).boxes_to_original(found["boxes"], sizes[:, 0], sizes[:, 1],
                                                                   image_size)
        names = tf.constant(list(config["class_names"]) + [""], dtype=tf.string)
        # Class -1 (an empty slot) reads the "" appended last.
        index = tf.where(found["classes"] < 0, len(config["class_names"]), found["classes"])
        return {"boxes": boxes, "scores": found["scores"], "class_names": tf.gather(names, index),
                "count": tf.cast(found["count"], tf.int32)}

    def parity_error(self, raw, served: Mapping[str, Any], image_size: int, config: Mapping[str, Any]) -> float:
        """The Keras model's raw outputs decoded as the export decodes them, compared slot by slot:
        boxes in units of the input side (the parity images are ``S x S``), scores; a different
        count is an error of 1."""
        import numpy as np

        from transfer.tasks.detect.decode import decode_detections

        serving = ServingThresholds.from_dict(config.get("serving"))
        count = np.asarray(served["count"])
        slots = np.asarray(served["scores"]).shape[1]
        found = decode_detections(raw["class_logits"], raw["box"], image_size,
                                  score_threshold=serving.score_threshold, iou_threshold=serving.iou_threshold,
                                  max_detections=slots)
        if not np.array_equal(found["count"].numpy(), count):
            return 1.0
        boxes = np.asarray(served["boxes"], np.float64) / image_size
        error = float(np.max(np.abs(boxes - found["boxes"].numpy()), initial=0.0))
        scores = np.asarray(served["scores"], np.float64)
        return max(error, float(np.max(np.abs(scores - found["scores"].numpy()), initial=0.0)))

    def with_serving_options(self, config: Mapping[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
        """``config`` with ``transfer export``'s NMS settings over the run's (checked).

        Example:
            >>> DetectTask().with_serving_options({"serving": {}}, {"iou_threshold": 0.6})["serving"]
            {'score_threshold': 0.3, 'iou_threshold': 0.6, 'max_detections': 100}
        """
        raise_unknown_serving_options(self, options, known=tuple(f.name for f in fields(ServingThresholds)))
        merged = {**asdict(ServingThresholds.from_dict(config.get("serving"))), **options}
        return {**config, "serving": asdict(ServingThresholds(**merged))}

    def export_metadata(self, config: Mapping[str, Any]) -> dict[str, Any]:
        serving = ServingThresholds.from_dict(config.get("serving"))
        return {"box_mapping": ResizePolicy.from_config(config).mode, **asdict(serving)}


def detections_in_pixels(model, samples, image_size: int, batch_size: int, config: Mapping[str, Any], *,
                         score_threshold: float = EVAL_SCORE_THRESHOLD) -> list:
    """``(boxes [K, 4] in the image's original pixels, scores [K], classes [K])`` per sample, as
    evaluation scores them: decoded at ``score_threshold`` (top ``EVAL_MAX_DETECTIONS``), the
    input resized and the boxes mapped back by the run's ``ResizePolicy`` (as the export does).

    Example:
        >>> boxes, scores, classes = detections_in_pixels(model, samples, 320, 8, run_config)[0]
    """
    import numpy as np

    from transfer.tasks.detect.data import make_detection_dataset
    from transfer.tasks.detect.decode import decode_detections

    serving = ServingThresholds.from_dict(config.get("serving"))
    policy = ResizePolicy.from_config(config)
    ds = make_detection_dataset(samples, image_size, batch_size, training=False, cache="none", max_boxes=1,
                                resize=policy)
    heights = np.array([t.height for t in samples.targets], np.float32)
    widths = np.array([t.width for t in samples.targets], np.float32)
    predictions, start = [], 0
    for images, _ in ds:
        raw = model(images, training=False)
        found = decode_detections(raw["class_logits"], raw["box"], image_size,
                                  score_threshold=score_threshold, iou_threshold=serving.iou_threshold,
                                  max_detections=EVAL_MAX_DETECTIONS)
        stop = start + int(images.shape[0])
        boxes = policy.boxes_to_original(found["boxes"], heights[start:stop], widths[start:stop], image_size)
        for row, count in enumerate(found["count"].numpy()):
            predictions.append((boxes[row, :count].numpy(), found["scores"][row, :count].numpy(),
                                found["classes"][row, :count].numpy()))
        start = stop
    return predictions
