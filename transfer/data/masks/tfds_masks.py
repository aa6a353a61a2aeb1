"""TensorFlow Datasets segmentation sources (``tfds:oxford_iiit_pet``): images and masks kept encoded in memory.

Images stay encoded in ``Samples.encoded``, as for classification
(``transfer.data.sources.tfds``, whose download and offline handling this
reuses). A mask has no file either: each target is an ``EncodedMask`` that
carries the dataset's own PNG bytes (read with ``SkipDecoding``, never
decoded while reading, then scanned once for values no class has and masks
all ignored, as mask files are) and a value table, so ``load_mask`` decodes
it like a mask file and nothing global or on disk is needed.

The features: the image is the 3-channel ``Image`` feature (``image``), the
mask the 1-channel ``Image`` feature (``segmentation_mask`` or a key holding
``mask``/``segmentation``). Known datasets have fixed classes:

- ``oxford_iiit_pet``: trimap values 1 = pet, 2 = background, 3 = border
  (the uncertain outline of the pet). Classes ``("background", "pet")``:
  2 -> 0, 1 -> 1, and the border is ignored (``IGNORE_VALUE``), as it is
  neither. ``class_names`` (two names) renames them.

Any other dataset needs ``class_names`` (mask value ``i`` is class ``i``)
and may take ``ignore_index``.

Example:
    >>> samples, findings = read_tfds_masks("oxford_iiit_pet", split="train")
    >>> samples.class_names, samples.targets[0].kind
    (('background', 'pet'), 'encoded')
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from transfer.data.findings import Finding, finding
from transfer.data.masks.decode import ENCODED_PATH, EncodedMask, mask_name
from transfer.data.masks.sizes import bytes_size
from transfer.data.masks.values import (
    check_class_names, check_ignore_index, judge_scanned, scan_error_findings, scan_masks,
)
from transfer.data.samples import IGNORE_VALUE, Samples
from transfer.data.sources.tfds import PREFIX, VALIDATION_SPLITS
from transfer.core.errors import TransferError

# name: (class names, values table) of datasets whose mask values are documented.
KNOWN = {
    "oxford_iiit_pet": (("background", "pet"), ((2, 0), (1, 1), (3, IGNORE_VALUE))),
}
_MASK_WORDS = ("segmentation_mask", "mask", "segmentation")


def tfds_builder(name: str, data_dir: str | os.PathLike | None = None) -> Any:
    """The prepared TFDS builder of ``name`` (downloaded when possible; a TransferError saying how otherwise)."""
    import tensorflow_datasets as tfds

    from transfer.data.sources.tfds import _prepare  # the classification source's download and offline rules

    try:
        builder = tfds.builder(name, data_dir=os.fspath(data_dir) if data_dir is not None else None)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise TransferError(f"TFDS has no dataset named '{name}'.",
                            fix="Check the name with tensorflow_datasets.list_builders(); use the form tfds:NAME, "
                                "e.g. tfds:oxford_iiit_pet.") from e
    if not builder.is_prepared():
        _prepare(builder, name)
    return builder


def split_names(builder: Any) -> tuple[str, str | None]:
    """``("train", validation split or None)`` of a builder (under ``mock_data`` any split reads)."""
    available = list(builder.info.splits.keys()) or ["train"]
    if "train" not in available:
        raise TransferError(f"TFDS dataset '{builder.name}' has no 'train' split; it has: {', '.join(available)}.",
                            fix="Use a dataset with a train split.")
    return "train", next((s for s in VALIDATION_SPLITS if s in available), None)


def mask_feature_keys(features: Any) -> tuple[str, str]:
    """``(image key, mask key)``: the 3-channel and the 1-channel ``Image`` features."""
    import tensorflow_datasets as tfds

    images = {k: f for k, f in features.items() if isinstance(f, tfds.features.Image)}
    colour = [k for k, f in images.items() if f.shape[-1] != 1]
    single = [k for k, f in images.items() if f.shape[-1] == 1]
    image_key = "image" if "image" in colour else (colour[0] if len(colour) == 1 else None)
    mask_key = next((k for word in _MASK_WORDS for k in single if word in k.lower()), None)
    if mask_key is None and len(single) == 1:
        mask_key = single[0]
    if image_key is None or mask_key is None:
        found = ", ".join(f"{k}: {type(f).__name__}{getattr(f, 'shape', '')}" for k, f in features.items())
        raise TransferError(f"Cannot find an image and a segmentation mask feature in {{{found}}}.",
                            fix="Use a TFDS segmentation dataset: an RGB Image feature and a 1-channel Image mask.")
    return image_key, mask_key


def read_tfds_masks(
    name: str, *, split: str = "train", class_names: Sequence[str] | None = None, ignore_index: int | None = None,
    builder: Any = None,
) -> tuple[Samples, list[Finding]]:
    """The images and encoded masks of one split of a TFDS segmentation dataset (see the module docstring)."""
    import tensorflow_datasets as tfds

    name = name[len(PREFIX):] if name.startswith(PREFIX) else name
    builder = builder if builder is not None else tfds_builder(name)
    names, values = _classes(builder.name, class_names, ignore_index)
    image_key, mask_key = mask_feature_keys(builder.info.features)
    decoders = {image_key: tfds.decode.SkipDecoding(), mask_key: tfds.decode.SkipDecoding()}
    ds = builder.as_dataset(split=split, shuffle_files=False, decoders=decoders)
    sources, targets, encoded, findings = [], [], [], []
    for index, example in enumerate(tfds.as_numpy(ds)):
        source = f"{PREFIX}{name}/{split}[{index}]"
        image, mask = bytes(example[image_key]), bytes(example[mask_key])
        try:
            width, height = bytes_size(image)
        except ValueError as e:
            findings.append(finding(source, "not_image", f"its '{image_key}' is not an encoded image ({e})"))
            continue
        try:
            mask_size = bytes_size(mask)
        except ValueError as e:
            findings.append(finding(source, "mask_unreadable", f"its '{mask_key}' is not an encoded image ({e})"))
            continue
        if mask_size != (width, height):
            findings.append(finding(source, "mask_size_mismatch", f"its mask is {mask_size[0]}x{mask_size[1]} but "
                                    f"the image is {width}x{height}; not used"))
            continue
        sources.append(source)
        encoded.append(image)
        targets.append(EncodedMask(width, height, path=ENCODED_PATH, values=values, data=mask, name=f"{source} mask"))
    # Every mask decoded once now: a value no class has (or a mask all ignored) is named here, not in an epoch.
    scan = scan_masks(list(zip(targets, sources)))
    by_name = {mask_name(t): s for t, s in zip(targets, sources)}
    findings += scan_error_findings(scan, by_name)
    judged, dropped = judge_scanned(scan, values, by_name)
    findings += judged
    keep = [i for i, t in enumerate(targets) if mask_name(t) not in scan.errors and mask_name(t) not in dropped]
    return Samples(tuple(sources[i] for i in keep), tuple(targets[i] for i in keep), names,
                   encoded=tuple(encoded[i] for i in keep)), findings


def _classes(name: str, class_names: Sequence[str] | None, ignore_index: int | None):
    ignore = check_ignore_index(ignore_index)
    if name in KNOWN:
        names, values = KNOWN[name]
        if class_names is not None:
            given = check_class_names(class_names, "class_names")
            if len(given) != len(names):
                raise TransferError(f"tfds:{name} has {len(names)} classes {names}; class_names gives "
                                    f"{len(given)}: {list(given)}.", fix=f"Give {len(names)} names, or none.")
            names = given
        return names, values
    if class_names is None:
        raise TransferError(f"tfds:{name}: its mask values have no known class names.",
                            fix="Pass the class names in mask value order (--class-names a,b,c).")
    names = check_class_names(class_names, "class_names")
    values = tuple((v, v) for v in range(len(names)))
    if ignore is not None:
        if ignore < len(names):
            raise TransferError(f"ignore_index {ignore} is the pixel value of class '{names[ignore]}'.",
                                fix="Pass the value that marks unlabelled pixels, which is no class's value.")
        values += ((ignore, IGNORE_VALUE),)
    return names, values
