"""The segmenter's logits -> class masks (and probabilities) at each image's ORIGINAL resolution.

One function for evaluation (``transfer.tasks.segment.evaluation``) and the export's
graph (``SegmentTask.postprocess``): the softmax is mapped back by the run's
``transfer.core.resize.ResizePolicy`` (a letterbox's padding cut off, then
bilinear to the image's own height and width, the geometry of the resize that
made the input), then argmax. TF ops only.

Example:
    >>> masks_at_original(tf.zeros([2, 8, 8, 3]), tf.constant([[20, 10], [5, 30]]))["mask"].shape
    TensorShape([2, 20, 30])
"""

from __future__ import annotations

from typing import Any


def probabilities_at(logits, height, width, resize=None):
    """One image's logits ``[S, S, C]`` -> float32 softmax ``[height, width, C]`` mapped back by
    ``resize`` (the run's ``ResizePolicy``; default stretch): ``probabilities_to_original``."""
    import tensorflow as tf

    from transfer.core.resize import ResizePolicy

    probs = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
    return (resize or ResizePolicy()).probabilities_to_original(probs, height, width)


def masks_at_original(logits, sizes, *, probabilities: bool = False, resize=None) -> dict[str, Any]:
    """Logits ``[N, S, S, C]`` and original ``(height, width)`` ``[N, 2]`` -> ``{"mask": uint8 [N, H, W],
    "height", "width": int32 [N]}`` (+ ``"probabilities"`` float32 ``[N, H, W, C]``), H/W the largest
    height and width, each image padded with 0 beyond its own. ``resize``: the run's
    ``ResizePolicy`` (``ResizePolicy.from_config(config)``; default stretch).

    Images are resized one at a time (``parallel_iterations=1``), so memory holds one image's
    ``height x width x C`` probabilities, whatever the batch. TF ops only: runs in the export.

    Example:
        >>> masks_at_original(tf.zeros([2, 8, 8, 3]), tf.constant([[20, 10], [5, 30]]))["mask"].shape
        TensorShape([2, 20, 30])
    """
    import tensorflow as tf

    sizes = tf.cast(sizes, tf.int32)
    height, width = sizes[:, 0], sizes[:, 1]
    top_h = tf.maximum(tf.reduce_max(height), 0)  # an empty batch's max is the smallest int
    top_w = tf.maximum(tf.reduce_max(width), 0)
    classes = tf.shape(logits)[-1]

    def one(args):
        image_logits, size = args
        probs = probabilities_at(image_logits, size[0], size[1], resize)
        pads = [[0, top_h - size[0]], [0, top_w - size[1]]]
        mask = tf.pad(tf.cast(tf.argmax(probs, axis=-1), tf.uint8), pads)
        if not probabilities:
            return mask
        return mask, tf.pad(probs, pads + [[0, 0]])

    signature = tf.TensorSpec([None, None], tf.uint8)
    if probabilities:
        signature = (signature, tf.TensorSpec([None, None, None], tf.float32))

    def run():
        return tf.map_fn(one, (logits, sizes), fn_output_signature=signature, parallel_iterations=1)

    def empty():
        mask = tf.zeros([0, top_h, top_w], tf.uint8)
        return (mask, tf.zeros([0, top_h, top_w, classes], tf.float32)) if probabilities else mask

    result = tf.cond(tf.shape(logits)[0] > 0, run, empty)
    out = {"height": height, "width": width}
    if probabilities:
        out["mask"], out["probabilities"] = result
    else:
        out["mask"] = result
    return out
