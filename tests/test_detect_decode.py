"""Serving-time decoding: per-class NMS, thresholds, padding, dynamic batches, TFLite builtins."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

from transfer.tasks.detect.decode import batched_nms, decode_detections
from transfer.tasks.detect.model import anchor_points
from transfer.tasks.detect.targets import encode_boxes

A = [0.1, 0.1, 0.5, 0.5]
A_SHIFTED = [0.12, 0.1, 0.52, 0.5]  # IoU with A about 0.9
FAR = [0.6, 0.6, 0.9, 0.9]


def _nms(boxes, scores, classes, **kwargs):
    out = batched_nms(tf.constant(boxes, tf.float32), tf.constant(scores, tf.float32),
                      tf.constant(classes, tf.int32), **kwargs)
    return {k: v.numpy() for k, v in out.items()}


def test_two_overlapping_boxes_of_one_class_become_one():
    out = _nms([[A, A_SHIFTED]], [[0.9, 0.8]], [[0, 0]], max_detections=4)
    assert out["count"].tolist() == [1]
    np.testing.assert_allclose(out["boxes"][0, 0], A, atol=1e-6)
    assert out["scores"][0].tolist() == pytest.approx([0.9, 0, 0, 0])
    assert out["classes"][0].tolist() == [0, -1, -1, -1]
    assert np.all(out["boxes"][0, 1:] == 0)


def test_overlapping_boxes_of_two_classes_stay_two():
    out = _nms([[A, A_SHIFTED]], [[0.9, 0.8]], [[0, 1]], max_detections=4)
    assert out["count"].tolist() == [2]
    assert out["classes"][0, :2].tolist() == [0, 1]
    np.testing.assert_allclose(out["boxes"][0, :2], [A, A_SHIFTED], atol=1e-6)


def test_score_threshold_and_iou_threshold_are_arguments():
    out = _nms([[A, FAR]], [[0.9, 0.04]], [[0, 0]], score_threshold=0.05)
    assert out["count"].tolist() == [1]
    out = _nms([[A, FAR]], [[0.9, 0.04]], [[0, 0]], score_threshold=0.01)
    assert out["count"].tolist() == [2]
    # IoU ~0.9 survives a 0.95 threshold.
    assert _nms([[A, A_SHIFTED]], [[0.9, 0.8]], [[0, 0]], iou_threshold=0.95)["count"].tolist() == [1 + 1]


def test_images_are_independent_sorted_and_capped_at_max_detections():
    boxes = [[A, A_SHIFTED, FAR], [A, A_SHIFTED, FAR]]
    scores = [[0.3, 0.2, 0.7], [0.6, 0.9, 0.1]]
    out = _nms(boxes, scores, [[0, 0, 0], [2, 2, 1]], max_detections=2, score_threshold=0.15)
    assert out["count"].tolist() == [2, 1]
    np.testing.assert_allclose(out["scores"], [[0.7, 0.3], [0.9, 0.0]], atol=1e-6)
    assert out["classes"].tolist() == [[0, 0], [2, -1]]
    np.testing.assert_allclose(out["boxes"][1, 0], A_SHIFTED, atol=1e-6)
    capped = _nms(boxes, scores, [[0, 1, 2], [0, 1, 2]], max_detections=1, score_threshold=0.0)
    assert capped["count"].tolist() == [1, 1] and capped["classes"].tolist() == [[2], [1]]


def _raw_outputs(size, boxes_and_classes, num_classes=2, batch=1):
    """Logits sure of ``class`` at the location nearest each box's center, that location's box."""
    points, strides = anchor_points(size)
    logits = np.full((batch, len(points), num_classes), -9.0, "float32")
    distances = np.ones((batch, len(points), 4), "float32")
    for box, label, score in boxes_and_classes:
        pixels = np.array(box, "float32") * size
        center = (pixels[:2] + pixels[2:]) / 2
        at = int(np.argmin(np.linalg.norm(points - center, axis=1) + (strides != 8) * 1e3))
        logits[:, at, label] = math.log(score / (1 - score))
        distances[:, at] = encode_boxes(points[at:at + 1], strides[at:at + 1], pixels[None]).numpy()[0]
    return tf.constant(logits), tf.constant(distances)


def test_decode_finds_the_boxes_written_into_raw_outputs():
    logits, distances = _raw_outputs(64, [(A, 1, 0.9), (FAR, 0, 0.8)])
    out = decode_detections(logits, distances, 64, score_threshold=0.5, max_detections=5)
    assert out["count"].numpy().tolist() == [2]
    assert out["classes"].numpy().tolist() == [[1, 0, -1, -1, -1]]
    np.testing.assert_allclose(out["boxes"].numpy()[0, :2], [A, FAR], atol=1e-5)
    np.testing.assert_allclose(out["scores"].numpy()[0, :2], [0.9, 0.8], atol=1e-5)


def test_decode_refuses_outputs_of_another_size():
    logits, distances = _raw_outputs(64, [])
    with pytest.raises(ValueError, match="locations"):
        decode_detections(logits, distances, 96)


def _serving_function(max_detections=5):
    @tf.function(input_signature=[tf.TensorSpec([None, 84, 2]), tf.TensorSpec([None, 84, 4])])
    def serve(logits, distances):
        return decode_detections(logits, distances, 64, score_threshold=0.5, max_detections=max_detections)
    return serve


def test_decode_runs_in_a_tf_function_with_a_dynamic_batch():
    serve = _serving_function()
    for batch in (1, 3):
        logits, distances = _raw_outputs(64, [(A, 1, 0.9), (A_SHIFTED, 1, 0.8)], batch=batch)
        out = serve(logits, distances)
        assert out["boxes"].shape == (batch, 5, 4) and out["count"].numpy().tolist() == [1] * batch


def _tflite_interpreter():
    """The TFLite interpreter class: LiteRT's (``ai_edge_litert``, TF's successor) if installed, else
    ``tf.lite``'s; the test is skipped, saying why, only where TensorFlow has no TFLite at all."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        Interpreter = getattr(getattr(tf, "lite", None), "Interpreter", None)
    if Interpreter is None or not hasattr(getattr(tf, "lite", None), "TFLiteConverter"):
        pytest.skip(f"TensorFlow {tf.__version__} has no TFLite converter or interpreter (tf.lite), and "
                    "ai_edge_litert is not installed")
    return Interpreter


