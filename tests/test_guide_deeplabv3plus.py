"""benchmarks/guides/deeplabv3plus.py: the keras.io DeepLabV3+ example's pieces give known answers, its
scorer is transfer's segmentation evaluation (ignore index honoured), a run takes exactly its steps."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import transfer
from benchmarks.guides import deeplabv3plus as guide
from tests.conftest import require_fixture
from tests.segmentfactory import VOID, write_mask_folder
from transfer.backbones import get_backbone
from transfer.data.masks import load_mask
from transfer.data.samples import IGNORE_VALUE

SIZE = 64


@pytest.fixture
def split(tmp_path):
    """8 training and 4 validation images (64x48) with a void band, read with VOID ignored."""
    write_mask_folder(tmp_path / "train", 8, size=(64, 48), void=True)
    write_mask_folder(tmp_path / "val", 4, size=(64, 48), void=True, start=100)
    return transfer.load_data(tmp_path / "train", task="segment", val_source=tmp_path / "val",
                              ignore_index=VOID, echo=None)


def conv_layers(model):
    return [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]


def test_model_is_the_examples_deeplab_on_transfers_features():
    model, info = guide.build_model(get_backbone("smallcnn"), SIZE, 3)
    assert info.source == "random"
    assert model.input.dtype == "uint8" and model.output_shape == (None, SIZE, SIZE, 3)
    backbone = model.get_layer("backbone")
    assert [tuple(shape[1:3]) for shape in backbone.output_shape] == [(16, 16), (4, 4)]  # strides 4 and 16
    convs = conv_layers(model)  # the head's, the backbone's are nested
    # ASPP: pooling 1x1 (bias), 1x1 at rate 1, 3x3 at 6/12/18, the 1x1 after; decoder: 48 1x1, two 3x3; classes.
    assert [(c.filters, c.kernel_size[0], c.dilation_rate[0], c.use_bias) for c in convs] == [
        (256, 1, 1, True), (256, 1, 1, False), (256, 3, 6, False), (256, 3, 12, False), (256, 3, 18, False),
        (256, 1, 1, False), (48, 1, 1, False), (256, 3, 1, False), (256, 3, 1, False), (3, 1, 1, True)]
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers) == 9
    concats = [layer for layer in model.layers if isinstance(layer, keras.layers.Concatenate)]
    assert [c.output.shape[-1] for c in concats] == [5 * 256, 256 + 48]
    pool = next(layer for layer in model.layers if isinstance(layer, keras.layers.AveragePooling2D))
    assert pool.pool_size == (4, 4)  # the whole stride-16 map: image pooling


def test_upsampling_is_the_examples_when_whole_and_exact_otherwise():
    inputs = keras.Input((20, 20, 8))
    up = guide.upsample_to(inputs, 80, 80)
    assert isinstance(up._keras_history.operation, keras.layers.UpSampling2D)
    assert up._keras_history.operation.size == (4, 4) and up.shape[1:3] == (80, 80)
    odd = guide.upsample_to(keras.Input((13, 13, 8)), 50, 50)  # 'same' padding at 200 px: 50 / 13 is not whole
    assert isinstance(odd._keras_history.operation, keras.layers.Resizing) and odd.shape[1:3] == (50, 50)


def test_pretrained_backbone_batchnorm_trains_at_keras_default_momentum(fixtures_dir):
    weights = require_fixture(fixtures_dir / "weights" / "mobilenet_2_5_224_tf_no_top.h5")
    model, info = guide.build_model(get_backbone("mobilenet_0.25"), SIZE, 2, str(weights))
    assert info.source == "file"
    norms = [layer for layer in model.get_layer("backbone").layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    # conv1 and the 11 blocks up to stride 16 (conv_pw_11_relu): 23, all training, as the example's ResNet50.
    assert len(norms) == 23 and all(n.trainable and n.momentum == 0.99 for n in norms)


def test_dataset_is_the_examples_batches_with_nearest_masks(split):
    batches = list(guide.make_dataset(split.train, 32))
    assert len(batches) == 2  # 8 images, batches of 4, remainder dropped
    images, masks = batches[0]
    assert images.dtype == tf.uint8 and tuple(images.shape) == (4, 32, 32, 3)
    assert masks.dtype == tf.uint8 and tuple(masks.shape) == (4, 32, 32, 1)
    assert set(np.unique(masks.numpy())) == {0, 1, 2, IGNORE_VALUE}  # nearest: no blended values
    assert set(np.unique(masks.numpy()[:, -2:])) == {IGNORE_VALUE}  # the void band at the bottom
    assert len(list(guide.make_dataset(split.train.subset(range(7)), 32))) == 1


def test_loss_is_the_examples_cross_entropy_over_labelled_pixels_only():
    model = keras.Sequential([keras.Input((2, 2, 3)), keras.layers.Identity()])
    guide.compile_model(model)
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(1e-3)
    logits = np.array([[[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [[0.0, 0.0, 5.0], [1.0, 1.0, 1.0]]]], np.float32)
    labels = np.array([[[[0], [1]], [[IGNORE_VALUE], [2]]]], np.uint8)
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -np.mean([log_softmax[0, 0, 0, 0], log_softmax[0, 0, 1, 1], log_softmax[0, 1, 1, 2]])
    assert float(model.loss(labels, logits)) == pytest.approx(expected, rel=1e-5)


def test_scorer_is_transfers_evaluation_with_the_ignore_index(split):
    samples = split.val
    truths = [np.asarray(load_mask(t)) for t in samples.targets]
    perfect = guide.score_masks(samples, enumerate(truths), split.class_names).to_dict()
    labelled = sum(int((t != IGNORE_VALUE).sum()) for t in truths)
    assert perfect["mean_iou"] == 1.0 and perfect["num_pixels"] == labelled and perfect["num_images"] == 4
    # Wrong answers on ignored pixels change nothing.
    noisy = [np.where(t == IGNORE_VALUE, 1, t).astype(np.uint8) for t in truths]
    assert guide.score_masks(samples, enumerate(noisy), split.class_names).to_dict()["mean_iou"] == 1.0
    # All background: IoU background = its share of the labelled pixels, 0 for the two shapes.
    zeros = [np.zeros_like(t) for t in truths]
    background = sum(int((t == 0).sum()) for t in truths) / labelled
    report = guide.score_masks(samples, enumerate(zeros), split.class_names).to_dict()
    assert report["mean_iou"] == pytest.approx(background / 3, abs=1e-4)


def test_predicted_masks_come_back_at_each_images_own_size(split):
    class Blue:  # logits of class 2 everywhere, at the guide's input size
        def __call__(self, images, training=False):
            return tf.one_hot(tf.fill(tf.shape(images)[:3], 2), 3) * 10.0

    masks = list(guide.predicted_masks(Blue(), split.val, 32))
    assert [index for index, _ in masks] == [0, 1, 2, 3]
    assert all(mask.shape == (48, 64) and set(np.unique(mask)) == {2} for _, mask in masks)


@pytest.mark.slow
def test_tiny_run_takes_exactly_its_steps_and_scores_the_last_epoch(tmp_path, capsys):
    write_mask_folder(tmp_path / "train", 8, size=(64, 48), void=True)
    write_mask_folder(tmp_path / "val", 4, size=(64, 48), void=True, start=100)
    result = tmp_path / "out.jsonl"
    guide.main(["--data", str(tmp_path / "train"), "--val-data", str(tmp_path / "val"), "--steps", "3",
                "--image-size", str(SIZE), "--backbone", "smallcnn", "--weights", "none",
                "--ignore-index", str(VOID), "--json", str(result)])
    out = json.loads(result.read_text())
    assert out["steps"] == 3 and out["epochs"] == 2  # 2 steps an epoch: one whole epoch, one of 1 step
    assert [row["epoch"] for row in out["history"]] == [1, 2]
    assert capsys.readouterr().out.count("epoch ") == 2  # one line per epoch
    assert all("val_loss" in row and row["loss"] > 0 for row in out["history"])
    assert out["headline"] == out["score"]["mean_iou"] and out["score"]["num_images"] == 4
    assert out["score"]["num_pixels"] == 4 * 64 * (48 - 6)  # the void band (6 rows) is ignored
    assert out["guide"] == "deeplabv3plus" and out["task"] == "segment"
    assert 0 < out["train_seconds"] <= out["seconds"]
