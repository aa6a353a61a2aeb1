"""Data sources: class folders, CSV lists, TFDS, the stratified split and load_data."""

from __future__ import annotations

import math
import os
import re
import time
from pathlib import Path

import importlib_resources  # noqa: F401  TFDS 4.9 needs it to build datasets; a declared dependency
import pytest
import tensorflow_datasets as tfds

from tests.conftest import require_fixture
from tests.imagefactory import image_array, write_class_images, write_csv, write_image, write_image_folder
from transfer.data import (
    DataSplit,
    Samples,
    load_data,
    read_class_folders,
    read_csv_dataset,
    read_folder_dataset,
    read_tfds_dataset,
    stratified_split,
)
from transfer.data.split import stratify_keys
from transfer.core.errors import TransferError

REPO_ROOT = Path(__file__).resolve().parents[1]
FLOWERS5_COUNTS = {"daisy": 764, "dandelion": 1052, "rose": 784, "sunflower": 733, "tulip": 984}
TF_FLOWERS_NAMES = ("dandelion", "daisy", "tulips", "sunflowers", "roses")


def counts_by_class(samples: Samples) -> dict[str, int]:
    return {k: v for k, v in samples.class_counts().items() if v}


def make_samples(counts: dict[str, int]) -> Samples:
    names = tuple(sorted(counts))
    sources, targets = [], []
    for index, name in enumerate(names):
        sources += [f"{name}/{i:03d}.jpg" for i in range(counts[name])]
        targets += [index] * counts[name]
    return Samples(tuple(sources), tuple(targets), names)


# --- class folders -------------------------------------------------------------------------------


def test_class_folders_sorted_recursive_and_filtered(tmp_path):
    root = tmp_path / "data"
    write_image_folder(root, {"dog": 3, "cat": 2}, fmt="PNG")
    write_image(root / "cat" / "nested" / "deep" / "Z.JPEG", class_index=0)  # recursive, any case
    write_image(root / "dog" / "photo.BMP", class_index=1)
    write_image(root / "dog" / "anim.gif", class_index=1)
    write_image(root / "dog" / ".hidden.png", class_index=1)  # hidden file: ignored
    write_image(root / "dog" / ".cache" / "x.png", class_index=1)  # hidden folder: ignored
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / ".git").mkdir()  # hidden folder at the top: not a class
    (root / "README.md").write_text("files at the top are not classes")

    samples = read_class_folders(root)

    assert samples.class_names == ("cat", "dog")
    assert not samples.multi_label and samples.encoded is None
    assert counts_by_class(samples) == {"cat": 3, "dog": 5}
    cat_sources = [s for s, t in zip(samples.sources, samples.targets) if t == 0]
    assert cat_sources == sorted(cat_sources)
    assert any(s.endswith(os.path.join("nested", "deep", "Z.JPEG")) for s in cat_sources)
    assert not any("hidden" in s or ".cache" in s or s.endswith(".txt") for s in samples.sources)
    assert all(Path(s).is_file() for s in samples.sources)
    assert read_class_folders(root) == samples  # deterministic


def test_folder_dataset_without_split_is_stratified(tmp_path):
    write_image_folder(tmp_path, {"cat": 10, "dog": 5})

    split = read_folder_dataset(tmp_path, val_fraction=0.2, seed=0)

    assert split.origin == "stratified 80/20, seed 0"
    assert counts_by_class(split.train) == {"cat": 8, "dog": 4}
    assert counts_by_class(split.val) == {"cat": 2, "dog": 1}
    assert not set(split.train.sources) & set(split.val.sources)


