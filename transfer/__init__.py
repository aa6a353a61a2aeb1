"""transfer: fine-tune pretrained Keras CNNs on your own images and export models
that serve without the training code.

The public API is re-exported here lazily, so ``import transfer`` is fast and
silent (TensorFlow loads on first use).

Example:
    >>> import transfer
    >>> split = transfer.load_data("flowers/")
    >>> result = transfer.train(split, "runs/flowers", backbone="mobilenet_0.25", image_size=128)
    >>> transfer.export_run("runs/flowers", "exports/flowers")
    >>> transfer.ExportedClassifier.load("exports/flowers").predict_files(["rose.jpg"])
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "TransferError": "transfer.errors",
    "BackboneSpec": "transfer.backbones",
    "get_backbone": "transfer.backbones",
    "list_backbones": "transfer.backbones",
    "build_backbone": "transfer.weights",
    "import_weights": "transfer.weights_import",
    "Samples": "transfer.data.samples",
    "DataSplit": "transfer.data.samples",
    "load_data": "transfer.data",
    "check_data": "transfer.data.check",
    "DataReport": "transfer.data.check",
    "make_dataset": "transfer.data.pipeline",
    "Recipe": "transfer.recipe",
    "Stage": "transfer.recipe",
    "build_classifier": "transfer.tasks.classify",
    "train": "transfer.train",
    "resume": "transfer.train",
    "TrainResult": "transfer.train",
    "choose_distribution": "transfer.distribute",
    "Distribution": "transfer.distribute",
    "find_learning_rate": "transfer.lr_find",
    "extract_features": "transfer.features",
    "RunDir": "transfer.run",
    "evaluate_run": "transfer.evaluate",
    "EvalReport": "transfer.evaluate",
    "export_model": "transfer.export",
    "export_run": "transfer.export",
    "ExportedClassifier": "transfer.predict",
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
