"""The segmenter's loss: cross-entropy, focal and soft Dice on per-pixel logits, alone or summed.

``y_true``: integer class masks ``[N, H, W]`` (Keras may hand them over as
floats; they are cast back), ``IGNORE_VALUE`` (255) where a pixel is not
scored; ``y_pred``: float logits ``[N, H, W, C]`` (softmax over ``C``).
Ignored pixels, and labels outside ``0..C-1``, contribute nothing to any term.

Terms (``kind`` joins them with "+", e.g. "ce+dice", each weighted 1):

- ``"ce"``: softmax cross-entropy, from ``log_softmax`` (stable for any
  logits), averaged over the batch's scored pixels.
- ``"focal"``: ``-(1 - p_t) ** gamma * log(p_t)`` (Lin et al. 2017; no alpha,
  ``class_weights`` play its part), averaged like "ce".
- ``"dice"``: soft Dice (Milletari et al. 2016) per class over the whole batch
  as one volume (as segmentation_models does: per-image Dice is noisy for a
  class that covers a few pixels of one image), in the smoothed form
  ``dice_c = (2 * sum(p_c * g_c) + 1) / (sum(p_c) + sum(g_c) + 1)`` with
  un-squared sums; the loss is ``1 - dice_c`` averaged over the classes
  *present*: in the batch's true mask or in its argmax prediction, as mIoU
  counts them. A class nobody has nor predicts would score ~1 and only dilute
  the mean; a class predicted but absent scores ``1 / (mass + 1)``, which
  pushes its probability mass down.

``class_weights`` (length ``C``) weigh each pixel's CE/focal term by its true
class and each class's Dice term, as Keras's ``class_weight`` does: the
average still divides by the pixel (class) count, so all-ones weights give the
unweighted loss and weights ``k`` give ``k`` times it.

Example:
    >>> loss = SegmentationLoss("ce+dice", class_weights=[0.5, 2.0])
    >>> model.compile(optimizer="adam", loss=loss, metrics=[SegmentIoU(2), PixelAccuracy()])
    >>> loss.components(masks, logits)  # {"ce": ..., "dice": ...}, their sum is loss(masks, logits)
"""

from __future__ import annotations

from typing import Sequence

import keras
from keras import ops

from transfer.data.samples import IGNORE_VALUE
from transfer.engine.cross_replica import global_batch_sum, replicas_in_step

TERMS = ("ce", "focal", "dice")
# Laplace smoothing of the Dice ratio: finite for empty classes, negligible against
# a batch's thousands of pixels.
DICE_SMOOTH = 1.0
# Floor of (1 - p_t) in the focal term: keeps its gradient finite for gamma < 1 when p_t rounds to 1.
_FOCAL_FLOOR = 1e-7


def parse_kind(kind: str) -> tuple[str, ...]:
    """The terms of a loss ``kind``, e.g. ``"focal+dice"`` -> ``("focal", "dice")``.

    Example:
        >>> parse_kind(" CE + Dice ")
        ('ce', 'dice')
    """
    terms = tuple(t.strip().lower() for t in str(kind).split("+"))
    if not terms or any(t not in TERMS for t in terms) or len(set(terms)) != len(terms):
        raise ValueError(f"kind must be one of {TERMS} or several joined by '+' (e.g. 'ce+dice'). "
                         f"Received: kind={kind!r}")
    return terms