@pytest.mark.parametrize("val_dirname", ["val", "validation"])
def test_folder_dataset_uses_train_val_folders(tmp_path, val_dirname):
    write_image_folder(tmp_path, {"cat": 4, "dog": 3}, val_counts={"cat": 2, "dog": 1}, val_dirname=val_dirname)

    split = read_folder_dataset(tmp_path, val_fraction=0.5, seed=3)

    assert split.origin == f"folders train/ {val_dirname}/"
    assert split.class_names == ("cat", "dog")
    assert counts_by_class(split.train) == {"cat": 4, "dog": 3}
    assert counts_by_class(split.val) == {"cat": 2, "dog": 1}
    assert all(f"{os.sep}train{os.sep}" in s for s in split.train.sources)
    assert all(f"{os.sep}{val_dirname}{os.sep}" in s for s in split.val.sources)


def test_folder_dataset_lone_train_folder_is_split(tmp_path):
    write_image_folder(tmp_path / "train", {"a": 5, "b": 5})
    write_image_folder(tmp_path / "test", {"a": 2, "b": 2})  # a test set stays unseen

    split = read_folder_dataset(tmp_path, val_fraction=0.2, seed=0)

    assert split.class_names == ("a", "b")
    assert len(split.train) + len(split.val) == 10
    assert not any(f"{os.sep}test{os.sep}" in s for s in split.train.sources + split.val.sources)


def test_train_val_class_mismatch_lists_the_names(tmp_path):
    write_image_folder(tmp_path / "train", {"cat": 2, "dog": 2, "eel": 2})
    write_image_folder(tmp_path / "val", {"cat": 1, "dog": 1, "fox": 1})

    with pytest.raises(TransferError) as e:
        read_folder_dataset(tmp_path)

    message = str(e.value)
    assert "only in train/: ['eel']" in message and "only in val/: ['fox']" in message
    assert str(tmp_path / "train") in message and str(tmp_path / "val") in message
    assert e.value.fix and "missing class folders" in e.value.fix


def test_class_missing_in_val_is_an_error(tmp_path):
    write_image_folder(tmp_path / "train", {"cat": 2, "dog": 2})
    write_image_folder(tmp_path / "val", {"cat": 1})

    with pytest.raises(TransferError, match=r"only in train/: \['dog'\]; only in val/: none"):
        read_folder_dataset(tmp_path)


def test_empty_val_class_folder_is_an_error(tmp_path):
    write_image_folder(tmp_path / "train", {"cat": 2, "dog": 2})
    write_image_folder(tmp_path / "val", {"cat": 1})
    (tmp_path / "val" / "dog").mkdir()

    with pytest.raises(TransferError, match=r"without images .*val.*'dog' \(0 images"):
        read_folder_dataset(tmp_path)


def test_missing_folder_error(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(TransferError) as e:
        read_class_folders(missing)
    assert f"Data folder not found: '{missing}'" in str(e.value)
    assert "subfolder" in e.value.fix


def test_file_instead_of_folder_error(tmp_path):
    path = write_image(tmp_path / "one.jpg")
    with pytest.raises(TransferError) as e:
        read_folder_dataset(path)
    assert str(path) in str(e.value) and "not a folder" in str(e.value)
    assert ".csv" in e.value.fix


def test_no_class_subfolders_error_counts_loose_images(tmp_path):
    write_class_images(tmp_path, 0, 3)
    with pytest.raises(TransferError) as e:
        read_class_folders(tmp_path)
    assert f"No class subfolders in data folder '{tmp_path}'" in str(e.value)
    assert "3 images directly" in str(e.value)
    assert "own subfolder" in e.value.fix


def test_class_folder_without_images_is_named_with_counts(tmp_path):
    write_image_folder(tmp_path, {"cat": 2, "dog": 2})
    (tmp_path / "eel").mkdir()
    (tmp_path / "eel" / "a.txt").write_text("x")
    (tmp_path / "eel" / "b.tiff").write_bytes(b"x")

    with pytest.raises(TransferError) as e:
        read_class_folders(tmp_path)

    assert "'eel' (0 images, 2 other files)" in str(e.value)
    assert str(tmp_path) in str(e.value) and ".jpg" in str(e.value)
    assert e.value.fix == "Add images to these folders or remove them."


def test_single_class_error(tmp_path):
    write_image_folder(tmp_path, {"cat": 3})
    with pytest.raises(TransferError) as e:
        read_class_folders(tmp_path)
    assert "only 1 class folder ('cat')" in str(e.value) and str(tmp_path) in str(e.value)
    assert "other class" in e.value.fix


# --- stratified split ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n, fraction, expected_val",
    [(10, 0.2, 2), (5, 0.2, 1), (2, 0.5, 1), (2, 0.9, 1), (3, 0.1, 1), (5, 0.3, 2), (7, 0.5, 4), (9, 0.05, 1),
     (764, 0.2, 153), (1052, 0.2, 210), (1, 0.2, 0)],
)
def test_split_counts_per_class(n, fraction, expected_val):
    split = stratified_split(make_samples({"a": n, "b": 4}), val_fraction=fraction, seed=0)
    assert split.val.class_counts()["a"] == expected_val
    assert split.train.class_counts()["a"] == n - expected_val


