"""Image classification (single- and multi-label): model, task, evaluation.

- ``model``: ``build_classifier``, loss and metrics;
- ``task``: the ``Task`` the engine drives;
- ``evaluation``: ``EvalReport`` (accuracy, per-class scores, confusion matrix).
"""
