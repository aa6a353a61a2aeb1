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

import functools
import json
import os
import sys
import traceback
from pathlib import Path
from typing import List, Optional

import typer

from transfer.errors import TransferError

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
    from transfer.weights import import_weights

    destination = import_weights(file, overwrite=overwrite)
    typer.echo(f"Imported {file} -> {destination}")


def _parse_weights(value: str) -> Optional[str]:
    return None if value.strip().lower() in ("none", "random") else value


@app.command("train")
@user_errors
def train_command(
    ctx: typer.Context,
    data: Optional[str] = typer.Option(
        None, "--data",
        help="classify: class folders (optionally train/ val/), a CSV, or tfds:NAME; "
             "localize: a box CSV, a Pascal VOC folder or a COCO JSON file.",
    ),
    val_data: Optional[str] = typer.Option(
        None, "--val-data", help="Validate on this source (same kinds as --data) instead of splitting --data."
    ),
    task_name: str = typer.Option("classify", "--task", help="classify or localize (one box and class per image)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder to create."),
    resume: Optional[Path] = typer.Option(
        None, "--resume", help="Continue this killed or interrupted run (no other options needed)."
    ),
    backbone: str = typer.Option("mobilenet_0.25", "--backbone", help="See `transfer backbones`."),
    weights: str = typer.Option("imagenet", "--weights", help='"imagenet", "none", or a weights file.'),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Input side in pixels."),
    recipe: Optional[Path] = typer.Option(None, "--recipe", help="Recipe TOML file."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Set every stage to this many epochs."),
    val_fraction: float = typer.Option(0.2, "--val-fraction", help="Used when the data has no val split."),
    allow_outside_root: bool = typer.Option(
        False, "--allow-outside-root", help="Let CSV paths point outside the CSV's folder (trusted CSVs only)."
    ),
    precision: str = typer.Option(
        "float32", "--precision",
        help="float32, mixed (float16 on a GPU, bfloat16 on a CPU with native support, else float32), "
             "float16 or bfloat16.",
    ),
    xla: Optional[bool] = typer.Option(
        None, "--xla/--no-xla", help="Compile training steps with XLA (default: on for GPUs, off on CPUs)."
    ),
    feature_cache: Optional[Path] = typer.Option(
        None, "--feature-cache",
        help="Folder for cached backbone features of head stages (default: $TRANSFER_CACHE_DIR or "
             "~/.cache/transfer/features).",
    ),
    no_feature_cache: bool = typer.Option(
        False, "--no-feature-cache", help="Keep head-stage features in memory only."
    ),
    distribute: str = typer.Option(
        "auto", "--distribute",
        help="auto (TF_CONFIG with several workers: multi_worker; several GPUs: mirrored; else none), "
             "none, mirrored or multi_worker. The batch size is global.",
    ),
):
    """Fine-tune a backbone on your images; writes checkpoints, history and metrics to --out.

    A quick data check runs first; unreadable images are skipped, each named.
    """
    from transfer.recipe import Recipe
    from transfer.train import resume as resume_run
    from transfer.distribute import choose_distribution
    from transfer.train import train

    # First: multi-worker training must set TensorFlow up before any op runs.
    distribution = choose_distribution(distribute)
    verbose = 1 if sys.stdout.isatty() else 2
    if resume is not None:
        if (data is not None or out is not None or recipe is not None or epochs is not None or val_data is not None
                or task_name != "classify" or precision != "float32" or xla is not None
                or feature_cache is not None or no_feature_cache):
            raise TransferError(
                "--resume continues a run with its own data, recipe and settings.",
                fix="Pass only --resume RUN_DIR.",
            )
        result = resume_run(resume, verbose=verbose, distribution=distribution)
        typer.echo(f"Done. {_outcome_text(result)}")
        return
    if data is None or out is None:
        missing = " and ".join(name for name, value in (("--data", data), ("--out", out)) if value is None)
        raise TransferError(f"transfer train needs {missing}.",
                            fix="Example: transfer train --data flowers/ --out runs/flowers")
    from transfer.backbones import get_backbone
    from transfer.precision import resolve_precision
    from transfer.tasks import get_task
    from transfer.train import check_out_dir, checked_image_size, image_size_line, upsampling_warning

    # Cheap mistakes fail now, not after the data scan: a typo'd task, precision or backbone,
    # an --out that already holds a run, a size below the backbone's minimum, a bad recipe.
    task = get_task(task_name)
    resolve_precision(precision)
    spec = get_backbone(backbone)
    size = checked_image_size(spec, image_size)
    check_out_dir(out)
    chosen = Recipe.load(recipe) if recipe else task.default_recipe()
    if epochs is not None:
        if epochs < 1:
            raise TransferError(f"--epochs {epochs} is not positive.", fix="Pass --epochs 1 or more.")
        chosen = chosen.with_epochs(epochs)
    task.check_recipe(chosen)
    typer.echo(image_size_line(spec, image_size))
    split = task.load_data(data, val_source=val_data, val_fraction=val_fraction, seed=chosen.seed,
                           allow_outside_root=allow_outside_root, echo=typer.echo)
    typer.echo(f"Data: {task.describe_data(split)}")
    from transfer.data.check import check_split

    report = check_split(split, image_size=size, source=data)
    typer.echo(report.summary())
    warning = upsampling_warning(spec, size, report.median_side)
    if warning:
        typer.echo(warning)
    result = train(
        split, out, backbone=backbone, weights=_parse_weights(weights), image_size=image_size,
        recipe=chosen, data_source=data, verbose=verbose, precision=precision, xla=xla,
        feature_cache=False if no_feature_cache else (feature_cache or True), distribution=distribution,
        task=task.name, val_data_source=val_data,
    )
    if not distribution.is_chief:
        typer.echo(f"Worker {distribution.worker_index} finished; the chief wrote the run folder.")
        return
    typer.echo(f"Done in {result.seconds:.0f}s. {_outcome_text(result)} Next: transfer evaluate {result.run_dir}")


def _outcome_text(result) -> str:
    """``Best val accuracy 0.8012 (epoch 12); last epoch 18: 0.7990.``

    Multi-label runs lead with macro F1 (what picked the epoch), then exact
    match and the per-label accuracy next to what predicting no label scores.
    """
    from transfer.summary import metric_label

    metrics = result.best_metrics
    multi_label = "macro_f1" in metrics
    if multi_label or "accuracy" in metrics:
        name, value = ("macro F1", metrics["macro_f1"]) if multi_label else ("accuracy", metrics["accuracy"])
    else:  # other tasks: the monitored metric (e.g. val box IoU)
        name, value = metric_label(metrics["monitor"]).removeprefix("val "), float(metrics["best_value"])
    text = f"Best val {name} {value:.4f} (epoch {result.best_epoch})"
    if metrics.get("last_epoch") and metrics["last_epoch"] != result.best_epoch and metrics.get("last_value") is not None:
        text += f"; last epoch {metrics['last_epoch']}: {metrics['last_value']:.4f}"
    if multi_label:
        text += (f"; exact match {metrics.get('exact_match') or 0.0:.4f}, per-label accuracy "
                 f"{metrics['accuracy']:.4f} (no label at all would score {metrics.get('no_label_accuracy') or 0:.4f})")
    return text + "."


@app.command("check-data")
@user_errors
def check_data_command(
    ctx: typer.Context,
    data: str = typer.Argument(..., help="Class folders (optionally train/ val/), a CSV, or tfds:NAME."),
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
):
    """Find images training cannot read or should not trust; a table of files and what training does.

    Exit code 0: every image is usable; 1: some would be skipped or training would not start; 2: usage error.
    """
    from transfer.data.check import check_data, quarantine as move_aside

    report = check_data(
        data, image_size=image_size, max_pixels=int(max_megapixels * 1e6), allow_outside_root=allow_outside_root
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
    """Accuracy, per-class precision/recall/F1 and a confusion matrix (JSON + PNG)."""
    from transfer.evaluate import evaluate_run
    from transfer.run import RunDir
    from transfer.summary import training_record, training_text

    report = evaluate_run(run_dir, data)
    written = report.write(Path(run_dir) / "evaluation")
    config = RunDir(run_dir).config()
    if as_json:
        typer.echo(json.dumps({**report.summary(), "training": training_record(config),
                               "files": {k: str(v) for k, v in written.items()}}))
        return
    typer.echo(report.table())
    if training_text(config):
        typer.echo(training_text(config))
    for path in written.values():
        typer.echo(f"Wrote {path}")


@app.command("export")
@user_errors
def export_command(
    ctx: typer.Context,
    run_dir: Path = typer.Argument(..., help="A `transfer train` run folder."),
    out: Path = typer.Option(..., "--out", help="Export folder (a SavedModel) to create."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing export."),
):
    """Write a SavedModel (image bytes in, scores and class names out) and a .keras file."""
    from transfer.export import export_run

    path = export_run(run_dir, out, overwrite=overwrite)
    typer.echo(f"Exported {run_dir} -> {path} (SavedModel signatures: serving_default, serving_images)")


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
        None, "--draw", help="Localization: write each image with its box and label drawn into this folder."
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


@app.command("lr-find")
@user_errors
def lr_find_command(
    ctx: typer.Context,
    data: str = typer.Option(..., "--data", help="Class folders (optionally train/ val/), a CSV, or tfds:NAME."),
    backbone: str = typer.Option("mobilenet_0.25", "--backbone", help="See `transfer backbones`."),
    weights: str = typer.Option("imagenet", "--weights", help='"imagenet", "none", or a weights file.'),
    image_size: Optional[int] = typer.Option(None, "--image-size", help="Input side in pixels."),
    recipe: Optional[Path] = typer.Option(
        None, "--recipe", help="Recipe TOML file: its batch size, augment, dropout, label smoothing and optimizer."
    ),
    stage: Optional[str] = typer.Option(
        None, "--stage", help="The recipe stage whose layers train, by name or number (default: the first)."
    ),
    min_lr: float = typer.Option(1e-6, "--min-lr", help="Learning rate of the first step."),
    max_lr: float = typer.Option(1.0, "--max-lr", help="Learning rate of the last step."),
    steps: int = typer.Option(100, "--steps", help="Training steps (batches) in the sweep, 5 or more."),
    out: Path = typer.Option(
        Path("lr_find.png"), "--out", help="The loss-vs-learning-rate plot (PNG); a folder gets lr_find.png."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout."),
    val_fraction: float = typer.Option(0.2, "--val-fraction", help="Used when the data has no val split."),
    allow_outside_root: bool = typer.Option(
        False, "--allow-outside-root", help="Let CSV paths point outside the CSV's folder (trusted CSVs only)."
    ),
):
    """Learning-rate range test: train a few steps at a growing rate, plot the loss, suggest a peak rate.

    The model, data pipeline and trainable layers are those `transfer train`
    would use for the chosen stage; the weights are thrown away afterwards.
    Progress goes to stderr, results to stdout.
    """
    from transfer.lr_find import plot_lr_find, prepare_lr_find

    def say(message: str) -> None:
        typer.echo(message, err=True)

    if out.is_dir():
        out = out / "lr_find.png"
    sweep = prepare_lr_find(
        data, backbone=backbone, weights=_parse_weights(weights), image_size=image_size, recipe=recipe, stage=stage,
        min_lr=min_lr, max_lr=max_lr, steps=steps, val_fraction=val_fraction, allow_outside_root=allow_outside_root,
        echo=say,
    )
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = (TextColumn("lr-find"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("lr {task.fields[lr]:.1e}  loss {task.fields[loss]:.4f}"), TimeRemainingColumn())
        with Progress(*columns, console=Console(stderr=True)) as bar:
            task = bar.add_task("lr-find", total=steps, lr=min_lr, loss=float("nan"))
            result = sweep.run(lambda step, total, lr, loss: bar.update(task, completed=step, lr=lr, loss=loss))
    else:  # logs: a line every tenth of the sweep
        every = max(steps // 10, 1)

        def report(step: int, total: int, lr: float, loss: float) -> None:
            if step % every == 0 or step == total:
                say(f"lr-find step {step}/{total}: lr {lr:.2e}, loss {loss:.4f}")

        result = sweep.run(report)
    for note in result.notes():
        say(note)
    path = plot_lr_find(result.learning_rates, result.losses, result.suggestion, out)
    if as_json:
        typer.echo(json.dumps({
            "suggested_learning_rate": result.suggestion, "plot": str(path), "stage": result.stage,
            "learning_rates": [float(v) for v in result.learning_rates], "losses": [float(v) for v in result.losses],
        }))
        return
    typer.echo(f"Suggested learning rate: {result.suggestion:.2g}")
    typer.echo(f"Plot: {path}")
    where = recipe or "your recipe TOML (see README, Recipes)"
    typer.echo(f'Next: set learning_rate = {result.suggestion:.2g} for stage "{result.stage}" in {where} '
               "and pass it to transfer train --recipe.")


@app.command("demo")
@user_errors
def demo_command(
    ctx: typer.Context,
    out: Optional[Path] = typer.Option(
        None, "--out", help="Where to put the run and export (default: a new runs/demo-YYYYmmdd-HHMMSS)."
    ),
    weights: str = typer.Option(
        "imagenet", "--weights", help='"imagenet" (trains from scratch when none is to be had) or "none".'
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the demo run, export and data in --out."),
):
    """Train -> evaluate -> export -> predict on the small shapes dataset in data/."""
    import shutil

    from transfer.demo import DEMO_OUTPUTS, new_demo_dir, run_demo

    if out is None:
        out = new_demo_dir()
    elif (out / "run" / "run.json").exists() or (out / "export").exists():
        if not overwrite:
            raise TransferError(f"{out} already holds a demo run.",
                                fix="Pass --overwrite to replace it, another --out, or no --out for a new folder.")
        for name in DEMO_OUTPUTS:  # only what the demo itself writes there
            shutil.rmtree(out / name, ignore_errors=True)
    summary = run_demo(out, weights=_parse_weights(weights), verbose=1 if sys.stdout.isatty() else 2)
    typer.echo("")
    typer.echo(f"Weights:     {summary['weights']} ({summary['backbone']}, {summary['image_size']} px, "
               f"{summary['recipe_text']})")
    typer.echo(f"Data:        {summary['data']}")
    typer.echo(f"Run:         {summary['run']} (checkpoints, history.csv, logs/ for TensorBoard)")
    typer.echo(f"Evaluation:  {summary['evaluation']} (accuracy {summary['accuracy']:.3f})")
    typer.echo(f"Export:      {summary['export']} (SavedModel + model.keras)")
    for r in summary["predictions"]:
        shown = r.get("error") or ", ".join(f"{p['class']} {p['score']:.3f}" for p in r["predictions"])
        typer.echo(f"Predicted:   {r['file']}: {shown}")
    typer.echo(f"Time:        {summary['seconds']:.0f} s")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
