"""The resize policy (transfer.core.resize): known pixels, boxes and masks on non-square images, and
every consumer reading the one policy a run records.

The worked example: an image 60 wide x 30 high letterboxed into 32 x 32 is scaled by 32/60, so its
content is 32 x 16, at rows 8..23 (8 rows of gray 114 above and below), columns 0..31. A pixel
box (6, 3, 30, 27) lands at x 6*32/60 = 3.2 -> 0.1, y 3*16/30 + 8 = 9.6 -> 0.3, x 30*32/60 = 16
-> 0.5, y 27*16/30 + 8 = 22.4 -> 0.7 (normalized by 32); stretched, y is 3/30 = 0.1 and 27/30 = 0.9.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from transfer.core.errors import TransferError
from transfer.core.recipe import Recipe
from transfer.core.resize import LETTERBOX_FILL, ResizePolicy
from transfer.data.samples import IGNORE_VALUE, Boxes, DataSplit, Mask, Samples
from transfer.tasks import get_task

SIZE = 32
LETTERBOX = ResizePolicy("letterbox")
STRETCH = ResizePolicy()
RED, BLUE = (220, 40, 40), (40, 80, 220)
BOX = (6.0, 3.0, 30.0, 27.0)  # pixels of the 60 x 30 image
ON_INPUT = {"letterbox": (0.1, 0.3, 0.5, 0.7), "stretch": (0.1, 0.1, 0.5, 0.9)}


def halves(height: int, width: int) -> np.ndarray:
    """Red left half, blue right half."""
    image = np.empty((height, width, 3), np.uint8)
    image[:, : width // 2], image[:, width // 2:] = RED, BLUE
    return image


# --- pixels ------------------------------------------------------------------------------------
def test_letterbox_places_a_landscape_image_centred_between_gray_bands():
    out = LETTERBOX.resize_image(tf.constant(halves(30, 60)), SIZE).numpy()
    assert out.shape == (SIZE, SIZE, 3) and out.dtype == np.uint8
    assert (out[:8] == LETTERBOX_FILL).all() and (out[24:] == LETTERBOX_FILL).all()
    # The content spans every column: red on the left, blue on the right (the seam at 16 blends).
    assert (out[8:24, :14] == RED).all() and (out[8:24, 18:] == BLUE).all()
    assert [int(v) for v in LETTERBOX.content_window(30, 60, SIZE)] == [8, 0, 16, 32]


def test_letterbox_places_a_portrait_image_centred_between_gray_columns():
    out = LETTERBOX.resize_image(tf.constant(np.full((60, 30, 3), 200, np.uint8)), SIZE).numpy()
    assert (out[:, :8] == LETTERBOX_FILL).all() and (out[:, 24:] == LETTERBOX_FILL).all()
    assert (out[:, 8:24] == 200).all()


def test_odd_padding_goes_to_the_bottom_and_a_batch_is_letterboxed_alike():
    # 50 x 31: content 32 x 20 (31 * 32/50 = 19.84 -> 20), 12 rows of padding: 6 above, 6 below;
    # 50 x 33: 21 rows (21.12), 11 of padding: 5 above, 6 below.
    assert [int(v) for v in LETTERBOX.content_window(33, 50, SIZE)] == [5, 0, 21, 32]
    batch = LETTERBOX.resize_image(tf.constant(np.full((2, 33, 50, 3), 9, np.uint8)), SIZE).numpy()
    assert batch.shape == (2, SIZE, SIZE, 3)
    assert (batch[:, :5] == LETTERBOX_FILL).all() and (batch[:, 26:] == LETTERBOX_FILL).all()
    assert (batch[:, 5:26] == 9).all()


def test_stretch_fills_the_whole_input_and_square_images_are_the_same_in_both_modes():
    out = STRETCH.resize_image(tf.constant(halves(30, 60)), SIZE).numpy()
    assert (out[:, :14] == RED).all() and (out[:, 18:] == BLUE).all()
    square = tf.constant(np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8))
    np.testing.assert_array_equal(LETTERBOX.resize_image(square, SIZE), STRETCH.resize_image(square, SIZE))


# --- boxes -------------------------------------------------------------------------------------
@pytest.mark.parametrize("policy", [LETTERBOX, STRETCH], ids=["letterbox", "stretch"])
def test_a_box_lands_where_worked_out_and_comes_back_exactly(policy):
    on_input = policy.boxes_to_input(tf.constant([BOX]), 30, 60, SIZE).numpy()
    np.testing.assert_allclose(on_input, [ON_INPUT[policy.mode]], atol=1e-6)
    back = policy.boxes_to_original(tf.constant(on_input), 30, 60, SIZE).numpy()
    np.testing.assert_allclose(back, [BOX], atol=1e-4)


@pytest.mark.parametrize("policy", [LETTERBOX, STRETCH], ids=["letterbox", "stretch"])
@pytest.mark.parametrize("height, width", [(30, 60), (60, 30), (97, 200), (200, 97), (31, 50), (64, 64)])
def test_forward_then_back_is_the_identity_in_a_graph_with_run_time_sizes(policy, height, width):
    boxes = np.array([[0, 0, width, height], [1.5, 2.25, width / 3, height / 2], [width - 7, height - 5, width, height]],
                     np.float32)

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32), tf.TensorSpec([], tf.int32),
                                  tf.TensorSpec([], tf.int32)])
    def round_trip(b, h, w):
        return policy.boxes_to_original(policy.boxes_to_input(b, h, w, SIZE), h, w, SIZE)

    np.testing.assert_allclose(round_trip(boxes, height, width), boxes, atol=1e-4)


def test_a_box_predicted_into_the_padding_ends_at_the_images_edge():
    back = LETTERBOX.boxes_to_original(tf.constant([[-0.1, 0.1, 1.2, 0.9]]), 30, 60, SIZE).numpy()
    np.testing.assert_allclose(back, [[0.0, 0.0, 60.0, 30.0]], atol=1e-4)


# --- masks -------------------------------------------------------------------------------------
def top_rows_mask() -> np.ndarray:
    """60 x 30, class 1 in the top 15 rows, class 2 in the rest."""
    mask = np.full((30, 60), 2, np.uint8)
    mask[:15] = 1
    return mask


def test_a_mask_is_letterboxed_nearest_with_the_padding_ignored():
    out = LETTERBOX.resize_mask(tf.constant(top_rows_mask()), SIZE, IGNORE_VALUE).numpy()
    assert (out[:8] == IGNORE_VALUE).all() and (out[24:] == IGNORE_VALUE).all()
    assert (out[8:16] == 1).all() and (out[16:24] == 2).all()
    stretched = STRETCH.resize_mask(tf.constant(top_rows_mask()), SIZE, IGNORE_VALUE).numpy()
    assert (stretched[:16] == 1).all() and (stretched[16:] == 2).all()


@pytest.mark.parametrize("policy", [LETTERBOX, STRETCH], ids=["letterbox", "stretch"])
def test_a_mask_resized_there_and_back_lands_on_the_same_pixels(policy):
    on_input = policy.resize_mask(tf.constant(top_rows_mask()), SIZE, 0).numpy()  # padding: class 0
    probabilities = tf.one_hot(on_input, 3)  # the padding's class 0 must not come back
    back = policy.probabilities_to_original(probabilities, 30, 60)
    assert back.shape == (30, 60, 3)
    np.testing.assert_array_equal(np.argmax(back, axis=-1), top_rows_mask())


def test_logits_of_the_padding_never_reach_the_original_image():
    probabilities = np.zeros((SIZE, SIZE, 2), np.float32)
    probabilities[..., 0] = 1.0
    probabilities[:8, :, :] = [0.0, 1.0]    # the gray band above: class 1, cut off
    probabilities[8:16, :16] = [0.0, 1.0]   # the content's top-left quarter: class 1
    back = np.argmax(LETTERBOX.probabilities_to_original(tf.constant(probabilities), 30, 60), axis=-1)
    expected = np.zeros((30, 60), np.int64)
    expected[:15, :30] = 1  # the image's top-left quarter, the band above nowhere
    np.testing.assert_array_equal(back, expected)


# --- records -----------------------------------------------------------------------------------
def test_what_runs_and_exports_recorded_before_the_policy_loads_as_stretch():
    assert ResizePolicy.from_config({}) == STRETCH
    assert ResizePolicy.from_config(None) == STRETCH
    assert ResizePolicy.from_config({"resize": "stretch"}) == STRETCH  # run.json of earlier runs
    assert ResizePolicy.from_config({"resize": {"method": "bilinear", "antialias": True}}) == STRETCH  # exports


def test_records_round_trip_and_bad_ones_are_refused():
    assert ResizePolicy.from_config({"resize": LETTERBOX.to_config()}) == LETTERBOX
    assert LETTERBOX.to_config() == "letterbox" and STRETCH.to_config() == "stretch"
    assert LETTERBOX.to_dict() == {"mode": "letterbox", "method": "bilinear", "antialias": True, "fill": 114,
                                   "placement": "center"}
    custom = ResizePolicy("letterbox", method="area", fill=0)
    assert ResizePolicy.from_config({"resize": custom.to_config()}) == custom
    with pytest.raises(TransferError, match="letterbox"):
        ResizePolicy.from_config({"resize": "crop"})
    with pytest.raises(TransferError, match="resize"):
        ResizePolicy.from_config({"resize": 3})
    with pytest.raises(TransferError, match="stretch"):
        Recipe(resize="pad")


def _box_split() -> DataSplit:
    samples = Samples(("a.png",), (Boxes((BOX,), (0,), 60, 30),), ("thing",))
    return DataSplit(samples, samples)


@pytest.mark.parametrize("name", ["classify", "localize", "detect", "segment"])
def test_every_task_records_the_recipes_policy_in_its_run_config(name):
    if name == "classify":
        samples = Samples(("a.png", "b.png"), (0, 1), ("a", "b"))
        split = DataSplit(samples, samples)
    elif name == "segment":
        samples = Samples(("a.png",), (Mask(width=60, height=30, path="a.png"),), ("bg", "thing"))
        split = DataSplit(samples, samples)
    else:
        split = _box_split()
    task = get_task(name)
    assert task.run_config(split, Recipe())["resize"] == "stretch"
    config = task.run_config(split, Recipe(resize="letterbox"))
    assert config["resize"] == "letterbox" and ResizePolicy.from_config(config) == LETTERBOX


# --- each task's mapping on a non-square image (what its export's graph runs) ------------------
def test_localize_serving_maps_the_box_back_by_the_runs_policy():
    task = get_task("localize")
    raw = {"box": tf.constant([ON_INPUT["letterbox"]])}
    for config, normalized in (({"resize": "letterbox"}, ON_INPUT["letterbox"]), ({}, ON_INPUT["stretch"])):
        out = task.postprocess({"box": tf.constant([normalized])}, tf.constant([[30, 60]]), SIZE,
                               {"class_names": ["thing"], **config})
        np.testing.assert_allclose(out["box"].numpy(), [BOX], atol=1e-4)
        np.testing.assert_allclose(out["box_normalized"].numpy(), [np.array(BOX) / [60, 30, 60, 30]], atol=1e-6)
    # The letterbox answer read as a stretch lands elsewhere: y 0.3 * 30 = 9, 0.7 * 30 = 21.
    out = task.postprocess(raw, tf.constant([[30, 60]]), SIZE, {"class_names": ["thing"]})
    np.testing.assert_allclose(out["box"].numpy(), [[6.0, 9.0, 30.0, 21.0]], atol=1e-4)
    assert task.export_metadata({"resize": "letterbox"})["box_mapping"] == "letterbox"


def _detector_raw(box_on_input):
    """Raw detector outputs whose only confident location predicts ``box_on_input`` (normalized)."""
    from transfer.tasks.detect.model import anchor_points

    points, strides = anchor_points(SIZE)
    logits = np.full((1, len(points), 1), -20.0, np.float32)
    distances = np.ones((1, len(points), 4), np.float32)
    box = np.array(box_on_input, np.float32) * SIZE
    centre = (box[:2] + box[2:]) / 2
    location = int(np.argmin(np.where(strides == 8, np.hypot(*(points - centre).T), np.inf)))
    (px, py), stride = points[location], strides[location]
    logits[0, location, 0] = 10.0
    distances[0, location] = np.array([px - box[0], py - box[1], box[2] - px, box[3] - py]) / stride
    return {"class_logits": tf.constant(logits), "box": tf.constant(distances)}


@pytest.mark.parametrize("mode", ["letterbox", "stretch"])
def test_detect_serving_maps_the_boxes_back_by_the_runs_policy(mode):
    task = get_task("detect")
    config = {"class_names": ["thing"], "resize": mode}
    out = task.postprocess(_detector_raw(ON_INPUT[mode]), tf.constant([[30, 60]]), SIZE, config)
    assert out["count"].numpy().tolist() == [1]
    np.testing.assert_allclose(out["boxes"].numpy()[0, 0], BOX, atol=1e-3)
    assert task.export_metadata(config)["box_mapping"] == mode


def test_segment_serving_maps_the_mask_back_by_the_runs_policy():
    task = get_task("segment")
    logits = np.zeros((1, SIZE, SIZE, 3), np.float32)
    logits[0, 8:16, :, 1] = 9.0   # the letterboxed content's top half
    logits[0, 16:24, :, 2] = 9.0  # its bottom half
    logits[0, :8, :, 2] = 9.0     # the gray band above: cut off
    out = task.postprocess(tf.constant(logits), tf.constant([[30, 60]]), SIZE,
                           {"class_names": ["bg", "a", "b"], "resize": "letterbox"})
    np.testing.assert_array_equal(out["mask"].numpy()[0], top_rows_mask())
    stretched = task.postprocess(tf.constant(logits), tf.constant([[30, 60]]), SIZE, {"class_names": ["bg", "a", "b"]})
    assert (stretched["mask"].numpy()[0, :7] == 2).all()  # read as a stretch, the band is the top quarter


# --- the pipelines follow the policy -----------------------------------------------------------
def _write(path, array) -> str:
    Image.fromarray(array).save(path)
    return str(path)


def test_box_pipeline_letterboxes_pixels_and_boxes_alike(tmp_path):
    from transfer.data.pipelines.boxes import make_box_dataset

    image = np.full((30, 60, 3), 40, np.uint8)
    image[3:27, 6:30] = 230
    samples = Samples((_write(tmp_path / "a.png", image),), (Boxes((BOX,), (0,), 60, 30),), ("thing",))
    for policy in (LETTERBOX, STRETCH):
        images, targets = next(iter(make_box_dataset(samples, SIZE, 1, training=False, cache="none",
                                                     resize=policy)))
        np.testing.assert_allclose(targets["box"].numpy()[0], ON_INPUT[policy.mode], atol=1e-6)
        np.testing.assert_array_equal(images[0], policy.resize_image(tf.constant(image), SIZE))
    assert (images.numpy()[0, :2] != LETTERBOX_FILL).all()  # the last one (stretch) is not padded


def test_mask_pipeline_letterboxes_the_mask_with_the_padding_ignored(tmp_path):
    from transfer.data.pipelines.masks import make_mask_dataset

    image = _write(tmp_path / "a.png", np.full((30, 60, 3), 40, np.uint8))
    mask = _write(tmp_path / "a_mask.png", top_rows_mask())
    samples = Samples((image,), (Mask(width=60, height=30, path=mask),), ("bg", "a", "b"))
    images, masks = next(iter(make_mask_dataset(samples, SIZE, 1, training=False, cache="none",
                                                resize=LETTERBOX)))
    assert (images.numpy()[0, :8] == LETTERBOX_FILL).all() and (images.numpy()[0, 8:24] == 40).all()
    np.testing.assert_array_equal(masks[0], LETTERBOX.resize_mask(tf.constant(top_rows_mask()), SIZE, IGNORE_VALUE))


def test_classification_pipeline_letterboxes_when_the_run_says_so(tmp_path):
    from transfer.data.pipelines.images import make_dataset

    image = _write(tmp_path / "a.png", halves(30, 60))
    samples = Samples((image, image), (0, 1), ("a", "b"))
    task = get_task("classify")
    ds = task.make_dataset(samples, SIZE, 2, training=False, recipe=Recipe(), cache=False,
                           config={"resize": "letterbox"})
    images, _ = next(iter(ds))
    np.testing.assert_array_equal(images[0], LETTERBOX.resize_image(tf.constant(halves(30, 60)), SIZE))
    images, _ = next(iter(make_dataset(samples, SIZE, 2, training=False, cache=False)))  # the default
    np.testing.assert_array_equal(images[0], STRETCH.resize_image(tf.constant(halves(30, 60)), SIZE))
