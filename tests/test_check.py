"""The data doctor: header parsing, image inspection, checks, the report, drop_unreadable, quarantine, CLI."""

from __future__ import annotations

import io
import json
import logging
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.conftest import require_fixture
from tests.imagefactory import image_array, write_class_images, write_csv, write_image_folder
from transfer.core import imagesize
from transfer.cli.main import app
from transfer.data import doctor
from transfer.data.doctor import (
    CHECKS,
    check_data,
    check_split,
    drop_unreadable,
    inspect_image,
    near_duplicate_pairs,
    quarantine,
    register,
)
from transfer.data.sources.csvfile import list_csv, read_csv_dataset
from transfer.data.findings import PROBLEMS, finding
from transfer.data.sources.folder import list_class_folders, read_class_folders
from transfer.data.samples import DataSplit, Samples
from transfer.core.errors import TransferError


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


RGB = Image.fromarray(image_array(2, 3, size=(37, 23)))
RGBA = RGB.convert("RGBA")
RGBA.putalpha(128)


# ---------------------------------------------------------------- imagesize


@pytest.mark.parametrize("fmt, mode, options, color, depth, alpha", [
    ("JPEG", "RGB", {}, "rgb", 8, False),
    ("JPEG", "L", {}, "gray", 8, False),
    ("JPEG", "CMYK", {}, "cmyk", 8, False),
    ("JPEG", "RGB", {"progressive": True}, "rgb", 8, False),
    ("PNG", "RGB", {}, "rgb", 8, False),
    ("PNG", "RGBA", {}, "rgba", 8, True),
    ("PNG", "LA", {}, "gray+alpha", 8, True),
    ("PNG", "P", {"transparency": 0}, "palette", 8, True),
    ("PNG", "1", {}, "gray", 1, False),
    ("PNG", "I;16", {}, "gray", 16, False),
    ("GIF", "RGB", {}, "palette", 8, False),
    ("BMP", "RGB", {}, "rgb", 24, False),
    ("BMP", "1", {}, "palette", 1, False),
    ("WEBP", "RGB", {}, "rgb", 8, False),
    ("WEBP", "RGB", {"lossless": True}, "rgb", 8, False),
    ("WEBP", "RGBA", {}, "rgba", 8, True),
])
def test_read_header_matches_pil(fmt, mode, options, color, depth, alpha):
    data = encode(RGBA if mode == "RGBA" else RGB.convert(mode), fmt, **options)
    header = imagesize.read_header(data)
    assert (header.width, header.height) == (37, 23) == Image.open(io.BytesIO(data)).size
    assert header.format == fmt.lower() == Image.open(io.BytesIO(data)).format.lower()
    assert header.bit_depth == depth and header.alpha == alpha and header.color == color


def test_read_header_huge_declarations_and_broken_headers():
    # A PNG header declaring 30000x30000 (nothing else needed to refuse it).
    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 1, 0, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    assert imagesize.read_header(bomb).pixels == 900_000_000
    jpeg = encode(RGB, "JPEG")
    for cut in (3, 10, 20, 100):
        with pytest.raises(imagesize.TruncatedHeader):
            imagesize.read_header(jpeg[:cut])
    with pytest.raises(ValueError, match="no frame header"):
        imagesize.read_header(jpeg[:20] + b"\xff\xda\x00\x02" + b"\x00" * 50)
    with pytest.raises(ValueError, match="it holds a PDF document"):
        imagesize.read_header(b"%PDF-1.4 ...")
    with pytest.raises(ValueError, match="declares 0x5"):
        imagesize.read_header(encode(RGB, "GIF")[:6] + struct.pack("<HH", 0, 5) + b"\x00" * 20)
    # Stray bytes between JPEG segments are skipped, as libjpeg does.
    assert imagesize.read_header(jpeg[:20] + b"\x00\x00" + jpeg[20:]).width == 37


