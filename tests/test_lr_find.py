"""The learning-rate finder: a sweep that leaves the model as it found it, and its plot."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from transfer.errors import TransferError  # noqa: E402
from transfer.lr_find import find_learning_rate, plot_lr_find, suggest_learning_rate  # noqa: E402

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
    assert np.all(np.isfinite(losses))
    assert 1e-5 <= suggestion <= 1.0
    # Kernels, biases and BatchNorm moving statistics all come back.
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_sweep_stops_when_the_loss_diverges(model_and_data):
    model, data = model_and_data
    lrs, _, _ = find_learning_rate(model, data, min_lr=1e-3, max_lr=1e6, steps=60, optimizer="sgd")
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
