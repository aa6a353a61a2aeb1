"""A run's settings before and after training: image size, the --out folder, split.json, run.json's monitor.

Example:
    >>> checked_image_size(get_backbone("mobilenet_0.25"), None)
    224
    >>> run_monitor({"multi_label": True, "monitor": "val_macro_f1"})
    'val_macro_f1'
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from transfer.backbones import BackboneSpec, get_backbone  # noqa: F401  (get_backbone: docstring examples)
from transfer.engine.checkpoints import MONITOR
from transfer.data.samples import DataSplit, Samples
from transfer.core.errors import TransferError
from transfer.engine.run import RunDir


def run_monitor(config: dict[str, Any]) -> str:
    """The validation metric a run picks its best epoch by (run.json ``"monitor"``).

    Example:
        >>> run_monitor({"multi_label": True, "monitor": "val_macro_f1"})
        'val_macro_f1'
    """
    return str(config.get("monitor") or MONITOR)


def checked_image_size(spec: BackboneSpec, image_size: int | None, task=None) -> int:
    """``image_size``, or the default (the task's for this backbone, else the backbone's ImageNet
    size); a clear error below the backbone's minimum."""
    default = task.default_image_size(spec) if task is not None else spec.default_size
    image_size = int(image_size or default)
    if image_size < spec.min_size:
        raise TransferError(
            f"Image size {image_size} is too small for {spec.name} (minimum {spec.min_size}).",
            fix=f"Pass --image-size {spec.min_size} or more.",
        )
    return image_size


def image_size_line(spec: BackboneSpec, image_size: int | None, task=None) -> str:
    """One line saying which input size a run uses and why.

    Example:
        >>> image_size_line(get_backbone("mobilenet_0.25"), None)
        'Image size: 224 px, the default of mobilenet_0.25 (its ImageNet size); pass --image-size to match ...'
    """
    size = checked_image_size(spec, image_size, task)
    if image_size:
        return f"Image size: {size} px (--image-size)."
    why = "its ImageNet size"
    if size != spec.default_size:
        # Localize and detect measured better above the ImageNet size; segment reasoned it (their docstrings).
        why = f"the {task.name} task's default for it, above its ImageNet size {spec.default_size}"
    return (f"Image size: {size} px, the default of {spec.name} ({why}); pass --image-size to match "
            f"your images (compute grows with its square).")


# Images whose typical short side is upsampled more than this to the input size: a warning.
UPSAMPLE_WARNING = 1.5


def upsampling_warning(spec: BackboneSpec, image_size: int, median_side: int | None) -> str | None:
    """A warning when the images (median short side, from the data check) are much smaller than
    ``image_size``: upsampled pixels add compute, not detail. None otherwise.

    Example:
        >>> upsampling_warning(get_backbone("mobilenet_0.25"), 224, 128)
        'Warning: the images are small for 224 px (median short side 128 px, upsampled 1.8x): ...'
    """
    if not median_side:
        return None
    suggested = max(int(median_side), spec.min_size)
    if median_side * UPSAMPLE_WARNING >= image_size or suggested >= image_size:
        return None
    cost = (image_size / suggested) ** 2
    return (f"Warning: the images are small for {image_size} px (median short side {median_side} px, upsampled "
            f"{image_size / median_side:.1f}x): each step costs ~{cost:.{0 if cost >= 10 else 1}f}x what it "
            f"would at --image-size {suggested}, for pixels that add no detail. Consider --image-size {suggested}.")


