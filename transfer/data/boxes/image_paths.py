"""Where an image named in a box CSV or a COCO JSON file lives, and whether it may be read.

Both formats write a file name per image, relative to the annotation file's
folder (the dataset root) or to an ``images/`` folder beside the annotation
file; absolute paths are taken as written. Either way the path must lie
inside the root unless the caller allows otherwise, so a downloaded
annotation file cannot make training read ``../../`` anything (the same rule
as classification CSVs, ``transfer.data.sources.csvfile.is_inside``).

Example:
    >>> resolve_image("data", "raccoon-1.jpg")   # data/raccoon-1.jpg or data/images/raccoon-1.jpg
    'data/images/raccoon-1.jpg'
"""

from __future__ import annotations

import os

from transfer.data.sources.csvfile import is_inside

IMAGES_DIR = "images"


def resolve_image(root: str | os.PathLike, written: str) -> str:
    """The path of the image ``written`` in an annotation file whose folder is ``root``.

    The first of ``root/written`` and ``root/images/written`` that exists;
    when neither does, the one under ``images/`` if that folder exists (so a
    "file not found" message names the likely place), else ``root/written``.

    Example:
        >>> resolve_image("/data/raccoon", "/elsewhere/a.jpg")
        '/elsewhere/a.jpg'
    """
    root = os.fspath(root)
    written = written.replace("\\", "/") if os.sep == "/" else written  # Windows-made files on POSIX
    if os.path.isabs(written):
        return written
    candidates = [os.path.join(root, written), os.path.join(root, IMAGES_DIR, written)]
    for path in candidates:
        if os.path.isfile(path):
            return path
    return candidates[1] if os.path.isdir(os.path.join(root, IMAGES_DIR)) else candidates[0]


def outside_root(root: str | os.PathLike, path: str, allow_outside_root: bool) -> bool:
    """Whether ``path`` must be refused: it leaves ``root`` and the caller did not allow that.

    Example:
        >>> outside_root("data", "data/../secret.jpg", allow_outside_root=False)
        True
    """
    return not allow_outside_root and not is_inside(root, path)
