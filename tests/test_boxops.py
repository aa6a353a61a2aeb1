"""Box formats, resize geometry (stretch, letterbox) and the IoU family."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from transfer.core import boxops

# Fixed boxes, not random ones: a failure names the same case every run.
PIXEL_BOXES = np.array(
    [[0.0, 0.0, 10.0, 20.0], [3.5, 7.25, 90.0, 41.0], [12.0, 30.0, 13.0, 31.0], [0.0, 0.0, 100.0, 60.0]],
    np.float32,
)
# (height, width): landscape, portrait, square, odd sizes, tiny and huge aspect ratios.
IMAGE_SIZES = [(60, 100), (100, 60), (64, 64), (37, 211), (211, 37), (417, 650), (1, 300)]


def test_xyxy_cxcywh_round_trip():
    cxcywh = boxops.xyxy_to_cxcywh(PIXEL_BOXES)
    np.testing.assert_allclose(cxcywh[0], [5.0, 10.0, 10.0, 20.0])
    np.testing.assert_allclose(boxops.cxcywh_to_xyxy(cxcywh), PIXEL_BOXES, atol=1e-5)


def test_normalize_round_trip_with_a_batch_of_sizes():
    heights, widths = tf.constant([60.0, 120.0]), tf.constant([100.0, 200.0])
    boxes = tf.stack([PIXEL_BOXES, PIXEL_BOXES * 2])  # [B=2, N=4, 4]
    normalized = boxops.normalize_boxes(boxes, heights, widths)
    np.testing.assert_allclose(normalized[0], normalized[1], atol=1e-6)  # same place, twice the size
    np.testing.assert_allclose(normalized[0, 3], [0.0, 0.0, 1.0, 1.0])
    np.testing.assert_allclose(boxops.denormalize_boxes(normalized, heights, widths), boxes, atol=1e-4)


def test_letterbox_geometry_by_hand():
    assert [int(v) for v in boxops.letterbox_geometry(100, 200, 64)] == [32, 64, 16, 0]
    assert [int(v) for v in boxops.letterbox_geometry(200, 100, 64)] == [64, 32, 0, 16]
    assert [int(v) for v in boxops.letterbox_geometry(50, 50, 64)] == [64, 64, 0, 0]
    assert [int(v) for v in boxops.letterbox_geometry(95, 200, 64)] == [30, 64, 17, 0]
    # Odd padding (33 rows): the spare row goes to the bottom.
    assert [int(v) for v in boxops.letterbox_geometry(97, 200, 64)] == [31, 64, 16, 0]


def test_letterbox_puts_a_full_image_box_on_the_content():
    canvas = boxops.boxes_to_canvas(tf.constant([[0.0, 0.0, 200.0, 100.0]]), 100, 200, 64, "letterbox")
    np.testing.assert_allclose(canvas, [[0.0, 0.25, 1.0, 0.75]], atol=1e-6)
    canvas = boxops.boxes_to_canvas(tf.constant([[0.0, 0.0, 100.0, 200.0]]), 200, 100, 64, "letterbox")
    np.testing.assert_allclose(canvas, [[0.25, 0.0, 0.75, 1.0]], atol=1e-6)


@pytest.mark.parametrize("mode", ["stretch", "letterbox"])
@pytest.mark.parametrize("height, width", IMAGE_SIZES)
def test_canvas_then_original_returns_the_pixel_boxes(mode, height, width):
    boxes = boxops.clip_boxes(PIXEL_BOXES, height, width)
    canvas = boxops.boxes_to_canvas(boxes, height, width, 64, mode)
    assert float(tf.reduce_min(canvas)) >= 0.0 and float(tf.reduce_max(canvas)) <= 1.0 + 1e-6
    back = boxops.boxes_to_original(canvas, height, width, 64, mode)
    np.testing.assert_allclose(back, boxes, atol=1e-3 * max(height, width))


@pytest.mark.parametrize("mode", ["stretch", "letterbox"])
def test_original_inside_a_graph_with_run_time_sizes_and_a_batch(mode):
    """What the export does: a batch of predictions, each image with its own size known at run time."""

    @tf.function(input_signature=[tf.TensorSpec([None, None, 4], tf.float32),
                                  tf.TensorSpec([None], tf.int32), tf.TensorSpec([None], tf.int32)])
    def to_original(boxes, heights, widths):
        return boxops.boxes_to_original(boxes, heights, widths, 64, mode)

    sizes = np.array(IMAGE_SIZES[:5], np.int32)
    pixel = np.stack([boxops.clip_boxes(PIXEL_BOXES, h, w).numpy() for h, w in sizes])
    canvas = np.stack([boxops.boxes_to_canvas(pixel[i], h, w, 64, mode).numpy() for i, (h, w) in enumerate(sizes)])
    back = to_original(tf.constant(canvas), tf.constant(sizes[:, 0]), tf.constant(sizes[:, 1]))
    np.testing.assert_allclose(back, pixel, atol=0.25)


def test_original_clips_boxes_reaching_into_the_padding():
    # The model may predict into the gray band of a letterboxed landscape image.
    back = boxops.boxes_to_original(tf.constant([[-0.1, 0.0, 1.2, 1.0]]), 100, 200, 64, "letterbox")
    np.testing.assert_allclose(back, [[0.0, 0.0, 200.0, 100.0]], atol=1e-4)


def test_unknown_resize_mode_says_what_is_allowed():
    with pytest.raises(ValueError, match="letterbox"):
        boxops.boxes_to_canvas(PIXEL_BOXES, 10, 10, 64, "crop")


def _values(fn, a, b):
    return fn(tf.constant(a, tf.float32), tf.constant(b, tf.float32)).numpy()


def test_iou_family_by_hand():
    a = [[0, 0, 2, 2], [0, 0, 1, 1], [0, 0, 4, 4], [0, 0, 2, 2], [0, 0, 2, 2]]
    b = [[0, 0, 2, 2], [2, 0, 3, 1], [1, 1, 3, 3], [1, 0, 3, 2], [0, 0, 4, 2]]
    # identical, disjoint (gap 1), nested (concentric), half overlap, same corner other aspect
    np.testing.assert_allclose(_values(boxops.box_iou, a, b), [1, 0, 0.25, 1 / 3, 0.5], atol=1e-6)
    # GIoU: disjoint: enclosing 3x1 box, union 2 -> 0 - 1/3; nested: the enclosure is the outer box.
    np.testing.assert_allclose(_values(boxops.box_giou, a, b), [1, -1 / 3, 0.25, 1 / 3, 0.5], atol=1e-6)
    # CIoU: disjoint: centers 2 apart, enclosure diagonal^2 = 9 + 1; half overlap: 1 / (9 + 4).
    v = 4 / math.pi**2 * (math.atan(1.0) - math.atan(2.0)) ** 2
    aspect = v / (1 - 0.5 + v) * v
    expected = [1, -4 / 10, 0.25, 1 / 3 - 1 / 13, 0.5 - 1 / 20 - aspect]
    np.testing.assert_allclose(_values(boxops.box_ciou, a, b), expected, atol=1e-6)


DEGENERATE_A = [[0, 0, 0, 0], [5, 5, 5, 9], [3, 3, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1]]
DEGENERATE_B = [[0, 0, 0, 0], [5, 5, 6, 9], [0, 0, 2, 2], [0, 0, 1e-9, 1e-9], [0, 0, 2, 2]]


@pytest.mark.parametrize("fn", [boxops.box_iou, boxops.box_giou, boxops.box_ciou])
@pytest.mark.parametrize("dtype", [tf.float32, tf.float16])
def test_degenerate_boxes_give_finite_values_and_gradients(fn, dtype):
    a = tf.constant(DEGENERATE_A, dtype)
    b = tf.Variable(tf.constant(DEGENERATE_B, dtype))
    with tf.GradientTape() as tape:
        value = fn(a, b)
        loss = tf.reduce_sum(1.0 - value)
    grad = tape.gradient(loss, b)
    assert value.dtype == tf.float32
    assert np.all(np.isfinite(grad.numpy()))
    # No pair overlaps with any area: IoU 0, not NaN or 1. GIoU 0 too: each pair's enclosing box
    # (from the corners as given: the inverted (3, 3, 1, 1) and (0, 0, 2, 2) enclose (0, 0, 2, 2))
    # is covered by the union. CIoU: the line (5, 5, 5, 9) against (5, 5, 6, 9): centres 0.5
    # apart over a diagonal of sqrt(17), aspect term v = 4 / pi^2 atan(1/4)^2 weighed by
    # v / (1 + v); the inverted box (width 0) against (0, 0, 2, 2): 2 / 8 for the centres,
    # v = 4 / pi^2 (pi / 4)^2 = 1/4, weight 1/4 / (1 + 1/4); the point (1, 1) in (0, 0, 2, 2):
    # centres equal, the same v.
    v = 4 / math.pi**2 * math.atan(0.25) ** 2
    expected = {boxops.box_iou: [0, 0, 0, 0, 0],
                boxops.box_giou: [0, 0, 0, 0, 0],
                boxops.box_ciou: [0, -0.25 / 17 - v * v / (1 + v), -0.25 - 0.2 * 0.25, 0, -0.2 * 0.25]}[fn]
    np.testing.assert_allclose(value.numpy(), expected, atol=1e-5)


def test_half_precision_matches_float32():
    a = [[10, 20, 50, 80], [0, 0, 30, 30]]
    b = [[12, 18, 55, 70], [40, 40, 60, 90]]
    for fn in (boxops.box_iou, boxops.box_giou, boxops.box_ciou):
        full = fn(tf.constant(a, tf.float32), tf.constant(b, tf.float32)).numpy()
        half = fn(tf.constant(a, tf.float16), tf.constant(b, tf.float16)).numpy()
        np.testing.assert_allclose(half, full, atol=2e-3)


def test_ciou_loss_trains_a_mixed_precision_keras_model():
    import keras

    inputs = keras.Input((2,))
    outputs = keras.layers.Dense(4, dtype="mixed_float16")(inputs)  # float16 predictions
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="sgd", loss=lambda y_true, y_pred: 1.0 - boxops.box_ciou(y_true, y_pred))
    x = np.array([[0.1, 0.2], [0.3, 0.4]], np.float32)
    y = np.array([[0.1, 0.1, 0.5, 0.6], [0.2, 0.3, 0.9, 0.8]], np.float32)
    # The first step's loss is measured before its update: 1 - CIoU of the float16 predictions.
    expected = float(np.mean(1.0 - boxops.box_ciou(y, model(x)).numpy()))
    losses = [float(model.train_on_batch(x, y)) for _ in range(3)]
    assert losses[0] == pytest.approx(expected, abs=2e-3)  # float16 predictions
    assert losses[-1] < losses[0]  # gradient steps through the float16 layer lower it
