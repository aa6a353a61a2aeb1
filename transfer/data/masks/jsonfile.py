"""A user's annotation JSON file read defensively: bounded size, clear errors naming the file.

Annotation files come from the internet: a file that is not JSON, is not
UTF-8, nests deeper than the parser can follow, holds a number with
thousands of digits or is larger than any real annotation file raises a
TransferError naming the file and what was expected, never a traceback; a
FIFO, socket or device is refused without being read (it could block forever).

Example:
    >>> len(load_json("balloon/train/via_region_data.json", what="VIA annotation", fix="Export it again."))
    61
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from transfer.core.errors import TransferError
from transfer.core.regular_files import read_regular

# COCO's largest official file (instances_train2017.json) is about 450 MB.
MAX_JSON_BYTES = 1 << 30


def load_json(path: str | os.PathLike, *, what: str, fix: str, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """The parsed JSON document at ``path`` (``what`` names the kind of file in messages)."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise TransferError(f"{path}: {size} bytes is larger than any {what} file this reads "
                                f"({max_bytes} bytes at most); it is not read.", fix=fix)
        data = read_regular(path, max_bytes=max_bytes)  # a FIFO or device is refused, never read
        if len(data) > max_bytes:  # grew since the stat
            raise TransferError(f"{path}: larger than any {what} file this reads ({max_bytes} bytes at most); it "
                                "is not read.", fix=fix)
        return json.loads(data)
    except TransferError:
        raise
    except FileNotFoundError:
        raise TransferError(f"{path}: {what} file not found.", fix=f"Pass the path of an existing {what} file.") \
            from None
    except IsADirectoryError:
        raise TransferError(f"{path}: is a folder, not a {what} file.", fix="Pass the .json file inside it.") \
            from None
    except RecursionError:
        raise TransferError(f"{path}: the JSON is nested too deeply to be a {what} file; it is not read.",
                            fix=fix) from None
    except UnicodeDecodeError as e:
        raise TransferError(f"{path}: the file is not UTF-8 JSON (byte {e.start}: {e.reason}).", fix=fix) from None
    except json.JSONDecodeError as e:
        raise TransferError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}).", fix=fix) \
            from None
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        raise TransferError(f"{path}: not a {what} file ({e}).", fix=fix) from None
    except OSError as e:
        raise TransferError(f"{path}: cannot be read ({e.strerror or e}).", fix=fix) from None
