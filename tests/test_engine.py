"""transfer.train's engine: head stages on cached features, warmup schedules, precision, XLA,
and resuming in the middle of a cached head stage."""

import csv
import json

import keras
import numpy as np
import pytest

from transfer.data import load_data
from transfer.cli.demo import make_shapes_dataset
from transfer.core.recipe import Recipe, Stage
from transfer.engine.checkpoints import RunCheckpoints
from transfer.engine.train import resume, train

SIZE = 32


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), train_per_class=6, val_per_class=3, size=SIZE)


def rows(run_dir):
    return list(csv.DictReader(open(run_dir / "history.csv")))


@pytest.mark.slow  # ~75 s: two real trainings; test_features covers the cache itself
def test_head_stage_trains_on_cached_features_and_reuses_the_cache(shapes, tmp_path, capsys, monkeypatch):
    import transfer.engine.feature_cache

    computed = []  # the sample counts of each real feature extraction (cache misses)
    compute = transfer.engine.feature_cache._compute

    def counting_compute(model, samples, *args, **kwargs):
        computed.append(len(samples))
        return compute(model, samples, *args, **kwargs)

    monkeypatch.setattr(transfer.engine.feature_cache, "_compute", counting_compute)
    recipe = Recipe(stages=(Stage("head", "head", 3e-3, 3), Stage("finetune", "all", 1e-3, 1)), batch_size=8)
    cache = tmp_path / "cache"
    first = train(load_data(shapes), tmp_path / "a", weights=None, image_size=SIZE, recipe=recipe,
                  feature_cache=cache, verbose=2)
    out = capsys.readouterr().out
    assert "on cached backbone features" in out and f"cached in {cache}" in out
    files = sorted(cache.glob("features-*.npz"))
    assert len(files) == 2  # train and val
    history = rows(first.run_dir)
    assert [r["stage"] for r in history] == ["head"] * 3 + ["finetune"]
    assert all(float(r["seconds"]) > 0 for r in history)
    # The head epochs are a pass over the features, so far cheaper than a full epoch.
    assert max(float(r["seconds"]) for r in history[:3]) < float(history[3]["seconds"])
    assert json.loads((first.run_dir / "run.json").read_text())["feature_cache"] == str(cache)

    assert sorted(computed) == [9, 18]  # val and train, each extracted once

    before = {p: (p.stat().st_ino, p.read_bytes()) for p in files}
    head_only = Recipe(stages=recipe.stages[:1], batch_size=8)  # same seed, so the same initial backbone
    train(load_data(shapes), tmp_path / "b", weights=None, image_size=SIZE, recipe=head_only,
          feature_cache=cache, verbose=0)
    assert sorted(computed) == [9, 18]  # same keys: both read from the cache, nothing computed again
    assert sorted(cache.glob("features-*.npz")) == files
    # A cache hit marks the file used (for pruning), it does not rewrite it: same file, same bytes.
    assert {p: (p.stat().st_ino, p.read_bytes()) for p in files} == before


def test_cached_head_validation_matches_the_saved_classifier(shapes, tmp_path):
    """The val accuracy logged on cached features is the classifier's own on the images."""
    from transfer.engine.evaluate import evaluate_run

    recipe = Recipe(stages=(Stage("head", "head", 1e-2, 4),), batch_size=8, augment=())
    result = train(load_data(shapes), tmp_path / "run", weights=None, image_size=SIZE, recipe=recipe,
                   feature_cache=False, verbose=0)
    best = max(float(r["val_accuracy"]) for r in rows(result.run_dir))
    assert evaluate_run(result.run_dir).accuracy == pytest.approx(best)


def test_head_cache_views_zero_runs_the_whole_model(shapes, tmp_path):
    recipe = Recipe(stages=(Stage("head", "head", 1e-3, 1),), batch_size=8, head_cache_views=0)
    cache = tmp_path / "cache"
    train(load_data(shapes), tmp_path / "run", weights=None, image_size=SIZE, recipe=recipe,
          feature_cache=cache, verbose=0)
    assert not cache.exists()


def test_patience_stops_a_cached_head_stage(shapes, tmp_path):
    # A rate of 1e-9 changes nothing, so validation cannot improve after epoch 1.
    recipe = Recipe(stages=(Stage("head", "head", 1e-9, 20, patience=2), Stage("next", "head", 1e-3, 1)),
                    batch_size=8, dropout=0.0)
    result = train(load_data(shapes), tmp_path / "run", weights=None, image_size=SIZE, recipe=recipe,
                   feature_cache=False, verbose=0)
    stages = [r["stage"] for r in rows(result.run_dir)]
    assert stages.count("head") == 3 and stages[-1] == "next"


class _Interrupt(Exception):
    pass


