"""The learning-rate finder: a sweep that leaves the model as it found it, and its plot."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.test_cli import assert_user_error
from transfer.core.errors import TransferError
from transfer.engine.lr_find import find_learning_rate, plot_lr_find, suggest_learning_rate

SIZE = 32


def _small_model():
    """Conv + trainable BatchNorm + softmax: traces in a second, and its BatchNorm statistics move."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))


@pytest.fixture(scope="module")
def model_and_data():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (24, SIZE, SIZE, 3), dtype=np.uint8)
    targets = np.eye(3, dtype="float32")[np.arange(24) % 3]
    # Class-dependent brightness so there is something to learn.
    images = np.clip(images // 2 + (np.arange(24) % 3)[:, None, None, None] * 60, 0, 255).astype(np.uint8)
    return _small_model(), tf.data.Dataset.from_tensor_slices((images, targets)).batch(8)


def test_sweep_restores_weights_and_suggests_a_rate_in_range(model_and_data):
    model, data = model_and_data
    before = [w.copy() for w in model.get_weights()]
    lrs, losses, suggestion = find_learning_rate(model, data, min_lr=1e-5, max_lr=10.0, steps=30)
    assert len(lrs) == len(losses) >= 6
    assert lrs[0] == pytest.approx(1e-5) and np.all(np.diff(lrs) > 0)
    assert np.all(np.isfinite(losses))  # a diverging sweep stops before its losses overflow
    assert suggestion == suggest_learning_rate(lrs, losses)  # the rule, tested on hand-made curves below
    # Kernels, biases and BatchNorm moving statistics all come back.
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_sweep_stops_when_the_loss_diverges(model_and_data):
    model, data = model_and_data
    # Adam: SGD has training's momentum 0.9 now, which on this separable toy data
    # saturates the softmax (loss -> 0) instead of diverging.
    lrs, _, _ = find_learning_rate(model, data, min_lr=1e-3, max_lr=1e6, steps=60, optimizer="adam")
    assert len(lrs) < 60


def test_plot_is_a_png(tmp_path):
    lrs = np.geomspace(1e-6, 1, 50)
    losses = 1.5 - 0.5 * np.exp(-((np.log10(lrs) + 3) ** 2)) + np.where(lrs > 0.1, 5 * lrs, 0)
    path = plot_lr_find(lrs, losses, 1e-4, tmp_path / "out" / "lr_find.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 5_000


def test_bad_ranges_are_clear_errors(model_and_data):
    model, data = model_and_data
    with pytest.raises(TransferError, match="range"):
        find_learning_rate(model, data, min_lr=1.0, max_lr=0.1)
    with pytest.raises(TransferError, match="steps"):
        find_learning_rate(model, data, steps=2)


def test_suggestion_for_a_falling_curve_is_a_tenth_of_the_minimum():
    lrs = np.geomspace(1e-6, 1, 61)
    losses = 2 - np.exp(-((np.log10(lrs) + 2) ** 2))  # lowest at 1e-2
    assert suggest_learning_rate(lrs, losses) == pytest.approx(1e-3)


def test_suggestion_for_a_flat_then_rising_curve_stays_below_the_rise():
    # Fine-tuning with a trained head: flat until 3e-4, then the loss climbs.
    lrs = np.geomspace(1e-6, 1e-1, 100)
    losses = 1.0 + np.where(lrs > 3e-4, np.log10(lrs / 3e-4), 0.0) + 0.005 * np.sin(np.arange(100))
    suggestion = suggest_learning_rate(lrs, losses)
    assert 2e-4 <= suggestion <= 6e-4


def test_progress_is_called_every_step_and_class_weights_change_the_loss(model_and_data):
    model, data = model_and_data
    seen = []
    lrs, losses, _ = find_learning_rate(model, data, min_lr=1e-5, max_lr=1e-3, steps=6,
                                        progress=lambda *args: seen.append(args))
    assert [s[0] for s in seen] == [1, 2, 3, 4, 5, 6] and all(s[1] == 6 for s in seen)
    np.testing.assert_allclose([s[2] for s in seen], lrs)
    np.testing.assert_allclose([s[3] for s in seen], losses)
    # Doubling every class's weight doubles the (weighted-mean) loss, as fit(class_weight=...) does.
    _, doubled, _ = find_learning_rate(model, data, min_lr=1e-5, max_lr=1e-3, steps=6,
                                       class_weight={0: 2.0, 1: 2.0, 2: 2.0})
    assert doubled[0] == pytest.approx(2 * losses[0], rel=1e-4)


def test_adamw_with_weight_decay_and_sgd_run(model_and_data):
    model, data = model_and_data
    images, targets = next(iter(data))
    # The first point is the loss before any step (BatchNorm in training mode, as the step runs it):
    # the same for every optimizer, since each sweep starts from the restored weights.
    weights = model.get_weights()
    first = float(np.mean(keras.losses.categorical_crossentropy(targets, model(images, training=True))))
    model.set_weights(weights)  # the training-mode call moved the BatchNorm statistics
    curves = {}
    for optimizer, decay in (("adamw", 0.05), ("sgd", None)):
        lrs, losses, _ = find_learning_rate(model, data, min_lr=1e-5, max_lr=1e-2, steps=6, optimizer=optimizer,
                                            weight_decay=decay)
        assert len(lrs) == len(losses) == 6 and losses[0] == pytest.approx(first, rel=1e-5)
        curves[optimizer] = losses
    # ... after which the optimizers' steps differ.
    assert not np.allclose(curves["adamw"][1:], curves["sgd"][1:], rtol=1e-5, atol=0)


# --- `transfer lr-find` -------------------------------------------------------

STEPS = "8"


@pytest.fixture(scope="module")
def cli():
    from typer.testing import CliRunner

    from transfer.cli.main import app

    runner = CliRunner()
    return lambda *args: runner.invoke(app, ["lr-find", *map(str, args)])


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from transfer.cli.demo import make_shapes_dataset

    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), train_per_class=6, val_per_class=3, size=SIZE)


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("recipe") / "tiny.toml"
    path.write_text(
        'batch_size = 8\nlabel_smoothing = 0.1\n'
        '[[stages]]\nname = "head"\ntrainable = "head"\nepochs = 1\n'
        '[[stages]]\nname = "top"\ntrainable = "top:1"\nlearning_rate = 0.0001\nepochs = 1\n'
    )
    return path


