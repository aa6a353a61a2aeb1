"""Property-based tests (hypothesis) on everything that parses untrusted input.

Bounded and reproducible: ``derandomize=True`` makes every run try the same
examples, and each test caps its examples so the suite stays fast.

- image headers and decoding: any bytes give an ``ImageHeader`` or a
  ``ValueError``; for damaged real images the data doctor agrees with
  TensorFlow's decoder (usable exactly when it decodes), and a header never
  declares fewer pixels than the decoder produces (so the size limit, checked
  from headers, cannot be dodged);
- CSV label files: any text gives samples inside the dataset folder or a
  ``TransferError``;
- recipes (TOML): any document gives a valid ``Recipe`` or a ``TransferError``;
- the byte-input serving path: any bytes give scores or a ``TransferError``
  (``predict_bytes``), and the SavedModel signature fails cleanly.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from transfer.core import imagesize
from transfer.data.doctor import inspect_image
from transfer.data.sources.csvfile import is_inside, read_csv_dataset
from transfer.data.samples import DataSplit
from transfer.core.errors import TransferError

FUZZ = settings(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow], database=None)


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _seed_images() -> list[bytes]:
    rng = np.random.default_rng(0)
    pixels = Image.fromarray(rng.integers(0, 256, (19, 27, 3), dtype=np.uint8))
    return [
        _encode(pixels, "JPEG", quality=85),
        _encode(pixels, "JPEG", progressive=True),
        _encode(pixels.convert("L"), "JPEG"),
        _encode(pixels, "PNG"),
        _encode(pixels.convert("P"), "PNG", transparency=3),
        _encode(pixels, "GIF"),
        _encode(pixels, "BMP"),
        _encode(pixels, "WEBP", quality=70),
        _encode(pixels, "WEBP", lossless=True),
    ]


SEEDS = _seed_images()


@st.composite
def damaged_images(draw) -> bytes:
    """A real image with a few random cuts, flips, overwrites or insertions (or none)."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["truncate", "flip", "overwrite", "insert"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "truncate":
            del data[at:]
        elif kind == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=16))
            data[at : at + len(chunk)] = chunk
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
    return bytes(data)


# ---------------------------------------------------------------- image headers and decoding


@settings(FUZZ, max_examples=300)
@given(st.binary(max_size=200) | st.builds(lambda seed, n: seed[:n], st.sampled_from(SEEDS), st.integers(0, 120)))
def test_header_parsing_never_fails_otherwise(data):
    kind = imagesize.sniff(data)
    assert kind is None or isinstance(kind, str)
    try:
        header = imagesize.read_header(data)
    except ValueError:
        return
    assert header.width > 0 and header.height > 0 and header.format in imagesize.DECODABLE


@settings(FUZZ, max_examples=150)
@given(damaged_images())
def test_the_doctor_agrees_with_tensorflow(data):
    import tensorflow as tf

    info = inspect_image("fuzz.bin", data)
    try:
        decoded = tf.io.decode_image(data, channels=3, expand_animations=False).numpy()
    except (tf.errors.OpError, ValueError):
        decoded = None
    if decoded is None:
        assert info.error is not None  # never "usable" when training would fail on it
        return
    # Decodable: usable, unless refused on purpose (a variant named as unsupported).
    assert info.error is None or info.error[0] == "unsupported_format", info.error
    header = imagesize.read_header(data)
    # The size limit reads headers: they must never understate what decoding produces.
    assert decoded.shape[0] * decoded.shape[1] <= header.pixels
    if info.error is None:
        assert (info.height, info.width) == decoded.shape[:2]


# ---------------------------------------------------------------- CSV label files


@pytest.fixture(scope="module")
def csv_root():
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        (root / "img").mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (12, 12), (60 * i, 30, 90)).save(root / "img" / f"{i}.png")
        (Path(tmp) / "secret.png").write_bytes((root / "img" / "0.png").read_bytes())
        yield root


CELLS = st.sampled_from(
    ["img/0.png", "img/1.png", "./img/2.png", "img/3.png", "img/../img/1.png", "../secret.png", "img/none.png",
     "cat", "dog", "cat;dog", " ; ", "", "train", "val", "validation", "test", "\"a,b\"", "é", "\x00", "  "]
) | st.text(max_size=8)


