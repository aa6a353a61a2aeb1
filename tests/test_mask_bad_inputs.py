"""Hostile and careless mask sources through the CLI (``check-data``, ``train --task segment``).

Each case asserts what the classification corpus asserts: the exit code, no
traceback, the bad file named, the inputs unchanged (checksums), and no run
folder left behind by a refusal. Commands run in a daemon thread with a
timeout, so a hang (a FIFO read) fails the test instead of blocking the suite.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.segmentfactory import VOID, write_mask_folder
from transfer.cli.main import app
from transfer.data.masks import load_mask_data
from transfer.data.masks.values import evenly_spread

TIMEOUT = 120  # seconds: far above any of these commands on two shared cores; a hang never ends
TRAIN = ("train", "--task", "segment", "--backbone", "smallcnn", "--weights", "none", "--image-size", "32",
         "--epochs", "1")
fifo_only = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes (POSIX)")


def invoke(*args: str):
    """``transfer ARGS`` in-process, in a daemon thread: a hang fails the test after ``TIMEOUT`` seconds."""
    box = {}
    thread = threading.Thread(target=lambda: box.update(result=CliRunner().invoke(app, list(args))), daemon=True)
    thread.start()
    thread.join(TIMEOUT)
    assert not thread.is_alive(), f"transfer {' '.join(args)} still running after {TIMEOUT}s (a hang)"
    result = box["result"]
    assert "Traceback" not in result.output, result.output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def checksums(root: Path) -> dict[str, str]:
    """Every entry under ``root``: a file's SHA-256, or what it is (a FIFO is never opened)."""
    out = {}
    for path in sorted(root.rglob("*")):
        mode = path.lstat().st_mode
        if stat.S_ISREG(mode):
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif not stat.S_ISDIR(mode):
            out[str(path.relative_to(root))] = f"mode {stat.S_IFMT(mode)}"
    return out


def as_fifo(path: Path) -> Path:
    path.unlink(missing_ok=True)
    os.mkfifo(path)
    return path


def set_pixel(path: Path, value: int) -> None:
    mask = np.array(Image.open(path))
    mask[0, 0] = value
    Image.fromarray(mask).save(path)


def all_ignored(path: Path, value: int = VOID) -> None:
    size = Image.open(path).size
    Image.fromarray(np.full((size[1], size[0]), value, np.uint8)).save(path)


# ---------------------------------------------------------------- FIFOs: named and skipped, never a hang