def check_out_dir(out_dir: str | Path, data_sources=()) -> None:
    """A ``TransferError`` when ``out_dir`` cannot be a new run folder (checked before any work): it
    already holds a run, is a file, is not empty, or is, holds or lies inside a ``data_sources``
    path (the ``--data`` / ``--val-data`` strings).

    Example:
        >>> check_out_dir("runs/flowers", data_sources=["flowers/"])
    """
    from transfer.core.artifacts import MARKER, check_outside, data_paths
    from transfer.core.atomic import staging_entries

    what = "--out"
    flags = ("--data", "--val-data")
    check_outside(out_dir, [(p, f"the training data ({flags[min(i, 1)]})") for i, s in enumerate(data_sources)
                            for p in data_paths(s)], what=what)
    run = RunDir(out_dir)
    if run.config_file.exists():
        raise TransferError(
            f"{run.root} already holds a training run.",
            fix="Choose a new --out folder (or delete the old run first).",
        )
    if run.root.exists() and not run.root.is_dir():
        raise TransferError(f"--out {run.root} is a file, not a folder.", fix="Choose a folder path.")
    # Only our marker (a run killed before its run.json), staging files of a write (another worker's chief
    # starting the same run) or nothing: a run never mixes with other files.
    held = sorted(set(os.listdir(run.root)) - {MARKER} - {p.name for p in staging_entries(run.root)}
                  ) if run.root.is_dir() else []
    if held:
        shown = ", ".join(f"'{n}'" for n in held[:3]) + (f" and {len(held) - 3} more" if len(held) > 3 else "")
        raise TransferError(
            f"{what} {run.root} is not empty and holds no training run (it holds {shown}).",
            fix="transfer train writes into a new or empty folder: choose another --out (e.g. runs/NAME).",
        )


def feature_cache_dir(feature_cache: str | Path | bool) -> str | None:
    if feature_cache is True:
        from transfer.engine.feature_cache import default_cache_dir

        return str(default_cache_dir())
    return str(feature_cache) if feature_cache else None


def prepare_run_dir(run: RunDir, data_sources=()) -> None:
    """Check ``run.root`` (``check_out_dir``), create it and mark it as a run (``transfer.core.artifacts``)."""
    from transfer.core.artifacts import RUN_ENTRIES, write_marker

    check_out_dir(run.root, data_sources)
    run.root.mkdir(parents=True, exist_ok=True)
    write_marker(run.root, "run", RUN_ENTRIES)


def split_record(data: DataSplit, task) -> dict[str, Any]:
    """split.json: the run's train and val files with their targets (``task.target_to_json``)."""
    def files(samples):
        if samples.encoded is not None:
            return None  # in-memory data (TFDS): reloaded from the data source
        return [{"path": s, "target": task.target_to_json(t)} for s, t in zip(samples.sources, samples.targets)]

    return {"origin": data.origin, "class_names": list(data.class_names), "train": files(data.train),
            "val": files(data.val), "num_train": len(data.train), "num_val": len(data.val)}


def samples_from_record(rows: list[dict[str, Any]], config: dict[str, Any], task) -> Samples:
    """split.json rows back to ``Samples`` with the run's class names."""
    targets = tuple(task.target_from_json(r["target"], config) for r in rows)
    return Samples(tuple(r["path"] for r in rows), targets, tuple(config["class_names"]),
                   bool(config.get("multi_label")))


def reload_split(run: RunDir, config: dict[str, Any], recipe, task) -> DataSplit:
    """The exact train/val samples of a run (from split.json, or its TFDS source)."""
    record = run.split()
    if record.get("train") is not None and record.get("val") is not None:
        return DataSplit(samples_from_record(record["train"], config, task),
                         samples_from_record(record["val"], config, task), record.get("origin", ""))
    data = task.load_data(config["data_source"], val_source=config.get("val_data_source"), seed=recipe.seed)
    if (len(data.train), len(data.val)) != (config["num_train"], config["num_val"]):
        raise TransferError(
            f"The data at {config['data_source']} no longer matches the run "
            f"({len(data.train)}/{len(data.val)} images, the run had {config['num_train']}/{config['num_val']}).",
            fix="Restore the data, or start a new run.",
        )
    return data


def transfer_version() -> str:
    from transfer import __version__

    return __version__
