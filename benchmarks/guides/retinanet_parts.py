"""The pieces of keras.io's RetinaNet example, as the example builds them, on transfer's backbone.

Source: https://keras.io/examples/vision/retinanet/ (repo keras-team/keras-io,
file ``examples/vision/retinanet.py``). Every constant below names the class,
function or constant of that file it copies. What the race equalises is
marked where it happens: the backbone (transfer's registry entry and weights
instead of ResNet50, its preprocessing inside the model) and the square input.

The pieces: the anchor generator (9 anchors per location on strides 8..128),
the label encoder (IoU matching, box variance), the feature pyramid P3-P7 and
the two shared heads, focal + smooth L1 loss, and the decoder (sigmoid scores,
combined NMS).

Example:
    >>> anchors = anchor_boxes(64)          # xywh pixels of a 64 px input
    >>> anchors.shape                       # (8² + 4² + 2² + 1 + 1) locations x 9 anchors
    (774, 4)
    >>> model = build_retinanet(get_backbone("smallcnn"), 64, None, num_classes=2)
    >>> model.output_shape
    (None, 774, 6)
"""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

SOURCE = "https://keras.io/examples/vision/retinanet/"
SOURCE_FILE = "https://github.com/keras-team/keras-io/blob/master/examples/vision/retinanet.py"

# --- AnchorBox.__init__ of the example ----------------------------------------------------------
ASPECT_RATIOS = (0.5, 1.0, 2.0)  # AnchorBox.__init__: self.aspect_ratios = [0.5, 1.0, 2.0]
SCALES = tuple(2 ** x for x in (0, 1 / 3, 2 / 3))  # AnchorBox.__init__: self.scales = [2 ** x for x in [0, 1/3, 2/3]]
LEVELS = (3, 4, 5, 6, 7)  # AnchorBox.get_anchors: `for i in range(3, 8)`, i.e. P3..P7
STRIDES = tuple(2 ** i for i in LEVELS)  # AnchorBox.__init__: self._strides = [2 ** i for i in range(3, 8)]
# AnchorBox.__init__: self._areas = [x ** 2 for x in [32.0, 64.0, 128.0, 256.0, 512.0]]. Kept unchanged:
# the example tunes them to its 640-1024 px inputs, but at a race's 224-320 px input they still fit
# (P3's 32 px anchors match objects from about 23 px up, IoU 0.5; raccoons are far larger), and
# the anchors reaching past the image (P6/P7's 256-812 px) only stay negative, as in the example.
AREAS = tuple(x ** 2 for x in (32.0, 64.0, 128.0, 256.0, 512.0))
NUM_ANCHORS = len(ASPECT_RATIOS) * len(SCALES)  # AnchorBox._num_anchors: 9

# --- LabelEncoder / DecodePredictions / RetinaNetLoss of the example ----------------------------
BOX_VARIANCE = (0.1, 0.1, 0.2, 0.2)  # LabelEncoder.__init__ and DecodePredictions: box_variance
MATCH_IOU = 0.5  # LabelEncoder._match_anchor_boxes: match_iou=0.5
IGNORE_IOU = 0.4  # LabelEncoder._match_anchor_boxes: ignore_iou=0.4
BACKGROUND, IGNORED = -1.0, -2.0  # LabelEncoder._encode_sample: cls_target -1.0 (background), -2.0 (ignored)
FPN_CHANNELS = 256  # FeaturePyramid.__init__: keras.layers.Conv2D(256, ...) and build_head's Input(shape=[None, None, 256])
HEAD_CONVS = 4  # build_head: `for _ in range(4)`
PRIOR_PROBABILITY = 0.01  # RetinaNet.__init__: tf.constant_initializer(-np.log((1 - 0.01) / 0.01))
FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 2.0  # RetinaNetLoss.__init__: alpha=0.25, gamma=2.0
SMOOTH_L1_DELTA = 1.0  # RetinaNetLoss.__init__: delta=1.0
CONFIDENCE = 0.05  # DecodePredictions.__init__: confidence_threshold=0.05 (its demo shows 0.5; AP wants all)
NMS_IOU = 0.5  # DecodePredictions.__init__: nms_iou_threshold=0.5
MAX_PER_CLASS = 100  # DecodePredictions.__init__: max_detections_per_class=100
MAX_DETECTIONS = 100  # DecodePredictions.__init__: max_detections=100