@fifo_only
def test_a_fifo_in_images_or_masks_is_named_per_file_not_a_hang(tmp_path):
    data = write_mask_folder(tmp_path / "data", 6, size=(32, 32))
    as_fifo(data / "images" / "img1.png")  # its mask exists: the image would be read for its size
    as_fifo(data / "masks" / "img3.png")  # its image exists: the mask would be read for its size and values
    before = checksums(data)

    result = invoke("check-data", str(data), "--image-size", "32", "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.output)
    named = {(Path(f["path"]).parent.name, Path(f["path"]).name) for f in report["findings"]
             if f["code"] == "not_regular_file"}
    assert named == {("images", "img1.png"), ("masks", "img3.png")}
    assert all(f["action"] == "skip" for f in report["findings"] if f["code"] == "not_regular_file")
    assert checksums(data) == before

    # Training's reader leaves both pairs out the same way (the thread guards against a hang).
    box = {}
    thread = threading.Thread(target=lambda: box.update(data=load_mask_data(data, val_fraction=0.3)), daemon=True)
    thread.start()
    thread.join(TIMEOUT)
    assert not thread.is_alive(), "load_mask_data hangs on a FIFO"
    split = box["data"].split
    used = {Path(p).name for p in split.train.sources + split.val.sources}
    assert used == {"img0.png", "img2.png", "img4.png", "img5.png"}


@fifo_only
def test_a_fifo_classes_txt_is_refused_naming_it(tmp_path):
    data = write_mask_folder(tmp_path / "data", 4, size=(32, 32))
    as_fifo(data / "classes.txt")
    result = invoke("check-data", str(data), "--image-size", "32")
    assert result.exit_code == 2 and "classes.txt" in result.output and "FIFO" in result.output, result.output


# ---------------------------------------------------------------- mask values: every mask, before training


def _mask_unscanned_by_a_sample(count: int, limit: int) -> str:
    """A mask name that the old evenly spread sample of ``limit`` masks (of ``count``) never decoded."""
    names = sorted(f"img{i}.png" for i in range(count))
    chosen = set(evenly_spread(count, limit))
    return next(names[i] for i in range(count) if i not in chosen)


def test_an_unknown_value_in_any_mask_stops_train_before_a_run_folder(tmp_path):
    data = write_mask_folder(tmp_path / "data", 70, size=(16, 16))
    bad = _mask_unscanned_by_a_sample(70, 64)  # reading used to decode 64 masks to learn the values
    set_pixel(data / "masks" / bad, 7)
    before = checksums(data)

    result = invoke(*TRAIN, "--data", str(data), "--out", str(tmp_path / "run"))
    assert result.exit_code == 2, result.output
    assert f"masks/{bad}" in result.output and "pixel value(s) 7" in result.output
    assert not (tmp_path / "run").exists()  # refused before the run folder: nothing half-made
    assert checksums(data) == before


def test_check_data_scans_every_mask_for_unknown_values(tmp_path):
    from transfer.data.masks import read_masks, seeded_mask_split

    data = write_mask_folder(tmp_path / "data", 510, size=(8, 8))
    # check-data used to decode at most 500 masks, spread evenly over its split (train, then val), after
    # reading had decoded 64 of the sorted masks: one that neither decoded.
    split = seeded_mask_split(read_masks(data)[0], val_fraction=0.2, seed=0)
    order = [Path(t.path).name for t in split.train.targets + split.val.targets]
    chosen = set(evenly_spread(len(order), 500))
    names = sorted(order)
    sampled = {names[i] for i in evenly_spread(len(names), 64)}
    bad = next(name for i, name in enumerate(order) if i not in chosen and name not in sampled)
    set_pixel(data / "masks" / bad, 9)
    result = invoke("check-data", str(data), "--image-size", "32", "--json")
    assert result.exit_code == 1, result.output[-2000:]
    report = json.loads(result.output)
    unknown = [f for f in report["findings"] if f["code"] == "mask_unknown_values"]
    assert [Path(f["path"]).name for f in unknown] == [bad] and unknown[0]["action"] == "stop"


# ---------------------------------------------------------------- masks with nothing labelled


def test_all_ignored_masks_are_named_and_training_refuses_nothing_to_learn(tmp_path):
    data = write_mask_folder(tmp_path / "data", 6, size=(32, 32), void=True)
    for path in (data / "masks").glob("*.png"):
        all_ignored(path)
    before = checksums(data)

    checked = invoke("check-data", str(data), "--ignore-index", str(VOID), "--image-size", "32", "--json")
    assert checked.exit_code == 1
    findings = json.loads(checked.output)["findings"]
    assert sorted(Path(f["path"]).name for f in findings if f["code"] == "mask_all_ignored") == [
        f"img{i}.png" for i in range(6)]
    assert any(f["code"] == "mask_nothing_to_score" and f["action"] == "stop" for f in findings)

    trained = invoke(*TRAIN, "--data", str(data), "--ignore-index", str(VOID), "--out", str(tmp_path / "run"))
    assert trained.exit_code == 2 and "nothing to learn" in trained.output, trained.output
    assert "loss 0" in trained.output and "img0.png" in trained.output
    assert not (tmp_path / "run").exists()
    assert checksums(data) == before


def test_some_all_ignored_masks_are_left_out_each_named(tmp_path):
    data = write_mask_folder(tmp_path / "data", 6, size=(32, 32), void=True)
    all_ignored(data / "masks" / "img2.png")
    found = load_mask_data(data, ignore_index=VOID, val_fraction=0.3)
    used = {Path(p).name for p in found.split.train.sources + found.split.val.sources}
    assert "img2.png" not in used and len(used) == 5
    assert [(f.code, Path(f.path).name) for f in found.findings if f.code == "mask_all_ignored"] == [
        ("mask_all_ignored", "img2.png")]


def test_a_validation_set_with_nothing_to_score_is_refused(tmp_path):
    write_mask_folder(tmp_path / "data" / "train", 4, size=(32, 32), void=True)
    val = write_mask_folder(tmp_path / "data" / "val", 3, size=(32, 32), start=10, void=True)
    for path in (val / "masks").glob("*.png"):
        all_ignored(path)

    trained = invoke(*TRAIN, "--data", str(tmp_path / "data"), "--ignore-index", str(VOID),
                     "--out", str(tmp_path / "run"))
    assert trained.exit_code == 2 and "validation has nothing to score" in trained.output, trained.output
    assert not (tmp_path / "run").exists()
    checked = invoke("check-data", str(tmp_path / "data"), "--ignore-index", str(VOID), "--json")
    stops = [f for f in json.loads(checked.output)["findings"] if f["code"] == "mask_nothing_to_score"]
    assert checked.exit_code == 1 and len(stops) == 1 and Path(stops[0]["path"]).name == "val"


# ---------------------------------------------------------------- --ignore-index: one rule, one message


def test_ignore_index_has_one_rule_and_message_for_train_and_check_data(tmp_path):
    data = write_mask_folder(tmp_path / "data", 3, size=(32, 32))
    for value in ("70000", "-1"):
        checked = invoke("check-data", str(data), "--ignore-index", value)
        trained = invoke(*TRAIN, "--data", str(data), "--ignore-index", value, "--out", str(tmp_path / "run"))
        assert checked.exit_code == trained.exit_code == 2
        message = f"--ignore-index {value} is not a mask pixel value: masks hold whole numbers 0..65535"
        assert message in checked.output and message in trained.output, (checked.output, trained.output)
        assert not (tmp_path / "run").exists()


def test_a_16_bit_ignore_value_above_255_is_taken_by_both_commands(tmp_path):
    """16-bit PNG masks are decoded (values up to 65535): train took 0-255 only, check-data 0-65535."""
    data = write_mask_folder(tmp_path / "data", 4, size=(32, 32))
    for path in sorted((data / "masks").glob("*.png")):
        mask = np.array(Image.open(path)).astype(np.uint16)
        mask[:8] = 1000  # the unlabelled band
        Image.fromarray(mask).save(path)  # mode I;16
    checked = invoke("check-data", str(data), "--ignore-index", "1000", "--image-size", "32", "--json")
    share = next(f for f in json.loads(checked.output)["findings"] if f["code"] == "mask_pixel_share")
    assert "ignored 25.00%" in share["detail"] and checked.exit_code == 0, checked.output
    for path in sorted((data / "masks").glob("*.png")):
        Image.fromarray(np.full((32, 32), 1000, np.uint16)).save(path)
    trained = invoke(*TRAIN, "--data", str(data), "--ignore-index", "1000", "--out", str(tmp_path / "run"))
    # Accepted as an option: refused only because every mask is now that value.
    assert trained.exit_code == 2 and "nothing to learn" in trained.output, trained.output


# ---------------------------------------------------------------- COCO segmentation: every annotation judged


def test_check_data_names_each_bad_coco_segmentation(tmp_path):
    for i in range(4):
        Image.fromarray(np.full((40, 50, 3), 40 * i + 20, np.uint8)).save(tmp_path / f"im{i}.png")
    big = "9" * 400
    annotations = [
        [[1, 1, 10, 1, 10, 10, 1, 10]],  # fine
        [[1, 1, 10, 1, 20, 1]],  # a line: no area
        [[1, 1, 10, 1]],  # 2 points
        [[1, 1, "BIG", 1, 10, 10]],  # an overflowing number
        [[1, 1, "a\u0000", 1, 10, 10]],  # a NUL in a coordinate
        {"size": [40, 50], "counts": [5, 10]},  # an RLE that does not cover the image
        [[500, 500, 600, 500, 600, 600]],  # outside the image
        {"size": [40, 50], "counts": "\u0000\u0000"},  # a NUL in compressed RLE
    ]
    document = {
        "images": [{"id": i, "file_name": f"im{i}.png", "width": 50, "height": 40} for i in range(4)],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [{"id": k, "image_id": k % 4, "category_id": 1, "bbox": [1, 1, 9, 9], "area": 81,
                         "iscrowd": 0, "segmentation": seg} for k, seg in enumerate(annotations)],
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(document).replace('"BIG"', big), encoding="utf-8")
    before = checksums(tmp_path)

    result = invoke("check-data", str(path), "--image-size", "32", "--json")
    assert result.exit_code == 1, result.output  # images with garbled regions are skipped
    findings = json.loads(result.output)["findings"]
    dropped = sorted(f["detail"].split(" ")[0] for f in findings if f["code"] == "mask_region_dropped")
    invalid = sorted("annotations[" + f["detail"].split("annotations[")[1].split(" ")[0] for f in findings
                     if f["code"] == "mask_region_invalid")
    # A line, 2 points, far outside: that region is not drawn. Garbled numbers or RLE: the image is left out.
    assert dropped == [f"annotations[{k}]" for k in (1, 2, 6)], dropped
    assert invalid == [f"annotations[{k}]" for k in (3, 4, 5, 7)], invalid
    assert all(f["path"].endswith(".png") and "ann.json" in f["detail"]
                         for f in findings if f["code"] == "mask_region_invalid")
    assert all(len(f["detail"]) < 300 for f in findings)  # a 400-digit number is shown cut short
    assert checksums(tmp_path) == before


def test_a_coco_file_with_an_overflowing_width_or_nul_file_name_reads_for_segmentation(tmp_path):
    from transfer.data.masks import list_masks

    Image.fromarray(np.zeros((40, 50, 3), np.uint8)).save(tmp_path / "im0.png")
    document = {
        "images": [{"id": 0, "file_name": "im0.png", "width": "W", "height": 40},
                   {"id": 1, "file_name": "nul\u0000.png", "width": 50, "height": 40}],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [{"id": 0, "image_id": 0, "category_id": 1, "segmentation": [[1, 1, 10, 1, 10, 10]]}],
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(document).replace('"W"', "9" * 400), encoding="utf-8")
    listing = list_masks(path)  # was: OverflowError, then ValueError (embedded null byte)
    assert [Path(p).name for p in listing.samples.sources] == ["im0.png"]
    assert any(f.code == "mask_annotation" and "NUL" in f.detail for f in listing.findings)


# ---------------------------------------------------------------- segmentation's words


def test_an_empty_mask_folder_is_a_stop_in_segmentation_words(tmp_path):
    (tmp_path / "data" / "images").mkdir(parents=True)
    (tmp_path / "data" / "masks").mkdir()
    checked = invoke("check-data", str(tmp_path / "data"))
    assert checked.exit_code == 1 and "mask_nothing_to_score" in checked.output, checked.output
    assert "path,label" not in checked.output and "class folder" not in checked.output
    trained = invoke(*TRAIN, "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run"))
    assert trained.exit_code == 2 and "no usable image with a mask" in trained.output, trained.output
    assert "path,label" not in trained.output and not (tmp_path / "run").exists()


