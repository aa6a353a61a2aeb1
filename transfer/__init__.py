"""transfer: fine-tune pretrained Keras CNNs on your own images and export models
that serve without the training code, for four tasks: classify, localize (one
box per image), detect (every box) and segment (a class for every pixel).

The public API is re-exported here lazily, so ``import transfer`` is fast and
silent (TensorFlow loads on first use). The same steps serve every task:
``load_data(source, task=...)``, ``train(split, out, task=...)``,
``evaluate_run(run)`` (a report with ``table()`` and ``to_dict()``),
``export_run(run, out)``, ``load_export(export)`` (the task's reader, with
``predict_files``, ``predict_images`` and ``draw``).

Example:
    >>> import transfer
    >>> split = transfer.load_data("flowers/")
    >>> result = transfer.train(split, "runs/flowers", backbone="mobilenet_0.25", image_size=128)
    >>> print(transfer.evaluate_run("runs/flowers").table())
    >>> transfer.export_run("runs/flowers", "exports/flowers")
    >>> reader = transfer.load_export("exports/flowers")   # an ExportedClassifier
    >>> reader.predict_files(["rose.jpg"])
    >>> reader.draw("rose.jpg", out="drawn/rose.png")
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "TransferError": "transfer.core.errors",
    "BackboneSpec": "transfer.backbones",
    "get_backbone": "transfer.backbones",
    "list_backbones": "transfer.backbones",
    "build_backbone": "transfer.backbones.weights",
    "import_weights": "transfer.backbones.weights_import",
    "Samples": "transfer.data.samples",
    "DataSplit": "transfer.data.samples",
    "load_data": "transfer.api",
    "get_task": "transfer.tasks",
    "check_data": "transfer.data.doctor",
    "DataReport": "transfer.data.doctor",
    "make_dataset": "transfer.data.pipelines.images",
    "Recipe": "transfer.core.recipe",
    "Stage": "transfer.core.recipe",
    "build_classifier": "transfer.tasks.classify.model",
    "train": "transfer.engine.train",
    "resume": "transfer.engine.train",
    "TrainResult": "transfer.engine.train",
    "choose_distribution": "transfer.engine.distribute",
    "Distribution": "transfer.engine.distribute",
    "find_learning_rate": "transfer.engine.lr_find",
    "extract_features": "transfer.engine.feature_cache",
    "RunDir": "transfer.engine.run",
    "evaluate_run": "transfer.engine.evaluate",
    "EvalReport": "transfer.tasks.classify.evaluation",
    "LocalizeReport": "transfer.tasks.localize.evaluation",
    "DetectionReport": "transfer.tasks.detect.evaluation",
    "SegmentReport": "transfer.tasks.segment.evaluation",
    "export_model": "transfer.serving.export",
    "export_run": "transfer.serving.export",
    "load_export": "transfer.serving.load",
    "ExportedModel": "transfer.serving.reader",
    "ExportedClassifier": "transfer.tasks.classify.reader",
    "ExportedLocalizer": "transfer.tasks.localize.reader",
    "ExportedDetector": "transfer.tasks.detect.reader",
    "ExportedSegmenter": "transfer.tasks.segment.reader",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'transfer' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__():
    return __all__
