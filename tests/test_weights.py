"""Weights resolution: random, file, ImageNet from the Keras cache, offline errors, import.

No test touches the network: downloads are replaced by a stub that fails (or,
for the download path, copies a local file). The real ImageNet file comes from
the shared fixtures folder and is only ever copied into a temporary Keras home.
"""

from __future__ import annotations

import logging
import shutil
import urllib.error

import numpy as np
import pytest

from tests.conftest import require_fixture
from transfer.backbones import get_backbone
from transfer.core.errors import TransferError
from transfer.backbones.weights import (
    WeightsInfo,
    build_backbone,
    imagenet_file_name,
    is_keras_weights_name,
    keras_cache_dir,
)
from transfer.backbones.weights_import import import_weights

FIXTURE_WEIGHTS = "weights/mobilenet_2_5_224_tf_no_top.h5"


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    import keras

    yield
    keras.backend.clear_session()


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    """A temporary, empty Keras home; returns its ``models`` cache folder.

    Keras fixes its home at import (from $KERAS_HOME), and ``keras_home()``
    reads this module global at call time, so patching it redirects the cache.
    """
    home = tmp_path / "keras_home"
    home.mkdir()
    monkeypatch.setattr("keras.src.backend.config._KERAS_DIR", str(home))
    return home / "models"


@pytest.fixture
def offline(monkeypatch):
    """Every Keras download fails as it does without network; returns the URLs asked for."""
    asked = []

    def fail(url, *args, **kwargs):
        asked.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("keras.src.utils.file_utils.urlretrieve", fail)
    return asked


@pytest.fixture(scope="session")
def fixture_weights(fixtures_dir):
    return require_fixture(fixtures_dir / FIXTURE_WEIGHTS)


def _tiny_h5(path, value=1.0):
    import h5py

    with h5py.File(path, "w") as f:
        f.create_dataset("w", data=np.full((2, 2), value, "float32"))
    return path


def _features(model, images):
    from transfer.backbones.layers import FamilyPreprocessing

    return np.asarray(model(FamilyPreprocessing("tf")(images), training=False))


# --- random and file weights --------------------------------------------------------------------


@pytest.mark.parametrize("weights", [None, "none", "Random"])
def test_random_weights(weights, caplog):
    caplog.set_level(logging.INFO, logger="transfer.backbones.weights")
    model, info = build_backbone(get_backbone("mobilenet_0.25"), weights, 64)
    assert model.output_shape == (None, 2, 2, 256)
    assert info == WeightsInfo("random", None, "Random weights (no pretraining)")
    assert "Random weights" in caplog.text


def test_image_size_below_the_minimum_is_a_clear_error():
    with pytest.raises(TransferError) as caught:
        build_backbone(get_backbone("inceptionv3"), None, 64)
    assert "64 px" in caught.value.message and "75" in caught.value.message
    assert "75" in caught.value.fix


def test_image_size_must_be_an_int():
    with pytest.raises(TypeError, match="image_size"):
        build_backbone(get_backbone("vgg16"), None, "64")


def test_missing_weights_file(tmp_path):
    missing = tmp_path / "nope.weights.h5"
    with pytest.raises(TransferError, match="not found") as caught:
        build_backbone(get_backbone("mobilenet_0.25"), missing, 64)
    assert str(missing) in caught.value.message


def test_garbage_weights_file(tmp_path):
    garbage = tmp_path / "download.h5"
    garbage.write_bytes(b"<html>404 Not Found</html>")
    with pytest.raises(TransferError, match="not a valid Keras weights file") as caught:
        build_backbone(get_backbone("mobilenet_0.25"), garbage, 64)
    assert str(garbage) in caught.value.message


def test_unknown_weights_extension(tmp_path):
    odd = tmp_path / "weights.bin"
    odd.write_bytes(b"x")
    with pytest.raises(TransferError, match="unknown type"):
        build_backbone(get_backbone("mobilenet_0.25"), odd, 64)


