"""`transfer predict --draw / --out` never write over an input, over a file already there (unless
--overwrite) or over each other, and one file that cannot be read or written fails alone (issue 21).

Every case runs through the CLI for a tiny localization, detection and segmentation export
(each built once per module); inputs' checksums are compared before and after.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from transfer.cli.main import app
from transfer.cli.output_names import output_names

TASKS = ("localization", "detection", "segmentation")
SIZE = 32


# --- exports (tiny, untrained: what is checked here is where files go, not what they hold) ------
def _localization(out: Path) -> Path:
    from transfer.backbones import get_backbone
    from transfer.serving.export import export_model
    from transfer.core.recipe import Recipe
    from transfer.tasks import get_task
    from transfer.tasks.localize.model import HeadShape

    config = {"task": "localize", "class_names": ["thing"], "num_classes": 1,
              "head": HeadShape(channels=8, hidden=8, pooling="flatten").to_dict()}
    model, _ = get_task("localize").build_model(get_backbone("smallcnn"), config, SIZE, None, Recipe())
    return export_model(model, out, class_names=["thing"], image_size=SIZE, task="localize", task_config=config)


def _detection(out: Path) -> Path:
    from transfer.backbones import get_backbone
    from transfer.serving.export import export_model
    from transfer.tasks.detect.model import build_detector

    model, _ = build_detector(get_backbone("smallcnn"), 2, SIZE, neck_channels=8, head_convs=1)
    # Every box the untrained model scores at all is served, so each drawing has boxes on it.
    config = {"task": "detect", "class_names": ["a", "b"], "num_classes": 2, "resize": "stretch",
              "serving": {"score_threshold": 0.0, "iou_threshold": 0.5, "max_detections": 3}}
    return export_model(model, out, class_names=["a", "b"], image_size=SIZE, task="detect", task_config=config)


def _segmentation(out: Path) -> Path:
    import keras

    from transfer.serving.export import export_model

    keras.utils.set_random_seed(0)
    image = keras.Input((SIZE, SIZE, 3), dtype="uint8", name="image")
    x = keras.layers.Rescaling(1 / 127.5, offset=-1.0)(image)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(x)
    model = keras.Model(image, keras.layers.Conv2D(3, 1, name="mask")(x))
    names = ["background", "red", "blue"]
    config = {"task": "segment", "class_names": names, "num_classes": 3, "ignore_index": None, "decoder": "unet"}
    return export_model(model, out, class_names=names, image_size=SIZE, task="segment", task_config=config)


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    return {"localization": _localization(root / "loc"), "detection": _detection(root / "det"),
            "segmentation": _segmentation(root / "seg")}


@pytest.fixture(scope="module")
def _loaded():
    loaded: dict = {}
    yield loaded
    loaded.clear()


@pytest.fixture(autouse=True)
def _load_each_export_once(_loaded, monkeypatch):
    """Each export is loaded once for the module (a SavedModel takes seconds to load; the CLI
    loads it on every call, which is not what these tests are about)."""
    from transfer.serving.reader import ExportedModel

    load = ExportedModel.load.__func__

    def cached(cls, export_dir, **limits):
        key = (cls, str(export_dir), tuple(sorted(limits.items())))
        if key not in _loaded:
            _loaded[key] = load(cls, export_dir, **limits)
        return _loaded[key]

    monkeypatch.setattr(ExportedModel, "load", classmethod(cached))


# --- helpers ---------------------------------------------------------------------------------
def _photo(path: Path, width: int, height: int, seed: int = 0, exif_orientation: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    if exif_orientation is None:
        image.save(path)
    else:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        image.save(path, exif=exif.tobytes())
    return path


def _photos(root: Path) -> list[Path]:
    """Same stems in two folders, and the same name with two suffixes: every size different."""
    return [_photo(root / "a" / "x.jpg", 50, 40, 1), _photo(root / "b" / "x.jpg", 60, 44, 2),
            _photo(root / "a" / "y.jpg", 36, 52, 3), _photo(root / "a" / "y.png", 41, 33, 4)]


def _checksums(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _predict(*args) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["predict", *map(str, args)])
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output


def _json(output: str) -> dict:
    return json.JSONDecoder().raw_decode(output[output.index("{"):])[0]


def _output_option(task: str) -> str:
    return "--out" if task == "segmentation" else "--draw"


# --- output names -----------------------------------------------------------------------------
def test_output_names_follow_the_inputs_relative_paths_and_never_repeat():
    assert output_names(["p/a/x.jpg", "p/b/x.jpg"]) == ["a/x.png", "b/x.png"]
    assert output_names(["p/x.jpg"]) == ["x.png"]
    # The case: a.jpg, a.png and a-2.png must be three files, each its own input's.
    assert output_names(["a.jpg", "a.png", "a-2.png"]) == ["a.jpg.png", "a.png.png", "a-2.png"]
    assert output_names(["a.jpg", "a.png", "a.jpg.png"]) == ["a.jpg.png", "a.png.png", "a.jpg-2.png"]
    assert output_names(["x.jpg", "x.jpg", "X.JPG"]) == ["x.jpg.png", "x.jpg-2.png", "X.JPG-3.png"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["", "a/", "b/", "a/b/"]), st.sampled_from(["x", "X", "x-2", "x.jpg"]),
                          st.sampled_from([".jpg", ".png", ".JPG", ".jpeg"])), min_size=1, max_size=12))
def test_output_names_are_distinct_for_any_inputs(parts):
    names = output_names([f"root/{d}{stem}{suffix}" for d, stem, suffix in parts])
    assert len({n.casefold() for n in names}) == len(names)
    assert all(n.endswith(".png") and not n.startswith(("/", "..")) for n in names)


# --- never over an input ------------------------------------------------------------------------
@pytest.mark.parametrize("task", TASKS)
def test_an_output_folder_holding_an_input_is_refused_and_inputs_are_unchanged(task, exports, tmp_path):
    photos = tmp_path / "photos"
    files = _photos(photos)
    (tmp_path / "link").symlink_to(photos / "a")
    before = _checksums(photos)
    options = ["--draw"] + (["--out"] if task == "segmentation" else [])
    for option in options:
        # The input's own folder, a folder above it, and a symlink to it.
        for folder, named in [(photos / "a", photos / "a"), (photos, photos), (tmp_path / "link", tmp_path / "link")]:
            code, output = _predict(exports[task], *files, option, folder)
            assert code == 2, output
            assert f"{option} {named} holds the input" in output and "photos" in output
        code, output = _predict(exports[task], photos / "a", option, photos / "a")  # a folder argument
        assert code == 2 and "holds the input" in output
    assert _checksums(photos) == before  # nothing written, nothing replaced
    assert not (tmp_path / "photos" / "a-predicted").exists()


def test_a_link_inside_the_output_folder_never_leads_a_write_to_the_inputs(exports, tmp_path):
    photos = tmp_path / "photos"
    files = _photos(photos)
    before = _checksums(photos)
    (tmp_path / "drawn").mkdir()
    (tmp_path / "drawn" / "a").symlink_to(photos / "a")  # drawn/a/x.png would land beside photos/a/x.jpg
    code, output = _predict(exports["localization"], *files, "--draw", tmp_path / "drawn", "--json")
    assert code == 1, output
    results = _json(output)["results"]
    assert ["error" in r for r in results] == [True, False, True, True]  # a/x, b/x, a/y.jpg, a/y.png
    assert "beside or over an input" in results[0]["error"]
    assert Path(results[1]["drawn"]).is_file()
    assert _checksums(photos) == before
    code, output = _predict(exports["localization"], *files, "--draw", exports["localization"] / "drawn")
    assert code == 2 and "inside the export folder" in output, output


def test_mask_and_drawing_folders_may_not_overlap(exports, tmp_path):
    files = _photos(tmp_path / "photos")
    for draw in (tmp_path / "masks", tmp_path / "masks" / "drawn"):
        code, output = _predict(exports["segmentation"], *files, "--out", tmp_path / "masks", "--draw", draw)
        assert code == 2 and "same folder or one holds the other" in output, output
    code, output = _predict(exports["localization"], *files, "--out", tmp_path / "masks")
    assert code == 2 and "--out writes masks" in output


# --- never over a file already there, unless --overwrite -----------------------------------------
@pytest.mark.parametrize("task", TASKS)
def test_existing_files_are_kept_unless_overwrite_and_nothing_else_is_touched(task, exports, tmp_path):
    photos = tmp_path / "photos"
    files = _photos(photos)[:2]  # a/x.jpg, b/x.jpg -> a/x.png, b/x.png
    before = _checksums(photos)
    folder = tmp_path / "out"
    (folder / "a").mkdir(parents=True)
    (folder / "a" / "x.png").write_bytes(b"mine")
    (folder / "notes.txt").write_text("keep me")
    option = _output_option(task)
    code, output = _predict(exports[task], *files, option, folder)
    assert code == 2 and "already holds 1 of the files" in output and str(folder / "a" / "x.png") in output
    assert "--overwrite" in output
    assert (folder / "a" / "x.png").read_bytes() == b"mine" and not (folder / "b").exists()

    code, output = _predict(exports[task], *files, option, folder, "--overwrite", "--json")
    assert code == 0, output
    for result, photo in zip(_json(output)["results"], files):
        key = "mask_file" if task == "segmentation" else "drawn"
        with Image.open(result[key]) as written, Image.open(photo) as original:
            assert written.size == original.size
    assert (folder / "notes.txt").read_text() == "keep me"
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        "a/x.png", "b/x.png", "notes.txt"]  # no staging file left behind
    assert _checksums(photos) == before


# --- never over each other ------------------------------------------------------------------------
@pytest.mark.parametrize("task", TASKS)
def test_same_stem_inputs_get_their_own_files_and_the_json_names_them(task, exports, tmp_path, monkeypatch):
    monkeypatch.setattr("transfer.cli.predict.CHUNK", 3)  # 4 files: answered and written in two rounds
    photos = tmp_path / "photos"
    files = _photos(photos)
    before = _checksums(photos)
    args = [exports[task], *files, "--draw", tmp_path / "drawn", "--json"]
    if task == "segmentation":
        args += ["--out", tmp_path / "masks"]
    code, output = _predict(*args)
    assert code == 0, output
    results = _json(output)["results"]
    keys = ["drawn", "mask_file"] if task == "segmentation" else ["drawn"]
    for key in keys:
        written = [Path(r[key]) for r in results]
        assert len(set(written)) == len(files)
        for path, photo in zip(written, files):
            with Image.open(path) as image, Image.open(photo) as original:
                assert image.size == original.size  # each input's own file, not another's
        folder = tmp_path / ("drawn" if key == "drawn" else "masks")
        assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
            "a/x.png", "a/y.jpg.png", "a/y.png.png", "b/x.png"]
    code, output = _predict(*[a for a in args if a != "--json"], "--overwrite")
    assert code == 0 and f"Drew {len(files)} image(s)" in output, output  # counts the files written
    if task == "segmentation":
        assert f"Wrote {len(files)} mask(s)" in output
    assert _checksums(photos) == before


def test_masks_of_a_jpg_a_png_and_a_2_png_map_each_file_to_its_own_mask(exports, tmp_path):
    files = [_photo(tmp_path / "in" / "a.jpg", 40, 30, 1), _photo(tmp_path / "in" / "a.png", 33, 45, 2),
             _photo(tmp_path / "in" / "a-2.png", 52, 38, 3)]
    code, output = _predict(exports["segmentation"], *files, "--out", tmp_path / "masks", "--json")
    assert code == 0, output
    results = _json(output)["results"]
    assert len({r["mask_file"] for r in results}) == 3
    for result, photo in zip(results, files):
        assert result["file"] == str(photo)
        with Image.open(result["mask_file"]) as mask, Image.open(photo) as original:
            assert mask.size == original.size == (result["width"], result["height"])


# --- one file's failure is that file's alone -------------------------------------------------------
@pytest.mark.parametrize("task", TASKS)
def test_a_file_deleted_before_it_is_read_fails_alone(task, exports, tmp_path, monkeypatch):
    from transfer.serving.reader import ExportedModel

    files = _photos(tmp_path / "photos")
    read = ExportedModel._read_image

    def deleted_first(self, path):  # the file vanishes after the folder was listed, before it is read
        if Path(path) == files[1]:
            os.unlink(path)
        return read(self, path)

    monkeypatch.setattr(ExportedModel, "_read_image", deleted_first)
    code, output = _predict(exports[task], *files, "--draw", tmp_path / "drawn", "--json")
    assert code == 1, output
    results = _json(output)["results"]
    assert "error" in results[1] and str(files[1]) in results[1]["error"]
    assert [("error" in r) for r in results] == [False, True, False, False]
    assert all(Path(r["drawn"]).is_file() for i, r in enumerate(results) if i != 1)


@pytest.mark.parametrize("task", TASKS)
def test_a_file_deleted_after_it_is_read_is_drawn_as_it_was_answered(task, exports, tmp_path, monkeypatch):
    from transfer.serving.reader import ExportedModel

    files = _photos(tmp_path / "photos")
    read = ExportedModel._read_image

    def deleted_after(self, path):  # the file vanishes once read, before it is drawn
        answer = read(self, path)
        if Path(path) == files[2]:
            os.unlink(path)
        return answer

    monkeypatch.setattr(ExportedModel, "_read_image", deleted_after)
    code, output = _predict(exports[task], *files, "--draw", tmp_path / "drawn")
    assert code == 0, output
    assert f"Drew {len(files)} image(s)" in output
    with Image.open(tmp_path / "drawn" / "a" / "y.jpg.png") as drawn:
        assert drawn.size == (36, 52)


@pytest.mark.parametrize("task", TASKS)
def test_a_file_that_cannot_be_written_fails_alone(task, exports, tmp_path):
    files = _photos(tmp_path / "photos")
    (tmp_path / "drawn" / "b" / "x.png").mkdir(parents=True)  # a folder where b/x.jpg's drawing would go
    code, output = _predict(exports[task], *files, "--draw", tmp_path / "drawn", "--overwrite")
    assert code == 1, output
    assert "b/x.png" in output and "is a folder" in output and "1 of 4 file(s) failed" in output
    assert f"Drew {len(files) - 1} image(s)" in output
    assert (tmp_path / "drawn" / "a" / "x.png").is_file() and (tmp_path / "drawn" / "b" / "x.png").is_dir()


# --- drawings are in the frame the user sees -------------------------------------------------------
@pytest.mark.parametrize("task", TASKS)
def test_drawings_of_an_exif_rotated_photo_are_in_the_displayed_frame(task, exports, tmp_path):
    photo = _photo(tmp_path / "photos" / "phone.jpg", 60, 40, 5, exif_orientation=6)  # shown 40 wide, 60 high
    code, output = _predict(exports[task], photo, "--draw", tmp_path / "drawn", "--json")
    assert code == 0, output
    with Image.open(_json(output)["results"][0]["drawn"]) as drawn:
        assert drawn.size == (40, 60)
