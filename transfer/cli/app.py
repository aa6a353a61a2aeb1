"""The ``transfer`` Typer app, its error handling and the small commands (``backbones``, ``weights import``).

The command modules (``transfer.cli.train``, ``results``, ``predict``)
register their commands on ``app``; ``transfer.cli.main`` imports them all.

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

import functools
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Optional

import typer

from transfer.core.errors import TransferError

app = typer.Typer(
    name="transfer",
    help="Fine-tune pretrained Keras CNNs on your images and export models that serve on their own.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
weights_app = typer.Typer(help="Manage pretrained weight files (offline use).", no_args_is_help=True)
app.add_typer(weights_app, name="weights")

EXIT_USER_ERROR = 2
EXIT_SOME_FAILED = 1  # predict: some files failed (check-data: some files would be skipped)


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow without its C++ start-up chatter on stderr.

    ``TF_CPP_MIN_LOG_LEVEL`` silences most of it, but not the lines logged
    before absl is initialised (tensorflow/tensorflow#100442), so stderr is
    pointed at /dev/null for the import alone. A user who sets
    ``TF_CPP_MIN_LOG_LEVEL`` below 3 sees everything.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules or os.environ["TF_CPP_MIN_LOG_LEVEL"] != "3":
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def user_errors(command=None, *, tensorflow: bool = True):
    """Print ``TransferError`` as a one-paragraph message and exit 2.

    Commands take ``ctx: typer.Context`` first so the root ``--debug`` flag
    (kept in ``ctx.obj``) reaches this wrapper. ``tensorflow=False`` for
    commands that never need it, so they stay instant.
    """
    if command is None:
        return functools.partial(user_errors, tensorflow=tensorflow)

    @functools.wraps(command)
    def wrapper(ctx: typer.Context, *args, **kwargs):
        try:
            if tensorflow:
                _import_tensorflow_quietly()
            return command(ctx, *args, **kwargs)
        except TransferError as exc:
            if (ctx.find_root().obj or {}).get("debug"):
                traceback.print_exc()
            message = exc.message if not exc.fix else f"{exc.message}\n{exc.fix}"
            typer.echo(f"Error: {message}", err=True)
            raise typer.Exit(EXIT_USER_ERROR) from None
        except KeyboardInterrupt:
            typer.echo("Interrupted.", err=True)
            raise typer.Exit(130) from None
        except OSError as exc:
            # Permissions, a full disk, a path that vanished: the user can act on these too.
            if (ctx.find_root().obj or {}).get("debug"):
                traceback.print_exc()
            where = f": '{exc.filename}'" if exc.filename else ""
            typer.echo(f"Error: {exc.strerror or exc}{where}.\nCheck the path, its permissions and the free disk "
                       "space, then run again (--debug shows the traceback).", err=True)
            raise typer.Exit(EXIT_USER_ERROR) from None

    return wrapper


@app.callback()
def _root(
    context: typer.Context,
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors."),
):
    context.obj = {"debug": debug}


@app.command()
@user_errors(tensorflow=False)
def backbones(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print JSON for machines."),
):
    """List the available backbones: input size, preprocessing, feature layers."""
    from transfer.backbones import list_backbones

    specs = list_backbones()
    rows = [
        {
            "name": s.name,
            "keras": s.constructor,
            "default_size": s.default_size,
            "min_size": s.min_size,
            "preprocessing": s.preprocessing,
            "imagenet_weights": s.pretrained,
            "feature_layers": {str(k): v for k, v in s.feature_layers.items()},
        }
        for s in specs
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(rows)} backbones (keras.applications; smallcnn trains from scratch)")
    for column in ("name", "keras", "size", "preprocessing", "stride 32 layer"):
        table.add_column(column)
    for r in rows:
        keras_name = r["keras"] if r["imagenet_weights"] else f"{r['keras']} (no ImageNet weights)"
        table.add_row(r["name"], keras_name, str(r["default_size"]), r["preprocessing"], r["feature_layers"]["32"])
    Console().print(table)


@weights_app.command("import")
@user_errors
def weights_import(
    ctx: typer.Context,
    file: Path = typer.Argument(..., help="An official Keras applications weights file (.h5)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a file already in the cache."),
):
    """Place a weights file in the Keras cache so weights="imagenet" works offline."""
    from transfer.backbones.weights_import import import_weights

    destination = import_weights(file, overwrite=overwrite)
    typer.echo(f"Imported {file} -> {destination}")


def _parse_weights(value: str) -> Optional[str]:
    return None if value.strip().lower() in ("none", "random") else value
