"""Choose the ``tf.distribute`` strategy a training run uses: one device, the
GPUs of one machine, or several machines.

``choose_distribution()`` reads ``TF_CONFIG`` (multi-worker) and the visible
GPUs; ``distribute_dataset()`` sets the dataset sharding that fits
``transfer``'s pipelines. Keras ``fit`` distributes a ``tf.data`` dataset
itself, so nothing else in the pipeline changes.

Rules measured with Keras 3.15 + TensorFlow 2.21 (see ``choose_distribution``):

* Multi-worker: ``choose_distribution()`` must run before any other TensorFlow
  op in the process (TensorFlow raises "Collective ops must be configured at
  program startup" otherwise), and it blocks until every worker in
  ``TF_CONFIG`` has started. Every worker runs the same program.
* Build, compile (optimizer included) and load models inside
  ``distribution.scope()``; call ``fit``/``evaluate``/``predict`` on every
  worker or on none: they run collectives, and a worker calling them alone
  blocks until the others do. ``model.save()`` and ``get_weights()`` are
  local: the chief may call them alone.
* The batch size is global: each of the ``num_replicas`` replicas gets
  ``batch_size / num_replicas`` examples of every batch. A batch that leaves
  a replica empty fails in Keras (train and predict), hence
  ``distribute_dataset``'s tail rule.
* ``steps_per_execution > 1`` fails with more than one replica
  (keras-team/keras#19246): use ``distribution.steps_per_execution(n)``.

Example:
    >>> from transfer.engine.distribute import choose_distribution, distribute_dataset
    >>> dist = choose_distribution()            # first thing, before loading data
    >>> print(dist.describe())
    MultiWorkerMirroredStrategy: 2 workers x 1 replica, this is worker 0 (chief)
    >>> with dist.scope():
    ...     model = build_model()
    ...     model.compile(optimizer="adam", loss="categorical_crossentropy")
    >>> model.fit(distribute_dataset(train_ds, dist, batch_size=32, num_examples=1000), epochs=5)
    >>> if dist.is_chief:
    ...     model.save("runs/x/model.keras")
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Mapping

from transfer.core.errors import TransferError
from transfer.engine.tf_config import TF_CONFIG_EXAMPLE, parse_tf_config  # noqa: F401 (parse_tf_config: imported from here)

KINDS = ("none", "mirrored", "multi_worker")
MODES = ("auto",) + KINDS

_STRATEGY_NAMES = {
    "none": "No distribution strategy",
    "mirrored": "MirroredStrategy",
    "multi_worker": "MultiWorkerMirroredStrategy",
}


@dataclass(frozen=True)
class Distribution:
    """How this process trains: the strategy and where this worker stands in it.

    ``kind``: ``"none"`` (TensorFlow's default single-device placement),
    ``"mirrored"`` (all GPUs of this machine) or ``"multi_worker"``
    (``TF_CONFIG``'s machines). ``num_replicas`` counts replicas in all
    workers; ``worker_index`` is 0 for the chief (the ``"chief"`` task, or
    worker 0 when there is none).

    Example:
        >>> dist = Distribution("none", None, 1, 1, 0)
        >>> dist.is_chief, dist.describe()
        (True, 'No distribution strategy: one device')
    """

    kind: str
    strategy: Any = None
    num_replicas: int = 1
    num_workers: int = 1
    worker_index: int = 0

    @property
    def is_chief(self) -> bool:
        """True for the one worker that writes the run folder (worker 0)."""
        return self.worker_index == 0

    def scope(self):
        """``strategy.scope()``, or a no-op context for ``kind="none"``.

        Example:
            >>> with dist.scope():
            ...     model = build_model()
        """
        return self.strategy.scope() if self.strategy is not None else contextlib.nullcontext()

    def steps_per_execution(self, wanted: int) -> int:
        """``wanted``, or 1 with several replicas: Keras 3's multi-step loop fails there
        ("You must feed a value for placeholder tensor 'while/cond/Placeholder'").

        Example:
            >>> head.compile(optimizer, loss, steps_per_execution=dist.steps_per_execution(64))
        """
        return int(wanted) if self.num_replicas <= 1 else 1

    def describe(self) -> str:
        """One line for the training log.

        Example:
            >>> dist.describe()
            'MultiWorkerMirroredStrategy: 2 workers x 1 replica, this is worker 0 (chief)'
        """
        name = _STRATEGY_NAMES[self.kind]
        if self.kind == "none":
            return f"{name}: one device"
        if self.kind == "mirrored":
            return f"{name}: {_plural(self.num_replicas, 'replica')} on this machine"
        per_worker = max(self.num_replicas // max(self.num_workers, 1), 1)
        role = " (chief)" if self.is_chief else ""
        return (f"{name}: {_plural(self.num_workers, 'worker')} x {_plural(per_worker, 'replica')}, "
                f"this is worker {self.worker_index}{role}")


def choose_distribution(mode: str = "auto", *, environ: Mapping[str, str] | None = None) -> Distribution:
    """Pick and create the strategy for ``mode``; ``environ`` defaults to ``os.environ``.

    ``"auto"``: a ``TF_CONFIG`` with more than one task -> ``"multi_worker"``;
    else more than one visible GPU -> ``"mirrored"``; else ``"none"``.
    ``"none"``, ``"mirrored"`` (all local GPUs, or the CPU as one replica)
    and ``"multi_worker"`` (needs ``TF_CONFIG``) force one.

    Multi-worker: call this before any other TensorFlow op in the process
    (loading data with TensorFlow, building a model, creating a tensor);
    otherwise a ``TransferError`` says so. It blocks until every worker in
    ``TF_CONFIG`` is up. It also applies two small fixes to Keras 3's
    TensorFlow trainer without which ``model.fit`` fails under
    MultiWorkerMirroredStrategy (keras-team/keras#20585): building the model
    from the dataset's ``element_spec`` instead of all-reducing a data batch,
    and averaging scalar metrics across workers with ``axis=None``.

    Example:
        >>> dist = choose_distribution()          # TF_CONFIG unset, no GPUs
        >>> dist.kind, dist.num_replicas
        ('none', 1)
        >>> choose_distribution("mirrored").describe()
        'MirroredStrategy: 1 replica on this machine'
    """
    if mode not in MODES:
        raise TransferError(f"Unknown distribution {mode!r}.", fix=f"Use one of: {', '.join(MODES)}.")
    environ = os.environ if environ is None else environ
    text = (environ.get("TF_CONFIG") or "").strip()
    tf_config = parse_tf_config(text) if text else None

    kind = mode
    if mode == "auto":
        if tf_config is not None and tf_config["num_workers"] > 1:
            kind = "multi_worker"
        elif _num_gpus() > 1:
            kind = "mirrored"
        else:
            kind = "none"

    if kind == "none":
        return Distribution("none")
    if kind == "mirrored":
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy()
        return Distribution("mirrored", strategy, int(strategy.num_replicas_in_sync), 1, 0)
    if tf_config is None:
        raise TransferError("Multi-worker training needs TF_CONFIG, which is not set.",
                            fix=f"On every machine set {TF_CONFIG_EXAMPLE}.")
    strategy = _multi_worker_strategy(tf_config)
    return Distribution("multi_worker", strategy, int(strategy.num_replicas_in_sync),
                        tf_config["num_workers"], tf_config["worker_index"])


def distribute_dataset(ds, distribution: Distribution, *, batch_size: int | None = None,
                       num_examples: int | None = None):
    """Shard a batched ``tf.data`` dataset by data across workers; no-op for ``kind="none"``.

    Every worker runs the whole (identically seeded) pipeline and keeps its
    share of each global batch (``AutoShardPolicy.DATA``): right for datasets
    built from file lists or tensors, which cannot be sharded by file. A
    final batch smaller than the replica count would leave a replica empty,
    which Keras cannot train on, so it is dropped (at most
    ``num_replicas - 1`` examples per pass). Give ``batch_size`` and
    ``num_examples`` to keep the epoch length known to Keras; without them
    the dataset is filtered and its length is learnt in the first epoch.

    Example:
        >>> train_ds = distribute_dataset(make_dataset(split.train, 128, 32, training=True), dist,
        ...                               batch_size=32, num_examples=len(split.train))
    """
    if distribution.kind == "none":
        return ds
    import tensorflow as tf

    replicas = distribution.num_replicas
    if batch_size is not None and batch_size < replicas:
        raise TransferError(
            f"Batch size {batch_size} is smaller than the {replicas} replicas training it; "
            f"the batch size is global (split over all replicas).",
            fix=f"Use a batch size of at least {replicas} (a multiple of {replicas} is best).",
        )
    if replicas > 1:
        if batch_size is not None and num_examples is not None:
            full, tail = divmod(int(num_examples), int(batch_size))
            if 0 < tail < replicas:
                ds = ds.take(full)
        else:
            ds = ds.filter(lambda *batch: tf.shape(tf.nest.flatten(batch)[0])[0] >= replicas)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options)


def _multi_worker_strategy(tf_config: dict[str, Any]):
    import tensorflow as tf

    if _tensorflow_started():
        raise TransferError(
            "Multi-worker training must set up TensorFlow before anything else uses it, "
            "but TensorFlow ops already ran in this process.",
            fix="Call transfer.engine.distribute.choose_distribution() first (before loading data or "
                "building models), in a fresh Python process.",
        )
    from transfer.engine.keras_multi_worker import patch_keras_for_multi_worker

    patch_keras_for_multi_worker()
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(tf_config["cluster"]),
        task_type=tf_config["task_type"], task_id=tf_config["task_index"], rpc_layer="grpc",
    )
    try:
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    except RuntimeError as error:
        if "program startup" not in str(error):
            raise
        raise TransferError(
            f"Multi-worker training must set up TensorFlow before anything else uses it ({error}).",
            fix="Call transfer.engine.distribute.choose_distribution() first, in a fresh Python process.",
        ) from None


def _tensorflow_started() -> bool:
    """True once TensorFlow's eager context is initialized (MWMS can no longer be set up)."""
    try:
        from tensorflow.python.eager import context

        return bool(context.context()._initialized)
    except Exception:  # a private attribute: if it moved, let TensorFlow's own check speak
        return False


def _num_gpus() -> int:
    import tensorflow as tf

    # list_physical_devices does not start the eager context (list_logical_devices does).
    return len(tf.config.list_physical_devices("GPU"))


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"
