"""One side of one entry of ``task_panel.py``, run in its own child process: transfer or the guide.

``task_panel.py`` starts ``python benchmarks/task_panel.py --one-side SPEC`` for each side of each
entry (so TensorFlow's memory and threads are freed between sides, and one crash does not lose
the panel); that call lands in ``run_side(spec)`` here, which writes the side's result as JSON to
``spec["result"]``.

- ``transfer``: ``transfer.train`` (the task's default recipe, or the one given) into a run folder,
  then its best epoch (the run's model) and its last epoch both scored on the entry's scoring
  split with the task's own evaluation; the number of optimizer steps it took, for the guide.
- ``guide``: the entry task's guide module (``benchmarks/guides/``, the contract in
  ``benchmarks/README.md``) on the same data, backbone, weights and image size, for the steps the
  transfer side took, scored on the same split.

Example (what the parent sends; paths shortened):

    >>> run_side({"side": "transfer", "entry": Entry.detect_raccoon_dict, "fixtures": "../shared/fixtures",
    ...           "backbone": "mobilenet_0.25", "weights": ".../mobilenet_2_5_224_tf_no_top.h5",
    ...           "recipe": None, "settings": {}, "work": "/tmp/panel/detect-raccoon", "quick": False,
    ...           "steps": None, "guide_module": None, "result": "/tmp/panel/detect-raccoon/transfer.json"})
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import importlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The metrics each task is judged on, the first the headline (issue 23: detect map and map50,
# segment mean IoU, localize mean IoU); an entry may add its own (membrane: pixel accuracy).
HEADLINES = {"detect": ("map", "map50"), "segment": ("mean_iou",), "localize": ("mean_iou",)}
# Each task's guide, imported by name only when its side runs (written apart, see benchmarks/guides/).
GUIDES = {"detect": "benchmarks.guides.retinanet", "segment": "benchmarks.guides.deeplabv3plus",
          "localize": "benchmarks.guides.box_regression"}
# --quick: tiny subsets at a tiny size, one epoch a stage (the same code path, end to end).
QUICK_TRAIN, QUICK_VAL, QUICK_SIZE = 8, 4, 64
GUIDE_KEYS = ("guide", "source", "task", "epochs", "steps", "seconds", "train_seconds", "score", "headline",
              "history")


@dataclass(frozen=True)
class Entry:
    """One panel entry: a task on one data set, with how it is split, scored and sized.

    ``data``, ``val`` and ``score`` are paths under the fixtures folder (or absolute); ``val``
    None: a seeded split of ``data`` (``val_fraction``, ``seed``); ``score`` None: scored on the
    validation side. ``image_size`` None: the task's default for the backbone. ``options``: the
    task's options (segment: ``ignore_index``, ``class_names``); ``extras``: metrics shown after
    the task's headlines.
    """

    name: str
    task: str
    data: str
    val: str | None = None
    score: str | None = None
    val_fraction: float = 0.2
    seed: int = 0
    image_size: int | None = None
    options: dict = field(default_factory=dict)
    extras: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> "Entry":
        return cls(**{**value, "extras": tuple(value.get("extras", ()))})

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "extras": list(self.extras)}

    @property
    def metrics(self) -> tuple[str, ...]:
        return HEADLINES[self.task] + self.extras

    @property
    def slug(self) -> str:
        return self.name.replace(":", "-")


def run_side(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the side ``spec`` names and write its result to ``spec["result"]`` (also returned)."""
    side = {"transfer": transfer_side, "guide": guide_side}[spec["side"]]
    result = side(spec)
    path = Path(spec["result"])
    staging = path.with_name(path.name + ".partial")
    staging.write_text(json.dumps(result, indent=1, default=_jsonable), encoding="utf-8")
    staging.replace(path)
    return result


# --- data ------------------------------------------------------------------------------------

