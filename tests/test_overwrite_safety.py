"""--overwrite and --out replace only what transfer wrote (issue 21, "Replace only what is ours").

Each refusal is checked as the bad-input corpus checks it: exit code 2, no
traceback, the folder named in the message, and every file of the run, the
data and the refused folder unchanged (checksums before and after).
"""

import hashlib
import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

import transfer.cli.demo as demo
from transfer.core.artifacts import (MARKER, artifact_kind, check_replaceable, read_marker, run_inputs,
                                write_marker)
from transfer.core.atomic_folder import atomic_directory
from transfer.cli.main import app
from transfer.cli.demo import make_shapes_dataset
from transfer.core.errors import TransferError

from tests.test_export_predict import CLASSES, SIZE, tiny_classifier


def snapshot(root: Path) -> dict:
    """Every file and folder under ``root``: path -> sha256 (files) or "dir"."""
    state = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            state[os.path.relpath(os.path.join(folder, name), root)] = "dir"
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                state[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return state


def assert_refused(result, *needles):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    for needle in needles:
        assert str(needle) in result.output, result.output


@pytest.fixture(scope="module")
def runner():
    return CliRunner()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A dataset and a finished (tiny, untrained) classification run that records it as its data."""
    root = tmp_path_factory.mktemp("world")
    data = make_shapes_dataset(root / "shapes", train_per_class=2, val_per_class=1, size=SIZE)
    run = root / "runs" / "tiny"
    (run / "checkpoints").mkdir(parents=True)
    tiny_classifier().save(run / "checkpoints" / "best.keras")
    config = {"task": "classify", "backbone": "tiny", "weights": "random", "class_names": CLASSES,
              "image_size": SIZE, "multi_label": False, "best_epoch": 1, "data_source": str(data),
              "val_data_source": None, "status": "done"}
    (run / "run.json").write_text(json.dumps(config))
    (run / "recipe.toml").write_text('batch_size = 8\n')
    (run / "split.json").write_text('{"train": [], "val": []}\n')
    (run / "history.csv").write_text("epoch,loss\n1,0.5\n")
    return {"root": root, "data": data, "run": run}


@pytest.fixture(scope="module")
def exported(world, runner):
    """A real `transfer export` of the run (what --overwrite may replace)."""
    out = world["root"] / "exports" / "tiny"
    result = runner.invoke(app, ["export", str(world["run"]), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize("target", ["run", "run/checkpoints", "runs", "root", "data", "data/train"])
@pytest.mark.parametrize("overwrite", [True, False])
def test_export_never_replaces_or_writes_into_the_run_or_its_data(world, runner, target, overwrite):
    """--out the run itself (the find: it exited 0 and replaced checkpoints, history and split), an
    ancestor of it, the run's data or a folder inside either: refused, nothing changed."""
    folder = {"run": world["run"], "run/checkpoints": world["run"] / "checkpoints", "runs": world["run"].parent,
              "root": world["root"], "data": world["data"], "data/train": world["data"] / "train"}[target]
    before = snapshot(world["root"])
    args = ["export", str(world["run"]), "--out", str(folder)] + (["--overwrite"] if overwrite else [])
    result = runner.invoke(app, args)
    assert_refused(result, folder)
    assert "the run being exported" in result.output or "the run's training data" in result.output, result.output
    assert snapshot(world["root"]) == before


def test_export_over_another_dataset_is_refused(world, runner, tmp_path):
    """--out SOME_DATASET --overwrite deleted a dataset: it is not an export, so it is refused."""
    other = make_shapes_dataset(tmp_path / "other", train_per_class=1, val_per_class=1, size=SIZE)
    before = snapshot(other)
    result = runner.invoke(app, ["export", str(world["run"]), "--out", str(other), "--overwrite"])
    assert_refused(result, other, "not an export")
    assert snapshot(other) == before


def test_export_out_a_symlink_to_the_run_is_refused(world, runner, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(world["run"], target_is_directory=True)
    before = snapshot(world["run"])
    result = runner.invoke(app, ["export", str(world["run"]), "--out", str(link), "--overwrite"])
    assert_refused(result, link, "the run being exported")
    assert link.is_symlink() and snapshot(world["run"]) == before


def test_export_over_an_export_holding_a_stranger_file_is_refused(world, runner, exported):
    stranger = exported / "notes.txt"
    stranger.write_text("mine")
    try:
        before = snapshot(exported)
        result = runner.invoke(app, ["export", str(world["run"]), "--out", str(exported), "--overwrite"])
        assert_refused(result, exported, "notes.txt")
        assert snapshot(exported) == before
    finally:
        stranger.unlink()


def test_reexport_with_overwrite_replaces_an_export_even_one_from_before_markers(world, runner, exported):
    """An export is recognised by its own assets/transfer.json (no hidden file: exports written before
    markers existed look the same), and --overwrite replaces it; without --overwrite it is kept."""
    assert not (exported / MARKER).exists() and artifact_kind(exported) == "export"
    metadata = exported / "assets" / "transfer.json"
    old = json.loads(metadata.read_text())
    metadata.write_text(json.dumps({**old, "stale": True}))
    assert_refused(runner.invoke(app, ["export", str(world["run"]), "--out", str(exported)]), "--overwrite")
    assert json.loads(metadata.read_text())["stale"] is True
    result = runner.invoke(app, ["export", str(world["run"]), "--out", str(exported), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert "stale" not in json.loads(metadata.read_text()) and (exported / "saved_model.pb").is_file()
    assert sorted(p.name for p in exported.parent.iterdir()) == ["tiny"]  # no staging left


@pytest.mark.parametrize("where", ["data", "data/train/run", "data/train", "nonempty"])
def test_train_out_the_data_inside_it_or_a_foreign_folder_is_refused_before_anything_is_written(
        world, runner, tmp_path, monkeypatch, where):
    import transfer.data

    def no_scan(*args, **kwargs):
        raise AssertionError("the data was loaded before --out was checked")

    monkeypatch.setattr(transfer.data, "load_data", no_scan)
    data = world["data"]
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("years of work")
    out = {"data": data, "data/train/run": data / "train" / "run", "data/train": data / "train",
           "nonempty": foreign}[where]
    before, before_foreign = snapshot(data), snapshot(foreign)
    result = runner.invoke(app, ["train", "--data", str(data), "--out", str(out), "--weights", "none",
                                 "--image-size", "32", "--epochs", "1"])
    assert_refused(result, out)
    assert snapshot(data) == before and snapshot(foreign) == before_foreign
    assert not (data / "train" / "run").exists()


def test_train_api_refuses_an_out_inside_the_data(world, tmp_path):
    from transfer.data import load_data
    from transfer.engine.train import train

    data = make_shapes_dataset(tmp_path / "shapes", train_per_class=2, val_per_class=1, size=32)
    before = snapshot(data)
    with pytest.raises(TransferError, match="inside the training data"):
        train(load_data(data), data / "runs" / "r", weights=None, image_size=32, data_source=str(data), verbose=0)
    assert snapshot(data) == before


def test_a_new_run_folder_is_marked_and_an_empty_one_accepted(tmp_path):
    from transfer.engine.run import RunDir
    from transfer.engine.run_config import check_out_dir, prepare_run_dir

    empty = tmp_path / "empty"
    empty.mkdir()
    check_out_dir(empty, ["data/"])
    prepare_run_dir(RunDir(tmp_path / "r"), ("data/",))
    assert read_marker(tmp_path / "r")["kind"] == "run" and artifact_kind(tmp_path / "r") == "run"
    check_out_dir(tmp_path / "r")  # only our marker (a run killed before run.json): still a new run


@pytest.fixture
def no_training(monkeypatch):
    """run_demo stands in: a refusal must come before it, and a passing case must not train."""
    calls = []

    def fake_run_demo(out, **kwargs):
        calls.append(Path(out))
        raise SystemExit(0)

    monkeypatch.setattr(demo, "run_demo", fake_run_demo)
    return calls


def test_demo_overwrite_refuses_a_folder_that_is_not_a_demo(world, runner, tmp_path, no_training):
    """A project folder with its own run/, export/ and data/: --overwrite used to delete all three."""
    project = tmp_path / "project"
    (project / "run").mkdir(parents=True)
    (project / "run" / "run.json").write_text(json.dumps({"backbone": "resnet50", "data_source": "data"}))
    (project / "export").mkdir()
    make_shapes_dataset(project / "data", train_per_class=1, val_per_class=1, size=SIZE)
    before = snapshot(project)
    result = runner.invoke(app, ["demo", "--out", str(project), "--overwrite"])
    assert_refused(result, project, "not a demo folder")
    assert snapshot(project) == before and not no_training


def test_demo_overwrite_replaces_an_earlier_demo_without_a_marker(runner, tmp_path, no_training):
    """A demo written before markers: recognised by its run.json (demo backbone, the demo's data)."""
    old = tmp_path / "demo"
    make_shapes_dataset(old / "drawn-shapes", train_per_class=1, val_per_class=0, size=SIZE)
    (old / "run").mkdir()
    (old / "run" / "run.json").write_text(json.dumps({"backbone": demo.SCRATCH_BACKBONE,
                                                      "data_source": str(old / "drawn-shapes")}))
    (old / "notes.txt").write_text("mine")
    assert artifact_kind(old, {"demo": demo.legacy_demo_entries}) == "demo"
    result = runner.invoke(app, ["demo", "--out", str(old), "--overwrite"])
    assert result.exit_code == 0 and no_training == [old], result.output
    assert sorted(os.listdir(old)) == [MARKER, "notes.txt"] and read_marker(old)["kind"] == "demo"
    assert demo.prepare_demo_dir(old) == old  # what run_demo itself checks next: a cleared demo folder passes
    (old / "export").mkdir()
    assert_refused(runner.invoke(app, ["demo", "--out", str(old)]), "already holds a demo run", "--overwrite")


def test_atomic_directory_marks_what_it_wrote_and_replaces_only_that(tmp_path):
    final = tmp_path / "report"
    with atomic_directory(final, kind="report") as staging:
        (staging / "index.html").write_text("1")
    assert read_marker(final)["entries"] == ["index.html"] and artifact_kind(final) == "report"
    with atomic_directory(final, overwrite=True, kind="report") as staging:
        (staging / "index.html").write_text("2")
    assert (final / "index.html").read_text() == "2"

    (final / "mine.txt").write_text("keep")
    with pytest.raises(TransferError, match="mine.txt") as caught:
        with atomic_directory(final, overwrite=True, kind="report"):
            raise AssertionError("must be refused before the block runs")
    assert str(final) in str(caught.value) and (final / "mine.txt").read_text() == "keep"

    with pytest.raises(TransferError, match="is a report folder"):  # another kind is not replaced
        check_replaceable(final, "export")
    with pytest.raises(TransferError, match="the data"):
        check_replaceable(tmp_path / "x", "report", protected=[(tmp_path, "the data")])


def test_unmarked_folders_count_only_by_a_known_layout(tmp_path):
    folder = tmp_path / "evaluation"
    folder.mkdir()
    (folder / "metrics.json").write_text("{}")
    with pytest.raises(TransferError, match="not an evaluation transfer wrote"):
        check_replaceable(folder, "evaluation")
    check_replaceable(folder, "evaluation", legacy_entries=["metrics.json", "confusion_matrix.png"])
    for name in ("a", "b", "c", "d"):
        (folder / name).write_text("")
    with pytest.raises(TransferError, match=r"'a', 'b', 'c' and 2 more"):
        check_replaceable(folder, "evaluation", legacy_entries=["metrics.json"])
    write_marker(folder, "evaluation", ["metrics.json", "a", "b", "c", "d"])
    check_replaceable(folder, "evaluation")


def test_run_inputs_name_the_run_and_its_data():
    protected = run_inputs("runs/x", {"data_source": "flowers/", "val_data_source": "tfds:beans"})
    assert protected == [("runs/x", "the run being exported"), (Path("flowers"), "the run's training data")]
