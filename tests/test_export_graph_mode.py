"""The export runs under TensorFlow's own graph-mode runners, not only ``tf.saved_model.load``.

``saved_model_cli run``, TF Serving's C++ server and
``tf.compat.v1.saved_model.loader.load`` restore the variables with the
checkpoint's restore op and run the SignatureDef's tensors in a session. An
export whose functions read variables the checkpoint does not restore loads
fine in Python but fails there ("Could not find variable conv_dw_12_bn/gamma",
issue 9). Every check runs in a fresh process, as a server would.

Two exports: single-label MobileNet 0.25 (random weights, calibrated
BatchNorm, 32 px: the real backbone whose ``conv_dw_*_bn`` variables failed)
and the tiny multi-label (sigmoid) classifier of ``test_export_predict``, whose
signatures also answer ``above_threshold`` (bool ``[N, C]``) and ``labels``
(string ``[N, C]``, empty under the threshold).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tests.test_export_predict import HIDE_MODULES, synthetic_pixels, tiny_classifier
from transfer.serving.export import export_model
from transfer.core.imageops import decode_and_resize

CLI = shutil.which("saved_model_cli", path=os.path.dirname(sys.executable)) or shutil.which("saved_model_cli")
EXPORTS = {
    # name: (image size, class names, multi_label)
    "single": (32, ["cat", "dog", "fox"], False),
    "multi": (16, ["sky", "tree", "car", "road"], True),
}


def png(pixels) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module", params=sorted(EXPORTS))
def case(request, tmp_path_factory):
    """An export, its Keras model's expected scores, and input files for the runners."""
    name = request.param
    size, names, multi_label = EXPORTS[name]
    if multi_label:
        model = tiny_classifier(num_classes=len(names), activation="sigmoid", mode="caffe")
    else:
        from tests.modelfactory import pretrained_like_classifier

        model = pretrained_like_classifier(num_classes=len(names), image_size=size)
    folder = tmp_path_factory.mktemp(f"graph_{name}")
    export_dir = export_model(model, folder / "export", class_names=names, image_size=size, multi_label=multi_label)

    images = np.stack([synthetic_pixels(size, size, seed) for seed in (1, 2)])
    # Encoded images of other sizes: the bytes signature decodes and resizes them.
    encoded = [png(synthetic_pixels(h, w, seed)) for seed, (h, w) in enumerate(((size + 7, size - 5), (20, 41)), 3)]
    np.save(folder / "images.npy", images)
    np.save(folder / "image_bytes.npy", np.array(encoded, dtype=object), allow_pickle=True)
    pixels = np.stack([decode_and_resize(tf.constant(data), size).numpy() for data in encoded])
    expected = {
        "serving_images": np.asarray(model(images, training=False)),
        "serving_default": np.asarray(model(pixels, training=False)),
    }
    # Guard against a vacuous comparison: the inputs must get clearly different scores.
    for scores in expected.values():
        assert np.ptp(scores, axis=0).max() > 1e-3
    if multi_label:
        # Guard against a vacuous label check: some scores on each side of the threshold.
        scores = np.concatenate(list(expected.values()))
        assert (scores >= 0.5).any() and (scores < 0.5).any(), scores
    return {"dir": export_dir, "folder": folder, "names": names, "expected": expected, "multi_label": multi_label}


def clean_env():
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return env


def saved_model_cli_run(export_dir, signature, *input_args):
    assert CLI, "saved_model_cli is not on PATH (it ships with tensorflow)"
    cmd = [CLI, "run", "--dir", str(export_dir), "--tag_set", "serve", "--signature_def", signature, *input_args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=clean_env(), timeout=240)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def printed_outputs(stdout: str) -> dict[str, str]:
    """``saved_model_cli run`` prints ``Result for output key NAME:`` then the array."""
    parts = re.split(r"^Result for output key (\w+):\n", stdout, flags=re.MULTILINE)
    return dict(zip(parts[1::2], (p.strip() for p in parts[2::2])))


