"""Evaluate a run, any task: its best checkpoint on its validation split or on other data.

The run's task computes the report (``Task.evaluate``); this module finds
the samples, checks their class names against the run's and says where the
results go and what was scored.

Example:
    >>> evaluation = evaluate_data("runs/flowers")
    >>> evaluation.report.headline(), evaluation.write()["metrics"]
    (('accuracy', 0.91), PosixPath('runs/flowers/evaluation/metrics.json'))
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transfer.core.atomic import atomic_write_json
from transfer.core.errors import TransferError
from transfer.engine.run import RunDir


def evaluate_run(run_dir: str | Path, data: str | Path | None = None, *, batch_size: int = 32):
    """Evaluate a run's best checkpoint on its validation split, or on ``data``; any task.

    Returns the task's report (``EvalReport`` for classification). ``data``
    is read by the run's task: for classification a folder of class folders
    (evaluated whole, e.g. a test set), or a folder with ``train/``/``val/``,
    a CSV or a ``tfds:`` name (evaluated on its validation split); for
    localization a box CSV, VOC folder or COCO JSON (evaluated whole). Its
    class names are checked against the run's (see ``evaluate_data``, which
    also says where the results go and what was scored).

    Example:
        >>> evaluate_run("runs/flowers", "flowers-test/").headline()
        ('accuracy', 0.91)
    """
    return evaluate_data(run_dir, data, batch_size=batch_size).report


@dataclass(frozen=True)
class Evaluation:
    """A report with what it scored: ``data`` (JSON: the data's path, images, class mapping),
    ``notes`` (lines to show: a mapping by name, classes without examples) and ``folder``, where
    ``write`` puts it: ``RUN/evaluation`` for the run's own validation split, ``RUN/evaluation-<data
    name>`` for other data (``transfer.engine.evaluation_data.evaluation_folder``)."""

    report: Any
    data: dict[str, Any]
    folder: Path
    notes: tuple[str, ...] = ()

    def summary(self) -> dict[str, Any]:
        """The report's summary with the ``data`` record (what metrics.json holds)."""
        return {**self.report.summary(), "data": self.data}

    def write(self) -> dict[str, Path]:
        """The task's files into ``folder``; metrics.json also records the data scored."""
        written = self.report.write(self.folder)
        atomic_write_json(written["metrics"], self.summary())
        return written


def evaluate_data(run_dir: str | Path, data: str | Path | None = None, *, batch_size: int = 32) -> Evaluation:
    """``evaluate_run``'s report with the data it scored and where it belongs.

    ``data``'s class names must be the run's (a class the run never learnt is
    refused, naming both lists); in another order they are mapped by name,
    which ``notes`` says.

    Example:
        >>> evaluation = evaluate_data("runs/camvid", "camvid/test")
        >>> evaluation.folder, evaluation.data["num_images"]
        (PosixPath('runs/camvid/evaluation-test'), 233)
        >>> evaluation.write()["metrics"]
        PosixPath('runs/camvid/evaluation-test/metrics.json')
    """
    from transfer.engine.evaluation_data import check_classes, data_identity, data_name, evaluation_folder, in_run_order
    from transfer.engine.run_config import samples_from_record
    from transfer.tasks import get_task, task_of_config

    run = RunDir(run_dir).require()
    config = run.config()
    task = get_task(task_of_config(config)).for_run(config)
    notes: tuple[str, ...] = ()
    if data is not None:
        data = str(data)
        check = check_classes(task.name, data, config)
        samples = in_run_order(task.evaluation_samples(data, config), check)
        record = {"source": "--data", "path": data, "name": data_name(data), "identity": data_identity(data)}
        folder, notes = evaluation_folder(run, data), tuple(n for n in (check.note,) if n)
        classes = check.record()
    else:
        split = run.split()
        if split.get("val") is not None:
            samples = samples_from_record(split["val"], config, task)
        elif config.get("data_source"):
            samples = task.load_data(config["data_source"], val_source=config.get("val_data_source")).val
        else:
            raise TransferError(f"{run.root} does not record its validation data.", fix="Pass --data to evaluate on.")
        names = list(config["class_names"])
        record = {"source": "the run's validation split", "path": config.get("val_data_source")
                  or config.get("data_source")}
        folder, classes = run.evaluation_dir, {"run": names, "data": names, "mapping": "same names, same order"}
    model = run.load_model()
    report = task.evaluate(model, samples, int(config["image_size"]), batch_size, config)
    return Evaluation(report, {**record, "num_images": len(samples), "classes": classes}, folder, notes)
