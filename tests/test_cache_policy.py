"""The image cache policy (memory / disk / none) and the datasets built with it."""

import gc
import json
from collections import namedtuple

import numpy as np
import pytest

from tests.imagefactory import write_image_folder
from transfer.data import load_data, read_class_folders
from transfer.data.pipelines import cache_policy
from transfer.data.pipelines import images as pipeline
from transfer.data.pipelines.cache_policy import CacheDecision, choose_image_cache, image_cache_bytes, memory_budget
from transfer.data.pipelines.images import make_dataset, shuffle_buffer_size
from transfer.core.errors import TransferError

SIZE = 32
ENV = "TRANSFER_MEMORY_CACHE_MB"


@pytest.fixture(autouse=True)
def real_disk(monkeypatch):
    """Tests see a normal disk whatever the machine's temp folder is (tmpfs or not)."""
    monkeypatch.setattr(cache_policy, "_is_tmpfs", lambda path: False)
    monkeypatch.delenv(ENV, raising=False)


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    write_image_folder(root, {"a": 7, "b": 6, "c": 6}, size=40)
    return read_class_folders(root)


def test_estimate_is_uint8_pixels():
    assert image_cache_bytes(1000, 224) == 1000 * 224 * 224 * 3


def test_memory_under_budget(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV, "100")
    decision = choose_image_cache(1000, 128, cache_dir=tmp_path)
    assert decision.mode == "memory"
    assert decision.budget_bytes == 100 * 2**20 and decision.estimated_bytes == 1000 * 128 * 128 * 3
    assert decision.describe() == "memory (49.2 MB of a 104.9 MB budget)"


def test_disk_over_budget_names_the_env_var(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV, "10")
    decision = choose_image_cache(1000, 128, cache_dir=tmp_path)
    assert (decision.mode, decision.path) == ("disk", str(tmp_path))
    assert decision.describe().startswith(f"disk in {tmp_path} (49.2 MB would exceed the 10.5 MB memory budget")
    assert ENV in decision.reason


def test_none_when_the_disk_lacks_space_or_is_memory(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV, "0")
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(cache_policy.shutil, "disk_usage", lambda path: usage(10**9, 10**9, 10**6))
    decision = choose_image_cache(1000, 128, cache_dir=tmp_path)
    assert decision.mode == "none" and "free" in decision.reason
    monkeypatch.setattr(cache_policy, "_is_tmpfs", lambda path: True)
    assert "tmpfs" in choose_image_cache(1000, 128, cache_dir=tmp_path).reason


def test_default_budget_is_a_fraction_of_available_memory(monkeypatch):
    monkeypatch.setattr(cache_policy, "available_memory", lambda: 10 * 2**30)
    assert memory_budget() == int(10 * 2**30 * cache_policy.MEMORY_FRACTION)
    monkeypatch.undo()
    assert cache_policy.available_memory() > 0  # the real one: /proc/meminfo, sysconf, cgroup


def test_explicit_argument_wins_over_the_budget(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV, "0")
    assert choose_image_cache(1000, 128, cache="memory").mode == "memory"
    assert choose_image_cache(1000, 128, cache=False).mode == "none"
    assert choose_image_cache(1000, 128, cache="disk", cache_dir=tmp_path).path == str(tmp_path)
    assert choose_image_cache(10, 8, cache=True, cache_dir=tmp_path).mode == "disk"  # True = auto
    given = CacheDecision("none", 1, 2, "mine")
    assert choose_image_cache(1000, 128, cache=given) is given
    with pytest.raises(TransferError, match="not an image cache mode"):
        choose_image_cache(10, 8, cache="ram")


@pytest.mark.parametrize("value", ["lots", "-5", "inf", "nan", "8GB"])
def test_bad_env_values_are_clear_errors(monkeypatch, value):
    monkeypatch.setenv(ENV, value)
    with pytest.raises(TransferError) as info:
        choose_image_cache(10, 32)
    assert ENV in info.value.message and info.value.fix and "megabytes" in info.value.message


def _batches(ds, epochs=2):
    return [(x.numpy(), y.numpy()) for _ in range(epochs) for x, y in ds]