def test_split_is_deterministic_disjoint_complete_and_ordered():
    samples = make_samples({"a": 30, "b": 17, "c": 2})

    first = stratified_split(samples, val_fraction=0.25, seed=7)
    again = stratified_split(samples, val_fraction=0.25, seed=7)
    other = stratified_split(samples, val_fraction=0.25, seed=8)

    assert first == again
    assert first.val.sources != other.val.sources
    assert first.val.class_counts() == other.val.class_counts() == {"a": 8, "b": 4, "c": 1}
    assert sorted(first.train.sources + first.val.sources) == sorted(samples.sources)
    assert list(first.train.sources) == sorted(first.train.sources)  # input order kept
    assert first.origin == "stratified 75/25, seed 7"


def test_split_of_a_class_does_not_depend_on_other_classes():
    small = stratified_split(make_samples({"a": 20, "b": 10}), seed=1)
    large = stratified_split(make_samples({"a": 20, "b": 10, "c": 50}), seed=1)
    assert [s for s in small.val.sources if s.startswith("a/")] == [s for s in large.val.sources if s.startswith("a/")]


def test_split_keeps_encoded_bytes_aligned():
    samples = Samples(
        tuple(f"s{i}" for i in range(6)), (0, 0, 0, 1, 1, 1), ("x", "y"), encoded=tuple(b"%d" % i for i in range(6))
    )
    split = stratified_split(samples, val_fraction=0.34, seed=0)
    for part in (split.train, split.val):
        assert [e.decode() for e in part.encoded] == [s[1:] for s in part.sources]


def test_multi_label_split_stratifies_by_rarest_label():
    # Label 0 ("common") is on every image, label 2 ("rare") on 4 of them, label 1 on 6.
    targets = [(0, 2)] * 4 + [(0, 1)] * 6 + [(0,)] * 10
    samples = Samples(tuple(f"{i}.jpg" for i in range(20)), tuple(targets), ("common", "mid", "rare"), multi_label=True)

    assert stratify_keys(samples) == [2] * 4 + [1] * 6 + [0] * 10
    split = stratified_split(samples, val_fraction=0.25, seed=0)

    assert split.multi_label
    # Per group: rare 4 -> 1 val, mid 6 -> 2 (1.5 rounds up), common-only 10 -> 3 (2.5 rounds up).
    assert split.val.class_counts() == {"common": 6, "mid": 2, "rare": 1}
    assert split.train.class_counts() == {"common": 14, "mid": 4, "rare": 3}


@pytest.mark.parametrize("bad", [0, 1, 1.0, -0.1, 1.5, float("nan"), "0.2", None, True])
def test_split_rejects_bad_val_fraction(bad):
    with pytest.raises(TransferError) as e:
        stratified_split(make_samples({"a": 4, "b": 4}), val_fraction=bad)
    assert f"Received: val_fraction={bad!r}" in str(e.value)
    assert "0.2" in e.value.fix


def test_split_with_nothing_to_spare_is_an_error():
    with pytest.raises(TransferError, match="Too few images"):
        stratified_split(make_samples({"a": 1, "b": 1}))
    with pytest.raises(TransferError, match="no images"):
        stratified_split(Samples((), (), ("a", "b")))