def _anchor_dims(area: float) -> np.ndarray:
    """``[9, 2]`` anchor (width, height) of one level, ratio-major then scale (AnchorBox._compute_dims)."""
    dims = []
    for ratio in ASPECT_RATIOS:
        height = math.sqrt(area / ratio)
        width = area / height
        dims.extend((scale * width, scale * height) for scale in SCALES)
    return np.asarray(dims, np.float32)


def anchor_boxes(image_size: int) -> np.ndarray:
    """Every anchor of a square ``image_size`` input, ``[A, 4]`` xywh pixels, P3 first (AnchorBox.get_anchors).

    Per level: a ``ceil(size / stride)`` grid, centers at ``(i + 0.5) * stride``, 9 anchors per
    location in row-major (y, x, anchor) order, the order the heads' outputs are reshaped in.

    Example:
        >>> anchor_boxes(64)[3]   # P3's first center, ratio 1, scale 1: a 32 x 32 box
        array([ 4.,  4., 32., 32.], dtype=float32)
    """
    levels = []
    for stride, area in zip(STRIDES, AREAS):
        cells = math.ceil(image_size / stride)
        xs, ys = np.meshgrid(np.arange(cells, dtype=np.float32) + 0.5, np.arange(cells, dtype=np.float32) + 0.5)
        centers = np.stack([xs, ys], -1) * stride  # [H, W, 2] (x, y)
        centers = np.repeat(centers[:, :, None, :], NUM_ANCHORS, axis=2)
        dims = np.broadcast_to(_anchor_dims(area), (cells, cells, NUM_ANCHORS, 2))
        levels.append(np.concatenate([centers, dims], -1).reshape(-1, 4))
    return np.concatenate(levels, 0).astype(np.float32)


def xywh_to_corners(boxes):
    """``(x, y, w, h)`` -> ``(xmin, ymin, xmax, ymax)`` (the example's convert_to_corners)."""
    return tf.concat([boxes[..., :2] - boxes[..., 2:] / 2.0, boxes[..., :2] + boxes[..., 2:] / 2.0], axis=-1)


def corners_to_xywh(boxes):
    """``(xmin, ymin, xmax, ymax)`` -> ``(x, y, w, h)`` (the example's convert_to_xywh)."""
    return tf.concat([(boxes[..., :2] + boxes[..., 2:]) / 2.0, boxes[..., 2:] - boxes[..., :2]], axis=-1)


def pairwise_iou(boxes1, boxes2):
    """``[N, M]`` IoU of xywh boxes (the example's compute_iou, its 1e-8 union floor included)."""
    a, b = xywh_to_corners(boxes1), xywh_to_corners(boxes2)
    top_left = tf.maximum(a[:, None, :2], b[:, :2])
    bottom_right = tf.minimum(a[:, None, 2:], b[:, 2:])
    overlap = tf.maximum(0.0, bottom_right - top_left)
    intersection = overlap[:, :, 0] * overlap[:, :, 1]
    union = tf.maximum(boxes1[:, 2][:, None] * boxes1[:, 3][:, None] + boxes2[:, 2] * boxes2[:, 3] - intersection,
                       1e-8)
    return tf.clip_by_value(intersection / union, 0.0, 1.0)


def encode_sample(anchors, gt_boxes, class_ids):
    """``[A, 5]`` training target of one image: 4 variance-scaled box offsets, then the class
    (-1 background, -2 ignored) (LabelEncoder._match_anchor_boxes, _compute_box_target, _encode_sample).

    ``gt_boxes``: ``[N, 4]`` xywh pixels of the input; ``class_ids``: ``[N]``.
    """
    iou = pairwise_iou(anchors, gt_boxes)
    max_iou = tf.reduce_max(iou, axis=1)
    matched = tf.argmax(iou, axis=1)
    positive = max_iou >= MATCH_IOU
    ignored = tf.logical_not(tf.logical_or(positive, max_iou < IGNORE_IOU))
    matched_boxes = tf.gather(gt_boxes, matched)
    box_target = tf.concat([(matched_boxes[:, :2] - anchors[:, :2]) / anchors[:, 2:],
                            tf.math.log(matched_boxes[:, 2:] / anchors[:, 2:])], axis=-1) / BOX_VARIANCE
    classes = tf.gather(tf.cast(class_ids, tf.float32), matched)
    classes = tf.where(positive, classes, BACKGROUND)
    classes = tf.where(ignored, IGNORED, classes)
    return tf.concat([box_target, classes[:, None]], axis=-1)


