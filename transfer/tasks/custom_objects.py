"""The one place that registers every custom Keras object a saved model may hold.

Checkpoints and exports of any task hold objects Keras must find by name when
it loads them: the preprocessing layer (``transfer.backbones.layers``), the per-layer
rate optimizers (``transfer.engine.rates``) and each task's own layers, losses and
metrics (registered in its module with ``keras.saving.register_keras_serializable``).
Resume, evaluate, export and lr-find call ``register_custom_objects()`` before
``keras.saving.load_model``, so they load any task's model.

Example:
    >>> register_custom_objects()
    >>> model = keras.saving.load_model("runs/raccoon/checkpoints/best.keras")
"""

from __future__ import annotations

import importlib


def register_custom_objects() -> None:
    """Import every module that registers custom Keras objects (idempotent, cheap after the first call)."""
    from transfer.tasks import TASKS

    importlib.import_module("transfer.backbones.layers")
    importlib.import_module("transfer.engine.rates")
    for target in TASKS.values():
        importlib.import_module(target.split(":")[0])
