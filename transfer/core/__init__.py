"""The foundation every layer stands on; it imports nothing else of ``transfer``.

- ``errors``: ``TransferError``, the one exception for mistakes a user can fix;
- ``atomic`` and ``artifacts``: atomic writes, and which folders ``transfer`` owns;
- ``regular_files``, ``imagesize``, ``orientation``: reading files safely,
  an image's size from its header, EXIF frames;
- ``imageops`` and ``boxops``: image decoding and box geometry in TensorFlow;
- ``resize``: the ``ResizePolicy`` (stretch or letterbox) every step reads from the run;
- ``figures``: evaluation figures as PNG bytes;
- ``recipe``: the training recipe (``Recipe``, ``Stage``).
"""
