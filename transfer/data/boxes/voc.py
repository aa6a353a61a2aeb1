"""Pascal VOC XML annotations: one ``.xml`` file per image.

Layouts found (folder names matched without regard to case):

- images and XML files in one folder;
- sibling folders: ``images/`` (or ``JPEGImages/``, ``imgs/``) beside
  ``annotations/`` (or ``Annotations/``, ``annots/``, ``xml/``), as in
  ``raccoon/images + raccoon/annotations`` or the VOC
  ``JPEGImages/ + Annotations/``; the annotations folder itself may be given;
- ``ImageSets/Main/NAME.txt`` split lists (one image id per line) beside
  them: ``split="test"`` reads only the ids of ``test.txt``. Class-specific
  lists (``cat_train.txt``, any name with ``_``) are not splits.

An XML file's image is its ``<filename>`` in the images folder (only the
file name: ``<path>`` and folders in it are the annotating machine's and are
ignored), else the image with the XML file's stem. ``<size>`` is what the
annotation claims; the checks compare it with the real image. Objects marked
``<truncated>1</truncated>`` objects are ordinary boxes; ``<difficult>1</difficult>``
objects are kept as ignore regions (``RawBox.ignore``), as VOC's own
evaluation treats them: a detector does not train on them, and a detection on
one counts neither as a hit nor as a false positive.
Coordinates are taken as written (VOC's 1-based pixel numbers differ from
0-based edges by one pixel, far below annotation noise).

XML is parsed with ``defusedxml``: a file declaring entities (the
"billion laughs" bomb) or an external entity (``SYSTEM "file:///etc/passwd"``)
is refused before anything is expanded or read, as a finding naming it (so
the data doctor names every bad file; training stops on it).

Example:
    >>> annotations = read_voc_folder("bccd/", split="test")
    >>> len(annotations.images)
    72
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from xml.etree.ElementTree import Element, ParseError

import defusedxml
import defusedxml.ElementTree as safe_xml

from transfer.core import imagesize
from transfer.data.boxes.records import (
    AnnotatedImage, Annotations, RawBox, over_cap, parse_coordinate, read_annotation_file,
)
from transfer.data.findings import Finding, finding
from transfer.core.errors import TransferError
from transfer.core.regular_files import not_regular, read_regular

ANNOTATION_DIRS = ("annotations", "annots", "annotation", "xml")
IMAGE_DIRS = ("jpegimages", "images", "imgs", "img")
IMAGE_EXTENSIONS = frozenset(ext for exts in imagesize.EXTENSIONS.values() for ext in exts)
# A VOC file of 10,000 boxes is about 3 MB; far larger is not an annotation and is not read into memory.
MAX_XML_BYTES = 32 << 20
_SAFETY = (defusedxml.EntitiesForbidden, defusedxml.ExternalReferenceForbidden, defusedxml.DTDForbidden,
           defusedxml.NotSupportedError)


@dataclass(frozen=True)
class VocLayout:
    """Where a VOC dataset keeps its XML files, its images and its split lists (None when absent)."""

    root: Path
    annotations: Path
    images: Path
    image_sets: Path | None

    def splits(self) -> tuple[str, ...]:
        """The split names of ``ImageSets/Main`` (e.g. ``('test', 'train', 'trainval', 'val')``)."""
        if self.image_sets is None:
            return ()
        return tuple(sorted(p.stem for p in self.image_sets.glob("*.txt") if "_" not in p.stem))


def _child(folder: Path, names: tuple[str, ...]) -> Path | None:
    """The first subfolder of ``folder`` whose lower-cased name is in ``names`` (in ``names`` order)."""
    try:
        found = {p.name.lower(): p for p in folder.iterdir() if p.is_dir()}
    except OSError:
        return None
    return next((found[n] for n in names if n in found), None)


def _has_xml(folder: Path) -> bool:
    return any(p.suffix.lower() == ".xml" for p in folder.glob("*.xml"))


def find_voc_layout(folder: str | os.PathLike) -> VocLayout | None:
    """The VOC layout of ``folder``, or None when it holds no VOC XML files.

    Example:
        >>> find_voc_layout("raccoon/").images.name
        'images'
    """
    root = Path(folder)
    if not root.is_dir():
        return None
    annotations = _child(root, ANNOTATION_DIRS)
    if annotations is None or not _has_xml(annotations):
        if not _has_xml(root):
            return None
        annotations = root
    images = _child(root, IMAGE_DIRS)
    if images is None and annotations == root and root.name.lower() in ANNOTATION_DIRS:
        images = _child(root.parent, IMAGE_DIRS)  # the annotations folder was given: images beside it
        root = root.parent if images is not None else root
    images = images or root
    if images == annotations and not any(p.suffix.lower() in IMAGE_EXTENSIONS for p in root.iterdir()):
        return None  # a stray .xml beside class folders is not a VOC dataset
    sets = root / "ImageSets" / "Main"
    image_sets = sets if sets.is_dir() else None
    return VocLayout(root, annotations, images, image_sets)


def read_voc_folder(folder: str | os.PathLike, *, split: str | None = None) -> Annotations:
    """The annotated images of a VOC folder (all, or the ids of ``ImageSets/Main/<split>.txt``).

    Raises TransferError when ``folder`` holds no VOC XML or ``split`` names
    no list. Problems of files (hostile XML with entities, a file too large
    or not regular, a malformed file, more objects than ``MAX_BOXES_PER_IMAGE``,
    an object without a name or with a coordinate that is not a number, an
    image without annotation) become findings.

    Example:
        >>> annotations = read_voc_folder("raccoon/")
        >>> annotations.images[0].claimed_size
        (650.0, 417.0)
    """
    layout = find_voc_layout(folder)
    if layout is None:
        raise TransferError(
            f"{folder}: no Pascal VOC .xml files found in the folder or in an annotations/ folder inside it.",
            fix="Pass the folder that holds the .xml files (or their images/ + annotations/ parent).",
        )
    findings: list[Finding] = []
    if split is None:
        xml_files = []
        for path in sorted(layout.annotations.glob("*.xml")):
            kind = not_regular(path)
            if kind is None:
                xml_files.append(path)
            elif kind != "a folder":  # a FIFO or device is named, never read (reading it could wait forever)
                findings.append(finding(str(path), "not_regular_file", f"the annotation is {kind}; not read"))
    else:
        xml_files = _split_files(layout, split, findings)
    index = _image_index(layout.images)
    records = []
    for xml_file in xml_files:
        record = _read_xml(xml_file, layout.images, index, findings)
        if record is not None:
            records.append(record)
    if split is None:
        annotated = {os.path.normcase(os.path.abspath(r.image)) for r in records}
        xml_stems = {p.stem.lower() for p in xml_files}  # a malformed XML is reported already; not its image
        for stem, paths in sorted(index.items()):
            for path in paths:
                if stem in xml_stems or os.path.normcase(os.path.abspath(path)) in annotated:
                    continue
                findings.append(finding(path, "box_unannotated",
                                        f"no .xml annotation in '{layout.annotations}' names it; not used"))
    return Annotations(tuple(records), tuple(findings), root=str(layout.root))


def _split_files(layout: VocLayout, split: str, findings: list[Finding]) -> list[Path]:
    """The XML files of the ids listed in ``ImageSets/Main/<split>.txt`` (missing ones reported)."""
    available = layout.splits()
    if split not in available:
        where = f"'{layout.image_sets}' has {', '.join(available)}" if available else (
            f"'{layout.root}' has no ImageSets/Main/*.txt split lists")
        raise TransferError(
            f"No split list '{layout.image_sets / (split + '.txt')}' for split '{split}': {where}.",
            fix="Pass one of those names as split, or no split to read every annotation.",
        )
    list_file = layout.image_sets / f"{split}.txt"
    files = []
    try:
        text = read_annotation_file(list_file, "VOC split list").decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise TransferError(f"{list_file}: the split list is not UTF-8 text (byte {e.start}: {e.reason}).",
                            fix="Write one image id per line, as plain text.") from None
    for line_number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        xml_file = layout.annotations / f"{fields[0]}.xml"
        if not_regular(xml_file) is not None:
            findings.append(finding(str(xml_file), "not_regular_file",
                                    f"the annotation is {not_regular(xml_file)}; not read"))
            continue
        if os.sep in fields[0] or "/" in fields[0] or not xml_file.is_file():
            findings.append(finding(
                str(list_file), "box_annotation",
                f"id '{fields[0]}' has no annotation file '{xml_file}'", line=line_number,
            ))
            continue
        files.append(xml_file)
    return files


def _image_index(images: Path) -> dict[str, list[str]]:
    """Image files of the images folder by lower-cased stem."""
    index: dict[str, list[str]] = {}
    for path in sorted(images.iterdir()):
        if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
            index.setdefault(path.stem.lower(), []).append(str(path))
    return index


def parse_voc_xml(data: bytes, xml_file: str | os.PathLike) -> Element:
    """The root element of VOC XML ``data``; hostile XML (entities, DTD tricks) raises TransferError.

    A file that is not well-formed XML raises ``ValueError`` with the parser's reason.

    Example:
        >>> parse_voc_xml(b"<annotation><filename>a.jpg</filename></annotation>", "a.xml").tag
        'annotation'
    """
    try:
        return safe_xml.fromstring(data)
    except _SAFETY as e:
        raise TransferError(
            f"{xml_file}: refused: the XML declares entities or a DTD ({type(e).__name__}: {e}). VOC annotations "
            "never need them, and expanding them could exhaust memory (\"billion laughs\") or read other files.",
            fix="Remove the <!DOCTYPE ...> block from the file, or regenerate it with an annotation tool.",
        ) from None
    except ParseError as e:
        raise ValueError(f"not well-formed XML ({e})") from None


def _read_xml(
    xml_file: Path, images: Path, index: dict[str, list[str]], findings: list[Finding]
) -> AnnotatedImage | None:
    def bad(detail: str) -> None:
        findings.append(finding(str(xml_file), "box_annotation", detail))

    # Every problem of one file is a finding naming it, so one bad file never hides the others.
    try:
        data = read_regular(xml_file, max_bytes=MAX_XML_BYTES)
    except OSError as e:  # a FIFO or device (never waited on), or a file gone since it was listed
        bad(f"{e.message if isinstance(e, TransferError) else f'cannot be read ({e.strerror or e})'}; "
            "its image is not used")
        return None
    if len(data) > MAX_XML_BYTES:
        bad(f"over {MAX_XML_BYTES:,} bytes, too large for a VOC annotation; it is not read and its image is not "
            "used (check that it is an annotation, or split its objects into one file per image)")
        return None
    try:
        root = parse_voc_xml(data, xml_file)
    except ValueError as e:
        bad(f"{e}; its image is not used")
        return None
    except TransferError as e:  # hostile: entities or a DTD, refused before anything is expanded
        bad(f"{e.message.removeprefix(f'{xml_file}: ').rstrip('.')}; its image is not used. {e.fix}")
        return None
    if root.tag != "annotation":
        bad(f"the root element is <{root.tag}>, expected <annotation> (Pascal VOC); its image is not used")
        return None
    image = _match_image(xml_file, (root.findtext("filename") or "").strip(), images, index)
    objects = root.findall("object")
    too_many = over_cap("MAX_BOXES_PER_IMAGE", len(objects), "objects")
    if too_many:
        bad(f"{too_many}; its image is not used")
        return None
    boxes = []
    for number, obj in enumerate(objects, start=1):
        box = _read_object(obj, number, bad)
        if box is not None:
            boxes.append(box)
    return AnnotatedImage(image, str(xml_file), _claimed_size(root, bad), tuple(boxes))


def _match_image(xml_file: Path, filename: str, images: Path, index: dict[str, list[str]]) -> str:
    """``<filename>`` in the images folder, else an image with the same stem, else the path it should have."""
    # Only the name: '../x.jpg' or an absolute path written by a tool must not lead outside the dataset.
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    if name and (images / name).is_file():
        return str(images / name)
    for stem in (Path(name).stem if name else None, xml_file.stem):
        if stem and stem.lower() in index:
            return index[stem.lower()][0]
    return str(images / (name or f"{xml_file.stem}.jpg"))  # not there: the checks report the missing file


def _claimed_size(root: Element, bad) -> tuple[float, float] | None:
    size = root.find("size")
    if size is None:
        return None
    texts = (size.findtext("width"), size.findtext("height"))
    if texts == (None, None):
        return None
    try:
        return parse_coordinate(texts[0] or "0"), parse_coordinate(texts[1] or "0")
    except ValueError as e:
        bad(f"<size> has {e}; the real image size is used")
        return None


def _read_object(obj: Element, number: int, bad) -> RawBox | None:
    name = (obj.findtext("name") or "").strip()
    if not name:
        bad(f"object {number} has no <name>; the box is not used")
        return None
    bndbox = obj.find("bndbox")
    if bndbox is None:
        bad(f"object {number} ('{name}') has no <bndbox>; the box is not used")
        return None
    values = []
    for tag in ("xmin", "ymin", "xmax", "ymax"):
        text = bndbox.findtext(tag)
        try:
            values.append(parse_coordinate(text if text is not None else ""))
        except ValueError as e:
            what = "missing" if text is None else str(e)
            bad(f"object {number} ('{name}'): <{tag}> is {what}; the box is not used")
            return None
    # VOC's devkit leaves <difficult> objects out of both the hits and the misses: an ignore region.
    difficult = (obj.findtext("difficult") or "").strip() in ("1", "true", "True")
    return RawBox(tuple(values), name, where=f"object {number}", ignore=difficult)