def load_entry(entry: Entry, fixtures: Path, *, quick: bool, settings: dict[str, Any] | None = None):
    """``(task, data, score_samples)``: the entry's task (with its options, and the pinned recipe's
    decoder and loss where ``settings`` has them), its ``DataSplit`` and the samples every
    side is scored on (``--quick``: the first few of each)."""
    import transfer
    from transfer.data.samples import DataSplit

    options = {**entry.options, **(settings or {}).get("task_options", {})}
    task = transfer.get_task(entry.task)
    if options:
        task = task.with_options(**options)
    val = None if entry.val is None else str(fixtures / entry.val)
    data = transfer.load_data(fixtures / entry.data, task=task, val_source=val, val_fraction=entry.val_fraction,
                              seed=entry.seed, echo=None)
    score = data.val if entry.score is None else task.evaluation_samples(
        str(fixtures / entry.score), {"class_names": list(data.class_names), "ignore_index": task_ignore(task)})
    if quick:
        first = data.val.subset(range(min(QUICK_VAL, len(data.val))))
        data = DataSplit(data.train.subset(range(min(QUICK_TRAIN, len(data.train)))), first,
                         f"{data.origin} (--quick: the first {QUICK_TRAIN} / {QUICK_VAL})")
        score = first if entry.score is None else score.subset(range(min(QUICK_VAL, len(score))))
    return task, data, score


def task_ignore(task) -> int | None:
    """The segment task's ignored mask value (None for the box tasks, which have none)."""
    return getattr(task, "ignore_index", None)


def image_size_for(entry: Entry, backbone: str, *, quick: bool, settings: dict[str, Any] | None = None) -> int:
    """``--quick``'s size, else the entry's own, else the pinned recipe's scale of the backbone's
    ImageNet size (``settings["image_size_scale"]``), else the task's default for the backbone."""
    from transfer import get_backbone, get_task
    from transfer.tasks.base import scaled_image_size

    spec = get_backbone(backbone)
    if quick:
        return QUICK_SIZE
    if entry.image_size:
        return int(entry.image_size)
    scale = (settings or {}).get("image_size_scale")
    if scale:
        return scaled_image_size(spec, scale[0] / scale[1])
    return get_task(entry.task).default_image_size(spec)


# --- the transfer side -----------------------------------------------------------------------

def transfer_side(spec: dict[str, Any]) -> dict[str, Any]:
    """``transfer.train`` into ``WORK/run``, then its best and last epochs scored on the scoring split."""
    import transfer
    from transfer.engine.run import RunDir

    entry, work = Entry.from_dict(spec["entry"]), Path(spec["work"])
    settings = spec.get("settings") or {}
    task, data, score = load_entry(entry, Path(spec["fixtures"]), quick=spec["quick"], settings=settings)
    image_size = image_size_for(entry, spec["backbone"], quick=spec["quick"], settings=settings)
    recipe = recipe_for(task, spec.get("recipe"), quick=spec["quick"])
    run_dir, last_file = work / "run", work / "last-epoch.keras"
    clock = _Clock()
    with keep_last_epoch(last_file) as kept:
        transfer.train(data, run_dir, task=task, backbone=spec["backbone"], weights=spec["weights"],
                       image_size=image_size, recipe=recipe, verbose=2, feature_cache=False,
                       data_source=str(Path(spec["fixtures"]) / entry.data),
                       val_data_source=None if entry.val is None else str(Path(spec["fixtures"]) / entry.val))
    train_time = clock.lap()
    run = RunDir(run_dir)
    config, history = run.config(), read_history(run.history_file)
    if kept.get("epoch") != len(history):
        raise RuntimeError(f"The last epoch's checkpoint was not kept (kept {kept}, {len(history)} epochs in "
                           f"{run.history_file}): has transfer.engine.stage_runner changed?")
    run_recipe = transfer.Recipe.load(run.recipe_file)  # with the step floor's epochs, as trained
    best = score_model(run.load_model(), score, config, run_recipe.batch_size)
    best_time = clock.lap()
    last_model = _load_compiled(last_file)
    last = score_model(last_model, score, config, run_recipe.batch_size)
    last_time = clock.lap()
    steps = count_steps(history, int(config["num_train"]), run_recipe.batch_size)
    per_epoch = math.ceil(int(config["num_train"]) / run_recipe.batch_size)
    last_stage = sum(1 for row in history if row.get("stage") == history[-1].get("stage")) * per_epoch
    return {
        "side": "transfer", "recipe": spec.get("recipe") or "default", "recipe_toml": run_recipe.to_toml(),
        "image_size": image_size, "run_dir": str(run_dir), "num_train": int(config["num_train"]),
        "num_val": int(config["num_val"]), "num_scored": len(score), "epochs": len(history), "steps": steps,
        "steps_per_epoch": per_epoch,
        # A check on "steps": the last stage's optimizer counted its own steps (each stage compiles afresh).
        "last_stage_steps": last_stage, "last_stage_optimizer_iterations": _iterations(last_model),
        "best_epoch": int(config["best_epoch"]), "last_epoch": int(config["last_epoch"]),
        "best": best, "last": last,
        # The race's time: training (transfer.train, its own final evaluation included) and one
        # scoring pass of the model it hands over; scoring the last epoch too is the panel's extra.
        "wall_seconds": round(train_time[0] + best_time[0], 2), "cpu_seconds": round(train_time[1] + best_time[1], 2),
        "train_seconds": round(train_time[0], 2), "score_best_seconds": round(best_time[0], 2),
        "score_last_seconds": round(last_time[0], 2), "history": history,
    }


