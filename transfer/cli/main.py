"""The ``transfer`` command line: a thin layer over the Python API.

Every command turns a ``TransferError`` into a short message on stderr and
exit code 2 (no traceback unless ``--debug``). Heavy imports (TensorFlow,
Keras) happen inside the commands, so ``transfer --help`` is instant.

Example:
    $ transfer train --data flowers/ --backbone mobilenet_0.25 --image-size 128 --out runs/f
    $ transfer evaluate runs/f --json
    $ transfer export runs/f --out exports/f
    $ transfer predict exports/f photo.jpg --top-k 3
"""

from __future__ import annotations

# Each command module registers its commands on ``app`` when imported.
from transfer.cli import predict, results, train  # noqa: F401
from transfer.cli.app import app


def main() -> None:
    """Console-script entry point."""
    app()
