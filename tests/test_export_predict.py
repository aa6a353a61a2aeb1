"""Export, serving signatures, prediction from the export alone, and atomic writes.

The models here are tiny hand-built classifiers with the same contract as
``build_classifier`` (uint8 [S, S, 3] -> FamilyPreprocessing -> conv -> scores),
so every test runs in seconds on a CPU.
"""

from __future__ import annotations

import ast
import base64
import io
import json
import os
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from transfer.core.atomic import (
    atomic_save_keras,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
)
from transfer.core.atomic_folder import atomic_directory
from transfer.core.errors import TransferError
from transfer.serving.export import export_model
from transfer.core.imageops import decode_and_resize, resize_image
from transfer.backbones.layers import FamilyPreprocessing
from transfer.tasks.classify.reader import ExportedClassifier, rank_scores

SIZE = 16
CLASSES = ["cat", "dog", "fox"]
RECIPE = 'backbone = "tiny"\nimage_size = 16\n'
OUTPUT_NAMES = {"scores", "class_names", "top_class", "top_score"}


def tiny_classifier(num_classes=3, activation="softmax", mode="caffe"):
    """uint8 [S, S, 3] -> FamilyPreprocessing -> conv/BN -> pool -> dropout -> dense.

    "caffe" preprocessing (channel flip + mean subtraction) so a graph that
    skipped the layer could not match. The dense kernel is large so scores
    differ clearly between images and parity checks are not trivially met.
    """
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3), dtype="uint8", name="image")
    x = FamilyPreprocessing(mode, name="preprocess")(inputs)
    x = keras.layers.Conv2D(4, 3, strides=2, activation="relu")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(0.5, name="dropout")(x)
    init = keras.initializers.RandomNormal(stddev=0.01)
    outputs = keras.layers.Dense(
        num_classes, activation=activation, kernel_initializer=init, dtype="float32", name="scores"
    )(x)
    return keras.Model(inputs, outputs)