def recipe_for(task, path: str | None, *, quick: bool):
    """The recipe file at ``path`` (else the task's default); ``--quick``: one epoch a stage, no step floor."""
    from transfer.core.recipe import Recipe

    recipe = Recipe.load(path) if path else task.default_recipe()
    return recipe.with_epochs(1) if quick else recipe


@contextlib.contextmanager
def keep_last_epoch(destination: Path):
    """While training: copy the run's last epoch checkpoint to ``destination`` before the run deletes it.

    A finished run keeps only ``best.keras``; its resumable ``epoch-N.keras`` (the last epoch,
    written after each stage's last epoch, the weights as validated: the weight average where the
    stage keeps one) is deleted by ``transfer.engine.stage_runner``'s call of
    ``remove_epoch_checkpoints`` at the very end. That call is wrapped here, in this child process
    only, to copy the file first: the least invasive honest way to score the last epoch without
    changing the engine. Yields a dict that gets ``epoch`` and ``file`` once kept.
    """
    from transfer.engine import stage_runner
    from transfer.engine.checkpoints import Progress

    original, kept = stage_runner.remove_epoch_checkpoints, {}

    def keep_then_remove(run):
        progress = Progress.load(run.state_file)
        if progress is not None and progress.checkpoint:
            shutil.copy2(run.root / "checkpoints" / progress.checkpoint, destination)
            kept.update(epoch=progress.epoch, file=progress.checkpoint)
        original(run)

    stage_runner.remove_epoch_checkpoints = keep_then_remove
    try:
        yield kept
    finally:
        stage_runner.remove_epoch_checkpoints = original


def score_model(model, samples, config: dict[str, Any], batch_size: int) -> dict[str, Any]:
    """The run's task's evaluation of ``model`` on ``samples`` (as ``transfer evaluate`` scores):
    ``{"score": report.to_dict()}``."""
    from transfer.tasks import get_task

    task = get_task(config["task"]).for_run(config)
    report = task.evaluate(model, samples, int(config["image_size"]), batch_size, config)
    return {"score": report.to_dict()}


