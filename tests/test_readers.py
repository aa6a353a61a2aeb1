"""The Python API of every task: load_data and train refuse what they would guess, load_export picks
the export's reader, and each reader answers NumPy arrays and PIL images as it answers their files,
and draws in the frame a viewer shows.

The reader tests run on a stand-in for the SavedModel (``FakeLoaded``: answers computed from the
decoded pixels, so every answer is known); the slow ones at the end on real untrained exports of
each task (smallcnn, 32 px: no training, the export and its parity check only).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import transfer
from tests.corpus import task_inputs as inp
from transfer.core.errors import TransferError

TASKS = {"classification": "classify", "localize": "localize", "detect": "detect", "segment": "segment"}
READERS = {"classification": "ExportedClassifier", "localization": "ExportedLocalizer",
           "detection": "ExportedDetector", "segmentation": "ExportedSegmenter"}


# --- load_data and train refuse to guess the task ---------------------------------------------------
@pytest.mark.parametrize("builder,source,named", [
    (inp.box_csv("localize"), "data/boxes.csv", ["task='localize'", "task='detect'"]),
    (inp.voc("detect"), "data", ["task='localize'", "task='detect'"]),
    (inp.coco("detect"), "data/annotations.json", ["task='localize'", "task='detect'", "task='segment'"]),
    (inp.mask_folder(), "data", ["task='segment'"]),
])
def test_load_data_without_a_task_refuses_box_and_mask_sources(tmp_path, builder, source, named):
    builder(tmp_path)
    with pytest.raises(TransferError) as caught:
        transfer.load_data(tmp_path / source)
    assert str(tmp_path / source) in str(caught.value)
    assert all(choice in caught.value.fix for choice in named), caught.value.fix


def test_load_data_without_a_task_refuses_a_via_file(tmp_path):
    _via_folder(tmp_path / "balloons")
    with pytest.raises(TransferError, match="masks") as caught:
        transfer.load_data(tmp_path / "balloons")
    assert "task='segment'" in caught.value.fix


def test_load_data_reads_each_task_through_its_own_loader(tmp_path):
    inp.class_folder()(tmp_path)  # data/cat, data/dog: 5 each
    split = transfer.load_data(tmp_path / "data")  # no task: classification, as before
    assert split.class_names == ("cat", "dog") and len(split.train) + len(split.val) == 10
    assert isinstance(split.train.targets[0], int)
    inp.box_csv("detect", root="boxes")(tmp_path)
    boxes = transfer.load_data(tmp_path / "boxes" / "boxes.csv", task="detect", echo=None)
    assert type(boxes.train.targets[0]).__name__ == "Boxes" and boxes.class_names == ("blue", "red")
    inp.mask_folder(root="masks")(tmp_path)
    masks = transfer.load_data(tmp_path / "masks", task="segment", class_names="bg,first,second", echo=None)
    assert type(masks.train.targets[0]).__name__ == "Mask" and masks.class_names == ("bg", "first", "second")
    _via_folder(tmp_path / "balloons")
    via = transfer.load_data(tmp_path / "balloons", task="segment", val_fraction=0.5, echo=None)
    assert via.class_names == ("background", "balloons") and len(via.train) + len(via.val) == 4
    with pytest.raises(TransferError, match="ignore-index"):  # an option the task does not take
        transfer.load_data(tmp_path / "data", task="classify", ignore_index=3)


@pytest.mark.parametrize("corpus,named", [("localize", ["task='localize'", "task='detect'"]),
                                          ("segment", ["task='segment'"])])
def test_train_without_a_task_refuses_boxes_and_masks(tmp_path, corpus, named):
    inp.data_of(corpus)(tmp_path)
    split = transfer.load_data(inp.src(corpus, str(tmp_path / "data")), task=TASKS[corpus], echo=None)
    with pytest.raises(TransferError) as caught:
        transfer.train(split, tmp_path / "run", backbone="smallcnn", weights=None, image_size=32, verbose=0)
    assert all(choice in caught.value.fix for choice in named), caught.value.fix
    assert not (tmp_path / "run").exists()  # refused before anything was written


# --- the reports --------------------------------------------------------------------------------------
def test_every_report_is_public_with_a_table_and_a_dict():
    localize = transfer.LocalizeReport(files=("a.png", "b.png"), ious=(0.25, 0.75))
    assert localize.to_dict() == localize.summary() and localize.to_dict()["mean_iou"] == 0.5
    assert "mean IoU        0.500" in localize.table() and "IoU >= 0.5      0.500" in localize.table()
    confusion = np.array([[3, 1], [0, 4]])
    segment = transfer.SegmentReport(("bg", "cell"), confusion, ("a.png",), (0.7,))
    assert segment.to_dict()["pixel_accuracy"] == 0.875  # 7 of 8 labelled pixels right
    assert "pixel accuracy  0.875" in segment.table()
    assert json.loads(json.dumps(segment.to_dict()))["confusion_matrix"]["matrix"] == [[3, 1], [0, 4]]
    classify = transfer.EvalReport(("a", "b"), 0.75, {n: {"precision": 1.0, "recall": 0.5, "f1": 0.6667,
                                                           "support": 2} for n in ("a", "b")}, 4)
    assert classify.to_dict()["accuracy"] == 0.75 and "accuracy 0.7500 on 4 images" in classify.table()
    detect = transfer.DetectionReport(("x",), 0.5, 0.8, 0.4, None, None, 0.5, 0.6, (0.5,), (0.8,), (3,), 2, 3, 0, 0)
    assert detect.to_dict()["map50"] == 0.8 and "mAP@0.5       0.800" in detect.table()


# --- the readers, on a stand-in for the SavedModel ----------------------------------------------------
class FakeSignature:
    """Answers like a task's serving signature, from the decoded pixels (so each answer is known)."""

    def __init__(self, task: str):
        import tensorflow as tf

        self.tf, self.task = tf, task
        self.structured_outputs = {name: None for name in {
            "classification": ("scores",), "localization": ("box", "class_name", "score"),
            "detection": ("boxes", "scores", "class_names", "count"),
            "segmentation": ("mask", "height", "width")}[task]}

    def __call__(self, image_bytes):
        tf = self.tf
        images = [tf.io.decode_image(b, channels=3, expand_animations=False).numpy() for b in image_bytes.numpy()]
        means = np.array([im.reshape(-1, 3).mean(0) / 255 for im in images], np.float32)
        sizes = np.array([im.shape[:2] for im in images], np.float32)  # (height, width), stored frame
        if self.task == "classification":
            scores = means[:, :2] + 0.01  # never 0 / 0 (a black image)
            return {"scores": tf.constant(scores / scores.sum(1, keepdims=True))}
        # A box over the top left quarter of the stored pixels.
        boxes = np.stack([0 * sizes[:, 1], 0 * sizes[:, 0], sizes[:, 1] / 2, sizes[:, 0] / 2], 1)
        if self.task == "localization":
            return {"box": tf.constant(boxes), "class_name": tf.constant([b"a"] * len(images)),
                    "score": tf.constant(means[:, 0])}
        if self.task == "detection":
            return {"boxes": tf.constant(boxes[:, None]), "scores": tf.constant(means[:, :1]),
                    "class_names": tf.constant([[b"b"]] * len(images)), "count": tf.constant([1] * len(images))}
        height, width = int(sizes[:, 0].max()), int(sizes[:, 1].max())
        masks = np.zeros((len(images), height, width), np.uint8)
        for i, im in enumerate(images):
            masks[i, : im.shape[0], : im.shape[1]] = im[..., 0] > 127  # class 1 where red is bright
        return {"mask": tf.constant(masks), "height": tf.constant(sizes[:, 0].astype(np.int32)),
                "width": tf.constant(sizes[:, 1].astype(np.int32))}


