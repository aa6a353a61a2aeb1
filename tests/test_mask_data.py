"""Mask files (images/ + masks/, image/ + label/): decoding, class values, findings, splits and check-data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import require_fixture
from tests.imagefactory import write_image
from transfer.data.doctor import check_data
from transfer.data.masks import (
    IGNORE_VALUE, Mask, list_mask_source, load_mask, load_mask_data, mask_format, read_masks, split_folders,
)
from transfer.core.errors import TransferError


def write_mask(path: Path, array, mode: str | None = None, fmt: str | None = None) -> Path:
    """``array`` (uint8 [h, w], or [h, w, 3]) saved with PIL at ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8), mode=mode).save(path, format=fmt)
    return path


def blocks(width: int, height: int, values) -> np.ndarray:
    """A [height, width] mask of vertical bands, one per value (JPEG-friendly: flat 8-pixel blocks)."""
    out = np.zeros((height, width), np.uint8)
    edges = np.linspace(0, width, len(values) + 1).astype(int)
    for value, x0, x1 in zip(values, edges[:-1], edges[1:]):
        out[:, x0:x1] = value
    return out


def pair(root: Path, stem: str, mask: np.ndarray, *, image_ext: str = ".jpg", mask_ext: str = ".png",
         dirs=("images", "masks"), image_size=None, index: int = 0) -> tuple[Path, Path]:
    height, width = mask.shape[:2]
    image = write_image(root / dirs[0] / f"{stem}{image_ext}", index % 3, index, size=image_size or (width, height))
    return image, write_mask(root / dirs[1] / f"{stem}{mask_ext}", mask)


def codes(findings) -> list[str]:
    return sorted(f.code for f in findings)


# ---------------------------------------------------------------- load_mask: polygons and files


def test_polygons_fill_in_order_against_a_hand_made_mask():
    rectangle = (1, (1, 1, 4, 1, 4, 3, 1, 3))  # class 1: columns 1..4, rows 1..3 (edges included)
    triangle = (2, (0, 0, 4, 0, 0, 4))  # class 2: pixels with x + y <= 4
    expected = np.zeros((5, 6), np.uint8)
    expected[1:4, 1:5] = 1
    ys, xs = np.mgrid[0:5, 0:6]
    expected[(xs + ys <= 4)] = 2  # drawn after the rectangle: over it
    got = load_mask(Mask(width=6, height=5, polygons=(rectangle, triangle)))
    assert got.dtype == np.uint8 and got.shape == (5, 6)
    np.testing.assert_array_equal(got, expected)

    reversed_order = load_mask(Mask(width=6, height=5, polygons=(triangle, rectangle)))
    expected_reversed = np.where(xs + ys <= 4, 2, 0).astype(np.uint8)
    expected_reversed[1:4, 1:5] = 1
    np.testing.assert_array_equal(reversed_order, expected_reversed)
    assert load_mask(Mask(width=3, height=2)).tolist() == [[0, 0, 0], [0, 0, 0]]  # "empty": all background


def test_mask_file_modes_palette_grey_rgb_16_bit_and_bilevel(tmp_path):
    values = blocks(8, 4, [0, 1, 2, 3])
    palette = Image.fromarray(values, mode="P")
    palette.putpalette([200, 0, 0, 0, 200, 0, 0, 0, 200, 9, 9, 9] + [0] * 756)  # colours differ from indices
    palette.save(tmp_path / "p.png")
    write_mask(tmp_path / "l.png", values)
    write_mask(tmp_path / "rgb.png", np.stack([values] * 3, axis=-1))
    Image.fromarray(values.astype(np.uint16) * 1000).save(tmp_path / "i16.png")
    Image.fromarray(values > 1).convert("1").save(tmp_path / "bilevel.png")
    table = tuple((v, v) for v in range(4))
    for name in ("p.png", "l.png", "rgb.png"):
        mask = Mask(8, 4, path=str(tmp_path / name), values=table)
        np.testing.assert_array_equal(load_mask(mask), values, err_msg=name)
    wide = Mask(8, 4, path=str(tmp_path / "i16.png"), values=tuple((v * 1000, v) for v in range(4)))
    np.testing.assert_array_equal(load_mask(wide), values)
    bilevel = Mask(8, 4, path=str(tmp_path / "bilevel.png"), values=((0, 0), (255, 1)))
    np.testing.assert_array_equal(load_mask(bilevel), (values > 1).astype(np.uint8))
    # values=None: the file already holds class indices
    assert load_mask(Mask(8, 4, path=str(tmp_path / "l.png"))).max() == 3

    colour = np.zeros((4, 8, 3), np.uint8)
    colour[:, 4:] = (128, 64, 128)
    write_mask(tmp_path / "colour.png", colour)
    with pytest.raises(TransferError, match=r"colour\.png: a colour mask"):
        load_mask(Mask(8, 4, path=str(tmp_path / "colour.png"), values=table))


