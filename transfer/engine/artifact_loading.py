"""Load what ``transfer`` saved - ``.keras`` checkpoints and models, exported SavedModels - turning a
damaged file into one ``TransferError`` that names it and says what to do.

A truncated ``.keras`` file is no zip archive (Keras calls it "File not found");
a garbled one fails its CRC (``BadZipFile``) or its JSON; a truncated
SavedModel variables file raises ``IndexError``, a garbled one
``DataLossError``, a garbled ``saved_model.pb`` an ``OSError``. Only those
failure types are caught, and only around the load itself: anything else (a
layer that no longer deserializes, a bug) keeps its traceback.

Keras and TensorFlow are imported only when a load happens (``transfer.serving.reader``
stays free of Keras).

Example:
    >>> model = load_keras_file("runs/flowers/checkpoints/best.keras",
    ...                         fix="Restore it from a copy, or train the run again.")
    >>> loaded = load_saved_model("exports/flowers", fix="Re-export it.")
"""

from __future__ import annotations

import json
import os
import re
import zipfile
import zlib
from pathlib import Path

from transfer.core.errors import TransferError
from transfer.core.regular_files import not_regular

_DAMAGED = "is damaged (truncated or overwritten)"


def check_keras_file(path: str | os.PathLike, *, fix: str) -> Path:
    """``path`` when it is a regular, non-empty ``.keras`` zip archive; a ``TransferError`` otherwise.

    Cheap: the zip's directory is read, not its members (their CRCs are checked
    while Keras reads them; ``load_keras_file`` turns a failure into the same error).

    Example:
        >>> check_keras_file("runs/flowers/checkpoints/best.keras", fix="Train the run again.")
        PosixPath('runs/flowers/checkpoints/best.keras')
    """
    path = Path(path)
    kind = not_regular(path)
    if kind is not None:  # a FIFO here would hang zipfile's open
        raise TransferError(f"{path} is {kind}, not a .keras model file.", fix=fix)
    if not path.exists():
        raise TransferError(f"{path} is missing.", fix=fix)
    size = path.stat().st_size
    if size == 0:
        raise TransferError(f"{path} {_DAMAGED}: it is empty.", fix=fix)
    if not zipfile.is_zipfile(path):
        raise TransferError(f"{path} {_DAMAGED}: {size} bytes that are not a complete .keras (zip) archive.",
                            fix=fix)
    return path


def load_keras_file(path: str | os.PathLike, *, fix: str, compile: bool = False):
    """``keras.saving.load_model(path, compile=compile)`` with every task's custom objects registered;
    a ``TransferError`` naming ``path`` (with ``fix``) when the file is missing or damaged.

    Example:
        >>> load_keras_file("exports/flowers/model.keras", fix="Re-export it.").output_shape
        (None, 5)
    """
    import keras

    from transfer.tasks.custom_objects import register_custom_objects

    path = check_keras_file(path, fix=fix)
    register_custom_objects()  # any task's layers, losses and metrics
    try:
        return keras.saving.load_model(path, compile=compile)
    except (zipfile.BadZipFile, zlib.error, EOFError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TransferError(f"{path} {_DAMAGED}: {_reason(e)}.", fix=fix) from None
    except OSError as e:  # h5py's "Unable to open/read ..." on a damaged weights member
        raise TransferError(f"{path} {_DAMAGED}: {_reason(e)}.", fix=fix) from None


def load_saved_model(export_dir: str | os.PathLike, *, fix: str):
    """``tf.saved_model.load(export_dir)``; a ``TransferError`` naming the damaged file (with ``fix``)
    when ``saved_model.pb`` or the variables cannot be read.

    Example:
        >>> load_saved_model("exports/flowers", fix="Re-export it.").signatures["serving_default"]
    """
    import tensorflow as tf

    export_dir = Path(export_dir)
    for part in _saved_model_files(export_dir):
        kind = not_regular(part)
        if kind is not None:
            raise TransferError(f"{part} is {kind}, not part of a SavedModel.", fix=fix)
    try:
        return tf.saved_model.load(str(export_dir))
    except (IndexError, tf.errors.OpError, OSError) as e:
        # IndexError: "Read less bytes than requested" from a truncated variables.data-* file.
        raise TransferError(f"{_damaged_part(export_dir, e)} {_DAMAGED}: {_reason(e)}.", fix=fix) from None


def _saved_model_files(export_dir: Path) -> list[Path]:
    variables = export_dir / "variables"
    found = sorted(variables.glob("variables.*")) if variables.is_dir() else []
    return [export_dir / "saved_model.pb", *found]


def _damaged_part(export_dir: Path, error: BaseException) -> str:
    """The file of the export that ``error`` is about: named in its message, else guessed from its type."""
    text = str(error)
    variables = export_dir / "variables"
    data = sorted(p.name for p in variables.glob("variables.data-*")) if variables.is_dir() else []
    if "saved_model.pb" in text:
        return str(export_dir / "saved_model.pb")
    if "variables.index" in text or "sstable" in text:
        return str(variables / "variables.index")
    if isinstance(error, IndexError) or "TensorBundle" in text or "variables.data" in text:
        return str(variables / data[0]) if len(data) == 1 else f"{variables} ({', '.join(data) or 'no data files'})"
    return f"The SavedModel in {export_dir}"


def _reason(error: BaseException) -> str:
    """The first line of what the library said, without TensorFlow's op prefixes."""
    text = re.sub(r"\{\{[^}]*\}\}\s*", "", str(getattr(error, "message", None) or error)).strip()
    text = re.sub(r"\s*\[Op:\w+\]$", "", text.splitlines()[0] if text else "")
    return text.rstrip(".")[:300] or type(error).__name__


def checkpoint_fix(run_root: str | os.PathLike, path: str | os.PathLike) -> str:
    """What to do about a damaged checkpoint of the run in ``run_root`` (best.keras or an epoch file)."""
    run_root, path = Path(run_root), Path(path)
    if path.name == "best.keras":
        return (f"Restore {path} from a copy, or train the run again (`transfer train ... --out NEW_RUN`) "
                "and evaluate or export that run instead.")
    return (f"Only the last epoch checkpoint is kept, so there is no earlier one to resume from: restore {path} "
            f"from a copy, or train again into a new --out folder ({run_root / 'checkpoints' / 'best.keras'}, "
            "the best epoch so far, still evaluates and exports).")


def export_fix(export_dir: str | os.PathLike, run_dir: str | None = None) -> str:
    """What to do about a damaged export: export its run again over it."""
    run = run_dir if isinstance(run_dir, str) and run_dir else "RUN"
    return f"Export the run again over it: `transfer export {run} --out {export_dir} --overwrite`."
