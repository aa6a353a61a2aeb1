"""The ``transfer`` command line: a thin layer over the Python API, its commands gathered here.

The app, its error handling and examples of every command are in ``transfer.cli.app``.

Example:
    $ transfer --help
"""

from __future__ import annotations

# Each command module registers its commands on ``app`` when imported.
from transfer.cli import predict, results, train  # noqa: F401
from transfer.cli.app import app


def main() -> None:
    """Console-script entry point."""
    app()
