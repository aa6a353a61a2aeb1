"""The command line through Typer's CliRunner: exit codes, messages, the whole flow."""

import csv
import json
import re

import pytest
from typer.testing import CliRunner

from transfer.cli.main import app
from transfer.core.errors import TransferError
from transfer.cli.demo import make_shapes_dataset

SIZE = "32"


@pytest.fixture(scope="module")
def runner():
    return CliRunner()


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("shapes"), train_per_class=6, val_per_class=3, size=32)


@pytest.fixture(scope="module")
def recipe_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("recipe") / "tiny.toml"
    path.write_text(
        'batch_size = 8\n[[stages]]\nname = "head"\ntrainable = "head"\nepochs = 1\n'
        '[[stages]]\nname = "top"\ntrainable = "top:2"\nlearning_rate = 0.0001\nepochs = 1\n'
    )
    return path


def assert_user_error(result, *needles):
    """Exit code 2, a message naming the problem, and no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    for needle in needles:
        assert needle in result.output, result.output


def test_backbones_json_lists_registry(runner):
    result = runner.invoke(app, ["backbones", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    names = [r["name"] for r in rows]
    assert "mobilenet_0.25" in names and "resnet50" in names and "vgg16" in names
    row = rows[names.index("mobilenet_0.25")]
    assert row["preprocessing"] == "tf" and set(row["feature_layers"]) == {"2", "4", "8", "16", "32"}


def test_backbones_table(runner):
    result = runner.invoke(app, ["backbones"])
    assert result.exit_code == 0 and "mobilenet_0.25" in result.output


def test_train_unknown_backbone(runner, shapes, tmp_path):
    result = runner.invoke(app, ["train", "--data", str(shapes), "--backbone", "resnet5O", "--out", str(tmp_path / "r")])
    assert_user_error(result, "Unknown backbone", "transfer backbones")


def test_train_missing_data_folder(runner, tmp_path):
    result = runner.invoke(app, ["train", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r")])
    assert_user_error(result, "nowhere")


def test_train_bad_weights_file(runner, shapes, tmp_path):
    bad = tmp_path / "weights.h5"
    bad.write_bytes(b"this is not hdf5")
    result = runner.invoke(app, ["train", "--data", str(shapes), "--weights", str(bad), "--image-size", SIZE,
                                 "--out", str(tmp_path / "r")])
    assert_user_error(result, "weights.h5")


def test_train_missing_weights_file(runner, shapes, tmp_path):
    result = runner.invoke(app, ["train", "--data", str(shapes), "--weights", str(tmp_path / "gone.h5"),
                                 "--image-size", SIZE, "--out", str(tmp_path / "r")])
    assert_user_error(result, "gone.h5")


def test_train_empty_class_folder(runner, tmp_path):
    make_shapes_dataset(tmp_path / "d", train_per_class=2, val_per_class=0, size=32)
    (tmp_path / "d" / "train" / "empty").mkdir()
    data = tmp_path / "d" / "train"
    result = runner.invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "r")])
    assert_user_error(result, "empty")


def test_train_bad_recipe_names_key(runner, shapes, tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text("batchsize = 3\n")
    result = runner.invoke(app, ["train", "--data", str(shapes), "--recipe", str(recipe), "--out", str(tmp_path / "r")])
    assert_user_error(result, "batchsize", "r.toml")


def test_evaluate_export_predict_on_missing_folders(runner, tmp_path):
    assert_user_error(runner.invoke(app, ["evaluate", str(tmp_path / "norun")]), "norun")
    assert_user_error(runner.invoke(app, ["export", str(tmp_path / "norun"), "--out", str(tmp_path / "e")]), "norun")
    assert_user_error(runner.invoke(app, ["predict", str(tmp_path / "noexport"), str(tmp_path / "x.jpg")]), "noexport")


def test_weights_import_rejects_non_hdf5(runner, tmp_path):
    bad = tmp_path / "fake.h5"
    bad.write_bytes(b"nope")
    assert_user_error(runner.invoke(app, ["weights", "import", str(bad)]), "fake.h5")


def test_debug_shows_traceback(runner, tmp_path):
    result = runner.invoke(app, ["--debug", "evaluate", str(tmp_path / "norun")])
    assert result.exit_code == 2
    assert "Traceback" in result.output


@pytest.mark.slow  # ~80 s: the whole CLI path; the fast CLI tests cover each command's options
def test_train_evaluate_export_predict(runner, shapes, recipe_file, tmp_path):
    run_dir, export_dir = tmp_path / "run", tmp_path / "export"
    result = runner.invoke(app, ["train", "--data", str(shapes), "--backbone", "mobilenet_0.25", "--weights", "none",
                                 "--image-size", SIZE, "--out", str(run_dir), "--recipe", str(recipe_file)])
    assert result.exit_code == 0, result.output
    assert "Best val accuracy" in result.output and (run_dir / "checkpoints" / "best.keras").is_file()
    train_output = result.output

    result = runner.invoke(app, ["evaluate", str(run_dir), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    # Random weights learn nothing reliable in two epochs, so the check is agreement: evaluating the
    # saved run gives the best val accuracy Keras logged during training, which train printed.
    logged = max(float(r["val_accuracy"]) for r in csv.DictReader(open(run_dir / "history.csv")))
    assert report["accuracy"] == pytest.approx(logged, abs=1e-6) and report["num_images"] == 9
    assert float(re.search(r"Best val accuracy ([0-9]+(?:\.[0-9]+)?)", train_output).group(1)) == pytest.approx(logged, abs=1e-4)
    matrix = report["confusion_matrix"]["matrix"]
    assert sum(map(sum, matrix)) == 9 and report["accuracy"] == pytest.approx(sum(matrix[i][i] for i in range(3)) / 9)
    assert set(report["per_class"]) == {"circle", "square", "triangle"}
    # Each class's figures are its row and column of the matrix (0 where undefined, as scikit-learn's
    # zero_division=0).
    for i, name in enumerate(report["confusion_matrix"]["labels"]):
        hits, truths, calls = matrix[i][i], sum(matrix[i]), sum(row[i] for row in matrix)
        precision, recall = (hits / calls if calls else 0.0), (hits / truths if truths else 0.0)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        assert report["per_class"][name] == pytest.approx(
            {"precision": precision, "recall": recall, "f1": f1, "support": truths}, abs=1e-4)
    assert (run_dir / "evaluation" / "confusion_matrix.json").is_file()
    assert (run_dir / "evaluation" / "confusion_matrix.png").is_file()

    result = runner.invoke(app, ["evaluate", str(run_dir)])
    assert result.exit_code == 0 and "precision" in result.output and "accuracy" in result.output

    result = runner.invoke(app, ["export", str(run_dir), "--out", str(export_dir)])
    assert result.exit_code == 0, result.output
    assert (export_dir / "saved_model.pb").is_file() and (export_dir / "model.keras").is_file()
    assert_user_error(runner.invoke(app, ["export", str(run_dir), "--out", str(export_dir)]), "--overwrite")

    images = sorted((shapes / "val").glob("*/*.png"))[:2]
    missing = tmp_path / "missing.jpg"
    result = runner.invoke(app, ["predict", str(export_dir), *map(str, images), str(missing), "--top-k", "2", "--json"])
    assert result.exit_code == 1, result.output  # some files failed: 1 (the others are still answered)
    document = json.loads(result.output)
    by_file = {r["file"]: r for r in document["results"]}
    assert set(by_file) == {*map(str, images), str(missing)}
    for image in images:
        predictions = by_file[str(image)]["predictions"]
        assert len(predictions) == 2 and predictions[0]["score"] >= predictions[1]["score"]
        assert predictions[0]["class"] in {"circle", "square", "triangle"}
    assert "predictions" not in by_file[str(missing)]
    error = by_file[str(missing)]["error"]
    assert str(missing) in error and "not found" in error, error

    result = runner.invoke(app, ["predict", str(export_dir), str(images[0])])
    assert result.exit_code == 0 and str(images[0]) in result.output
    result = runner.invoke(app, ["predict", str(export_dir), str(images[0]), str(missing)])
    assert result.exit_code == 1 and str(images[0]) in result.output and "ERROR" in result.output
    assert "1 of 2 file(s) failed" in result.output
    result = runner.invoke(app, ["predict", str(export_dir), str(missing)])
    assert result.exit_code == 1, result.output  # every file failed: still 1, not a usage error

    # A folder stands for its images; one holding only subfolders says to use a glob.
    folder = shapes / "val" / "circle"
    result = runner.invoke(app, ["predict", str(export_dir), str(folder), "--json"])
    assert result.exit_code == 0, result.output
    answered = [r["file"] for r in json.loads(result.output)["results"]]
    assert answered == sorted(str(p) for p in folder.glob("*.png")) and len(answered) == 3
    assert_user_error(runner.invoke(app, ["predict", str(export_dir), str(shapes / "val")]),
                      "holds no image files", f"{shapes / 'val'}/*/*.jpg")


def test_train_speed_and_distribution_options_are_checked_before_any_work(runner, shapes, tmp_path):
    result = runner.invoke(app, ["train", "--data", str(shapes), "--out", str(tmp_path / "r"),
                                 "--precision", "half"])
    assert_user_error(result, "Unknown precision 'half'", "float32, mixed, float16, bfloat16")
    result = runner.invoke(app, ["train", "--data", str(shapes), "--out", str(tmp_path / "r"),
                                 "--distribute", "cluster"])
    assert_user_error(result, "Unknown distribution 'cluster'", "auto, none, mirrored, multi_worker")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("args, needles", [
    (["--backbone", "resnet5O"], ["Unknown backbone", "transfer backbones"]),
    (["--image-size", "8"], ["Image size 8 is too small", "--image-size"]),
    (["--recipe", "BAD_RECIPE"], ["batchsize"]),
    (["--out", "EXISTING_RUN"], ["already holds a training run"]),
])
def test_train_cheap_mistakes_fail_before_the_data_scan(runner, shapes, tmp_path, monkeypatch, args, needles):
    import transfer.data

    def scanned(*args, **kwargs):
        raise AssertionError("the data was read before a cheap mistake was reported")

    monkeypatch.setattr(transfer.data, "load_data", scanned)
    (tmp_path / "old" / "run.json").parent.mkdir()
    (tmp_path / "old" / "run.json").write_text('{"status": "done"}')
    (tmp_path / "bad.toml").write_text("batchsize = 3\n")
    replace = {"BAD_RECIPE": str(tmp_path / "bad.toml"), "EXISTING_RUN": str(tmp_path / "old")}
    args = [replace.get(a, a) for a in args]
    out = [] if "--out" in args else ["--out", str(tmp_path / "r")]
    result = runner.invoke(app, ["train", "--data", str(shapes), *out, *args])
    assert_user_error(result, *needles)
    assert "Data:" not in result.output and not (tmp_path / "r").exists()


def test_train_says_its_image_size_and_warns_when_images_are_much_smaller(runner, shapes, tmp_path, monkeypatch):
    import transfer.data.doctor.diagnose
    import transfer.engine.train

    def stop(*args, **kwargs):
        raise TransferError("stopped before training (test)")

    inspected = []
    inspect = transfer.data.doctor.diagnose.inspect_images

    def counting(sources, *args, **kwargs):
        inspected.append(len(sources))
        return inspect(sources, *args, **kwargs)

    monkeypatch.setattr(transfer.engine.train, "train", stop)
    # Patched where the doctor looks it up (transfer.data.doctor only re-exports it).
    monkeypatch.setattr(transfer.data.doctor.diagnose, "inspect_images", counting)
    result = runner.invoke(app, ["train", "--data", str(shapes), "--out", str(tmp_path / "r")])
    assert_user_error(result, "stopped before training")
    assert "Image size: 224 px, the default of mobilenet_0.25" in result.output
    # The shapes are 32 px: at 224 each is upsampled 7x, ~49x the compute of --image-size 32.
    assert "median short side 32 px, upsampled 7.0x" in result.output and "Consider --image-size 32" in result.output
    assert sorted(inspected) == [9, 18]  # the sizes come from the data check's one pass over the images

    result = runner.invoke(app, ["train", "--data", str(shapes), "--out", str(tmp_path / "r"), "--image-size", SIZE])
    assert_user_error(result, "stopped before training")
    assert "Image size: 32 px (--image-size)." in result.output and "Warning" not in result.output


def test_resize_letterbox_is_recorded_and_a_bad_mode_is_refused(runner, shapes, recipe_file, tmp_path):
    """``--resize`` overrides the recipe's policy, run.json records it, and --resume refuses it."""
    bad = runner.invoke(app, ["train", "--data", str(shapes), "--out", str(tmp_path / "bad"), "--resize", "crop",
                              "--backbone", "smallcnn", "--weights", "none", "--image-size", "32"])
    assert_user_error(bad, "crop", "letterbox")
    assert not (tmp_path / "bad").exists()
    result = runner.invoke(app, ["train", "--data", str(shapes), "--out", str(tmp_path / "r"), "--resize", "Letterbox",
                                 "--backbone", "smallcnn", "--weights", "none", "--image-size", "32",
                                 "--recipe", str(recipe_file), "--epochs", "1"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "r" / "run.json").read_text())["resize"] == "letterbox"
    again = runner.invoke(app, ["train", "--resume", str(tmp_path / "r"), "--resize", "stretch"])
    assert_user_error(again, "--resume")