# --- CSV -----------------------------------------------------------------------------------------


def test_csv_single_label_relative_and_absolute_paths(tmp_path):
    images = write_image_folder(tmp_path / "imgs", {"cat": 5, "dog": 5})
    rows = [[str(p.relative_to(tmp_path)), p.parent.name] for p in images[:8]]
    rows += [[str(p), p.parent.name] for p in images[8:]]  # absolute paths work too
    csv_path = write_csv(tmp_path / "labels.csv", ["path", "label"], rows)

    split = read_csv_dataset(csv_path, val_fraction=0.2, seed=0)

    assert split.class_names == ("cat", "dog") and not split.multi_label
    assert split.origin == "stratified 80/20, seed 0"
    assert counts_by_class(split.val) == {"cat": 1, "dog": 1}
    every = split.train.sources + split.val.sources
    assert sorted(every) == sorted(str(p) for p in images)
    for source, target in zip(split.train.sources, split.train.targets):
        assert split.class_names[target] == Path(source).parent.name


def test_csv_multi_label_and_split_column(tmp_path):
    write_class_images(tmp_path / "img", 0, 4)
    csv_path = tmp_path / "multi.csv"
    # Any column order and case; spaces around labels; a repeated label counts once.
    csv_path.write_text(
        "Split,Labels,PATH\n"
        "train, outdoor ; cat ,img/img_000.jpg\n"
        "TRAIN,dog;dog,img/img_001.jpg\n"
        "\n"
        "validation,cat,img/img_002.jpg\n"
        "val,dog;outdoor;,img/img_003.jpg\n"
    )

    split = read_csv_dataset(csv_path)

    assert split.multi_label and split.origin == "CSV split column"
    assert split.class_names == ("cat", "dog", "outdoor")
    assert split.train.targets == ((0, 2), (1,))
    assert split.val.targets == ((0,), (1, 2))
    assert split.val.sources == (str(tmp_path / "img" / "img_002.jpg"), str(tmp_path / "img" / "img_003.jpg"))


def test_csv_multi_label_without_split_column_is_stratified(tmp_path):
    paths = write_class_images(tmp_path, 0, 10)
    rows = [[p.name, "a;b" if i < 4 else "a"] for i, p in enumerate(paths)]
    split = read_csv_dataset(write_csv(tmp_path / "l.csv", ["path", "labels"], rows), val_fraction=0.25)
    assert split.val.class_counts() == {"a": 3, "b": 1}  # b-images: 4 -> 1 val; a-only: 6 -> 2 val


def test_csv_with_byte_order_mark(tmp_path):
    write_class_images(tmp_path, 0, 2)
    csv_path = tmp_path / "bom.csv"
    csv_path.write_text("path,label,split\nimg_000.jpg,a,train\nimg_001.jpg,b,val\n", encoding="utf-8-sig")
    assert read_csv_dataset(csv_path).class_names == ("a", "b")


def test_csv_missing_file_error(tmp_path):
    with pytest.raises(TransferError) as e:
        read_csv_dataset(tmp_path / "absent.csv")
    assert str(tmp_path / "absent.csv") in str(e.value) and "not found" in str(e.value)
    assert "path,label" in e.value.fix


def test_csv_missing_columns_lists_found_and_expected(tmp_path):
    csv_path = write_csv(tmp_path / "bad.csv", ["filename", "class"], [["a.jpg", "cat"]])
    with pytest.raises(TransferError) as e:
        read_csv_dataset(csv_path)
    message = str(e.value)
    assert f"{csv_path}, line 1" in message
    assert "missing column(s) path, label" in message and "Found columns: filename,class" in message
    assert "Expected: path,label" in message
    assert "Rename the header" in e.value.fix


@pytest.mark.parametrize("text, expected", [("", "the CSV file is empty"), ("\n\n", "the CSV file is empty"),
                                            ("path,label\n", "header but no images")])
