"""The segmenter on every registered backbone with both decoders, its layout, save/load and a short fit."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from transfer.backbones import get_backbone
from transfer.backbones.nesting import BACKBONE_LAYER, _all_layers
from transfer.tasks.segment.loss import SegmentationLoss
from transfer.tasks.segment.metrics import PixelAccuracy, SegmentIoU
from transfer.tasks.segment.model import UNET_STAGES, build_segmenter
# The detector's sweep: one backbone per family by default, the rest -m slow; each at its smallest size.
from tests.test_detect_model import NAMES, _params, _size


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    yield
    keras.backend.clear_session()


@pytest.mark.parametrize("name", _params(NAMES))
def test_every_backbone_builds_both_decoders_with_full_size_float32_logits(name):
    spec = get_backbone(name)
    size = _size(spec)
    images = np.random.default_rng(0).integers(0, 255, (2, size, size, 3)).astype("uint8")
    for decoder in ("unet", "fcn"):
        keras.backend.clear_session()
        model, info = build_segmenter(spec, 3, size, decoder=decoder, widths=(16, 8, 8, 8, 8) if decoder == "unet"
                                      else None)
        assert model.output_shape == (None, size, size, 3) and model.output_names == ["mask"]
        logits = model(images)
        assert logits.dtype == "float32" and np.all(np.isfinite(logits.numpy()))
        names = {layer.name for layer in model.layers}
        if decoder == "unet":
            # A skip at every stride the backbone names, none where it names nothing.
            skips = {s for s in UNET_STAGES if f"decoder{s}_concat" in names}
            assert skips == set(spec.feature_layers) - {32}
        assert info.source == "random"


def test_unet_and_fcn_layout_and_sizes_that_are_not_multiples_of_32():
    spec = get_backbone("smallcnn")  # max pooling floors: 72 px gives 2 at stride 32, ceil(72/32) is 3
    model, _ = build_segmenter(spec, 4, 72, dropout=0.3)
    names = {layer.name for layer in model.layers}
    assert {"grid16", "grid32", "decoder1_conv2", "decoder_dropout", "mask"} <= names
    assert model(np.zeros((1, 72, 72, 3), "uint8")).shape == (1, 72, 72, 4)
    assert model.get_layer("decoder16_conv1").filters == 128 and model.get_layer("decoder1_conv1").filters == 16
    fcn, _ = build_segmenter(get_backbone("resnet50"), 2, 72, decoder="fcn")
    assert fcn(np.zeros((1, 72, 72, 3), "uint8")).shape == (1, 72, 72, 2)
    # FCN-8s starts as FCN-32s: the skip scores are zero-initialized (Long et al. 2015).
    assert not np.any(fcn.get_layer("fcn_score8").kernel.numpy()) and np.any(fcn.get_layer("fcn_score32").kernel.numpy())
    nested = [layer for layer in fcn.layers if isinstance(layer, keras.Model)]
    assert [layer.name for layer in nested] == [BACKBONE_LAYER] and fcn.name == "resnet50_segmenter"


def test_decoder_batchnorm_trains_with_momentum_0_9_and_encoder_batchnorm_follows_the_backbone_rule():
    model, _ = build_segmenter(get_backbone("smallcnn"), 2, 64, freeze_batchnorm=True)
    encoder = [layer for layer in _all_layers(model.get_layer(BACKBONE_LAYER))
               if isinstance(layer, keras.layers.BatchNormalization)]
    decoder = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert encoder and not any(layer.trainable for layer in encoder)
    assert len(decoder) == 2 * len(UNET_STAGES)
    assert all(layer.trainable and layer.momentum == 0.9 for layer in decoder)


def test_float32_logits_under_mixed_precision():
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        outputs = [build_segmenter(get_backbone("smallcnn"), 2, 64, decoder=d)[0](np.zeros((1, 64, 64, 3), "uint8"))
                   for d in ("unet", "fcn")]
    finally:
        keras.mixed_precision.set_dtype_policy("float32")
    assert [o.dtype for o in outputs] == ["float32", "float32"]


def test_bad_arguments_say_what_was_received():
    spec = get_backbone("smallcnn")
    with pytest.raises(ValueError, match="decoder"):
        build_segmenter(spec, 2, 64, decoder="deeplab")
    with pytest.raises(ValueError, match="num_classes"):
        build_segmenter(spec, 1, 64)
    with pytest.raises(ValueError, match="widths"):
        build_segmenter(spec, 2, 64, widths=(8, 8))
    with pytest.raises(ValueError, match="widths"):
        build_segmenter(spec, 2, 64, decoder="fcn", widths=(8,) * 5)
    with pytest.raises(ValueError, match="dropout"):
        build_segmenter(spec, 2, 64, dropout=1.0)


def _shapes(count=8, size=64):
    """Dark images with a red rectangle (class 1) and a green one (class 2); a strip is unlabelled."""
    rng = np.random.default_rng(1)
    images = np.full((count, size, size, 3), 20, "uint8")
    masks = np.zeros((count, size, size), "uint8")
    for i in range(count):
        for label, color in ((1, [230, 40, 40]), (2, [40, 230, 40])):
            w, h = rng.integers(12, 28, 2)
            x, y = rng.integers(0, size - w), rng.integers(0, size - h)
            images[i, y:y + h, x:x + w] = color
            masks[i, y:y + h, x:x + w] = label
    masks[:, :, :4] = 255
    return images, masks


@pytest.mark.slow  # a fit and a save/load round trip, ~45 s on two shared cores; the default suite keeps under 10 minutes
def test_fit_learns_rectangles_and_the_compiled_model_saves_and_loads(tmp_path):
    keras.utils.set_random_seed(0)
    images, masks = _shapes()
    model, _ = build_segmenter(get_backbone("smallcnn"), 3, 64, dropout=0.1, widths=(32, 16, 16, 8, 8))
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=SegmentationLoss("ce+dice"),
                  metrics=[SegmentIoU(3), PixelAccuracy()])
    data = tf.data.Dataset.from_tensor_slices((images, masks)).batch(4).repeat()
    history = model.fit(data, steps_per_epoch=6, epochs=3, verbose=0).history
    assert all(np.isfinite(history["loss"])) and history["loss"][-1] < 0.8 * history["loss"][0], history["loss"]
    assert history["iou"][-1] > history["iou"][0], history["iou"]

    path = tmp_path / "segmenter.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.loss, SegmentationLoss) and loaded.loss.kind == "ce+dice"
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(images[:2])),
                                  keras.ops.convert_to_numpy(model(images[:2])))
    results = loaded.evaluate(data, steps=1, verbose=0, return_dict=True)
    # The compiled loss and metrics reloaded: the first batch's figures, computed here directly.
    logits = loaded(images[:4], training=False)
    iou, accuracy = SegmentIoU(3), PixelAccuracy()
    iou.update_state(masks[:4], logits)
    accuracy.update_state(masks[:4], logits)
    assert results["loss"] == pytest.approx(float(SegmentationLoss("ce+dice")(masks[:4], logits)), rel=1e-4)
    assert results["iou"] == pytest.approx(float(iou.result()), rel=1e-5)
    assert results["pixel_accuracy"] == pytest.approx(float(accuracy.result()), rel=1e-5)


def test_fcn_saves_and_loads_with_identical_outputs(tmp_path):
    images, _ = _shapes(2, size=72)  # not a multiple of 32: the saved model keeps its grid resizes
    model, _ = build_segmenter(get_backbone("smallcnn"), 3, 72, decoder="fcn", dropout=0.2)
    path = tmp_path / "fcn.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(loaded(images)), keras.ops.convert_to_numpy(model(images)))


def test_decoder_stride_stops_the_unet_early_and_upsamples_its_logits_bilinearly():
    spec = get_backbone("smallcnn")
    full, _ = build_segmenter(spec, 2, 64, finest_stride=1)
    at4, _ = build_segmenter(spec, 2, 64, finest_stride=4)
    names = {layer.name for layer in at4.layers}
    assert {"decoder4_conv2", "logits", "mask"} <= names and not names & {"decoder2_conv1", "decoder1_conv1"}
    assert at4.get_layer("logits").output.shape[1:] == (16, 16, 2) and at4.output_shape == (None, 64, 64, 2)
    assert at4.output_names == ["mask"] and at4.count_params() < full.count_params()
    # The x4 upsampling is bilinear: logits that are one constant per 4x4 block come out as a smooth ramp
    # between block centres, so a class boundary can fall between the coarse pixels.
    images = np.random.default_rng(1).integers(0, 255, (1, 64, 64, 3)).astype("uint8")
    coarse = keras.Model(at4.input, at4.get_layer("logits").output)(images).numpy()
    fine = at4(images).numpy()
    expected = tf.image.resize(coarse, (64, 64), method="bilinear").numpy()
    np.testing.assert_allclose(fine, expected, atol=1e-5)
    with pytest.raises(ValueError, match="finest_stride must be one of"):
        build_segmenter(spec, 2, 64, finest_stride=8)


def test_the_run_records_its_decoder_stride_and_older_runs_read_as_full_resolution():
    from transfer.core.errors import TransferError
    from transfer.tasks.segment.task import DEFAULT_DECODER_STRIDE, SegmentTask, run_decoder_stride

    assert run_decoder_stride({"decoder": "unet"}) == 1  # run.json written before the field: stride 1
    task = SegmentTask()
    assert task.for_run({"decoder_stride": 2}).decoder_stride == 2
    assert task.with_options(decoder_stride=4).decoder_stride == 4 and DEFAULT_DECODER_STRIDE == 1
    assert task.export_metadata({"decoder": "unet"})["decoder_stride"] == 1
    with pytest.raises(TransferError, match="--decoder-stride 3"):
        task.with_options(decoder_stride=3)
    with pytest.raises(TransferError, match="--task localize takes no --decoder-stride"):
        from transfer.tasks import get_task
        get_task("localize").with_options(decoder_stride=2)
