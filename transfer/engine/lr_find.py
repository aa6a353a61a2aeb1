"""Learning-rate finder: train briefly with an exponentially growing rate and watch the loss.

The loss falls once the rate is large enough to make progress and blows up
once it is too large; a good peak rate sits a little below the bottom of the
curve (Smith, "Cyclical Learning Rates", 2017; fastai's ``lr_find``). The
model's weights are restored afterwards, so the probe costs time but leaves
no trace; its own optimizer is used, so the model's compiled optimizer (and
its state) is not touched.

``transfer.tasks.classify.lr_find.prepare_lr_find`` sets a sweep up as ``transfer train`` would train one
recipe stage (data, model, trainable layers, optimizer, loss, class weights);
``find_learning_rate`` is the sweep itself, for any model and dataset.

Example:
    >>> lrs, losses, suggestion = find_learning_rate(model, train_ds, steps=100)
    >>> plot_lr_find(lrs, losses, suggestion, "runs/flowers/lr_find.png")
    >>> result = prepare_lr_find("flowers/", image_size=128, stage="finetune").run()
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from transfer.core.errors import TransferError

log = logging.getLogger(__name__)

# Stop once the smoothed loss exceeds this many times its best value: beyond
# that the model is diverging and the rest of the sweep only wastes time.
DIVERGENCE_FACTOR = 4.0
SMOOTHING = 0.9  # exponential smoothing of the loss curve (bias-corrected)


def find_learning_rate(
    model,
    dataset,
    *,
    min_lr: float = 1e-6,
    max_lr: float = 1.0,
    steps: int = 100,
    loss=None,
    optimizer: str = "adam",
    weight_decay: float | None = None,
    class_weight: dict[int, float] | None = None,
    progress: Callable[[int, int, float, float], None] | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Sweep the learning rate from ``min_lr`` to ``max_lr`` over ``steps`` training steps.

    ``dataset`` yields ``(images, targets)`` batches (e.g. ``make_dataset(...,
    training=True)``; it is repeated if shorter than ``steps``). What trains
    is what is trainable in ``model`` now (set a stage's layers first). The
    loss defaults to the model's compiled loss, else categorical
    cross-entropy. ``optimizer`` is ``"adam"``, ``"adamw"`` or ``"sgd"``
    (momentum 0.9, as training uses); ``weight_decay`` is AdamW's (default:
    Keras's), never applied to biases and normalization weights, as in
    training. ``class_weight`` (``{class index:
    weight}``, single-label targets) weighs each example's loss as Keras
    ``fit(class_weight=...)`` does. ``progress``, if given, is called after
    every step with ``(step, steps, learning rate, smoothed loss)``, step
    counting from 1; a sweep that stops early (divergence) stops calling it
    before ``steps``. Returns ``(learning rates, smoothed losses, suggested
    rate)`` (see ``suggest_learning_rate``). The model's weights (BatchNorm
    statistics included) are restored on return.

    Example:
        >>> lrs, losses, lr = find_learning_rate(model, train_ds, min_lr=1e-6, max_lr=1, steps=100)
        >>> 1e-6 <= lr <= 1
        True
    """
    import keras
    import tensorflow as tf

    from transfer.engine.precision import with_loss_scaling
    from transfer.engine.schedules import make_optimizer

    check_sweep(min_lr, max_lr, steps)
    if not model.trainable_variables:
        raise TransferError(
            "Nothing in the model is trainable.", fix="Make the head (or a stage's layers) trainable first."
        )
    loss_fn = loss or getattr(model, "loss", None) or keras.losses.CategoricalCrossentropy()
    if isinstance(loss_fn, str):
        loss_fn = keras.losses.get(loss_fn)
    saved = [np.array(w) for w in model.get_weights()]
    lr_variable = tf.Variable(min_lr, dtype=tf.float32, trainable=False)
    # The optimizer training builds (SGD momentum 0.9; AdamW decay off biases and
    # normalization weights). A callable rate is read at every step, so one
    # compiled step serves the whole sweep.
    opt = make_optimizer(optimizer, lambda: lr_variable,
                         weight_decay=0.004 if weight_decay is None else weight_decay, model=model)
    opt = with_loss_scaling(opt, model)
    train_step = _sweep_step(model, loss_fn, opt, class_weight)
    try:
        lrs, losses, best = _sweep(dataset, train_step, lr_variable, min_lr, max_lr, steps, progress)
    finally:
        model.set_weights(saved)
    if len(losses) < 2:
        raise TransferError(
            "The learning-rate sweep diverged at once (loss not finite).",
            fix=f"Lower min_lr (now {min_lr:g}) or check the data and targets.",
        )
    lrs_array, losses_array = np.asarray(lrs), np.asarray(losses)
    suggestion = max(suggest_learning_rate(lrs_array, losses_array), min_lr)
    log.info("lr-find: %d steps, lowest loss %.4f, suggested %.3g", len(lrs), best, suggestion)
    return lrs_array, losses_array, suggestion