@pytest.mark.parametrize("file_name", ["tiny.weights.h5", "tiny_legacy.h5"])
def test_weights_of_another_architecture(tmp_path, file_name):
    import keras

    tiny = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    path = tmp_path / file_name
    if file_name.endswith(".weights.h5"):
        tiny.save_weights(path)  # Keras 3 format
    else:
        from keras.src.legacy.saving import legacy_h5_format

        legacy_h5_format.save_model_to_hdf5(tiny, str(path))  # Keras 2 format, as applications' files
    with pytest.raises(TransferError) as caught:
        build_backbone(get_backbone("mobilenet_0.25"), path, 64)
    assert str(path) in caught.value.message and "mobilenet_0.25" in caught.value.message
    assert "same backbone" in caught.value.fix


def test_weights_saved_from_the_same_backbone_load(tmp_path):
    spec = get_backbone("mobilenet_0.25")
    source, _ = build_backbone(spec, None, 64)
    path = tmp_path / "backbone.weights.h5"
    source.save_weights(path)
    model, info = build_backbone(spec, str(path), 96)  # weights do not depend on the input size
    assert (info.source, info.path) == ("file", str(path))
    for a, b in zip(source.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


# --- ImageNet: cache, download, offline ---------------------------------------------------------


def test_keras_cache_dir_follows_keras_home(tmp_path, monkeypatch, keras_home):
    assert keras_cache_dir() == keras_home
    # Like keras.utils.get_file: an unwritable (here: missing) home falls back to /tmp.
    monkeypatch.setattr("keras.src.backend.config._KERAS_DIR", str(tmp_path / "missing"))
    assert keras_cache_dir().as_posix().endswith("/.keras/models")
    assert not keras_cache_dir().is_relative_to(tmp_path)


# One small member per keras.applications family: the name transfer predicts
# is the one Keras asks for, and the offline error says how to get it.
@pytest.mark.parametrize(
    "name",
    ["vgg16", "resnet50", "resnet50v2", "inceptionv3", "xception", "mobilenet_0.25", "mobilenetv2_0.35",
     "mobilenetv3small_minimalistic", "densenet121", "nasnetmobile", "efficientnetb0", "efficientnetv2b0",
     "convnext_tiny", pytest.param("inceptionresnetv2", marks=pytest.mark.slow)],
)
def test_offline_imagenet_names_the_file_the_url_and_the_import_command(name, keras_home, offline):
    spec = get_backbone(name)
    with pytest.raises(TransferError) as caught:
        build_backbone(spec, "imagenet", spec.min_size)
    [url] = offline
    wanted = imagenet_file_name(spec)
    assert is_keras_weights_name(wanted)
    assert url.endswith(wanted) or name == "nasnetmobile"  # NASNet's download has another name
    message = caught.value.message
    assert wanted in message and url in message and str(keras_home) in message
    assert "name resolution" in message
    assert f"transfer weights import {url.rsplit('/', 1)[1]}" in caught.value.fix
    assert not any(keras_home.iterdir()), "Keras must not leave a partial download behind"


def test_offline_with_a_stale_cached_file_says_so(keras_home, offline):
    spec = get_backbone("resnet50")
    keras_home.mkdir(parents=True)
    _tiny_h5(keras_home / imagenet_file_name(spec))  # wrong checksum: Keras wants to re-download
    with pytest.raises(TransferError, match="does not match Keras's checksum"):
        build_backbone(spec, "imagenet", 32)


@pytest.mark.fixtures
@pytest.mark.parametrize("image_size", [128, 224])
def test_imagenet_from_the_cache_matches_keras(image_size, fixture_weights, keras_home, offline, caplog):
    import keras

    caplog.set_level(logging.INFO, logger="transfer.backbones.weights")
    dest = import_weights(fixture_weights)  # into the temporary Keras home
    assert dest == keras_home / fixture_weights.name

    model, info = build_backbone(get_backbone("mobilenet_0.25"), "imagenet", image_size)
    assert offline == [], "must not touch the network"
    assert (info.source, info.path) == ("imagenet-cache", str(dest))
    assert "Keras cache" in info.message and "Keras cache" in caplog.text

    reference = keras.applications.MobileNet(
        alpha=0.25, include_top=False, weights=str(fixture_weights), input_shape=(image_size, image_size, 3)
    )
    images = np.random.default_rng(0).integers(0, 256, (2, image_size, image_size, 3), dtype=np.uint8)
    np.testing.assert_allclose(_features(model, images), _features(reference, images), atol=1e-5)


@pytest.mark.fixtures
def test_weights_file_path_loads_the_same_features(fixture_weights, keras_home, offline):
    import keras

    model, info = build_backbone(get_backbone("mobilenet_0.25"), fixture_weights, 128)
    assert (info.source, info.path) == ("file", str(fixture_weights))
    reference = keras.applications.MobileNet(
        alpha=0.25, include_top=False, weights=str(fixture_weights), input_shape=(128, 128, 3)
    )
    images = np.random.default_rng(1).integers(0, 256, (2, 128, 128, 3), dtype=np.uint8)
    np.testing.assert_allclose(_features(model, images), _features(reference, images), atol=1e-5)


@pytest.mark.fixtures
def test_imagenet_download_is_reported(fixture_weights, keras_home, monkeypatch):
    def fake_download(url, target, *args, **kwargs):
        assert url.endswith(fixture_weights.name)
        shutil.copyfile(fixture_weights, target)

    monkeypatch.setattr("keras.src.utils.file_utils.urlretrieve", fake_download)
    _, info = build_backbone(get_backbone("mobilenet_0.25"), "imagenet", 224)
    assert (info.source, info.path) == ("imagenet-download", str(keras_home / fixture_weights.name))


# --- import_weights -----------------------------------------------------------------------------


def test_import_weights_copies_atomically_under_the_keras_name(tmp_path):
    cache = tmp_path / "cache"
    source = _tiny_h5(tmp_path / "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
    dest = import_weights(source, cache_dir=cache)
    assert dest == cache / source.name
    assert dest.read_bytes() == source.read_bytes()
    assert [p.name for p in cache.iterdir()] == [source.name], "no temporary file left behind"
    assert import_weights(source, cache_dir=cache) == dest  # same content again: a no-op


def test_import_weights_refuses_to_replace_a_different_file(tmp_path):
    cache = tmp_path / "cache"
    name = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    import_weights(_tiny_h5(tmp_path / "a" / name, 1.0), cache_dir=cache)
    newer = _tiny_h5(tmp_path / "b" / name, 2.0)
    with pytest.raises(TransferError, match="already in the cache") as caught:
        import_weights(newer, cache_dir=cache)
    assert "overwrite" in caught.value.fix
    assert import_weights(newer, cache_dir=cache, overwrite=True).read_bytes() == newer.read_bytes()


def test_import_weights_refuses_non_hdf5_and_missing_files(tmp_path):
    page = tmp_path / "efficientnetb0_notop.h5"
    page.write_text("<html>Access denied</html>")
    with pytest.raises(TransferError, match="not HDF5"):
        import_weights(page, cache_dir=tmp_path / "cache")
    with pytest.raises(TransferError, match="not found"):
        import_weights(tmp_path / "missing.h5", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_import_weights_renames_nasnet_and_warns_on_unknown_names(tmp_path, caplog):
    cache = tmp_path / "cache"
    nasnet = _tiny_h5(tmp_path / "NASNet-mobile-no-top.h5")
    assert import_weights(nasnet, cache_dir=cache).name == "nasnet_mobile_no_top.h5"
    with caplog.at_level(logging.WARNING, logger="transfer.backbones.weights"):
        import_weights(_tiny_h5(tmp_path / "my_weights.h5"), cache_dir=cache)
    assert "not a file name keras.applications looks for" in caplog.text


def test_known_keras_weight_names():
    assert is_keras_weights_name("mobilenet_2_5_224_tf_no_top.h5")
    assert is_keras_weights_name("efficientnetv2-s_notop.h5")
    assert is_keras_weights_name("/some/where/convnext_xlarge_notop.h5")
    assert not is_keras_weights_name("mobilenet_2_5_224_tf_no_top.h5.part")
    assert not is_keras_weights_name("best.weights.h5")
