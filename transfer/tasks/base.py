"""The task seam: what a task (classify, localize, ...) owns, and what the engine may ask of it.

The engine (``transfer.engine``: ``train``, ``evaluate``; ``transfer.serving.export``;
the CLI) holds stages, freezing, schedules, checkpoints, resume, the run
folder and atomic writes, and names no task: it looks the run's task up with
``transfer.tasks.get_task(config["task"])`` and calls the methods below. A new
task is one package in ``transfer/tasks/`` (plus its data readers) with a
``Task`` subclass in its ``task.py``, listed in ``transfer.tasks.TASKS``.

Plain values cross the seam: ``DataSplit`` / ``Samples`` (targets of the
task's own type), the run's ``config`` dict (run.json, which the task fills
through ``run_config``), the ``Recipe``, Keras models and ``tf.data`` datasets.

Example:
    >>> from transfer.tasks import get_task
    >>> task = get_task("classify")
    >>> task.name, task.uses_feature_cache
    ('classify', True)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Protocol

from transfer.core.errors import TransferError


@dataclass(frozen=True)
class Objective:
    """What a model is compiled with and how its best epoch is chosen.

    ``monitor`` is a logged validation metric (``"val_accuracy"``,
    ``"val_iou"``); ``mode`` says whether higher (``"max"``) or lower
    (``"min"``) is better. ``loss`` and ``metrics`` go to ``model.compile``
    as they are (dicts keyed by output name for multi-output models).
    """

    loss: Any
    metrics: Any
    monitor: str
    mode: str = "max"


class Report(Protocol):
    """An evaluation: what ``Task.evaluate`` returns."""

    def summary(self) -> dict[str, Any]:
        """JSON-ready metrics (``transfer evaluate --json``, metrics.json)."""

    def table(self) -> str:
        """Plain text for ``transfer evaluate``."""

    def headline(self) -> tuple[str, float]:
        """The one figure to lead with, e.g. ``("accuracy", 0.91)`` or ``("mean IoU", 0.78)``."""

    def write(self, out_dir: Path) -> dict[str, Path]:
        """Write metrics.json and the task's figures into ``out_dir``; returns what went where."""


def scaled_image_size(spec, scale: float) -> int:
    """The backbone's ImageNet input side times ``scale``, rounded to a multiple of 32 (every
    stride-32 feature map then tiles the image exactly): the default of tasks that measured
    better with larger inputs than classification's.

    Example:
        >>> scaled_image_size(get_backbone("mobilenet_0.25"), 9 / 7)
        288
    """
    return int(round(spec.default_size * scale / 32) * 32)


def classes_phrase(names) -> str:
    """How ``describe_data`` names a run's classes: their count and the first five.

    Example:
        >>> classes_phrase(("Platelets", "RBC", "WBC"))
        '3 classes (Platelets, RBC, WBC)'
    """
    return (f"{len(names)} class{'es' if len(names) > 1 else ''} ({', '.join(names[:5])}"
            f"{', ...' if len(names) > 5 else ''})")


def raise_unknown_serving_options(task, options: Mapping[str, Any], known: tuple[str, ...]) -> None:
    """Refuse export options a task has no use for, naming them and the task's own."""
    unknown = sorted(set(options) - set(known))
    if unknown:
        flags = ", ".join("--" + name.replace("_", "-") for name in unknown)
        own = ", ".join("--" + name.replace("_", "-") for name in known) or "none"
        raise TransferError(f"{flags} do(es) not apply to a {task.title} export (its export options: {own}).",
                            fix="Leave them out; they set detection's non-maximum suppression.")


def refuse_augment_and_class_weight(recipe, task_name: str, allowed: tuple[str, ...], augment_why: str,
                                    class_weight_why: str) -> None:
    """A ``TransferError`` for recipe augmentations outside ``allowed`` and for class weights,
    each with why the task cannot honour it (for tasks whose targets are not one class per image)."""
    unknown = [name for name in recipe.augment if name not in allowed]
    if unknown:
        raise TransferError(f"Recipe augment has {unknown}, which --task {task_name} cannot apply ({augment_why}).",
                            fix=f'Use any of {list(allowed)} (e.g. augment = ["flip", "zoom", "color"]).')
    if recipe.class_weight != "none":
        raise TransferError(f"Recipe class_weight={recipe.class_weight!r}: --task {task_name} does not weigh "
                            f"classes ({class_weight_why}).", fix='Use class_weight = "none".')


