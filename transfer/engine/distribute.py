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
import json
import logging
import os
import threading
from dataclasses import dataclass
from typing import Any, Mapping

from transfer.core.errors import TransferError

log = logging.getLogger(__name__)

KINDS = ("none", "mirrored", "multi_worker")
MODES = ("auto",) + KINDS
TASK_TYPES = ("chief", "worker")

_TF_CONFIG_EXAMPLE = (
    'TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
    '"task": {"type": "worker", "index": 0}}\' (the same cluster on every machine, '
    "each with its own task index)"
)
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


def parse_tf_config(text: str) -> dict[str, Any]:
    """Validate a ``TF_CONFIG`` JSON string; return where this task stands.

    Returns ``{"cluster", "task_type", "task_index", "num_workers",
    "worker_index", "is_chief"}``. Task types ``"chief"`` (at most one) and
    ``"worker"`` are accepted; ``worker_index`` counts the chief first, then
    the workers in order. Malformed JSON, a missing ``cluster`` or ``task``,
    other task types (``"ps"``, ``"evaluator"``) or an index out of range raise
    ``TransferError``.

    Example:
        >>> parse_tf_config('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}')
        {'cluster': {'worker': ['a:1', 'b:1']}, 'task_type': 'worker', 'task_index': 1,
         'num_workers': 2, 'worker_index': 1, 'is_chief': False}
    """
    fix = f"Set {_TF_CONFIG_EXAMPLE}."
    try:
        config = json.loads(text)
    except (TypeError, ValueError) as error:
        raise TransferError(f"TF_CONFIG is not valid JSON ({error}).", fix=fix) from None
    if not isinstance(config, dict):
        raise TransferError(f"TF_CONFIG must be a JSON object; got {type(config).__name__}.", fix=fix)

    cluster = config.get("cluster")
    if not isinstance(cluster, dict) or not cluster:
        raise TransferError('TF_CONFIG has no "cluster" object listing the machines.', fix=fix)
    for job, addresses in cluster.items():
        if job not in TASK_TYPES:
            raise TransferError(
                f'TF_CONFIG\'s cluster has a {job!r} job; multi-worker training takes only "chief" '
                f'and "worker" tasks (MultiWorkerMirroredStrategy).',
                fix=f'Remove {job!r} from TF_CONFIG\'s cluster: {_TF_CONFIG_EXAMPLE}.',
            )
        if not isinstance(addresses, list) or not addresses:
            raise TransferError(f'TF_CONFIG\'s cluster["{job}"] must be a non-empty list of "host:port".',
                                fix=fix)
        for address in addresses:
            if not _is_address(address):
                raise TransferError(f'TF_CONFIG\'s cluster["{job}"] holds {address!r}, not a "host:port".',
                                    fix=fix)
    if len(cluster.get("chief", [])) > 1:
        raise TransferError(f'TF_CONFIG\'s cluster has {len(cluster["chief"])} "chief" tasks; at most one.',
                            fix='List the other machines under "worker".')
    everyone = [address for job in TASK_TYPES for address in cluster.get(job, [])]
    repeated = sorted({address for address in everyone if everyone.count(address) > 1})
    if repeated:
        raise TransferError(f"TF_CONFIG's cluster lists {', '.join(repeated)} more than once.",
                            fix="Give every task its own host:port.")

    task = config.get("task")
    if not isinstance(task, dict):
        raise TransferError('TF_CONFIG has no "task" object saying which machine this is.',
                            fix='Add "task": {"type": "worker", "index": N} with this machine\'s N.')
    task_type, index = task.get("type"), task.get("index", 0)
    if task_type not in cluster:
        jobs = " or ".join(f'"{job}"' for job in cluster)
        raise TransferError(f"TF_CONFIG's task type {task_type!r} is not a job of its cluster.",
                            fix=f'Set "task": {{"type": {jobs}, "index": N}}.')
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(cluster[task_type]):
        count = len(cluster[task_type])
        raise TransferError(
            f'TF_CONFIG\'s task index {index!r} is out of range: cluster["{task_type}"] has {count} '
            f"{'entry' if count == 1 else 'entries'}.",
            fix=f'Set "task": {{"type": "{task_type}", "index": N}} with 0 <= N < {count}.',
        )
    num_chiefs = len(cluster.get("chief", []))
    worker_index = index if task_type == "chief" else num_chiefs + index
    return {
        "cluster": {job: list(cluster[job]) for job in TASK_TYPES if job in cluster},
        "task_type": task_type,
        "task_index": index,
        "num_workers": len(everyone),
        "worker_index": worker_index,
        "is_chief": worker_index == 0,
    }


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
                            fix=f"On every machine set {_TF_CONFIG_EXAMPLE}.")
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
    _patch_keras_for_multi_worker()
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


_patch_lock = threading.Lock()
_patched = False


def _patch_keras_for_multi_worker() -> None:
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


def _is_address(value: Any) -> bool:
    if not isinstance(value, str) or ":" not in value:
        return False
    host, port = value.rsplit(":", 1)
    return bool(host) and port.isdigit()


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"
