"""TensorFlow Datasets (``tfds:NAME``) as a data source.

Images stay encoded (JPEG/PNG bytes, read with ``tfds.decode.SkipDecoding``)
in ``Samples.encoded``, so the pipeline decodes them the same way as files.
Each sample is named ``tfds:NAME/SPLIT[INDEX]``. The image and label features
are found from the dataset's features (an ``Image`` and a ``ClassLabel``, or a
``Sequence`` of ``ClassLabel`` for multi-label). The dataset's own validation
split is used when it has one; otherwise its train split is split with
``stratified_split``. A ``test`` split is never used: it stays unseen.

``tensorflow_datasets`` is imported inside the functions: it takes seconds to
import and most runs never need it.

Example:
    >>> split = read_tfds_dataset("tf_flowers", val_fraction=0.2, seed=0)
    >>> split.class_names, split.train.sources[0]
    (('dandelion', 'daisy', 'tulips', 'sunflowers', 'roses'), 'tfds:tf_flowers/train[0]')
"""

from __future__ import annotations

import logging
import os
from typing import Any

from transfer.data.samples import DataSplit, Samples
from transfer.data.split import check_val_fraction, stratified_split
from transfer.core.errors import TransferError

logger = logging.getLogger(__name__)

PREFIX = "tfds:"
# Split names TFDS datasets use for a validation set, in order of preference.
VALIDATION_SPLITS = ("validation", "val", "valid")
# Leading bytes of the formats tf.io.decode_image reads.
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF87a", b"GIF89a", b"BM", b"RIFF")


def _offline_fix(name: str, data_dir_root: Any) -> str:
    folder = name.split("/")[0].split(":")[0]
    return (
        f"On a machine with network run `tfds build {name} --data_dir=DIR` (or tensorflow_datasets.load('{name}', "
        f"data_dir=DIR)), copy DIR/{folder} into '{data_dir_root}' here, and run again; or pass the data_dir "
        "that already holds it (or set TFDS_DATA_DIR)."
    )


def find_feature_keys(features: Any, supervised_keys: Any = None) -> tuple[str, str, bool]:
    """``(image_key, label_key, multi_label)`` of a TFDS ``FeaturesDict``.

    The dataset's ``supervised_keys`` win when they name an image and a label
    feature; otherwise the one top-level ``Image`` and the one ``ClassLabel``
    (or ``Sequence(ClassLabel)``) feature, preferring keys named ``image`` and
    ``label``/``labels`` when there are several.

    Example:
        >>> find_feature_keys(tfds.builder("tf_flowers").info.features)
        ('image', 'label', False)
    """
    import tensorflow_datasets as tfds

    def label_kind(feature: Any) -> bool | None:
        """False: single label, True: multi-label, None: not a label feature."""
        if isinstance(feature, tfds.features.ClassLabel):
            return False
        if isinstance(feature, tfds.features.Sequence) and isinstance(feature.feature, tfds.features.ClassLabel):
            return True
        return None

    items = dict(features.items())
    images = [k for k, f in items.items() if isinstance(f, tfds.features.Image)]
    labels = [k for k, f in items.items() if label_kind(f) is not None]
    if supervised_keys and len(supervised_keys) == 2 and all(isinstance(k, str) for k in supervised_keys):
        image_key, label_key = supervised_keys
        if image_key in images and label_key in labels:
            return image_key, label_key, bool(label_kind(items[label_key]))

    def pick(keys: list[str], preferred: tuple[str, ...], what: str) -> str:
        if len(keys) == 1:
            return keys[0]
        for key in preferred:
            if key in keys:
                return key
        found = ", ".join(f"{k}: {type(f).__name__}" for k, f in items.items())
        detail = f"several ({', '.join(keys)})" if keys else "none"
        raise TransferError(
            f"Cannot tell which feature is the {what}: found {detail}. The dataset's features are {{{found}}}.",
            fix="Use a TFDS image classification dataset: one Image feature and one ClassLabel feature.",
        )

    image_key = pick(images, ("image",), "image (a tfds.features.Image)")
    label_key = pick(labels, ("label", "labels"), "label (a tfds.features.ClassLabel)")
    return image_key, label_key, bool(label_kind(items[label_key]))


def _unreachable_hosts(urls: Any) -> list[str]:
    """Hosts among ``urls`` whose names do not resolve: a fast sign of no network."""
    import socket  # here, not at the top: urllib.request alone adds ~40 ms to `import transfer`
    import urllib.parse
    import urllib.request

    if urllib.request.getproxies():
        return []  # behind a proxy the proxy resolves names, so a local failure means nothing
    hosts = sorted({urllib.parse.urlparse(u).hostname for u in urls or ()} - {None})
    failed = []
    for host in hosts:
        try:
            socket.getaddrinfo(host, None)
        except (socket.gaierror, UnicodeError):
            failed.append(host)
    return failed


