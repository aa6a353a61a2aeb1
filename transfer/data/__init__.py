"""Data sources: from what the user names to training and validation ``Samples``.

``load_data`` reads any supported source:

- ``tfds:NAME`` (e.g. ``tfds:tf_flowers``): a TensorFlow Datasets dataset;
- a path ending in ``.csv``: a CSV list (``path,label`` or ``path,labels``);
- a folder: one subfolder per class (or ``train/`` and ``val/`` folders of them).

Importing this package is fast: nothing here imports TensorFlow; TFDS is
imported only when a ``tfds:`` source is read.

Example:
    >>> split = load_data("flowers/", val_fraction=0.2, seed=0)
    >>> len(split.train), len(split.val), split.origin
    (3453, 864, 'stratified 80/20, seed 0')
"""

from __future__ import annotations

import os

from transfer.data.sources.csvfile import read_csv_dataset
from transfer.data.sources.folder import read_class_folders, read_folder_dataset
from transfer.data.samples import DataSplit, Samples
from transfer.data.split import stratified_split
from transfer.data.sources.tfds import PREFIX as TFDS_PREFIX
from transfer.data.sources.tfds import read_tfds_dataset
from transfer.core.errors import TransferError

__all__ = [
    "DataSplit",
    "Samples",
    "load_data",
    "read_class_folders",
    "read_csv_dataset",
    "read_folder_dataset",
    "read_tfds_dataset",
    "stratified_split",
]

_SOURCES_HELP = (
    "Pass a folder with one subfolder per class, a .csv file with path,label columns, "
    "or tfds:NAME for a TensorFlow Datasets dataset (e.g. tfds:tf_flowers)."
)


def load_data(
    source: str | os.PathLike, *, val_fraction: float = 0.2, seed: int = 0, allow_outside_root: bool = False
) -> DataSplit:
    """Training and validation samples from ``source``.

    ``val_fraction`` and ``seed`` drive the stratified split when the source
    does not give its own (train/ val/ folders, a CSV split column, a TFDS
    validation split). For ``tfds:`` sources the data folder is TFDS's own
    (``$TFDS_DATA_DIR``, default ``~/tensorflow_datasets``). CSV paths must
    lie inside the CSV's folder unless ``allow_outside_root``.

    Example:
        >>> split = load_data("tfds:tf_flowers", val_fraction=0.2, seed=0)
        >>> split.train.encoded is not None
        True
    """
    text = os.fspath(source)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if text.startswith(TFDS_PREFIX):
        name = text[len(TFDS_PREFIX):].strip()
        if not name:
            raise TransferError(f"No dataset name after '{TFDS_PREFIX}'. Received: source={text!r}", fix=_SOURCES_HELP)
        return read_tfds_dataset(name, val_fraction=val_fraction, seed=seed)
    if text.lower().endswith(".csv"):
        return read_csv_dataset(text, val_fraction=val_fraction, seed=seed, allow_outside_root=allow_outside_root)
    if os.path.isdir(text):
        return read_folder_dataset(text, val_fraction=val_fraction, seed=seed)
    if os.path.exists(text):
        raise TransferError(f"Data source '{text}' is a file but not a .csv file.", fix=_SOURCES_HELP)
    raise TransferError(f"Data source not found: '{text}'.", fix=_SOURCES_HELP)
