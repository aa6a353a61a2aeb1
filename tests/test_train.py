"""Training runs on small synthetic data: the run folder, freezing rules, BatchNorm."""

import csv
import json

import keras
import numpy as np
import pytest

from transfer.backbones import get_backbone
from transfer.data import load_data
from transfer.cli.demo import make_shapes_dataset
from transfer.core.errors import TransferError
from transfer.core.recipe import Recipe, Stage
from transfer.engine.freezing import set_trainable
from transfer.engine.train import train

SIZE = 32
TINY = Recipe(stages=(Stage("head", "head", 1e-3, 1), Stage("top", "top:2", 1e-4, 1)), batch_size=8)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    return make_shapes_dataset(root, train_per_class=6, val_per_class=3, size=SIZE)


@pytest.fixture(scope="module")
def finished_run(shapes, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "run"
    result = train(load_data(shapes), out, backbone="mobilenet_0.25", weights=None, image_size=SIZE,
                   recipe=TINY, data_source=str(shapes), verbose=0)
    return result


def test_run_folder_holds_everything(finished_run):
    root = finished_run.run_dir
    config = json.loads((root / "run.json").read_text())
    assert config["status"] == "done"
    assert config["class_names"] == ["circle", "square", "triangle"]
    assert config["backbone"] == "mobilenet_0.25" and config["image_size"] == SIZE
    assert config["weights"] == "random" and config["checkpoint_every"] == 30.0
    assert Recipe.load(root / "recipe.toml") == TINY
    split = json.loads((root / "split.json").read_text())
    assert len(split["val"]) == 9 and all(r["path"].endswith(".png") for r in split["val"])
    assert (root / "checkpoints" / "best.keras").stat().st_size > 10_000
    rows = list(csv.DictReader(open(root / "history.csv")))
    assert [(r["epoch"], r["stage"]) for r in rows] == [("1", "head"), ("2", "top")]
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(rows[0])
    metrics = json.loads((root / "metrics.json").read_text())
    assert metrics["num_images"] == 9
    # Random weights and two epochs learn nothing reliable, so no bound on the accuracy itself: the
    # evaluation of the saved best model must agree with what Keras measured during training, and
    # the best epoch is the first with the highest val accuracy.
    val_accuracy = [float(r["val_accuracy"]) for r in rows]
    assert metrics["best_epoch"] == 1 + val_accuracy.index(max(val_accuracy))
    assert metrics["accuracy"] == pytest.approx(max(val_accuracy), abs=1e-6)
    confusion = metrics["confusion_matrix"]["matrix"]
    assert sum(map(sum, confusion)) == 9
    assert metrics["accuracy"] == pytest.approx(sum(confusion[i][i] for i in range(3)) / 9)
    png = (root / "evaluation" / "confusion_matrix.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    assert any((root / "logs").rglob("events.out.tfevents*"))


def test_best_checkpoint_reproduces_reported_accuracy(finished_run):
    from transfer.engine.evaluate import evaluate_run

    metrics = json.loads((finished_run.run_dir / "metrics.json").read_text())
    assert evaluate_run(finished_run.run_dir).accuracy == pytest.approx(metrics["accuracy"])


def test_training_into_an_existing_run_is_refused(finished_run, shapes):
    with pytest.raises(TransferError, match="already holds a training run"):
        train(load_data(shapes), finished_run.run_dir, weights=None, image_size=SIZE, recipe=TINY, verbose=0)


def test_too_small_image_size_is_a_clear_error(shapes, tmp_path):
    with pytest.raises(TransferError, match="too small"):
        train(load_data(shapes), tmp_path / "r", weights=None, image_size=8, recipe=TINY, verbose=0)


@pytest.fixture(scope="module")
def model_and_spec():
    from tests.modelfactory import pretrained_like_classifier

    return pretrained_like_classifier(3, SIZE), get_backbone("mobilenet_0.25")


def _trainable_backbone_layers(model):
    return [l.name for l in model.get_layer("backbone").layers if l.trainable and l.weights]


def _learnable(layer):
    return bool(layer.weights) and not isinstance(layer, keras.layers.BatchNormalization)


def test_set_trainable_head_all_and_top_blocks(model_and_spec):
    model, spec = model_and_spec
    backbone = model.get_layer("backbone")
    set_trainable(model, spec, Stage("s", "head"))
    assert _trainable_backbone_layers(model) == []
    assert model.get_layer("scores").trainable
    set_trainable(model, spec, Stage("s", "all"))
    assert _trainable_backbone_layers(model) == [l.name for l in backbone.layers if _learnable(l)]
    set_trainable(model, spec, Stage("s", "top:2"))
    blocks = spec.blocks(backbone)
    expected = [n for block in blocks[-2:] for n in block if _learnable(backbone.get_layer(n))]
    assert _trainable_backbone_layers(model) == expected
    assert 0 < len(expected) < sum(1 for l in backbone.layers if _learnable(l))
    # Training from random weights: BatchNorm trains too.
    set_trainable(model, spec, Stage("s", "all"), freeze_batchnorm=False)
    assert _trainable_backbone_layers(model) == [l.name for l in backbone.layers if l.weights]
    set_trainable(model, spec, Stage("s", "all"))


def test_head_stage_leaves_backbone_weights_untouched_and_bn_stats_frozen(model_and_spec, shapes):
    from transfer.data.pipelines.images import make_dataset
    from transfer.tasks.classify.model import loss_and_metrics

    model, spec = model_and_spec
    backbone = model.get_layer("backbone")
    ds = make_dataset(load_data(shapes).train, SIZE, 8, training=True)
    loss, metrics = loss_and_metrics(False)

    set_trainable(model, spec, Stage("s", "head"))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss, metrics=metrics)
    before = [w.copy() for w in backbone.get_weights()]
    head_before = model.get_layer("scores").get_weights()[0].copy()
    model.fit(ds, epochs=1, verbose=0)
    for a, b in zip(before, backbone.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(head_before, model.get_layer("scores").get_weights()[0])

    # Everything trainable: kernels move, but BatchNorm moving statistics stay
    # (a pretrained backbone keeps BatchNorm in inference mode; Keras 3's fit
    # would override a nested training=False, keras-team/keras#20285).
    set_trainable(model, spec, Stage("s", "all"))
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=loss, metrics=metrics)
    bn = next(l for l in backbone.layers if isinstance(l, keras.layers.BatchNormalization))
    stats_before = [bn.moving_mean.numpy().copy(), bn.moving_variance.numpy().copy()]
    kernel_before = backbone.get_layer("conv1").get_weights()[0].copy()
    model.fit(ds, epochs=1, verbose=0)
    np.testing.assert_array_equal(stats_before[0], bn.moving_mean.numpy())
    np.testing.assert_array_equal(stats_before[1], bn.moving_variance.numpy())
    assert not np.array_equal(kernel_before, backbone.get_layer("conv1").get_weights()[0])


def test_random_weights_train_their_batchnorm():
    """Untrained BatchNorm in inference mode would zero the features (see classify.py)."""
    from transfer.tasks.classify.model import build_classifier

    model, info = build_classifier(get_backbone("mobilenet_0.25"), 3, SIZE, weights=None)
    assert info.source == "random"
    images = np.random.default_rng(0).integers(0, 256, (4, SIZE, SIZE, 3), dtype=np.uint8)
    backbone_out = keras.Model(model.input, model.get_layer("pool").output)
    assert np.abs(backbone_out(images, training=True).numpy()).mean() > 1e-3


@pytest.mark.slow  # ~75 s: train, evaluate and export a multi-label run
def test_multi_label_csv_trains_evaluates_and_exports(shapes, tmp_path, capsys):
    import tensorflow as tf
    from typer.testing import CliRunner

    from transfer.cli.main import app
    from transfer.cli.train import _outcome_text
    from transfer.engine.evaluate import evaluate_run
    from transfer.serving.export import export_run
    from transfer.tasks.classify.reader import ExportedClassifier

    labels = {"circle": "round", "square": "corners;four", "triangle": "corners;three"}
    rows = ["path,labels,split"]
    for split in ("train", "val"):
        for image in sorted((shapes / split).glob("*/*.png")):
            rows.append(f"{image.relative_to(shapes)},{labels[image.parent.name]},{split}")
    csv_file = shapes / "labels.csv"  # paths in a CSV stay inside its folder
    csv_file.write_text("\n".join(rows) + "\n")

    split = load_data(csv_file)
    assert split.multi_label and split.class_names == ("corners", "four", "round", "three")
    result = train(split, tmp_path / "run", weights=None, image_size=SIZE, recipe=TINY, verbose=2)
    out = capsys.readouterr().out
    assert "Multi-label: 4 labels" in out and "val macro F1" in out  # train says what it is and what it picks by
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert "exact_match" in metrics and set(metrics["per_class"]) == set(split.class_names)
    # The best epoch is chosen by macro F1 (per-label accuracy flatters: 0.75 here for predicting no label).
    config = json.loads((result.run_dir / "run.json").read_text())
    assert config["monitor"] == metrics["monitor"] == "val_macro_f1"
    rows = list(csv.DictReader(open(result.run_dir / "history.csv")))
    assert {"val_macro_f1", "val_accuracy", "macro_f1"} <= set(rows[0])
    f1 = [float(r["val_macro_f1"]) for r in rows]
    assert config["best_epoch"] == 1 + f1.index(max(f1)) and config["best_value"] == pytest.approx(max(f1))
    # The evaluation of the best checkpoint agrees with the F1 Keras logged (the same >= 0.5 rule).
    assert metrics["macro_f1"] == pytest.approx(max(f1), abs=1e-4)
    assert metrics["no_label_accuracy"] == pytest.approx(7 / 12)  # 5/3 of 4 labels per image on average
    headline = _outcome_text(result)
    assert headline.startswith(f"Best val macro F1 {metrics['macro_f1']:.4f} (epoch {config['best_epoch']})")
    assert "exact match" in headline and "no label at all would score 0.5833" in headline
    report = evaluate_run(result.run_dir)
    assert report.multi_label
    table = report.table()
    assert table.splitlines()[0].startswith("label ") and "exact match" in table and "macro F1" in table
    assert all(name in table for name in split.class_names) and "predicting no label at all" in table

    export_dir = export_run(result.run_dir, tmp_path / "export")
    classifier = ExportedClassifier.load(export_dir)
    assert classifier.multi_label
    answer = classifier.predict_files([split.val.sources[0]], top_k=2)[0]
    assert len(answer["predictions"]) >= 2 and "labels" in answer
    scores = [p["score"] for p in answer["predictions"]]
    assert all(0.0 <= s <= 1.0 for s in scores)
    # The export answers all scores and the names over the threshold (empty strings for the others).
    served = tf.saved_model.load(str(export_dir)).signatures["serving_default"](
        image_bytes=tf.constant([open(split.val.sources[0], "rb").read()]))
    all_scores = served["scores"].numpy()[0]
    assert all_scores.shape == (4,)
    assert [v.decode() for v in served["labels"].numpy()[0]] == [
        n if s >= 0.5 else "" for n, s in zip(classifier.class_names, all_scores)]
    assert sorted(answer["labels"]) == sorted(n for n, s in zip(classifier.class_names, all_scores) if s >= 0.5)
    text = CliRunner().invoke(app, ["predict", str(export_dir), split.val.sources[0]])
    assert text.exit_code == 0, text.output
    shown = ", ".join(answer["labels"]) or "(none)"
    assert f"labels {shown} (score >= 0.5)" in text.output


def test_from_layer_unfreezes_its_block_and_above(model_and_spec):
    model, spec = model_and_spec
    backbone = model.get_layer("backbone")
    set_trainable(model, spec, Stage("s", "from:conv_pw_12"))
    names = _trainable_backbone_layers(model)
    assert names[0] == "conv_dw_12" and "conv_pw_13" in names and "conv_pw_11" not in names
    # A prefix names the first block whose layer starts with it.
    set_trainable(model, spec, Stage("s", "from:conv_dw_13"))
    assert _trainable_backbone_layers(model)[0] == "conv_dw_13"
    with pytest.raises(TransferError, match="conv9_block1"):
        set_trainable(model, spec, Stage("s", "from:conv9_block1"))
    set_trainable(model, spec, Stage("s", "all"))
    assert len(_trainable_backbone_layers(model)) == sum(1 for l in backbone.layers if _learnable(l))


def test_balanced_class_weights():
    from transfer.data.samples import Samples
    from transfer.tasks.classify.task import class_weights

    samples = Samples(tuple("abcdef"), (0, 0, 0, 0, 1, 1), ("many", "few"))
    assert class_weights(samples, "none") is None
    assert class_weights(samples, "balanced") == pytest.approx({0: 6 / (2 * 4), 1: 6 / (2 * 2)})
    multi = Samples(("a",), ((0, 1),), ("x", "y"), multi_label=True)
    with pytest.raises(TransferError, match="single-label"):
        class_weights(multi, "balanced")


def test_patience_stops_a_stage_early_and_training_moves_on(shapes, tmp_path):
    # A learning rate of 1e-9 cannot change validation accuracy: the first stage
    # stops after 1 + patience epochs, then the next stage runs in full.
    recipe = Recipe(stages=(Stage("stuck", "head", 1e-9, 6, patience=1), Stage("top", "top:1", 1e-4, 1)),
                    batch_size=8, class_weight="balanced")
    result = train(load_data(shapes), tmp_path / "run", weights=None, image_size=SIZE, recipe=recipe, verbose=0)
    rows = list(csv.DictReader(open(result.run_dir / "history.csv")))
    assert [(r["epoch"], r["stage"]) for r in rows] == [("1", "stuck"), ("2", "stuck"), ("3", "top")]


@pytest.mark.parametrize("bad", [-1, float("nan"), "30"])
def test_checkpoint_every_must_be_seconds(shapes, tmp_path, bad):
    with pytest.raises(TransferError, match="checkpoint_every"):
        train(load_data(shapes), tmp_path / "run", weights=None, image_size=SIZE, recipe=TINY, verbose=0,
              checkpoint_every=bad)
    assert not (tmp_path / "run").exists()


def test_min_steps_lengthens_a_stage_on_a_small_set(shapes, tmp_path, capsys):
    data = load_data(shapes)
    steps = -(-len(data.train) // 8)
    recipe = Recipe(stages=(Stage("head", "head", 1e-3, 1), Stage("tune", "top:1", 1e-4, 1, min_steps=2 * steps)),
                    batch_size=8, head_cache_views=0)
    result = train(data, tmp_path / "run", weights=None, image_size=SIZE, recipe=recipe, verbose=1)
    rows = list(csv.DictReader(open(result.run_dir / "history.csv")))
    assert [r["stage"] for r in rows] == ["head", "tune", "tune"]
    assert f"Stage 'tune': 2 epochs instead of 1, to train at least min_steps = {2 * steps}" in capsys.readouterr().out
    assert Recipe.load(result.run_dir / "recipe.toml").stages[1].epochs == 2  # what --resume will run