def test_csv_empty_errors(tmp_path, text, expected):
    csv_path = tmp_path / "empty.csv"
    csv_path.write_text(text)
    with pytest.raises(TransferError) as e:
        read_csv_dataset(csv_path)
    assert str(csv_path) in str(e.value) and expected in str(e.value)
    assert e.value.fix


@pytest.mark.parametrize("header", ["path,label", "path,labels"])
def test_csv_empty_label_names_the_line(tmp_path, header):
    write_class_images(tmp_path, 0, 3)
    csv_path = tmp_path / "labels.csv"
    blank = " ; " if "labels" in header else " "
    csv_path.write_text(f"{header}\nimg_000.jpg,a\n\nimg_001.jpg,{blank}\nimg_002.jpg,b\n")
    with pytest.raises(TransferError) as e:
        read_csv_dataset(csv_path)
    column = header.split(",")[1]
    assert f"{csv_path}, line 4: the {column} of 'img_001.jpg' is empty" in str(e.value)
    assert column in e.value.fix


def test_csv_missing_images_lists_five_with_lines(tmp_path):
    write_class_images(tmp_path, 0, 1)
    rows = [["img_000.jpg", "a"]] + [[f"gone_{i}.jpg", "b"] for i in range(7)]
    csv_path = write_csv(tmp_path / "labels.csv", ["path", "label"], rows)

    with pytest.raises(TransferError) as e:
        read_csv_dataset(csv_path)

    message = str(e.value)
    assert "7 of 8 image files not found" in message
    assert f"line 3: {tmp_path / 'gone_0.jpg'}" in message and "gone_4.jpg" in message
    assert "gone_5.jpg" not in message and "and 2 more" in message
    assert str(tmp_path) in e.value.fix and "relative to the CSV" in e.value.fix


def test_csv_other_errors(tmp_path):
    write_class_images(tmp_path, 0, 2)
    cases = {
        "both.csv": ("path,label,labels\nimg_000.jpg,a,a\n", "both 'label' and 'labels'"),
        "split.csv": ("path,label,split\nimg_000.jpg,a,train\nimg_001.jpg,b,test\n", "line 3: split is 'test'"),
        "noval.csv": ("path,label,split\nimg_000.jpg,a,train\nimg_001.jpg,b,train\n", "marks no image as val"),
        "short.csv": ("path,label\nimg_000.jpg\n", "line 2: 1 field(s), expected 2"),
        "nopath.csv": ("path,label\n ,a\n", "line 2: the path is empty"),
        "oneclass.csv": ("path,label\nimg_000.jpg,a\nimg_001.jpg,a\n", "only 1 class ('a')"),
    }
    for name, (text, expected) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(TransferError) as e:
            read_csv_dataset(tmp_path / name)
        assert str(tmp_path / name) in str(e.value) and expected in str(e.value), name
        assert e.value.fix, name


# --- TFDS ----------------------------------------------------------------------------------------


def decode(image_bytes: bytes):
    import tensorflow as tf

    return tf.io.decode_image(image_bytes, channels=3, expand_animations=False).numpy()


def test_tfds_mock_data_tf_flowers():
    with tfds.testing.mock_data(num_examples=20):
        split = read_tfds_dataset("tf_flowers", val_fraction=0.25, seed=0)
        again = load_data("tfds:tf_flowers", val_fraction=0.25, seed=0)

    assert split == again
    assert split.class_names == TF_FLOWERS_NAMES  # the dataset's own order, not sorted
    assert not split.multi_label
    assert split.origin == "stratified 75/25, seed 0"  # the mock lists no splits: train is split
    assert len(split.train) + len(split.val) == 20
    assert sorted(split.train.sources + split.val.sources, key=lambda s: int(s[s.index("[") + 1:-1])) == [
        f"tfds:tf_flowers/train[{i}]" for i in range(20)
    ]
    # SkipDecoding keeps images encoded; the mock encodes its random pixels as PNG.
    for image_bytes in split.train.encoded[:3] + split.val.encoded[:3]:
        assert isinstance(image_bytes, bytes) and image_bytes.startswith(b"\x89PNG")
        image = decode(image_bytes)
        assert image.ndim == 3 and image.shape[2] == 3 and image.dtype.name == "uint8"