@settings(FUZZ, max_examples=120)
@given(
    header=st.lists(st.sampled_from(["path", "label", "labels", "split", "PATH", "Label", "extra", ""]), max_size=4),
    rows=st.lists(st.lists(CELLS, max_size=4), max_size=8),
    raw=st.one_of(st.none(), st.text(max_size=60)),
)
@example(header=["path", "label"], rows=[["../secret.png", "a"], ["img/0.png", "b"]], raw=None)
def test_csv_reader_gives_samples_inside_the_root_or_a_transfer_error(csv_root, header, rows, raw):
    if raw is None:
        raw = "\n".join(",".join(cells) for cells in [header, *rows])
    path = csv_root / "labels.csv"
    path.write_text(raw, encoding="utf-8")
    try:
        split = read_csv_dataset(path, val_fraction=0.5)
    except TransferError as e:
        assert str(path) in e.message and e.fix
        return
    assert isinstance(split, DataSplit)
    for source in split.train.sources + split.val.sources:
        assert os.path.isfile(source) and is_inside(csv_root, source), source


# ---------------------------------------------------------------- recipes


TOML_VALUES = st.recursive(
    st.none().map(lambda _: "") | st.booleans() | st.integers(-10, 10**6) | st.floats(allow_nan=True)
    | st.text(max_size=10) | st.sampled_from(["head", "all", "top:2", "top:0", "adam", "sgd", "flip"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(
        st.sampled_from(["name", "trainable", "learning_rate", "epochs", "patience", "x"]), children, max_size=4),
    max_leaves=8,
)
RECIPE_KEYS = ["stages", "batch_size", "dropout", "label_smoothing", "optimizer", "weight_decay", "augment", "seed",
               "class_weight", "unknown"]


@settings(FUZZ, max_examples=200)
@given(st.dictionaries(st.sampled_from(RECIPE_KEYS), TOML_VALUES, max_size=5) | st.text(max_size=80))
@example("stages = 5")
def test_recipe_parser_gives_a_valid_recipe_or_a_transfer_error(document):
    import tomli_w

    from transfer.core.recipe import Recipe

    if isinstance(document, dict):
        try:
            document = tomli_w.dumps({k: v for k, v in document.items() if v != ""})
        except (TypeError, ValueError):
            return  # not representable in TOML (e.g. None inside a list)
    try:
        recipe = Recipe.from_toml(document, origin="fuzz.toml")
    except TransferError as e:
        assert e.message and e.fix
        return
    for stage in recipe.stages:
        assert isinstance(stage.name, str)
        assert isinstance(stage.epochs, int) and not isinstance(stage.epochs, bool) and stage.epochs >= 0
        assert 0 < stage.learning_rate < float("inf")


# ---------------------------------------------------------------- the byte-input serving path


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    from tests.test_export_predict import CLASSES, SIZE, tiny_classifier
    from transfer.serving.export import export_model
    from transfer.tasks.classify.reader import ExportedClassifier

    out = export_model(tiny_classifier(), tmp_path_factory.mktemp("fuzz") / "export", class_names=CLASSES,
                       image_size=SIZE)
    return ExportedClassifier.load(out, max_pixels=2_000_000)


def _tf_decodes(data: bytes) -> bool:
    """Whether TensorFlow's decoder, the serving graph's op, reads ``data`` (the reference)."""
    import tensorflow as tf

    try:
        tf.io.decode_image(data, channels=3, expand_animations=False)
    except (tf.errors.OpError, ValueError):
        return False
    return True


@settings(FUZZ, max_examples=60)
@given(st.lists(damaged_images() | st.binary(max_size=64), min_size=1, max_size=3))
def test_serving_bytes_answers_or_names_the_bad_inputs(classifier, images):
    import re

    import tensorflow as tf

    refused = {i for i, data in enumerate(images) if classifier._refuse(data) is not None}
    undecodable = {i for i, data in enumerate(images) if i not in refused and not _tf_decodes(data)}
    try:
        scores = classifier.predict_bytes(images)
    except TransferError as e:
        # The header checks run first and stop there; otherwise the undecodable ones are named.
        named = re.search(r"positions \[([\d, ]*)\]", e.message)
        assert named is not None, e.message
        assert {int(v) for v in named.group(1).split(",")} == (refused or undecodable), e.message
    else:
        assert not refused and not undecodable
        # A softmax classifier: one probability row per image.
        assert scores.shape == (len(images), len(classifier.class_names))
        np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)
    # The raw signature (what TF Serving runs): an answer exactly when TensorFlow decodes every
    # image, else a clean op error, never a crash.
    small = [data for i, data in enumerate(images) if i not in refused]  # no bombs into the raw graph
    if not small:
        return
    if any(i in undecodable for i in range(len(images))):
        with pytest.raises(tf.errors.OpError):
            classifier._serve(image_bytes=tf.constant(small))
    else:
        out = classifier._serve(image_bytes=tf.constant(small))
        # The same scores as predict_bytes gives these images (one graph, one batch).
        np.testing.assert_allclose(out["scores"].numpy(), classifier.predict_bytes(small), atol=1e-6)