def test_cli_lr_find_writes_a_png_and_suggests_a_rate(cli, shapes, recipe_file, tmp_path):
    from PIL import Image

    out = tmp_path / "plots" / "lr.png"
    result = cli("--data", shapes, "--weights", "none", "--image-size", SIZE, "--recipe", recipe_file,
                 "--min-lr", 1e-5, "--max-lr", 1.0, "--steps", STEPS, "--out", out)
    assert result.exit_code == 0, result.output
    with Image.open(out) as image:
        assert image.format == "PNG" and image.size[0] > 100
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)
    assert 1e-5 <= float(lines["Suggested learning rate"]) <= 1.0
    assert lines["Plot"] == str(out)
    assert 'for stage "head"' in result.stdout and str(recipe_file) in result.stdout
    assert f"lr-find step {STEPS}/{STEPS}" in result.stderr  # progress goes to stderr


def test_cli_lr_find_json_for_a_stage_by_number(cli, shapes, recipe_file, tmp_path):
    result = cli("--data", shapes, "--weights", "none", "--image-size", SIZE, "--recipe", recipe_file,
                 "--stage", "2", "--steps", STEPS, "--out", tmp_path, "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)  # stdout holds the JSON object alone
    assert set(document) == {"suggested_learning_rate", "plot", "stage", "learning_rates", "losses"}
    assert document["stage"] == "top" and document["plot"] == str(tmp_path / "lr_find.png")
    assert 2 <= len(document["learning_rates"]) == len(document["losses"]) <= int(STEPS)
    suggested = suggest_learning_rate(document["learning_rates"], document["losses"])
    assert document["suggested_learning_rate"] == pytest.approx(suggested, rel=1e-9)
    assert (tmp_path / "lr_find.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_lr_find_user_errors(cli, shapes, recipe_file, tmp_path):
    common = ("--weights", "none", "--image-size", SIZE, "--out", tmp_path / "x.png")
    assert_user_error(cli("--data", shapes, "--recipe", recipe_file, "--stage", "finetune", *common),
                "finetune", "'head'", "'top'")
    assert_user_error(cli("--data", shapes, "--recipe", recipe_file, "--stage", "3", *common), "'head'", "'top'")
    assert_user_error(cli("--data", shapes, "--min-lr", 1, "--max-lr", 0.1, *common), "range", "min_lr < max_lr")
    assert_user_error(cli("--data", shapes, "--min-lr", 0.1, "--max-lr", 0.1, *common), "range")
    assert_user_error(cli("--data", shapes, "--steps", 4, *common), "steps=4")
    assert_user_error(cli("--data", tmp_path / "nowhere", *common), "nowhere")
    assert_user_error(cli("--data", shapes, "--backbone", "resnet5O", *common), "Unknown backbone")
    assert not (tmp_path / "x.png").exists()


# --- prepare_lr_find: the set-up `transfer lr-find` runs -----------------------


def test_prepare_lr_find_sets_up_the_stage_as_training_would(shapes, recipe_file):
    from transfer.data import load_data
    from transfer.tasks.classify.lr_find import prepare_lr_find
    from transfer.core.recipe import Recipe

    said = []
    recipe = Recipe.load(recipe_file)
    sweep = prepare_lr_find(load_data(shapes, seed=recipe.seed), weights=None, image_size=SIZE, recipe=recipe,
                            stage="top", min_lr=1e-5, max_lr=1e-2, steps=6, echo=said.append)
    assert sweep.stage.name == "top" and sweep.settings["steps"] == 6
    assert sweep.settings["optimizer"] == recipe.optimizer
    assert sweep.settings["loss"].get_config()["label_smoothing"] == pytest.approx(0.1)  # the recipe's loss
    assert said[0].startswith("Data: 18 train images, 3 classes")
    assert any("Stage 2/2 'top'" in line for line in said)
    assert any("untrained head" in line for line in said)  # a later stage's suggestion is an upper bound
    x, y = next(iter(sweep.dataset))
    assert tuple(x.shape[1:]) == (SIZE, SIZE, 3) and y.shape[-1] == 3 and x.shape[0] <= recipe.batch_size
    before = [w.copy() for w in sweep.model.get_weights()]
    result = sweep.run()
    assert result.stage == "top" and result.steps == 6 and len(result.learning_rates) == len(result.losses) >= 2
    assert 1e-5 <= result.suggestion <= 1e-2
    for a, b in zip(before, sweep.model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_prepare_lr_find_checks_cheap_mistakes_before_reading_data(tmp_path, recipe_file):
    from transfer.tasks.classify.lr_find import prepare_lr_find

    missing = tmp_path / "nowhere"  # would fail only once data is read
    with pytest.raises(TransferError, match="'head'"):
        prepare_lr_find(missing, weights=None, recipe=recipe_file, stage="finetune")
    with pytest.raises(TransferError, match="steps=4"):
        prepare_lr_find(missing, weights=None, steps=4)
    with pytest.raises(TransferError, match="Unknown backbone"):
        prepare_lr_find(missing, weights=None, backbone="resnet5O")
    with pytest.raises(TransferError, match="nowhere"):
        prepare_lr_find(missing, weights=None)


def test_sweep_notes_name_an_early_stop_and_a_flat_curve():
    from transfer.engine.lr_find import SweepResult

    lrs = np.geomspace(1e-5, 1e-1, 20)
    falling = SweepResult(lrs, np.linspace(2.0, 1.0, 20), 1e-3, "head", steps=20)
    assert falling.notes() == []
    stopped = SweepResult(lrs, np.linspace(2.0, 1.0, 20), 1e-3, "head", steps=50)
    assert stopped.notes() == [f"Stopped after 20 of 50 steps: the loss diverged at lr {lrs[-1]:.2e}."]
    flat = SweepResult(lrs, np.full(20, 1.5), 1e-3, "head", steps=20)
    assert len(flat.notes()) == 1 and flat.notes()[0].startswith("Warning: the loss stayed flat")