class FakeLoaded:
    def __init__(self, task: str):
        self.signatures = {"serving_default": FakeSignature(task)}


def _fake_export(folder: Path, task: str, class_names=("a", "b")) -> Path:
    """A folder that passes the readers' checks; ``load_saved_model`` is patched to ``FakeLoaded``."""
    (folder / "assets").mkdir(parents=True)
    (folder / "saved_model.pb").write_bytes(b"not read: load_saved_model is patched")
    (folder / "assets" / "transfer.json").write_text(json.dumps(
        {"task": task, "class_names": list(class_names), "image_size": 32}))
    return folder


@pytest.fixture
def fake_exports(tmp_path, monkeypatch):
    import transfer.engine.artifact_loading as loading

    monkeypatch.setattr(loading, "load_saved_model", lambda export_dir, fix: FakeLoaded(
        json.loads((Path(export_dir) / "assets" / "transfer.json").read_text())["task"]))
    return {task: _fake_export(tmp_path / task, task) for task in READERS}


@pytest.mark.parametrize("task", sorted(READERS))
def test_load_export_picks_the_reader_of_the_recorded_task(fake_exports, task):
    reader = transfer.load_export(fake_exports[task])
    assert type(reader).__name__ == READERS[task] and type(reader) is getattr(transfer, READERS[task])
    assert reader.class_names == ["a", "b"]


