"""One mask source, whatever its format: detect it, read it, name every problem.

Formats (``mask_format``):

- ``"folder"``: ``images/`` + ``masks/`` (or ``image/`` + ``label/``) mask files (``folders``);
- ``"via"``: a VIA JSON file, or a folder holding ``via_region_data.json`` (``via``);
- ``"coco"``: a COCO JSON file with ``segmentation`` (``coco``);
- ``"tfds"``: ``tfds:NAME`` (``tfds_masks``).

A folder with ``train/`` (and ``val/``) subfolders of one of these is a split
source: ``load_mask_data`` reads it, ``split_folders`` finds the two.

``list_masks`` is the data doctor's view (every problem a finding);
``read_masks`` is training's (problems that stop training raise one
TransferError naming each). ``ignore_index`` applies to mask files and TFDS
masks; polygons have no ignored value.

Example:
    >>> samples, findings = read_masks("camvid/train", ignore_index=11)
    >>> len(samples), samples.num_classes
    (367, 11)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from transfer.data.findings import Finding, SourceListing, refuse_stops
from transfer.data.masks.coco import read_coco_masks
from transfer.data.masks.folders import find_mask_folder, read_mask_folder
from transfer.data.masks.region_checks import check_regions
from transfer.data.masks.tfds_masks import read_tfds_masks
from transfer.data.masks.via import DEFAULT_NAME, read_via_json
from transfer.data.samples import Samples
from transfer.data.sources.tfds import PREFIX
from transfer.core.errors import TransferError
from transfer.core.regular_files import read_regular

FORMATS = ("folder", "via", "coco", "tfds")
SOURCES_HELP = (
    "Pass a folder with images/ and masks/ (or image/ and label/) subfolders, a VIA .json file (or its folder), "
    "a COCO .json file with segmentation, tfds:oxford_iiit_pet, or a folder with train/ and val/ of these."
)
TRAIN_FOLDERS = ("train", "training")
VAL_FOLDERS = ("val", "valid", "validation")
_SNIFF_BYTES = 1 << 16
_VIA_MARKERS = (b'"_via_', b'"shape_attributes"', b'"filename"')
_MAX_LISTED = 5  # each detail is a long line: the first few, then a count


def _sniff_json(path: Path) -> str | None:
    """``"via"`` or ``"coco"`` from the first bytes of a JSON file (the reader checks the whole)."""
    try:
        head = read_regular(path, max_bytes=_SNIFF_BYTES)  # a FIFO is not sniffed (it could block forever)
    except (OSError, ValueError):
        return None
    if not head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith((b"{", b"[")):
        return None
    return "via" if any(marker in head for marker in _VIA_MARKERS) else "coco"


def find_via_json(folder: str | os.PathLike) -> Path | None:
    """``folder/via_region_data.json``, else the first ``*.json`` there that looks like VIA, or None."""
    folder = Path(folder)
    if (folder / DEFAULT_NAME).is_file():
        return folder / DEFAULT_NAME
    try:
        candidates = sorted(p for p in folder.glob("*.json") if p.is_file())
    except OSError:
        return None
    return next((p for p in candidates if _sniff_json(p) == "via"), None)


def mask_format(source: str | os.PathLike) -> str | None:
    """The format of a mask source (``FORMATS``), None for anything else (cheap: a listing or a file head).

    Example:
        >>> mask_format("membrane/train"), mask_format("balloon/train"), mask_format("flowers/")
        ('folder', 'via', None)
    """
    text = os.fspath(source)
    if text.startswith(PREFIX):
        return "tfds"
    path = Path(text)
    if path.is_file():
        return _sniff_json(path) if path.suffix.lower() == ".json" else None
    if path.is_dir():
        if find_mask_folder(path) is not None:
            return "folder"
        if find_via_json(path) is not None:
            return "via"
    return None


def _child(folder: Path, names: Sequence[str]) -> Path | None:
    try:
        found = {p.name.lower(): p for p in folder.iterdir() if p.is_dir()}
    except OSError:
        return None
    return next((found[n] for n in names if n in found), None)


def split_folders(source: str | os.PathLike) -> tuple[Path, Path | None] | None:
    """``(train folder, val folder or None)`` when ``source`` is a folder of split folders of a mask format.

    Example:
        >>> split_folders("camvid")
        (PosixPath('camvid/train'), PosixPath('camvid/val'))
    """
    path = Path(source)
    if not path.is_dir() or mask_format(path) is not None:
        return None
    train = _child(path, TRAIN_FOLDERS)
    if train is None or mask_format(train) not in ("folder", "via"):
        return None
    val = _child(path, VAL_FOLDERS)
    return train, (val if val is not None and mask_format(val) is not None else None)


# What list_masks returns (one class for every annotated source).
MaskListing = SourceListing


def list_masks(
    source: str | os.PathLike, *, class_names: Sequence[str] | None = None, ignore_index: int | None = None,
    allow_outside_root: bool = False, values: tuple[tuple[int, int], ...] | None = None, tfds_split: str = "train",
) -> MaskListing:
    """Read and check a mask source, naming every problem as a finding (the data doctor's view).

    ``values`` fixes the value table of mask files (with ``class_names``: a
    validation folder read with training's). Raises TransferError only when
    the source is not a mask source, cannot be read at all or is hostile.

    Example:
        >>> listing = list_masks("membrane/train")
        >>> listing.format, len(listing.samples)
        ('folder', 30)
    """
    kind = mask_format(source)
    text = os.fspath(source)
    if kind is None:
        if split_folders(source) is not None:
            raise TransferError(f"{text}: holds train/ and val/ folders; read each of them, or use "
                                "load_mask_data (training does) to read both.", fix=SOURCES_HELP)
        what = "not found" if not os.path.exists(text) else "not a mask source"
        raise TransferError(f"{text}: {what}.", fix=SOURCES_HELP)
    if kind == "tfds":
        samples, findings = read_tfds_masks(text, split=tfds_split, class_names=class_names,
                                            ignore_index=ignore_index)
        return MaskListing(samples, tuple(findings), kind, "")
    if kind == "folder":
        samples, findings = read_mask_folder(text, class_names=class_names, ignore_index=ignore_index,
                                             values=values)
        return MaskListing(samples, tuple(findings), kind, text)
    path = Path(text)
    if kind == "via":
        json_path = path if path.is_file() else find_via_json(path)
        parsed = read_via_json(json_path, class_names=class_names, allow_outside_root=allow_outside_root)
        samples, findings = check_regions(parsed, class_names)
    else:
        parsed = read_coco_masks(path, allow_outside_root=allow_outside_root)
        samples, findings = check_regions(parsed, class_names if class_names is not None else parsed.class_order)
    return MaskListing(samples, tuple(findings), kind, parsed.root)


def read_masks(
    source: str | os.PathLike, *, class_names: Sequence[str] | None = None, ignore_index: int | None = None,
    allow_outside_root: bool = False,
) -> tuple[Samples, list[Finding]]:
    """Images with their ``Mask`` targets from a mask source (see the module docstring), and what was wrong.

    ``class_names`` fixes the classes: for mask files, in pixel value order;
    for VIA/COCO polygons, the object classes (``background`` is class 0 and
    is added when not first). ``ignore_index`` is the mask value of
    unlabelled pixels (CamVid's 11): it loads as ``IGNORE_VALUE``.
    ``allow_outside_root`` lets JSON image paths leave the file's folder.
    Problems that leave an image out come back as findings; problems that
    make the data untrustworthy (unknown mask values, a malformed entry, a
    path outside the root) raise one TransferError naming each, with its file.

    Example:
        >>> samples, findings = read_masks("balloon/train")
        >>> len(samples), samples.class_names, samples.targets[0].kind
        (61, ('background', 'balloon'), 'polygons')
    """
    listing = list_masks(source, class_names=class_names, ignore_index=ignore_index,
                         allow_outside_root=allow_outside_root)
    raise_for_stops(source, listing.stops)
    return listing.samples, list(listing.findings)


def raise_for_stops(source: str | os.PathLike, stops: Sequence[Finding]) -> None:
    """One TransferError naming the findings that stop training (the first 5, then a count), if any."""
    fixes = dict.fromkeys(f.fix for f in stops)
    fix = " ".join(fixes) + f" (`transfer check-data {os.fspath(source)}` lists every problem.)"
    refuse_stops(os.fspath(source), stops, noun="mask", at_most=_MAX_LISTED, fix=fix)
