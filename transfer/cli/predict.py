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
        help="Localization and detection: write each image with its boxes and labels drawn into this folder; "
             "segmentation: each image with its mask blended over it and a legend of the classes. A folder "
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
    """Run an exported model on image files (no training code involved): classes, or a box and its class.

    Exit code 0: every file answered; 1: some files failed (each named, the others
    still answered); 2: usage error. Multi-label exports print the labels at or
    over the export's threshold first.
    """
    from transfer.serving.reader import export_task
    from transfer.tasks.classify.reader import ExportedClassifier

    from transfer.cli.output_names import OutputFolders

    files = _expand_image_arguments(images)
    limits = {"max_pixels": int(max_megapixels * 1e6), "max_bytes": int(max_megabytes * 1e6)}
    task = export_task(export_dir)
    if out is not None and task != "segmentation":
        raise TransferError(f"--out writes masks; {export_dir} is a {task} export.",
                            fix="Drop --out (use --json to keep the answers"
                                + (", --draw to draw the boxes)." if task != "classification" else ")."))
    if task in ("localization", "detection", "segmentation"):
        # Checked before the model loads: no input, no file already there, no clash between the two.
        outputs = OutputFolders(files, {"drawn": draw, "mask_file": out}, export_dir=export_dir, overwrite=overwrite)
        predict = {"localization": _predict_boxes, "detection": _predict_detections,
                   "segmentation": _predict_masks}[task]
        predict(export_dir, files, limits, as_json=as_json, outputs=outputs)
        return
    if draw is not None:
        raise TransferError(f"--draw draws boxes; {export_dir} is a classification export.",
                            fix="Drop --draw (classification prints classes and scores).")
    classifier = ExportedClassifier.load(export_dir, **limits)
    results = classifier.predict_files(files, top_k=top_k)
    _report(results, {"export": str(export_dir), "results": results}, as_json=as_json,
            lines=lambda r: [_classes_line(r, classifier)], summarize=lambda: _summarize(None, results))


def _classes_line(r: dict, classifier) -> str:
    """An answered file's classes and scores (multi-label: its labels first)."""
    shown = ", ".join(f"{p['class']} {p['score']:.3f}" for p in r["predictions"])
    if classifier.multi_label:
        labels = ", ".join(r["labels"]) or "(none)"
        shown = f"labels {labels} (score >= {classifier.threshold:g}); scores {shown}"
    return f"{r['file']}: {shown}"


def _predict_boxes(export_dir: Path, files: List[str], limits: dict, *, as_json: bool,
                   outputs: "OutputFolders") -> None:
    """``transfer predict`` for a localization export: one box, class and score per file."""
    from transfer.serving.drawing import encode_drawing
    from transfer.tasks.localize.reader import ExportedLocalizer, box_drawing

    localizer = ExportedLocalizer.load(export_dir, **limits)
    results = _answer_and_write(localizer, files, outputs, {
        "drawn": lambda data, r: encode_drawing(box_drawing(data, r)),
    })
    _report(results, {"export": str(export_dir), "results": results}, as_json=as_json,
            lines=lambda r: [_box_line(r)], summarize=lambda: _summarize(outputs, results))


def _box_line(r: dict) -> str:
    """An answered file's box, class and score."""
    box = ", ".join(f"{v:.0f}" for v in r["box"])
    return f"{r['file']}: {r['class']} {r['score']:.3f} box ({box}) (xmin, ymin, xmax, ymax in pixels)"


def _predict_detections(export_dir: Path, files: List[str], limits: dict, *, as_json: bool,
                        outputs: "OutputFolders") -> None:
    """``transfer predict`` for a detection export: every box found, with its class and score, per file."""
    from transfer.serving.drawing import encode_drawing
    from transfer.tasks.detect.reader import ExportedDetector, describe_detections, detections_drawing

    detector = ExportedDetector.load(export_dir, **limits)
    results = _answer_and_write(detector, files, outputs, {
        "drawn": lambda data, r: encode_drawing(detections_drawing(data, r, detector.class_names)),
    })
    _report(results, {"export": str(export_dir), "results": results}, as_json=as_json,
            lines=describe_detections, summarize=lambda: _summarize(outputs, results))


def _predict_masks(export_dir: Path, files: List[str], limits: dict, *, as_json: bool,
                   outputs: "OutputFolders") -> None:
    """``transfer predict`` for a segmentation export: each file's class shares; its mask PNG
    into ``--out``, its overlay into ``--draw``."""
    from transfer.serving.drawing import encode_drawing
    from transfer.tasks.segment.reader import ExportedSegmenter, describe_result, mask_png, overlay_drawing

    segmenter = ExportedSegmenter.load(export_dir, **limits)
    results = _answer_and_write(segmenter, files, outputs, {
        "mask_file": lambda data, r: mask_png(r["mask"]),
        "drawn": lambda data, r: encode_drawing(overlay_drawing(data, r["mask"], segmenter.class_names)),
    })
    shown = []
    for r in results:  # the mask itself is the PNG (--out); JSON gets its size and class shares
        shown.append({k: v for k, v in r.items() if k != "mask"})
        if "mask" in r:
            shown[-1]["height"], shown[-1]["width"] = (int(v) for v in r["mask"].shape)
    legend = ", ".join(f"{i} {n}" for i, n in enumerate(segmenter.class_names))
    _report(results, {"export": str(export_dir), "class_names": segmenter.class_names, "results": shown},
            as_json=as_json, lines=lambda r: [describe_result(r)],
            summarize=lambda: _summarize(outputs, results, f" (PNG, pixel value = class index: {legend})"))


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


def _answer_and_write(predictor, files: List[str], outputs: "OutputFolders", render: dict) -> List[dict]:
    """Every file's result (``predictor.predict_files``), and for each answered one the files
    ``render[key](bytes as read, result) -> encoded bytes`` gives, for each ``key`` (``"drawn"``,
    ``"mask_file"``) that has a folder; the result names the file written under ``key``.

    A file that cannot be drawn or written becomes that file's error (its answer is kept);
    the other files are still answered and written.
    """
    from PIL import Image

    results: List[dict] = []
    for start in range(0, len(files), CHUNK):
        read: dict = {}
        part = predictor.predict_files(files[start:start + CHUNK], read_bytes=read)
        for offset, r in enumerate(part):
            index = start + offset
            for key in [k for k in render if k in outputs.folders and "error" not in r]:
                try:
                    r[key] = str(outputs.write(key, index, render[key](read[offset], r)))
                except TransferError as e:
                    r["error"] = str(e)  # what happened and what to do, e.g. "... exists; pass --overwrite"
                except (OSError, ValueError, Image.DecompressionBombError) as e:
                    # A full disk, a permission, a folder in the way, an image PIL cannot draw: this file's alone.
                    reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
                    r["error"] = f"Cannot write '{outputs.target(key, index)}': {reason}."
        results.extend(part)
    return results


def _summarize(outputs: "OutputFolders | None", results: List[dict], masks_note: str = "") -> None:
    """The lines after the answers: files written (counted as written; ``outputs`` None: no
    folders) and files failed."""
    from transfer.cli.output_names import OPTIONS

    if outputs is not None:
        if outputs.written["mask_file"]:
            typer.echo(f"Wrote {outputs.written['mask_file']} mask(s) into {outputs.folders['mask_file']}"
                       f"{masks_note}")
        if outputs.written["drawn"]:
            typer.echo(f"Drew {outputs.written['drawn']} image(s) into {outputs.folders['drawn']}")
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
