"""RunCheckpoints: what is on disk after each epoch, with and without a save interval."""

import json

import keras
import numpy as np

from transfer.engine.checkpoints import Progress, RunCheckpoints
from transfer.engine.run import RunDir


def _driven(tmp_path, *, epochs, save_interval):
    """A RunCheckpoints on a one-layer model, set up as Keras would for a ``fit`` of ``epochs``."""
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, name="scores")])
    run = RunDir(tmp_path / "run")
    (run.root / "checkpoints").mkdir(parents=True)
    callback = RunCheckpoints(run, Progress())
    callback.set_model(model)
    callback.set_params({"epochs": epochs})
    callback.stage(0, "head", stage_start=0, save_interval=save_interval)
    return model, run, callback


def _epoch(model, callback, epoch, accuracy):
    """One epoch whose weights are all ``epoch + 1`` and whose val accuracy is ``accuracy``."""
    callback.on_epoch_begin(epoch)
    model.set_weights([np.full_like(w, epoch + 1.0) for w in model.get_weights()])
    callback.on_epoch_end(epoch, {"val_accuracy": accuracy})


def _kernel(path):
    return float(keras.saving.load_model(path, compile=False).get_layer("scores").kernel.numpy().flat[0])


def test_every_epoch_writes_its_checkpoint_state_and_best_without_an_interval(tmp_path):
    model, run, callback = _driven(tmp_path, epochs=3, save_interval=0.0)
    for epoch, accuracy in enumerate([0.5, 0.8, 0.6]):
        _epoch(model, callback, epoch, accuracy)
        state = json.loads(run.state_file.read_text())
        assert state["epoch"] == epoch + 1 and state["checkpoint"] == f"epoch-{epoch + 1:03d}.keras"
        assert [p.name for p in (run.root / "checkpoints").glob("epoch-*")] == [state["checkpoint"]]
    assert _kernel(run.best_checkpoint) == 2.0 and json.loads(run.state_file.read_text())["best_epoch"] == 2


def test_a_save_interval_writes_at_the_last_epoch_and_keeps_the_best_from_memory(tmp_path):
    model, run, callback = _driven(tmp_path, epochs=4, save_interval=3600.0)
    for epoch, accuracy in enumerate([0.5, 0.9, 0.6]):
        _epoch(model, callback, epoch, accuracy)
        # history.csv follows every epoch; no checkpoint, state or best model yet.
        assert len(run.history_file.read_text().splitlines()) == epoch + 2
        assert not run.state_file.exists() and not run.best_checkpoint.exists()
        assert not list((run.root / "checkpoints").glob("epoch-*"))
    _epoch(model, callback, 3, 0.7)  # the fit's last epoch writes
    state = json.loads(run.state_file.read_text())
    assert state["epoch"] == 4 and state["best_epoch"] == 2 and state["checkpoint"] == "epoch-004.keras"
    assert _kernel(run.root / "checkpoints" / "epoch-004.keras") == 4.0
    assert _kernel(run.best_checkpoint) == 2.0  # epoch 2's weights, never saved as an epoch file
    assert _kernel_of(model) == 4.0  # the model keeps its own weights


def test_a_stage_that_stops_early_inside_its_interval_is_written_at_train_end(tmp_path):
    model, run, callback = _driven(tmp_path, epochs=10, save_interval=3600.0)
    for epoch, accuracy in enumerate([0.5, 0.6, 0.7]):
        _epoch(model, callback, epoch, accuracy)
    assert not run.state_file.exists()
    callback.on_train_end()
    state = json.loads(run.state_file.read_text())
    assert state["epoch"] == 3 and state["best_epoch"] == 3 and state["stage_epochs_done"] == 3
    assert _kernel(run.best_checkpoint) == 3.0
    assert [p.name for p in (run.root / "checkpoints").glob("epoch-*")] == ["epoch-003.keras"]


def _kernel_of(model):
    return float(model.get_layer("scores").kernel.numpy().flat[0])
