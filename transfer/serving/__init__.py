"""Serving: exports that answer without the training code, and reading them back.

- ``export``: ``export_model``/``export_run`` write a SavedModel (+ ``model.keras``);
- ``signatures``: the names of an export's signatures and outputs;
- ``parity``: checks an export against its Keras model in both runtimes;
- ``reader``: the exported-model readers' common part (``ExportedModel``);
- ``load``: ``load_export``, the reader of an export's own task (through the task registry);
- ``frames``: answers in the frame a viewer shows (EXIF orientation); ``drawing``: drawing them.
"""