def test_model_and_decode_convert_to_tflite_with_builtin_ops_only(tmp_path):
    _tflite_interpreter()  # before any work: the skip, where TFLite is truly absent
    import keras

    image = keras.Input((64, 64, 3), batch_size=1)
    x = keras.layers.Conv2D(4, 8, strides=8, padding="same")(image)
    logits = keras.layers.Reshape((64, 2))(keras.layers.Conv2D(2, 1)(x))
    distances = keras.layers.Reshape((64, 4))(keras.layers.Conv2D(4, 1, activation="softplus")(x))
    model = keras.Model(image, [logits, distances])

    def serve(images):
        class_logits, box = model(images)
        # Only the stride-8 level in this toy model: pad the other levels' 20 locations.
        class_logits = tf.concat([class_logits, tf.fill([1, 20, 2], -20.0)], axis=1)
        box = tf.concat([box, tf.ones([1, 20, 4])], axis=1)
        return decode_detections(class_logits, box, 64, score_threshold=0.0, max_detections=7)

    # Through a SavedModel written by Keras's ExportArchive: a tf.Module holding a Keras 3
    # model and converted with from_concrete_functions keeps the weights as resource
    # variables the TFLite interpreter reads as garbage (TF 2.21).
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", serve, input_signature=[tf.TensorSpec([1, 64, 64, 3], tf.float32)])
    archive.write_out(str(tmp_path / "saved"), verbose=False)
    converter = tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "saved"), signature_keys=["serve"])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    flatbuffer = converter.convert()  # raises if any op needs Flex (SELECT_TF_OPS)
    interpreter = _tflite_interpreter()(model_content=flatbuffer)
    interpreter.allocate_tensors()
    images = np.random.default_rng(0).uniform(0, 1, (1, 64, 64, 3)).astype("float32")
    runner = interpreter.get_signature_runner("serve")
    lite = runner(**{next(iter(runner.get_input_details())): images})
    expected = {k: v.numpy() for k, v in serve(tf.constant(images)).items()}
    assert set(lite) == set(expected)
    assert lite["count"].tolist() == expected["count"].tolist() == [7]
    np.testing.assert_allclose(lite["scores"], expected["scores"], atol=1e-4)
    np.testing.assert_allclose(lite["boxes"], expected["boxes"], atol=1e-4)
    assert lite["classes"].tolist() == expected["classes"].tolist()