@pytest.mark.parametrize("training", [True, False])
def test_disk_cache_gives_the_same_batches_as_memory(samples, tmp_path, training):
    kwargs = dict(training=training, augment=("flip", "zoom") if training else (), seed=3)
    memory = _batches(make_dataset(samples, SIZE, 4, cache="memory", **kwargs))
    disk = _batches(make_dataset(samples, SIZE, 4, cache="disk", cache_dir=tmp_path, **kwargs))
    none = _batches(make_dataset(samples, SIZE, 4, cache="none", **kwargs))
    assert len(memory) == 2 * -(-len(samples) // 4)
    for a, b, c in zip(memory, disk, none):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_array_equal(a[0], c[0])
    if training:  # reshuffled each epoch
        half = len(memory) // 2
        assert not all(np.array_equal(memory[i][1], memory[half + i][1]) for i in range(half))


def test_disk_cache_lives_in_its_own_folder_and_is_removed_with_the_dataset(samples, tmp_path):
    ds = make_dataset(samples, SIZE, 4, training=True, cache="disk", cache_dir=tmp_path)
    _batches(ds, epochs=1)
    folders = list(tmp_path.glob(".image-cache-*"))
    assert len(folders) == 1 and sorted(p.name for p in folders[0].iterdir()) == [
        "images.data-00000-of-00001", "images.index"]
    del ds
    gc.collect()
    assert not list(tmp_path.iterdir())


def test_a_killed_runs_disk_cache_is_removed_by_the_next_one(samples, tmp_path):
    dead = tmp_path / ".image-cache-999999999-abc"  # no such process
    dead.mkdir()
    (dead / "images.index").write_bytes(b"x")
    ds = make_dataset(samples, SIZE, 4, training=False, cache="disk", cache_dir=tmp_path)
    assert not dead.exists() and len(list(tmp_path.glob(".image-cache-*"))) == 1
    del ds


def test_auto_follows_the_budget(samples, tmp_path, monkeypatch):
    monkeypatch.setenv(ENV, "0")
    ds = make_dataset(samples, SIZE, 4, training=False, cache_dir=tmp_path)
    _batches(ds, epochs=1)
    assert list(tmp_path.glob(".image-cache-*"))
    del ds
    gc.collect()
    monkeypatch.setenv(ENV, "100")
    _batches(make_dataset(samples, SIZE, 4, training=False, cache_dir=tmp_path), epochs=1)
    assert not list(tmp_path.iterdir())


def test_shuffle_buffer_is_bounded_and_large_sets_are_mixed_before_caching(samples, monkeypatch):
    assert shuffle_buffer_size(50, 224) == 50
    assert shuffle_buffer_size(10**6, 128) == 10_000
    assert shuffle_buffer_size(10**6, 224) * 224 * 224 * 3 <= 2**30
    assert shuffle_buffer_size(10**6, 2000) == 1_000
    # Files listed class by class and a buffer smaller than the set: the first batch still mixes classes.
    monkeypatch.setattr(pipeline, "SHUFFLE_IMAGES", 2)
    _, targets = next(iter(make_dataset(samples, SIZE, 8, training=True, cache="disk")))
    assert len(set(targets.numpy().argmax(1))) > 1


def test_features_of_several_views_match_whatever_the_cache(samples, monkeypatch):
    from tests.modelfactory import pretrained_like_classifier
    from transfer.engine.feature_cache import extract_features

    model = pretrained_like_classifier(3, SIZE)
    monkeypatch.setenv(ENV, "100")
    in_memory = extract_features(model, samples, SIZE, batch_size=8, views=2, augment=("flip",), seed=1)
    monkeypatch.setenv(ENV, "0")
    on_disk = extract_features(model, samples, SIZE, batch_size=8, views=2, augment=("flip",), seed=1)
    np.testing.assert_array_equal(in_memory, on_disk)
    assert in_memory.shape[:2] == (2, len(samples)) and in_memory.dtype == np.float32


@pytest.mark.slow  # a whole (tiny) training run: ~35 s on two CPU cores
def test_train_reports_and_records_the_image_cache(tmp_path, monkeypatch, capsys):
    from transfer.cli.demo import make_shapes_dataset
    from transfer.core.recipe import Recipe, Stage
    from transfer.engine.train import train

    shapes = make_shapes_dataset(tmp_path / "shapes", train_per_class=4, val_per_class=2, size=SIZE)
    monkeypatch.setenv(ENV, "0")
    recipe = Recipe(stages=(Stage("top", "top:1", 1e-4, 1),), batch_size=8)
    out = tmp_path / "run"
    train(load_data(shapes), out, backbone="mobilenet_0.25", weights=None, image_size=SIZE, recipe=recipe,
          verbose=2)
    gc.collect()
    printed = capsys.readouterr().out
    assert f"Image cache: disk in {out} (" in printed and "would exceed the 0.0 MB memory budget" in printed
    config = json.loads((out / "run.json").read_text())
    assert config["image_cache"]["mode"] == "disk" and config["image_cache"]["path"] == str(out)
    assert not list(out.glob(".image-cache-*"))