def synthetic_pixels(h, w, seed):
    """Smooth colour gradients plus noise: survives JPEG and gives distinct scores."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (h + w)], axis=-1)
    noisy = base + rng.normal(0, 30, size=(h, w, 3)) + rng.integers(0, 120)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def encode(pixels, fmt):
    image = Image.fromarray(pixels)
    buf = io.BytesIO()
    if fmt == "jpeg":
        image.save(buf, "JPEG", quality=90)
    elif fmt == "jpeg_gray":
        image.convert("L").save(buf, "JPEG", quality=90)
    elif fmt == "png":
        image.save(buf, "PNG")
    elif fmt == "png_rgba":
        image.convert("RGBA").save(buf, "PNG")
    elif fmt == "gif":
        image.save(buf, "GIF")
    elif fmt == "bmp":
        image.save(buf, "BMP")
    else:
        raise ValueError(fmt)
    return buf.getvalue()


FORMATS = ("jpeg", "jpeg_gray", "png", "png_rgba", "gif", "bmp")
SUFFIX = {"jpeg": ".jpg", "jpeg_gray": ".jpg", "png": ".png", "png_rgba": ".png", "gif": ".gif", "bmp": ".bmp"}


def keras_scores(model, encoded_list):
    """What the Keras model says about the pixels training would have fed it."""
    images = np.stack([decode_and_resize(tf.constant(b), SIZE).numpy() for b in encoded_list])
    return np.asarray(model(images, training=False))


@pytest.fixture(scope="module")
def model():
    return tiny_classifier()


@pytest.fixture(scope="module")
def export_dir(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("exports") / "tiny"
    return export_model(
        model, out, class_names=CLASSES, image_size=SIZE, recipe_toml=RECIPE, metadata={"backbone": "tiny"}
    )


@pytest.fixture(scope="module")
def loaded(export_dir):
    return tf.saved_model.load(str(export_dir))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """format -> (path, bytes); sizes differ from SIZE and from each other."""
    folder = tmp_path_factory.mktemp("images")
    shapes = [(23, 31), (40, 20), (16, 16), (37, 45), (30, 30), (19, 50)]
    out = {}
    for seed, (fmt, (h, w)) in enumerate(zip(FORMATS, shapes)):
        data = encode(synthetic_pixels(h, w, seed), fmt)
        path = folder / f"img_{fmt}{SUFFIX[fmt]}"
        path.write_bytes(data)
        out[fmt] = (path, data)
    return out


# ---------------------------------------------------------------- the SavedModel


def test_export_folder_layout(export_dir):
    for rel in ("saved_model.pb", "variables", "model.keras", "assets/class_names.txt",
                "assets/recipe.toml", "assets/transfer.json"):  # fmt: skip
        assert (export_dir / rel).exists(), rel
    # The Asset sources were staged inside the export and must not linger there.
    assert not [p for p in export_dir.rglob(".*")]


def test_signatures_inputs_outputs(loaded):
    assert set(loaded.signatures) == {"serving_default", "serving_images"}

    f = loaded.signatures["serving_default"]
    _, inputs = f.structured_input_signature
    assert list(inputs) == ["image_bytes"]
    assert inputs["image_bytes"].dtype == tf.string
    assert inputs["image_bytes"].shape.as_list() == [None]

    g = loaded.signatures["serving_images"]
    _, inputs = g.structured_input_signature
    assert list(inputs) == ["images"]
    assert inputs["images"].dtype == tf.uint8
    assert inputs["images"].shape.as_list() == [None, None, None, 3]

    for sig in (f, g):
        outs = sig.structured_outputs
        assert set(outs) == OUTPUT_NAMES
        assert outs["scores"].dtype == tf.float32 and outs["scores"].shape.as_list() == [None, 3]
        assert outs["class_names"].dtype == tf.string and outs["class_names"].shape.as_list() == [None, 3]
        assert outs["top_class"].dtype == tf.string and outs["top_class"].shape.as_list() == [None]
        assert outs["top_score"].dtype == tf.float32 and outs["top_score"].shape.as_list() == [None]


@pytest.mark.parametrize("fmt", FORMATS)
def test_serving_default_matches_keras(fmt, model, loaded, images):
    data = images[fmt][1]
    out = loaded.signatures["serving_default"](image_bytes=tf.constant([data]))
    expected = keras_scores(model, [data])
    np.testing.assert_allclose(out["scores"].numpy(), expected, atol=1e-5)
    assert out["scores"].shape == (1, 3)
    assert [n.decode() for n in out["class_names"].numpy()[0]] == CLASSES
    assert out["top_class"].numpy()[0].decode() == CLASSES[int(expected[0].argmax())]
    np.testing.assert_allclose(out["top_score"].numpy(), expected.max(axis=1), atol=1e-5)


def test_serving_default_batch_of_mixed_formats(model, loaded, images):
    datas = [images[fmt][1] for fmt in FORMATS]
    out = loaded.signatures["serving_default"](image_bytes=tf.constant(datas))
    expected = keras_scores(model, datas)
    np.testing.assert_allclose(out["scores"].numpy(), expected, atol=1e-5)
    # Guard against a vacuous parity test: the images must get clearly different scores.
    assert np.ptp(expected, axis=0).max() > 0.01
    assert out["class_names"].shape == (len(datas), 3)


def test_serving_images_matches_keras_and_bytes(model, loaded):
    serve_images = loaded.signatures["serving_images"]
    for shape in ((2, 40, 24, 3), (1, SIZE, SIZE, 3), (3, 9, 70, 3)):
        batch = np.stack([synthetic_pixels(*shape[1:3], seed=s) for s in range(shape[0])])
        out = serve_images(images=tf.constant(batch))
        expected = np.asarray(model(resize_image(tf.constant(batch), SIZE), training=False))
        np.testing.assert_allclose(out["scores"].numpy(), expected, atol=1e-5)
        # The same pixels as lossless PNG bytes give the same answer through serving_default.
        pngs = [encode(img, "png") for img in batch]
        via_bytes = loaded.signatures["serving_default"](image_bytes=tf.constant(pngs))["scores"].numpy()
        np.testing.assert_allclose(via_bytes, out["scores"].numpy(), atol=1e-5)


def test_empty_batch(loaded):
    out = loaded.signatures["serving_default"](image_bytes=tf.constant([], dtype=tf.string))
    assert out["scores"].shape == (0, 3) and out["top_class"].shape == (0,)


def test_tf_serving_rest_b64_convention(model, loaded, images):
    """Simulates TF Serving's REST decoding: it does not run the server.

    TF Serving base64-decodes every ``{"b64": ...}`` JSON object into the bytes
    of a string tensor. Both request forms for a single-input signature are
    shown: bare values and values keyed by the input name.
    """
    datas = [images["jpeg"][1], images["png"][1]]
    b64 = [base64.b64encode(d).decode("ascii") for d in datas]
    requests = [
        {"instances": [{"b64": s} for s in b64]},
        {"instances": [{"image_bytes": {"b64": s}} for s in b64]},
    ]
    expected = keras_scores(model, datas)
    serve = loaded.signatures["serving_default"]
    for request in requests:
        body = json.loads(json.dumps(request))  # what goes over the wire
        decoded = [
            base64.b64decode((inst["image_bytes"] if "image_bytes" in inst else inst)["b64"])
            for inst in body["instances"]
        ]
        out = serve(image_bytes=tf.constant(decoded))
        np.testing.assert_allclose(out["scores"].numpy(), expected, atol=1e-5)
        # Row-format responses need every output batch-major (first dim N).
        assert all(v.shape[0] == len(datas) for v in out.values())


def test_assets_and_metadata(export_dir, loaded):
    assets = export_dir / "assets"
    assert (assets / "class_names.txt").read_text().splitlines() == CLASSES
    assert tomllib.loads((assets / "recipe.toml").read_text()) == {"backbone": "tiny", "image_size": 16}
    meta = json.loads((assets / "transfer.json").read_text())
    assert meta["class_names"] == CLASSES
    assert meta["image_size"] == SIZE
    assert meta["multi_label"] is False
    assert meta["backbone"] == "tiny"
    assert meta["preprocessing"] == "caffe"
    assert set(meta["signatures"]) == {"serving_default", "serving_images"}
    assert meta["format"] == "transfer.export" and meta["transfer_version"]
    # The same facts on the reloaded object, without reading files by hand.
    assert [n.decode() for n in loaded.class_names.numpy()] == CLASSES
    assert int(loaded.image_size.numpy()) == SIZE
    asset_path = Path(loaded.class_names_file.asset_path.numpy().decode())
    assert asset_path.read_text().splitlines() == CLASSES


def test_keras_model_reloads(model, export_dir, images):
    reloaded = keras.saving.load_model(export_dir / "model.keras")
    batch = np.stack([decode_and_resize(tf.constant(images[f][1]), SIZE).numpy() for f in FORMATS])
    np.testing.assert_allclose(
        np.asarray(reloaded(batch, training=False)), np.asarray(model(batch, training=False)), atol=1e-6
    )


HIDE_MODULES = r"""
import sys

