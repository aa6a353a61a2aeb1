"""The mask pipeline: image and mask stay aligned through resize and augmentation, masks stay
integer class values (no value a Keras augmentation layer would blend in ever appears).

Each test paints coloured shapes into an image and the same shapes into its mask, transforms
both, then reads the class back from the image's colours and compares it with the mask.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.segmentfactory import BACKGROUND, COLORS, nearest_color, shapes_pair
from transfer.data.pipelines.masks import MaskAugmenter, make_mask_dataset, mask_cache, resize_mask
from transfer.data.samples import IGNORE_VALUE
from transfer.core.errors import TransferError
from transfer.core.imageops import LETTERBOX_FILL, resize_image

SIZE = 64
SEEDS = [(0, 1), (7, 3), (42, 42), (123, 9), (5, 500), (99, 2)]
# What a mask value looks like in the image (255: the gray a zoom-out pads with).
PALETTE = {0: BACKGROUND, **COLORS, IGNORE_VALUE: (LETTERBOX_FILL,) * 3}


def _uneven(mask: np.ndarray, radius: int = 2) -> np.ndarray:
    """Pixels within ``radius`` of a change of mask value (where resampling may pick either side)."""
    padded = np.pad(mask, radius, mode="edge")
    out = np.zeros(mask.shape, bool)
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            out |= padded[dy:dy + mask.shape[0], dx:dx + mask.shape[1]] != mask
    return out


def assert_aligned(image, mask, *, exact=False):
    """The mask's class is the image's colour at every pixel (away from class borders unless exact)."""
    image, mask = np.asarray(image), np.asarray(mask)
    assert mask.dtype == np.uint8 and image.dtype == np.uint8
    assert set(np.unique(mask)) <= set(PALETTE), f"new mask values {sorted(set(np.unique(mask)) - set(PALETTE))}"
    seen = nearest_color(image, PALETTE)
    wrong = seen != mask
    if not exact:
        wrong &= ~_uneven(mask)
        # Nor at the output's frame: a class border (or the gray fill) just beyond it blends into
        # the bilinear pixels there, while the mask's nearest samples never see it.
        frame = np.ones(mask.shape, bool)
        frame[2:-2, 2:-2] = False
        wrong &= ~frame
    assert not wrong.any(), f"{wrong.sum()} pixels' mask disagrees with the image, e.g. at {np.argwhere(wrong)[:3]}"
    # Borders are thin: most pixels agree even counting them.
    assert (seen == mask).mean() > 0.9


def test_resize_mask_keeps_values_and_stays_aligned_with_the_image_resize():
    image, mask = shapes_pair(3, (300, 170))
    mask[:5] = IGNORE_VALUE
    small = resize_mask(tf.constant(mask), SIZE).numpy()
    assert small.shape == (SIZE, SIZE) and small.dtype == np.uint8
    assert set(np.unique(small)) <= set(np.unique(mask))
    resized = resize_image(tf.constant(image), SIZE).numpy()
    keep = small != IGNORE_VALUE
    seen = nearest_color(resized, PALETTE)
    assert not ((seen != small) & keep & ~_uneven(small)).any()
    # Upsampling too (a 20 px mask to 64): values copied, never blended.
    up = resize_mask(tf.constant(np.array([[0, 1], [2, 255]], np.uint8)), 4).numpy()
    assert up.tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 255, 255], [2, 2, 255, 255]]


def test_flip_moves_image_and_mask_pixel_for_pixel():
    image, mask = shapes_pair(1, (SIZE, SIZE))
    augment = MaskAugmenter(("flip",))
    flipped = 0
    seeds = [(i, 3 * i + 1) for i in range(12)]
    for seed in seeds:
        out_image, out_mask = (t.numpy() for t in augment(tf.constant(image), tf.constant(mask), tf.constant(seed)))
        assert_aligned(out_image, out_mask, exact=True)
        flipped += bool((out_mask != mask).any())
        assert np.array_equal(out_mask, mask) or np.array_equal(out_mask, mask[:, ::-1])
    assert 0 < flipped < len(seeds)  # both outcomes were drawn


@pytest.mark.parametrize("names", [("zoom",), ("flip", "zoom"), ("flip", "zoom", "color")])
def test_zoom_keeps_the_mask_on_its_pixels_and_pads_with_the_ignore_value(names):
    augment = MaskAugmenter(names)
    padded = 0
    for index, seed in enumerate(SEEDS):
        image, mask = shapes_pair(index, (SIZE, SIZE))
        out_image, out_mask = (t.numpy() for t in augment(tf.constant(image), tf.constant(mask), tf.constant(seed)))
        assert out_mask.shape == (SIZE, SIZE) and out_image.shape == (SIZE, SIZE, 3)
        assert set(np.unique(out_mask)) <= {0, 1, 2, IGNORE_VALUE}
        if "color" in names:
            # Colour jitter changes pixels only: the same seed without it gives the same mask.
            plain_image, plain_mask = MaskAugmenter(tuple(n for n in names if n != "color"))(
                tf.constant(image), tf.constant(mask), tf.constant(seed))
            assert np.array_equal(out_mask, plain_mask.numpy())
            assert not np.array_equal(out_image, plain_image.numpy())
            out_image = plain_image.numpy()
        assert_aligned(out_image, out_mask)
        padded += int((out_mask == IGNORE_VALUE).any())
    assert padded > 0  # some view zoomed out: its padding is ignored, never a class


def test_zoom_in_on_a_two_pixel_checkerboard_makes_no_blended_value():
    # A bilinear crop of a mask would give 0.5s at every border (Keras 3.15.1's RandomCrop / RandomZoom).
    mask = (np.indices((SIZE, SIZE)).sum(0) // 2 % 2).astype(np.uint8) * 7
    image = np.repeat(mask[..., None], 3, -1)
    for seed in SEEDS:
        _, out = MaskAugmenter(("zoom",))(tf.constant(image), tf.constant(mask), tf.constant(seed))
        assert out.dtype == tf.uint8
        assert set(np.unique(out.numpy())) <= {0, 7, IGNORE_VALUE}


def test_unknown_augmentation_is_refused():
    with pytest.raises(TransferError, match="mixup"):
        MaskAugmenter(("flip", "mixup"))


def test_rotate_turns_image_and_mask_together_by_quarter_turns():
    image, mask = shapes_pair(4, (SIZE, SIZE))
    turns_seen = set()
    for seed in SEEDS + [(1, 1), (2, 2), (3, 3), (4, 4)]:
        out_image, out_mask = MaskAugmenter(("rotate",))(tf.constant(image), tf.constant(mask), tf.constant(seed))
        assert out_image.shape == (SIZE, SIZE, 3) and out_mask.shape == (SIZE, SIZE)
        assert_aligned(out_image.numpy(), out_mask.numpy(), exact=True)  # a quarter turn moves whole pixels
        turns = [k for k in range(4) if np.array_equal(out_mask.numpy(), np.rot90(mask, k))]
        assert len(turns) == 1
        turns_seen.add(turns[0])
    assert turns_seen == {0, 1, 2, 3}


def test_masks_count_in_the_memory_cache_decision():
    from transfer.data.pipelines.cache_policy import CacheDecision

    fits = CacheDecision("memory", 300, 1000, "300 B of a 1 kB budget")
    assert mask_cache(fits) is fits
    tight = CacheDecision("memory", 900, 1000, "900 B of a 1 kB budget")
    assert mask_cache(tight).mode == "disk" and mask_cache(tight).estimated_bytes == 1200
    assert mask_cache(CacheDecision("none", 9, 1, "x")).mode == "none"


def _mask_samples(tmp_path, count, sizes=None, void=False):
    from tests.segmentfactory import write_mask_folder
    from transfer.data.masks import read_masks

    root = write_mask_folder(tmp_path / "data", count, sizes=sizes, void=void)
    samples, _ = read_masks(str(root))
    return samples


def test_dataset_pairs_each_image_with_its_own_mask_through_cache_shuffle_and_augmentation(tmp_path):
    sizes = [(64 + 16 * i, 48 + 8 * (i % 3)) for i in range(6)]  # various sizes, stretched to SIZE
    samples = _mask_samples(tmp_path, 6, sizes=sizes)
    plain = make_mask_dataset(samples, SIZE, 4, training=False, cache="memory")
    images, masks = next(iter(plain))
    assert images.dtype == tf.uint8 and images.shape == (4, SIZE, SIZE, 3)
    assert masks.dtype == tf.uint8 and masks.shape == (4, SIZE, SIZE)
    for image, mask in zip(images.numpy(), masks.numpy()):
        assert_aligned(image, mask)
    # (Colour jitter is checked above: it leaves the mask as it is.)
    augmented = make_mask_dataset(samples, SIZE, 3, training=True, augment=("flip", "zoom"), seed=1,
                                  cache="memory")
    seen_values = set()
    for epoch in range(2):
        for images, masks in augmented:
            for image, mask in zip(images.numpy(), masks.numpy()):
                seen_values |= set(np.unique(mask).tolist())
                assert_aligned(image, mask)
    assert seen_values <= {0, 1, 2, IGNORE_VALUE} and {0, 1, 2} <= seen_values
