"""Polygon and RLE mask sources: VIA JSON, COCO JSON (polygons, RLE) and hostile files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import require_fixture
from tests.imagefactory import write_image
from transfer.data.masks import list_masks, load_mask, load_mask_data, mask_format, read_masks
from transfer.data.masks.jsonfile import load_json
from transfer.core.errors import TransferError


def via_region(xs, ys, **attributes) -> dict:
    return {"shape_attributes": {"name": "polygon", "all_points_x": list(xs), "all_points_y": list(ys)},
            "region_attributes": attributes}


def write_via(folder: Path, entries: dict, name: str = "via_region_data.json", size=(20, 10)) -> Path:
    """Images for every entry's filename (when it is a plain name) and the VIA file."""
    folder.mkdir(parents=True, exist_ok=True)
    listed = entries.get("_via_img_metadata", entries) if isinstance(entries, dict) else entries
    for i, entry in enumerate(listed.values() if isinstance(listed, dict) else listed):
        filename = entry.get("filename") if isinstance(entry, dict) else None
        if isinstance(filename, str) and "/" not in filename and filename.endswith(".jpg"):
            write_image(folder / filename, i % 3, i, size=size)
    path = folder / name
    path.write_text(json.dumps(entries), encoding="utf-8")
    return path


def codes(findings) -> list[str]:
    return sorted(f.code for f in findings)


# ---------------------------------------------------------------- VIA


def test_via_1x_dict_regions_one_class_named_by_the_folder(tmp_path):
    folder = tmp_path / "kites" / "train"
    write_via(folder, {
        "a.jpg123": {"filename": "a.jpg", "size": 123, "file_attributes": {},
                     "regions": {"0": via_region((2, 8, 8, 2), (2, 2, 6, 6))}},
        "b.jpg9": {"filename": "b.jpg", "size": 9, "regions": {}},
    })
    assert mask_format(folder) == "via"
    samples, findings = read_masks(folder)
    assert findings == []
    assert samples.class_names == ("background", "kites")  # train/ is a split: its parent names the class
    assert [Path(s).name for s in samples.sources] == ["a.jpg", "b.jpg"]
    a, b = samples.targets
    assert (a.width, a.height, a.kind, b.kind) == (20, 10, "polygons", "empty")
    expected = np.zeros((10, 20), np.uint8)
    expected[2:7, 2:9] = 1
    np.testing.assert_array_equal(load_mask(a), expected)
    assert not load_mask(b).any()


def test_via_2x_project_list_regions_class_attribute_and_shapes(tmp_path):
    metadata = {
        "a.jpg1": {"filename": "a.jpg", "regions": [
            via_region((0, 10, 10, 0), (0, 0, 9, 9), type="sky"),
            {"shape_attributes": {"name": "rect", "x": 12, "y": 1, "width": 4, "height": 3},
             "region_attributes": {"type": {"car": True, "sky": False}}},
            {"shape_attributes": {"name": "circle", "cx": 15, "cy": 7, "r": 2}, "region_attributes": {"type": "car"}},
            {"shape_attributes": {"name": "point", "cx": 1, "cy": 1}, "region_attributes": {"type": "car"}},
            via_region((1, 2, 3), (1, 2, 1), type=""),
        ]},
    }
    write_via(tmp_path, {"_via_settings": {}, "_via_img_metadata": metadata, "_via_attributes": {}})
    samples, findings = read_masks(tmp_path)
    assert samples.class_names == ("background", "car", "sky")
    mask = load_mask(samples.targets[0])
    assert (mask[0:10, 0:11] == 2).all() and (mask[1:5, 12:17] == 1).all() and mask[7, 15] == 1
    dropped = [f for f in findings if f.code == "mask_region_dropped"]
    assert len(dropped) == 2
    assert any("'point' is not a region" in f.detail for f in dropped)
    assert any("no class in its 'type' attribute" in f.detail for f in dropped)
    assert all(f.path.endswith("via_region_data.json") for f in dropped)


def test_via_polygons_outside_the_image_are_clipped_or_dropped_and_reported(tmp_path):
    write_via(tmp_path, {"a": {"filename": "a.jpg", "regions": [
        via_region((-5, 10, 10, -5), (0, 0, 4, 4)),  # reaches left: clipped
        via_region((100, 110, 105), (100, 100, 120)),  # wholly outside: dropped
        via_region((1, 2, 3), (1, 1, 1)),  # a line: dropped
    ]}})
    samples, findings = read_masks(tmp_path, class_names=["thing"])
    assert samples.class_names == ("background", "thing")
    assert codes(findings) == ["mask_region_clipped", "mask_region_dropped", "mask_region_dropped"]
    clipped = next(f for f in findings if f.code == "mask_region_clipped")
    assert "region 0" in clipped.detail and "a.jpg" in clipped.detail and "clipped" in clipped.detail
    assert samples.targets[0].polygons[0][1] == (0.0, 0.0, 10.0, 0.0, 10.0, 4.0, 0.0, 4.0)
    assert load_mask(samples.targets[0])[0:5, 0:11].all()