@pytest.mark.slow  # ~35 s; the default suite has the SIGKILL resume test
def test_resume_in_the_middle_of_a_cached_head_stage(shapes, tmp_path, monkeypatch):
    recipe = Recipe(stages=(Stage("head", "head", 3e-3, 5), Stage("finetune", "all", 1e-3, 2)), batch_size=8)
    run_dir = tmp_path / "run"
    original = RunCheckpoints.on_epoch_end

    def stop_after_three(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch + 1 == 3:
            raise _Interrupt()  # a crash right after epoch 3's checkpoint

    monkeypatch.setattr(RunCheckpoints, "on_epoch_end", stop_after_three)
    with pytest.raises(_Interrupt):
        train(load_data(shapes), run_dir, weights=None, image_size=SIZE, recipe=recipe,
              feature_cache=tmp_path / "cache", verbose=0, checkpoint_every=0)
    monkeypatch.setattr(RunCheckpoints, "on_epoch_end", original)
    before = rows(run_dir)
    assert len(before) == 3

    result = resume(run_dir, verbose=0)
    after = rows(result.run_dir)
    assert [int(r["epoch"]) for r in after] == list(range(1, 8))
    assert [r["stage"] for r in after] == ["head"] * 5 + ["finetune"] * 2
    assert after[:3] == before
    assert json.loads((run_dir / "run.json").read_text())["status"] == "done"


def test_resumed_adamw_keeps_decay_off_biases_and_normalization(tmp_path):
    from transfer.engine.schedules import no_decay_variables
    from transfer.engine.schedules import restore_weight_decay_exclusions, stage_optimizer

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.BatchNormalization(),
                              keras.layers.Dense(2, name="scores")])
    model.compile(optimizer=stage_optimizer(Recipe(), Stage("all", "all", 1e-3, 1), 2, model), loss="mse")
    model.fit(np.ones((4, 4)), np.ones((4, 2)), epochs=1, verbose=0)
    assert not model.optimizer._use_weight_decay(model.get_layer("scores").bias)
    model.save(tmp_path / "checkpoint.keras")
    model = keras.saving.load_model(tmp_path / "checkpoint.keras")
    optimizer = model.optimizer
    bias = model.get_layer("scores").bias
    kernel = model.get_layer("scores").kernel
    assert optimizer._use_weight_decay(bias)  # what Keras alone would do after a reload
    restore_weight_decay_exclusions(model)
    assert not optimizer._use_weight_decay(bias) and optimizer._use_weight_decay(kernel)
    assert all(not optimizer._use_weight_decay(v) for v in no_decay_variables(model))


def test_finetune_stage_warms_up_then_decays(shapes, tmp_path):
    from transfer.engine.schedules import stage_optimizer

    recipe = Recipe(warmup_epochs=1.0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    finetune = stage_optimizer(recipe, Stage("ft", "all", 1e-3, 4), 10, model)
    head = stage_optimizer(recipe, Stage("h", "head", 3e-3, 4), 10, model)
    lr = finetune.learning_rate_schedule if hasattr(finetune, "learning_rate_schedule") else finetune._learning_rate
    rates = [float(lr(step)) for step in (0, 5, 10, 25, 40)]
    assert rates[0] == 0.0 and rates[1] == pytest.approx(5e-4) and rates[2] == pytest.approx(1e-3)
    assert rates[2] > rates[3] > rates[4] and rates[4] == pytest.approx(1e-5)
    assert float(head._learning_rate(0)) == pytest.approx(3e-3)  # a new head needs no warmup
    assert isinstance(finetune, keras.optimizers.AdamW)


@pytest.mark.slow  # XLA-compiling a backbone on a 2-core CPU takes ~40 s
def test_bfloat16_precision_and_xla_train_and_record(shapes, tmp_path):
    recipe = Recipe(stages=(Stage("head", "head", 1e-3, 1), Stage("all", "all", 1e-3, 1)), batch_size=8)
    result = train(load_data(shapes), tmp_path / "run", weights=None, image_size=SIZE, recipe=recipe,
                   precision="bfloat16", xla=True, feature_cache=False, verbose=0)
    config = json.loads((result.run_dir / "run.json").read_text())
    assert config["precision"] == "mixed_bfloat16" and config["xla"] is True
    model = keras.saving.load_model(result.run_dir / "checkpoints" / "best.keras", compile=False)
    backbone = model.get_layer("backbone")
    assert {layer.compute_dtype for layer in backbone.layers if layer.weights} == {"bfloat16"}
    assert model.get_layer("scores").compute_dtype == "float32"
    assert all(np.isfinite(float(r["loss"])) for r in rows(result.run_dir))
    assert keras.config.dtype_policy().name == "float32"  # the global policy is left as it was


def test_precision_choices():
    from transfer.core.errors import TransferError
    from transfer.engine.precision import resolve_precision, with_loss_scaling

    assert resolve_precision("mixed", has_gpu=True).policy == "mixed_float16"
    assert resolve_precision("mixed", has_gpu=False, cpu_flags={"avx2", "amx_bf16"}).policy == "mixed_bfloat16"
    fallback = resolve_precision("mixed", has_gpu=False, cpu_flags={"avx2"})
    assert fallback.policy == "float32" and "no native bfloat16" in fallback.reason
    assert resolve_precision("float16").loss_scaling and not resolve_precision("bfloat16").loss_scaling
    with pytest.raises(TransferError, match="Unknown precision 'half'"):
        resolve_precision("half")
    optimizer = keras.optimizers.Adam()
    assert isinstance(with_loss_scaling(optimizer, resolve_precision("float16")), keras.optimizers.LossScaleOptimizer)
    assert with_loss_scaling(optimizer, resolve_precision("bfloat16")) is optimizer


def test_best_checkpoint_is_a_link_or_copy_that_outlives_its_source(tmp_path, monkeypatch):
    import os

    from transfer.core.atomic import atomic_link_or_copy

    source = tmp_path / "epoch-001.keras"
    source.write_bytes(b"model bytes")
    best = atomic_link_or_copy(source, tmp_path / "best.keras")
    assert os.path.samefile(source, best)
    source.unlink()
    assert best.read_bytes() == b"model bytes"

    source.write_bytes(b"other bytes")

    def no_links(*args):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    atomic_link_or_copy(source, best)
    assert best.read_bytes() == b"other bytes" and not os.path.samefile(source, best)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.keras", "epoch-001.keras"]