def encode_batch(anchors, gt_boxes, class_ids, batch_size: int):
    """``[B, A, 5]`` targets of a padded batch (LabelEncoder.encode_batch, one image at a time)."""
    return tf.stack([encode_sample(anchors, gt_boxes[i], class_ids[i]) for i in range(batch_size)])


def _head(output_filters: int, bias_init, name: str) -> keras.Sequential:
    """Four 3x3 conv + ReLU, then the output conv; weights N(0, 0.01) (the example's build_head)."""
    kernel_init = keras.initializers.RandomNormal(0.0, 0.01)  # build_head: RandomNormal(0.0, 0.01)
    head = keras.Sequential([keras.Input(shape=[None, None, FPN_CHANNELS])], name=name)
    for _ in range(HEAD_CONVS):
        head.add(keras.layers.Conv2D(FPN_CHANNELS, 3, padding="same", kernel_initializer=kernel_init))
        head.add(keras.layers.ReLU())
    head.add(keras.layers.Conv2D(output_filters, 3, 1, padding="same", kernel_initializer=kernel_init,
                                 bias_initializer=bias_init))
    return head


def feature_pyramid(c3, c4, c5):
    """P3..P7 from the stride 8/16/32 features (the example's FeaturePyramid.call)."""
    conv = keras.layers.Conv2D
    p3 = conv(FPN_CHANNELS, 1, 1, "same", name="fpn_c3_1x1")(c3)
    p4 = conv(FPN_CHANNELS, 1, 1, "same", name="fpn_c4_1x1")(c4)
    p5 = conv(FPN_CHANNELS, 1, 1, "same", name="fpn_c5_1x1")(c5)
    p4 = keras.layers.Add()([p4, keras.layers.UpSampling2D(2)(p5)])
    p3 = keras.layers.Add()([p3, keras.layers.UpSampling2D(2)(p4)])
    p3 = conv(FPN_CHANNELS, 3, 1, "same", name="fpn_c3_3x3")(p3)
    p4 = conv(FPN_CHANNELS, 3, 1, "same", name="fpn_c4_3x3")(p4)
    p5 = conv(FPN_CHANNELS, 3, 1, "same", name="fpn_c5_3x3")(p5)
    p6 = conv(FPN_CHANNELS, 3, 2, "same", name="fpn_c6_3x3")(c5)  # from C5, not P5, as the example
    p7 = conv(FPN_CHANNELS, 3, 2, "same", name="fpn_c7_3x3")(keras.layers.ReLU()(p6))
    return p3, p4, p5, p6, p7


def build_retinanet(spec, image_size: int, weights, num_classes: int) -> keras.Model:
    """uint8 ``[S, S, 3]`` -> ``[B, A, 4 + num_classes]`` raw box offsets and class logits (the example's RetinaNet).

    Equalised: the backbone is transfer's (``spec`` with ``weights``, its family preprocessing
    inside the model, BatchNorm by transfer's rule) instead of the example's ResNet50 (get_backbone),
    its stride 8/16/32 features standing for conv3_block4_out / conv4_block6_out / conv5_block3_out.
    """
    from transfer.backbones.features import backbone_features

    if image_size % 32:
        # The example pads every image to a multiple of 128 (resize_and_pad_image's stride); the square
        # input must at least halve evenly down to P5, or the pyramid's upsampled sums do not line up.
        raise ValueError(f"RetinaNet's feature pyramid needs an image size divisible by 32. "
                         f"Received: image_size={image_size}")
    image, features, _ = backbone_features(spec, image_size, weights, (8, 16, 32))
    pyramid = feature_pyramid(features[8], features[16], features[32])
    prior = keras.initializers.Constant(-np.log((1 - PRIOR_PROBABILITY) / PRIOR_PROBABILITY))
    cls_head = _head(NUM_ANCHORS * num_classes, prior, "cls_head")  # RetinaNet.__init__: build_head(9 * num_classes, prior)
    box_head = _head(NUM_ANCHORS * 4, "zeros", "box_head")  # RetinaNet.__init__: build_head(9 * 4, "zeros")
    boxes = [keras.layers.Reshape((-1, 4))(box_head(level)) for level in pyramid]
    classes = [keras.layers.Reshape((-1, num_classes))(cls_head(level)) for level in pyramid]
    outputs = keras.layers.Concatenate(axis=-1, name="predictions")(
        [keras.layers.Concatenate(axis=1)(boxes), keras.layers.Concatenate(axis=1)(classes)])
    model = keras.Model(image, outputs, name="RetinaNet")
    expected = len(anchor_boxes(image_size))
    if model.output_shape[1] != expected:
        raise ValueError(f"The model predicts {model.output_shape[1]} anchors, the anchor generator has {expected}.")
    return model