def test_load_mask_names_the_file_and_unknown_values_and_both_sizes(tmp_path):
    path = write_mask(tmp_path / "m.png", blocks(8, 4, [0, 1, 7]))
    with pytest.raises(TransferError, match=r"m\.png \(the mask of 'img\.jpg'\): pixel value\(s\) 7 "):
        load_mask(Mask(8, 4, path=str(path), values=((0, 0), (1, 1))), source="img.jpg")
    with pytest.raises(TransferError, match=r"m\.png: the mask is 8x4 but its image 'img\.jpg' is 9x4"):
        load_mask(Mask(9, 4, path=str(path), values=((0, 0), (1, 1), (7, 2))), source="img.jpg")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(TransferError, match=r"broken\.png: the mask cannot be decoded"):
        load_mask(Mask(8, 4, path=str(tmp_path / "broken.png"), values=((0, 0),)))


# ---------------------------------------------------------------- folders: layouts and classes


def test_images_masks_folder_with_classes_txt_and_a_greyscale_image(tmp_path):
    root = tmp_path / "data"
    pair(root, "b", blocks(16, 8, [0, 1, 2]))
    pair(root, "a", blocks(16, 8, [2, 1]), index=1)
    Image.fromarray(np.full((8, 16), 90, np.uint8), mode="L").save(root / "images" / "c.png")  # greyscale image
    write_mask(root / "masks" / "c.png", blocks(16, 8, [1]))
    (root / "classes.txt").write_text("sky\n# a comment\nroad\n\ncar\n", encoding="utf-8")

    assert mask_format(root) == "folder"
    samples, findings = read_masks(root)
    assert findings == []
    assert samples.class_names == ("sky", "road", "car")
    assert [Path(s).name for s in samples.sources] == ["a.jpg", "b.jpg", "c.png"]
    first = samples.targets[0]
    assert (first.width, first.height, Path(first.path).name) == (16, 8, "a.png")
    assert first.values == ((0, 0), (1, 1), (2, 2))
    np.testing.assert_array_equal(load_mask(samples.targets[1]), blocks(16, 8, [0, 1, 2]))

    renamed, _ = read_masks(root, class_names=["s", "r", "c", "extra"])  # --class-names wins over classes.txt
    assert renamed.class_names == ("s", "r", "c", "extra")


def test_image_label_layout_binary_0_255_is_background_foreground(tmp_path):
    for i in range(3):
        pair(tmp_path, str(i), blocks(16, 16, [0, 255, 0][: i + 2]), image_ext=".png", dirs=("image", "label"))
    samples, findings = read_masks(tmp_path)
    assert findings == []
    assert samples.class_names == ("background", "foreground")
    assert samples.targets[0].values == ((0, 0), (255, 1))
    assert sorted(np.unique(load_mask(samples.targets[0])).tolist()) == [0, 1]
    named, _ = read_masks(tmp_path, class_names=["cytoplasm", "cell"])  # two names over 0/255: 255 is class 1
    assert named.class_names == ("cytoplasm", "cell") and named.targets[0].values == ((0, 0), (255, 1))


def test_values_found_name_the_classes_with_a_finding_when_nothing_names_them(tmp_path):
    pair(tmp_path, "a", blocks(16, 8, [0, 3]))
    pair(tmp_path, "b", blocks(16, 8, [7, 0]), index=1)
    samples, findings = read_masks(tmp_path)
    assert samples.class_names == ("0", "3", "7")
    assert codes(findings) == ["mask_classes"]
    assert "values found in all 2 masks: 0, 3, 7" in findings[0].detail
    np.testing.assert_array_equal(load_mask(samples.targets[1]), blocks(16, 8, [2, 0]))


def test_ignore_index_loads_as_ignore_value_and_may_not_be_a_class(tmp_path):
    pair(tmp_path, "a", blocks(16, 8, [0, 1, 2, 11]))
    samples, _ = read_masks(tmp_path, class_names=["x", "y", "z"], ignore_index=11)
    assert samples.targets[0].values[-1] == (11, IGNORE_VALUE)
    np.testing.assert_array_equal(load_mask(samples.targets[0]), blocks(16, 8, [0, 1, 2, IGNORE_VALUE]))
    with pytest.raises(TransferError, match=r"ignore_index 1 is the pixel value of class 'y'"):
        read_masks(tmp_path, class_names=["x", "y", "z"], ignore_index=1)


