"""benchmarks/guides/box_regression.py: the PyImageSearch box-regression recipe's pieces give known answers,
its scorer is transfer's localization evaluation, a run takes exactly its steps, half frozen, half not."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import transfer
from benchmarks.guides import box_regression as guide
from tests.conftest import require_fixture
from tests.corpus.task_inputs import box_csv
from transfer.backbones import get_backbone
from transfer.data.samples import Boxes, Samples

SIZE = 64


@pytest.fixture
def split(tmp_path):
    """8 box images (48x40, one box each), 6 to train and 2 to validate."""
    box_csv("localize", count=8)(tmp_path)
    return transfer.load_data(tmp_path / "data" / "boxes.csv", task="localize", val_fraction=0.25, echo=None)


def test_model_is_the_posts_flatten_and_dense_head():
    model, info = guide.build_model(get_backbone("smallcnn"), SIZE, None)
    assert info.source == "random" and model.input.dtype == "uint8" and model.output_shape == (None, 4)
    assert tuple(model.get_layer("backbone").output_shape[1:3]) == (2, 2)  # stride 32, the last feature map
    flatten = next(layer for layer in model.layers if isinstance(layer, keras.layers.Flatten))
    assert flatten.output.shape[-1] == 2 * 2 * 256
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert [(d.units, d.activation.__name__) for d in dense] == [
        (128, "relu"), (64, "relu"), (32, "relu"), (4, "sigmoid")]
    boxes = model(np.zeros((2, SIZE, SIZE, 3), np.uint8)).numpy()
    assert boxes.shape == (2, 4) and ((boxes > 0) & (boxes < 1)).all()


def test_stages_freeze_then_unfreeze_with_the_posts_and_the_keras_guides_rates(fixtures_dir):
    weights = require_fixture(fixtures_dir / "weights" / "mobilenet_2_5_224_tf_no_top.h5")
    model, info = guide.build_model(get_backbone("mobilenet_0.25"), SIZE, str(weights))
    backbone = model.get_layer("backbone")
    guide.set_backbone_trainable(model, False, info.source != "random")
    guide.compile_stage(model, "frozen")
    assert backbone.trainable_weights == [] and len(model.trainable_weights) == 8  # 4 Dense: kernel + bias
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(1e-4)
    guide.set_backbone_trainable(model, True, info.source != "random")
    guide.compile_stage(model, "unfrozen")
    norms = [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]
    convs = [layer for layer in backbone.layers if isinstance(layer, (keras.layers.Conv2D,))]
    assert norms and not any(n.trainable for n in norms)  # inference mode, as the Keras guide keeps it
    assert convs and all(c.trainable for c in convs)
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(1e-5)
    assert model.loss == "mse"


def test_targets_are_the_largest_box_normalized():
    samples = Samples(("a.png", "b.png"), (Boxes(((10, 20, 30, 40),), (0,), 100, 50),
                                           Boxes(((0, 0, 5, 5), (20, 10, 60, 30)), (0, 0), 80, 40)), ("x",))
    np.testing.assert_allclose(guide.box_targets(samples), [[0.1, 0.4, 0.3, 0.8], [0.25, 0.25, 0.75, 0.75]])


def test_scorer_is_transfers_localization_evaluation():
    samples = Samples(("a.png", "b.png"), (Boxes(((0, 0, 100, 50),), (0,), 100, 50),
                                           Boxes(((20, 10, 60, 30),), (0,), 80, 40)), ("x",))
    assert guide.score_boxes(samples, guide.box_targets(samples)).mean_iou == pytest.approx(1.0)
    # Left half of the first image (IoU 0.5), the second's box moved right by half its width (IoU 1/3).
    report = guide.score_boxes(samples, np.array([[0, 0, 0.5, 1], [0.5, 0.25, 1.0, 0.75]]))
    assert report.ious == pytest.approx((0.5, 1 / 3)) and report.to_dict()["iou50_accuracy"] == 0.5


def test_stage_plans_split_the_steps_half_and_half():
    plans = guide.stage_plans(200, None, 5)
    assert [(stage, plan.epochs, plan.steps) for stage, plan in plans] == [("frozen", 20, 100), ("unfrozen", 20, 100)]
    plans = guide.stage_plans(7, None, 5)
    assert [(stage, plan.epochs, plan.steps, plan.last_epoch_steps) for stage, plan in plans] == [
        ("frozen", 1, 4, 4), ("unfrozen", 1, 3, 3)]
    assert [stage for stage, _ in guide.stage_plans(1, None, 5)] == ["frozen"]
    assert [(p.epochs, p.steps) for _, p in guide.stage_plans(None, 50, 5)] == [(25, 125), (25, 125)]
    with pytest.raises(ValueError, match="Give steps or epochs"):
        guide.stage_plans(None, None, 5)


def test_dataset_is_the_posts_nearest_resize_in_batches_with_a_partial_last(split):
    batches = list(guide.make_dataset(split.train, 32, training=False, batch_size=4))
    assert [int(images.shape[0]) for images, _ in batches] == [4, 2]
    images, boxes = batches[0]
    assert images.dtype == tf.uint8 and tuple(images.shape[1:]) == (32, 32, 3)
    np.testing.assert_allclose(np.concatenate([b.numpy() for _, b in batches]), guide.box_targets(split.train))
    # Nearest: every pixel is one of the image's own colours (the box images hold two).
    assert len(np.unique(images.numpy().reshape(-1, 3), axis=0)) <= 3
    shuffled = np.concatenate([b.numpy() for _, b in guide.make_dataset(split.train, 32, training=True, seed=1)])
    assert sorted(map(tuple, shuffled)) == sorted(map(tuple, guide.box_targets(split.train)))


@pytest.mark.slow
def test_tiny_run_takes_exactly_its_steps_half_frozen(tmp_path, capsys):
    box_csv("localize", count=8)(tmp_path)
    result = tmp_path / "out.jsonl"
    guide.main(["--data", str(tmp_path / "data" / "boxes.csv"), "--steps", "5", "--image-size", str(SIZE),
                "--backbone", "smallcnn", "--weights", "none", "--json", str(result)])
    out = json.loads(result.read_text())
    # 6 training images: 1 step an epoch; 3 frozen epochs, then 2 unfrozen.
    assert out["steps"] == 5 and out["epochs"] == 5
    assert [(row["epoch"], row["stage"]) for row in out["history"]] == [
        (1, "frozen"), (2, "frozen"), (3, "frozen"), (4, "unfrozen"), (5, "unfrozen")]
    assert capsys.readouterr().out.count("epoch ") == 5
    assert all("val_loss" in row for row in out["history"])
    assert out["headline"] == out["score"]["mean_iou"] and out["score"]["num_images"] == 2
    assert out["guide"] == "box_regression" and out["task"] == "localize"
    assert 0 < out["train_seconds"] <= out["seconds"]
