"""Cached features: the cache key, stale caches, and head training on the cache."""

import os

import keras
import numpy as np
import pytest

from tests.imagefactory import write_image_folder
from tests.modelfactory import pretrained_like_classifier
from transfer.data import read_class_folders
from transfer.data.pipelines.images import make_dataset, targets_array
from transfer.core.errors import TransferError
from transfer.engine.feature_cache import extract_features, feature_cache_key, feature_model
from transfer.tasks.classify.head_fit import fit_head_on_features, head_model

SIZE = 32


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    write_image_folder(root, {"a": 6, "b": 6, "c": 6}, size=SIZE)
    return read_class_folders(root)


@pytest.fixture(scope="module")
def model():
    return pretrained_like_classifier(3, SIZE)


def test_features_are_the_pooled_backbone_output(model, samples):
    features = extract_features(model, samples, SIZE, batch_size=8)
    assert features.shape == (1, len(samples), model.get_layer("pool").output.shape[-1])
    assert features.dtype == np.float32
    images = np.concatenate([x for x, _ in make_dataset(samples, SIZE, 32, training=False)])
    expected = feature_model(model)(images, training=False).numpy()
    np.testing.assert_allclose(features[0], expected, rtol=1e-3, atol=2e-4)  # graph vs eager round-off
    assert np.abs(features).mean() > 1e-3  # real features, not BatchNorm-collapsed zeros


def test_augmented_views_are_reproducible_and_differ_from_the_plain_view(model, samples):
    a = extract_features(model, samples, SIZE, views=3, augment=("flip", "zoom"), seed=1)
    b = extract_features(model, samples, SIZE, views=3, augment=("flip", "zoom"), seed=1)
    plain = extract_features(model, samples, SIZE)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a[0], plain[0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(a[1], a[0]) and not np.allclose(a[1], a[2])


def test_cache_is_reused_for_identical_inputs(model, samples, tmp_path, monkeypatch):
    first = extract_features(model, samples, SIZE, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("features-*.npz"))) == 1
    import transfer.engine.feature_cache as features_module

    def fail(*args, **kwargs):
        raise AssertionError("recomputed although the cache holds these features")

    monkeypatch.setattr(features_module, "_compute", fail)
    np.testing.assert_array_equal(extract_features(model, samples, SIZE, cache_dir=tmp_path), first)


def test_cache_key_changes_with_every_input(model, samples, tmp_path):
    base, _ = feature_cache_key(model, samples, SIZE)
    assert feature_cache_key(model, samples, SIZE)[0] == base
    # Seed and augmentation do not matter without augmented views.
    assert feature_cache_key(model, samples, SIZE, augment=("flip",), seed=5)[0] == base
    changed = {
        "image size": feature_cache_key(model, samples, SIZE + 8)[0],
        "views": feature_cache_key(model, samples, SIZE, views=2, augment=("flip",))[0],
        "subset": feature_cache_key(model, samples.subset(range(len(samples) - 1)), SIZE)[0],
    }
    two = feature_cache_key(model, samples, SIZE, views=2, augment=("flip",), seed=0)[0]
    changed["augment"] = feature_cache_key(model, samples, SIZE, views=2, augment=("zoom",))[0]
    changed["seed"] = feature_cache_key(model, samples, SIZE, views=2, augment=("flip",), seed=1)[0]
    assert two == changed["views"]
    # A different model (other weights) and other preprocessing.
    other = pretrained_like_classifier(3, SIZE, seed=1)
    changed["weights"] = feature_cache_key(other, samples, SIZE)[0]
    keys = [base, changed["image size"], changed["views"], changed["subset"], changed["augment"],
            changed["seed"], changed["weights"]]
    assert len(set(keys)) == len(keys)


def test_a_stale_cache_is_never_used(samples, tmp_path):
    model = pretrained_like_classifier(3, SIZE)
    before = extract_features(model, samples, SIZE, cache_dir=tmp_path)
    # Changing one BatchNorm statistic changes the features: the key must follow.
    bn = next(l for l in model.get_layer("backbone").layers if isinstance(l, keras.layers.BatchNormalization))
    bn.moving_mean.assign(bn.moving_mean.numpy() + 0.5)
    after = extract_features(model, samples, SIZE, cache_dir=tmp_path)
    assert not np.allclose(before, after)
    np.testing.assert_allclose(after, extract_features(model, samples, SIZE), rtol=1e-5, atol=1e-6)
    assert len(list(tmp_path.glob("features-*.npz"))) == 2


def test_an_edited_image_file_invalidates_the_cache(model, tmp_path):
    root = tmp_path / "data"
    paths = write_image_folder(root, {"a": 3, "b": 3}, size=SIZE)
    samples = read_class_folders(root)
    cache = tmp_path / "cache"
    before = extract_features(model, samples, SIZE, cache_dir=cache)
    # Overwrite one image with another class's picture (new size and mtime).
    other = paths[-1].read_bytes()
    target = samples.sources[0]
    with open(target, "wb") as f:
        f.write(other)
    os.utime(target, ns=(1, 1))
    after = extract_features(model, samples, SIZE, cache_dir=cache)
    assert not np.allclose(before[0, 0], after[0, 0])
    np.testing.assert_allclose(after[0, 1:], before[0, 1:], rtol=1e-5, atol=1e-6)