def _sweep_step(model, loss_fn, opt, class_weight: dict[int, float] | None):
    """One compiled training step ``(x, y) -> loss`` with ``opt``, examples weighed by ``class_weight``."""
    import keras
    import tensorflow as tf

    mixed16 = isinstance(opt, keras.optimizers.LossScaleOptimizer)
    weights_per_class = None
    if class_weight:
        num_classes = int(model.output_shape[-1])
        weights_per_class = tf.constant([float(class_weight.get(i, 1.0)) for i in range(num_classes)], tf.float32)

    def weighted_loss(y, scores, sample_weight):
        if isinstance(loss_fn, keras.losses.Loss):
            return loss_fn(y, scores, sample_weight=sample_weight)
        # A plain loss function returns per-example losses and takes no sample_weight.
        return tf.reduce_mean(tf.cast(loss_fn(y, scores), tf.float32) * sample_weight)

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            scores = model(x, training=True)
            if weights_per_class is None:
                value = loss_fn(y, scores)
            else:
                # Keras fit's class_weight: each example's loss weighs its class's weight.
                value = weighted_loss(y, scores, tf.gather(weights_per_class, tf.argmax(y, -1)))
            value = tf.cast(value, tf.float32)
            scaled = opt.scale_loss(value) if mixed16 else value
        grads = tape.gradient(scaled, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return value

    return train_step


def _sweep(dataset, train_step, lr_variable, min_lr: float, max_lr: float, steps: int,
           progress: Callable[[int, int, float, float], None] | None) -> tuple[list, list, float]:
    """The rates tried, their smoothed (bias-corrected) losses and the lowest of them; stops at a
    loss that is not finite or has grown past ``DIVERGENCE_FACTOR`` times the lowest."""
    ratio = max_lr / min_lr
    lrs, losses = [], []
    smoothed, best = 0.0, math.inf
    for step, (x, y) in enumerate(dataset.repeat().take(steps)):
        lr = min_lr * ratio ** (step / (steps - 1))
        lr_variable.assign(lr)
        value = float(train_step(x, y))
        if not math.isfinite(value):
            break
        smoothed = SMOOTHING * smoothed + (1 - SMOOTHING) * value
        debiased = smoothed / (1 - SMOOTHING ** (step + 1))
        lrs.append(lr)
        losses.append(debiased)
        best = min(best, debiased)
        if progress is not None:
            progress(step + 1, steps, lr, debiased)
        if step > 5 and debiased > DIVERGENCE_FACTOR * best:
            break
    return lrs, losses, best


@dataclass(frozen=True)
class SweepResult:
    """A finished sweep: the curve, the suggested peak rate and the stage it is for.

    ``steps`` is the number of steps asked for; fewer were run when the loss diverged.
    """

    learning_rates: np.ndarray
    losses: np.ndarray
    suggestion: float
    stage: str
    steps: int

    def notes(self) -> list[str]:
        """What to know before trusting the suggestion (an early stop, a flat curve), one line each."""
        lrs, losses = self.learning_rates, self.losses
        notes = []
        if len(lrs) < self.steps:
            notes.append(f"Stopped after {len(lrs)} of {self.steps} steps: the loss diverged at lr {lrs[-1]:.2e}.")
        if float(losses.max() - losses.min()) < 0.01 * float(losses.max()):
            notes.append(
                f"Warning: the loss stayed flat ({losses.min():.4f}..{losses.max():.4f}) over the whole sweep, so the "
                "suggestion means little. Try more --steps or a wider range; with random weights "
                '(--weights none) the backbone must train (trainable = "all").'
            )
        return notes


def check_sweep(min_lr: float, max_lr: float, steps: int) -> None:
    """Raise ``TransferError`` unless ``0 < min_lr < max_lr`` and ``steps >= 5`` (checked before any work).

    Example:
        >>> check_sweep(1e-6, 1.0, 100)
    """
    if not (
        isinstance(min_lr, (int, float)) and isinstance(max_lr, (int, float))
        and math.isfinite(min_lr) and math.isfinite(max_lr) and 0 < min_lr < max_lr
    ):
        raise TransferError(
            f"Learning-rate range {min_lr!r}..{max_lr!r} is empty or not positive.",
            fix="Use 0 < min_lr < max_lr, e.g. 1e-6 and 1.",
        )
    if not (isinstance(steps, int) and not isinstance(steps, bool) and steps >= 5):
        raise TransferError(
            f"steps={steps!r} is too few for a learning-rate sweep.", fix="Use 5 or more (100 is typical)."
        )


def suggest_learning_rate(lrs, losses) -> float:
    """A peak learning rate read off a finder curve.

    When the loss clearly falls (by 10% or more: a new head, training from
    scratch), a tenth of the rate at the lowest loss (the classic rule: the
    minimum itself is already at the edge of divergence). When it stays flat
    and then rises (fine-tuning a pretrained network whose head is trained:
    no rate makes the loss fall within a few steps), the largest rate before
    the loss rises 10% above its lowest value. The first tenth of the curve
    is skipped: the smoothed loss is still noisy there.

    Example:
        >>> lrs = np.geomspace(1e-6, 1, 61)
        >>> losses = 2 - np.exp(-((np.log10(lrs) + 2) ** 2))   # lowest at 1e-2
        >>> f"{suggest_learning_rate(lrs, losses):.0e}"
        '1e-03'
    """
    lrs, losses = np.asarray(lrs, float), np.asarray(losses, float)
    start = len(losses) // 10
    lowest = start + int(np.argmin(losses[start:]))
    if losses[lowest] < 0.9 * losses[start]:
        return float(lrs[lowest] / 10.0)
    above = np.nonzero(losses[lowest:] > 1.1 * losses[lowest])[0]
    rise = lowest + int(above[0]) if above.size else len(losses)
    return float(lrs[max(rise - 1, lowest)])


def plot_lr_find(lrs, losses, suggestion: float | None, path: str | os.PathLike):
    """Write the loss-vs-learning-rate curve (log x axis) as a PNG at ``path``; returns the path.

    Example:
        >>> plot_lr_find(lrs, losses, 3e-4, "lr_find.png")
        PosixPath('lr_find.png')
    """
    import io
    from pathlib import Path

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from transfer.core.atomic import atomic_write_bytes

    # Figure + Agg canvas, not pyplot: no global state, no GUI backend, thread-safe.
    figure = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot(lrs, losses, color="tab:blue")
    axes.set_xscale("log")
    axes.set_xlabel("learning rate")
    axes.set_ylabel("loss (smoothed)")
    axes.set_title("Learning-rate finder")
    finite = np.asarray(losses)[np.isfinite(losses)]
    if finite.size:
        # Leave out the divergent tail so the useful part of the curve is readable.
        low, high = float(finite.min()), float(min(finite.max(), finite[0] * 1.5, finite.min() * DIVERGENCE_FACTOR))
        axes.set_ylim(low - 0.05 * (high - low + 1e-9), high + 0.05 * (high - low + 1e-9))
    if suggestion is not None:
        axes.axvline(suggestion, color="tab:red", linestyle="--", label=f"suggested {suggestion:.2g}")
        axes.legend()
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return atomic_write_bytes(Path(path), buffer.getvalue())
