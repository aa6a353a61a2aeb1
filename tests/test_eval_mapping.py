"""Evaluation maps the model's answer on its S x S input back to each ORIGINAL image, checked with
known answers on non-square images (no training: a fixed-output model stands in).

Two images in one batch, 64 wide x 32 high and 32 wide x 64 high, go through each task's
``evaluate`` with a 32 px input. The default resize stretches each side to 32, so an input box
``(x0, y0, x1, y1)`` normalized is ``(x0 W, y0 H, x1 W, y1 H)`` in an image ``W x H``, and the
input's pixel columns and rows are each image's stretched by ``W / 32`` and ``H / 32``. The models
answer either the box the stretch needs (every metric perfect), or the box a wrong mapping (width
and height swapped, or a letterbox) would need, whose scores are worked out by hand below.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from transfer.data.samples import Boxes, Mask, Samples
from transfer.tasks import get_task

SIZE = 32  # the model's input side
SHAPES = ((64, 32), (32, 64))  # (width, height) of the two images
# Each image's true box: the normalized input box (0.25, 0.125, 0.5, 0.375) stretched back.
TRUTHS = ((16.0, 4.0, 32.0, 12.0), (8.0, 8.0, 16.0, 24.0))


def _images(folder) -> tuple[str, ...]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (width, height) in enumerate(SHAPES):
        path = folder / f"img{i}.png"
        Image.new("RGB", (width, height), (90, 90, 90)).save(path)
        paths.append(str(path))
    return tuple(paths)


def _box_samples(tmp_path) -> Samples:
    targets = tuple(Boxes((box,), (0,), w, h) for box, (w, h) in zip(TRUTHS, SHAPES))
    return Samples(_images(tmp_path / "images"), targets, ("thing",))


def _stretch_inverse(box, width, height):
    return np.array(box) / [width, height, width, height]


def _swapped_inverse(box, width, height):
    """The input box that width and height swapped (x scaled by H, y by W) would map onto ``box``."""
    return np.array(box) / [height, width, height, width]


def _letterbox_inverse(box, width, height):
    """The input box a letterbox (aspect kept, padded to a square, centred) would map onto ``box``."""
    scale = SIZE / max(width, height)
    left, top = (SIZE - round(width * scale)) // 2, (SIZE - round(height * scale)) // 2
    return (np.array(box) * scale + [left, top, left, top]) / SIZE


def _fixed_model(outputs: dict[str, np.ndarray]):
    """A Keras model answering ``outputs`` (one row per image, in order) whatever the images."""
    import keras

    class Fixed(keras.Model):
        def call(self, images, training=False):
            count = keras.ops.shape(images)[0]
            return {name: keras.ops.convert_to_tensor(value)[:count] for name, value in outputs.items()}

    return Fixed()


def _detector_outputs(boxes: np.ndarray) -> dict[str, np.ndarray]:
    """Raw detector outputs with one confident box per image (normalized ``boxes`` ``[N, 4]`` on the
    input) at the stride-8 location nearest its centre; every other location scores sigmoid(-20)."""
    from transfer.tasks.detect.model import anchor_points

    points, strides = anchor_points(SIZE)
    logits = np.full((len(boxes), len(points), 1), -20.0, np.float32)
    distances = np.ones((len(boxes), len(points), 4), np.float32)
    for i, box in enumerate(boxes * SIZE):
        centre = (box[:2] + box[2:]) / 2
        location = int(np.argmin(np.where(strides == 8, np.hypot(*(points - centre).T), np.inf)))
        (px, py), stride = points[location], strides[location]
        logits[i, location, 0] = 10.0
        distances[i, location] = np.array([px - box[0], py - box[1], box[2] - px, box[3] - py]) / stride
    return {"class_logits": logits, "box": distances}


def _inverse_boxes(inverse) -> np.ndarray:
    return np.stack([inverse(box, w, h) for box, (w, h) in zip(TRUTHS, SHAPES)]).astype(np.float32)


@pytest.mark.parametrize("inverse, expected_map", [
    (_stretch_inverse, 1.0),
    # Swapped: image 0's box lands on (32, 2, 64, 6) against (16, 4, 32, 12), image 1's on
    # (4, 16, 8, 48) against (8, 8, 16, 24): they touch at most, IoU 0, no match at any threshold.
    (_swapped_inverse, 0.0),
])
def test_detection_ap_is_measured_on_boxes_mapped_to_each_images_pixels(tmp_path, inverse, expected_map):
    samples = _box_samples(tmp_path)
    model = _fixed_model(_detector_outputs(_inverse_boxes(inverse)))
    report = get_task("detect").evaluate(model, samples, SIZE, 2, {"class_names": ["thing"]})
    assert report.num_detections == 2  # one box per image, the background scores dropped
    assert report.map == expected_map and report.map50 == expected_map and report.map75 == expected_map


@pytest.mark.parametrize("inverse, expected_ious", [
    (_stretch_inverse, (1.0, 1.0)),
    (_swapped_inverse, (0.0, 0.0)),  # as in the detection case: the boxes touch at most
    # Letterbox: image 0's box lands on (16, 10, 32, 14): overlap 16 x 2 = 32, union 128 + 64 - 32
    # = 160, IoU 0.2; image 1's on (12, 8, 16, 24): overlap 4 x 16 = 64 = its area, union 128, IoU 0.5.
    (_letterbox_inverse, (0.2, 0.5)),
])
def test_localization_iou_is_measured_on_boxes_mapped_to_each_images_pixels(tmp_path, inverse, expected_ious):
    samples = _box_samples(tmp_path)
    model = _fixed_model({"box": _inverse_boxes(inverse)})
    report = get_task("localize").evaluate(model, samples, SIZE, 2, {"class_names": ["thing"]})
    assert report.ious == pytest.approx(expected_ious, abs=1e-6)
    assert report.mean_iou == pytest.approx(sum(expected_ious) / 2, abs=1e-6)


def _mask_samples(tmp_path, regions) -> Samples:
    """Masks of class 1 over ``regions[i]`` = ``(rows, cols)`` of image i, class 0 elsewhere."""
    sources = _images(tmp_path / "images")
    (tmp_path / "masks").mkdir()
    targets = []
    for i, ((width, height), (rows, cols)) in enumerate(zip(SHAPES, regions)):
        mask = np.zeros((height, width), np.uint8)
        mask[:rows, :cols] = 1
        path = tmp_path / "masks" / f"img{i}.png"
        Image.fromarray(mask).save(path)
        targets.append(Mask(width=width, height=height, path=str(path)))
    return Samples(sources, tuple(targets), ("background", "thing"))


def _quadrant_logits(count: int) -> np.ndarray:
    """Logits ``[count, 32, 32, 2]``: class 1 in the input's top-left 16 x 16 quadrant, 0 elsewhere."""
    logits = np.zeros((count, SIZE, SIZE, 2), np.float32)
    logits[..., 0] = 5.0
    logits[:, :SIZE // 2, :SIZE // 2] = [0.0, 5.0]
    return logits


def test_segmentation_masks_are_scored_at_each_images_own_pixels(tmp_path):
    model = _fixed_model({"mask": _quadrant_logits(2)})
    task = get_task("segment")
    # Stretched back, the quadrant covers the top 16 rows x left 32 columns of the 64 x 32 image and
    # the top 32 rows x left 16 columns of the 32 x 64 one (the bilinear x2 keeps the border exact).
    stretched = _mask_samples(tmp_path / "stretched", [(16, 32), (32, 16)])
    report = task.evaluate(model, stretched, SIZE, 2, {"class_names": ["background", "thing"]})
    np.testing.assert_array_equal(report.confusion, [[2 * (2048 - 512), 0], [0, 2 * 512]])
    assert report.scores()["pixel_accuracy"] == 1.0 and report.scores()["mean_iou"] == 1.0

    # Truth = the quadrant unscaled (16 x 16 pixels of each image): of the 512 pixels predicted
    # thing per image, 256 are background. Accuracy (4096 - 512) / 4096; IoU thing 512 / 1024,
    # background 3072 / 3584 = 6/7.
    unscaled = _mask_samples(tmp_path / "unscaled", [(16, 16), (16, 16)])
    scores = task.evaluate(model, unscaled, SIZE, 2, {"class_names": ["background", "thing"]}).scores()
    assert scores["pixel_accuracy"] == pytest.approx(0.875)
    assert scores["per_class_iou"] == pytest.approx({"background": 6 / 7, "thing": 0.5})
