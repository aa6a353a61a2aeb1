"""``transfer train``, ``lr-find`` and ``demo``: the commands that train (see ``transfer.cli``).

Example:
    $ transfer train --task localize --data raccoon/train_labels.csv --val-data raccoon/test_labels.csv --out runs/r
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from transfer.cli.app import _parse_weights, app, user_errors
from transfer.core.errors import TransferError


@app.command("train")
@user_errors
def train_command(
    ctx: typer.Context,
    data: Optional[str] = typer.Option(
        None, "--data",
        help="classify: class folders (optionally train/ val/), a CSV, or tfds:NAME; "
             "localize/detect: a box CSV, a Pascal VOC folder (one of its lists: "
             "FOLDER/ImageSets/Main/NAME.txt) or a COCO JSON file; segment: a folder of images/ + masks/ "
             "(or image/ + label/), VIA or COCO polygon JSON, or tfds:NAME with masks.",
    ),
    val_data: Optional[str] = typer.Option(
        None, "--val-data", help="Validate on this source (same kinds as --data) instead of splitting --data."
    ),
    task_name: str = typer.Option(
        "classify", "--task",
        help="classify, localize (one box and class per image), detect (every box of every class) or "
             "segment (a class for every pixel).",
    ),
    ignore_index: Optional[int] = typer.Option(
        None, "--ignore-index",  # range checked by the task, with check-data's rule and words (0..65535)
        help="segment: the mask value of unlabelled pixels (e.g. CamVid's void 11; 0-65535), left out of the loss "
             "and metrics (default: the recipe's ignore_index, else none).",
    ),
    class_names: Optional[str] = typer.Option(
        None, "--class-names",
        help="segment: the class of each mask value, in value order (e.g. background,cell); default: the "
             "classes.txt beside the masks.",
    ),
    decoder: Optional[str] = typer.Option(
        None, "--decoder", help="segment: unet (skip connections from strides 2-32, the default) or fcn."
    ),
    loss: Optional[str] = typer.Option(
        None, "--loss", help="segment: ce, dice, focal or a sum of them (default ce+dice; ce alone favours pixel "
                             "accuracy, the Dice term rare classes)."
    ),
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
    checkpoint_every: Optional[float] = typer.Option(
        None, "--checkpoint-every", min=0.0, metavar="SECONDS",
        help="Seconds of training between resumable checkpoints (default 30; always one after each stage; 0: "
             "after every epoch). A kill loses at most this much.",
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
    from transfer.core.recipe import Recipe
    from transfer.engine.train import resume as resume_run
    from transfer.engine.distribute import choose_distribution
    from transfer.engine.train import train

    # First: multi-worker training must set TensorFlow up before any op runs.
    distribution = choose_distribution(distribute)
    verbose = 1 if sys.stdout.isatty() else 2
    if resume is not None:
        if (data is not None or out is not None or recipe is not None or epochs is not None or val_data is not None
                or task_name != "classify" or precision != "float32" or xla is not None
                or feature_cache is not None or no_feature_cache or checkpoint_every is not None
                or (ignore_index, class_names, decoder, loss) != (None, None, None, None)):
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
    from transfer.engine.precision import resolve_precision
    from transfer.tasks import get_task
    from transfer.engine.run_config import check_out_dir, checked_image_size, image_size_line, upsampling_warning

    # Cheap mistakes fail now, not after the data scan: a typo'd task, precision or backbone,
    # an --out that already holds a run, a size below the backbone's minimum, a bad recipe.
    task = get_task(task_name)
    resolve_precision(precision)
    spec = get_backbone(backbone)
    size = checked_image_size(spec, image_size, task)
    check_out_dir(out, (data, val_data))
    chosen = Recipe.load(recipe) if recipe else task.default_recipe()
    # The task's own options (each task refuses those it does not take, by their flag).
    task = task.with_options(ignore_index=ignore_index if ignore_index is not None else chosen.ignore_index,
                             class_names=class_names, decoder=decoder, loss=loss)
    if epochs is not None:
        if epochs < 1:
            raise TransferError(f"--epochs {epochs} is not positive.", fix="Pass --epochs 1 or more.")
        chosen = chosen.with_epochs(epochs)
    task.check_recipe(chosen)
    typer.echo(image_size_line(spec, image_size, task))
    split = task.load_data(data, val_source=val_data, val_fraction=val_fraction, seed=chosen.seed,
                           allow_outside_root=allow_outside_root, echo=typer.echo)
    typer.echo(f"Data: {task.describe_data(split)}")
    from transfer.data.doctor import check_split

    report = check_split(split, image_size=size, source=data)
    typer.echo(report.summary())
    warning = upsampling_warning(spec, size, report.median_side)
    if warning:
        typer.echo(warning)
    result = train(
        split, out, backbone=backbone, weights=_parse_weights(weights), image_size=image_size,
        recipe=chosen, data_source=data, verbose=verbose, precision=precision, xla=xla,
        feature_cache=False if no_feature_cache else (feature_cache or True), distribution=distribution,
        task=task, val_data_source=val_data,
        **({} if checkpoint_every is None else {"checkpoint_every": checkpoint_every}),
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
    from transfer.engine.summary import metric_label

    metrics = result.best_metrics
    multi_label = "macro_f1" in metrics
    if multi_label or "accuracy" in metrics:
        name, value = ("macro F1", metrics["macro_f1"]) if multi_label else ("accuracy", metrics["accuracy"])
    else:  # other tasks: the monitored metric (e.g. val box IoU)
        name, value = metric_label(metrics["monitor"]).removeprefix("val "), float(metrics["best_value"])
    text = f"Best val {name} {value:.4f} (epoch {result.best_epoch})"
    if (metrics.get("last_epoch") and metrics["last_epoch"] != result.best_epoch
            and metrics.get("last_value") is not None):
        text += f"; last epoch {metrics['last_epoch']}: {metrics['last_value']:.4f}"
    if multi_label:
        text += (f"; exact match {metrics.get('exact_match') or 0.0:.4f}, per-label accuracy "
                 f"{metrics['accuracy']:.4f} (no label at all would score {metrics.get('no_label_accuracy') or 0:.4f})")
    return text + "."


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
    from transfer.engine.lr_find import plot_lr_find
    from transfer.tasks.classify.lr_find import prepare_lr_find

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
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace an earlier demo's run, export and data in --out (a demo folder only)."),
):
    """Train -> evaluate -> export -> predict on the small shapes dataset in data/."""
    from transfer.cli.demo import demo_answer_text, new_demo_dir, prepare_demo_dir, run_demo

    # A new or empty folder, or (--overwrite) an earlier demo's: only what that demo wrote is removed.
    out = prepare_demo_dir(out if out is not None else new_demo_dir(), overwrite=overwrite)
    summary = run_demo(out, weights=_parse_weights(weights), verbose=1 if sys.stdout.isatty() else 2)
    typer.echo("")
    typer.echo(f"Weights:     {summary['weights']} ({summary['backbone']}, {summary['image_size']} px, "
               f"{summary['recipe_text']})")
    typer.echo(f"Data:        {summary['data']}")
    typer.echo(f"Run:         {summary['run']} (checkpoints, history.csv, logs/ for TensorBoard)")
    typer.echo(f"Evaluation:  {summary['evaluation']} (accuracy {summary['accuracy']:.3f})")
    typer.echo(f"Export:      {summary['export']} (SavedModel + model.keras)")
    for r in summary["predictions"]:
        typer.echo(f"Predicted:   {r['file']}: {demo_answer_text(r)}")
    typer.echo(f"Time:        {summary['seconds']:.0f} s")
