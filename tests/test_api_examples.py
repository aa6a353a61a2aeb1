"""The README's "Python API" examples, run as written in fresh processes, one per task.

Each ```python block of that section is taken from README.md; only its paths
(a few images of the real fixtures: flowers5, raccoon, bccd, balloon, copied
into a tmp folder) and its training settings (``smallcnn``, random weights,
32 px, one epoch: ``TINY``) are substituted, each substitution checked to
match the README's text, so an example that changes or stops working fails
here. What the example leaves behind is checked: the reader's type, the
answer's keys and shapes, the report's table, the drawing's size against the
input's and the file it wrote.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageOps

from tests.conftest import require_fixture

REPO = Path(__file__).resolve().parents[1]
SETTINGS = re.compile(r'backbone="mobilenet_0\.25", weights="imagenet"(,\s*image_size=\d+)?')
TINY = 'backbone="smallcnn", weights=None, image_size=32, recipe=TINY'
PREAMBLE = '''import transfer as _transfer
TINY = _transfer.Recipe(stages=(_transfer.Stage("all", trainable="all", learning_rate=1e-3, epochs=1),),
                        batch_size=4, augment=(), head_cache_views=0, ema_epochs=0.0, warmup_epochs=0.0)
'''
# Run after the example, in its process: what it left behind, as JSON.
EPILOGUE = '''
import json as _json
import numpy as _np
_facts = {"reader": type(reader).__name__, "report": type(report).__name__, "table": report.table(),
          "to_dict": _json.loads(_json.dumps(report.to_dict())), "drawn": [type(drawn).__name__, list(drawn.size)],
          "result": {k: (list(v.shape) if isinstance(v, _np.ndarray) else v) for k, v in result.items()}}
open("facts.json", "w").write(_json.dumps(_facts))
'''


def readme_examples() -> dict[str, str]:
    """The ```python blocks of the README's "## Python API" section, keyed by the task they load."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Python API\n"):]
    section = section[: section.index("\n## ", 1)]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    return {re.search(r'task="(\w+)"', block).group(1): block for block in blocks}


def substituted(block: str, paths: dict[str, Path]) -> str:
    """``block`` with its quoted paths replaced (each must be there) and the tiny settings."""
    for old, new in paths.items():
        assert f'"{old}"' in block, f'the README example no longer names "{old}"'
        block = block.replace(f'"{old}"', repr(str(new)))
    assert SETTINGS.search(block), "the README example no longer trains with the settings the test replaces"
    return SETTINGS.sub(TINY, block)


def run_example(task: str, paths: dict[str, Path], cwd: Path) -> dict:
    script = PREAMBLE + substituted(readme_examples()[task], paths) + EPILOGUE
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "",
           "TRANSFER_CACHE_DIR": str(cwd / ".feature-cache"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads((cwd / "facts.json").read_text())


def displayed_size(path: Path) -> list[int]:
    with Image.open(path) as image:
        return list(ImageOps.exif_transpose(image).size)


def written_size(path: Path) -> list[int]:
    assert path.is_file(), f"{path} was not written"
    with Image.open(path) as image:
        return list(image.size)


# --- a few images of each fixture, copied into tmp ---------------------------------------------------
def flowers_subset(fixtures: Path, out: Path, per_class: int = 6) -> Path:
    for folder in sorted(p for p in require_fixture(fixtures / "flowers5").iterdir() if p.is_dir()):
        (out / folder.name).mkdir(parents=True)
        for image in sorted(folder.glob("*.jpg"))[:per_class]:
            shutil.copy(image, out / folder.name / image.name)
    return out


def raccoon_subset(fixtures: Path, out: Path, name: str, images: int) -> Path:
    """``out/name`` holding the boxes of the first ``images`` files of the fixture's CSV ``name``."""
    source = require_fixture(fixtures / "raccoon")
    with open(source / name, newline="") as f:
        rows = list(csv.reader(f))
    keep = list(dict.fromkeys(row[0] for row in rows[1:]))[:images]
    (out / "images").mkdir(parents=True, exist_ok=True)
    for filename in keep:
        shutil.copy(source / "images" / filename, out / "images" / filename)
    with open(out / name, "w", newline="") as f:
        csv.writer(f).writerows([rows[0]] + [row for row in rows[1:] if row[0] in keep])
    return out / name


def bccd_subset(fixtures: Path, out: Path, counts: dict[str, int]) -> Path:
    """A Pascal VOC folder of the first images of each of the fixture's split lists."""
    source = require_fixture(fixtures / "bccd")
    for folder in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    for split, count in counts.items():
        ids = (source / "ImageSets" / "Main" / f"{split}.txt").read_text().split()[:count]
        for stem in ids:
            shutil.copy(source / "JPEGImages" / f"{stem}.jpg", out / "JPEGImages")
            shutil.copy(source / "Annotations" / f"{stem}.xml", out / "Annotations")
        (out / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{stem}\n" for stem in ids))
    return out


def balloon_subset(fixtures: Path, out: Path, split: str, images: int) -> Path:
    """``out/split``: the first ``images`` images of the fixture's split and their VIA regions."""
    source = require_fixture(fixtures / "balloon" / split)
    regions = json.loads((source / "via_region_data.json").read_text())
    keep = dict(list(regions.items())[:images])
    (out / split).mkdir(parents=True)
    for entry in keep.values():
        shutil.copy(source / entry["filename"], out / split / entry["filename"])
    (out / split / "via_region_data.json").write_text(json.dumps(keep))
    return out / split


# --- the examples ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_classification_example(fixtures_dir, tmp_path):
    rose = sorted((fixtures_dir / "flowers5" / "rose").glob("*.jpg"))[0]
    facts = run_example("classify", {"flowers/": flowers_subset(fixtures_dir, tmp_path / "flowers"),
                                     "rose.jpg": rose}, tmp_path)
    assert facts["reader"] == "ExportedClassifier" and facts["report"] == "EvalReport"
    report = facts["to_dict"]
    assert report["num_images"] == 5  # 6 of each of 5 classes, split 80/20 by class
    assert facts["table"].splitlines()[-1] == f"accuracy {report['accuracy']:.4f} on 5 images"
    predictions = facts["result"]["predictions"]
    assert len(predictions) == 3 and {p["class"] for p in predictions} <= {"daisy", "dandelion", "rose",
                                                                          "sunflower", "tulip"}
    assert facts["result"]["file"] == str(rose)
    assert facts["drawn"] == ["Image", displayed_size(rose)] == ["Image", written_size(tmp_path / "drawn" / "rose.png")]


@pytest.mark.slow
def test_localization_example(fixtures_dir, tmp_path):
    photo = require_fixture(fixtures_dir / "raccoon" / "images" / "raccoon-1.jpg")
    paths = {"raccoon/train_labels.csv": raccoon_subset(fixtures_dir, tmp_path / "raccoon", "train_labels.csv", 10),
             "raccoon/test_labels.csv": raccoon_subset(fixtures_dir, tmp_path / "raccoon", "test_labels.csv", 4),
             "raccoon-1.jpg": photo}
    facts = run_example("localize", paths, tmp_path)
    assert facts["reader"] == "ExportedLocalizer" and facts["report"] == "LocalizeReport"
    assert facts["to_dict"]["num_images"] == 4 and f"mean IoU        {facts['to_dict']['mean_iou']:.3f}" in facts["table"]
    result = facts["result"]
    assert sorted(result) == ["box", "class", "file", "score"] and result["class"] == "raccoon"
    width, height = displayed_size(photo)
    xmin, ymin, xmax, ymax = result["box"]
    assert 0 <= xmin <= xmax <= width and 0 <= ymin <= ymax <= height
    assert facts["drawn"] == ["Image", [width, height]] == ["Image", written_size(tmp_path / "drawn" / "raccoon-1.png")]


@pytest.mark.slow
def test_detection_example(fixtures_dir, tmp_path):
    voc = bccd_subset(fixtures_dir, tmp_path / "bccd", {"train": 8, "val": 3})
    photo = require_fixture(fixtures_dir / "bccd" / "JPEGImages" / "BloodImage_00007.jpg")
    paths = {"bccd/ImageSets/Main/train.txt": voc / "ImageSets" / "Main" / "train.txt",
             "bccd/ImageSets/Main/val.txt": voc / "ImageSets" / "Main" / "val.txt", "BloodImage_00007.jpg": photo}
    facts = run_example("detect", paths, tmp_path)
    assert facts["reader"] == "ExportedDetector" and facts["report"] == "DetectionReport"
    assert facts["to_dict"]["num_images"] == 3 and set(facts["to_dict"]["per_class_ap"]) == {"Platelets", "RBC", "WBC"}
    assert list(facts["result"]) == ["detections"]  # from pixels: no file
    width, height = displayed_size(photo)
    for found in facts["result"]["detections"]:
        assert sorted(found) == ["box", "class", "score"] and found["class"] in ("Platelets", "RBC", "WBC")
        assert 0 <= found["box"][0] <= found["box"][2] <= width and 0 <= found["box"][1] <= found["box"][3] <= height
    assert facts["drawn"] == ["Image", [width, height]]
    assert written_size(tmp_path / "drawn" / "BloodImage_00007.png") == [width, height]


@pytest.mark.slow
def test_segmentation_example(fixtures_dir, tmp_path):
    train = balloon_subset(fixtures_dir, tmp_path / "balloon", "train", 5)
    val = balloon_subset(fixtures_dir, tmp_path / "balloon", "val", 2)
    photo = sorted(p for p in val.iterdir() if p.suffix == ".jpg")[0]
    facts = run_example("segment", {"balloon/train": train, "balloon/val": val, "balloon.jpg": photo}, tmp_path)
    assert facts["reader"] == "ExportedSegmenter" and facts["report"] == "SegmentReport"
    assert facts["to_dict"]["num_images"] == 2 and facts["to_dict"]["confusion_matrix"]["labels"] == ["background",
                                                                                                      "balloon"]
    with Image.open(photo) as image:
        stored = list(image.size)  # PIL images are answered as given: their stored pixels
    assert facts["result"]["mask"] == stored[::-1]  # [height, width]
    assert sum(facts["result"]["class_pixels"].values()) == pytest.approx(1.0, abs=1e-3)
    assert facts["drawn"] == ["Image", stored] == ["Image", written_size(tmp_path / "drawn" / "balloon.png")]


def test_every_task_has_a_readme_example_using_the_whole_api():
    examples = readme_examples()
    assert sorted(examples) == ["classify", "detect", "localize", "segment"]
    for task, block in examples.items():
        for call in ("transfer.load_data(", f'task="{task}"', "transfer.train(", "transfer.evaluate_run(",
                     ".table()", "transfer.export_run(", "transfer.load_export(", ".draw("):
            assert call in block, f"the {task} example lacks {call}"
        assert ".predict_files(" in block or ".predict_images(" in block
