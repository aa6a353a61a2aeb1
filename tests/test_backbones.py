"""The backbone registry against the real keras.applications architectures.

Every entry is built with random weights (no download) at its smallest input
size, and its feature layers, feature width, blocks and preprocessing are
checked against what Keras actually builds.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from transfer.backbones import STRIDES, get_backbone, list_backbones
from transfer.core.errors import TransferError

# Builds that take over ~5 s on a CPU core (weights=None still initializes
# 40M-350M parameters): together they would push this file past 3 minutes.
# Run them with `-m slow`.
SLOW = {"nasnetlarge", "efficientnetb6", "efficientnetb7", "efficientnetv2m", "efficientnetv2l", "convnext_xlarge"}
# Their stem is unnamed (Keras auto-names it, and the names depend on how many
# models were built before), so they have no stride-2 or stride-4 feature.
NO_STRIDE_4 = {"inceptionv3", "inceptionresnetv2"}
# ConvNeXt's stem is a 4x4 stride-4 conv: nothing exists at stride 2.
NO_STRIDE_2 = NO_STRIDE_4 | {f"convnext_{v}" for v in ("tiny", "small", "base", "large", "xlarge")}
# 'valid'-padded stems: feature sizes are off by a constant from size // stride.
INEXACT = {"inceptionv3", "inceptionresnetv2", "xception", "nasnetmobile", "nasnetlarge"}


def _params(names):
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in names]


NAMES = [spec.name for spec in list_backbones()]


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    import keras

    yield
    # Frees the graph of the model just built; the next build starts clean.
    keras.backend.clear_session()


def _spatial(tensor) -> int:
    assert tensor.shape[1] == tensor.shape[2], tensor.shape
    return tensor.shape[1]


@pytest.mark.parametrize("name", _params(NAMES))
def test_backbone_builds_with_named_features_blocks_and_width(name):
    spec = get_backbone(name)
    size = spec.min_size  # the smallest input Keras accepts must build
    model = spec.instantiate(None, (size, size, 3))

    # (a) every feature reference resolves, at the stride it claims.
    expected_strides = set(STRIDES) - ({4} if name in NO_STRIDE_4 else set()) - (
        {2} if name in NO_STRIDE_2 else set())
    assert set(spec.feature_layers) == expected_strides
    features = spec.features(model)
    sizes = {stride: _spatial(t) for stride, t in features.items()}
    if any(sizes[s] != size // s for s in sizes):
        # 'valid' padding (Inception, Xception, NASNet stems) shifts sizes by a constant:
        # measure the stride as d(input) / d(feature size) from a second build.
        # 64 is a multiple of every stride, so the difference is exact.
        model2 = spec.instantiate(None, (size + 64, size + 64, 3))
        sizes2 = {s: _spatial(t) for s, t in spec.features(model2).items()}
        measured = {s: 64 / (sizes2[s] - sizes[s]) for s in sizes}
        assert measured == {s: float(s) for s in sizes}, (sizes, sizes2)
        assert name in INEXACT, "unexpected inexact strides"
        # ... and never by more than the stem's few pixels (a skip is resized to ceil(S / stride)).
        assert all(abs(sizes[s] - size / s) < 3 for s in sizes), sizes

    # (b) the pooled feature width is what Keras builds.
    assert model.output_shape[-1] == spec.feature_dim
    assert features[32].shape[-1] == spec.feature_dim

    # (c) enough blocks to unfreeze "the top N", covering every layer once.
    blocks = spec.blocks(model)
    assert len(blocks) >= 4
    assert [n for block in blocks for n in block] == [layer.name for layer in model.layers]


@pytest.mark.parametrize("name", NAMES)
def test_preprocessing_matches_keras_family(name):
    import keras

    from transfer.backbones.layers import FamilyPreprocessing

    spec = get_backbone(name)
    images = np.random.default_rng(0).integers(0, 256, size=(2, 8, 8, 3), dtype=np.uint8)
    if spec.module == "keras.applications":
        family = getattr(keras.applications, spec.family)
        expected = family.preprocess_input(images.astype("float32"))  # Keras edits float arrays in place
    else:  # transfer's own from-scratch CNN scales to [-1, 1] ("tf" mode)
        assert spec.preprocessing == "tf"
        expected = images.astype("float32") / 127.5 - 1.0
    got = keras.ops.convert_to_numpy(FamilyPreprocessing(spec.preprocessing)(images))
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_names_are_unique_lowercase_and_cover_keras_applications():
    assert len(NAMES) == len(set(NAMES))
    assert all(n == n.lower() and n.strip() == n for n in NAMES)
    constructors = {spec.constructor for spec in list_backbones()}
    assert {"VGG16", "ResNet152V2", "InceptionResNetV2", "NASNetLarge", "EfficientNetV2L",
            "ConvNeXtXLarge", "MobileNetV3Small", "DenseNet201"} <= constructors
    assert len(NAMES) >= 50


def test_get_backbone_is_case_and_space_insensitive():
    assert get_backbone("ResNet50") is get_backbone("resnet50")
    assert get_backbone(" MobileNet_0.25 ").kwargs == {"alpha": 0.25}


def test_unknown_backbone_suggests_close_names():
    with pytest.raises(TransferError) as caught:
        get_backbone("resnet5")
    assert "'resnet50'" in caught.value.message
    assert "transfer backbones" in caught.value.fix


def test_stride_2_is_missing_only_where_no_layer_is_named():
    missing = {spec.name for spec in list_backbones() if 2 not in spec.feature_layers}
    assert missing == NO_STRIDE_2
    assert all(min(spec.feature_layers) == 4 for spec in list_backbones() if spec.name in NO_STRIDE_2 - NO_STRIDE_4)


def test_specs_are_frozen():
    spec = get_backbone("vgg16")
    with pytest.raises(AttributeError):
        spec.default_size = 1
    with pytest.raises(TypeError):
        spec.feature_layers[4] = "x"


def test_importing_the_registry_does_not_import_keras():
    code = "import sys, transfer.backbones; print('keras' in sys.modules or 'tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"



def test_smallcnn_trains_from_scratch_and_refuses_imagenet_weights(tmp_path):
    import keras

    from transfer.backbones.weights import build_backbone

    spec = get_backbone("smallcnn")
    assert not spec.pretrained and all(s.pretrained for s in list_backbones() if s.name != "smallcnn")
    with pytest.raises(TransferError) as caught:
        build_backbone(spec, "imagenet", 64)
    assert "no ImageNet weights" in caught.value.message and "--weights none" in caught.value.fix
    # A weights file it saved itself loads back.
    model, info = build_backbone(spec, None, 64)
    path = tmp_path / "smallcnn.weights.h5"
    model.save_weights(path)
    again, info2 = build_backbone(spec, str(path), 64)
    first, second = model.get_layer("block1_conv").kernel, again.get_layer("block1_conv").kernel
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(first), keras.ops.convert_to_numpy(second))
    assert info.source == "random" and info2.source != "random"