def test_unknown_values_stop_reading_naming_the_file_and_the_values(tmp_path):
    pair(tmp_path, "good", blocks(16, 8, [0, 1]))
    pair(tmp_path, "bad", blocks(16, 8, [0, 1, 5]), index=1)
    with pytest.raises(TransferError, match=r"bad\.png: pixel value\(s\) 5 \(\d+ pixels\) are not class values") as e:
        read_masks(tmp_path, class_names=["a", "b"])
    assert "--ignore-index" in str(e.value)


def test_jpeg_masks_are_thresholded_with_a_warning(tmp_path):
    ys, xs = np.mgrid[0:32, 0:64]
    original = np.where((xs - 30) ** 2 + (ys - 15) ** 2 < 13 ** 2, 255, 0).astype(np.uint8)  # edges JPEG blurs
    pair(tmp_path, "a", original, mask_ext=".jpg")
    samples, findings = read_masks(tmp_path)
    assert samples.class_names == ("background", "foreground")
    assert codes(findings) == ["mask_jpeg"] and findings[0].severity == "warning"
    assert "1 JPEG mask(s) (a.jpg) are thresholded" in findings[0].detail
    raw = np.asarray(Image.open(samples.targets[0].path))
    assert len(np.unique(raw)) > 2  # JPEG really blurred the values
    loaded = load_mask(samples.targets[0])
    assert set(np.unique(loaded).tolist()) <= {0, 1}
    assert (loaded == (original // 255)).mean() > 0.99


def test_a_png_mask_is_preferred_to_a_jpeg_mask_of_the_same_name(tmp_path):
    pair(tmp_path, "a", blocks(16, 8, [0, 255]))
    write_mask(tmp_path / "masks" / "a.jpg", blocks(16, 8, [255, 0]))
    samples, findings = read_masks(tmp_path)
    assert Path(samples.targets[0].path).name == "a.png" and not samples.targets[0].threshold
    assert [(f.code, Path(f.path).name) for f in findings] == [("mask_orphan", "a.jpg")]


def test_missing_masks_missing_images_and_size_mismatch_are_named(tmp_path):
    pair(tmp_path, "ok", blocks(16, 8, [0, 255]))
    write_image(tmp_path / "images" / "lonely.jpg", size=(16, 8))
    write_mask(tmp_path / "masks" / "orphan.png", blocks(16, 8, [0]))
    pair(tmp_path, "wrong", blocks(16, 8, [0, 255]), image_size=(20, 8), index=1)
    samples, findings = read_masks(tmp_path)
    assert [Path(s).name for s in samples.sources] == ["ok.jpg"]
    by_code = {f.code: f for f in findings}
    assert set(by_code) == {"mask_missing", "mask_orphan", "mask_size_mismatch"}
    assert by_code["mask_missing"].path.endswith("lonely.jpg") and "lonely.png" in by_code["mask_missing"].detail
    assert by_code["mask_orphan"].path.endswith("orphan.png")
    mismatch = by_code["mask_size_mismatch"]
    assert mismatch.path.endswith("wrong.png") and mismatch.related.endswith("wrong.jpg")
    assert "the mask is 16x8 but its image" in mismatch.detail and "wrong.jpg' is 20x8" in mismatch.detail


def test_not_a_mask_source_says_what_is_expected(tmp_path):
    write_image(tmp_path / "cat" / "1.jpg")
    assert mask_format(tmp_path) is None
    with pytest.raises(TransferError, match="not a mask source") as e:
        read_masks(tmp_path)
    assert "images/ and masks/" in str(e.value)


# ---------------------------------------------------------------- splits


def test_train_val_folders_share_training_classes_and_values(tmp_path):
    for split, count in (("train", 4), ("val", 2)):
        for i in range(count):
            pair(tmp_path / split, f"{split}{i}", blocks(16, 8, [0, 255]), index=i)
    assert split_folders(tmp_path) == (tmp_path / "train", tmp_path / "val")
    data = load_mask_data(tmp_path)
    assert (len(data.split.train), len(data.split.val)) == (4, 2)
    assert data.split.origin == "folders train/ val/"
    assert data.split.val.targets[0].values == ((0, 0), (255, 1))
    with pytest.raises(TransferError, match="holds train/ and val/"):
        read_masks(tmp_path)


def test_seeded_split_is_reproducible_and_a_val_source_must_name_the_same_classes(tmp_path):
    for i in range(10):
        pair(tmp_path / "all", f"{i:02d}", blocks(16, 8, [0, 1, 2]), index=i)
    first = load_mask_data(tmp_path / "all", class_names=["a", "b", "c"], val_fraction=0.3, seed=3)
    again = load_mask_data(tmp_path / "all", class_names=["a", "b", "c"], val_fraction=0.3, seed=3)
    other = load_mask_data(tmp_path / "all", class_names=["a", "b", "c"], val_fraction=0.3, seed=4)
    assert len(first.split.val) == 3 and first.split.val.sources == again.split.val.sources
    assert other.split.val.sources != first.split.val.sources

    pair(tmp_path / "other", "x", blocks(16, 8, [0, 1, 2]))
    (tmp_path / "other" / "classes.txt").write_text("a\nb\nz\n", encoding="utf-8")
    with pytest.raises(TransferError, match=r"classes\.txt names the classes \['a', 'b', 'z'\]"):
        load_mask_data(tmp_path / "all", val_source=tmp_path / "other", class_names=["a", "b", "c"])


# ---------------------------------------------------------------- check-data


def test_check_data_names_every_mask_problem_with_its_file(tmp_path):
    for i in range(4):
        pair(tmp_path, f"ok{i}", blocks(16, 8, [0, 1]), index=i)
    write_image(tmp_path / "images" / "nomask.jpg", size=(16, 8))
    pair(tmp_path, "small", blocks(16, 8, [0, 1]), image_size=(32, 8), index=1)
    pair(tmp_path, "stray", blocks(16, 8, [0, 1, 9]), index=2)
    (tmp_path / "classes.txt").write_text("ground\nplant\nrare\n", encoding="utf-8")

    split, samples, extra, root, given = list_mask_source(tmp_path, 0.2, 0, False)
    assert split is not None and not given
    found = {(f.code, Path(f.path).name) for f in extra}
    assert {("mask_missing", "nomask.jpg"), ("mask_size_mismatch", "small.png"),
            ("mask_unknown_values", "stray.png"), ("mask_rare_class", tmp_path.name)} <= found
    assert any(f.code == "mask_rare_class" and "'rare' covers no pixel" in f.detail for f in extra)
    share = next(f for f in extra if f.code == "mask_pixel_share")
    assert "ground 50.00%, plant 50.00%, rare 0.00%" in share.detail

    report = check_data(tmp_path, near_duplicates=False)
    assert report.exit_code == 1 and report.stops
    table = report.table()
    for name in ("nomask.jpg", "small.png", "stray.png", "pixel value(s) 9"):
        assert name in table


def test_check_data_command_takes_class_names_and_ignore_index(tmp_path):
    from typer.testing import CliRunner

    from transfer.cli.main import app

    for i in range(3):
        pair(tmp_path, f"a{i}", blocks(24, 8, [0, 1, 9]), index=i)
    runner = CliRunner()
    failing = runner.invoke(app, ["check-data", str(tmp_path), "--class-names", "dirt,grass"])
    assert failing.exit_code == 1 and "mask_unknown_values" in failing.output and "a0.png" in failing.output
    clean = runner.invoke(app, ["check-data", str(tmp_path), "--class-names", "dirt,grass", "--ignore-index", "9"])
    assert clean.exit_code == 0, clean.output
    assert "dirt 33.33%, grass 33.33%, ignored 33.33%" in clean.output


# ---------------------------------------------------------------- real fixtures


def test_camvid_fixture_11_classes_void_ignored(fixtures_dir):
    root = require_fixture(fixtures_dir / "camvid")
    data = load_mask_data(root, ignore_index=11)
    assert (len(data.split.train), len(data.split.val)) == (367, 101)
    assert data.split.class_names[:2] == ("Sky", "Building") and len(data.split.class_names) == 11
    assert data.warnings() == []
    mask = load_mask(data.split.val.targets[0], source=data.split.val.sources[0])
    assert mask.shape == (360, 480)
    values = set(np.unique(mask).tolist())
    assert values <= set(range(11)) | {IGNORE_VALUE} and IGNORE_VALUE in values and len(values) > 3
    with pytest.raises(TransferError, match=r"pixel value\(s\) 11"):
        load_mask_data(root)  # void not ignored: named, not trained on


def test_membrane_fixture_binary_and_a_seeded_split_of_5(fixtures_dir):
    root = require_fixture(fixtures_dir / "membrane" / "train")
    data = load_mask_data(root, val_fraction=5 / 30, seed=0)
    assert (len(data.split.train), len(data.split.val)) == (25, 5)
    assert data.split.class_names == ("background", "foreground")
    assert load_mask_data(root, val_fraction=5 / 30, seed=0).split.val.sources == data.split.val.sources
    mask = load_mask(data.split.train.targets[0])
    assert mask.shape == (512, 512) and set(np.unique(mask).tolist()) == {0, 1}
