"""benchmarks/guides/fit_budget.py: a step budget becomes epochs, fit stops after exactly the budget
(mid-epoch), one history row and one line per epoch."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from benchmarks.guides.fit_budget import epoch_logger, plan_epochs


def test_plan_epochs_from_steps_or_epochs():
    plan = plan_epochs(100, None, 15)
    assert (plan.epochs, plan.steps, plan.last_epoch_steps) == (7, 100, 10)
    assert (plan_epochs(30, 3, 15).epochs, plan_epochs(None, 3, 15).steps) == (2, 45)  # steps win over epochs
    for steps, epochs, per_epoch in ((None, None, 5), (0, None, 5), (5, None, 0), (None, 0, 5)):
        with pytest.raises(ValueError):
            plan_epochs(steps, epochs, per_epoch)


def test_fit_stops_after_exactly_the_budget_mid_epoch():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    x = np.arange(20, dtype=np.float32).reshape(10, 2)
    ds = tf.data.Dataset.from_tensor_slices((x, x[:, :1])).batch(2)  # 5 steps an epoch
    plan = plan_epochs(7, None, 5)
    history, lines = [], []
    model.fit(ds, validation_data=ds, epochs=plan.epochs, shuffle=False, verbose=0,
              callbacks=[epoch_logger(plan.steps, lines.append, history, "frozen", first_epoch=4)])
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 7
    assert [(row["epoch"], row["stage"]) for row in history] == [(4, "frozen"), (5, "frozen")]
    assert all(row["loss"] > 0 and "val_loss" in row for row in history)
    assert len(lines) == 2 and lines[0].startswith("epoch 4 [frozen]: loss ")