class _Hide:
    # Wraps every import finder so the BLOCKED packages look uninstalled. (The dev
    # venv installs transfer in editable mode, so leaving the repo off PYTHONPATH
    # and the cwd is not enough on its own.)
    def __init__(self, finder):
        self.finder = finder
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            return None
        find = getattr(self.finder, "find_spec", None)
        return find(name, path, target) if find else None
    def invalidate_caches(self):
        getattr(self.finder, "invalidate_caches", lambda: None)()

sys.meta_path[:] = [_Hide(f) for f in sys.meta_path]
for name in BLOCKED:
    try:
        __import__(name)
    except ImportError:
        pass
    else:
        raise AssertionError(name + " is still importable")
"""

FRESH_SCRIPT = (
    'BLOCKED = ("keras", "tf_keras", "transfer")\n'
    + HIDE_MODULES
    + r"""
import json
import tensorflow as tf

export_dir, files = sys.argv[1], sys.argv[2:]
loaded = tf.saved_model.load(export_dir)
out = loaded.signatures["serving_default"](image_bytes=tf.constant([open(f, "rb").read() for f in files]))
print(json.dumps({
    "scores": out["scores"].numpy().tolist(),
    "top_class": [c.decode() for c in out["top_class"].numpy()],
    "class_names": [c.decode() for c in loaded.class_names.numpy()],
    "loaded_modules": sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED),
}))
"""
)

PREDICT_SCRIPT = (
    'BLOCKED = ("keras", "tf_keras")\n'
    + HIDE_MODULES
    + r"""
import json
from transfer.tasks.classify.reader import ExportedClassifier