class Task:
    """Base class of the tasks. Subclasses set ``name`` and implement every method that raises here.

    ``uses_feature_cache``: whether a ``"head"`` stage may train on cached
    pooled backbone features (``transfer.engine.feature_cache``); a task whose head
    reads spatial features (localize, detect, segment) runs the model instead.
    ``checks_finetune_on_small_data``: whether a small training set first checks that
    fine-tuning beats the head stage (``transfer.engine.stage_choice``).
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""  # what exports record as their "task", e.g. "classification"
    # The reader of its exports, "module:Class" (a ``transfer.serving.reader.ExportedModel``), imported
    # by ``transfer.load_export`` only when an export of this task is loaded.
    reader: ClassVar[str] = ""
    uses_feature_cache: ClassVar[bool] = False
    checks_finetune_on_small_data: ClassVar[bool] = False

    # --- options ----------------------------------------------------------------------------
    def with_options(self, **options) -> "Task":
        """This task with the user's task options (the CLI's ``--ignore-index``, ``--class-names``,
        ``--decoder``, ...; an option left at None was not given). A task records the options it
        takes in ``run_config``; one it does not take is refused, named as the CLI spells it.

        Example:
            >>> get_task("segment").with_options(ignore_index=11, decoder="fcn").ignore_index
            11
        """
        given = sorted(name for name, value in options.items() if value is not None)
        if given:
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            raise TransferError(f"--task {self.name} takes no {flags} (command-line option or recipe key).",
                                fix=f"Leave {flags} out (or choose the task that takes it, e.g. --task segment).")
        return self

    def for_run(self, config: Mapping[str, Any]) -> "Task":
        """This task with the options a run recorded (run.json), for what reads its data again
        (resume, evaluate); the task itself when it takes none."""
        return self

    # --- data -------------------------------------------------------------------------------
    def load_data(self, source: str, *, val_source: str | None = None, val_fraction: float = 0.2,
                  seed: int = 0, allow_outside_root: bool = False,
                  echo: Callable[[str], None] | None = None):
        """Training and validation ``DataSplit`` from what the user named (``--data``, ``--val-data``).

        Problems that do not stop training (a clipped box, a dropped box) go
        to ``echo`` one line each, every line naming its file.
        """
        raise NotImplementedError

    def describe_data(self, data) -> str:
        """One line for the train output, e.g. ``160 train / 40 val images, 1 class (raccoon), 173 boxes``."""
        raise NotImplementedError

    def target_to_json(self, target) -> Any:
        """A sample's target as JSON (split.json), read back by ``target_from_json``."""
        raise NotImplementedError

    def target_from_json(self, value: Any, config: Mapping[str, Any]):
        raise NotImplementedError

    def evaluation_samples(self, data: str, config: Mapping[str, Any]):
        """``Samples`` to evaluate a run on, from a ``--data`` given to ``transfer evaluate``,
        with targets in the run's class order (``config["class_names"]``)."""
        raise NotImplementedError

    def data_class_names(self, data: str, config: Mapping[str, Any]) -> tuple[tuple[str, ...] | None, str, bool]:
        """``(the class names of a --data given to transfer evaluate, in its own order; what names them,
        for messages; whether every run class must be there)``, checked against the run's before
        scoring (``transfer.engine.evaluation_data.check_classes``). Names are None when the data has
        none of its own to check: then ``evaluation_samples`` maps them (the answer here).

        Example:
            >>> get_task("localize").data_class_names("raccoon/test_labels.csv", config)
            (('raccoon',), "its boxes' classes are", False)
        """
        return None, "its classes", False

    # --- recipe -----------------------------------------------------------------------------
    def default_recipe(self):
        """The ``Recipe`` used when the user gives none (chosen by measuring, see its docstring)."""
        from transfer.core.recipe import Recipe

        return Recipe()

    def check_recipe(self, recipe) -> None:
        """Raise ``TransferError`` for recipe settings this task cannot honour (an augmentation
        it cannot apply to its targets, class weights without classes, ...), saying which."""

    def default_image_size(self, spec) -> int:
        """The input side when the user names none: the backbone's ImageNet size, unless the
        task measured better (localization: larger)."""
        return spec.default_size

    # --- model ------------------------------------------------------------------------------
    def run_config(self, data, recipe) -> dict[str, Any]:
        """The task's fields for run.json: at least ``class_names``; anything ``build_model``,
        ``objective``, ``make_dataset``, ``evaluate`` and the export need later."""
        raise NotImplementedError

    def common_run_config(self, data, recipe) -> dict[str, Any]:
        """What every task records first: its name, the class names and count, and the resize policy
        (read back by every step with ``ResizePolicy.from_config``)."""
        from transfer.core.resize import ResizePolicy

        return {"task": self.name, "class_names": list(data.class_names), "num_classes": len(data.class_names),
                "resize": ResizePolicy(recipe.resize).to_config()}

    def build_model(self, spec, config: Mapping[str, Any], image_size: int, weights, recipe):
        """``(model, weights_info)``: raw uint8 ``[S, S, 3]`` in, the task's outputs out.

        The backbone is a nested model named ``transfer.backbones.nesting.BACKBONE_LAYER``
        so the engine's freezing rules find it; BatchNorm handling as in
        ``transfer.tasks.classify.model.build_classifier``.
        """
        raise NotImplementedError

    def objective(self, config: Mapping[str, Any], recipe) -> Objective:
        raise NotImplementedError

    def make_dataset(self, samples, image_size: int, batch_size: int, *, training: bool, recipe,
                     cache, config: Mapping[str, Any]):
        """A ``tf.data.Dataset`` of ``(uint8 images [B, S, S, 3], targets)`` batches, targets in the
        form the objective's loss takes. ``training``: shuffled, augmented, repeated as
        ``transfer.data.pipelines.images.make_dataset`` does; ``cache``: a ``CacheDecision`` or False."""
        raise NotImplementedError

    @staticmethod
    def pipeline_options(*, training: bool, recipe, cache, config: Mapping[str, Any]) -> dict[str, Any]:
        """The keywords a box or mask pipeline takes from the run: augmentation only when ``training``,
        the recipe's seed, the cache decision (False: "none") and the run's resize policy.

        Example:
            >>> Task.pipeline_options(training=False, recipe=Recipe(), cache=False, config={})["cache"]
            'none'
        """
        from transfer.core.resize import ResizePolicy

        return {"training": training, "augment": tuple(recipe.augment) if training else (), "seed": recipe.seed,
                "cache": cache if cache is not False else "none", "resize": ResizePolicy.from_config(config)}

    def training_notes(self, data, config: Mapping[str, Any]) -> list[str]:
        """Lines ``train`` prints before the first stage (what is measured, rules applied to the data)."""
        return []

    def class_weight(self, samples, recipe) -> dict[int, float] | None:
        """Keras ``class_weight`` for ``fit`` (classification only)."""
        return None

    def small_data_recipe(self, data, recipe) -> tuple[Any, list[str], dict[str, Any]]:
        """``recipe`` as this task runs it on ``data``'s training set, the lines saying how it differs,
        and run.json entries recording it (classification fits a small set's head in one go)."""
        return recipe, [], {}

    def fit_head_on_cached_features(self, model, data, image_size: int, recipe, config: Mapping[str, Any],
                                    callbacks, *, initial_epoch: int, epochs: int, class_weight, verbose: int):
        """A ``"head"`` stage trained on cached backbone features, returning Keras's ``History``
        (only for a task with ``uses_feature_cache``; the stage loop runs the model otherwise)."""
        raise NotImplementedError

    # --- evaluation -------------------------------------------------------------------------
    def evaluate(self, model, samples, image_size: int, batch_size: int, config: Mapping[str, Any]) -> Report:
        raise NotImplementedError

    # --- export -----------------------------------------------------------------------------
    def check_export_model(self, model, config: Mapping[str, Any]) -> None:
        """Raise ``ValueError`` if ``model`` cannot be exported for this task with ``config``
        (its class names, ...), before anything is written. Default: nothing to check."""

    def serving_outputs(self, config: Mapping[str, Any]) -> dict[str, str]:
        """Output name -> ``"dtype [shape] (meaning)"``, as transfer.json records the signatures."""
        raise NotImplementedError

    def postprocess(self, raw, original_sizes, image_size: int, config: Mapping[str, Any]) -> dict[str, Any]:
        """Inside the serving graph: the model's raw outputs for a batch (a tensor, or a dict
        for multi-output models), the images' original ``(height, width)`` (int32 ``[N, 2]``)
        -> the named outputs (TF ops only; fixed shapes, no ragged tensors)."""
        raise NotImplementedError

    def extra_signatures(self, config: Mapping[str, Any]) -> dict[str, dict[str, str]]:
        """Further ``image_bytes`` signatures of the export, key -> outputs (as ``serving_outputs``):
        answered by ``postprocess(..., signature=key)`` and checked by ``parity_error`` like the
        others. Most tasks have none; segmentation's per-class probabilities are one."""
        return {}

    def parity_error(self, raw, served: Mapping[str, Any], image_size: int, config: Mapping[str, Any]) -> float:
        """Largest difference between the Keras model's raw outputs on images of exactly
        ``image_size`` and what the export served for them (normalized so 1e-4 is the tolerance);
        ``config`` is the one ``postprocess`` traced the export with."""
        raise NotImplementedError

    def with_serving_options(self, config: Mapping[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
        """``config`` with export-time settings applied (``transfer export --score-threshold ...``).

        ``options`` holds only what the user gave. A task without such settings
        refuses any, naming them, rather than ignoring them.
        """
        if options:
            raise_unknown_serving_options(self, options, known=())
        return dict(config)

    def export_metadata(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Task fields for the export's transfer.json (besides class_names and image_size)."""
        return {}
