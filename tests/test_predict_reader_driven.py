"""`transfer predict` is driven by the export's reader and names no task (issue 22): what it prints,
draws and writes comes from the reader's `PredictAnswers` methods; a classification export now
draws its best class with --draw.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from transfer.cli.main import app

SIZE = 32
PREDICT = Path(__file__).resolve().parents[1] / "transfer" / "cli" / "predict.py"


def _classifier(out: Path, *, multi_label: bool) -> Path:
    """An export whose scores do not depend on the image: cat 0.119 and dog 0.881 (softmax of logits
    (-1, 1), sigmoids of (-2, 2))."""
    import keras

    from transfer.serving.export import export_model

    image = keras.Input((SIZE, SIZE, 3), dtype="uint8", name="image")
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Rescaling(0.0)(image))
    logits = [-2.0, 2.0] if multi_label else [-1.0, 1.0]
    dense = keras.layers.Dense(2, activation="sigmoid" if multi_label else "softmax", kernel_initializer="zeros",
                               bias_initializer=keras.initializers.Constant(logits))
    model = keras.Model(image, dense(x))
    return export_model(model, out, class_names=["cat", "dog"], image_size=SIZE, multi_label=multi_label)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    return {"single": _classifier(root / "single", multi_label=False),
            "multi": _classifier(root / "multi", multi_label=True)}


def _photo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((40, 48, 3), 128, np.uint8)).save(path)
    return path


def _predict(*args):
    result = CliRunner().invoke(app, ["predict", *map(str, args)])
    return result.exit_code, result.output


def test_classification_prints_its_classes_and_draws_its_best_class(exports, tmp_path):
    photo = _photo(tmp_path / "photos" / "x.png")
    code, output = _predict(exports["single"], photo, "--draw", tmp_path / "drawn")
    assert code == 0, output
    drawn = tmp_path / "drawn" / "x.png"
    assert output.splitlines() == [f"{photo}: dog 0.881, cat 0.119", f"Drew 1 image(s) into {tmp_path / 'drawn'}"]
    with Image.open(drawn) as image:
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.shape == (40, 48, 3)
    assert tuple(pixels[1, 1]) == (230, 25, 75)  # the label's band, top left
    assert tuple(pixels[-1, -1]) == (128, 128, 128)  # the photo itself elsewhere

    code, output = _predict(exports["single"], photo, "--top-k", "1", "--draw", tmp_path / "drawn",
                            "--overwrite", "--json")
    assert code == 0, output
    assert json.loads(output) == {"export": str(exports["single"]), "results": [
        {"file": str(photo), "predictions": [{"class": "dog", "score": pytest.approx(0.8808, abs=1e-4)}],
         "drawn": str(drawn)}]}


def test_multi_label_prints_its_labels_first(exports, tmp_path):
    photo = _photo(tmp_path / "x.png")
    code, output = _predict(exports["multi"], photo)
    assert code == 0, output
    assert output.splitlines() == [f"{photo}: labels dog (score >= 0.5); scores dog 0.881, cat 0.119"]


def test_out_is_refused_for_a_classification_export_before_it_loads(exports, tmp_path):
    photo = _photo(tmp_path / "photos" / "x.png")
    code, output = _predict(exports["single"], photo, "--out", tmp_path / "masks")
    assert code == 2
    text = " ".join(output.split())  # the error box wraps lines
    assert f"--out writes masks; {exports['single']} is a classification export." in text
    assert "Drop --out (use --json to keep the answers, --draw to draw the best class)." in text
    assert not (tmp_path / "masks").exists()


def test_an_output_a_reader_does_not_write_is_refused_naming_its_task(tmp_path):
    from transfer.cli.predict import _refuse_unwritten
    from transfer.core.errors import TransferError

    class Counter:  # a reader that writes no files at all
        writes, draws, task_title = (), "nothing", "counting"

    with pytest.raises(TransferError) as caught:
        _refuse_unwritten({"drawn": tmp_path / "d", "mask_file": None}, Counter, tmp_path / "exp")
    assert str(caught.value).startswith(f"--draw writes drawings; {tmp_path / 'exp'} is a counting export.")
    assert caught.value.fix == "Drop --draw (use --json to keep the answers)."
    _refuse_unwritten({"drawn": None, "mask_file": None}, Counter, tmp_path / "exp")  # nothing asked: fine


def test_each_reader_says_what_predict_writes():
    from transfer.serving.load import reader_class

    writes = {title: reader_class(title).writes for title in
              ("classification", "localization", "detection", "segmentation")}
    assert writes == {"classification": ("drawn",), "localization": ("drawn",), "detection": ("drawn",),
                      "segmentation": ("mask_file", "drawn")}
    assert reader_class("classification").predict_options == ("top_k",)
    assert reader_class("detection").predict_options == ()


def test_predict_names_no_task_and_imports_no_task_package():
    from transfer.tasks import TASKS, _ALIASES

    tree = ast.parse(PREDICT.read_text(encoding="utf-8"))
    modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    modules |= {a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    assert not [m for m in modules if m and m.startswith("transfer.tasks")], modules
    names = set(TASKS) | set(_ALIASES)
    constants = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)}
    assert not names & constants, names & constants
