"""``transfer train``, ``lr-find`` and ``demo``: the commands that train (see ``transfer.cli``).

Example:
    $ transfer train --task localize --data raccoon/train_labels.csv --val-data raccoon/test_labels.csv --out runs/r
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Optional

import typer

from transfer.cli import train_options as options
from transfer.cli.app import _parse_weights, app, user_errors
from transfer.core.errors import TransferError


@app.command("train")
@user_errors
def train_command(
    ctx: typer.Context,
    data: Optional[str] = options.DATA,
    val_data: Optional[str] = options.VAL_DATA,
    task_name: str = options.TASK_NAME,
    ignore_index: Optional[int] = options.IGNORE_INDEX,
    class_names: Optional[str] = options.CLASS_NAMES,
    decoder: Optional[str] = options.DECODER,
    decoder_stride: Optional[int] = options.DECODER_STRIDE,
    loss: Optional[str] = options.LOSS,
    out: Optional[Path] = options.OUT,
    resume: Optional[Path] = options.RESUME,
    backbone: str = options.BACKBONE,
    weights: str = options.WEIGHTS,
    image_size: Optional[int] = options.IMAGE_SIZE,
    recipe: Optional[Path] = options.RECIPE,
    epochs: Optional[int] = options.EPOCHS,
    resize: Optional[str] = options.RESIZE,
    val_fraction: float = options.VAL_FRACTION,
    allow_outside_root: bool = options.ALLOW_OUTSIDE_ROOT,
    precision: str = options.PRECISION,
    xla: Optional[bool] = options.XLA,
    feature_cache: Optional[Path] = options.FEATURE_CACHE,
    no_feature_cache: bool = options.NO_FEATURE_CACHE,
    checkpoint_every: Optional[float] = options.CHECKPOINT_EVERY,
    distribute: str = options.DISTRIBUTE,
):
    """Fine-tune a backbone on your images; writes checkpoints, history and metrics to --out.

    A quick data check runs first; unreadable images are skipped, each named.
    """
    from transfer.engine.distribute import choose_distribution
    from transfer.engine.train import resume as resume_run
    from transfer.engine.train import train

    # First: multi-worker training must set TensorFlow up before any op runs.
    distribution = choose_distribution(distribute)
    verbose = 1 if sys.stdout.isatty() else 2
    if resume is not None:
        _refuse_options_beside_resume(ctx.params)
        result = resume_run(resume, verbose=verbose, distribution=distribution)
        typer.echo(f"Done. {_outcome_text(result)}")
        return
    if data is None or out is None:
        missing = " and ".join(name for name, value in (("--data", data), ("--out", out)) if value is None)
        raise TransferError(f"transfer train needs {missing}.",
                            fix="Example: transfer train --data flowers/ --out runs/flowers")
    task, chosen, spec, size = _checked_settings(ctx.params)
    split = _read_and_check_data(task, chosen, spec, size, ctx.params)
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


# What each option is when not given: --resume refuses any option that differs (None for the rest).
_UNSET_BESIDE_RESUME = {"task_name": "classify", "precision": "float32", "no_feature_cache": False}
_REFUSED_BESIDE_RESUME = ("data", "out", "recipe", "epochs", "resize", "val_data", "task_name", "precision", "xla",
                          "feature_cache", "no_feature_cache", "checkpoint_every", "ignore_index", "class_names",
                          "decoder", "decoder_stride", "loss")


def _refuse_options_beside_resume(params: dict) -> None:
    """A resumed run keeps its own data, recipe and settings: an option that would change them is refused."""
    if any(params[name] != _UNSET_BESIDE_RESUME.get(name) for name in _REFUSED_BESIDE_RESUME):
        raise TransferError(
            "--resume continues a run with its own data, recipe and settings.",
            fix="Pass only --resume RUN_DIR.",
        )


def _checked_settings(params: dict):
    """The task (with its own options), the recipe, the backbone and the image size, every cheap
    setting checked before data is read."""
    from transfer.backbones import get_backbone
    from transfer.core.recipe import Recipe
    from transfer.engine.precision import resolve_precision
    from transfer.engine.run_config import check_out_dir, checked_image_size
    from transfer.tasks import get_task

    # Cheap mistakes fail now, not after the data scan: a typo'd task, precision or backbone,
    # an --out that already holds a run, a size below the backbone's minimum, a bad recipe.
    task = get_task(params["task_name"])
    resolve_precision(params["precision"])
    spec = get_backbone(params["backbone"])
    size = checked_image_size(spec, params["image_size"], task)
    check_out_dir(params["out"], (params["data"], params["val_data"]))
    chosen = Recipe.load(params["recipe"]) if params["recipe"] else task.default_recipe()
    # The task's own options (each task refuses those it does not take, by their flag).
    ignore_index = params["ignore_index"]
    task = task.with_options(ignore_index=ignore_index if ignore_index is not None else chosen.ignore_index,
                             class_names=params["class_names"], decoder=params["decoder"], loss=params["loss"],
                             decoder_stride=params["decoder_stride"])
    epochs = params["epochs"]
    if epochs is not None:
        if epochs < 1:
            raise TransferError(f"--epochs {epochs} is not positive.", fix="Pass --epochs 1 or more.")
        chosen = chosen.with_epochs(epochs)
    if params["resize"] is not None:
        chosen = dataclasses.replace(chosen, resize=params["resize"].strip().lower())  # checked by the Recipe
    task.check_recipe(chosen)
    return task, chosen, spec, size


def _read_and_check_data(task, chosen, spec, size: int, params: dict):
    """The training and validation data, read by the task and checked (the doctor's summary printed)."""
    from transfer.data.doctor import check_split
    from transfer.engine.run_config import image_size_line, upsampling_warning

    typer.echo(image_size_line(spec, params["image_size"], task))
    data = params["data"]
    split = task.load_data(data, val_source=params["val_data"], val_fraction=params["val_fraction"],
                           seed=chosen.seed, allow_outside_root=params["allow_outside_root"], echo=typer.echo)
    typer.echo(f"Data: {task.describe_data(split)}")
    report = check_split(split, image_size=size, source=data)
    typer.echo(report.summary())
    warning = upsampling_warning(spec, size, report.median_side)
    if warning:
        typer.echo(warning)
    return split


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
