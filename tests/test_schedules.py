"""Warmup + cosine schedule values, serialization, and the AdamW decay exclusions."""

import keras
import numpy as np
import pytest

from transfer.core.errors import TransferError
from transfer.engine.schedules import make_optimizer, no_decay_variables, warmup_cosine, warmup_steps_for


def values(schedule, steps):
    return [float(schedule(step)) for step in steps]


def test_warmup_peak_and_end():
    s = warmup_cosine(1e-3, total_steps=100, warmup_steps=10, final_fraction=0.01)
    start, mid_warmup, peak, mid_decay, end, after = values(s, [0, 5, 10, 55, 100, 500])
    assert start == 0.0
    assert mid_warmup == pytest.approx(5e-4)
    assert peak == pytest.approx(1e-3)
    # Halfway through the cosine: halfway between peak and floor.
    assert mid_decay == pytest.approx(1e-5 + 0.5 * (1e-3 - 1e-5), rel=1e-4)
    assert end == pytest.approx(1e-5) and after == pytest.approx(1e-5)


def test_rate_rises_then_falls():
    s = warmup_cosine(2e-3, total_steps=50, warmup_steps=5)
    lrs = np.array(values(s, range(51)))
    assert np.all(np.diff(lrs[:6]) > 0) and np.all(np.diff(lrs[5:]) <= 1e-12)
    assert lrs.max() == pytest.approx(2e-3)


def test_no_warmup_starts_at_the_peak():
    s = warmup_cosine(1e-2, total_steps=20)
    assert values(s, [0, 20]) == pytest.approx([1e-2, 1e-4])


def test_warmup_longer_than_the_run_still_decays():
    s = warmup_cosine(1e-3, total_steps=10, warmup_steps=50)
    assert float(s(9)) == pytest.approx(1e-3) and float(s(10)) == pytest.approx(1e-5)


def test_schedule_round_trips_through_keras_serialization():
    s = warmup_cosine(1e-3, total_steps=100, warmup_steps=10)
    again = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(s))
    assert values(again, [0, 5, 10, 60, 100]) == pytest.approx(values(s, [0, 5, 10, 60, 100]))


def test_bad_learning_rate_is_a_clear_error():
    with pytest.raises(TransferError, match="Learning rate"):
        warmup_cosine(0.0, 10)


def test_warmup_steps_for_fractions_of_epochs():
    assert warmup_steps_for(108, 1.0, 864) == 108
    assert warmup_steps_for(108, 0.5, 864) == 54
    assert warmup_steps_for(108, 0.0, 864) == 0
    assert warmup_steps_for(108, 20.0, 864) == 863


def _tiny_model():
    inputs = keras.Input((4, 4, 3))
    x = keras.layers.Conv2D(2, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(2, name="dense")(x)
    return keras.Model(inputs, outputs)


def test_adamw_decays_kernels_only():
    model = _tiny_model()
    assert {v.name for v in no_decay_variables(model)} == {"bias", "gamma", "beta", "moving_mean", "moving_variance"}
    optimizer = make_optimizer("adamw", 0.1, weight_decay=0.5, model=model)
    before = {v.path: v.numpy().copy() for v in model.trainable_variables}
    zeros = [np.zeros(v.shape, "float32") for v in model.trainable_variables]
    optimizer.apply_gradients(zip(zeros, model.trainable_variables))
    for v in model.trainable_variables:
        moved = not np.allclose(v.numpy(), before[v.path])
        # With zero gradients only weight decay moves a variable (and only non-zero ones).
        if len(v.shape) >= 2:
            assert moved, v.path
        else:
            assert not moved, v.path


def test_other_optimizers_and_unknown_names():
    assert isinstance(make_optimizer("adam", 1e-3), keras.optimizers.Adam)
    assert isinstance(make_optimizer("sgd", 1e-3), keras.optimizers.SGD)
    assert isinstance(make_optimizer("adamw", 1e-3), keras.optimizers.AdamW)  # name-based exclusions
    with pytest.raises(TransferError, match="Unknown optimizer"):
        make_optimizer("lamb", 1e-3)
