"""Put an official Keras weights file where ``weights="imagenet"`` finds it (``transfer weights import``).

Offline, ``transfer.backbones.weights.build_backbone`` names the file Keras wanted and
its URL; fetched elsewhere, the file is copied into the Keras cache under
the name Keras looks for, atomically. Logs on the ``transfer.backbones.weights``
logger, like the rest of the weights handling.

Example:
    >>> import_weights("Downloads/mobilenet_2_5_224_tf_no_top.h5")
    PosixPath('/root/.keras/models/mobilenet_2_5_224_tf_no_top.h5')
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path

from transfer.core.atomic import TMP_MARK
from transfer.core.errors import TransferError
from transfer.backbones.weights import CACHE_NAME_FOR_DOWNLOAD, is_hdf5, is_keras_weights_name, keras_cache_dir

logger = logging.getLogger("transfer.backbones.weights")


def import_weights(file: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None,
                   overwrite: bool = False) -> Path:
    """Copy an official Keras weights file into the Keras cache, under the name Keras looks for.

    Use it on a machine without internet access after fetching the file
    elsewhere (the ``weights="imagenet"`` error names the URL). The copy is
    atomic: a half-copied file never sits under the real name.

    Args:
        file: the ``.h5`` file, e.g. ``mobilenet_2_5_224_tf_no_top.h5``.
        cache_dir: the folder to copy into; default ``keras_cache_dir()``.
        overwrite: replace a different file already there under that name.

    Returns:
        The destination path.

    Example:
        >>> import_weights("Downloads/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
        PosixPath('/root/.keras/models/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5')
    """
    source = Path(file).expanduser()
    if not source.is_file():
        raise TransferError(
            f"Weights file not found: '{source}'.",
            fix="Pass the path of a downloaded Keras weights file (.h5).",
        )
    if not is_hdf5(source):
        raise TransferError(
            f"'{source}' is not a Keras weights file (not HDF5).",
            fix="Import the .h5 file from the URL that the `weights='imagenet'` error names; "
            "an interrupted download or an HTML error page is not a weights file.",
        )
    name = CACHE_NAME_FOR_DOWNLOAD.get(source.name, source.name)
    if not is_keras_weights_name(name):
        logger.warning(
            "'%s' is not a file name keras.applications looks for, so weights='imagenet' will not "
            "find it; pass its path as weights instead.", name,
        )
    dest_dir = Path(cache_dir).expanduser() if cache_dir is not None else keras_cache_dir()
    dest = dest_dir / name
    if dest.exists() and dest.resolve() == source.resolve():
        logger.info("'%s' is already in the cache.", dest)
        return dest
    if dest.exists() and not overwrite:
        if _same_content(source, dest):
            logger.info("'%s' is already in the cache (same content).", dest)
            return dest
        raise TransferError(
            f"A different file is already in the cache as '{dest}'.",
            fix="Pass overwrite=True (`transfer weights import --overwrite`) to replace it.",
        )
    dest_dir.mkdir(parents=True, exist_ok=True)
    # Copy next to the destination, then rename: the rename is atomic on one
    # file system, so Keras never sees a partial file under the real name. The
    # staging name follows transfer.core.atomic's convention (hidden, ".tmp-").
    tmp = dest_dir / f".{name}{TMP_MARK}{uuid.uuid4().hex[:12]}"
    try:
        # 0o666 under the umask, like any normally written file (mkstemp forces 0o600).
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
        with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
            shutil.copyfileobj(src, out, length=1 << 20)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    logger.info("Imported '%s' into the Keras cache as '%s'.", source, dest)
    return dest


def _same_content(a: Path, b: Path) -> bool:
    import filecmp

    return filecmp.cmp(a, b, shallow=False)
