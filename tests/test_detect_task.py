"""--task detect end to end: seam, targets, VOC list sources, serving post-processing, train -> export -> predict."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_box_readers import make_voc_with_image_sets
from transfer.data.samples import Boxes, DataSplit, Samples
from transfer.core.errors import TransferError
from transfer.tasks import get_task


def test_detect_is_registered_with_its_export_title():
    task = get_task("detect")
    assert task.name == "detect" and task.title == "detection" and not task.uses_feature_cache
    assert get_task("detection").name == "detect"  # what exports record


def test_target_json_round_trip_keeps_every_box_and_background_images():
    task = get_task("detect")
    for target in (Boxes(((1.5, 2.0, 30.0, 40.0), (5.0, 6.0, 7.0, 8.0)), (2, 0), 64, 48), Boxes((), (), 10, 20)):
        value = json.loads(json.dumps(task.target_to_json(target)))
        assert task.target_from_json(value, {"class_names": ["a", "b", "c"]}) == target


def test_run_config_caps_max_boxes_and_counts_background():
    from transfer.tasks.detect.data import max_boxes_for

    many = Boxes(tuple((i, i, i + 2, i + 2) for i in range(150)), (0,) * 150, 200, 200)
    targets = (many, Boxes((), (), 9, 9), Boxes(((0, 0, 1, 1),), (0,), 9, 9))
    train = Samples(("a.jpg", "b.jpg", "c.jpg"), targets, ("x",))
    val = Samples(("d.jpg",), (Boxes((), (), 9, 9),), ("x",))
    config = get_task("detect").run_config(DataSplit(train, val), get_task("detect").default_recipe())
    assert config["max_boxes"] == 100 == max_boxes_for(train)
    assert config["background_images"] == {"train": 1, "val": 1}
    assert max_boxes_for(val) == 1


def test_a_voc_list_file_names_that_split(tmp_path):
    from transfer.data.boxes import box_format, load_box_data, read_boxes

    make_voc_with_image_sets(tmp_path)
    listed = tmp_path / "ImageSets" / "Main" / "val.txt"
    assert box_format(listed) == "voc"
    by_file, _ = read_boxes(listed)
    by_split, _ = read_boxes(tmp_path, split="val")
    assert by_file.sources == by_split.sources
    assert [Path(s).stem for s in by_file.sources] == ["img6", "img7"]  # val.txt's ids, its blank line skipped
    data = load_box_data(tmp_path, val_source=listed)
    assert data.split.val.sources == by_split.sources
    assert set(data.split.train.sources).isdisjoint(data.split.val.sources)
    with pytest.raises(TransferError, match="'val' list"):
        read_boxes(listed, split="train")


def test_recipe_checks_refuse_rotation_and_class_weights():
    from transfer.core.recipe import Recipe

    task = get_task("detect")
    task.check_recipe(task.default_recipe())
    with pytest.raises(TransferError, match="rotate"):
        task.check_recipe(Recipe(augment=("flip", "rotate")))
    with pytest.raises(TransferError, match="class_weight"):
        task.check_recipe(Recipe(class_weight="balanced"))


def _raw_outputs(image_size: int, num_classes: int, placed: list[tuple[float, float, float, int, float]]):
    """Detector outputs that are background everywhere except ``(cx, cy, half_side, class, logit)`` at the
    stride-8 location nearest each center, with a square box of that half side (pixels)."""
    from transfer.tasks.detect.model import anchor_points

    points, strides = anchor_points(image_size)
    logits = np.full((1, len(points), num_classes), -20.0, np.float32)
    box = np.ones((1, len(points), 4), np.float32)
    for cx, cy, half, label, logit in placed:
        location = int(np.argmin(np.where(strides == 8, np.hypot(*(points - [cx, cy]).T), np.inf)))
        px, py = points[location]
        logits[0, location, label] = logit
        box[0, location] = np.array([px - (cx - half), py - (cy - half), cx + half - px, cy + half - py]) / 8
    return {"class_logits": logits, "box": box}


def test_postprocess_maps_boxes_to_original_pixels_and_nms_keeps_one_of_two_overlapping():
    import tensorflow as tf

    task = get_task("detect")
    config = {"class_names": ["cell", "dust"], "serving": {"score_threshold": 0.3, "iou_threshold": 0.5,
                                                           "max_detections": 5}}
    # Two overlapping boxes of class 0 (IoU 0.54), a box of class 1 overlapping the first as much.
    raw = _raw_outputs(64, 2, [(20, 20, 10, 0, 4.0), (26, 20, 10, 0, 2.0), (14, 20, 10, 1, 1.0)])
    served = task.postprocess({k: tf.constant(v) for k, v in raw.items()}, tf.constant([[128, 256]]), 64, config)
    assert served["count"].numpy().tolist() == [2]
    names = [n.decode() for n in served["class_names"].numpy()[0]]
    assert names == ["cell", "dust", "", "", ""]
    assert served["scores"].numpy()[0, 0] == pytest.approx(1 / (1 + math.exp(-4.0)), abs=1e-5)
    # The 64 px input stretched back to 256 wide x 128 high: x times 4, y times 2.
    np.testing.assert_allclose(served["boxes"].numpy()[0, 0], [40, 20, 120, 60], atol=0.05)
    # The export's parity check serves S x S images, whose pixels are the input's.
    square = task.postprocess({k: tf.constant(v) for k, v in raw.items()}, tf.constant([[64, 64]]), 64, config)
    assert task.parity_error(raw, {k: v.numpy() for k, v in square.items()}, 64, config) < 1e-6
    moved = {**raw, "box": raw["box"] + 0.01}
    assert task.parity_error(moved, {k: v.numpy() for k, v in square.items()}, 64, config) > 1e-4
    # Parity decodes with the config it is given: a looser NMS keeps the second box, a different count.
    looser = {**config, "serving": {**config["serving"], "iou_threshold": 0.9}}
    assert task.parity_error(raw, {k: v.numpy() for k, v in square.items()}, 64, looser) == 1.0


def test_export_options_override_the_runs_thresholds_and_are_checked():
    task = get_task("detect")
    config = {"class_names": ["cell"], "serving": {"score_threshold": 0.3, "iou_threshold": 0.5,
                                                   "max_detections": 100}}
    merged = task.with_serving_options(config, {"iou_threshold": 0.6, "max_detections": 20})
    assert merged["serving"] == {"score_threshold": 0.3, "iou_threshold": 0.6, "max_detections": 20}
    assert config["serving"]["iou_threshold"] == 0.5  # the run's config is not changed
    assert task.with_serving_options({"class_names": ["cell"]}, {})["serving"]["max_detections"] == 100
    for bad in ({"score_threshold": 1.0}, {"iou_threshold": 0.0}, {"max_detections": 0},
                {"max_detections": 2.5}, {"score_threshold": "high"}, {"iou_threshold": float("nan")}):
        with pytest.raises(TransferError, match=next(iter(bad))):
            task.with_serving_options(config, bad)
    with pytest.raises(TransferError, match="unknown"):
        task.with_serving_options({"class_names": ["cell"], "serving": {"nms": 0.5}}, {})
    # Other tasks have no export options: given ones are refused by name, never ignored.
    with pytest.raises(TransferError, match="--iou-threshold.*classification"):
        get_task("classify").with_serving_options({"class_names": ["a", "b"]}, {"iou_threshold": 0.6})
    assert get_task("localize").with_serving_options({"class_names": ["a"]}, {}) == {"class_names": ["a"]}


def _rectangles(folder: Path, count: int, size: tuple[int, int] = (80, 64)) -> Path:
    """Images with one or two bright rectangles on a dark ground, and their box CSV."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = ["filename,width,height,class,xmin,ymin,xmax,ymax"]
    for i in range(count):
        pixels = np.full((size[1], size[0], 3), 20, np.uint8)
        for k in range(1 + i % 2):
            w, h = rng.integers(16, 32, 2)
            x, y = rng.integers(0, size[0] - w), rng.integers(0, size[1] - h)
            name = "red" if k == 0 else "blue"
            pixels[y:y + h, x:x + w] = (230, 40, 40) if name == "red" else (40, 40, 230)
            rows.append(f"img{i}.png,{size[0]},{size[1]},{name},{x},{y},{x + w},{y + h}")
        Image.fromarray(pixels).save(folder / f"img{i}.png")
    (folder / "boxes.csv").write_text("\n".join(rows) + "\n")
    return folder / "boxes.csv"