def read_history(path: Path) -> list[dict[str, Any]]:
    """history.csv's rows, numbers as numbers (``epoch`` an int, ``stage`` kept as text)."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [{k: (v if k == "stage" else int(float(v)) if k == "epoch" else float(v)) for k, v in row.items()
             if v not in ("", None)} for row in rows]


def count_steps(history: list[dict[str, Any]], num_train: int, batch_size: int) -> int:
    """Optimizer steps a run took: its epochs (history rows) times ``ceil(num_train / batch_size)``
    (the task pipelines batch without dropping the remainder and fit runs each epoch's batches).

    Example:
        >>> count_steps([{"epoch": 1}, {"epoch": 2}, {"epoch": 3}], 160, 16)
        30
    """
    return len(history) * math.ceil(num_train / batch_size)


def _load_compiled(path: Path):
    """The kept last-epoch checkpoint, compiled (so its optimizer's step count can be read)."""
    from transfer.engine.artifact_loading import load_keras_file

    return load_keras_file(path, fix=f"Run the panel's entry again ({path} is the panel's copy).", compile=True)


def _iterations(model) -> int | None:
    """The optimizer's step count in a compiled checkpoint: the steps of its stage (each stage
    compiles a fresh optimizer), a check on ``count_steps`` (None when it has no optimizer)."""
    optimizer = getattr(model, "optimizer", None)
    return None if optimizer is None else int(optimizer.iterations.numpy())


# --- the guide side --------------------------------------------------------------------------

def guide_side(spec: dict[str, Any]) -> dict[str, Any]:
    """The entry task's guide for ``spec["steps"]`` optimizer steps, scored on the scoring split."""
    entry = Entry.from_dict(spec["entry"])
    name = spec.get("guide_module") or GUIDES[entry.task]
    module = importlib.import_module(name)
    if module.GUIDE.get("task") != entry.task:
        raise RuntimeError(f"{name} is a guide for {module.GUIDE.get('task')!r}, not {entry.task!r}.")
    # The same data, split and scoring samples as transfer's side, at the size transfer's side trained at.
    _, data, score = load_entry(entry, Path(spec["fixtures"]), quick=spec["quick"])
    image_size = int(spec.get("image_size") or image_size_for(entry, spec["backbone"], quick=spec["quick"]))
    clock = _Clock()
    result = module.run_guide(data, backbone=spec["backbone"], weights=spec["weights"], image_size=image_size,
                              steps=int(spec["steps"]), seed=0, score_samples=score, echo=_echo)
    wall, cpu = clock.lap()
    return {**result, "side": "guide", "module": name, "image_size": image_size, "num_train": len(data.train),
            "num_scored": len(score), "wall_seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
            "contract_problems": contract_problems(result, entry, int(spec["steps"]))}


def contract_problems(result: dict[str, Any], entry: Entry, steps: int) -> list[str]:
    """What a guide's result breaks of the contract (benchmarks/README.md): missing keys, another
    step count than asked, a headline that is not its score's, a history without one row an epoch.

    Example:
        >>> contract_problems({"steps": 9, ...}, Entry("localize:raccoon", "localize", "raccoon"), 10)
        ['steps 9, asked for 10']
    """
    missing = [key for key in GUIDE_KEYS if key not in result]
    if missing:
        return [f"missing keys {missing}"]
    problems = []
    if result["steps"] != steps:
        problems.append(f"steps {result['steps']}, asked for {steps}")
    if result["task"] != entry.task:
        problems.append(f"task {result['task']!r}, not {entry.task!r}")
    headline = result["score"].get(entry.metrics[0])
    if headline is None or abs(float(result["headline"]) - float(headline)) > 1e-6:
        problems.append(f"headline {result['headline']} is not the score's {entry.metrics[0]} {headline}")
    if len(result["history"]) != result["epochs"]:
        problems.append(f"{len(result['history'])} history rows for {result['epochs']} epochs")
    return problems


class _Clock:
    """Wall and CPU seconds (this process, all its threads) since the last lap."""

    def __init__(self):
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def lap(self) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        out = (wall - self._wall, cpu - self._cpu)
        self._wall, self._cpu = wall, cpu
        return out


def _echo(line: str) -> None:
    print(line, flush=True)


def _jsonable(value):
    """NumPy numbers and arrays, tuples and paths as JSON values."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (Path, os.PathLike)):
        return os.fspath(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
