"""Keras 3's ``fit``/``evaluate`` made to work under MultiWorkerMirroredStrategy (a patch, applied once).

``transfer.engine.distribute`` applies it before it creates a multi-worker
strategy; every other strategy keeps Keras's own code.

Example:
    >>> patch_keras_for_multi_worker()  # idempotent
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)

_patch_lock = threading.Lock()
_patched = False


def patch_keras_for_multi_worker() -> None:
    """Make Keras 3's ``fit``/``evaluate`` work under MultiWorkerMirroredStrategy.

    Keras 3.15 fails there in two places (keras-team/keras#20585):
    ``_maybe_symbolic_build`` all-reduces a whole ``(x, y)`` batch structure
    ("Attempt to convert a value (PerReplica ...) with an unsupported type"),
    and ``reduce_per_replica`` averages scalar metrics with ``axis=0``
    ("Invalid reduction dimension 0 for input with 0 dimensions"). Both fixes
    apply only to a multi-worker MultiWorkerMirroredStrategy; anything else
    takes Keras's own code. Idempotent.
    """
    global _patched
    with _patch_lock:
        if _patched:
            return
        try:
            from keras.src.backend.tensorflow import trainer as tf_trainer

            original_build = tf_trainer.TensorFlowTrainer._maybe_symbolic_build
            original_reduce = tf_trainer.reduce_per_replica
            multi_worker = tf_trainer._collective_all_reduce_multi_worker
        except (ImportError, AttributeError) as error:
            log.warning("Keras internals moved (%s); multi-worker fit runs on stock Keras.", error)
            _patched = True
            return

        def _maybe_symbolic_build(self, iterator=None, data_batch=None):
            strategy = self._distribute_strategy
            if iterator is not None and data_batch is None and strategy is not None and multi_worker(strategy):
                adapter = getattr(iterator, "data_adapter", None)
                if adapter is not None:
                    # Shapes and dtypes are all the symbolic build needs.
                    spec = adapter.get_tf_dataset().element_spec
                    with strategy.scope():
                        self._symbolic_build(data_batch=spec)
                    return
            return original_build(self, iterator=iterator, data_batch=data_batch)

        def reduce_per_replica(values, strategy, reduction):
            if reduction in ("auto", "mean") and multi_worker(strategy):
                import tensorflow as tf

                return tf.nest.map_structure(lambda value: strategy.reduce("MEAN", value, axis=None), values)
            return original_reduce(values, strategy, reduction)

        tf_trainer.TensorFlowTrainer._maybe_symbolic_build = _maybe_symbolic_build
        tf_trainer.reduce_per_replica = reduce_per_replica
        _patched = True
