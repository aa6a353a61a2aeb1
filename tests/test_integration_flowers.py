"""End to end on the real flowers5 fixture with the real ImageNet MobileNet 0.25 weights,
through the installed `transfer` command exactly as a user runs it (slow: ~2-3 minutes)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import require_fixture

pytestmark = [pytest.mark.slow, pytest.mark.fixtures]

WEIGHTS_FILE = "weights/mobilenet_2_5_224_tf_no_top.h5"


def run_cli(args, env, **kwargs):
    result = subprocess.run([sys.executable, "-m", "transfer", *args], env=env, capture_output=True, text=True,
                            timeout=900, **kwargs)
    assert result.returncode == 0, f"{args}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


def test_flowers5_import_train_evaluate_export_predict(fixtures_dir, tmp_path):
    flowers = require_fixture(fixtures_dir / "flowers5")
    # A private Keras cache: `weights import` then weights="imagenet" works with no network.
    env = {**os.environ, "KERAS_HOME": str(tmp_path / "keras"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    run_cli(["weights", "import", str(require_fixture(fixtures_dir / WEIGHTS_FILE))], env)
    run_dir, export_dir = tmp_path / "run", tmp_path / "export"
    run_cli(["train", "--data", str(flowers), "--backbone", "mobilenet_0.25", "--weights", "imagenet",
             "--image-size", "128", "--epochs", "2", "--out", str(run_dir)], env)
    config = json.loads((run_dir / "run.json").read_text())
    assert config["weights"] == "imagenet-cache" and config["num_val"] == 864

    report = json.loads(run_cli(["evaluate", str(run_dir), "--json"], env).stdout)
    # Largest class is 24% of the data; ImageNet features get far above that in 4 epochs.
    assert report["accuracy"] >= 0.45, report["accuracy"]
    assert report["num_images"] == 864

    run_cli(["export", str(run_dir), "--out", str(export_dir)], env)
    images = sorted((flowers / "rose").glob("*.jpg"))[:3] + sorted((flowers / "tulip").glob("*.jpg"))[:3]
    predicted = json.loads(run_cli(["predict", str(export_dir), *map(str, images), "--json"], env).stdout)
    assert [r["file"] for r in predicted["results"]] == [str(p) for p in images]

    # A fresh interpreter that only has TensorFlow reproduces the CLI's scores.
    script = textwrap.dedent(f"""
        import json, sys
        import tensorflow as tf
        assert "transfer" not in sys.modules
        serve = tf.saved_model.load({str(export_dir)!r}).signatures["serving_default"]
        files = {[str(p) for p in images]!r}
        out = serve(image_bytes=tf.constant([open(f, "rb").read() for f in files]))
        print(json.dumps([[n.decode(), float(s)] for n, s in zip(out["top_class"].numpy(), out["top_score"].numpy())]))
    """)
    raw = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300,
                         cwd=tmp_path)
    assert raw.returncode == 0, raw.stderr[-3000:]
    for (name, score), result in zip(json.loads(raw.stdout), predicted["results"]):
        assert result["predictions"][0]["class"] == name
        assert result["predictions"][0]["score"] == pytest.approx(score, abs=1e-5)