@pytest.mark.parametrize("reader", ["ExportedClassifier", "ExportedLocalizer", "ExportedSegmenter"])
def test_a_reader_refuses_another_task_s_export_naming_its_task_and_load_export(fake_exports, reader):
    with pytest.raises(TransferError) as caught:
        getattr(transfer, reader).load(fake_exports["detection"])
    message = str(caught.value)
    assert "is a detection export, not a" in message and "transfer.load_export(" in caught.value.fix


def test_an_export_of_an_unknown_task_is_named(fake_exports, tmp_path):
    folder = _fake_export(tmp_path / "other", "captioning")
    with pytest.raises(TransferError, match="'captioning'"):
        transfer.load_export(folder)


def _picture(path: Path, width: int = 40, height: int = 24, orientation: int | None = None) -> tuple[Path, np.ndarray]:
    """A PNG (or an EXIF-oriented JPEG) of known pixels, and those pixels as stored."""
    ys, xs = np.mgrid[0:height, 0:width]
    pixels = np.stack([(xs * 255 // width), (ys * 255 // height), np.full_like(xs, 90)], -1).astype(np.uint8)
    if orientation is None:
        Image.fromarray(pixels).save(path)
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        Image.fromarray(pixels).save(path, quality=95, exif=exif.tobytes())
    return path, pixels


def _without_file(result: dict) -> dict:
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in result.items() if k != "file"}


@pytest.mark.parametrize("task", sorted(READERS))
def test_predict_images_answers_arrays_and_pil_images_as_their_files(fake_exports, tmp_path, task):
    reader = transfer.load_export(fake_exports[task])
    first, pixels = _picture(tmp_path / "first.png")
    second, other = _picture(tmp_path / "second.png", 20, 30)
    from_files = [_without_file(r) for r in reader.predict_files([first, second])]
    from_arrays = [_without_file(r) for r in reader.predict_images([pixels, other])]
    from_pil = _without_file(reader.predict_images(Image.open(first)))  # one image: one dict
    assert from_arrays == from_files and from_pil == from_files[0]
    assert _without_file(reader.predict_images(pixels[np.newaxis])[0]) == from_files[0]  # a [1, H, W, 3] batch
    if task == "localization":  # known answers: the top left quarter of each image
        assert [r["box"] for r in from_files] == [[0.0, 0.0, 20.0, 12.0], [0.0, 0.0, 10.0, 15.0]]
    if task == "segmentation":
        assert np.asarray(from_pil["mask"]).shape == (24, 40)


def test_predict_images_refuses_what_is_not_uint8_pixels(fake_exports):
    reader = transfer.load_export(fake_exports["classification"])
    with pytest.raises(TransferError, match="float32, not uint8"):
        reader.predict_images(np.zeros((16, 16, 3), np.float32))
    with pytest.raises(TransferError, match="not \\[height, width, 3\\]"):
        reader.predict_images(np.zeros((16, 16, 2), np.uint8))
    with pytest.raises(TransferError, match="from a dict"):
        reader.predict_images({"pixels": 1})
    tiny, fine = reader.predict_images([np.zeros((4, 4, 3), np.uint8), np.zeros((16, 16, 3), np.uint8)])
    assert "Image 0" in tiny["error"] and "too small" in tiny["error"] and "predictions" in fine


@pytest.mark.parametrize("task", sorted(READERS))
def test_draw_gives_a_pil_image_of_the_displayed_input_and_writes_it(fake_exports, tmp_path, task):
    reader = transfer.load_export(fake_exports[task])
    photo, _ = _picture(tmp_path / "phone.jpg", 40, 24, orientation=6)  # stored 40x24, shown 24x40
    drawn = reader.draw(photo, out=tmp_path / "drawn" / "phone.png")
    assert isinstance(drawn, Image.Image) and drawn.size == (24, 40)
    with Image.open(tmp_path / "drawn" / "phone.png") as written:
        assert written.size == (24, 40) and np.array_equal(np.asarray(written), np.asarray(drawn))
    _, pixels = _picture(tmp_path / "plain.png", 36, 20)
    given = reader.predict_images(pixels)
    assert reader.draw(pixels, given).size == (36, 20) and reader.draw(Image.fromarray(pixels)).size == (36, 20)
    assert not np.array_equal(np.asarray(reader.draw(pixels)), pixels)  # something was drawn on it
    with pytest.raises(TransferError, match="No answer to draw"):
        reader.draw(pixels, {"error": "Image 0: too small"})


# --- real exports (no training): the same readers on SavedModels ----------------------------------------
@pytest.fixture(scope="module")
def real_exports(tmp_path_factory):
    """An untrained smallcnn export of each task (a detector answering every box: score threshold 0)."""
    from transfer.backbones import get_backbone
    from transfer.serving.export import export_model

    root = tmp_path_factory.mktemp("exports")
    exports = {}
    for corpus, name in TASKS.items():
        folder = root / name
        inp.data_of(corpus)(folder)
        task = transfer.get_task(name)
        split = transfer.load_data(inp.src(corpus, str(folder / "data")), task=name, echo=None)
        recipe = task.default_recipe()
        config = {**task.run_config(split, recipe), "image_size": 32}
        if name == "detect":
            config = task.with_serving_options(config, {"score_threshold": 0.0, "max_detections": 3})
        model, _ = task.build_model(get_backbone("smallcnn"), config, 32, None, recipe)
        exports[task.title] = export_model(model, folder / "export", class_names=config["class_names"],
                                           image_size=32, multi_label=bool(config.get("multi_label")),
                                           task=name, task_config=config)
    return exports


@pytest.mark.slow
@pytest.mark.parametrize("task", sorted(READERS))
def test_real_exports_load_predict_images_and_draw(real_exports, tmp_path, task):
    reader = transfer.load_export(real_exports[task])
    assert type(reader).__name__ == READERS[task]
    path, pixels = _picture(tmp_path / "a.png", 40, 24)
    (from_file,) = reader.predict_files([path])
    assert _without_file(reader.predict_images(pixels)) == _without_file(from_file)
    assert _without_file(reader.predict_images(Image.open(path))) == _without_file(from_file)
    assert {"classification": "predictions", "localization": "box", "detection": "detections",
            "segmentation": "mask"}[task] in from_file
    if task == "detection":
        assert len(from_file["detections"]) == 3  # every box answered: the comparison is of real boxes
    assert reader.draw(path, out=tmp_path / "drawn.png").size == (40, 24) and (tmp_path / "drawn.png").is_file()
    if task != "classification":
        with pytest.raises(TransferError, match=f"is a {task} export, not a classifier"):
            transfer.ExportedClassifier.load(real_exports[task])


def _via_folder(folder: Path, count: int = 4) -> Path:
    """``folder/imgN.png`` + ``via_region_data.json``: one triangle (a balloon) per image."""
    folder.mkdir(parents=True)
    doc = {}
    for i in range(count):
        Image.fromarray(np.full((24, 32, 3), 40 * i, np.uint8)).save(folder / f"img{i}.png")
        size = (folder / f"img{i}.png").stat().st_size
        doc[f"img{i}.png{size}"] = {"filename": f"img{i}.png", "size": size, "file_attributes": {}, "regions": {
            "0": {"shape_attributes": {"name": "polygon", "all_points_x": [2, 20, 10], "all_points_y": [2, 4, 18]},
                  "region_attributes": {}}}}
    (folder / "via_region_data.json").write_text(json.dumps(doc))
    return folder


def test_draw_refuses_to_write_over_the_image_it_draws(fake_exports, tmp_path):
    reader = transfer.load_export(fake_exports["detection"])
    photo, _ = _picture(tmp_path / "photo.png", 36, 20)
    before = photo.read_bytes()
    with pytest.raises(TransferError, match="write over the image it draws"):
        reader.draw(photo, out=tmp_path / "." / "photo.png")
    assert photo.read_bytes() == before
