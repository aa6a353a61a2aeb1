"""The classification sources ``transfer.data.load_data`` reads.

- ``folder``: one folder per class (optionally ``train/``, ``val/``);
- ``csvfile``: CSV lists of images and labels;
- ``tfds``: TensorFlow Datasets (``tfds:NAME``).

Box sources live in ``transfer.data.boxes``, mask sources in ``transfer.data.masks``.
"""