@pytest.mark.slow  # about 3 minutes on two shared CPU cores (train, evaluate, export with its parity checks)
def test_train_evaluate_export_and_predict_in_a_fresh_process(tmp_path):
    from transfer.engine.evaluate import evaluate_run
    from transfer.core.recipe import Recipe, Stage
    from transfer.engine.train import train

    csv = _rectangles(tmp_path / "data", 12)
    data = get_task("detect").load_data(str(csv), val_fraction=0.25)
    recipe = Recipe(stages=(Stage("all", trainable="all", learning_rate=1e-3, epochs=1),), batch_size=4,
                    augment=("flip", "zoom", "color"), head_cache_views=0, ema_epochs=0.0, warmup_epochs=0.0)
    result = train(data, tmp_path / "run", backbone="smallcnn", weights=None, image_size=64, recipe=recipe,
                   task="detect", verbose=0, data_source=str(csv))
    config = json.loads((Path(result.run_dir) / "run.json").read_text())
    assert config["task"] == "detect" and config["max_boxes"] == 2 and config["monitor"] == "val_loss"
    # The untrained model's AP is anyone's guess (tests/test_eval_mapping.py checks AP on known
    # boxes): here, that the run's validation split is what was scored, box by box.
    report = evaluate_run(result.run_dir)
    summary = report.summary()
    val_labels = [label for target in data.val.targets for label in target.labels]
    assert summary["num_images"] == len(data.val)
    assert summary["per_class_boxes"] == {name: val_labels.count(i) for i, name in enumerate(data.class_names)}
    assert set(summary["per_class_ap"]) == {"blue", "red"}
    from typer.testing import CliRunner

    from transfer.cli.main import app

    # Serve every box the untrained model scores at all, so the fresh process has boxes to map
    # (the export's options, through the CLI; the run's own thresholds stay as they were).
    export = tmp_path / "export"
    cli = CliRunner().invoke(app, ["export", str(result.run_dir), "--out", str(export), "--score-threshold", "0",
                                   "--max-detections", "7"])
    assert cli.exit_code == 0, cli.output
    meta = json.loads((export / "assets" / "transfer.json").read_text())
    assert meta["task"] == "detection" and meta["max_detections"] == 7 and meta["score_threshold"] == 0.0
    assert meta["iou_threshold"] == 0.5
    assert json.loads((Path(result.run_dir) / "run.json").read_text())["serving"]["score_threshold"] == 0.3

    other = tmp_path / "other.png"
    Image.fromarray(np.full((150, 300, 3), 90, np.uint8)).save(other)  # 300 wide, 150 high, not 64 x 64
    code = ("import json, sys; from transfer.tasks.detect.reader import ExportedDetector; "
            "print(json.dumps(ExportedDetector.load(sys.argv[1]).predict_files([sys.argv[2], 'nope.png'])))")
    out = subprocess.run([sys.executable, "-c", code, str(export), str(other)], capture_output=True, text=True,
                         check=True, timeout=300)
    found, missing = json.loads(out.stdout.strip().splitlines()[-1])
    assert "error" in missing and len(found["detections"]) == 7
    boxes = np.array([d["box"] for d in found["detections"]])
    assert (boxes >= 0).all() and (boxes[:, [0, 2]] <= 300).all() and (boxes[:, [1, 3]] <= 150).all()
    assert boxes[:, [0, 2]].max() > 64  # original pixels, not the 64 px input's
    assert {d["class"] for d in found["detections"]} <= {"red", "blue"}
    scores = [d["score"] for d in found["detections"]]
    assert scores == sorted(scores, reverse=True)

    cli = CliRunner().invoke(app, ["predict", str(export), str(other), "--json", "--draw", str(tmp_path / "drawn")])
    assert cli.exit_code == 0, cli.output
    answer = json.loads(cli.output[cli.output.index("{"):])
    assert len(answer["results"][0]["detections"]) == 7
    assert Image.open(tmp_path / "drawn" / "other.png").size == (300, 150)