@pytest.fixture(scope="module")
def prepared_tfds(tmp_path_factory):
    """A real, prepared TFDS dataset on disk with train and validation splits."""
    data_dir = tmp_path_factory.mktemp("tfds")
    features = tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(None, None, 3)),
        "label": tfds.features.ClassLabel(names=["zebra", "ant"]),  # deliberately not sorted
        "id": tfds.features.Text(),
    })

    def examples(split, count, start):
        return [(f"{split}{i}", {"image": image_array(i % 2, start + i, 12), "label": i % 2, "id": f"{split}{i}"})
                for i in range(count)]

    tfds.dataset_builders.store_as_tfds_dataset(
        "transfer_test_shapes", "1.0.0", features,
        {"train": examples("train", 6, 0), "validation": examples("validation", 4, 100)},
        data_dir=str(data_dir), disable_shuffling=True,
    )
    return data_dir


def test_tfds_prepared_dataset_uses_its_validation_split(prepared_tfds):
    split = read_tfds_dataset("tfds:transfer_test_shapes", val_fraction=0.5, seed=0, data_dir=prepared_tfds)

    assert split.origin == "tfds splits train/validation"
    assert split.class_names == ("zebra", "ant")
    assert split.train.targets == (0, 1, 0, 1, 0, 1) and split.val.targets == (0, 1, 0, 1)
    assert split.val.sources[2] == "tfds:transfer_test_shapes/validation[2]"
    # The stored bytes are the images written, losslessly (PNG).
    assert (decode(split.val.encoded[2]) == image_array(0, 102, 12)).all()


def test_tfds_not_prepared_offline_fails_fast_with_fix(tmp_path, monkeypatch):
    import socket

    def no_dns(host, *args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_dns)  # offline, whatever this machine has
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    started = time.monotonic()

    with pytest.raises(TransferError) as e:
        read_tfds_dataset("tf_flowers", data_dir=tmp_path)

    assert time.monotonic() - started < 30
    message = str(e.value)
    assert "'tf_flowers' is not prepared" in message and str(tmp_path) in message
    assert "cannot be reached" in message
    assert "tfds build tf_flowers" in e.value.fix and str(tmp_path) in e.value.fix


def test_tfds_download_failure_keeps_the_cause(tmp_path, monkeypatch):
    from transfer.data.sources import tfds as tfds_source

    def fail(self, *args, **kwargs):
        raise ConnectionError("Max retries exceeded")

    monkeypatch.setattr(tfds_source, "_unreachable_hosts", lambda urls: [])
    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", fail)

    with pytest.raises(TransferError) as e:
        read_tfds_dataset("tf_flowers", data_dir=tmp_path)

    assert "could not be downloaded" in str(e.value) and "ConnectionError: Max retries exceeded" in str(e.value)
    assert str(tmp_path) in str(e.value) and "tfds build tf_flowers" in e.value.fix


def test_tfds_unknown_dataset(tmp_path):
    with pytest.raises(TransferError) as e:
        read_tfds_dataset("no_such_dataset_xyz", data_dir=tmp_path)
    assert "no dataset named 'no_such_dataset_xyz'" in str(e.value) and str(tmp_path) in str(e.value)
    assert "list_builders" in e.value.fix