results = ExportedClassifier.load(sys.argv[1]).predict_files(sys.argv[2:], top_k=3)
print(json.dumps({"results": results, "keras_loaded": "keras" in sys.modules}))
"""
)


def run_fresh(script, args, cwd):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    proc = subprocess.run(
        [sys.executable, "-c", script, *map(str, args)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_export_runs_in_fresh_process_without_transfer_or_keras(model, export_dir, images, tmp_path):
    """Only TensorFlow: transfer and Keras are unimportable, so FamilyPreprocessing must be in the graph."""
    files = [images[fmt][0] for fmt in FORMATS]
    result = run_fresh(FRESH_SCRIPT, [export_dir, *files], cwd=tmp_path)
    assert result["loaded_modules"] == []
    assert result["class_names"] == CLASSES
    expected = keras_scores(model, [images[fmt][1] for fmt in FORMATS])
    np.testing.assert_allclose(np.array(result["scores"]), expected, atol=1e-4)
    assert result["top_class"] == [CLASSES[i] for i in expected.argmax(axis=1)]


def test_predict_runs_without_keras(model, export_dir, images, tmp_path):
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"\x89PNG broken")
    result = run_fresh(PREDICT_SCRIPT, [export_dir, images["jpeg"][0], garbage], cwd=tmp_path)
    assert result["keras_loaded"] is False
    good, bad = result["results"]
    expected = keras_scores(model, [images["jpeg"][1]])[0]
    assert good["predictions"][0]["class"] == CLASSES[int(expected.argmax())]
    assert good["predictions"][0]["score"] == pytest.approx(float(expected.max()), abs=1e-4)
    assert str(garbage) in bad["error"]


# ---------------------------------------------------------------- predict


def test_predict_files_good_missing_garbage(model, export_dir, images, tmp_path):
    clf = ExportedClassifier.load(export_dir)
    assert clf.class_names == CLASSES and clf.image_size == SIZE and clf.multi_label is False
    assert clf.metadata["backbone"] == "tiny"
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"this is not an image")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    missing = tmp_path / "missing.jpg"
    good, good2 = images["jpeg"], images["bmp"]
    paths = [good[0], missing, garbage, tmp_path, empty, str(good2[0])]

    results = clf.predict_files(paths, top_k=2, batch_size=1)

    assert [r["file"] for r in results] == [str(p) for p in paths]
    expected = keras_scores(model, [good[1], good2[1]])
    for result, row in zip((results[0], results[5]), expected):
        assert "error" not in result
        preds = result["predictions"]
        assert len(preds) == 2
        assert preds[0]["score"] >= preds[1]["score"]
        assert preds[0]["class"] == CLASSES[int(row.argmax())]
        assert preds[0]["score"] == pytest.approx(float(row.max()), abs=1e-5)
    for result, path in zip(results[1:5], paths[1:5]):
        assert "predictions" not in result
        assert str(path) in result["error"]
    assert "not found" in results[1]["error"].lower()
    assert "decode" in results[2]["error"].lower()


def test_predict_files_top_k_none_lists_all(export_dir, images):
    clf = ExportedClassifier.load(export_dir)
    (result,) = clf.predict_files([images["png"][0]], top_k=None)
    assert sorted(p["class"] for p in result["predictions"]) == sorted(CLASSES)
    assert sum(p["score"] for p in result["predictions"]) == pytest.approx(1.0, abs=1e-5)


def test_predict_bytes(model, export_dir, images):
    clf = ExportedClassifier.load(export_dir)
    datas = [images[fmt][1] for fmt in FORMATS]
    scores = clf.predict_bytes(datas, batch_size=4)
    np.testing.assert_allclose(scores, keras_scores(model, datas), atol=1e-5)
    assert clf.predict_bytes([]).shape == (0, 3)
    with pytest.raises(TransferError, match=r"positions \[1\]"):
        clf.predict_bytes([datas[0], b"garbage"])
    with pytest.raises(ValueError, match="top_k"):
        clf.predict_files([], top_k=0)


def test_load_errors_name_the_folder(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(TransferError, match="nope") as e:
        ExportedClassifier.load(missing)
    assert e.value.fix
    with pytest.raises(TransferError, match="saved_model.pb"):
        ExportedClassifier.load(tmp_path)


def test_rank_scores_single_and_multi_label():
    names = ["a", "b", "c", "d"]
    single = rank_scores(np.array([0.1, 0.6, 0.2, 0.1]), names, top_k=2)
    assert single == {"predictions": [{"class": "b", "score": pytest.approx(0.6)},
                                      {"class": "c", "score": pytest.approx(0.2)}]}  # fmt: skip
    # Multi-label: every class over the threshold is shown even beyond top_k ...
    multi = rank_scores(np.array([0.9, 0.2, 0.7, 0.55]), names, top_k=1, multi_label=True)
    assert [p["class"] for p in multi["predictions"]] == ["a", "c", "d"]
    assert multi["labels"] == ["a", "c", "d"]
    # ... and top_k still fills up when few classes are positive.
    multi = rank_scores(np.array([0.1, 0.2, 0.7, 0.3]), names, top_k=3, multi_label=True)
    assert [p["class"] for p in multi["predictions"]] == ["c", "d", "b"]
    assert multi["labels"] == ["c"]
    # Ties keep class order, so results are reproducible.
    assert [p["class"] for p in rank_scores(np.zeros(4), names, top_k=4)["predictions"]] == names


def test_predict_module_imports_only_tensorflow_numpy_stdlib():
    """predict.py must run from an export alone: no keras, no model code."""
    import transfer.serving.reader

    tree = ast.parse(Path(transfer.serving.reader.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module)
    allowed_roots = set(sys.stdlib_module_names) | {"numpy", "tensorflow"}
    # regular_files and artifact_loading import only the standard library and each other when imported
    # (artifact_loading's Keras loader imports Keras inside the function predict never calls; answers,
    # what `transfer predict` asks of a reader, imports only the standard library).
    light = {"transfer.core.errors", "transfer.core.regular_files", "transfer.engine.artifact_loading",
             "transfer.serving.answers"}
    allowed = {"transfer.core.imagesize", "transfer.core.orientation"} | light
    extra = {m for m in imported if m.split(".")[0] not in allowed_roots and m not in allowed}
    assert not extra, extra
    # orientation (EXIF frames of predict's answers) imports NumPy and the standard library at module
    # level; Pillow, which reads the tag, only inside its functions (Pillow is a dependency of transfer).
    import transfer.core.orientation

    top = ast.parse(Path(transfer.core.orientation.__file__).read_text()).body
    roots = {a.name.split(".")[0] for n in top if isinstance(n, ast.Import) for a in n.names}
    roots |= {n.module.split(".")[0] for n in top if isinstance(n, ast.ImportFrom) and n.module}
    assert roots <= set(sys.stdlib_module_names) | {"__future__", "numpy"}, roots
    import transfer.engine.artifact_loading

    top = ast.parse(Path(transfer.engine.artifact_loading.__file__).read_text()).body
    modules = {a.name for n in top if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module for n in top if isinstance(n, ast.ImportFrom) and n.module}
    assert {m for m in modules if m.split(".")[0] not in set(sys.stdlib_module_names) | {"__future__"}} <= light
    # transfer.core.imagesize (the header parser predict uses) is standard library only.
    import transfer.core.imagesize

    tree = ast.parse(Path(transfer.core.imagesize.__file__).read_text())
    roots = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    roots |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert roots <= set(sys.stdlib_module_names), roots


# ---------------------------------------------------------------- export errors and atomicity


def test_export_exists_overwrite_and_failed_overwrite_keeps_old(model, tmp_path, monkeypatch):
    out = tmp_path / "exp"
    export_model(model, out, class_names=CLASSES, image_size=SIZE, recipe_toml="v = 1\n")

    with pytest.raises(TransferError, match="--overwrite") as e:
        export_model(model, out, class_names=CLASSES, image_size=SIZE)
    assert str(out) in str(e.value)

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    with monkeypatch.context() as m:
        m.setattr(tf.saved_model, "save", boom)
        with pytest.raises(RuntimeError, match="disk full"):
            export_model(model, out, class_names=CLASSES, image_size=SIZE, recipe_toml="v = 2\n", overwrite=True)
    assert (out / "assets" / "recipe.toml").read_text() == "v = 1\n"
    assert (out / "saved_model.pb").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]  # no staging folders left

    export_model(model, out, class_names=CLASSES, image_size=SIZE, recipe_toml="v = 3\n", overwrite=True)
    assert (out / "assets" / "recipe.toml").read_text() == "v = 3\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]
    assert ExportedClassifier.load(out).class_names == CLASSES


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"class_names": ["a", "b"]}, "outputs 3 scores but 2 class names"),
        ({"class_names": ["a", "a", "b"]}, "unique"),
        ({"class_names": ["a", "b\nc", "d"]}, "single-line"),
        ({"image_size": 32}, "input shape"),
        ({"metadata": {"class_names": ["x"]}}, "may not set"),
        ({"metadata": {"when": object()}}, "JSON-serializable"),
    ],
)
def test_export_rejects_bad_arguments(model, tmp_path, kwargs, match):
    args = {"class_names": CLASSES, "image_size": SIZE, **kwargs}
    with pytest.raises(ValueError, match=match):
        export_model(model, tmp_path / "exp", **args)
    assert not list(tmp_path.iterdir())


def test_multi_label_export(tmp_path, images):
    model = tiny_classifier(num_classes=4, activation="sigmoid", mode="tf")
    names = ["sky", "tree", "car", "road"]
    out = export_model(model, tmp_path / "ml", class_names=names, image_size=SIZE, multi_label=True)
    clf = ExportedClassifier.load(out)
    assert clf.multi_label is True
    (result,) = clf.predict_files([images["gif"][0]], top_k=1)
    scores = keras_scores(model, [images["gif"][1]])[0]
    assert result["labels"] == [names[i] for i in np.argsort(-scores) if scores[i] >= 0.5]
    assert len(result["predictions"]) == max(1, len(result["labels"]))
    # The export itself answers the decision: every score, which labels pass the threshold and their names.
    meta = json.loads((out / "assets" / "transfer.json").read_text())
    assert meta["threshold"] == 0.5 and clf.threshold == 0.5
    assert {"above_threshold", "labels"} <= set(meta["signatures"]["serving_default"]["outputs"])
    serve = tf.saved_model.load(str(out)).signatures["serving_default"]
    answer = serve(image_bytes=tf.constant([images["gif"][1], images["png"][1]]))
    got_scores = answer["scores"].numpy()
    above = got_scores >= 0.5
    assert answer["above_threshold"].numpy().tolist() == above.tolist()
    assert [[v.decode() for v in row] for row in answer["labels"].numpy()] == [
        [n if a else "" for n, a in zip(names, row)] for row in above]
    assert {"scores", "class_names", "top_class", "top_score"} <= set(answer)


def test_export_of_build_classifier(tmp_path, images):
    """Integration with the real classifier builder (MobileNet 0.25, random weights)."""
    from transfer.backbones import get_backbone
    from transfer.tasks.classify.model import build_classifier

    keras.utils.set_random_seed(0)
    model, _ = build_classifier(get_backbone("mobilenet_0.25"), num_classes=3, image_size=32, weights=None)
    out = export_model(model, tmp_path / "mn", class_names=CLASSES, image_size=32)
    datas = [images[fmt][1] for fmt in ("jpeg", "png", "bmp")]
    got = ExportedClassifier.load(out).predict_bytes(datas)
    pixels = np.stack([decode_and_resize(tf.constant(d), 32).numpy() for d in datas])
    np.testing.assert_allclose(got, np.asarray(model(pixels, training=False)), atol=1e-5)


# ---------------------------------------------------------------- atomic helpers


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_atomic_write_helpers(tmp_path):
    atomic_write_text(tmp_path / "sub" / "a.txt", "héllo\n")
    assert (tmp_path / "sub" / "a.txt").read_text(encoding="utf-8") == "héllo\n"
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    atomic_write_json(tmp_path / "c.json", {"x": [1, 2]})
    assert json.loads((tmp_path / "c.json").read_text()) == {"x": [1, 2]}
    # Ordinary permissions (not mkstemp's 0o600), so other users/servers can read reports.
    assert stat.S_IMODE((tmp_path / "b.bin").stat().st_mode) == 0o666 & ~_umask()
    atomic_write_text(tmp_path / "sub" / "a.txt", "new")
    assert (tmp_path / "sub" / "a.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.txt", "b.bin", "c.json", "sub"]


def test_atomic_write_failure_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / "a.json"
    atomic_write_json(target, {"v": 1})
    with pytest.raises(TypeError):
        atomic_write_json(target, {"v": object()})

    def fail(*args):
        raise OSError("no space")

    with monkeypatch.context() as m:
        m.setattr(os, "replace", fail)
        with pytest.raises(OSError, match="no space"):
            atomic_write_json(target, {"v": 2})
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_atomic_directory(tmp_path):
    final = tmp_path / "out"
    with atomic_directory(final) as staging:
        assert staging.parent == tmp_path and staging.is_dir() and not final.exists()
        (staging / "f.txt").write_text("1")
    assert (final / "f.txt").read_text() == "1"
    assert stat.S_IMODE(final.stat().st_mode) == 0o777 & ~_umask()

    with pytest.raises(TransferError, match="--overwrite"):
        with atomic_directory(final):
            pass

    with pytest.raises(KeyError):
        with atomic_directory(final, overwrite=True) as staging:
            (staging / "f.txt").write_text("2")
            raise KeyError("boom")
    assert (final / "f.txt").read_text() == "1"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]

    with atomic_directory(final, overwrite=True) as staging:
        (staging / "g.txt").write_text("3")
    assert sorted(p.name for p in final.iterdir()) == ["g.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_atomic_save_keras(model, tmp_path):
    path = atomic_save_keras(model, tmp_path / "m.keras")
    atomic_save_keras(model, path)  # replacing an existing file works too
    assert [p.name for p in tmp_path.iterdir()] == ["m.keras"]
    x = np.zeros((1, SIZE, SIZE, 3), np.uint8)
    np.testing.assert_allclose(np.asarray(keras.saving.load_model(path)(x)), np.asarray(model(x)), atol=1e-6)
    with pytest.raises(ValueError, match=".keras"):
        atomic_save_keras(model, tmp_path / "m.h5")


# ---------------------------------------------------------------- hostile inputs


def _png_declaring(width, height):
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    chunk = struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk + b"\x00\x00\x00\x00IEND\xaeB`\x82"


def test_predict_files_hostile_inputs_fail_alone(model, export_dir, images, tmp_path):
    """Garbage, empty, 1x1, a decompression bomb, a huge file: one error each, the rest answered."""
    hostile = {
        "garbage.jpg": bytes(range(256)) * 4,
        "empty.png": b"",
        "one_pixel.png": encode(synthetic_pixels(1, 1, 0), "png"),
        "bomb.png": _png_declaring(30000, 30000),
        "huge.jpg": images["jpeg"][1] + b"\x00" * 3_000_000,  # a valid JPEG with megabytes of trailing junk
    }
    for name, data in hostile.items():
        (tmp_path / name).write_bytes(data)
    clf = ExportedClassifier.load(export_dir, max_bytes=2_000_000)
    paths = [images["jpeg"][0], *(tmp_path / n for n in hostile), images["png"][0]]
    results = clf.predict_files(paths, top_k=1)
    assert "predictions" in results[0] and "predictions" in results[-1]
    errors = {Path(r["file"]).name: r["error"] for r in results[1:-1]}
    assert set(errors) == set(hostile) and all(name in errors[name] for name in hostile)
    assert "decode" in errors["garbage.jpg"] and "empty" in errors["empty.png"]
    assert "1x1 pixels is too small" in errors["one_pixel.png"]
    assert "30000x30000" in errors["bomb.png"] and "limit of 40 megapixels" in errors["bomb.png"]
    assert "--max-megapixels" in errors["bomb.png"]
    assert "over the limit of 2 MB" in errors["huge.jpg"] and "--max-megabytes" in errors["huge.jpg"]
    expected = keras_scores(model, [images["jpeg"][1], images["png"][1]])
    assert results[0]["predictions"][0]["score"] == pytest.approx(float(expected[0].max()), abs=1e-5)
    # A raised limit lets the big (but decodable) file through.
    (result,) = ExportedClassifier.load(export_dir).predict_files([tmp_path / "huge.jpg"], top_k=1)
    assert "predictions" in result


def test_predict_bytes_refuses_bombs_before_decoding(export_dir, images):
    clf = ExportedClassifier.load(export_dir, max_pixels=1_000_000)
    with pytest.raises(TransferError) as e:
        clf.predict_bytes([images["png"][1], _png_declaring(30000, 30000), b""])
    assert "positions [1, 2]" in e.value.message and "30000x30000" in e.value.message
    with pytest.raises(ValueError, match="max_pixels"):
        ExportedClassifier.load(export_dir, max_pixels=0)
