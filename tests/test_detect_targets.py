"""ATSS assignment and the ltrb box encoding on hand-made boxes."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from transfer.tasks.detect.model import anchor_points, level_sizes
from transfer.tasks.detect.targets import BACKGROUND, assign_atss, decode_boxes, encode_boxes


def test_level_sizes_and_anchor_points_follow_the_strides():
    assert level_sizes(64) == [8, 4, 2] and level_sizes(100) == [13, 7, 4]
    points, strides = anchor_points(64)
    assert points.shape == (84, 2) and strides.shape == (84,)
    np.testing.assert_array_equal(points[:2], [[4, 4], [12, 4]])  # row-major: x moves first
    np.testing.assert_array_equal(points[8], [4, 12])
    np.testing.assert_array_equal(points[64], [8, 8])  # first stride-16 cell
    assert list(np.unique(strides, return_counts=True)[1]) == [64, 16, 4]


def test_encode_decode_round_trip():
    points, strides = anchor_points(64)
    rng = np.random.default_rng(0)
    corners = np.sort(rng.uniform(0, 64, size=(3, len(points), 2, 2)), axis=2)  # [B, L, (min,max), (x,y)]
    boxes = np.concatenate([corners[:, :, 0], corners[:, :, 1]], axis=-1).astype("float32")
    distances = encode_boxes(points, strides, boxes)
    np.testing.assert_allclose(decode_boxes(points, strides, distances), boxes, atol=1e-4)


def test_encode_is_in_stride_units():
    np.testing.assert_allclose(encode_boxes([[8.0, 8.0]], [8.0], [[0.0, 4.0, 24.0, 16.0]]), [[1, 0.5, 2, 1]])
    np.testing.assert_allclose(encode_boxes([[16.0, 16.0]], [16.0], [[0.0, 0.0, 48.0, 32.0]]), [[1, 1, 2, 1]])


def _positives(assignment, image):
    return np.where(assignment.positive[image].numpy())[0]


def test_positives_lie_inside_their_box_on_the_level_its_size_suits():
    points, strides = anchor_points(256)
    small = [0.1, 0.1, 0.2, 0.2]  # 25 px: the stride-8 anchors (64 px) fit it best
    large = [0.2, 0.2, 0.95, 0.95]  # 192 px: the stride-32 anchors (256 px)
    a = assign_atss(tf.constant([[small, large, [0, 0, 0, 0]]]), tf.constant([[1, 0, -1]]), 256)
    labels = a.labels[0].numpy()
    for label, box, stride in ((1, small, 8), (0, large, 32)):
        chosen = np.where(labels == label)[0]
        assert 0 < len(chosen) <= 9 * 3
        assert set(strides[chosen]) == {stride}
        pixels = np.array(box) * 256
        centers = points[chosen]
        assert np.all((centers > pixels[:2]) & (centers < pixels[2:]))
        np.testing.assert_allclose(a.boxes[0].numpy()[chosen], np.tile(box, (len(chosen), 1)), atol=1e-6)
    background = labels == BACKGROUND
    assert np.all(a.boxes[0].numpy()[background] == 0) and np.all(a.anchor_iou[0].numpy()[background] == 0)
    assert np.array_equal(a.positive[0].numpy(), ~background)


def test_no_ground_truth_is_all_background_and_images_are_independent():
    box = [[0.25, 0.25, 0.75, 0.75]]
    a = assign_atss(tf.constant([[[0.0, 0, 0, 0]], box]), tf.constant([[-1], [3]]), 64)
    assert not a.positive[0].numpy().any() and np.all(a.labels[0].numpy() == BACKGROUND)
    assert len(_positives(a, 1)) > 0 and set(a.labels[1].numpy()[_positives(a, 1)]) == {3}


def test_a_location_claimed_by_two_boxes_takes_the_one_it_overlaps_most():
    outer = [0.0, 0.0, 1.0, 1.0]
    inner = [0.3, 0.3, 0.7, 0.7]
    both = assign_atss(tf.constant([[outer, inner]]), tf.constant([[0, 1]]), 64)
    alone = assign_atss(tf.constant([[inner]]), tf.constant([[1]]), 64)
    inner_positives = _positives(alone, 0)
    # The inner box keeps every location it had alone unless the outer box's anchor fits it better.
    labels = both.labels[0].numpy()
    assert set(labels[inner_positives]) <= {0, 1} and (labels == 1).any() and (labels == 0).any()
    claimed = labels[inner_positives] == 0
    assert np.all(both.anchor_iou[0].numpy()[inner_positives][claimed]
                  >= alone.anchor_iou[0].numpy()[inner_positives][claimed])


def test_runs_in_a_tf_function_with_a_dynamic_batch():
    @tf.function(input_signature=[tf.TensorSpec([None, None, 4]), tf.TensorSpec([None, None], tf.int32)])
    def assign(boxes, labels):
        return assign_atss(boxes, labels, 64).labels

    out = assign(tf.constant([[[0.25, 0.25, 0.75, 0.75]]] * 3), tf.constant([[2]] * 3))
    assert out.shape == (3, 84) and set(out.numpy().ravel()) == {-1, 2}


def test_top_k_must_be_positive():
    with pytest.raises(ValueError, match="top_k"):
        assign_atss(tf.zeros([1, 1, 4]), tf.constant([[0]]), 64, top_k=0)