def test_via_hostile_files_raise_naming_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    for text, message in (
        ("{not json", "not valid JSON"),
        ('"filename"', "top level is a JSON str"),
        ("[" * 100000 + "]" * 100000, "nested too deeply"),
        ('{"a": {"filename": "a.jpg", "regions": [{"shape_attributes": {"name": "polygon", "all_points_x": [1'
         + "0" * 5000 + ", 2, 3], \"all_points_y\": [1, 2, 3]}}]}}", "not a VIA annotation file"),
    ):
        bad.write_text(text, encoding="utf-8")
        with pytest.raises(TransferError, match=message) as e:
            list_masks(bad) if mask_format(bad) else read_masks_via(bad)
        assert "bad.json" in str(e.value)
    big = tmp_path / "big.json"
    big.write_text("{}" + " " * 200, encoding="utf-8")
    with pytest.raises(TransferError, match=r"big\.json: 202 bytes is larger than any VIA annotation file"):
        load_json(big, what="VIA annotation", fix="", max_bytes=100)


def read_masks_via(path: Path):
    from transfer.data.masks.via import read_via_json

    return read_via_json(path)


def test_via_wrong_types_huge_numbers_and_paths_outside_the_root(tmp_path):
    folder = tmp_path / "data"
    write_image(tmp_path / "secret.jpg", size=(20, 10))
    write_via(folder, {
        "a": {"filename": "a.jpg", "regions": [via_region((1, 5, 5), (1, 1, 5)),
                                               via_region((1, 1e9, 5), (1, 1, 5)),
                                               via_region((1, float("inf"), 5), (1, 1, 5)),
                                               via_region((1, 5), (1, 1, 5)),
                                               {"shape_attributes": "polygon"}]},
        "n": {"filename": 42, "regions": []},
        "r": {"filename": "b.jpg", "regions": "oops"},
        "o": {"filename": "../secret.jpg", "regions": []},
    })
    listing = list_masks(folder)
    by_code = {}
    for f in listing.findings:
        by_code.setdefault(f.code, []).append(f.detail)
    assert sorted(by_code) == ["mask_annotation", "mask_outside_root", "mask_region_invalid", "mask_unannotated"]
    assert by_code["mask_unannotated"] == ["'via_region_data.json' has no entry for it"]  # b.jpg: its entry was bad
    # Garbled numbers leave their image out (its mask would miss those regions), each region named.
    invalid = " | ".join(by_code["mask_region_invalid"])
    assert "beyond any image" in invalid and "not a finite number" in invalid and "all_points_y 3" in invalid
    assert not any(s.endswith("a.jpg") for s in listing.samples.sources)
    annotation = " | ".join(by_code["mask_annotation"])
    assert "entry 'n' needs a 'filename'" in annotation and "'regions' must be an object or a list" in annotation
    assert "shape_attributes" in annotation
    assert "'../secret.jpg' points outside" in by_code["mask_outside_root"][0]
    with pytest.raises(TransferError, match="mask problem"):
        read_masks(folder)
    allowed = list_masks(folder, allow_outside_root=True)
    assert any(s.endswith("secret.jpg") for s in listing.samples.sources) is False
    assert any(s.endswith("secret.jpg") for s in allowed.samples.sources)


def test_balloon_fixture_61_13_background_and_balloon(fixtures_dir):
    root = require_fixture(fixtures_dir / "balloon")
    data = load_mask_data(root)
    assert (len(data.split.train), len(data.split.val)) == (61, 13)
    assert data.split.class_names == ("background", "balloon")
    target = data.split.val.targets[0]
    assert target.kind == "polygons"
    mask = load_mask(target, source=data.split.val.sources[0])
    assert mask.shape == (target.height, target.width) and max(target.width, target.height) >= 1000
    assert 0 < (mask == 1).mean() < 1 and set(np.unique(mask).tolist()) == {0, 1}
    assert all(t.polygons for t in data.split.train.targets)


# ---------------------------------------------------------------- COCO


def coco(images, annotations, categories=({"id": 1, "name": "disc"}, {"id": 5, "name": "bar"})) -> dict:
    return {"images": list(images), "annotations": list(annotations), "categories": list(categories)}


