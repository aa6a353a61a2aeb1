"""``tf.data`` pipelines: samples -> decoded, resized, augmented batches.

- ``images``: images and class targets (``make_dataset``);
- ``boxes`` and ``box_augment``: images with their boxes, augmented together;
- ``masks``: images with their masks;
- ``cache_policy``: where decoded images are cached (memory, disk, none).
"""