def test_a_damaged_or_foreign_cache_file_is_recomputed(model, samples, tmp_path):
    good = extract_features(model, samples, SIZE, cache_dir=tmp_path)
    (path,) = tmp_path.glob("features-*.npz")
    path.write_bytes(b"not a zip file")
    np.testing.assert_allclose(extract_features(model, samples, SIZE, cache_dir=tmp_path), good)
    # A file under the right name but holding other features (hash collision, manual copy).
    np.savez(path, features=np.zeros_like(good), description=np.array('{"other": 1}'))
    np.testing.assert_allclose(extract_features(model, samples, SIZE, cache_dir=tmp_path), good)


def test_identical_models_built_twice_share_the_cache_key(samples):
    # Keras numbers unnamed layers by build order ("input_layer_3"): the key must not depend on it.
    first = feature_cache_key(pretrained_like_classifier(3, SIZE, seed=0), samples, SIZE)[0]
    assert feature_cache_key(pretrained_like_classifier(3, SIZE, seed=0), samples, SIZE)[0] == first


def test_views_without_augmentation_are_one_view(model, samples):
    assert extract_features(model, samples, SIZE, views=4).shape[0] == 1


def test_bad_views_is_a_clear_error(model, samples):
    with pytest.raises(TransferError, match="views"):
        extract_features(model, samples, SIZE, views=0)


def test_head_model_shares_the_classifier_head(model):
    head = head_model(model)
    assert head.get_layer("scores") is model.get_layer("scores")
    x = np.random.default_rng(0).normal(size=(4, model.get_layer("pool").output.shape[-1])).astype("float32")
    np.testing.assert_allclose(head(x).numpy(), model.get_layer("scores")(x).numpy(), rtol=1e-6)


def test_head_trained_on_the_cache_matches_training_through_the_model(samples):
    """Same data, optimizer and start, no dropout or augmentation: the same head weights."""
    from transfer.backbones import get_backbone
    from transfer.core.recipe import Stage
    from transfer.tasks.classify.model import loss_and_metrics
    from transfer.engine.freezing import set_trainable

    y = targets_array(samples)
    model = pretrained_like_classifier(3, SIZE, seed=0)
    model.get_layer("dropout").rate = 0.0
    start = model.get_weights()
    images = np.concatenate([x for x, _ in make_dataset(samples, SIZE, 32, training=False)])

    # One full batch per epoch, so the shuffling order cannot change the gradient.
    fit_head_on_features(model, extract_features(model, samples, SIZE), y, epochs=3, batch_size=len(samples),
                         optimizer=keras.optimizers.SGD(0.5))
    cached_head = model.get_layer("scores").get_weights()
    cached_scores = model(images, training=False).numpy()

    model.set_weights(start)
    set_trainable(model, get_backbone("mobilenet_0.25"), Stage("head", "head"))
    loss, metrics = loss_and_metrics(False)
    # Eager: three steps run faster than tracing the whole model.
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss=loss, metrics=metrics, run_eagerly=True)
    model.fit(images, y, batch_size=len(samples), epochs=3, shuffle=False, verbose=0)

    assert not np.allclose(cached_head[0], start[-2])  # it did train
    for a, b in zip(cached_head, model.get_layer("scores").get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(cached_scores, model(images, training=False).numpy(), rtol=1e-3, atol=1e-4)


def test_classifier_saves_and_reloads_after_head_training(model, samples, tmp_path):
    fit_head_on_features(model, extract_features(model, samples, SIZE), targets_array(samples), epochs=1)
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")
    images = np.concatenate([x for x, _ in make_dataset(samples, SIZE, 32, training=False)])
    np.testing.assert_allclose(again(images, training=False).numpy(), model(images, training=False).numpy(),
                               atol=1e-6)


def test_head_fit_learns_and_callbacks_see_the_classifier(model, samples, tmp_path):
    features = extract_features(model, samples, SIZE, views=2, augment=("flip",))
    y = targets_array(samples)
    seen = []

    class Spy(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append((self.model, epoch, dict(logs)))

    # As in train()'s head stage: the backbone is frozen, so the checkpoint's
    # optimizer state matches the classifier's trainable weights on reload.
    backbone = model.get_layer("backbone")
    flags = [layer.trainable for layer in backbone.layers]
    backbone.trainable = False
    # The callbacks train() passes: a checkpoint of the whole classifier and TensorBoard.
    checkpoint = keras.callbacks.ModelCheckpoint(tmp_path / "best.keras", monitor="val_accuracy", mode="max",
                                                 save_best_only=True)
    board = keras.callbacks.TensorBoard(log_dir=str(tmp_path / "logs"), write_graph=False)
    history = fit_head_on_features(model, features, y, epochs=3, initial_epoch=2, batch_size=4,
                                   optimizer=keras.optimizers.Adam(1e-2), validation=(features[0], y),
                                   callbacks=[Spy(), checkpoint, board])
    backbone.trainable = True
    for layer, flag in zip(backbone.layers, flags):
        layer.trainable = flag
    assert history.epoch == [2, 3, 4]
    assert keras.models.load_model(tmp_path / "best.keras").get_layer("backbone") is not None
    assert any((tmp_path / "logs").rglob("events.out.tfevents*"))
    assert [e for _, e, _ in seen] == [2, 3, 4]
    assert all(m is model for m, _, _ in seen)
    assert "val_accuracy" in seen[-1][2]
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_mismatched_features_and_targets_are_refused(model):
    with pytest.raises(ValueError, match="same N"):
        fit_head_on_features(model, np.zeros((1, 5, 256), "float32"), np.zeros((4, 3), "float32"), epochs=1)
