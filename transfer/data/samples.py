"""The plain values every data source produces and the pipeline consumes.

A ``Samples`` is a list of images (file paths, or encoded bytes kept in memory
for sources like TFDS) with their targets and the class names. The ``sources``
strings travel to the end so every error, prediction and report names its file.

Example:
    >>> s = Samples(sources=("a/cat.jpg", "b/dog.png"), targets=(0, 1),
    ...             class_names=("cat", "dog"))
    >>> len(s), s.num_classes
    (2, 2)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence, Union



@dataclass(frozen=True)
class Boxes:
    """The boxes of one image, in that image's own pixels.

    ``xyxy`` holds ``(xmin, ymin, xmax, ymax)`` per box (floats, origin top
    left, ``xmax``/``ymax`` exclusive edges as in Pascal VOC/COCO pixel
    extents), ``labels`` the class index of each box, ``width``/``height`` the
    real size of the decoded image (not what an annotation file claimed).
    An image with no boxes has empty tuples (a background image).
    ``ignore`` marks the boxes scored as ignore regions (a COCO ``iscrowd``
    region, a VOC ``difficult`` object): one flag per box, or ``()`` when none
    is. Detection does not train on them, and evaluation passes them to
    COCOeval as crowd regions, so a detection on one is neither a hit nor a
    false positive (``kept()`` gives the boxes a detector trains on).

    Example:
        >>> b = Boxes(xyxy=((81.0, 88.0, 522.0, 408.0),), labels=(0,), width=650, height=417)
        >>> len(b)
        1
    """

    xyxy: tuple[tuple[float, float, float, float], ...]
    labels: tuple[int, ...]
    width: int
    height: int
    ignore: tuple[bool, ...] = ()

    def __post_init__(self):
        if len(self.xyxy) != len(self.labels):
            raise ValueError(
                f"Boxes need one label per box. Received: {len(self.xyxy)} boxes, {len(self.labels)} labels"
            )
        if self.ignore and len(self.ignore) != len(self.labels):
            raise ValueError(f"Boxes need one ignore flag per box, or none. Received: {len(self.ignore)} flags "
                             f"for {len(self.labels)} boxes")
        if self.ignore and not any(self.ignore):
            object.__setattr__(self, "ignore", ())  # one spelling of "nothing ignored": equal Boxes compare equal

    def is_ignored(self, index: int) -> bool:
        """Whether box ``index`` is an ignore region (crowd or difficult)."""
        return bool(self.ignore) and bool(self.ignore[index])

    def kept(self) -> "Boxes":
        """These boxes without the ignore regions: what a detector trains on.

        Example:
            >>> Boxes(((0, 0, 5, 5), (1, 1, 9, 9)), (0, 1), 10, 10, ignore=(False, True)).kept().labels
            (0,)
        """
        if not self.ignore:
            return self
        index = [i for i, flag in enumerate(self.ignore) if not flag]
        return Boxes(tuple(self.xyxy[i] for i in index), tuple(self.labels[i] for i in index), self.width,
                     self.height)

    def __len__(self) -> int:
        return len(self.labels)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON values (split.json keeps each sample's target this way).

        Example:
            >>> Boxes(((1, 2, 3, 4),), (0,), 10, 20).to_json()
            {'boxes': [[1.0, 2.0, 3.0, 4.0]], 'labels': [0], 'width': 10, 'height': 20}
        """
        value = {"boxes": [list(map(float, b)) for b in self.xyxy], "labels": list(map(int, self.labels)),
                 "width": int(self.width), "height": int(self.height)}
        if self.ignore:  # written only when some box is ignored: older split.json files read the same
            value["ignore"] = [bool(flag) for flag in self.ignore]
        return value

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> "Boxes":
        """The ``Boxes`` that ``to_json`` wrote.

        Example:
            >>> Boxes.from_json({"boxes": [[1, 2, 3, 4]], "labels": [0], "width": 10, "height": 20}).xyxy
            ((1.0, 2.0, 3.0, 4.0),)
        """
        return cls(tuple(tuple(float(c) for c in b) for b in value["boxes"]),
                   tuple(int(v) for v in value["labels"]), int(value["width"]), int(value["height"]),
                   tuple(bool(flag) for flag in value.get("ignore", ())))


# The value a loaded mask holds for "ignored" pixels (CamVid's void, a VIA image's
# unlabelled border...): training and metrics skip them. Whatever the user's
# ignored value is (``--ignore-index``), mask readers map it to this one, so
# class indices run 0..C-1 (at most 255 classes).
IGNORE_VALUE = 255