def test_coco_polygons_and_rle_round_trip_a_hand_made_mask(tmp_path):
    from pycocotools import mask as mask_utils

    write_image(tmp_path / "images" / "a.jpg", size=(24, 16))
    write_image(tmp_path / "images" / "b.jpg", 1, 1, size=(24, 16))
    write_image(tmp_path / "images" / "empty.jpg", 2, 2, size=(24, 16))
    ys, xs = np.mgrid[0:16, 0:24]
    disc = ((xs - 8) ** 2 + (ys - 8) ** 2 <= 25).astype(np.uint8)  # class 1 (disc)
    bar = np.zeros((16, 24), np.uint8)
    bar[3:12, 14:20] = 1  # class 2 (bar, category id 5)
    compressed = mask_utils.encode(np.asfortranarray(disc))
    crowd_counts = [int(v) for v in _runs(bar)]  # uncompressed, as crowd regions write it
    document = coco(
        [{"id": 1, "file_name": "a.jpg", "width": 24, "height": 16}, {"id": "b", "file_name": "b.jpg"},
         {"id": 3, "file_name": "empty.jpg"}],
        [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0,
          "segmentation": {"size": [16, 24], "counts": compressed["counts"].decode("ascii")}},
         {"id": 2, "image_id": 1, "category_id": 5, "iscrowd": 1, "segmentation": {"size": [16, 24],
                                                                                    "counts": crowd_counts}},
         {"id": 3, "image_id": "b", "category_id": 5, "segmentation": [[14, 3, 19, 3, 19, 11, 14, 11]]}],
    )
    (tmp_path / "annotations.json").write_text(json.dumps(document), encoding="utf-8")
    assert mask_format(tmp_path / "annotations.json") == "coco"
    samples, findings = read_masks(tmp_path / "annotations.json")
    assert findings == []
    assert samples.class_names == ("background", "disc", "bar")  # category id order
    a, b, empty = samples.targets
    assert (a.kind, b.kind, empty.kind) == ("rle", "polygons", "empty")
    expected = np.where(bar == 1, 2, disc).astype(np.uint8)  # the bar is drawn after the disc
    np.testing.assert_array_equal(load_mask(a), expected)
    np.testing.assert_array_equal(load_mask(b), bar * 2)


def _runs(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO run lengths (column-major, starting with a run of 0s)."""
    flat = mask.flatten(order="F")
    runs, current, count = [], 0, 0
    for v in flat:
        if v == current:
            count += 1
        else:
            runs.append(count)
            current, count = v, 1
    return runs + [count]


def test_coco_polygons_and_rle_of_one_image_keep_their_order(tmp_path):
    from pycocotools import mask as mask_utils

    write_image(tmp_path / "a.jpg", size=(12, 8))
    full = np.ones((8, 12), np.uint8)
    document = coco([{"id": 1, "file_name": "a.jpg"}], [
        {"image_id": 1, "category_id": 1, "segmentation": [[0, 0, 11, 0, 11, 7, 0, 7]]},
        {"image_id": 1, "category_id": 5, "segmentation": {
            "size": [8, 12], "counts": mask_utils.encode(np.asfortranarray(full))["counts"].decode()}},
    ])
    (tmp_path / "c.json").write_text(json.dumps(document), encoding="utf-8")
    samples, _ = read_masks(tmp_path / "c.json")
    assert samples.targets[0].kind == "rle" and len(samples.targets[0].rle) == 2
    assert (load_mask(samples.targets[0]) == 2).all()  # the later RLE covers the earlier polygon


def test_coco_bad_entries_and_malformed_rle_are_named(tmp_path):
    write_image(tmp_path / "a.jpg", size=(12, 8))
    document = coco([{"id": 1, "file_name": "a.jpg"}, {"id": 2}, {"id": 3, "file_name": "../x.jpg"}], [
        {"image_id": 1, "category_id": 1, "segmentation": {"size": [8, 12], "counts": [10, 5]}},  # 15 != 96
        {"image_id": 1, "category_id": 1, "segmentation": {"size": [8, 12], "counts": "\x7f\x7f"}},
        {"image_id": 1, "category_id": 1, "segmentation": {"size": [9, 12], "counts": [108]}},
        {"image_id": 1, "category_id": 1, "bbox": [1, 1, 2, 2]},
        {"image_id": 1, "category_id": 99, "segmentation": [[0, 0, 1, 0, 1, 1]]},
        {"image_id": 7, "category_id": 1, "segmentation": [[0, 0, 1, 0, 1, 1]]},
        "nonsense",
    ])
    (tmp_path / "c.json").write_text(json.dumps(document), encoding="utf-8")
    listing = list_masks(tmp_path / "c.json")
    details = " | ".join(f"{f.code}: {f.detail}" for f in listing.findings)
    assert "runs cover 15 pixels, not 12x8 = 96" in details
    assert "counts are malformed" in details
    assert "size [9, 12] is not the image's [height, width] [8, 12]" in details
    assert "has no segmentation (only a box?)" in details
    assert "category_id 99" in details and "image_id 7" in details and "images[1] needs" in details
    assert "annotations[6] is a str" in details
    assert "mask_outside_root: images[2]: '../x.jpg' points outside" in details
    # Broken RLEs leave their image out (named as the image's finding); a dropped region alone would not.
    assert not any(s.endswith("a.jpg") for s in listing.samples.sources)
    assert {f.path for f in listing.findings if f.code == "mask_region_invalid"} == {str(tmp_path / "a.jpg")}
    for text in ("[]", '{"images": {}, "categories": []}'):
        (tmp_path / "c.json").write_text(text, encoding="utf-8")
        with pytest.raises(TransferError, match=r"c\.json: expected an object with 'images' and 'categories'"):
            list_masks(tmp_path / "c.json")