def focal_loss(y_true, logits, alpha: float = FOCAL_ALPHA, gamma: float = FOCAL_GAMMA):
    """Sigmoid focal loss summed over the last axis (the example's RetinaNetClassificationLoss.call)."""
    cross_entropy = tf.nn.sigmoid_cross_entropy_with_logits(labels=y_true, logits=logits)
    probs = tf.nn.sigmoid(logits)
    weight = tf.where(tf.equal(y_true, 1.0), alpha, 1.0 - alpha)
    pt = tf.where(tf.equal(y_true, 1.0), probs, 1.0 - probs)
    return tf.reduce_sum(weight * tf.pow(1.0 - pt, gamma) * cross_entropy, axis=-1)


def smooth_l1(y_true, y_pred, delta: float = SMOOTH_L1_DELTA):
    """Smooth L1 summed over the last axis (the example's RetinaNetBoxLoss.call, its ``|d| - 0.5`` kept)."""
    difference = tf.abs(y_true - y_pred)
    return tf.reduce_sum(tf.where(difference < delta, 0.5 * difference ** 2, difference - 0.5), axis=-1)


class RetinaNetLoss(keras.losses.Loss):
    """Focal loss on non-ignored anchors + smooth L1 on positive ones, each over the positives' count,
    per image, averaged over the batch (the example's RetinaNetLoss; Keras 3's default reduction is
    its "auto", the batch mean).

    Example:
        >>> RetinaNetLoss(num_classes=1)(targets, predictions)   # [B, A, 5], [B, A, 4 + 1]
    """

    def __init__(self, num_classes: int, name: str = "RetinaNetLoss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = num_classes

    def call(self, y_true, y_pred):
        y_pred = tf.cast(y_pred, tf.float32)
        classes = y_true[:, :, 4]
        labels = tf.one_hot(tf.cast(classes, tf.int32), depth=self.num_classes, dtype=tf.float32)  # -1, -2 -> 0s
        positive = tf.cast(classes > BACKGROUND, tf.float32)
        cls_loss = tf.where(tf.equal(classes, IGNORED), 0.0, focal_loss(labels, y_pred[:, :, 4:]))
        box_loss = tf.where(positive == 1.0, smooth_l1(y_true[:, :, :4], y_pred[:, :, :4]), 0.0)
        normalizer = tf.reduce_sum(positive, axis=-1)
        return (tf.math.divide_no_nan(tf.reduce_sum(cls_loss, axis=-1), normalizer)
                + tf.math.divide_no_nan(tf.reduce_sum(box_loss, axis=-1), normalizer))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


def decode_predictions(predictions, anchors):
    """Combined NMS of raw ``[B, A, 4 + C]`` predictions (the example's DecodePredictions.call):
    ``(boxes [B, 100, 4] xyxy input pixels, scores [B, 100], classes [B, 100], valid [B])``."""
    predictions = tf.convert_to_tensor(predictions, tf.float32)
    anchors = tf.convert_to_tensor(anchors, tf.float32)[None]
    offsets = predictions[:, :, :4] * BOX_VARIANCE
    boxes = xywh_to_corners(tf.concat([offsets[:, :, :2] * anchors[:, :, 2:] + anchors[:, :, :2],
                                       tf.math.exp(offsets[:, :, 2:]) * anchors[:, :, 2:]], axis=-1))
    found = tf.image.combined_non_max_suppression(
        boxes[:, :, None, :], tf.nn.sigmoid(predictions[:, :, 4:]), MAX_PER_CLASS, MAX_DETECTIONS,
        iou_threshold=NMS_IOU, score_threshold=CONFIDENCE, clip_boxes=False)
    return found.nmsed_boxes, found.nmsed_scores, found.nmsed_classes, found.valid_detections
