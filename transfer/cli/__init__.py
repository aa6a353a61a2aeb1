"""The ``transfer`` command line (``transfer.cli.main``), one module per group of commands.

- ``app``: the Typer app, error handling, ``backbones`` and ``weights import``;
- ``train``: ``train``, ``lr-find`` and ``demo``; ``results``: ``check-data``,
  ``evaluate`` and ``export``; ``predict``: ``predict`` (``output_names``:
  where its files go);
- ``demo``: the demo's data and its train -> evaluate -> export -> predict tour.

Example:
    $ transfer --help
"""

from __future__ import annotations


def main() -> None:
    """Console-script entry point (``transfer``): imports the commands, then runs them."""
    from transfer.cli.main import main as run

    run()
