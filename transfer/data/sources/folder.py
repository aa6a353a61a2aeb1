"""Folder-per-class image datasets: ``root/<class>/<image>``.

Two layouts are read:

- ``root/cat/*.jpg, root/dog/*.jpg``: split into train and val with a seeded
  stratified split;
- ``root/train/<class>/...`` and ``root/val/<class>/...`` (or
  ``root/validation/``): the given split is used as is.

Class names are the subfolder names, sorted. Images are found by extension
(jpg, jpeg, png, gif, bmp; any case), recursively inside each class folder;
hidden files and folders (and macOS ``__MACOSX`` zip leftovers) are ignored.
Paths are sorted, so the same folder always gives the same samples.

Example:
    >>> split = read_folder_dataset("flowers/", val_fraction=0.2, seed=0)
    >>> split.class_names
    ('daisy', 'dandelion', 'rose', 'sunflower', 'tulip')
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from transfer.data.findings import Finding, finding
from transfer.data.samples import DataSplit, Samples
from transfer.data.split import check_val_fraction, stratified_split
from transfer.core.errors import TransferError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
_LAYOUT_FIX = "Put each class's images in its own subfolder, e.g. data/cat/1.jpg and data/dog/2.jpg."


def _ignored(name: str) -> bool:
    # Hidden entries (.DS_Store, .ipynb_checkpoints) and the folder macOS adds to zips.
    return name.startswith(".") or name == "__MACOSX"


def is_image_file(name: str) -> bool:
    """Whether ``name`` has an image extension this project reads (any case).

    Example:
        >>> is_image_file("IMG_01.JPG"), is_image_file("notes.txt")
        (True, False)
    """
    return name.lower().endswith(IMAGE_EXTENSIONS) and not _ignored(name)


def _check_folder(root: Path) -> None:
    if not root.exists():
        raise TransferError(f"Data folder not found: '{root}'.", fix=f"Pass an existing folder. {_LAYOUT_FIX}")
    if not root.is_dir():
        raise TransferError(
            f"Data source '{root}' is a file, not a folder.",
            fix=f"Pass a .csv file with path,label columns, or a folder of class subfolders. {_LAYOUT_FIX}",
        )


def _class_dirs(root: Path) -> list[Path]:
    return sorted((p for p in root.iterdir() if p.is_dir() and not _ignored(p.name)), key=lambda p: p.name)


def _images_in(folder: Path) -> tuple[list[str], list[str]]:
    """Sorted image paths under ``folder`` (recursive) and the sorted other (non-hidden) files."""
    images, others = [], []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not _ignored(d)]  # prune hidden folders
        for name in filenames:
            if is_image_file(name):
                images.append(os.path.join(dirpath, name))
            elif not _ignored(name):
                others.append(os.path.join(dirpath, name))
    return sorted(images), sorted(others)


@dataclass(frozen=True)
class ClassListing:
    """What a folder of class folders holds, problems included (nothing raised for them).

    ``classes`` pairs each class name (sorted) with its sorted image paths, empty
    classes included; ``findings`` names empty class folders and files that are
    not read (``ignored_file``: wrong extension, or loose in ``root``).
    """

    root: Path
    classes: tuple[tuple[str, tuple[str, ...]], ...]
    findings: tuple[Finding, ...]

    def samples(self) -> Samples:
        """The listed images as ``Samples`` (every class name kept, even an empty one)."""
        sources = tuple(path for _, paths in self.classes for path in paths)
        targets = tuple(index for index, (_, paths) in enumerate(self.classes) for _ in paths)
        return Samples(sources=sources, targets=targets, class_names=tuple(name for name, _ in self.classes))


def list_class_folders(root: str | os.PathLike) -> ClassListing:
    """List ``root``'s class folders and images without judging them (the data doctor's view).

    Raises TransferError only when ``root`` is missing or not a folder.

    Example:
        >>> listing = list_class_folders("flowers/")
        >>> [(name, len(paths)) for name, paths in listing.classes][:1]
        [('daisy', 764)]
    """
    root = Path(root)
    _check_folder(root)
    classes, findings = [], []
    for class_dir in _class_dirs(root):
        images, others = _images_in(class_dir)
        classes.append((class_dir.name, tuple(images)))
        if not images:
            findings.append(finding(
                str(class_dir), "empty_class",
                f"class folder '{class_dir.name}' has 0 images ({len(others)} other files); "
                f"images are files ending in {', '.join(IMAGE_EXTENSIONS)} (any case)",
            ))
        for other in others:
            findings.append(finding(other, "ignored_file", f"not read: '{Path(other).suffix or 'no'}' extension"))
    if classes:
        for loose in sorted(p for p in root.iterdir() if p.is_file() and not _ignored(p.name)):
            findings.append(finding(str(loose), "ignored_file", "not read: a file outside any class folder"))
    return ClassListing(root, tuple(classes), tuple(findings))


def read_class_folders(root: str | os.PathLike) -> Samples:
    """All images under ``root``, one subfolder per class.

    Raises TransferError when ``root`` is missing or not a folder, has no class
    subfolders, has fewer than 2, or has a class folder without images.

    Example:
        >>> samples = read_class_folders("flowers/")
        >>> samples.class_names[:2], samples.sources[0]
        (('daisy', 'dandelion'), 'flowers/daisy/100080576_f52e8ee070_n.jpg')
    """
    root = Path(root)
    listing = list_class_folders(root)
    if not listing.classes:
        loose = sum(1 for p in root.iterdir() if p.is_file() and is_image_file(p.name))
        found = f" It holds {loose} images directly, outside any class folder." if loose else ""
        raise TransferError(f"No class subfolders in data folder '{root}'.{found}", fix=_LAYOUT_FIX)

    empty = []
    for f in listing.findings:
        if f.code == "empty_class":
            others = sum(
                1 for g in listing.findings if g.code == "ignored_file" and Path(g.path).is_relative_to(f.path)
            )
            empty.append(f"'{Path(f.path).name}' (0 images, {others} other files)")
    if empty:
        raise TransferError(
            f"Class folders without images in '{root}': {', '.join(empty)}. "
            f"Images are files ending in {', '.join(IMAGE_EXTENSIONS)} (any case).",
            fix="Add images to these folders or remove them.",
        )
    if len(listing.classes) < 2:
        raise TransferError(
            f"Data folder '{root}' has only 1 class folder ('{listing.classes[0][0]}'); "
            "classification needs at least 2 classes.",
            fix=f"Add a folder for each other class. {_LAYOUT_FIX}",
        )
    samples = listing.samples()
    logger.info("Read %d images in %d classes from %s", len(samples), samples.num_classes, root)
    return samples


def _split_dirs(root: Path) -> tuple[Path, Path] | None:
    """``(train, val)`` folders when ``root`` uses the train/ val/ layout, else None."""
    train = root / "train"
    vals = [root / name for name in ("val", "validation") if (root / name).is_dir()]
    if not train.is_dir() or not vals:
        return None
    if len(vals) > 1:
        raise TransferError(
            f"Data folder '{root}' has both 'val/' and 'validation/'; it is unclear which is the validation set.",
            fix="Keep only one of them.",
        )
    return train, vals[0]


def read_folder_dataset(root: str | os.PathLike, val_fraction: float = 0.2, seed: int = 0) -> DataSplit:
    """Training and validation samples from a folder-per-class dataset.

    Uses ``root/train/`` and ``root/val/`` (or ``root/validation/``) when both
    exist, and their class names must match; otherwise the class folders of
    ``root`` (or of ``root/train/`` alone) are split with ``stratified_split``.

    Example:
        >>> split = read_folder_dataset("flowers/", val_fraction=0.2, seed=0)
        >>> split.origin
        'stratified 80/20, seed 0'
    """
    root = Path(root)
    check_val_fraction(val_fraction)
    _check_folder(root)
    dirs = _split_dirs(root)
    if dirs is None:
        # A lone train/ (e.g. next to a test/ that must stay unseen) is split like a flat folder.
        base = root / "train" if (root / "train").is_dir() else root
        return stratified_split(read_class_folders(base), val_fraction=val_fraction, seed=seed)

    train_dir, val_dir = dirs
    # Compare the names first: a class missing from val/ deserves that message,
    # not a complaint about val/ having too few classes.
    train_names = {p.name for p in _class_dirs(train_dir)}
    val_names = {p.name for p in _class_dirs(val_dir)}
    if train_names != val_names:
        only_train = sorted(train_names - val_names)
        only_val = sorted(val_names - train_names)
        raise TransferError(
            f"The class folders of '{train_dir}' and '{val_dir}' differ: "
            f"only in {train_dir.name}/: {only_train or 'none'}; only in {val_dir.name}/: {only_val or 'none'}. "
            "Both must hold the same class folders.",
            fix="Add the missing class folders (with images) or rename them so the names match.",
        )
    train = read_class_folders(train_dir)
    val = read_class_folders(val_dir)
    return DataSplit(train=train, val=val, origin=f"folders {train_dir.name}/ {val_dir.name}/")