@pytest.mark.parametrize("data, kind", [
    (b"II*\x00rest", "tiff"), (b"\x00\x00\x01\x00\x01\x00", "ico"), (b"\x00\x00\x00\x18ftypheic", "heic"),
    (b"\x00\x00\x00\x18ftypavif", "avif"), (b"\x00\x00\x00\x18ftypisom", "video"), (b"\xff\x0a\xfa", "jpegxl"),
    (b"8BPS\x00\x01", "psd"), (b"%PDF-1.7", "pdf"), (b"PK\x03\x04", "zip"), (b"\x1f\x8b\x08", "gzip"),
    (b"  <!DOCTYPE html><html>", "html"), (b"<?xml version='1.0'?><svg/>", "svg"),
    (b"<?xml version='1.0'?><a/>", "xml"),
    (b"just some words\n", "text"), (b"\x00\x9f\x92\x96", None), (b"", None),
])
def test_sniff_names_what_a_file_holds(data, kind):
    assert imagesize.sniff(data) == kind
    assert imagesize.contents(kind)


def test_looks_truncated():
    for fmt in ("JPEG", "PNG", "GIF", "BMP", "WEBP"):
        data = encode(RGB, fmt)
        assert not imagesize.looks_truncated(data), fmt
        assert imagesize.looks_truncated(data[: len(data) // 2]), fmt


# ---------------------------------------------------------------- inspect_image


@pytest.mark.parametrize("name, data, code", [
    ("empty.jpg", b"", "empty_file"),
    ("text.jpg", b"hello there\n", "not_image"),
    ("cut.jpg", encode(RGB, "JPEG")[:300], "truncated"),
    ("cut.png", encode(RGB, "PNG")[:-12], "truncated"),
    ("tiff.png", encode(RGB, "TIFF"), "unsupported_format"),
    ("bit.bmp", encode(RGB.convert("1"), "BMP"), "unsupported_format"),
    ("fine.jpg", encode(RGB, "PNG"), None),
    ("fine.gif", encode(RGB, "GIF"), None),
])
def test_inspect_image_codes(tmp_path, name, data, code):
    path = tmp_path / name
    path.write_bytes(data)
    info = inspect_image(str(path))
    assert (info.error or (None,))[0] == code
    if code is None:
        assert (info.width, info.height) == (37, 23) and info.dhash is not None and info.digest


def test_inspect_image_limit_and_cache(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(encode(Image.new("RGB", (400, 300)), "PNG"))
    assert inspect_image(str(path), max_pixels=100_000).error[0] == "too_large"
    first = inspect_image(str(path))
    assert first.error is None and inspect_image(str(path)) is first  # cached
    path.write_bytes(encode(Image.new("RGB", (40, 30)), "PNG"))
    assert inspect_image(str(path)).width == 40  # a changed file is inspected again
    assert inspect_image(str(tmp_path / "gone.jpg")).error[0] == "missing_file"


def test_exif_orientation_and_animation_are_reported(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 8
    (tmp_path / "a").mkdir()
    RGB.save(tmp_path / "a" / "rotated.jpg", exif=exif)
    RGB.save(tmp_path / "a" / "moving.gif", save_all=True, append_images=[RGB.rotate(90)])
    write_class_images(tmp_path / "b", 1, 2)
    report = check_data(tmp_path, image_size=32)
    codes = {(Path(f.path).name, f.code): f for f in report.findings}
    assert "rotated 270 degrees" in codes[("rotated.jpg", "exif_orientation")].detail
    assert codes[("moving.gif", "animated")].action == "convert"


# ---------------------------------------------------------------- checks and the report


def test_near_duplicate_pairs_matches_brute_force():
    rng = np.random.default_rng(0)
    base = [int(x) for x in rng.integers(0, 2**63, 40, dtype=np.int64)]
    hashes = base + [h ^ (1 << int(rng.integers(0, 64))) ^ (1 << int(rng.integers(0, 64))) for h in base[:10]]
    brute = sorted(
        (i, j, (hashes[i] ^ hashes[j]).bit_count())
        for i in range(len(hashes)) for j in range(i + 1, len(hashes)) if (hashes[i] ^ hashes[j]).bit_count() <= 4
    )
    assert near_duplicate_pairs(hashes, 4) == brute and len(brute) >= 10


def test_duplicates_imbalance_and_few_images(tmp_path):
    write_image_folder(tmp_path, {"big": 30, "small": 2}, size=16)
    copy = tmp_path / "small" / "img_000.jpg"
    (tmp_path / "big" / "zz_copy.jpg").write_bytes(copy.read_bytes())  # same image, other class
    report = check_data(tmp_path, image_size=16)
    by_code = {f.code: f for f in report.findings}
    pair = by_code["duplicate_conflicting_labels"]
    assert {pair.path, pair.related} == {str(copy), str(tmp_path / "big" / "zz_copy.jpg")}
    assert "30" in by_code["class_imbalance"].detail or "31" in by_code["class_imbalance"].detail
    assert by_code["few_images"].path == "small"
    assert report.exit_code == 0 and report.usable == 33
    json.dumps(report.to_dict())


def test_duplicate_across_seeded_split_is_named(tmp_path):
    paths = write_image_folder(tmp_path, {"a": 10, "b": 10}, size=16)
    for i in range(1, 10):  # copies of one image all over class a: some land in val
        (tmp_path / "a" / f"copy_{i}.jpg").write_bytes(paths[0].read_bytes())
    report = check_data(tmp_path, image_size=16)
    across = [f for f in report.findings if f.code == "duplicate_across_splits"]
    assert across and all("seeded split" in f.detail for f in across)


def test_registered_checks_plug_in(tmp_path):
    write_image_folder(tmp_path, {"a": 3, "b": 3}, size=16)

    @register("target")
    def every_third(item, ctx):
        if item.source.endswith("img_002.jpg"):
            yield finding(item.source, "few_images", "flagged by a plugged-in check")

    try:
        report = check_data(tmp_path, image_size=16)
    finally:
        CHECKS["target"].remove(every_third)
    assert sum(f.detail == "flagged by a plugged-in check" for f in report.findings) == 2
    with pytest.raises(ValueError, match="kind='boxes'"):
        register("boxes")


def test_every_problem_code_has_a_known_severity_and_action():
    for code, problem in PROBLEMS.items():
        assert problem.severity in ("error", "warning", "info") and problem.fix, code
        assert problem.action in ("stop", "skip", "review", "convert", "use", "ignore"), code


def test_table_lists_errors_in_full_and_caps_notes(tmp_path):
    for i in range(25):
        (tmp_path / "a").mkdir(exist_ok=True)
        Image.fromarray(image_array(0, i, 12)).convert("L").save(tmp_path / "a" / f"g{i:02d}.png")
    write_class_images(tmp_path / "b", 1, 3, size=16)
    for i in range(22):
        (tmp_path / "b" / f"bad{i:02d}.jpg").write_bytes(b"nope")
    report = check_data(tmp_path, image_size=16)
    table = report.table()
    assert all(f"b/bad{i:02d}.jpg" in table for i in range(22))  # errors: every one
    assert "... and 5 more 'grayscale'" in table
    assert all(f"a/g{i:02d}.png" in report.table(all_rows=True) for i in range(25))
    assert "22 skipped (not_image 22)" in report.summary() and report.exit_code == 1


# ---------------------------------------------------------------- drop_unreadable


def test_drop_unreadable_names_each_file_and_keeps_the_rest(tmp_path, caplog):
    paths = write_image_folder(tmp_path, {"a": 4, "b": 4}, size=16)
    paths[1].write_bytes(paths[1].read_bytes()[:100])
    paths[6].write_bytes(b"")
    samples = Samples(tuple(map(str, paths)), (0,) * 4 + (1,) * 4, ("a", "b"))
    split = DataSplit(samples.subset([0, 1, 2, 4, 5, 6]), samples.subset([3, 7]), "test")
    said = []
    cleaned = drop_unreadable(split, echo=said.append)
    assert cleaned.train.sources == tuple(str(paths[i]) for i in (0, 2, 4, 5))
    assert cleaned.val == split.val
    assert any(str(paths[1]) in s and "(truncated)" in s for s in said)
    assert any(str(paths[6]) in s and "(empty_file)" in s for s in said)
    with caplog.at_level(logging.WARNING, logger="transfer.data.doctor"):
        drop_unreadable(split)  # without echo: logged
    assert str(paths[1]) in caplog.text
    clean = DataSplit(samples.subset([0, 2]), samples.subset([4]), "x")
    assert drop_unreadable(clean) is clean


def test_drop_unreadable_refuses_to_lose_a_class_or_validation(tmp_path):
    paths = write_image_folder(tmp_path, {"a": 2, "b": 2}, size=16)
    for p in paths[:2]:
        p.write_bytes(b"garbage")
    samples = Samples(tuple(map(str, paths)), (0, 0, 1, 1), ("a", "b"))
    with pytest.raises(TransferError, match=r"class\(es\) \['a'\]"):
        drop_unreadable(DataSplit(samples.subset([0, 2]), samples.subset([1, 3]), "x"))
    with pytest.raises(TransferError, match="No readable validation images"):
        drop_unreadable(DataSplit(samples.subset([2, 3]), samples.subset([0, 1]), "x"))


# ---------------------------------------------------------------- listings (folders, CSV)


def test_folder_listing_reports_instead_of_raising(tmp_path):
    write_class_images(tmp_path / "a", 0, 2)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.md").write_text("x")
    (tmp_path / "loose.txt").write_text("x")
    listing = list_class_folders(tmp_path)
    codes = sorted((f.code, Path(f.path).name) for f in listing.findings)
    assert codes == [("empty_class", "empty"), ("ignored_file", "loose.txt"), ("ignored_file", "notes.md")]
    with pytest.raises(TransferError, match=r"'empty' \(0 images, 1 other files\)"):
        read_class_folders(tmp_path)


def test_csv_outside_root_duplicates_and_conflicts(tmp_path, caplog):
    root = tmp_path / "data"
    write_class_images(root / "img", 0, 4)
    outside = write_class_images(tmp_path / "elsewhere", 1, 2)
    rows = [["img/img_000.jpg", "a"], ["img/img_001.jpg", "a"], ["img/img_002.jpg", "b"], ["img/img_003.jpg", "b"],
            ["img/img_000.jpg", "a"], [f"../elsewhere/{outside[0].name}", "b"], [str(outside[1]), "b"]]
    csv_path = write_csv(root / "labels.csv", ["path", "label"], rows)
    listing = list_csv(csv_path)
    assert [(f.code, f.line) for f in listing.findings if f.action == "stop"] == [
        ("csv_outside_root", 7), ("csv_outside_root", 8)]
    with pytest.raises(TransferError) as e:
        read_csv_dataset(csv_path)
    assert "2 lines cannot be used: line 7:" in e.value.message and "line 8:" in e.value.message
    assert e.value.message.count("points outside the CSV's folder") == 2
    assert f"transfer check-data {csv_path}" in e.value.fix  # it lists every problem
    assert "--allow-outside-root" in e.value.fix  # and the switch that allows such lines
    # One such line alone: the error gives that problem's own fix, the switch that allows it.
    alone = write_csv(root / "one.csv", ["path", "label"], rows[:4] + rows[5:6])
    with pytest.raises(TransferError) as e:
        read_csv_dataset(alone)
    assert "line 6" in str(e.value) and "points outside the CSV's folder" in e.value.message
    assert "--allow-outside-root" in e.value.fix
    with caplog.at_level(logging.WARNING):
        split = read_csv_dataset(csv_path, allow_outside_root=True, val_fraction=0.25)
    assert len(split.train) + len(split.val) == 6  # the repeated line 6 is dropped ...
    assert "line 6" in caplog.text and "repeats line 2" in caplog.text  # ... with a warning
    assert str(outside[1]) in split.train.sources + split.val.sources

    rows.append(["img/img_001.jpg", "b"])
    conflict = write_csv(root / "conflict.csv", ["path", "label"], rows[:4] + rows[-1:])
    with pytest.raises(TransferError, match=r"line 6: 'img/img_001.jpg' is labelled 'b' here but 'a' on line 3"):
        read_csv_dataset(conflict)


def test_check_data_on_a_csv_reports_label_problems(tmp_path):
    write_class_images(tmp_path / "img", 0, 3)
    (tmp_path / "labels.csv").write_text(
        "path,label,split\nimg/img_000.jpg,cat,train\nimg/img_001.jpg,dog,train\nimg/img_002.jpg, Dog ,val\n"
        "img/nope.jpg,cat,train\n"
    )
    report = check_data(tmp_path / "labels.csv", image_size=16)
    found = {(f.code, f.line) for f in report.findings}
    assert ("csv_missing_file", 5) in found
    assert ("csv_unknown_label", 4) in found  # 'Dog': only in val, and a case variant of 'dog'
    assert report.stops and report.exit_code == 1


# ---------------------------------------------------------------- quarantine and CLI


def test_quarantine_keeps_paths_and_never_overwrites(tmp_path):
    data = tmp_path / "data"
    write_image_folder(data, {"a": 3, "b": 3}, size=16)
    (data / "a" / "bad.jpg").write_bytes(b"nope")
    dest = tmp_path / "q"
    (dest / "a").mkdir(parents=True)
    (dest / "a" / "bad.jpg").write_bytes(b"an older quarantined file")
    moved = quarantine(check_data(data, image_size=16), dest)
    assert moved == [(str(data / "a" / "bad.jpg"), str(dest / "a" / "bad-1.jpg"))]
    assert (dest / "a" / "bad.jpg").read_bytes() == b"an older quarantined file"
    assert json.loads((dest / "quarantine.json").read_text())["moved"][0]["problem"] == "not_image"


def test_check_data_cli(tmp_path):
    runner = CliRunner()
    write_image_folder(tmp_path / "ok", {"a": 6, "b": 6}, size=16)
    result = runner.invoke(app, ["check-data", str(tmp_path / "ok"), "--image-size", "16"])
    assert result.exit_code == 0 and "12 usable, 0 to skip" in result.output
    result = runner.invoke(app, ["check-data", str(tmp_path / "missing")])
    assert result.exit_code == 2 and "not found" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["check-data", str(tmp_path / "ok"), "--json"])
    assert json.loads(result.output)["num_images"] == 12


def test_cli_turns_os_errors_into_short_messages(tmp_path):
    write_image_folder(tmp_path / "d", {"a": 3, "b": 3}, size=16)
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a folder")
    result = CliRunner().invoke(app, ["train", "--data", str(tmp_path / "d"), "--out", str(blocker / "run"),
                                      "--weights", "none", "--image-size", "32"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "file.txt" in result.output


@pytest.mark.slow
@pytest.mark.fixtures
def test_quick_check_is_cheap_on_flowers5(fixtures_dir):
    """The check `transfer train` runs first, on the 4317-image fixture (seconds, printed for the record)."""
    from transfer.data import load_data

    root = require_fixture(fixtures_dir / "flowers5")
    doctor._CACHE.clear()
    report = check_split(load_data(root), image_size=128)
    print(f"\nquick check on flowers5: {report.seconds:.1f}s for {report.num_images} images")
    assert report.num_images == 4317 and report.usable == 4317 and not report.skipped
    assert any(f.code == "duplicate_conflicting_labels" for f in report.findings)  # rose/tulip copies


def test_nothing_untrusted_is_unpickled():
    """No pickle, marshal or shelve in the package; NumPy and Keras loads stay in their safe modes."""
    import ast

    import transfer

    for path in Path(transfer.__file__).parent.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not {"pickle", "cPickle", "marshal", "shelve", "dill", "joblib"} & set(names), path
            if isinstance(node, ast.keyword) and node.arg in ("allow_pickle", "safe_mode"):
                value = node.value
                assert not (isinstance(value, ast.Constant) and value.value is (node.arg == "allow_pickle")), path