@keras.saving.register_keras_serializable(package="transfer")
class SegmentationLoss(keras.losses.Loss):
    """Sum of the ``kind`` terms (see the module) for int masks ``[N, H, W]`` and logits ``[N, H, W, C]``.

    Returns a scalar for the batch (Dice is a batch-level ratio, so there is
    no per-image value to weigh): ``sample_weight`` is not taken; give pixels
    ``IGNORE_VALUE`` to leave them out, or ``class_weights`` to weigh classes.
    In a step under a ``tf.distribute`` strategy it returns this replica's
    share, counts and Dice sums taken over the global batch
    (``transfer.engine.cross_replica``): the shares add up to the loss of the
    whole batch, as Keras's own losses do.

    Example:
        >>> SegmentationLoss("ce")(np.zeros((1, 2, 2)), np.zeros((1, 2, 2, 4)))  # log(4) = 1.386
    """

    def __init__(self, kind: str = "ce+dice", class_weights: Sequence[float] | None = None,
                 ignore_value: int = IGNORE_VALUE, focal_gamma: float = 2.0,
                 name: str = "segmentation_loss", **kwargs):
        super().__init__(name=name, **kwargs)
        self.terms = parse_kind(kind)
        self.kind = "+".join(self.terms)
        if class_weights is not None:
            class_weights = [float(w) for w in class_weights]
            if not class_weights or min(class_weights) < 0:
                raise ValueError(f"class_weights must be non-negative, one per class. "
                                 f"Received: class_weights={class_weights!r}")
        self.class_weights = class_weights
        self.ignore_value = int(ignore_value)
        if focal_gamma < 0:
            raise ValueError(f"focal_gamma must be >= 0. Received: focal_gamma={focal_gamma}")
        self.focal_gamma = float(focal_gamma)

    def components(self, y_true, y_pred) -> dict:
        """``{term: scalar}`` for each term of ``kind``; their sum is the loss."""
        logits = ops.cast(y_pred, "float32")
        num_classes = logits.shape[-1]
        labels = ops.cast(y_true, "int32")
        if len(labels.shape) == len(logits.shape):  # [N, H, W, 1] masks
            labels = ops.squeeze(labels, axis=-1)
        valid = (labels != self.ignore_value) & (labels >= 0) & (labels < num_classes)
        valid_f = ops.cast(valid, "float32")
        safe = ops.where(valid, labels, 0)
        weights = self._weights(num_classes)
        pixel_weight = valid_f if weights is None else valid_f * ops.take(weights, safe)
        log_probs = ops.log_softmax(logits, axis=-1)
        parts = {}
        if "ce" in self.terms or "focal" in self.terms:
            # The global batch's scored pixels: under a strategy each replica returns its share (its
            # pixels' sum over all of them), and Keras sums the replicas' gradients.
            count = ops.maximum(global_batch_sum(ops.sum(valid_f)), 1.0)
            log_p_true = ops.squeeze(ops.take_along_axis(log_probs, safe[..., None], axis=-1), axis=-1)
            if "ce" in self.terms:
                parts["ce"] = -ops.sum(pixel_weight * log_p_true) / count
            if "focal" in self.terms:
                modulation = ops.power(ops.maximum(1.0 - ops.exp(log_p_true), _FOCAL_FLOOR), self.focal_gamma)
                parts["focal"] = -ops.sum(pixel_weight * modulation * log_p_true) / count
        if "dice" in self.terms:
            parts["dice"] = self._dice(ops.exp(log_probs), safe, valid_f, num_classes, weights)
        return {term: parts[term] for term in self.terms}

    def _weights(self, num_classes: int):
        if self.class_weights is None:
            return None
        if len(self.class_weights) != num_classes:
            raise ValueError(f"class_weights has {len(self.class_weights)} weights for {num_classes} classes. "
                             f"Received: class_weights={self.class_weights!r}")
        return ops.convert_to_tensor(self.class_weights, "float32")

    @staticmethod
    def _dice(probs, labels, valid_f, num_classes: int, weights):
        mask = valid_f[..., None]
        truth = ops.one_hot(labels, num_classes) * mask
        probs = probs * mask
        axes = tuple(range(len(probs.shape) - 1))  # the batch and every pixel: one volume
        predicted = ops.one_hot(ops.argmax(probs, axis=-1), num_classes) * mask
        # The sums of the whole global batch (all-summed, with their gradient, under a strategy): the
        # ratio is the batch's, and each of the replicas returns 1 / replicas of it.
        intersection, probs_sum, truth_sum = global_batch_sum(
            [ops.sum(probs * truth, axis=axes), ops.sum(probs, axis=axes), ops.sum(truth, axis=axes)])
        predicted_sum = global_batch_sum(ops.stop_gradient(ops.sum(predicted, axis=axes)))  # no gradient
        dice = (2.0 * intersection + DICE_SMOOTH) / (probs_sum + truth_sum + DICE_SMOOTH)
        present = ops.cast((truth_sum + predicted_sum) > 0, "float32")
        per_class = (1.0 - dice) * present
        if weights is not None:
            per_class = per_class * weights
        return ops.sum(per_class) / ops.maximum(ops.sum(present), 1.0) / replicas_in_step()

    def call(self, y_true, y_pred):
        return sum(self.components(y_true, y_pred).values())

    def __call__(self, y_true, y_pred, sample_weight=None):
        # Keras's Loss.__call__ casts the int mask to float and reduces per-sample values;
        # this loss reads labels as ints and is already one scalar for the batch.
        if sample_weight is not None:
            raise ValueError("SegmentationLoss does not take sample_weight. Received: sample_weight="
                             f"{type(sample_weight).__name__}; set pixels to the ignore value to drop "
                             "them, or pass class_weights.")
        return self.call(y_true, y_pred)

    def get_config(self):
        return {**super().get_config(), "kind": self.kind, "class_weights": self.class_weights,
                "ignore_value": self.ignore_value, "focal_gamma": self.focal_gamma}