def test_tfds_feature_discovery():
    from transfer.data.sources.tfds import find_feature_keys

    f = tfds.features
    assert find_feature_keys(f.FeaturesDict({"img": f.Image(), "y": f.ClassLabel(num_classes=2)})) == (
        "img", "y", False)
    multi = f.FeaturesDict({"image": f.Image(), "thumb": f.Image(), "labels": f.Sequence(f.ClassLabel(num_classes=3)),
                            "label": f.ClassLabel(num_classes=2)})
    assert find_feature_keys(multi) == ("image", "label", False)
    assert find_feature_keys(multi, ("thumb", "labels")) == ("thumb", "labels", True)
    with pytest.raises(TransferError, match=r"which feature is the label .*found none.*'?img'?: Image"):
        find_feature_keys(f.FeaturesDict({"img": f.Image(), "text": f.Text()}))
    with pytest.raises(TransferError, match=r"which feature is the image .*several \(a, b\)"):
        find_feature_keys(f.FeaturesDict({"a": f.Image(), "b": f.Image(), "label": f.ClassLabel(num_classes=2)}))


# --- load_data -----------------------------------------------------------------------------------


def test_load_data_dispatches_folder_and_csv(tmp_path):
    paths = write_image_folder(tmp_path / "folder", {"cat": 5, "dog": 5})
    csv_path = write_csv(tmp_path / "list.CSV", ["path", "label"], [[str(p), p.parent.name] for p in paths])

    from_folder = load_data(tmp_path / "folder", val_fraction=0.2, seed=1)
    from_csv = load_data(str(csv_path), val_fraction=0.2, seed=1)

    assert isinstance(from_folder, DataSplit) and isinstance(from_csv, DataSplit)
    assert from_folder.train.sources == from_csv.train.sources
    assert from_folder.val.sources == from_csv.val.sources


def test_load_data_errors(tmp_path):
    with pytest.raises(TransferError, match=re.escape(f"Data source not found: '{tmp_path / 'x'}'")) as e:
        load_data(tmp_path / "x")
    assert "tfds:NAME" in e.value.fix
    with pytest.raises(TransferError, match="is a file but not a .csv file"):
        load_data(write_image(tmp_path / "a.png"))
    with pytest.raises(TransferError, match="No dataset name after 'tfds:'"):
        load_data("tfds:")
    with pytest.raises(TransferError, match="CSV file not found"):
        load_data(tmp_path / "missing.csv")
    with pytest.raises(TransferError, match="Received: val_fraction=2"):
        load_data(tmp_path, val_fraction=2)


def test_import_is_light():
    import subprocess
    import sys

    heavy = ("tensorflow", "tensorflow_datasets", "numpy", "PIL")
    code = f"import sys, transfer.data; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    assert out.stdout.strip() == "[]"


# --- real fixture --------------------------------------------------------------------------------


@pytest.fixture
def flowers5(fixtures_dir) -> Path:
    return require_fixture(fixtures_dir / "flowers5")


@pytest.mark.fixtures
def test_flowers5_fixture_split(flowers5):
    split = load_data(flowers5, val_fraction=0.2, seed=0)

    assert split.class_names == tuple(FLOWERS5_COUNTS)
    assert len(split.train) + len(split.val) == 4317
    expected_val = {name: math.floor(n * 0.2 + 0.5) for name, n in FLOWERS5_COUNTS.items()}
    assert expected_val == {"daisy": 153, "dandelion": 210, "rose": 157, "sunflower": 147, "tulip": 197}
    assert split.val.class_counts() == expected_val
    assert split.train.class_counts() == {name: n - expected_val[name] for name, n in FLOWERS5_COUNTS.items()}
    assert (len(split.train), len(split.val)) == (3453, 864)
    assert load_data(flowers5, val_fraction=0.2, seed=0) == split


def test_load_data_csv_paths_outside_the_folder_need_permission(tmp_path):
    images = write_image_folder(tmp_path / "elsewhere", {"cat": 2, "dog": 2})
    rows = [[f"../elsewhere/{p.parent.name}/{p.name}", p.parent.name] for p in images]
    csv_path = write_csv(tmp_path / "labels" / "labels.csv", ["path", "label"], rows)
    with pytest.raises(TransferError) as e:
        load_data(csv_path)
    assert "4 lines cannot be used" in e.value.message and "outside the CSV's folder" in e.value.message
    split = load_data(csv_path, allow_outside_root=True, val_fraction=0.5)
    assert len(split.train) + len(split.val) == 4
