"""The detector model on every registered backbone, its outputs' layout, and a short training run."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from transfer.backbones import get_backbone, list_backbones
from transfer.backbones.nesting import BACKBONE_LAYER
from transfer.tasks.detect.decode import decode_detections
from transfer.tasks.detect.loss import DetectionLoss
from transfer.tasks.detect.model import Detector, anchor_points, build_detector
from tests.test_backbones import SLOW


# One backbone per family in the default run (about a minute); every other one with `-m slow`.
FAMILY_REPRESENTATIVES = {
    "vgg16", "resnet50", "resnet50v2", "inceptionv3", "inceptionresnetv2", "xception", "mobilenet_0.25",
    "mobilenetv2_0.35", "mobilenetv3small_minimalistic", "densenet121", "nasnetmobile", "efficientnetb0",
    "efficientnetv2b0", "convnext_tiny", "smallcnn",
}


def _params(names):
    return [n if n in FAMILY_REPRESENTATIVES and n not in SLOW else pytest.param(n, marks=pytest.mark.slow)
            for n in names]


NAMES = [spec.name for spec in list_backbones()]


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    yield
    keras.backend.clear_session()


def _size(spec) -> int:
    # The smallest multiple of 32 the backbone accepts (Inception/Xception need 71-75 px).
    return max(64, -(-spec.min_size // 32) * 32)


@pytest.mark.parametrize("name", _params(NAMES))
def test_every_backbone_builds_runs_and_decodes(name):
    spec = get_backbone(name)
    size = _size(spec)
    model, _ = build_detector(spec, num_classes=3, image_size=size, neck_channels=16, head_convs=1)
    points, strides = anchor_points(size)
    assert model.output["class_logits"].shape[1:] == (len(points), 3)
    assert model.output["box"].shape[1:] == (len(points), 4)
    images = np.random.default_rng(0).integers(0, 255, (2, size, size, 3)).astype("uint8")
    outputs = model(images)
    assert outputs["class_logits"].dtype == "float32" and outputs["box"].dtype == "float32"
    assert np.all(np.isfinite(outputs["class_logits"].numpy())) and np.all(outputs["box"].numpy() >= 0)
    found = decode_detections(outputs["class_logits"], outputs["box"], size, score_threshold=0.0,
                              max_detections=5)
    assert found["boxes"].shape == (2, 5, 4) and found["count"].numpy().tolist() == [5, 5]


def test_head_starts_at_the_class_prior_and_everything_outside_the_backbone_is_head():
    model, _ = build_detector(get_backbone("smallcnn"), 2, 64, neck="fpn")
    outputs = model(np.zeros((1, 64, 64, 3), "uint8"))
    np.testing.assert_allclose(tf.sigmoid(outputs["class_logits"]).numpy().mean(), 0.01, atol=0.005)
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    assert [layer.name for layer in nested] == [BACKBONE_LAYER]
    assert isinstance(model, Detector)


def test_pan_adds_a_bottom_up_path_to_fpn():
    spec = get_backbone("smallcnn")
    fpn, _ = build_detector(spec, 2, 64, neck="fpn")
    pan, _ = build_detector(spec, 2, 64, neck="pan")
    names = lambda m: {layer.name for layer in m.layers}  # noqa: E731
    assert not any(n.startswith("neck_down") for n in names(fpn))
    assert {"neck_down8_to16", "neck_down16_to32", "neck_bottomup32"} <= names(pan)
    assert pan.count_params() > fpn.count_params()


def test_bad_arguments_say_what_was_received():
    spec = get_backbone("smallcnn")
    with pytest.raises(ValueError, match="neck"):
        build_detector(spec, 2, 64, neck="bifpn")
    with pytest.raises(ValueError, match="num_classes"):
        build_detector(spec, 0, 64)


def test_float32_outputs_under_mixed_precision():
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        model, _ = build_detector(get_backbone("smallcnn"), 2, 64, neck_channels=16)
        outputs = model(np.zeros((1, 64, 64, 3), "uint8"))
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    assert outputs["class_logits"].dtype == "float32" and outputs["box"].dtype == "float32"


def _rectangles(count=4, size=64):
    """Dark images, each with a red and a green rectangle at fixed places per image."""
    rng = np.random.default_rng(1)
    images = np.full((count, size, size, 3), 20, "uint8")
    boxes = np.zeros((count, 3, 4), "float32")
    labels = np.full((count, 3), -1, "int32")
    for i in range(count):
        for slot, color in enumerate(([230, 40, 40], [40, 230, 40])):
            w, h = rng.integers(14, 30, 2)
            x, y = rng.integers(0, size - w), rng.integers(0, size - h)
            images[i, y:y + h, x:x + w] = color
            boxes[i, slot] = np.array([x, y, x + w, y + h]) / size
            labels[i, slot] = slot
    return images, {"boxes": boxes, "labels": labels}


@pytest.mark.slow  # a fit and a save/load round trip, ~65 s on two shared cores; the default suite keeps under 10 minutes
def test_loss_decreases_with_fit_and_the_model_saves_and_loads(tmp_path):
    keras.utils.set_random_seed(0)
    images, targets = _rectangles()
    model, _ = build_detector(get_backbone("smallcnn"), 2, 64, neck_channels=32)
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss=DetectionLoss(image_size=64))
    data = tf.data.Dataset.from_tensor_slices((images, targets)).batch(4).repeat()
    history = model.fit(data, steps_per_epoch=8, epochs=3, verbose=0).history["loss"]
    assert history[-1] < 0.6 * history[0], history  # (a NaN fails this too)

    path = tmp_path / "detector.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, Detector) and isinstance(loaded.loss, DetectionLoss)
    np.testing.assert_allclose(loaded(images[:1])["box"], model(images[:1])["box"], atol=1e-5)
    # The loaded model's compiled loss is the DetectionLoss of its outputs (the first batch of 4).
    first = {k: v[:4] for k, v in targets.items()}
    expected = float(DetectionLoss(image_size=64)(first, model(images[:4], training=False)))
    assert loaded.evaluate(data, steps=1, verbose=0) == pytest.approx(expected, rel=1e-4)