@dataclass(frozen=True)
class Mask:
    """Where the class mask of one image comes from, and that image's size.

    Exactly one of ``path`` (a mask image file: PNG of class values, 0/255
    binary PNG, or a JPEG mask, thresholded), ``polygons`` (``(class index,
    (x0, y0, x1, y1, ...))`` in the image's own pixels, filled in order, as VIA
    and COCO polygons give them) or ``rle`` (a COCO RLE dict per region, with
    its class index) describes the pixels. ``values`` maps a mask file's pixel
    values to class indices (``((0, 0), (255, 1))`` for a binary mask; values
    mapped to ``IGNORE_VALUE`` are ignored); ``None`` means the file already
    holds class indices (and ``IGNORE_VALUE``). ``width``/``height`` are the
    decoded image's size. ``transfer.data.masks.load_mask`` turns a ``Mask``
    into a uint8 ``[height, width]`` array of class indices.

    Example:
        >>> m = Mask(width=480, height=360, path="camvid/train/masks/0001TP_006690.png",
        ...          values=tuple((v, v) for v in range(11)) + ((11, IGNORE_VALUE),))
        >>> m.kind
        'file'
    """

    width: int
    height: int
    path: str | None = None
    polygons: tuple[tuple[int, tuple[float, ...]], ...] = ()
    rle: tuple[tuple[int, Any], ...] = ()
    values: tuple[tuple[int, int], ...] | None = None
    threshold: bool = False  # a lossy (JPEG) mask file: snap values to the nearest listed value
    # A mask FILE drawn on an EXIF-rotated photo as displayed: that photo's orientation (2-8), so the file
    # is read at the displayed size and turned into the stored frame (transfer.core.orientation); 1 otherwise.
    orientation: int = 1

    def __post_init__(self):
        given = sum((self.path is not None, bool(self.polygons), bool(self.rle)))
        if given > 1:
            raise ValueError("A Mask comes from one of path, polygons or rle. "
                             f"Received: path={self.path!r}, {len(self.polygons)} polygons, "
                             f"{len(self.rle)} RLE regions")

    @property
    def kind(self) -> str:
        """``"file"``, ``"polygons"``, ``"rle"`` or ``"empty"`` (no region: all background)."""
        if self.path is not None:
            return "file"
        return "polygons" if self.polygons else "rle" if self.rle else "empty"


# A single-label target is a class index; a multi-label target is a tuple of class indices;
# a box target (localization, detection) is a ``Boxes``; a segmentation target is a ``Mask``.
Target = Union[int, tuple[int, ...], Boxes, Mask]


def class_indices(target: Target) -> tuple[int, ...]:
    """The class indices a target holds: one for a label, each label's, each box's.

    Example:
        >>> class_indices(2), class_indices((0, 3))
        ((2,), (0, 3))
    """
    if isinstance(target, Boxes):
        return tuple(target.labels)
    if isinstance(target, Mask):
        # A mask file's classes are known only once decoded; regions name theirs.
        return tuple(sorted({c for c, _ in target.polygons} | {c for c, _ in target.rle}))
    return tuple(target) if isinstance(target, tuple) else (target,)


@dataclass(frozen=True)
class Samples:
    """Images with targets. ``encoded`` holds image bytes when there is no file."""

    sources: tuple[str, ...]
    targets: tuple[Target, ...]
    class_names: tuple[str, ...]
    multi_label: bool = False
    encoded: tuple[bytes, ...] | None = None

    def __post_init__(self):
        if len(self.sources) != len(self.targets):
            raise ValueError(
                f"sources and targets differ in length. Received: {len(self.sources)} sources, "
                f"{len(self.targets)} targets"
            )
        if self.encoded is not None and len(self.encoded) != len(self.sources):
            raise ValueError(
                f"encoded and sources differ in length. Received: {len(self.encoded)} encoded, "
                f"{len(self.sources)} sources"
            )

    def __len__(self) -> int:
        return len(self.sources)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def subset(self, indices: Sequence[int]) -> "Samples":
        """The samples at ``indices``, same classes."""
        return Samples(
            sources=tuple(self.sources[i] for i in indices),
            targets=tuple(self.targets[i] for i in indices),
            class_names=self.class_names,
            multi_label=self.multi_label,
            encoded=None if self.encoded is None else tuple(self.encoded[i] for i in indices),
        )

    def class_counts(self) -> dict[str, int]:
        """Images per class (a multi-label image counts once for each of its labels,
        a box target once for each of its boxes)."""
        counts = {name: 0 for name in self.class_names}
        for target in self.targets:
            for index in class_indices(target):
                counts[self.class_names[index]] += 1
        return counts


@dataclass(frozen=True)
class DataSplit:
    """Training and validation samples over the same class names.

    ``origin`` says how the split was made (e.g. ``"folders train/ val/"`` or
    ``"stratified 80/20, seed 0"``) so runs can record it.
    """

    train: Samples
    val: Samples
    origin: str = ""

    def __post_init__(self):
        if self.train.class_names != self.val.class_names:
            raise ValueError(
                "train and val have different class names. Received: "
                f"train={self.train.class_names}, val={self.val.class_names}"
            )

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.train.class_names

    @property
    def multi_label(self) -> bool:
        return self.train.multi_label