def printed_floats(text: str, shape) -> np.ndarray:
    numbers = re.findall(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?", text)
    return np.array([float(n) for n in numbers], dtype=np.float32).reshape(shape)


def check_printed(stdout, expected, names, multi_label=False):
    outputs = printed_outputs(stdout)
    keys = {"scores", "class_names", "top_class", "top_score"}
    assert set(outputs) == (keys | {"above_threshold", "labels"} if multi_label else keys), stdout
    np.testing.assert_allclose(printed_floats(outputs["scores"], expected.shape), expected, atol=1e-5)
    np.testing.assert_allclose(printed_floats(outputs["top_score"], (len(expected),)), expected.max(1), atol=1e-5)
    printed_top = re.findall(r"b'([^']*)'", outputs["top_class"])
    assert printed_top == [names[i] for i in expected.argmax(1)]
    if multi_label:
        above = expected >= 0.5
        assert re.findall(r"True|False", outputs["above_threshold"]) == [str(v) for v in above.ravel()]
        printed_labels = re.findall(r"b'([^']*)'", outputs["labels"])
        assert printed_labels == [names[j] if above[i, j] else "" for i in range(len(above)) for j in range(len(names))]


def test_saved_model_cli_run_serving_images(case):
    # `--input_exprs` only takes Python literals (ast.literal_eval): a numpy call
    # such as np.zeros(...) is refused, a nested list of pixel values works.
    # (`--inputs images=FILE.npy` works too; serving_default below uses it.)
    images = np.load(case["folder"] / "images.npy")
    stdout = saved_model_cli_run(case["dir"], "serving_images", "--input_exprs", f"images={images.tolist()}")
    check_printed(stdout, case["expected"]["serving_images"], case["names"], case["multi_label"])


def test_saved_model_cli_run_serving_default(case):
    # An object array of encoded images in a .npy file (saved_model_cli loads it with allow_pickle).
    stdout = saved_model_cli_run(
        case["dir"], "serving_default", "--inputs", f"image_bytes={case['folder'] / 'image_bytes.npy'}"
    )
    check_printed(stdout, case["expected"]["serving_default"], case["names"], case["multi_label"])


V1_SESSION_SCRIPT = (
    'BLOCKED = ("keras", "tf_keras", "transfer")\n'
    + HIDE_MODULES
    + r"""
import json
import numpy as np
import tensorflow as tf

export_dir, folder = sys.argv[1], sys.argv[2]
inputs = {
    "serving_images": np.load(folder + "/images.npy"),
    "serving_default": np.load(folder + "/image_bytes.npy", allow_pickle=True),
}
result = {}
with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as sess:
    meta_graph = tf.compat.v1.saved_model.loader.load(sess, ["serve"], export_dir)
    result["signatures"] = sorted(k for k in meta_graph.signature_def if not k.startswith("__"))
    for key, value in inputs.items():
        signature = meta_graph.signature_def[key]
        (input_name,) = signature.inputs
        out = sess.run({k: v.name for k, v in signature.outputs.items()}, {signature.inputs[input_name].name: value})
        result[key] = {
            "input": input_name,
            "scores": out["scores"].tolist(),
            "top_class": [c.decode() for c in out["top_class"]],
            "class_names": [[c.decode() for c in row] for row in out["class_names"]],
            "outputs": sorted(out),
        }
        if "labels" in out:
            result[key]["above_threshold"] = out["above_threshold"].tolist()
            result[key]["labels"] = [[c.decode() for c in row] for row in out["labels"]]
result["loaded_modules"] = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
print(json.dumps(result))
"""
)


def test_tf_compat_v1_session_load(case):
    """Graph mode, in a fresh process without keras or transfer importable."""
    proc = subprocess.run(
        [sys.executable, "-c", V1_SESSION_SCRIPT, str(case["dir"]), str(case["folder"])],
        capture_output=True, text=True, env=clean_env(), cwd=case["folder"], timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["signatures"] == ["serving_default", "serving_images"]
    assert result["loaded_modules"] == []
    names = case["names"]
    for key, input_name in (("serving_images", "images"), ("serving_default", "image_bytes")):
        expected = case["expected"][key]
        got = result[key]
        assert got["input"] == input_name
        np.testing.assert_allclose(np.array(got["scores"]), expected, atol=1e-5)
        assert got["top_class"] == [names[i] for i in expected.argmax(1)]
        assert got["class_names"] == [names] * len(expected)
        if case["multi_label"]:
            above = expected >= 0.5
            assert got["above_threshold"] == above.tolist()
            assert got["labels"] == [[n if a else "" for n, a in zip(names, row)] for row in above]
        else:
            assert got["outputs"] == ["class_names", "scores", "top_class", "top_score"]


def test_export_refuses_a_graph_that_graph_mode_cannot_run(tmp_path, monkeypatch):
    """The pre-fix layout (the Keras model tracked, its variables saved as copies) is never written."""
    import transfer.serving.export as export

    class OldLayout(export._ServingModule):
        def __init__(self, model, *args, **kwargs):
            super().__init__(model, *args, **kwargs)
            self.model_variables = []
            self.model = model

    monkeypatch.setattr(export, "_ServingModule", OldLayout)
    model = tiny_classifier()
    with pytest.raises(RuntimeError, match="do not run in graph mode.*Could not find variable"):
        export_model(model, tmp_path / "exp", class_names=["a", "b", "c"], image_size=16)
    assert not list(tmp_path.iterdir())
