"""One box source, whatever its format: detect it, read it, check every box.

``list_boxes`` is the data doctor's view (every problem a finding, nothing
raised for a bad line or box); ``read_boxes`` is training's (problems that
stop training raise one TransferError naming each of them).

Example:
    >>> samples, findings = read_boxes("raccoon/train_labels.csv")
    >>> len(samples), samples.class_names
    (160, ('raccoon',))
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from transfer.data.boxes.box_checks import check_annotations
from transfer.data.boxes.coco import read_coco_json
from transfer.data.boxes.csv_boxes import EXPECTED, is_box_csv, read_box_csv
from transfer.data.boxes.records import Annotations
from transfer.data.boxes.voc import find_voc_layout, read_voc_folder
from transfer.data.findings import Finding, SourceListing, refuse_stops
from transfer.data.samples import Samples
from transfer.core.errors import TransferError

FORMATS = ("voc", "csv", "coco")
_SOURCES_HELP = (
    "Pass a folder of Pascal VOC .xml files (or its images/ + annotations/ parent, or a parent of train/ and "
    f"val/ VOC folders; one of its lists as FOLDER/ImageSets/Main/NAME.txt), a .csv file with the columns "
    f"{EXPECTED}, or a COCO .json file."
)
_MAX_LISTED = 20


def voc_list_source(source: str | os.PathLike) -> tuple[str, str] | None:
    """``(VOC folder, split)`` for a source naming one ``ImageSets/Main`` list file, else None.

    This is how ``--data`` / ``--val-data`` / ``transfer evaluate --data`` name one split of
    a VOC folder (e.g. BCCD's test list) with a plain path.

    Example:
        >>> voc_list_source("bccd/ImageSets/Main/test.txt")
        ('bccd', 'test')
    """
    path = Path(source)
    if path.suffix.lower() != ".txt" or path.parent.name != "Main" or path.parent.parent.name != "ImageSets":
        return None
    return os.fspath(path.parents[2]), path.stem


def box_format(source: str | os.PathLike) -> str | None:
    """``"voc"``, ``"csv"`` or ``"coco"`` for a box source, None for anything else (cheap: reads a header at most).

    Example:
        >>> box_format("raccoon/"), box_format("raccoon/train_labels.csv"), box_format("flowers/")
        ('voc', 'csv', None)
    """
    listed = voc_list_source(source)
    if listed is not None:
        # A missing list is still a VOC source: reading it names the lists there are, in VOC words.
        return "voc" if find_voc_layout(listed[0]) is not None else None
    path = Path(source)
    suffix = path.suffix.lower()
    if suffix == ".csv" and path.is_file():
        return "csv" if is_box_csv(path) else None
    if suffix == ".json" and path.is_file():
        return "coco"
    if path.is_dir() and (find_voc_layout(path) is not None or split_folders(path) is not None):
        return "voc"
    return None


TRAIN_FOLDERS = ("train", "training")
VAL_FOLDERS = ("val", "valid", "validation")


def split_folders(source: str | os.PathLike) -> dict[str, Path] | None:
    """``{"train": folder, "val": folder}`` (val when there is one) for a folder whose ``train/`` (and
    ``val/``, ``valid/`` or ``validation/``) subfolders are Pascal VOC folders; None otherwise.

    The mask sources' rule (``transfer.data.masks.reading.split_folders``): the doctor and training
    both read such a parent as its two sides.

    Example:
        >>> split_folders("voc_parent")
        {'train': PosixPath('voc_parent/train'), 'val': PosixPath('voc_parent/val')}
    """
    path = Path(source)
    if not path.is_dir() or find_voc_layout(path) is not None:
        return None
    found = {}
    try:
        children = {p.name.lower(): p for p in path.iterdir() if p.is_dir()}
    except OSError:
        return None
    for side, names in (("train", TRAIN_FOLDERS), ("val", VAL_FOLDERS)):
        folder = next((children[n] for n in names if n in children), None)
        if folder is not None and find_voc_layout(folder) is not None:
            found[side] = folder
    return found if "train" in found else None


def _read_split_folders(source: str | os.PathLike, folders: dict[str, Path], split: str | None) -> Annotations:
    """The VOC annotations of one side (``split``) of a parent of split folders, or of both sides."""
    if split is not None and split not in folders:
        raise TransferError(f"{source}: no '{split}' folder of Pascal VOC annotations: it has "
                            f"{', '.join(f'{p.name}/' for p in folders.values())}.",
                            fix=f"Pass one of {', '.join(sorted(folders))} as the split, or no split.")
    sides = [folders[split]] if split is not None else list(folders.values())
    parts = [read_voc_folder(folder) for folder in sides]
    if len(parts) == 1:
        return parts[0]
    return Annotations(tuple(r for part in parts for r in part.images),
                       tuple(f for part in parts for f in part.findings), root=os.fspath(source))


# What list_boxes returns (one class for every annotated source).
BoxListing = SourceListing


def list_boxes(
    source: str | os.PathLike, *, split: str | None = None, class_names: Sequence[str] | None = None,
    allow_outside_root: bool = False,
) -> BoxListing:
    """Read and check a box source, naming every problem as a finding (the data doctor's view).

    Raises TransferError only when the source is not a box source, cannot be
    read at all, is hostile (XML entities, JSON nested too deeply) or
    ``split`` does not apply.

    Example:
        >>> listing = list_boxes("bccd/", split="train")
        >>> len(listing.samples), [f.code for f in listing.findings]
        (205, ['box_degenerate'])
    """
    kind = box_format(source)
    if kind is None:
        what = "not found" if not os.path.exists(source) else "not a box annotation source"
        raise TransferError(f"{source}: {what}.", fix=_SOURCES_HELP)
    listed = voc_list_source(source)
    if listed is not None:
        if split is not None and split != listed[1]:
            raise TransferError(f"{source}: names the {listed[1]!r} list, but split={split!r} was asked for.",
                                fix="Give the folder with split, or the list file alone.")
        source, split = listed
    if split is not None and kind != "voc":
        raise TransferError(
            f"{source}: split={split!r} names an ImageSets/Main list of a Pascal VOC folder; a {kind.upper()} "
            "file has none.",
            fix="Drop split, or give the validation images as their own file.",
        )
    folders = split_folders(source) if kind == "voc" else None
    if folders is not None:
        annotations = _read_split_folders(source, folders, split)
    elif kind == "voc":
        annotations = read_voc_folder(source, split=split)
    elif kind == "csv":
        annotations = read_box_csv(source, allow_outside_root=allow_outside_root)
    else:
        annotations = read_coco_json(source, allow_outside_root=allow_outside_root)
    samples, findings = check_annotations(annotations, class_names)
    return BoxListing(samples, tuple(findings), kind, annotations.root)


def read_boxes(
    source: str | os.PathLike, *, split: str | None = None, class_names: Sequence[str] | None = None,
    allow_outside_root: bool = False,
) -> tuple[Samples, list[Finding]]:
    """Images with their boxes from a Pascal VOC folder, a box CSV or a COCO JSON file, and what was wrong.

    The format is detected: a folder holding VOC ``.xml`` files (or an
    ``annotations/`` folder of them), a ``.csv`` with the columns
    ``filename,width,height,class,xmin,ymin,xmax,ymax``, a COCO ``.json``.
    ``split`` reads one ``ImageSets/Main`` list of a VOC folder (e.g.
    ``"test"``); naming the list file itself (``"bccd/ImageSets/Main/test.txt"``)
    does the same, which is how the command line names a split. ``class_names``
    fixes the classes (a validation source read with training's names): boxes of other classes are dropped and reported.
    Without it the classes are the sorted names of the boxes found.
    ``allow_outside_root`` lets CSV/COCO file names point outside the
    annotation file's folder.

    Every box is checked (``transfer.data.boxes.box_checks``): dropped boxes,
    clipped boxes, stated image sizes that differ from the real image and
    images left out come back as findings; nothing is printed. Problems that
    make the data untrustworthy (a malformed annotation, a path outside the
    root) raise one TransferError naming each of them, with its file.

    Example:
        >>> samples, findings = read_boxes("bccd/", split="test")
        >>> len(samples), samples.class_names
        (72, ('Platelets', 'RBC', 'WBC'))
        >>> samples.targets[0].xyxy[0]
        (193.0, 92.0, 387.0, 285.0)
    """
    listing = list_boxes(source, split=split, class_names=class_names, allow_outside_root=allow_outside_root)
    raise_for_stops(source, listing.stops)
    return listing.samples, list(listing.findings)


def raise_for_stops(source: str | os.PathLike, stops: Sequence[Finding]) -> None:
    """One TransferError naming every finding that stops training (up to 20), or nothing when there are none."""
    fix = f"Fix or remove them (`transfer check-data {source}` lists every problem)."
    if any(f.code == "box_outside_root" for f in stops):
        fix += (" Paths outside the annotation file's folder are allowed with --allow-outside-root "
                "(allow_outside_root=True in Python) if you trust the file.")
    refuse_stops(str(source), stops, noun="annotation", at_most=_MAX_LISTED, fix=fix)
