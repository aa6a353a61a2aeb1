"""Serving: exports that answer without the training code, and reading them back.

- ``export``: ``export_model``/``export_run`` write a SavedModel (+ ``model.keras``);
- ``signatures``: the names of an export's signatures and outputs;
- ``parity``: checks an export against its Keras model in both runtimes;
- ``reader``: the exported-model readers' common part.
"""
