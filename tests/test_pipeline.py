"""The tf.data pipeline: shapes, dtypes, targets, order, augmentation, bytes vs files."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from transfer.data.pipelines.images import make_dataset, targets_array
from transfer.data.samples import Samples
from transfer.core.imageops import decode_and_resize


@pytest.fixture()
def samples(tmp_path):
    rng = np.random.default_rng(0)
    paths, targets = [], []
    for i in range(7):
        array = rng.integers(0, 256, (20 + i, 30, 3), dtype=np.uint8)  # odd, non-square sizes
        path = tmp_path / f"img{i}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(array).save(path)
        paths.append(str(path))
        targets.append(i % 3)
    return Samples(tuple(paths), tuple(targets), ("a", "b", "c"))


def test_eval_dataset_is_ordered_uint8_with_one_hot_targets(samples):
    ds = make_dataset(samples, 16, batch_size=4, training=False)
    batches = list(ds)
    assert [b[0].shape[0] for b in batches] == [4, 3]
    images = np.concatenate([b[0].numpy() for b in batches])
    targets = np.concatenate([b[1].numpy() for b in batches])
    assert images.dtype == np.uint8 and images.shape == (7, 16, 16, 3)
    np.testing.assert_array_equal(targets.argmax(1), [0, 1, 2, 0, 1, 2, 0])
    expected = decode_and_resize(tf.io.read_file(samples.sources[3]), 16).numpy()
    np.testing.assert_array_equal(images[3], expected)


def test_encoded_bytes_give_the_same_pixels_as_files(samples):
    encoded = tuple(open(p, "rb").read() for p in samples.sources)
    in_memory = Samples(tuple(f"mem[{i}]" for i in range(7)), samples.targets, samples.class_names,
                        encoded=encoded)
    a = np.concatenate([x.numpy() for x, _ in make_dataset(samples, 24, 8, training=False)])
    b = np.concatenate([x.numpy() for x, _ in make_dataset(in_memory, 24, 8, training=False)])
    np.testing.assert_array_equal(a, b)


def test_training_dataset_shuffles_and_augments_but_keeps_pairs(samples):
    ds = make_dataset(samples, 16, batch_size=7, training=True, augment=("flip", "zoom", "rotate", "color"))
    images, targets = next(iter(ds))
    assert images.dtype == tf.uint8 and images.shape == (7, 16, 16, 3)
    assert sorted(targets.numpy().argmax(1).tolist()) == [0, 0, 0, 1, 1, 2, 2]
    plain = np.stack([x.numpy() for x, _ in make_dataset(samples, 16, 1, training=False)]).squeeze(1)
    # Augmented views differ from the plain images.
    assert not any(np.array_equal(img, p) for img in images.numpy() for p in plain)


def test_augmentation_is_reproducible_for_a_seed(samples):
    def first_epoch(seed):
        ds = make_dataset(samples, 16, 7, training=True, augment=("flip", "zoom"), seed=seed)
        return next(iter(ds))[0].numpy()

    np.testing.assert_array_equal(first_epoch(3), first_epoch(3))
    assert not np.array_equal(first_epoch(3), first_epoch(4))


def test_multi_label_targets_are_multi_hot():
    samples = Samples(("x", "y"), ((0, 2), (1,)), ("a", "b", "c"), multi_label=True)
    np.testing.assert_array_equal(targets_array(samples), [[1, 0, 1], [0, 1, 0]])
