"""Single-object localization: one box (and class) per image.

- ``task``: the ``Task`` the engine drives; ``model``: the box head, loss and metrics;
- ``evaluation``: IoU in the original pixels; ``reader``: ``ExportedLocalizer``.
"""