def _prepare(builder: Any, name: str) -> None:
    """Download and prepare ``builder``'s data, or raise a TransferError that says how to get it."""
    download = type(builder).download_and_prepare
    # tfds.testing.mock_data swaps in a no-op download_and_prepare: nothing to fetch, nothing to check.
    mocked = getattr(download, "__module__", "").startswith("tensorflow_datasets.testing")
    where = f"data_dir '{builder.data_dir_root}'"
    if not mocked:
        try:
            urls = builder.url_infos or {}
        except Exception:  # builders without a checksums file; the download reports what fails
            urls = {}
        # Without this check an offline download retries for minutes before it fails.
        unreachable = _unreachable_hosts(urls)
        if unreachable:
            raise TransferError(
                f"TFDS dataset '{name}' is not prepared in {where} and cannot be downloaded: "
                f"the download host(s) {', '.join(unreachable)} cannot be reached (no network?).",
                fix=_offline_fix(name, builder.data_dir_root),
            )
    logger.info("TFDS dataset %s is not prepared in %s: downloading and preparing it", name, where)
    try:
        builder.download_and_prepare()
    except Exception as e:  # network, manual-download and disk errors all end here; keep the cause
        cause = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(". ")
        raise TransferError(
            f"TFDS dataset '{name}' is not prepared in {where} and could not be downloaded and prepared: {cause}.",
            fix=_offline_fix(name, builder.data_dir_root),
        ) from e


def _read_split(builder: Any, name: str, split: str, image_key: str, label_key: str, multi_label: bool) -> tuple:
    import tensorflow_datasets as tfds

    ds = builder.as_dataset(
        split=split, shuffle_files=False, decoders={image_key: tfds.decode.SkipDecoding()}
    )
    sources, targets, encoded = [], [], []
    for index, example in enumerate(tfds.as_numpy(ds)):
        image = example[image_key]
        if not isinstance(image, bytes):
            image = bytes(image)
        if index == 0 and not image.startswith(_IMAGE_MAGIC):
            raise TransferError(
                f"TFDS dataset '{name}' ({split}) stores its '{image_key}' feature in a format "
                f"that is not an encoded image (first bytes: {image[:8]!r}).",
                fix="Use a dataset whose images are stored as JPEG or PNG.",
            )
        label = example[label_key]
        sources.append(f"{PREFIX}{name}/{split}[{index}]")
        targets.append(tuple(sorted({int(v) for v in label})) if multi_label else int(label))
        encoded.append(image)
    return tuple(sources), tuple(targets), tuple(encoded)


def read_tfds_dataset(
    name: str, val_fraction: float = 0.2, seed: int = 0, data_dir: str | os.PathLike | None = None
) -> DataSplit:
    """Training and validation samples of the TFDS dataset ``name`` (e.g. ``tf_flowers``).

    ``name`` may carry a config and version as TFDS spells them
    (``NAME/CONFIG:VERSION``) and the ``tfds:`` prefix. ``data_dir`` defaults
    to TFDS's own (``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``). A dataset
    that is not prepared there is downloaded; offline that fails with a
    TransferError saying how to bring the data over. The whole dataset is read
    into memory as encoded bytes, so this suits datasets of up to a few GB.

    Example:
        >>> split = read_tfds_dataset("tf_flowers", val_fraction=0.2, seed=0)
        >>> len(split.train) + len(split.val)
        3670
    """
    val_fraction = check_val_fraction(val_fraction)
    name = name[len(PREFIX):] if name.startswith(PREFIX) else name
    data_dir = os.fspath(data_dir) if data_dir is not None else None
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as e:
        where = f" in data_dir '{data_dir}'" if data_dir else ""
        raise TransferError(
            f"TFDS has no dataset named '{name}' (and none was found prepared{where}).",
            fix="Check the name with tensorflow_datasets.list_builders(); "
            "use the form tfds:NAME, e.g. tfds:tf_flowers.",
        ) from e
    if not builder.is_prepared():
        _prepare(builder, name)

    info = builder.info
    image_key, label_key, multi_label = find_feature_keys(info.features, info.supervised_keys)
    feature = info.features[label_key]
    class_names = tuple((feature.feature if multi_label else feature).names)
    # Prepared datasets list their splits; under tfds.testing.mock_data the list is
    # empty and any split name reads, so "train" is assumed.
    available = list(info.splits.keys()) or ["train"]
    if "train" not in available:
        raise TransferError(
            f"TFDS dataset '{name}' has no 'train' split; it has: {', '.join(available)}.",
            fix="Use a dataset with a train split.",
        )
    val_name = next((s for s in VALIDATION_SPLITS if s in available), None)

    def samples(split: str) -> Samples:
        sources, targets, encoded = _read_split(builder, name, split, image_key, label_key, multi_label)
        return Samples(sources, targets, class_names, multi_label=multi_label, encoded=encoded)

    train = samples("train")
    logger.info("Read %d training images of TFDS dataset %s", len(train), name)
    if val_name is None:
        return stratified_split(train, val_fraction=val_fraction, seed=seed)
    return DataSplit(train=train, val=samples(val_name), origin=f"tfds splits train/{val_name}")