def test_draw_detections_keeps_the_image_size_and_refuses_errors(tmp_path):
    from transfer.tasks.detect.reader import describe_detections, draw_detections

    drawn = draw_detections(_rectangles(tmp_path / "d", 1).parent / "img0.png",
                            {"file": "img0.png", "detections": [{"box": [2, 3, 30, 40], "class": "red", "score": 0.9}]},
                            tmp_path / "out.png", ["red"])
    assert Image.open(drawn).size == (80, 64)
    with pytest.raises(TransferError):
        draw_detections("x.png", {"file": "x.png", "error": "bad"}, tmp_path / "x.png")
    assert describe_detections({"file": "a.png", "detections": []}) == ["a.png: 0 detections"]


def test_default_recipe_and_size_are_the_measured_ones():
    from transfer.backbones import get_backbone

    task = get_task("detect")
    recipe = task.default_recipe()
    assert [(s.trainable, s.epochs) for s in recipe.stages] == [("head", 3), ("all", 40)]
    assert recipe.batch_size == 16 and recipe.head_cache_views == 0
    task.check_recipe(recipe)  # the default passes its own task's checks
    # 224-px backbones detect at 288; larger native sizes scale the same way, in multiples of 32.
    assert task.default_image_size(get_backbone("mobilenet_0.25")) == 288
    assert task.default_image_size(get_backbone("efficientnetb3")) == 384  # 300 * 9 / 7 = 386 -> 384
