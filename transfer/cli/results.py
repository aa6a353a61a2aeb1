"""``transfer check-data``, ``evaluate`` and ``export`` (see ``transfer.cli``; predict: ``cli_predict``).

Example:
    $ transfer evaluate runs/raccoon --json
    $ transfer export runs/raccoon --out exports/raccoon
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from transfer.cli.app import app, user_errors


@app.command("check-data")
@user_errors
def check_data_command(
    ctx: typer.Context,
    data: str = typer.Argument(
        ..., help="Class folders (optionally train/ val/), a CSV, tfds:NAME, box or mask annotations."
    ),
    image_size: int = typer.Option(224, "--image-size", min=1, help="The training input side (for size warnings)."),
    quarantine: Optional[Path] = typer.Option(
        None, "--quarantine", help="Move the files training would skip into this folder (never deletes)."
    ),
    max_megapixels: float = typer.Option(
        100.0, "--max-megapixels", min=0.000064, help="Larger images are skipped without decoding (bombs)."
    ),
    allow_outside_root: bool = typer.Option(
        False, "--allow-outside-root", help="Let CSV paths point outside the CSV's folder (trusted CSVs only)."
    ),
    show_all: bool = typer.Option(False, "--all", help="List every file of every warning."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON document."),
    class_names: Optional[str] = typer.Option(
        None, "--class-names", help="Mask sources: the class names in pixel value order, e.g. sky,road,car."
    ),
    ignore_index: Optional[int] = typer.Option(
        None, "--ignore-index",  # range checked with train's rule and words (0..65535)
        help="Mask sources: the mask value of unlabelled pixels (e.g. 255; 0-65535).",
    ),
):
    """Find images training cannot read or should not trust; a table of files and what training does.

    Exit code 0: every image is usable; 1: some would be skipped or training would not start; 2: usage error.
    """
    from transfer.data.doctor import check_data, quarantine as move_aside
    from transfer.data.masks.values import check_ignore_index

    check_ignore_index(ignore_index)  # train's rule and message, whatever the source
    report = check_data(
        data, image_size=image_size, max_pixels=int(max_megapixels * 1e6), allow_outside_root=allow_outside_root,
        class_names=class_names.split(",") if class_names else None, ignore_index=ignore_index,
    )
    moved = move_aside(report, quarantine) if quarantine is not None else []
    if as_json:
        document = {**report.to_dict(), "quarantined": [{"from": a, "to": b} for a, b in moved]}
        typer.echo(json.dumps(document, indent=2))
    else:
        typer.echo(report.table(all_rows=show_all))
        for source, target in moved:
            typer.echo(f"Moved {source} -> {target}")
        if moved:
            typer.echo(f"Moved {len(moved)} file(s) to {quarantine} (see {quarantine / 'quarantine.json'}).")
    if moved:  # what was moved aside no longer stops anything
        left = set(report.skipped) - {source for source, _ in moved}
        raise typer.Exit(1 if report.stops or left else 0)
    raise typer.Exit(report.exit_code)


@app.command("evaluate")
@user_errors
def evaluate_command(
    ctx: typer.Context,
    run_dir: Path = typer.Argument(..., help="A `transfer train` run folder."),
    data: Optional[str] = typer.Option(None, "--data", help="Evaluate on this data instead of the run's val split."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
):
    """Metrics of a run on its validation data or --data: classification's accuracy, per-class
    precision/recall/F1 and confusion matrix; localization's mean IoU, IoU >= 0.5 and worst images.
    --data's classes must be the run's (mapped by name when in another order); its results go to
    RUN/evaluation-<data name>/, the run's own to RUN/evaluation/."""
    from transfer.engine.evaluate import evaluate_data
    from transfer.engine.run import RunDir
    from transfer.engine.summary import training_record, training_text

    evaluation = evaluate_data(run_dir, data)
    for note in evaluation.notes:  # beside --json's object, not in it
        typer.echo(note, err=as_json)
    written = evaluation.write()
    config = RunDir(run_dir).config()
    if as_json:
        typer.echo(json.dumps({**evaluation.summary(), "training": training_record(config),
                               "files": {k: str(v) for k, v in written.items()}}))
        return
    typer.echo(evaluation.report.table())
    if training_text(config):
        typer.echo(training_text(config))
    scored = evaluation.data
    typer.echo(f"Scored {scored['num_images']} images of {scored.get('path') or scored['source']}; "
               f"wrote {evaluation.folder}/:")
    for path in written.values():
        typer.echo(f"Wrote {path}")


@app.command("export")
@user_errors
def export_command(
    ctx: typer.Context,
    run_dir: Path = typer.Argument(..., help="A `transfer train` run folder."),
    out: Path = typer.Option(..., "--out", help="Export folder (a SavedModel) to create."),
    overwrite: bool = typer.Option(
        False, "--overwrite",
        help="Replace an existing export (only an export: never the run, its data or other files)."),
    score_threshold: Optional[float] = typer.Option(
        None, "--score-threshold", help="Detection: answer boxes scored at least this (default: the run's, 0.3)."),
    iou_threshold: Optional[float] = typer.Option(
        None, "--iou-threshold",
        help="Detection: suppress a box overlapping a better one of its class by more (default: the run's, 0.5)."),
    max_detections: Optional[int] = typer.Option(
        None, "--max-detections", help="Detection: boxes answered per image at most (default: the run's, 100)."),
):
    """Write a SavedModel (image bytes in, named results out: classes and scores, or boxes) and a .keras file."""
    from transfer.serving.export import export_run

    given = {"score_threshold": score_threshold, "iou_threshold": iou_threshold, "max_detections": max_detections}
    path = export_run(run_dir, out, overwrite=overwrite,
                      serving_options={k: v for k, v in given.items() if v is not None})
    from transfer.serving.reader import METADATA_PATH

    signatures = json.loads((Path(path) / METADATA_PATH).read_text(encoding="utf-8")).get("signatures", {})
    typer.echo(f"Exported {run_dir} -> {path} (SavedModel signatures: {', '.join(signatures)})")
