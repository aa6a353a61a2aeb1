"""Training a classifier's head on cached backbone features (the linear probe of LP-FT).

``fit_head_on_features`` trains the classifier's head (dropout -> "scores"
Dense) on features from ``transfer.engine.feature_cache.extract_features``, which takes a
second or two instead of one backbone pass per epoch. The head is trained in
place: the small model it fits shares the classifier's own head layers, so
fine-tuning the whole classifier afterwards starts from the trained head
(linear probe, then fine-tune). It holds one more copy of the features (a
TensorFlow constant it samples batches from).

Example:
    >>> feats = extract_features(model, split.train, 128, views=3, augment=("flip", "zoom"))
    >>> val = extract_features(model, split.val, 128)[0]
    >>> history = fit_head_on_features(model, feats, targets_array(split.train), epochs=30,
    ...                                validation=(val, targets_array(split.val)))
"""

from __future__ import annotations

from typing import Sequence

import keras
import numpy as np

from transfer.engine.feature_cache import POOL_LAYER

HEAD_LAYERS = ("dropout", "scores")


def head_model(model):
    """A model ``features [D] -> scores`` made of ``model``'s own dropout and "scores" layers.

    Training it trains the classifier's head: the layers (and weights) are shared.

    Example:
        >>> head_model(classifier)(np.zeros((1, 256), "float32")).shape
        TensorShape([1, 5])
    """
    pool = model.get_layer(POOL_LAYER)
    inputs = keras.Input(pool.output.shape[1:], name="features")
    x = inputs
    for name in HEAD_LAYERS:
        x = model.get_layer(name)(x)
    return keras.Model(inputs, x, name=f"{model.name}_head")


def fit_head_on_features(
    model,
    features: np.ndarray,
    targets: np.ndarray,
    *,
    epochs: int,
    optimizer=None,
    batch_size: int = 32,
    label_smoothing: float = 0.0,
    validation: tuple[np.ndarray, np.ndarray] | None = None,
    callbacks: Sequence = (),
    initial_epoch: int = 0,
    seed: int = 0,
    verbose: int = 0,
    class_weight: dict[int, float] | None = None,
):
    """Train ``model``'s head on cached ``features``; returns the Keras ``History``.

    ``features`` is ``[views, N, D]`` (from ``extract_features``) or ``[N, D]``;
    ``targets`` one-hot/multi-hot ``[N, C]`` (``transfer.data.pipelines.images.targets_array``).
    Each epoch shows every image once, in one of its views picked at random,
    so an epoch has as many steps as an epoch through the whole model.
    ``optimizer`` defaults to Adam at 1e-3. ``validation`` is ``(val
    features [N, D] or [1, N, D], val targets)``: its metrics equal those of
    the whole classifier on those images, since the frozen backbone adds
    nothing. ``callbacks`` see the whole classifier as ``self.model``, so a
    checkpoint callback saves the classifier, not the head alone (with
    callbacks, the classifier is compiled with ``optimizer``), and a callback
    that stops the classifier's training (early stopping) stops the head's.
    ``class_weight`` is Keras's ``{class index: weight}``.

    Example:
        >>> fit_head_on_features(model, feats, y, epochs=30, optimizer=make_optimizer(
        ...     "adamw", warmup_cosine(1e-3, 30 * 108)), validation=(val_feats, val_y))
    """
    features, targets = _checked_features(features, targets)
    head = head_model(model)
    optimizer = optimizer or keras.optimizers.Adam(1e-3)
    _compile_head(model, head, optimizer, label_smoothing, with_classifier=bool(callbacks))
    return head.fit(
        _view_sampler(features, targets, batch_size, seed),
        epochs=initial_epoch + epochs,
        initial_epoch=initial_epoch,
        validation_data=None if validation is None else _validation_batches(validation),
        callbacks=[_OnModel(c, model) for c in callbacks],
        verbose=verbose,
        shuffle=False,  # the sampler shuffles
        class_weight=class_weight,
    )


def _checked_features(features, targets) -> tuple[np.ndarray, np.ndarray]:
    """``features`` as float32 ``[views, N, D]`` and ``targets`` as float32 ``[N, C]``; a ValueError
    when their shapes do not match."""
    features = np.asarray(features, np.float32)
    if features.ndim == 2:
        features = features[None]
    targets = np.asarray(targets, np.float32)
    if features.ndim != 3 or features.shape[1] != len(targets):
        raise ValueError(
            "Expected features [views, N, D] (or [N, D]) and targets [N, C] with the same N. "
            f"Received: features {features.shape}, targets {targets.shape}"
        )
    return features, targets


def _compile_head(model, head, optimizer, label_smoothing: float, *, with_classifier: bool) -> None:
    """Compile ``head`` with the classifier's loss and metrics (and ``model`` too when callbacks will see it)."""
    from transfer.tasks.classify.model import loss_and_metrics

    multi_label = model.get_layer(HEAD_LAYERS[-1]).activation.__name__ == "sigmoid"
    if with_classifier:
        # Callbacks see the classifier; some (TensorBoard) read its optimizer's
        # step count, so it is compiled with the very optimizer the head uses.
        loss, metrics = loss_and_metrics(multi_label, label_smoothing)
        model.compile(optimizer=optimizer, loss=loss, metrics=metrics)
    loss, metrics = loss_and_metrics(multi_label, label_smoothing)
    head.compile(
        optimizer=optimizer,
        loss=loss,
        metrics=metrics,
        # A step on a [32, D] batch takes microseconds; running many per call
        # removes the per-step Python overhead that would otherwise dominate.
        steps_per_execution=64,
    )


def _validation_batches(validation: tuple[np.ndarray, np.ndarray]):
    """``(val features [N, D] or [1, N, D], val targets)`` as batches of 256."""
    import tensorflow as tf

    val_x = np.asarray(validation[0], np.float32)
    val_x = val_x[0] if val_x.ndim == 3 else val_x
    return tf.data.Dataset.from_tensor_slices((val_x, np.asarray(validation[1], np.float32))).batch(256)


def _view_sampler(features: np.ndarray, targets: np.ndarray, batch_size: int, seed: int):
    """Batches of ``(features of one random view per image, targets)``, reshuffled each epoch."""
    import tensorflow as tf

    views, n, _ = features.shape
    table = tf.constant(features)
    labels = tf.constant(targets)
    order = tf.data.Dataset.range(n).shuffle(n, seed=seed, reshuffle_each_iteration=True).batch(batch_size)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

    def gather(index, pair):
        view = tf.random.stateless_uniform(tf.shape(index), pair, 0, views, dtype=tf.int64)
        return tf.gather_nd(table, tf.stack([view, index], axis=1)), tf.gather(labels, index)

    return tf.data.Dataset.zip((order, seeds)).map(gather).prefetch(2)


class _OnModel(keras.callbacks.Callback):
    """Forwards a callback's hooks, with the whole classifier as its ``self.model``."""

    def __init__(self, callback, model):
        super().__init__()
        self._callback = callback
        self._classifier = model
        for name in dir(keras.callbacks.Callback):
            if name.startswith("on_") and name != "on_epoch_end":
                setattr(self, name, getattr(callback, name))

    def set_model(self, model):
        self._head = model
        self._callback.set_model(self._classifier)

    def set_params(self, params):
        self._callback.set_params(params)

    def on_epoch_end(self, epoch, logs=None):
        self._callback.on_epoch_end(epoch, logs)
        # Keras checks the model being fitted (the head) for a stop request.
        if getattr(self._classifier, "stop_training", False):
            self._head.stop_training = True
