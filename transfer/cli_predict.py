"""``transfer predict``: run an export on image files (see ``transfer.cli``).

Example:
    $ transfer predict exports/raccoon photo.jpg --draw drawn/
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from transfer.cli import EXIT_SOME_FAILED, app, user_errors
from transfer.errors import TransferError


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
             "segmentation: each image with its mask blended over it and a legend of the classes.",
    ),
    out: Optional[Path] = typer.Option(
        None, "--out",
        help="Segmentation: write each file's mask into this folder, a PNG of class values (the image's size, "
             "its file name's stem).",
    ),
):
    """Run an exported model on image files (no training code involved): classes, or a box and its class.

    Exit code 0: every file answered; 1: some files failed (each named, the others
    still answered); 2: usage error. Multi-label exports print the labels at or
    over the export's threshold first.
    """
    from transfer.predict import ExportedClassifier, export_task

    files = _expand_image_arguments(images)
    limits = {"max_pixels": int(max_megapixels * 1e6), "max_bytes": int(max_megabytes * 1e6)}
    if export_task(export_dir) == "localization":
        _predict_boxes(export_dir, files, limits, as_json=as_json, draw=draw)
        return
    if export_task(export_dir) == "detection":
        _predict_detections(export_dir, files, limits, as_json=as_json, draw=draw)
        return
    if export_task(export_dir) == "segmentation":
        _predict_masks(export_dir, files, limits, as_json=as_json, draw=draw, out=out)
        return
    if out is not None:
        raise TransferError(f"--out writes masks; {export_dir} is a {export_task(export_dir)} export.",
                            fix="Drop --out (use --json to keep the answers).")
    if draw is not None:
        raise TransferError(f"--draw draws boxes; {export_dir} is a classification export.",
                            fix="Drop --draw (classification prints classes and scores).")
    classifier = ExportedClassifier.load(export_dir, **limits)
    results = classifier.predict_files(files, top_k=top_k)
    failed = [r for r in results if "error" in r]
    if as_json:
        typer.echo(json.dumps({"export": str(export_dir), "results": results}, indent=2))
    else:
        for r in results:
            if "error" in r:
                typer.echo(f"{r['file']}: ERROR {r['error']}")
                continue
            shown = ", ".join(f"{p['class']} {p['score']:.3f}" for p in r["predictions"])
            if classifier.multi_label:
                labels = ", ".join(r["labels"]) or "(none)"
                shown = f"labels {labels} (score >= {classifier.threshold:g}); scores {shown}"
            typer.echo(f"{r['file']}: {shown}")
        if failed:
            typer.echo(f"{len(failed)} of {len(results)} file(s) failed.", err=True)
    if failed:
        raise typer.Exit(EXIT_SOME_FAILED)


def _predict_boxes(export_dir: Path, files: List[str], limits: dict, *, as_json: bool, draw: Optional[Path]) -> None:
    """``transfer predict`` for a localization export: one box, class and score per file."""
    from transfer.predict_boxes import ExportedLocalizer, draw_box

    localizer = ExportedLocalizer.load(export_dir, **limits)
    results = localizer.predict_files(files)
    failed = [r for r in results if "error" in r]
    drawn = []
    if draw is not None:
        draw.mkdir(parents=True, exist_ok=True)
        for r in results:
            if "error" not in r:
                target = draw / (Path(r["file"]).stem + ".png")
                draw_box(r["file"], r, target)
                r["drawn"] = str(target)
                drawn.append(target)
    if as_json:
        typer.echo(json.dumps({"export": str(export_dir), "results": results}, indent=2))
    else:
        for r in results:
            if "error" in r:
                typer.echo(f"{r['file']}: ERROR {r['error']}")
                continue
            box = ", ".join(f"{v:.0f}" for v in r["box"])
            typer.echo(f"{r['file']}: {r['class']} {r['score']:.3f} box ({box}) (xmin, ymin, xmax, ymax in pixels)")
        if drawn:
            typer.echo(f"Drew {len(drawn)} image(s) into {draw}")
        if failed:
            typer.echo(f"{len(failed)} of {len(results)} file(s) failed.", err=True)
    if failed:
        raise typer.Exit(EXIT_SOME_FAILED)


def _predict_detections(export_dir: Path, files: List[str], limits: dict, *, as_json: bool,
                        draw: Optional[Path]) -> None:
    """``transfer predict`` for a detection export: every box found, with its class and score, per file."""
    from transfer.predict_detect import ExportedDetector, describe_detections, draw_detections

    detector = ExportedDetector.load(export_dir, **limits)
    results = detector.predict_files(files)
    failed = [r for r in results if "error" in r]
    drawn = []
    if draw is not None:
        draw.mkdir(parents=True, exist_ok=True)
        for r in results:
            if "error" not in r:
                target = draw / (Path(r["file"]).stem + ".png")
                draw_detections(r["file"], r, target, detector.class_names)
                r["drawn"] = str(target)
                drawn.append(target)
    if as_json:
        typer.echo(json.dumps({"export": str(export_dir), "results": results}, indent=2))
    else:
        for r in results:
            for line in describe_detections(r):
                typer.echo(line)
        if drawn:
            typer.echo(f"Drew {len(drawn)} image(s) into {draw}")
        if failed:
            typer.echo(f"{len(failed)} of {len(results)} file(s) failed.", err=True)
    if failed:
        raise typer.Exit(EXIT_SOME_FAILED)


def _predict_masks(export_dir: Path, files: List[str], limits: dict, *, as_json: bool, draw: Optional[Path],
                   out: Optional[Path]) -> None:
    """``transfer predict`` for a segmentation export: each file's class shares; its mask PNG
    into ``--out``, its overlay into ``--draw``."""
    from transfer.predict_masks import ExportedSegmenter, describe_result, draw_overlay, write_mask_png

    segmenter = ExportedSegmenter.load(export_dir, **limits)
    results = segmenter.predict_files(files)
    failed = [r for r in results if "error" in r]
    names = _unique_stems([r["file"] for r in results])
    for r, stem in zip(results, names):
        if "error" in r:
            continue
        if out is not None:
            r["mask_file"] = str(write_mask_png(r["mask"], out / f"{stem}.png"))
        if draw is not None:
            r["drawn"] = str(draw_overlay(r["file"], r["mask"], segmenter.class_names, draw / f"{stem}.png"))
    if as_json:
        shown = []
        for r in results:  # the mask itself is the PNG (--out); JSON gets its size and class shares
            shown.append({k: v for k, v in r.items() if k != "mask"})
            if "mask" in r:
                shown[-1]["height"], shown[-1]["width"] = (int(v) for v in r["mask"].shape)
        typer.echo(json.dumps({"export": str(export_dir), "class_names": segmenter.class_names,
                               "results": shown}, indent=2))
    else:
        for r in results:
            typer.echo(describe_result(r))
        done = len(results) - len(failed)
        if out is not None and done:
            typer.echo(f"Wrote {done} mask(s) into {out} (PNG, pixel value = class index: "
                       f"{', '.join(f'{i} {n}' for i, n in enumerate(segmenter.class_names))})")
        if draw is not None and done:
            typer.echo(f"Drew {done} image(s) into {draw}")
        if failed:
            typer.echo(f"{len(failed)} of {len(results)} file(s) failed.", err=True)
    if failed:
        raise typer.Exit(EXIT_SOME_FAILED)


def _unique_stems(files: List[str]) -> List[str]:
    """Each file's stem, made unique with ``-2``, ``-3``, ... where stems repeat (a.png, b/a.jpg)."""
    seen: dict[str, int] = {}
    stems = []
    for file in files:
        stem = Path(file).stem
        seen[stem] = seen.get(stem, 0) + 1
        stems.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return stems


def _expand_image_arguments(paths: List[Path]) -> List[str]:
    """``paths`` as files: a folder becomes its image files (sorted); one without any is an error."""
    from transfer.imagesize import EXTENSIONS

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
