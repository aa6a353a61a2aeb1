"""TFDS segmentation sources: tfds:oxford_iiit_pet through tfds.testing.mock_data (offline)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from transfer.data.masks import IGNORE_VALUE, load_mask, load_mask_data, read_masks


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_tfds_oxford_iiit_pet_masks_stay_encoded_and_map_the_trimap():
    tf = pytest.importorskip("tensorflow")
    tfds = pytest.importorskip("tensorflow_datasets")
    trimap = np.full((6, 8), 2, np.uint8)  # 2: background
    trimap[1:5, 2:6] = 3  # 3: border
    trimap[2:4, 3:5] = 1  # 1: pet
    examples = [{"image": _png(np.full((6, 8, 3), 30 * i, np.uint8)), "segmentation_mask": _png(trimap),
                 "label": i, "species": i % 2, "file_name": f"{i}.jpg",
                 "head_bbox": np.array([0.1, 0.1, 0.5, 0.5], np.float32)} for i in range(5)]
    examples.append({**examples[0], "segmentation_mask": _png(np.full((5, 8), 2, np.uint8))})  # wrong size
    spec = {"image": tf.TensorSpec((), tf.string), "segmentation_mask": tf.TensorSpec((), tf.string),
            "label": tf.TensorSpec((), tf.int64), "species": tf.TensorSpec((), tf.int64),
            "file_name": tf.TensorSpec((), tf.string), "head_bbox": tf.TensorSpec((4,), tf.float32)}

    def as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False):
        # The automatic mock draws random head boxes that TFDS itself refuses (ymin > ymax): give real examples.
        return tf.data.Dataset.from_generator(lambda: iter(examples), output_signature=spec)

    with tfds.testing.mock_data(as_dataset_fn=as_dataset):
        samples, findings = read_masks("tfds:oxford_iiit_pet")
        data = load_mask_data("tfds:oxford_iiit_pet", val_fraction=0.4, seed=0)
    assert samples.class_names == ("background", "pet")
    assert len(samples) == 5 and samples.encoded is not None and samples.encoded[0].startswith(b"\x89PNG")
    assert [(f.code, f.path) for f in findings] == [("mask_size_mismatch", "tfds:oxford_iiit_pet/train[5]")]
    target = samples.targets[0]
    assert (target.kind, target.path, target.width, target.height) == ("encoded", "<encoded>", 8, 6)
    expected = np.where(trimap == 1, 1, np.where(trimap == 3, IGNORE_VALUE, 0)).astype(np.uint8)
    np.testing.assert_array_equal(load_mask(target), expected)
    assert (len(data.split.train), len(data.split.val)) == (3, 2)
    assert data.split.val.targets[0].data.startswith(b"\x89PNG")  # the mask bytes travel with the split
