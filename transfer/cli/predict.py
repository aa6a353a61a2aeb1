"""``transfer predict``: run an export on image files (see ``transfer.cli``).

Example:
    $ transfer predict exports/raccoon photo.jpg --draw drawn/
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Callable, List, Optional

import typer

from transfer.cli.app import EXIT_SOME_FAILED, app, user_errors
from transfer.core.errors import TransferError

if TYPE_CHECKING:
    from transfer.cli.output_names import OutputFolders


@app.command("predict")
@user_errors
def predict_command(
    ctx: typer.Context,
    export_dir: Path = typer.Argument(..., help="An export folder from `transfer export`."),
    images: List[Path] = typer.Argument(..., help="Image files, or folders (their images, not subfolders)."),
    top_k: int = typer.Option(3, "--top-k", min=1, help="How many classes to show per image."),
    max_megapixels: float = typer.Option(
        40.0, "--max-megapixels", min=0.000064, help="Refuse images whose header declares more pixels."
    ),
    max_megabytes: float = typer.Option(100.0, "--max-megabytes", min=0.000001, help="Refuse larger files."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
    draw: Optional[Path] = typer.Option(
        None, "--draw",
        help="Write each image with its answer drawn into this folder: classification, its best class and "
             "score (multi-label: its labels); localization and detection, its boxes and labels; "
             "segmentation, its mask blended over it and a legend of the classes. A folder "
             "holding an input is refused; files already there are kept unless --overwrite.",
    ),
    out: Optional[Path] = typer.Option(
        None, "--out",
        help="Segmentation: write each file's mask into this folder, a PNG of class values (the image's size, "
             "named by the file's path relative to the inputs' common folder, e.g. a/x.jpg -> a/x.png).",
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite",
        help="Replace files already in the --draw / --out folders that predict would write (only those).",
    ),
):
    """Run an exported model on image files (no training code involved): classes, boxes or a mask.

    Exit code 0: every file answered; 1: some files failed (each named, the others
    still answered); 2: usage error. Multi-label exports print the labels at or
    over the export's threshold first.
    """
    from transfer.serving.load import reader_class
    from transfer.serving.reader import export_task

    from transfer.cli.output_names import OutputFolders

    files = _expand_image_arguments(images)
    limits = {"max_pixels": int(max_megapixels * 1e6), "max_bytes": int(max_megabytes * 1e6)}
    # load_export in two steps: the export's reader class says what it answers before the (slow) load.
    reader_cls = reader_class(export_task(export_dir), export_dir)
    _refuse_unwritten({"drawn": draw, "mask_file": out}, reader_cls, export_dir)
    # Checked before the model loads: no input, no file already there, no clash between the two.
    outputs = OutputFolders(files, {"drawn": draw, "mask_file": out}, export_dir=export_dir, overwrite=overwrite)
    reader = reader_cls.load(export_dir, **limits)
    options = {name: value for name, value in {"top_k": top_k}.items() if name in reader.predict_options}
    results = _answer_and_write(reader, files, outputs, options)
    _report(results, reader.answers_document(results), as_json=as_json, lines=reader.describe,
            summarize=lambda: _summarize(outputs, results, reader))


# What each kind of output holds, for the refusal of an export that writes none.
_WHAT = {"drawn": "drawings", "mask_file": "masks"}


def _refuse_unwritten(folders: dict, reader_cls, export_dir: Path) -> None:
    """A ``TransferError`` for an output folder (``--draw``, ``--out``) given to an export whose reader
    writes no such files (e.g. ``--out`` beside a localization export)."""
    from transfer.cli.output_names import OPTIONS

    for key, folder in folders.items():
        if folder is None or key in reader_cls.writes:
            continue
        also = f", --draw to draw {reader_cls.draws}" if "drawn" in reader_cls.writes else ""
        raise TransferError(f"{OPTIONS[key]} writes {_WHAT[key]}; {export_dir} is a {reader_cls.task_title} export.",
                            fix=f"Drop {OPTIONS[key]} (use --json to keep the answers{also}).")


def _report(results: List[dict], document: dict, *, as_json: bool, lines: Callable[[dict], List[str]],
            summarize: Callable[[], None]) -> None:
    """Print ``document`` as JSON, or each answered file's ``lines`` (a failed one's error) then
    ``summarize()``; exit code 1 when any file failed (every predict ends here)."""
    if as_json:
        typer.echo(json.dumps(document, indent=2))
    else:
        for r in results:
            for line in lines(r) if "error" not in r else [f"{r['file']}: ERROR {r['error']}"]:
                typer.echo(line)
        summarize()
    if any("error" in r for r in results):
        raise typer.Exit(EXIT_SOME_FAILED)


# Files answered, then written, at a time: each one's bytes are held only that long.
CHUNK = 64


def _answer_and_write(reader, files: List[str], outputs: "OutputFolders", options: dict) -> List[dict]:
    """Every file's result (``reader.predict_files`` with ``options``), and for each answered one the
    files ``reader.output_file(key, bytes as read, result)`` encodes, for each ``key`` of
    ``reader.writes`` that has a folder (``"drawn"``, ``"mask_file"``); the result names the file
    written under ``key``.

    A file that cannot be drawn or written becomes that file's error (its answer is kept);
    the other files are still answered and written.
    """
    from PIL import Image

    results: List[dict] = []
    for start in range(0, len(files), CHUNK):
        read: dict = {}
        part = reader.predict_files(files[start:start + CHUNK], read_bytes=read, **options)
        for offset, r in enumerate(part):
            index = start + offset
            for key in [k for k in reader.writes if k in outputs.folders and "error" not in r]:
                try:
                    r[key] = str(outputs.write(key, index, reader.output_file(key, read[offset], r)))
                except TransferError as e:
                    r["error"] = str(e)  # what happened and what to do, e.g. "... exists; pass --overwrite"
                except (OSError, ValueError, Image.DecompressionBombError) as e:
                    # A full disk, a permission, a folder in the way, an image PIL cannot draw: this file's alone.
                    reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
                    r["error"] = f"Cannot write '{outputs.target(key, index)}': {reason}."
        results.extend(part)
    return results


def _summarize(outputs: "OutputFolders", results: List[dict], reader) -> None:
    """The lines after the answers: files written (counted as written) and files failed."""
    from transfer.cli.output_names import OPTIONS

    if outputs.written["mask_file"]:
        typer.echo(f"Wrote {outputs.written['mask_file']} mask(s) into {outputs.folders['mask_file']}"
                   f"{reader.output_note('mask_file')}")
    if outputs.written["drawn"]:
        typer.echo(f"Drew {outputs.written['drawn']} image(s) into {outputs.folders['drawn']}"
                   f"{reader.output_note('drawn')}")
    for key, folder in outputs.folders.items():
        if not outputs.written[key]:
            typer.echo(f"Nothing written into {OPTIONS[key]} {folder}.", err=True)
    failed = sum("error" in r for r in results)
    if failed:
        typer.echo(f"{failed} of {len(results)} file(s) failed.", err=True)


def _expand_image_arguments(paths: List[Path]) -> List[str]:
    """``paths`` as files: a folder becomes its image files (sorted); one without any is an error."""
    from transfer.core.imagesize import EXTENSIONS

    suffixes = tuple(ext for exts in EXTENSIONS.values() for ext in exts)
    files: List[str] = []
    for path in paths:
        if not path.is_dir():
            files.append(str(path))  # a missing or bad file is answered with an error of its own
            continue
        found = sorted(p for p in path.iterdir()
                       if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith("."))
        if not found:
            raise TransferError(
                f"The folder {path} holds no image files ({', '.join(suffixes)}).",
                fix=f"Pass image files; for the images in its subfolders use a glob, e.g. "
                    f"transfer predict EXPORT {path}/*/*.jpg",
            )
        files.extend(map(str, found))
    return files