# ---------------------------------------------------------------- TFDS masks: scanned as mask files are


def test_tfds_masks_with_a_value_no_class_has_stop_before_training():
    import io

    tf = pytest.importorskip("tensorflow")
    tfds = pytest.importorskip("tensorflow_datasets")

    def png(array) -> bytes:
        buffer = io.BytesIO()
        Image.fromarray(np.asarray(array, np.uint8)).save(buffer, format="PNG")
        return buffer.getvalue()

    trimap = np.full((6, 8), 2, np.uint8)
    trimap[2:4, 3:5] = 1
    stray = trimap.copy()
    stray[0, 0] = 7  # no class of the trimap (1 pet, 2 background, 3 border)
    masks = [trimap] * 4 + [stray, np.full((6, 8), 3, np.uint8)]  # the last: all border (ignored)
    examples = [{"image": png(np.full((6, 8, 3), 30 * i)), "segmentation_mask": png(m), "label": i, "species": 0,
                 "file_name": f"{i}.jpg", "head_bbox": np.array([0.1, 0.1, 0.5, 0.5], np.float32)}
                for i, m in enumerate(masks)]
    spec = {"image": tf.TensorSpec((), tf.string), "segmentation_mask": tf.TensorSpec((), tf.string),
            "label": tf.TensorSpec((), tf.int64), "species": tf.TensorSpec((), tf.int64),
            "file_name": tf.TensorSpec((), tf.string), "head_bbox": tf.TensorSpec((4,), tf.float32)}

    def as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False):
        return tf.data.Dataset.from_generator(lambda: iter(examples), output_signature=spec)

    from transfer.core.errors import TransferError

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        with pytest.raises(TransferError, match=r"train\[4\] mask: pixel value\(s\) 7") as e:
            load_mask_data("tfds:oxford_iiit_pet", val_fraction=0.4, seed=0)
        assert "train[5]" not in e.value.message  # all ignored: left out with a warning, not a stop
        from transfer.data.masks import list_masks

        listing = list_masks("tfds:oxford_iiit_pet")
    assert [(f.code, f.path) for f in listing.findings] == [
        ("mask_unknown_values", "tfds:oxford_iiit_pet/train[4] mask"),
        ("mask_all_ignored", "tfds:oxford_iiit_pet/train[5] mask")]
    assert len(listing.samples) == 5
